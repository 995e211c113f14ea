"""Image-classification metrics (scikit-learn based) and accuracy of a classifier on generated images.

Labels are class ids ``0..K-1``; samples labelled ``ignore_id`` (``IGNORE_ID`` = 255) are skipped.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np

from synthseg_tf.data.classes import IGNORE_ID

__all__ = ["classification_report", "classifier_accuracy_on_generated", "labels_from_predictions"]


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "numpy"):
        x = x.numpy()
    return np.asarray(x)


def labels_from_predictions(pred, num_classes: Optional[int] = None) -> np.ndarray:
    """Class ids ``[N]`` from ids ``[N]`` / ``[N, 1]`` or scores ``[N, K]`` (probabilities or
    logits, argmax). A single float score column with ``num_classes == 2`` (or unknown) is a
    sigmoid output, thresholded at 0.5."""
    p = _as_numpy(pred)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
        if p.dtype.kind == "f" and num_classes in (None, 2) and not np.all(p == np.round(p)):
            return (p > 0.5).astype(np.int64)
    if p.ndim == 2:
        if num_classes is not None and p.shape[1] != num_classes:
            raise ValueError(f"predictions have {p.shape[1]} scores per sample but there are {num_classes} classes")
        return np.argmax(p, axis=1).astype(np.int64)
    if p.ndim != 1:
        raise ValueError(f"predictions must be [N] ids or [N, K] scores, got shape {p.shape}")
    if p.dtype.kind == "f":
        if p.size and not np.all(p == np.round(p)):
            raise TypeError("1-D float predictions must hold whole-number class ids")
    elif p.dtype.kind not in "iub":
        raise TypeError(f"predictions must be numeric, got dtype {p.dtype}")
    return p.astype(np.int64)


def classification_report(
    y_true,
    y_pred,
    class_names: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    ignore_id: int = IGNORE_ID,
) -> Dict:
    """Accuracy, macro/weighted precision-recall-F1, a per-class table and the confusion matrix.

    ``y_true``: ids ``[N]``; ``y_pred``: ids ``[N]`` or scores ``[N, K]``. The number of classes
    ``K`` is ``len(class_names)``, else ``num_classes``, else ``max id + 1``. Samples whose true
    label is ``ignore_id`` are dropped; any other id outside ``0..K-1`` raises ``ValueError``.

    Per-class rows cover all ``K`` classes (``zero_division=0``: a class never predicted has
    precision 0). Macro averages run over the classes that occur in ``y_true`` or ``y_pred``
    (scikit-learn's default label set), so classes absent from the evaluation set do not drag
    them down; weighted averages weight by support.

    Returns a JSON-friendly dict::

        {"accuracy", "num_samples", "num_classes", "class_names",
         "macro": {"precision", "recall", "f1"}, "weighted": {...},
         "per_class": {name: {"precision", "recall", "f1", "support"}},
         "confusion_matrix": [[...]]}          # rows = true, columns = predicted
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    t = _as_numpy(y_true)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"y_true must be [N] class ids, got shape {t.shape}")
    if t.dtype.kind == "f":
        if t.size and not np.all(t == np.round(t)):
            raise TypeError("y_true must hold whole-number class ids")
    t = t.astype(np.int64)
    if class_names is not None:
        num_classes = len(class_names)
    p = labels_from_predictions(y_pred, num_classes)
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"{t.shape[0]} labels but {p.shape[0]} predictions")
    keep = t != ignore_id
    t, p = t[keep], p[keep]
    if t.size == 0:
        raise ValueError("no labelled samples to evaluate")
    if num_classes is None:
        num_classes = int(max(t.max(), p.max())) + 1
    k = int(num_classes)
    for arr, what in ((t, "true label"), (p, "predicted label")):
        bad = (arr < 0) | (arr >= k)
        if bad.any():
            raise ValueError(f"{what} {arr[bad][0]} outside 0..{k - 1}")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]

    labels = np.arange(k)
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    present = np.zeros(k, dtype=bool)
    present[np.unique(np.concatenate([t, p]))] = True
    weights = sup / sup.sum()

    def avg(v, mode):
        return float(v[present].mean()) if mode == "macro" else float((v * weights).sum())

    return {
        "accuracy": float(np.mean(t == p)),
        "num_samples": int(t.size),
        "num_classes": k,
        "class_names": names,
        "macro": {"precision": avg(prec, "macro"), "recall": avg(rec, "macro"), "f1": avg(f1, "macro")},
        "weighted": {"precision": avg(prec, "w"), "recall": avg(rec, "w"), "f1": avg(f1, "w")},
        "per_class": {
            names[i]: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
            for i in range(k)
        },
        "confusion_matrix": confusion_matrix(t, p, labels=labels).tolist(),
    }


def classifier_accuracy_on_generated(
    predict_fn: Callable,
    images,
    labels,
    batch_size: int = 32,
    class_names: Optional[Sequence[str]] = None,
    report: bool = False,
) -> Union[float, Dict]:
    """Accuracy of a (real-data-trained) classifier on generated images: a class-conditional
    generator is good when its images are recognised as the class they were generated for.

    ``predict_fn`` maps images ``float32 [B, H, W, C]`` (passed as given; uint8 is scaled to
    ``[0, 1]``) to ids ``[B]`` or scores ``[B, K]``; ``labels`` are the conditioning class ids
    ``[N]``. Returns the accuracy, or the full :func:`classification_report` when ``report``.
    """
    imgs = _as_numpy(images)
    lab = _as_numpy(labels)
    if imgs.shape[0] != lab.shape[0]:
        raise ValueError(f"{imgs.shape[0]} images but {lab.shape[0]} labels")
    if imgs.dtype == np.uint8:
        imgs = imgs.astype(np.float32) / 255.0
    num_classes = len(class_names) if class_names is not None else None
    batch_size = max(1, int(batch_size))
    preds = [labels_from_predictions(predict_fn(imgs[s:s + batch_size]), num_classes)
             for s in range(0, imgs.shape[0], batch_size)]
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    result = classification_report(lab, pred, class_names=class_names)
    return result if report else result["accuracy"]
