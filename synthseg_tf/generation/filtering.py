"""Quality-model checks and FreeMask-style filtering for ``synthseg generate``.

A *quality model* is a segmenter export (``model/`` of ``synthseg unet train``) for label-map
generators, or a classifier export (``synthseg classifier train``) for class-conditional ones.

- :func:`check_quality_model`: a segmenter must be clearly better than always predicting the
  majority class on its own selection split, or its scores mean nothing.
- :func:`real_loss_stats`: the segmenter's mean per-pixel cross-entropy per class on the *real*
  images the generator was trained on (``loss_stats.json``), and from it each map's hardness.
- :func:`void_hard_pixels`: FreeMask's pixel filter (Yang et al., NeurIPS 2023): a pixel of a
  generated image whose loss exceeds ``margin`` times its class's real mean loss is probably
  rendered wrong, so its label becomes void (255) and no model learns from it.
- :func:`hardness_weights`: FreeMask's hardness-aware re-sampling: draw base maps in proportion
  to how hard their content is for the segmenter (mixed with uniform).
- :func:`calibrated_confidence_thresholds`: per-class thresholds for a classifier filter, from
  the confidence it gives *real* held-out images of each class. A fixed threshold keeps
  synthetic images only of the classes the classifier already knows well; a class it confuses
  (real images at 0.2) gets no synthetic images at 0.9, though it is the class that needs them.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.utils import atomic_write_text

LOSS_STATS_FILE = "loss_stats.json"
SEGMENTER_FORMAT = "synthseg_tf.segmenter"
CLASSIFIER_FORMAT = "synthseg_tf.classifier"
# "Clearly better than the majority class": mIoU >= max(FACTOR * majority mIoU, majority mIoU + MARGIN).
CLEARLY_BETTER_FACTOR = 1.5
CLEARLY_BETTER_MARGIN = 0.05
HARDNESS_UNIFORM_MIX = 0.5
_EPS = 1e-7


# --------------------------------------------------------------------------- quality models
def quality_model_kind(model_dir: str) -> str:
    """``"segmenter"`` or ``"classifier"`` from the export's ``config.json`` ``format``.

    Raises ``FileNotFoundError`` for a missing folder and ``ValueError`` for anything that is not
    a synthseg segmenter or classifier export.
    """
    from synthseg_tf import storage

    path = storage.join(model_dir, "config.json")
    if not storage.isdir(model_dir):
        raise FileNotFoundError(f"--quality-model {model_dir}: no such folder")
    try:
        fmt = json.loads(storage.read_text(path)).get("format")
    except (OSError, ValueError) as e:
        raise ValueError(f"--quality-model {model_dir}: not a segmenter or classifier export "
                         f"(unreadable config.json: {e})") from e
    if fmt == SEGMENTER_FORMAT:
        return "segmenter"
    if fmt == CLASSIFIER_FORMAT:
        return "classifier"
    raise ValueError(f"--quality-model {model_dir}: config.json says format {fmt!r}; expected {SEGMENTER_FORMAT!r} "
                     f"(the model/ folder of `synthseg unet train`) or {CLASSIFIER_FORMAT!r}")


def majority_class_miou(confusion) -> Tuple[int, float]:
    """``(class, mean IoU)`` of always predicting the most frequent true class.

    Same convention as :class:`~synthseg_tf.metrics.ConfusionMatrix` (classes absent from truth
    and prediction are left out): that class scores ``support / pixels``, every other present
    class 0, so the mean is ``support_max / pixels / classes_present``.
    """
    from synthseg_tf.metrics.segmentation import ConfusionMatrix

    m = np.asarray(confusion, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.sum() <= 0:
        raise ValueError(f"a non-empty square confusion matrix is needed, got shape {m.shape}")
    support = m.sum(axis=1)
    c = int(np.argmax(support))
    base = np.zeros_like(m)
    base[:, c] = support
    return c, ConfusionMatrix.from_matrix(base).mean_iou()


def quality_model_provenance(model_dir: str) -> Optional[Dict]:
    """``{"train": [...], "selection": [...]}``: the source ids the quality model (a segmenter or
    classifier export) trained and was selected on, from its ``config.json``
    (``train_source_ids``/``selection_source_ids``, written since this version; an entry is None
    when it trained from TFRecords). None when the export records neither (an older export), so
    what it saw cannot be shown."""
    from synthseg_tf import storage

    try:
        cfg = json.loads(storage.read_text(storage.join(model_dir, "config.json")))
    except (OSError, ValueError):
        return None
    if "train_source_ids" not in cfg and "selection_source_ids" not in cfg:
        return None
    return {"train": cfg.get("train_source_ids"), "selection": cfg.get("selection_source_ids")}


def required_miou(majority_miou: float) -> float:
    """The mIoU a quality model needs: ``max(1.5 * majority, majority + 0.05)``."""
    return max(CLEARLY_BETTER_FACTOR * majority_miou, majority_miou + CLEARLY_BETTER_MARGIN)


def check_quality_model(model_dir: str, allow_weak: bool = False, log: Callable = print) -> Optional[Dict]:
    """Refuse a segmenter quality model that is not clearly better than the majority class.

    Reads the ``metrics.json`` of the ``synthseg unet train`` run the export belongs to (the
    folder above ``model/``); ``metrics["val"]`` holds its selection-split confusion matrix.
    The model is *clearly better* when its mIoU there is at least
    ``max(1.5 x majority-class mIoU, majority-class mIoU + 0.05)``, the majority-class mIoU being
    what always predicting the most frequent class scores on the same pixels
    (:func:`majority_class_miou`). Otherwise ``ValueError`` (with the numbers), or with
    ``allow_weak`` a logged warning. Without a readable ``metrics.json`` (e.g. an export made
    outside a run) a warning says the check could not run and ``None`` is returned.
    Returns ``{"mean_iou", "majority_class", "majority_mean_iou", "required", "passed", "metrics"}``.
    """
    from synthseg_tf import storage

    run_dir = storage.dirname(storage.abspath(model_dir).rstrip("/" if storage.is_remote(model_dir) else os.sep))
    path = storage.join(run_dir, "metrics.json")
    try:
        val = json.loads(storage.read_text(path))["val"]
        cm = np.asarray(val["confusion_matrix"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        log(f"warning: the quality model {model_dir} could not be checked against the majority-class baseline: "
            f"no usable {path} ({e.__class__.__name__}: {e})")
        return None
    from synthseg_tf.metrics.segmentation import ConfusionMatrix

    miou = ConfusionMatrix.from_matrix(cm).mean_iou()
    c, maj = majority_class_miou(cm)
    need = required_miou(maj)
    res = {"mean_iou": miou, "majority_class": c, "majority_mean_iou": maj, "required": need,
           "passed": bool(miou >= need), "metrics": path}
    if not res["passed"]:
        msg = (f"the quality model {model_dir} is not clearly better than always predicting class {c}: mIoU "
               f"{miou:.4f} on its selection split ({path}) vs {maj:.4f} for the majority class; it needs at least "
               f"{need:.4f} = max({CLEARLY_BETTER_FACTOR:g} x {maj:.4f}, {maj:.4f} + {CLEARLY_BETTER_MARGIN:g}). "
               "Its scores would filter at random: train it longer")
        if not allow_weak:
            raise ValueError(msg + " (or pass --allow-weak-quality-model)")
        log("warning: " + msg + " (kept because of --allow-weak-quality-model)")
    return res


# --------------------------------------------------------------------------- pixel losses
def pixel_losses(probs, maps, ignore_id: int = IGNORE_ID) -> np.ndarray:
    """Per-pixel cross-entropy ``-log p[label]`` (``p`` clipped at 1e-7), float64 ``[B,H,W]``.

    ``probs``: ``[B,H,W,K]`` class probabilities; ``maps``: ``[B,H,W]`` class ids. Void pixels
    (``ignore_id``) and ids outside ``0..K-1`` get ``NaN``.
    """
    p = np.asarray(probs, dtype=np.float64)
    m = np.asarray(maps)
    if p.ndim != m.ndim + 1 or p.shape[:-1] != m.shape:
        raise ValueError(f"probabilities {p.shape} do not match label maps {m.shape}")
    k = p.shape[-1]
    valid = (m != ignore_id) & (m >= 0) & (m < k)
    ids = np.where(valid, m, 0).astype(np.int64)
    pt = np.take_along_axis(p, ids[..., None], axis=-1)[..., 0]
    loss = -np.log(np.clip(pt, _EPS, 1.0))
    loss[~valid] = np.nan
    return loss


def map_hardness(m: np.ndarray, class_mean_loss: Sequence[Optional[float]]) -> Optional[float]:
    """Pixel-weighted mean of the class mean losses over the labelled pixels of ``m``.

    ``sum_c n_c * L_c / sum_c n_c`` over classes with a known ``L_c``; ``None`` when no such pixel.
    """
    k = len(class_mean_loss)
    counts = np.bincount(np.asarray(m).ravel(), minlength=256)[:k].astype(np.float64)
    known = np.array([v is not None for v in class_mean_loss])
    losses = np.array([0.0 if v is None else float(v) for v in class_mean_loss])
    n = counts[known].sum()
    return float((counts[known] * losses[known]).sum() / n) if n > 0 else None


def real_loss_stats(segmenter, dataset, image_size, batch_size: int = 16) -> Dict:
    """The segmenter's mean per-pixel cross-entropy per class on the real pairs of ``dataset``.

    ``segmenter``: an export folder or a loaded :class:`~synthseg_tf.models.unet.Segmenter`;
    ``dataset``: a segmentation :class:`~synthseg_tf.data.Dataset` (for ``synthseg generate``,
    exactly the samples the generator was trained on). Images and maps are resized to
    ``image_size=(H, W)`` (the generator's size: area for images, nearest for maps), as the
    generated images are. Returns a JSON-able dict:

    - ``class_mean_loss``: per class id, mean loss over its pixels (``None`` if it has none);
    - ``class_pixels``: per class id, its number of pixels;
    - ``map_hardness``: ``{source_id: map_hardness(map)}`` (:func:`map_hardness`);
    - ``source_ids``, ``image_size``, ``num_classes``, ``images``, ``segmenter``.
    """
    import cv2

    from synthseg_tf.masks import resize_nearest

    if isinstance(segmenter, str):
        from synthseg_tf.models.unet import load_segmenter

        seg_path, segmenter = os.path.abspath(segmenter), load_segmenter(segmenter)
    else:
        seg_path = os.path.abspath(getattr(segmenter, "export_dir", "") or "") or None
    if dataset.task != "segmentation":
        raise ValueError(f"{dataset.spec}: loss statistics need a segmentation dataset with label maps")
    if not dataset.samples:
        raise ValueError(f"{dataset.spec}: no samples to compute loss statistics on")
    h, w = int(image_size[0]), int(image_size[1])
    k = int(segmenter.num_classes)
    if dataset.num_classes != k:
        raise ValueError(f"{dataset.spec} has {dataset.num_classes} classes but the quality model has {k}")
    loss_sum = np.zeros(k, np.float64)
    pixels = np.zeros(k, np.int64)
    per_map = np.zeros((len(dataset.samples), k), np.int64)
    for start in range(0, len(dataset.samples), batch_size):
        images, maps = [], []
        for s in dataset.samples[start:start + batch_size]:
            image, mask = dataset.read(s)
            images.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
            maps.append(resize_nearest(mask, (h, w)))
        images, maps = np.stack(images), np.stack(maps)
        probs = segmenter.predict(images.astype(np.float32) / 255.0)["probabilities"]
        loss = pixel_losses(probs, maps)
        for c in range(k):
            sel = maps == c
            pixels[c] += int(sel.sum())
            loss_sum[c] += float(loss[sel].sum())
        for j, m in enumerate(maps):
            per_map[start + j] = np.bincount(m.ravel(), minlength=256)[:k]
    mean = [float(loss_sum[c] / pixels[c]) if pixels[c] else None for c in range(k)]
    known = np.array([v is not None for v in mean])
    lvec = np.array([v or 0.0 for v in mean])
    hardness = {}
    for s, counts in zip(dataset.samples, per_map):
        n = counts[known].sum()
        hardness[s.source_id] = float((counts[known] * lvec[known]).sum() / n) if n > 0 else None
    return {"class_mean_loss": mean, "class_pixels": [int(v) for v in pixels], "map_hardness": hardness,
            "source_ids": sorted(s.source_id for s in dataset.samples), "image_size": [h, w], "num_classes": k,
            "images": len(dataset.samples), "segmenter": seg_path,
            "loss": "per-pixel cross-entropy -log p[label] of the segmenter's probabilities, p clipped at 1e-7"}


def save_loss_stats(path: str, stats: Dict) -> None:
    atomic_write_text(path, json.dumps(stats, indent=1, sort_keys=True))


def load_loss_stats(path: str) -> Dict:
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        stats["class_mean_loss"], stats["map_hardness"]  # noqa: B018  (required keys)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a loss statistics file ({e.__class__.__name__}: {e})") from e
    return stats


# --------------------------------------------------------------------------- FreeMask filters
def void_hard_pixels(maps, losses, class_mean_loss: Sequence[Optional[float]], margin: float,
                     ignore_id: int = IGNORE_ID) -> Tuple[np.ndarray, List[float]]:
    """Void every pixel whose loss exceeds ``margin`` x its class's real mean loss.

    ``maps`` ``[B,H,W]`` ids, ``losses`` ``[B,H,W]`` (:func:`pixel_losses` on the generated
    images). A pixel of class ``c`` becomes ``ignore_id`` when ``loss > margin * class_mean_loss[c]``
    (strictly); classes with no real statistics (``None``) and void pixels are left alone.
    Returns the new maps (a copy) and, per map, the voided fraction of its labelled pixels
    (0.0 for a map without labelled pixels).
    """
    margin = float(margin)
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"--pixel-filter margin must be a positive number, got {margin}")
    m = np.array(maps, dtype=np.uint8, copy=True)
    loss = np.asarray(losses, dtype=np.float64)
    if loss.shape != m.shape:
        raise ValueError(f"losses {loss.shape} do not match label maps {m.shape}")
    k = len(class_mean_loss)
    limit = np.full(256, np.inf)
    for c, v in enumerate(class_mean_loss):
        if v is not None:
            limit[c] = margin * float(v)
    labelled = (m != ignore_id) & (m < k)
    hard = labelled & (np.nan_to_num(loss, nan=-np.inf) > limit[m])
    m[hard] = ignore_id
    n_lab = labelled.reshape(len(m), -1).sum(axis=1)
    n_hard = hard.reshape(len(m), -1).sum(axis=1)
    fractions = [float(a / b) if b else 0.0 for a, b in zip(n_hard, n_lab)]
    return m, fractions


def hardness_weights(hardness: Sequence[Optional[float]], uniform_mix: float = HARDNESS_UNIFORM_MIX) -> np.ndarray:
    """Base-map probabilities: ``(1 - u) * h / sum(h) + u / n`` (``u = uniform_mix``, default 0.5).

    The uniform part keeps every map drawable (at least ``u / n``); unknown hardness (``None``)
    counts as 0. With all hardness 0 the weights are uniform.
    """
    h = np.array([0.0 if v is None else float(v) for v in hardness], dtype=np.float64)
    if h.size == 0:
        raise ValueError("no maps to weight")
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        raise ValueError(f"map hardness must be finite and >= 0, got {h[:10].tolist()}")
    u = float(uniform_mix)
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"uniform_mix must be in [0, 1], got {uniform_mix}")
    uniform = np.full(h.size, 1.0 / h.size)
    if h.sum() <= 0:
        return uniform
    return (1.0 - u) * h / h.sum() + u * uniform


# --------------------------------------------------------------------------- classifier filter
def calibrated_confidence_thresholds(probabilities: np.ndarray, labels: Sequence[int], num_classes: int,
                                     cap: float = 0.9, floor: Optional[float] = None) -> Dict:
    """Per-class confidence thresholds calibrated on real held-out images (the selection split).

    ``probabilities`` ``[N, C]``: the filter classifier's softmax on ``N`` real images of the
    selection split, ``labels`` their classes. Class ``c``'s threshold is the median probability
    the classifier gives its own class on the real images of ``c``, clipped to ``[floor, cap]``
    (``floor`` default ``1 / C``, chance; never above ``cap``): a synthetic image of ``c`` is kept when the classifier
    finds it at least as typical of ``c`` as a typical real image is, and never needs more than
    ``cap``. A class without real images gets ``cap``.

    Returns ``{"thresholds": [C floats], "median": [C floats or None], "count": [C ints],
    "cap": cap, "floor": floor, "rule": text}``.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != len(y) or p.shape[1] != int(num_classes):
        raise ValueError(f"probabilities must be [N, {num_classes}] for N = {len(y)} labels, got {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must be class ids 0..{num_classes - 1}")
    if not 0.0 < cap <= 1.0:
        raise ValueError(f"the cap must be in (0, 1], got {cap}")
    floor = min(1.0 / num_classes if floor is None else float(floor), float(cap))
    if floor < 0.0:
        raise ValueError(f"the floor must be >= 0, got {floor}")
    own = p[np.arange(len(y)), y] if len(y) else np.zeros(0)
    thresholds, medians, counts = [], [], []
    for c in range(int(num_classes)):
        v = own[y == c]
        counts.append(int(len(v)))
        med = float(np.median(v)) if len(v) else None
        medians.append(med)
        thresholds.append(float(cap) if med is None else float(min(cap, max(floor, med))))
    return {"thresholds": thresholds, "median": medians, "count": counts, "cap": float(cap), "floor": floor,
            "rule": f"threshold of class c = median, over the real selection images of c, of the classifier's "
                    f"probability of c, clipped to [{floor:.3f}, {cap:g}] ({cap:g} for a class without images)"}
