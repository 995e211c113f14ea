"""Train the image classifier CNN with early stopping and report on a held-out test split.

:func:`train_classifier` writes a run directory::

    RUN_DIR/
      config.json   settings, split sizes, data, seed, versions
      classes.json  the class table
      splits.json   the source ids of the train/val/test samples (reproducibility)
      history.csv   one row per epoch (loss, accuracy, val_loss, val_accuracy)
      metrics.json  {"test": classification_report(...), "val": ...}: accuracy, macro and
                    weighted precision/recall/F1, per-class table, confusion matrix
      model/        the exported SavedModel (:func:`synthseg_tf.models.classifier.export_classifier`)
      weights.h5    the Keras weights (with ``save_weights=True``), to start another run from
                    (``init_weights``: pretrain on synthetic images, fine-tune on real ones)

Splits: the layout's own ``train``/``val``/``test`` folders are always honoured; a missing
``val`` or ``test`` is carved (per class, with
:func:`~synthseg_tf.models.classifier.stratified_split`) from the layout's *train* split only,
so the user's test folder is the test set and none of its images is ever trained on. A dataset
without split labels is split per class by ``fractions``. Carving is seeded by ``split_seed``,
which stays fixed when ``seed`` varies so runs with different seeds are scored on the same test
set; ``config.json`` records how each split was obtained (``split_source``, see
:func:`split_sources`). ``train_fraction < 1`` keeps a stratified part of the
training split (seeded by ``seed``). Synthetic samples (a TFRecord folder of labelled generated
images) are added to the *training split only*: by default all of them are appended to it
(``synthetic_ratio=None``); with a ratio they are mixed in at that rate for the real
training set's number of steps per epoch, as in :mod:`synthseg_tf.training.segmentation`, or with
``real_passes`` for the steps one pass over the real images takes at that rate.

Training stops when ``val_loss`` has not improved for ``patience`` epochs (at least
``min_patience_steps`` optimiser steps, so a small split is not stopped while its batch-norm
statistics still lag the weights), and the weights of
the epoch with the lowest ``val_loss`` are kept (restored even when no early stop happened).
With ``ema=DECAY`` an exponential moving average of the weights is what every validation pass,
the early stopping, the learning-rate plateau and keep-best read, and what is kept
(:func:`~synthseg_tf.training.segmentation.weight_ema_callback`, as for the U-Net).
"""
from __future__ import annotations

import math
import os
import time
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from synthseg_tf import _env  # noqa: F401
from synthseg_tf.data.dataset import CLASSIFICATION, Dataset
from synthseg_tf.training.segmentation import (
    check_ema_decay,
    environment_info,
    is_tfrecord_source,
    keep_best_callback,
    parse_image_size,
    prepare_out_dir,
    should_cache,
    weight_ema_callback,
    write_history_csv,
    write_json,
    _load_init_weights,
    _tfrecord_path,
)

Source = Union[str, Dataset]
LR_SCHEDULES = ("constant", "cosine", "plateau")
# train_classifier's training-recipe defaults (also shown by `synthseg classifier train --help`)
# epochs 80: at 40 the cosine schedule ended before the classifier had learnt the set (demo-classes?seed=1,
# 3 seeds: test macro F1 81.5 at 40 epochs, 90.6 at 80), so every comparison built on it was too easy
CLASSIFIER_DEFAULTS = {
    "epochs": 80, "patience": 12, "learning_rate": 2e-3, "augment": True, "filters": (24, 48, 96, 192),
    "dense_units": (192,), "dropout": 0.3, "batch_norm": True, "pooling": "gap", "label_smoothing": 0.1,
    "weight_decay": 0.0, "lr_schedule": "cosine", "monitor": "val_loss", "min_patience_steps": 300,
    "bn_momentum": "auto",
}
# min_patience_steps 300: on a small training split an epoch is a few optimiser steps, and 12 epochs of
# patience ended runs before the batch-norm statistics had settled (demo-classes at 25 % of train: 194
# images, 7 steps per epoch; validation accuracy stayed at chance and early stopping ended the run at
# epoch 14 with 5 % test accuracy). 300 steps is what 12 epochs are on the full demo-classes split
# (769 images, batch 32), so runs on it are unchanged.
# bn_momentum "auto" (resolve_bn_momentum): Keras' 0.99 averages the batch-norm statistics over about
# 100 steps and starts them at mean 0 / variance 1, which a short run never outgrows. Sign Language
# Digits at 10 % of train (144 photos, 5 steps per epoch, 400 steps): validation accuracy sat at chance
# for most of the 80 epochs, test accuracy 48.9 % at 0.99, 77.3 % at 0.975 and 79.6 % at 0.9 (README,
# "Sign Language Digits"). Runs of 1,000 steps or more keep 0.99, so the figures measured on them hold.
BN_AUTO_WINDOW = 10  # "auto": the statistics average over the last 1/10 of the run's planned steps
BN_MOMENTUM_RANGE = (0.9, 0.99)


def resolve_bn_momentum(value, planned_steps: int) -> float:
    """The batch-norm momentum a run uses: a number in (0, 1) as given, or for ``"auto"``
    ``1 - BN_AUTO_WINDOW / planned_steps`` clipped to ``BN_MOMENTUM_RANGE``: 0.99 (Keras' default)
    for runs of 1,000 planned steps or more, down to 0.9 for runs of 100 steps or fewer, so the
    moving statistics forget their initial values and follow the last tenth of the run."""
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"bn_momentum must be 'auto' or a number in (0, 1), got {value!r}") from None
        else:
            lo, hi = BN_MOMENTUM_RANGE
            return round(min(hi, max(lo, 1.0 - BN_AUTO_WINDOW / max(1, int(planned_steps)))), 4)
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"bn_momentum must be 'auto' or a number in (0, 1), got {value}")
    return value


def mixed_steps_per_epoch(n_real: int, batch_size: int, synthetic_ratio: Optional[float] = None) -> int:
    """Steps of one epoch: ``n_real / batch_size``, or with ``synthetic_ratio`` r < 1 the steps after
    which ``n_real`` real samples have been drawn when a fraction r of the samples is synthetic
    (``n_real / ((1 - r) * batch_size)``), both rounded up."""
    real_share = 1.0 if synthetic_ratio is None or float(synthetic_ratio) >= 1.0 else 1.0 - float(synthetic_ratio)
    return max(1, math.ceil(int(n_real) / (real_share * int(batch_size)) - 1e-9))


def patience_epochs(patience: int, steps_per_epoch: int, min_patience_steps: int = 0) -> int:
    """The early-stopping patience in epochs: ``patience``, raised so that it spans at least
    ``min_patience_steps`` optimiser steps of ``steps_per_epoch`` each."""
    if int(patience) < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if int(min_patience_steps) < 0:
        raise ValueError(f"min_patience_steps must be >= 0, got {min_patience_steps}")
    return max(int(patience), math.ceil(int(min_patience_steps) / max(1, int(steps_per_epoch))))


SPLIT_NAMES = ("train", "val", "test")


def split_sources(ds: Dataset) -> Dict[str, str]:
    """How :func:`split_classification` obtains each of ``train``, ``val``, ``test`` for ``ds``.

    Values: ``"layout"`` (the layout's own split), ``"carved_from_train"`` (a stratified part of
    the layout's ``train`` split, seeded by ``split_seed``) or ``"stratified"`` (no split labels:
    a stratified split of all samples). Raises ``ValueError`` when the layout's splits cannot be
    honoured (no ``train`` split, or samples outside ``train``/``val``/``test``).
    """
    have = set(ds.splits)
    if not have:
        return {name: "stratified" for name in SPLIT_NAMES}
    others = sorted({str(s.split) for s in ds.samples if s.split not in SPLIT_NAMES})
    if others:
        raise ValueError(f"{ds.spec}: samples in splits {', '.join(others)}; a classification layout's "
                         "splits must be train, val and test")
    if "train" not in have:
        raise ValueError(f"{ds.spec}: the layout has split(s) {', '.join(sorted(have))} but no 'train' split; "
                         "add a train/ folder (its test/val images are never used for training)")
    return {name: "layout" if name in have else "carved_from_train" for name in SPLIT_NAMES}


def split_classification(ds: Dataset, fractions=(0.7, 0.15, 0.15), split_seed: int = 0,
                         train_fraction: float = 1.0, seed: int = 0) -> Tuple[Dataset, Dataset, Dataset]:
    """``(train, val, test)`` of a classification dataset; the layout's own splits always win.

    ``fractions`` = ``(train, val, test)``; per case (see :func:`split_sources`):

    - no split labels: a stratified split of all samples by ``fractions``;
    - ``train/val/test`` folders: used as they are;
    - ``train`` + ``test`` (no val): val is a stratified ``val / (train + val)`` part of the
      train folder, test is the user's test folder, untouched;
    - ``train`` + ``val`` (no test): test is a stratified ``test / (train + test)`` part of train;
    - only ``train``: val and test are carved from it with ``fractions``.

    Carving is per class with :func:`~synthseg_tf.models.classifier.stratified_split` seeded
    by ``split_seed``; images of one folder are never re-pooled with another folder's. Then
    ``train_fraction < 1`` keeps a stratified part of train (seeded by ``seed``).
    """
    from synthseg_tf.models.classifier import stratified_split

    if not 0.0 < float(train_fraction) <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) <= 0:
        raise ValueError(f"fractions must be three positive numbers (train, val, test), got {fractions}")
    sources = split_sources(ds)

    def carve(part: Dataset, keep: float, take: float) -> Tuple[Dataset, Dataset]:
        labels = [s.label for s in part.samples]
        kept, taken = stratified_split(labels, (keep / (keep + take), take / (keep + take)), seed=split_seed)
        return part.select(kept.tolist()), part.select(taken.tolist())

    if all(v == "stratified" for v in sources.values()):
        tr, va, te = stratified_split([s.label for s in ds.samples], (fr[0], fr[1], fr[2]), seed=split_seed)
        train, val, test = ds.select(tr.tolist()), ds.select(va.tolist()), ds.select(te.tolist())
    elif sources["val"] == "layout" and sources["test"] == "layout":
        train, val, test = ds.subset("train"), ds.subset("val"), ds.subset("test")
    elif sources["test"] == "layout":
        train, val = carve(ds.subset("train"), fr[0], fr[1])
        test = ds.subset("test")
    elif sources["val"] == "layout":
        train, test = carve(ds.subset("train"), fr[0], fr[2])
        val = ds.subset("val")
    else:
        train_all = ds.subset("train")
        tr, va, te = stratified_split([s.label for s in train_all.samples], (fr[0], fr[1], fr[2]),
                                      seed=split_seed)
        train, val, test = (train_all.select(tr.tolist()), train_all.select(va.tolist()),
                            train_all.select(te.tolist()))
    for name, part in (("validation", val), ("test", test)):
        if len(part) == 0:
            raise ValueError(f"{ds.spec}: the {name} split is empty ({len(ds)} samples); add images or change "
                             "the fractions")
    if train_fraction < 1.0:
        labels = [s.label for s in train.samples]
        keep, _ = stratified_split(labels, (train_fraction, 1.0 - train_fraction), seed=seed)
        train = train.select(keep.tolist())
    return train, val, test


def _synthetic_labels(path: str) -> np.ndarray:
    """The ``label`` feature of every record (images are not decoded)."""
    import tensorflow as tf

    from synthseg_tf.data.tfrecord import tfrecord_files

    files = tfrecord_files(path)
    comp = "GZIP" if files[0].endswith(".gz") else None
    spec = {"label": tf.io.FixedLenFeature([], tf.int64, default_value=-1)}
    ds = tf.data.TFRecordDataset(files, compression_type=comp).map(
        lambda s: tf.io.parse_single_example(s, spec)["label"])
    return np.fromiter(ds.as_numpy_iterator(), dtype=np.int64)


def _raw(source, with_mask=False):
    from synthseg_tf.data.tfdata import read_files, read_tfrecords

    raw = read_files(source) if isinstance(source, Dataset) else read_tfrecords(source, with_mask=with_mask)
    return raw.map(lambda el: {"image": el["image"], "label": el["label"]})


def teacher_targets(synthetic: str, teacher: str, class_names: Sequence[str], image_size, alpha: float,
                    batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """``(labels [N], targets [N,C])`` of a synthetic TFRecord folder, in the order :func:`_raw` reads
    it: ``targets = (1 - alpha) * one_hot(label) + alpha * teacher(image)``, where ``teacher`` is a
    classifier export (:func:`~synthseg_tf.models.classifier.export_classifier`) with the same class
    table, shown each image resized to ``image_size`` without augmentation (as in Noisy Student:
    the teacher sees the clean image, the student an augmented one)."""
    from synthseg_tf.data.tfdata import prepare
    from synthseg_tf.models.classifier import load_classifier

    clf = load_classifier(teacher)
    if list(clf.class_names) != list(class_names):
        raise ValueError(f"teacher {teacher}: its classes {clf.class_names} are not the data's {list(class_names)}")
    labels, probs = [], []
    for b in prepare(_raw(synthetic), image_size, augment=False).batch(int(batch_size)):
        labels.append(b["label"].numpy().astype(np.int64))
        probs.append(clf.predict_proba(b["image"].numpy()).astype(np.float32))
    labels_a = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    p = np.concatenate(probs) if probs else np.zeros((0, len(class_names)), np.float32)
    onehot = np.eye(len(class_names), dtype=np.float32)[labels_a]
    return labels_a, ((1.0 - float(alpha)) * onehot + float(alpha) * p).astype(np.float32)


def _with_targets(raw, labels: np.ndarray, targets: np.ndarray):
    """``raw`` elements with their precomputed ``target``; fails if the read order ever differs."""
    import tensorflow as tf

    def add(el, stored):
        label, target = stored
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.cast(el["label"], tf.int64), label, message="synthetic records were read in another order")]):
            return dict(el, target=tf.identity(target))

    return tf.data.Dataset.zip((raw, tf.data.Dataset.from_tensor_slices((labels, targets)))).map(add)


def _train_pipeline(train: Dataset, synthetic: Optional[str], n_syn: int, synthetic_ratio: Optional[float],
                    image_size, batch_size: int, augment, seed: int, cache: bool, num_classes: int,
                    soft: Optional[Tuple[np.ndarray, np.ndarray]] = None, synthetic_rows: int = 0):
    """``synthetic_rows`` > 0 (mixing only): every batch is ``batch_size - synthetic_rows`` real images
    followed by ``synthetic_rows`` synthetic ones, instead of drawing each element's source at the ratio."""
    import tensorflow as tf

    from synthseg_tf.data.tfdata import mix_datasets, prepare, stacked_batches
    from synthseg_tf.models.classifier import to_classifier_inputs

    real = _raw(train)
    if cache:
        real = real.cache()
    syn_raw = None
    if synthetic is not None:
        syn_raw = _raw(synthetic)
        if soft is not None:  # every element carries its training target; the real ones one-hot
            syn_raw = _with_targets(syn_raw, *soft)
            real = real.map(lambda el: dict(el, target=tf.one_hot(tf.cast(el["label"], tf.int32), num_classes)))
    n = len(train)
    if synthetic is not None and synthetic_ratio is None:  # append: one pool, shuffled together
        real = real.concatenate(syn_raw)
        n += n_syn
    real = real.shuffle(max(1, min(n, 4096)), seed=seed, reshuffle_each_iteration=True).repeat()
    if synthetic is not None and synthetic_ratio is not None:
        syn = syn_raw.shuffle(max(1, min(n_syn, 4096)), seed=seed + 1).repeat()
    if synthetic_rows:
        ds = stacked_batches([prepare(real, image_size, augment=augment, seed=seed),
                              prepare(syn, image_size, augment=augment, seed=seed + 3)],
                             [batch_size - synthetic_rows, synthetic_rows])
        return ds.map(lambda b: to_classifier_inputs(b, num_classes)).prefetch(tf.data.AUTOTUNE), n
    if synthetic is not None and synthetic_ratio is not None:
        parts = [real, syn] if synthetic_ratio < 1.0 else [syn]
        real = mix_datasets(parts, [1.0 - synthetic_ratio, synthetic_ratio][-len(parts):], seed=seed + 2) \
            if len(parts) == 2 else syn
    ds = prepare(real, image_size, augment=augment, seed=seed)
    return (ds.batch(batch_size, drop_remainder=False).map(lambda b: to_classifier_inputs(b, num_classes))
            .prefetch(tf.data.AUTOTUNE)), n


def _eval_pipeline(ds: Dataset, image_size, batch_size: int, num_classes: int):
    from synthseg_tf.data.tfdata import make_dataset
    from synthseg_tf.models.classifier import to_classifier_inputs

    return make_dataset(ds, image_size=image_size, batch_size=batch_size, shuffle=False).map(
        lambda b: to_classifier_inputs(b, num_classes))


def _report(model, ds: Dataset, image_size, batch_size: int, names) -> Dict:
    from synthseg_tf.metrics.classification import classification_report

    probs = model.predict(_eval_pipeline(ds, image_size, batch_size, len(names)).map(lambda x, y: x), verbose=0)
    labels = np.array([s.label for s in ds.samples], dtype=np.int64)
    return classification_report(labels, probs, class_names=names)


def train_classifier(
    data: Source,
    out_dir: str,
    image_size=(64, 64),
    batch_size: int = 32,
    epochs: int = CLASSIFIER_DEFAULTS["epochs"],
    synthetic: Optional[str] = None,
    seed: int = 0,
    patience: int = CLASSIFIER_DEFAULTS["patience"],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    train_fraction: float = 1.0,
    synthetic_ratio: Optional[float] = None,
    split_seed: int = 0,
    learning_rate: float = CLASSIFIER_DEFAULTS["learning_rate"],
    augment: Union[bool, str] = CLASSIFIER_DEFAULTS["augment"],
    filters: Sequence[int] = CLASSIFIER_DEFAULTS["filters"],
    dense_units: Sequence[int] = CLASSIFIER_DEFAULTS["dense_units"],
    dropout: float = CLASSIFIER_DEFAULTS["dropout"],
    batch_norm: bool = CLASSIFIER_DEFAULTS["batch_norm"],
    pooling: str = CLASSIFIER_DEFAULTS["pooling"],
    label_smoothing: float = CLASSIFIER_DEFAULTS["label_smoothing"],
    weight_decay: float = CLASSIFIER_DEFAULTS["weight_decay"],
    lr_schedule: str = CLASSIFIER_DEFAULTS["lr_schedule"],
    monitor: str = CLASSIFIER_DEFAULTS["monitor"],
    min_patience_steps: int = CLASSIFIER_DEFAULTS["min_patience_steps"],
    bn_momentum: Union[str, float] = CLASSIFIER_DEFAULTS["bn_momentum"],
    cache: Optional[bool] = None,
    export: bool = True,
    verbose: int = 1,
    overwrite: bool = False,
    run_eagerly: bool = False,
    init_weights: Optional[str] = None,
    save_weights: bool = False,
    ema: Optional[float] = None,
    real_passes: bool = False,
    synthetic_soft_labels: float = 0.0,
    teacher: Optional[str] = None,
    synthetic_bn: str = "shared",
    synthetic_batches: str = "sampled",
    extra_config: Optional[Dict] = None,
    report_test: bool = True,
) -> Dict:
    """Train the CNN classifier on a classification dataset and report on its test split.

    ``data``: a classification Dataset or spec (``classfolders:DIR``, ``demo-classes``).
    ``synthetic``: a TFRecord folder of labelled generated images (``label`` = class id of
    ``data``), added to the training split only (module docstring). Early stopping on
    ``monitor`` (``val_loss`` or ``val_accuracy``) with ``patience`` epochs, raised to span at
    least ``min_patience_steps`` optimiser steps (:func:`patience_epochs`; ``config.json`` records
    both); the best epoch's weights by ``monitor`` are kept.

    Model and optimisation: ``filters``/``dense_units``/``dropout``/``batch_norm``/``pooling``
    (``"flatten"`` or ``"gap"``) build :func:`~synthseg_tf.models.classifier.build_classifier`,
    whose batch-norm momentum is ``bn_momentum`` (``"auto"``: :func:`resolve_bn_momentum` of the
    planned ``epochs`` x steps, 0.99 for long runs and down to 0.9 for short ones; ``config.json``
    records the value used);
    ``label_smoothing`` and ``weight_decay`` (AdamW when > 0) go to
    :func:`~synthseg_tf.models.classifier.compile_classifier`. ``lr_schedule``: ``"constant"``,
    ``"cosine"`` (cosine decay from ``learning_rate`` to 1 % of it over ``epochs`` x steps) or
    ``"plateau"`` (halve when ``monitor`` stalls for ``max(1, patience // 3)`` epochs).
    ``augment``: ``False``/``"none"``, ``True``/``"standard"`` or ``"strong"``
    (:mod:`synthseg_tf.data.tfdata`); ``config.json`` records it as given (a bool or the string).

    ``init_weights``: a ``weights.h5`` (or a run folder holding one) of an earlier run with the
    same class table, image size and architecture to start from; ``save_weights=True`` writes
    this run's kept weights to ``weights.h5``.

    ``ema``: a decay in (0, 1) to validate, select and keep an exponential moving average of the
    trainable weights (batch-norm statistics stay the model's own); ``None``: the raw weights.

    ``real_passes``: with a ``synthetic_ratio`` below 1, an epoch is as many steps as one pass over
    the real images takes at that ratio (``len(train) / ((1 - ratio) * batch_size)``), so a mixed run
    sees each real image as often per epoch as a real-only run; default (``False``): the real
    training set's number of steps, so the mixed run sees the real images ``1 - ratio`` as often.

    ``synthetic_soft_labels``: alpha in [0, 1]; with ``synthetic``, each synthetic image's target is
    ``(1 - alpha) * one_hot(its class) + alpha * teacher(image)`` (:func:`teacher_targets`), with
    ``teacher`` a classifier export trained on the real training images (the experiment passes its
    confidence filter's classifier); real images keep one-hot targets. ``0``: one-hot everywhere.

    ``synthetic_batches``: with a ``synthetic_ratio`` in (0, 1), ``"sampled"`` (default) draws each
    element's source at the ratio; ``"fixed"`` makes every batch its real images followed by
    ``round(ratio x batch_size)`` synthetic ones (:func:`~synthseg_tf.models.classifier.synthetic_rows`).
    ``synthetic_bn``: ``"shared"`` (default) or ``"separate"``, which implies fixed batches and
    normalises their real and synthetic parts each by its own batch statistics; only the real part
    moves the batch-norm statistics used at inference
    (:class:`~synthseg_tf.models.classifier.SeparateSyntheticStatistics`; needs ``batch_norm``).
    ``"auxiliary"`` (AdvProp) also gives the synthetic part its own batch-norm scales and offsets,
    trained by the synthetic rows only and left out of the exported classifier.
    Runs without mixed batches (no synthetic set, appended, or synthetic only) are unaffected by
    either; ``config.json`` records ``synthetic_rows_per_batch`` (``None`` for sampled or unmixed
    batches).

    ``report_test=False``: the test split is never scored (``metrics`` has no ``"test"``), for a
    model that only serves another step (an experiment's confidence filter, teacher or
    pretraining), so nothing but the reported runs reads the test images.

    The export's ``config.json`` lists ``train_source_ids`` and ``selection_source_ids`` (the val
    split's): a synthetic set filtered by it can be checked against an experiment's subset.

    Returns ``{"out_dir", "model_dir", "metrics", "config", "history"}``; ``metrics["test"]`` is a
    :func:`~synthseg_tf.metrics.classification_report`. Refuses an existing ``out_dir`` unless
    ``overwrite``.
    """
    import tensorflow as tf

    from synthseg_tf.data.layouts import load
    from synthseg_tf.data.tfdata import augment_level
    from synthseg_tf.models.classifier import (SYNTHETIC_BATCHES, SYNTHETIC_BN, SeparateSyntheticStatistics,
                                               build_classifier, compile_classifier, early_stopping,
                                               export_classifier, synthetic_rows)
    from synthseg_tf.utils import atomic_directory

    t0 = time.time()
    size = parse_image_size(image_size)
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    augment_level(augment)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    if monitor not in ("val_loss", "val_accuracy"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_accuracy', got {monitor!r}")
    if synthetic_ratio is not None and not 0.0 <= float(synthetic_ratio) <= 1.0:
        raise ValueError(f"synthetic_ratio must be in [0, 1] or None, got {synthetic_ratio}")
    if ema is not None:
        ema = check_ema_decay(ema)
    alpha = float(synthetic_soft_labels)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"synthetic_soft_labels must be in [0, 1], got {synthetic_soft_labels}")
    if synthetic_bn not in SYNTHETIC_BN:
        raise ValueError(f"synthetic_bn must be one of {', '.join(SYNTHETIC_BN)}, got {synthetic_bn!r}")
    if synthetic_batches not in SYNTHETIC_BATCHES:
        raise ValueError(f"synthetic_batches must be one of {', '.join(SYNTHETIC_BATCHES)}, got {synthetic_batches!r}")
    if synthetic_bn != "shared" and not batch_norm:
        raise ValueError(f"synthetic_bn={synthetic_bn!r} needs batch_norm=True: without batch normalisation there "
                         "are no statistics to separate")
    if alpha > 0.0 and synthetic is not None and teacher is None:
        raise ValueError("synthetic_soft_labels needs a teacher: a classifier export trained on the real images")
    patience_epochs(patience, 1, min_patience_steps)  # checks both before the run folder is made
    out_dir = prepare_out_dir(out_dir, overwrite)
    ds = data if isinstance(data, Dataset) else load(data)
    if ds.task != CLASSIFICATION:
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; the classifier needs class folders "
                         "(classfolders:DIR or demo-classes)")
    names = ds.classes.names
    k = len(names)
    train, val, test = split_classification(ds, fractions, split_seed, train_fraction, seed)

    syn_path, n_syn, syn_desc = None, 0, None
    if synthetic is not None:
        if not is_tfrecord_source(synthetic):
            raise ValueError(f"synthetic: {synthetic} is not a TFRecord folder")
        syn_path = _tfrecord_path(synthetic)
        labels = _synthetic_labels(syn_path)
        if labels.size == 0:
            raise ValueError(f"synthetic: {syn_path} holds no examples")
        bad = labels[(labels < 0) | (labels >= k)]
        if bad.size:
            raise ValueError(f"synthetic: {syn_path} has samples labelled {int(bad[0])} ({bad.size} in all); "
                             f"class labels 0..{k - 1} of {ds.spec} are needed (use a class-conditional generator)")
        n_syn, syn_desc = int(labels.size), f"tfrecord:{os.path.abspath(syn_path)}"

    soft, soft_desc = None, None
    if syn_path is not None and alpha > 0.0:
        soft = teacher_targets(syn_path, teacher, names, size, alpha)
        if soft[0].size != n_syn:  # a zip would silently cut the longer side
            raise ValueError(f"synthetic: {syn_path} gave {soft[0].size} images to the teacher but holds {n_syn} "
                             "labels; the folder changed while it was read")
        agree = float(np.mean(np.argmax(soft[1], axis=1) == soft[0])) if soft[0].size else 1.0
        soft_desc = {"alpha": alpha, "teacher": os.fspath(teacher), "argmax_is_intended_class": round(agree, 4)}
    mixed = syn_path is not None and synthetic_ratio is not None and 0.0 < float(synthetic_ratio) < 1.0
    fixed = synthetic_batches == "fixed" or synthetic_bn != "shared"
    syn_rows = synthetic_rows(batch_size, synthetic_ratio) if fixed and mixed else 0
    tf.keras.utils.set_random_seed(int(seed))
    train_ds, n_pool = _train_pipeline(train, syn_path, n_syn, synthetic_ratio, size, batch_size, augment,
                                       int(seed), should_cache(train, len(train), cache), k, soft, syn_rows)
    spe = mixed_steps_per_epoch(n_pool if synthetic_ratio is None else len(train), batch_size,
                                synthetic_ratio if real_passes and syn_path is not None else None)
    val_ds = _eval_pipeline(val, size, batch_size, k)
    wait = patience_epochs(patience, spe, min_patience_steps)
    momentum = resolve_bn_momentum(bn_momentum, int(epochs) * spe)

    model = build_classifier(k, input_shape=(size[0], size[1], 3), filters=filters, dense_units=dense_units,
                             dropout=dropout, batch_norm=batch_norm, pooling=pooling, bn_momentum=momentum)
    if init_weights is not None:
        _load_init_weights(model, init_weights, {"image_size": list(size), "class_names": list(names),
                                                 "filters": list(filters), "dense_units": list(dense_units),
                                                 "pooling": pooling, "batch_norm": bool(batch_norm)},
                           what="classifier", needs="same class table, image size and architecture")
    # what fit() trains; the classifier itself is what is reported, exported and saved
    trainer = SeparateSyntheticStatistics(model, batch_size - syn_rows, auxiliary=synthetic_bn == "auxiliary") \
        if synthetic_bn != "shared" and syn_rows else model
    lr = float(learning_rate)
    averager = weight_ema_callback(ema) if ema is not None else None
    # the average first: it is swapped in before any other callback reads a validation pass
    callbacks = ([averager] if averager is not None else []) + [early_stopping(wait, monitor)]
    if lr_schedule == "cosine":
        lr = tf.keras.optimizers.schedules.CosineDecay(float(learning_rate), int(epochs) * spe, alpha=0.01)
    elif lr_schedule == "plateau":
        callbacks.append(tf.keras.callbacks.ReduceLROnPlateau(
            monitor, factor=0.5, patience=max(1, wait // 3), min_lr=float(learning_rate) / 64,
            mode="min" if monitor == "val_loss" else "max"))
    compile_classifier(trainer, learning_rate=lr, label_smoothing=label_smoothing, weight_decay=weight_decay)
    trainer.run_eagerly = bool(run_eagerly)
    keeper = keep_best_callback(monitor, "min" if monitor == "val_loss" else "max",
                                averager.weights if averager is not None else None)
    callbacks.append(keeper)
    config = {
        "task": "classification",
        "data": ds.spec, "samples": len(ds),
        "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "split_source": split_sources(ds),
        "fractions": list(fractions), "split_seed": int(split_seed), "train_fraction": float(train_fraction),
        "synthetic": syn_desc, "synthetic_samples": n_syn,
        "synthetic_mode": None if syn_path is None else ("append" if synthetic_ratio is None else "mix"),
        "synthetic_ratio": synthetic_ratio,
        "image_size": list(size), "batch_size": int(batch_size), "max_epochs": int(epochs),
        "steps_per_epoch": spe, "patience": int(patience),
        "min_patience_steps": int(min_patience_steps), "patience_epochs": wait, "learning_rate": float(learning_rate),
        "augment": augment if isinstance(augment, str) else bool(augment), "filters": list(filters), "dense_units": list(dense_units),
        "dropout": float(dropout), "batch_norm": bool(batch_norm), "pooling": pooling,
        "bn_momentum": momentum, "bn_momentum_rule": bn_momentum if isinstance(bn_momentum, str) else "fixed",
        "label_smoothing": float(label_smoothing), "weight_decay": float(weight_decay),
        "lr_schedule": lr_schedule, "monitor": monitor, "seed": int(seed),
        "init_weights": None if init_weights is None else os.fspath(init_weights),
        "weight_ema": ema, "real_passes": bool(real_passes), "synthetic_soft_labels": soft_desc,
        "synthetic_bn": synthetic_bn, "synthetic_batches": "fixed" if fixed else "sampled",
        "synthetic_rows_per_batch": syn_rows or None,
        "num_classes": k, "class_names": names, "environment": environment_info(),
        **dict(extra_config or {}),
    }
    if verbose:
        if n_syn and synthetic_ratio is not None and float(synthetic_ratio) >= 1.0:
            what = f"{n_syn} synthetic samples only"
        elif n_syn:
            mix = "" if synthetic_ratio is None else f" (mixed at {float(synthetic_ratio):g})"
            what = f"{len(train)} real + {n_syn} synthetic samples{mix}"
        else:
            what = f"{len(train)} real samples"
        print(f"training classifier ({k} classes, {size[0]}x{size[1]}) on {what}; "
              f"val {len(val)}, test {len(test)}; up to {epochs} epochs x {spe} steps", flush=True)
    hist = trainer.fit(train_ds, epochs=int(epochs), steps_per_epoch=spe, validation_data=val_ds,
                       callbacks=callbacks, verbose=2 if verbose else 0)
    history = {key: [float(v) for v in vals] for key, vals in hist.history.items()}

    metrics = {
        **({"test": _report(model, test, size, batch_size, names)} if report_test else {}),
        "val": _report(model, val, size, batch_size, names),
        "best_epoch": keeper.best_epoch,
        "best_val_loss": (history["val_loss"][keeper.best_epoch - 1]
                          if keeper.best_epoch and history.get("val_loss") else None),  # of the kept weights
        "monitor": monitor, "best_monitor_value": keeper.best,
        "epochs_run": len(history.get("loss", [])),
        "stopped_early": len(history.get("loss", [])) < int(epochs),
        "seconds": round(time.time() - t0, 1),
    }
    splits = {name: [s.source_id for s in part.samples] for name, part in
              (("train", train), ("val", val), ("test", test))}
    model_dir = os.path.join(out_dir, "model") if export else None
    with atomic_directory(out_dir, overwrite=True) as tmp:
        if export:
            export_classifier(model, os.path.join(tmp, "model"), names, size,
                              extra_config={"trained_on": ds.spec, "run_dir": out_dir, "seed": int(seed),
                                            "train_source_ids": sorted(splits["train"]),
                                            "selection_source_ids": sorted(splits["val"])})
        if save_weights:
            model.save_weights(os.path.join(tmp, "weights.h5"))
        ds.classes.save(os.path.join(tmp, "classes.json"))
        write_history_csv(os.path.join(tmp, "history.csv"), history)
        write_json(os.path.join(tmp, "config.json"), config)
        write_json(os.path.join(tmp, "splits.json"), splits)
        write_json(os.path.join(tmp, "metrics.json"), metrics)
    if verbose:
        split = "test" if report_test else "val"
        t = metrics[split]
        print(f"{split} accuracy {100 * t['accuracy']:.1f}%, macro F1 {100 * t['macro']['f1']:.1f}% "
              f"({t['num_samples']} images) -> {out_dir}", flush=True)
    return {"out_dir": out_dir, "model_dir": model_dir, "metrics": metrics, "config": config, "history": history}


__all__ = ["train_classifier", "split_classification", "split_sources", "teacher_targets"]
