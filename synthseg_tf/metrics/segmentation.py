"""Segmentation metrics: a streaming confusion matrix (numpy), Keras IoU metrics and the FCN-score.

Conventions (see :mod:`synthseg_tf.data.classes`): class ids are ``0..K-1`` and pixels whose
*ground truth* is ``ignore_id`` (``IGNORE_ID`` = 255) are void: every metric here skips them.

Which classes enter the means
-----------------------------
``mean_iou`` / ``mean_dice`` average over the classes that occur in the ground truth **or** in
the predictions of the evaluated pixels (i.e. classes whose union ``TP + FP + FN`` is non-zero).
A class that is only predicted (never present) therefore counts with IoU 0 (false positives are
penalised); a class absent from both has an undefined IoU, reported as ``NaN`` and left out of
the mean. This is the usual Cityscapes/PASCAL convention and what ``keras.metrics.MeanIoU`` does.

Confusion matrices are indexed ``[true_id, predicted_id]``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from synthseg_tf.data.classes import IGNORE_ID

__all__ = [
    "ConfusionMatrix",
    "MeanIoUIgnore",
    "ClassIoU",
    "fcn_score",
    "per_sample_miou",
    "predictions_to_ids",
]


# ---------------------------------------------------------------------------------------------
# numpy helpers
# ---------------------------------------------------------------------------------------------
def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def _as_int_ids(x, what: str) -> np.ndarray:
    """Integer id array from ints/bools, or floats that hold whole numbers (masks read as float)."""
    x = _as_numpy(x)
    if x.dtype.kind in "iub":
        return x.astype(np.int64, copy=False)
    if x.dtype.kind == "f":
        if x.size and not np.all(np.isfinite(x) & (x == np.round(x))):
            raise TypeError(f"{what} must hold integer class ids, got non-integer {x.dtype} values")
        return x.astype(np.int64)
    raise TypeError(f"{what} must be an integer array of class ids, got dtype {x.dtype}")


def predictions_to_ids(pred, num_classes: int, ids_ndim: Optional[int] = None) -> np.ndarray:
    """Turn a segmenter output into an ``int64`` id map.

    ``pred`` may be ids (``[..., H, W]`` or ``[..., H, W, 1]``) or per-class scores
    (``[..., H, W, K]``, probabilities or logits: argmax over the last axis). ``ids_ndim`` is the
    rank the id map should have (e.g. 3 for ``[B, H, W]``); when given, an extra trailing axis
    marks scores (size ``K``) or ids/binary scores (size 1). Without it an array whose last axis
    equals ``num_classes`` (> 1) and whose dtype is floating is taken as scores.

    A single-channel *floating* output with ``num_classes == 2`` is read as a sigmoid
    probability and thresholded at 0.5; other single-channel outputs are ids.
    """
    p = _as_numpy(pred)
    has_class_axis = (
        p.ndim == ids_ndim + 1 if ids_ndim is not None
        else (p.ndim >= 1 and p.dtype.kind == "f" and num_classes > 1 and p.shape[-1] == num_classes)
    )
    if has_class_axis:
        if p.shape[-1] == 1:
            p = p[..., 0]
            if p.dtype.kind == "f" and num_classes == 2:
                return (p > 0.5).astype(np.int64)
            return _as_int_ids(p, "predictions")
        if p.shape[-1] != num_classes:
            raise ValueError(f"prediction scores have {p.shape[-1]} channels but num_classes={num_classes}")
        return np.argmax(p, axis=-1).astype(np.int64)
    return _as_int_ids(p, "predictions")


def _check_ids(t: np.ndarray, p: np.ndarray, num_classes: int, ignore_id: int) -> np.ndarray:
    """Validate ids; returns the boolean mask of evaluated (non-void) pixels."""
    if t.shape != p.shape:
        if t.size != p.size:
            raise ValueError(f"y_true {t.shape} and y_pred {p.shape} have different sizes")
    valid = t != ignore_id
    tv = t[valid]
    if tv.size and (tv.min() < 0 or tv.max() >= num_classes):
        bad = tv[(tv < 0) | (tv >= num_classes)][0]
        raise ValueError(f"ground truth id {bad} outside 0..{num_classes - 1} (and not ignore_id={ignore_id})")
    pv = p.reshape(t.shape)[valid]
    if pv.size and (pv.min() < 0 or pv.max() >= num_classes):
        bad = pv[(pv < 0) | (pv >= num_classes)][0]
        raise ValueError(f"predicted id {bad} outside 0..{num_classes - 1}")
    return valid


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


# ---------------------------------------------------------------------------------------------
# streaming confusion matrix
# ---------------------------------------------------------------------------------------------
class ConfusionMatrix:
    """Streaming ``K x K`` pixel confusion matrix (``matrix[true, pred]``, int64 counts).

    >>> cm = ConfusionMatrix(3)
    >>> for y_true, y_pred in batches:          # any shapes, same number of elements
    ...     cm.update(y_true, y_pred)
    >>> cm.mean_iou(), cm.as_dict(class_names)

    Pixels whose ground truth equals ``ignore_id`` are skipped; any other ground-truth id or
    any predicted id (of a non-void pixel) outside ``0..K-1`` raises ``ValueError``.
    Matrices from several workers combine with :meth:`merge`.
    """

    def __init__(self, num_classes: int, ignore_id: int = IGNORE_ID):
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_id = int(ignore_id)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    # ---------------------------------------------------------------- accumulation
    def update(self, y_true, y_pred) -> "ConfusionMatrix":
        """Add a batch of id maps (numpy/tf arrays, any matching shape). Returns ``self``."""
        t = _as_int_ids(y_true, "y_true")
        p = _as_int_ids(y_pred, "y_pred")
        valid = _check_ids(t, p, self.num_classes, self.ignore_id)
        k = self.num_classes
        idx = t[valid] * k + p.reshape(t.shape)[valid]
        self.matrix += np.bincount(idx, minlength=k * k).reshape(k, k)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts into this one (same ``num_classes``). Returns ``self``."""
        other_m = other.matrix if isinstance(other, ConfusionMatrix) else np.asarray(other)
        if other_m.shape != self.matrix.shape:
            raise ValueError(f"cannot merge a {other_m.shape} confusion matrix into {self.matrix.shape}")
        self.matrix += other_m.astype(np.int64)
        return self

    def reset(self) -> None:
        self.matrix[:] = 0

    @classmethod
    def from_matrix(cls, matrix, ignore_id: int = IGNORE_ID) -> "ConfusionMatrix":
        """Wrap existing ``[true, pred]`` counts (e.g. a Keras metric's state)."""
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"a confusion matrix must be square, got shape {m.shape}")
        cm = cls(m.shape[0], ignore_id)
        cm.matrix[:] = np.rint(m).astype(np.int64)
        return cm

    # ---------------------------------------------------------------- per-class counts
    @property
    def total(self) -> int:
        """Number of evaluated (non-void) pixels."""
        return int(self.matrix.sum())

    def true_positives(self) -> np.ndarray:
        return np.diag(self.matrix).copy()

    def support(self) -> np.ndarray:
        """Ground-truth pixels per class (row sums)."""
        return self.matrix.sum(axis=1)

    def predicted(self) -> np.ndarray:
        """Predicted pixels per class (column sums)."""
        return self.matrix.sum(axis=0)

    # ---------------------------------------------------------------- results
    def iou_per_class(self) -> np.ndarray:
        """``TP / (TP + FP + FN)`` per class; ``NaN`` for classes absent from truth and predictions."""
        tp = self.true_positives()
        return _safe_div(tp, self.support() + self.predicted() - tp)

    def dice_per_class(self) -> np.ndarray:
        """``2 TP / (2 TP + FP + FN)`` (F1) per class; ``NaN`` for classes absent from both."""
        tp = self.true_positives()
        return _safe_div(2 * tp, self.support() + self.predicted())

    def recall_per_class(self) -> np.ndarray:
        """Per-class pixel accuracy ``TP / support``; ``NaN`` for classes absent from the truth."""
        return _safe_div(self.true_positives(), self.support())

    def mean_iou(self) -> float:
        """Mean IoU over classes present in truth or predictions (see module docstring)."""
        return _nanmean(self.iou_per_class())

    def mean_dice(self) -> float:
        """Mean Dice over classes present in truth or predictions."""
        return _nanmean(self.dice_per_class())

    def mean_class_accuracy(self) -> float:
        """Mean per-class pixel accuracy over classes present in the truth (pix2pix 'per-class acc')."""
        return _nanmean(self.recall_per_class())

    def frequency_weighted_iou(self) -> float:
        """IoU averaged with the ground-truth frequency of each class as weight."""
        sup = self.support().astype(np.float64)
        if sup.sum() == 0:
            return float("nan")
        iou = np.nan_to_num(self.iou_per_class())
        return float((sup * iou).sum() / sup.sum())

    def pixel_accuracy(self) -> float:
        """Correct pixels / evaluated pixels (``NaN`` before any pixel was seen)."""
        tot = self.total
        return float(np.trace(self.matrix) / tot) if tot else float("nan")

    def as_dict(self, class_names: Optional[Sequence[str]] = None) -> Dict:
        """JSON-friendly summary (``NaN`` becomes ``None``).

        Keys: ``num_classes``, ``pixels``, ``pixel_accuracy``, ``mean_iou``, ``mean_dice``,
        ``mean_class_accuracy``, ``frequency_weighted_iou``, ``per_class`` (name ->
        ``{iou, dice, accuracy, support, predicted}``) and ``confusion_matrix`` (list of rows,
        ``[true][pred]``). ``class_names`` defaults to ``"0".."K-1"``.
        """
        if class_names is None:
            class_names = [str(i) for i in range(self.num_classes)]
        class_names = [str(n) for n in class_names]
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        if len(set(class_names)) != len(class_names):
            raise ValueError("class names must be unique")
        iou, dice, acc = self.iou_per_class(), self.dice_per_class(), self.recall_per_class()
        sup, pred = self.support(), self.predicted()
        per_class = {
            name: {
                "iou": _nan_to_none(float(iou[i])),
                "dice": _nan_to_none(float(dice[i])),
                "accuracy": _nan_to_none(float(acc[i])),
                "support": int(sup[i]),
                "predicted": int(pred[i]),
            }
            for i, name in enumerate(class_names)
        }
        return {
            "num_classes": self.num_classes,
            "pixels": self.total,
            "pixel_accuracy": _nan_to_none(self.pixel_accuracy()),
            "mean_iou": _nan_to_none(self.mean_iou()),
            "mean_dice": _nan_to_none(self.mean_dice()),
            "mean_class_accuracy": _nan_to_none(self.mean_class_accuracy()),
            "frequency_weighted_iou": _nan_to_none(self.frequency_weighted_iou()),
            "per_class": per_class,
            "confusion_matrix": self.matrix.tolist(),
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total}, mean_iou={self.mean_iou():.4f})"


# ---------------------------------------------------------------------------------------------
# per-sample mIoU and the FCN-score
# ---------------------------------------------------------------------------------------------
def per_sample_miou(y_true, y_pred, num_classes: int, ignore_id: int = IGNORE_ID) -> np.ndarray:
    """One mean IoU per sample: ``y_true`` ids ``[N, H, W]`` (or ``[N, H, W, 1]``), ``y_pred`` ids
    or per-class scores ``[N, H, W, K]``.

    For each sample the mean runs over the classes present in *either* map of that sample
    (void pixels excluded). Returns ``float64 [N]``; ``NaN`` for a sample with no non-void pixel.
    Used as a quality filter for generated (image, map) pairs.
    """
    t = _as_int_ids(y_true, "y_true")
    if t.ndim == 4 and t.shape[-1] == 1:
        t = t[..., 0]
    if t.ndim < 2:
        raise ValueError(f"y_true must be [N, ...] per-sample maps, got shape {t.shape}")
    p = predictions_to_ids(y_pred, num_classes, ids_ndim=t.ndim)
    if p.shape != t.shape:
        raise ValueError(f"y_true {t.shape} and predicted ids {p.shape} differ in shape")
    valid = _check_ids(t, p, num_classes, ignore_id)
    n, k = t.shape[0], int(num_classes)
    sample = np.broadcast_to(np.arange(n).reshape((n,) + (1,) * (t.ndim - 1)), t.shape)
    idx = (sample[valid] * k + t[valid]) * k + p[valid]
    cms = np.bincount(idx, minlength=n * k * k).reshape(n, k, k)
    tp = np.diagonal(cms, axis1=1, axis2=2)
    union = cms.sum(axis=2) + cms.sum(axis=1) - tp
    iou = _safe_div(tp, union)
    present = union > 0
    count = present.sum(axis=1)
    sums = np.where(present, iou, 0.0).sum(axis=1)
    return _safe_div(sums, count)


def fcn_score(
    segment_fn: Callable,
    images,
    conditioning_maps,
    num_classes: int,
    batch_size: int = 16,
    ignore_id: int = IGNORE_ID,
    class_names: Optional[Sequence[str]] = None,
    return_per_sample: bool = False,
) -> Dict:
    """pix2pix "FCN-score": how well a segmenter recovers the maps the images were generated from.

    ``segment_fn`` maps images ``float32 [B, H, W, 3]`` in ``[0, 1]`` to ids ``[B, H, W]`` (or
    ``[B, H, W, 1]``) or per-class scores ``[B, H, W, K]`` (argmax). It is applied to
    ``images`` (``[N, H, W, 3]``; uint8 input is scaled by 1/255, other values are passed as is,
    so convert generator outputs in ``[-1, 1]`` first) in batches of ``batch_size``, and the
    predictions are scored against ``conditioning_maps`` (ids ``[N, H, W]``, void =
    ``ignore_id``) with a :class:`ConfusionMatrix`.

    Returns :meth:`ConfusionMatrix.as_dict` (pixel accuracy, mean class accuracy, mean IoU,
    per-class IoU, ...), plus ``per_sample_miou`` (list) when ``return_per_sample``.
    """
    maps = _as_int_ids(conditioning_maps, "conditioning_maps")
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    imgs = _as_numpy(images)
    if imgs.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {imgs.shape}")
    if maps.ndim != 3 or maps.shape[0] != imgs.shape[0]:
        raise ValueError(f"conditioning_maps must be [N, H, W] matching {imgs.shape[0]} images, got {maps.shape}")
    if imgs.dtype == np.uint8:
        imgs = imgs.astype(np.float32) / 255.0
    else:
        imgs = imgs.astype(np.float32, copy=False)
    batch_size = max(1, int(batch_size))
    cm = ConfusionMatrix(num_classes, ignore_id)
    per_sample: List[np.ndarray] = []
    for s in range(0, imgs.shape[0], batch_size):
        out = segment_fn(imgs[s:s + batch_size])
        ids = predictions_to_ids(out, num_classes, ids_ndim=3)
        ref = maps[s:s + batch_size]
        if ids.shape != ref.shape:
            raise ValueError(
                f"segment_fn returned predictions of shape {ids.shape}; the conditioning maps are {ref.shape} "
                "(resize the images/maps so they match)"
            )
        cm.update(ref, ids)
        if return_per_sample:
            per_sample.append(per_sample_miou(ref, ids, num_classes, ignore_id))
    result = cm.as_dict(class_names)
    if return_per_sample:
        vals = np.concatenate(per_sample) if per_sample else np.zeros(0)
        result["per_sample_miou"] = [_nan_to_none(float(v)) for v in vals]
    return result


# ---------------------------------------------------------------------------------------------
# Keras metrics
# ---------------------------------------------------------------------------------------------
import tensorflow as tf  # noqa: E402  (kept below the numpy part on purpose: it is the heavy import)


class MeanIoUIgnore(tf.keras.metrics.Metric):
    """Streaming mean IoU that skips void pixels; usable in ``compile()``, ``tf.function`` and
    under ``tf.distribute`` strategies.

    State: a ``K x K`` float64 confusion matrix (``[true, pred]``) created with
    ``add_weight`` (``SUM`` aggregation, ``ON_READ`` synchronisation), so per-replica counts
    are summed when the result is read under ``MirroredStrategy``.

    ``update_state(y_true, y_pred, sample_weight=None)``:

    - ``y_true``: ids ``[B, H, W]`` or ``[B, H, W, 1]`` (any int or float dtype); pixels equal to
      ``ignore_id`` are skipped;
    - ``y_pred``: ids with the same shape as ``y_true`` (or a trailing axis of 1), or per-class
      probabilities/logits ``[B, H, W, K]`` (argmax). A single float channel with
      ``num_classes == 2`` is a sigmoid output, thresholded at 0.5.
    - ids outside ``0..K-1`` (other than void ground truth) fail a ``tf.debugging`` assertion.

    ``result()`` is the mean over classes present in truth or predictions (0.0 before anything
    was seen, like ``keras.metrics.MeanIoU``); :meth:`result_per_class` gives the IoU vector
    (``NaN`` for absent classes) and :meth:`confusion_matrix` the raw counts; wrap them with
    ``ConfusionMatrix.from_matrix(metric.confusion_matrix().numpy())`` for a full report.
    """

    def __init__(self, num_classes: int, ignore_id: int = IGNORE_ID, name: str = "mean_iou", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.ignore_id = int(ignore_id)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.total_cm = self.add_weight(
            "total_confusion_matrix",
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype=tf.float64,
            aggregation=tf.VariableAggregation.SUM,
            synchronization=tf.VariableSynchronization.ON_READ,
        )

    # ---------------------------------------------------------------- update
    def _pred_ids(self, y_pred, true_rank: int):
        y_pred = tf.convert_to_tensor(y_pred)
        rank = y_pred.shape.rank
        if rank is None:
            raise ValueError("y_pred needs a known rank")
        if rank == true_rank + 1:
            channels = y_pred.shape[-1]
            if channels == 1:
                y_pred = tf.squeeze(y_pred, axis=-1)
                if y_pred.dtype.is_floating and self.num_classes == 2:
                    return tf.cast(y_pred > 0.5, tf.int64), False
                return tf.cast(tf.round(y_pred) if y_pred.dtype.is_floating else y_pred, tf.int64), True
            if channels is not None and channels != self.num_classes:
                raise ValueError(f"y_pred has {channels} channels but num_classes={self.num_classes}")
            return tf.argmax(y_pred, axis=-1, output_type=tf.int64), False
        if rank != true_rank:
            raise ValueError(f"y_pred of rank {rank} does not match y_true of rank {true_rank}")
        if y_pred.dtype.is_floating:
            y_pred = tf.round(y_pred)
        return tf.cast(y_pred, tf.int64), True

    def _batch_cm(self, y_true, y_pred, sample_weight=None):
        y_true = tf.convert_to_tensor(y_true)
        if y_true.shape.rank is None:
            raise ValueError("y_true needs a known rank")
        if y_true.shape.rank == 4 and y_true.shape[-1] == 1:
            y_true = tf.squeeze(y_true, axis=-1)
        if y_true.dtype.is_floating:
            y_true = tf.round(y_true)
        y_true = tf.cast(y_true, tf.int64)
        y_pred, check_pred = self._pred_ids(y_pred, y_true.shape.rank)
        true_shape = tf.shape(y_true)
        true_rank = y_true.shape.rank
        y_true = tf.reshape(y_true, [-1])
        y_pred = tf.reshape(y_pred, [-1])
        k = self.num_classes
        valid = tf.not_equal(y_true, self.ignore_id)
        t = tf.boolean_mask(y_true, valid)
        p = tf.boolean_mask(y_pred, valid)
        checks = [
            tf.debugging.assert_greater_equal(t, tf.constant(0, tf.int64), message="ground truth id < 0"),
            tf.debugging.assert_less(t, tf.constant(k, tf.int64), message="ground truth id >= num_classes"),
        ]
        if check_pred:
            checks += [
                tf.debugging.assert_greater_equal(p, tf.constant(0, tf.int64), message="predicted id < 0"),
                tf.debugging.assert_less(p, tf.constant(k, tf.int64), message="predicted id >= num_classes"),
            ]
        if sample_weight is None:
            w = tf.ones_like(t, dtype=tf.float64)
        else:
            sw = tf.cast(tf.convert_to_tensor(sample_weight), tf.float64)
            if sw.shape.rank == true_rank + 1 and sw.shape[-1] == 1:
                sw = tf.squeeze(sw, axis=-1)
            for _ in range((sw.shape.rank or 0), true_rank):
                sw = tf.expand_dims(sw, -1)
            w = tf.boolean_mask(tf.reshape(tf.broadcast_to(sw, true_shape), [-1]), valid)
        with tf.control_dependencies(checks):
            idx = t * k + p
            return tf.reshape(tf.math.unsorted_segment_sum(w, idx, k * k), (k, k))

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def update_state(self, y_true, y_pred, sample_weight=None):
        return self.total_cm.assign_add(self._batch_cm(y_true, y_pred, sample_weight))

    # ---------------------------------------------------------------- results
    def confusion_matrix(self):
        """The accumulated ``[true, pred]`` counts (float64 tensor)."""
        return tf.convert_to_tensor(self.total_cm)

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def result_per_class(self):
        """IoU per class, ``float64 [K]``; ``NaN`` for classes absent from truth and predictions."""
        cm = self.confusion_matrix()
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - tp
        return tf.where(union > 0, tp / tf.where(union > 0, union, tf.ones_like(union)),
                        tf.constant(float("nan"), tf.float64))

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def result(self):
        cm = self.confusion_matrix()
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - tp
        present = tf.cast(union > 0, tf.float64)
        iou = tf.math.divide_no_nan(tp, union)
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(iou), tf.reduce_sum(present)), self.dtype)

    def reset_state(self):
        self.total_cm.assign(tf.zeros_like(self.total_cm))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "ignore_id": self.ignore_id})
        return config


class ClassIoU(MeanIoUIgnore):
    """IoU of one class as a standalone Keras metric, e.g.
    ``compile(metrics=[MeanIoUIgnore(K)] + [ClassIoU(c, K, name=f"iou_{n}") for c, n in enumerate(names)])``.

    Same inputs and void handling as :class:`MeanIoUIgnore`. ``result()`` is 0.0 while the class
    has appeared in neither truth nor predictions (like ``keras.metrics.IoU``), so training logs
    and callbacks never see ``NaN``; ``result_per_class()`` still reports ``NaN`` there.
    """

    def __init__(self, class_id: int, num_classes: int, ignore_id: int = IGNORE_ID, name: Optional[str] = None,
                 dtype=None):
        class_id = int(class_id)
        if not 0 <= class_id < int(num_classes):
            raise ValueError(f"class_id {class_id} outside 0..{int(num_classes) - 1}")
        super().__init__(num_classes, ignore_id=ignore_id, name=name or f"iou_class_{class_id}", dtype=dtype)
        self.class_id = class_id

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def result(self):
        cm = self.confusion_matrix()
        c = self.class_id
        tp = cm[c, c]
        union = tf.reduce_sum(cm[c, :]) + tf.reduce_sum(cm[:, c]) - tp
        return tf.cast(tf.math.divide_no_nan(tp, union), self.dtype)

    def get_config(self):
        config = super().get_config()
        config["class_id"] = self.class_id
        return config
