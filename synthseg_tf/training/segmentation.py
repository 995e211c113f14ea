"""Train and evaluate the U-Net segmenter on real data, optionally mixed with synthetic samples.

:func:`train_unet` writes a *run directory*::

    RUN_DIR/
      config.json     every setting of the run (data, sizes, schedule, loss, seed, versions) and
                      ``source_ids`` of its train and val (selection) images (None for TFRecords)
      classes.json    the class table (ids 0..K-1, 255 = void)
      history.csv     one row per epoch: loss, pixel_accuracy, mean_iou and their val_ versions
      metrics.json    {"val": full-resolution evaluation on the whole validation set, ...}
      model/          the exported SavedModel (:func:`synthseg_tf.models.unet.export_unet`);
                      this is what ``load_segmenter`` and the generation quality filter load;
                      its config.json repeats ``train_source_ids``/``selection_source_ids``
      weights.h5      the Keras weights (rebuild with ``build_unet`` to fine-tune or re-export)

The directory is built under a temporary name and renamed when complete, so a run directory
that exists (with its ``metrics.json``) is a finished run.

Compute budget (fair comparisons)
---------------------------------
The number of steps per epoch is ``ceil(N_real / batch_size)`` where ``N_real`` is the number
of *real* training samples, whatever the synthetic mix. With ``synthetic_ratio = r`` each
training sample is drawn from the synthetic set with probability ``r`` and from the real set
otherwise, so synthetic samples *replace* real ones inside batches of the same size instead of
lengthening the epoch. A real-only run and a real+synthetic run with the same arguments
therefore use identical hyper-parameters, the same seed (same initial weights) and the same
number of optimizer steps on batches of the same size: only the data differ.
``synthetic_ratio=1.0`` trains on synthetic samples only, still for the real set's budget.

Which weights are kept
----------------------
By default (``keep="best"``) the weights of the epoch with the highest validation mean IoU
(``val_mean_iou``, computed at the training size) are restored at the end of training; with
``keep="last"`` the final weights are kept. The exported model and ``metrics.json`` use those
weights. ``metrics.json["val"]`` is computed afterwards at the *native* label resolution (the
model input is resized to the training size, the class probabilities are resized back before
the argmax, exactly as the exported SavedModel does) with a numpy
:class:`~synthseg_tf.metrics.ConfusionMatrix` over the full validation set, void pixels skipped.

Determinism
-----------
``tf.keras.utils.set_random_seed(seed)`` is called before the model is built, and every input
pipeline (shuffling, augmentation, synthetic mixing) is seeded from ``seed``; two runs with the
same arguments on the same machine give the same weights (GPU kernels may still differ in the
last bits unless ``tf.config.experimental.enable_op_determinism()`` is on).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from synthseg_tf import _env  # noqa: F401  (SM_FRAMEWORK / quiet TF before TensorFlow loads)
from synthseg_tf.data.classes import ClassTable
from synthseg_tf.data.dataset import SEGMENTATION, Dataset

Source = Union[str, Dataset]

DEFAULT_EPOCHS = 10
# Early stopping ignores the first epochs, up to this many optimizer steps (at most a quarter of the
# run's budget): batch-norm moving statistics (momentum 0.99) and the weight EMA (0.99) both need
# about 100 steps to settle, and until then the selection mIoU can sink before it rises. On CamVid
# at 25 % (--ema 0.99, 10 steps per epoch) a synthetic-only run sat at 3-8 % for its first 13 epochs
# and reached 41 % by epoch 80; with patience 8 and no warm-up it was stopped at epoch 10.
EARLY_STOPPING_WARMUP_STEPS = 200
CACHE_LIMIT_BYTES = 1.5 * 2 ** 30  # decoded samples kept in memory when the set is smaller than this


# ============================================================================ shared helpers
def parse_image_size(image_size) -> Tuple[int, int]:
    """``128``, ``"128"``, ``"96x128"`` or ``(96, 128)`` -> ``(height, width)``."""
    if isinstance(image_size, str):
        parts = [p for p in image_size.lower().replace(",", "x").split("x") if p.strip()]
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"image size must be N or HxW, got {image_size!r}") from None
        image_size = vals[0] if len(vals) == 1 else tuple(vals)
    if isinstance(image_size, (int, np.integer)):
        image_size = (int(image_size), int(image_size))
    if len(image_size) != 2:
        raise ValueError(f"image size must be (height, width), got {image_size!r}")
    h, w = int(image_size[0]), int(image_size[1])
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {image_size!r}")
    return h, w


def is_tfrecord_source(source) -> bool:
    """True for a TFRecord folder, file, glob or ``tfrecord:PATH`` string (what ``raw_source`` reads as TFRecords)."""
    return isinstance(source, str) and (
        source.startswith("tfrecord:") or os.path.isdir(source)
        or source.endswith((".tfrecord", ".tfrecord.gz")) or "*" in source)


def _tfrecord_path(source: str) -> str:
    return source[len("tfrecord:"):] if source.startswith("tfrecord:") else source


def count_tfrecords(path: str) -> int:
    """Number of examples of a TFRecord folder (``dataset.json``'s count, else by reading)."""
    from synthseg_tf.data.tfrecord import read_metadata, tfrecord_files

    n = int(read_metadata(path).get("count", -1))
    if n >= 0:
        return n
    import tensorflow as tf

    files = tfrecord_files(path)
    comp = "GZIP" if files[0].endswith(".gz") else None
    return int(sum(1 for _ in tf.data.TFRecordDataset(files, compression_type=comp)))


def resolve_source(source, task: Optional[str], what: str) -> Tuple[Source, ClassTable, int, str]:
    """A Dataset, spec string or TFRecord folder -> ``(source for raw_source, classes, count, description)``.

    ``task`` (``"segmentation"``/``"classification"``/None) is checked when known.
    Errors name ``what`` (e.g. ``"--val"``) and the source.
    """
    from synthseg_tf.data.layouts import load

    if source is None:
        raise ValueError(f"{what}: no data given")
    if isinstance(source, Dataset):
        ds = source
    elif is_tfrecord_source(source):
        from synthseg_tf.data.tfrecord import read_class_table, read_metadata, tfrecord_files

        path = _tfrecord_path(source)
        try:
            tfrecord_files(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what}: {path} holds no TFRecord files (expected data-*.tfrecord shards "
                                    "from `synthseg data to-tfrecord` or `synthseg generate`)") from None
        table = read_class_table(path)
        if table is None:
            raise ValueError(f"{what}: {path} has no classes.json beside its TFRecords")
        meta_task = read_metadata(path).get("task")
        if task and meta_task and meta_task != task and task == SEGMENTATION:
            raise ValueError(f"{what}: {path} holds {meta_task} data, {task} data is needed")
        n = count_tfrecords(path)
        if n == 0:
            raise ValueError(f"{what}: {path} holds no examples")
        return path, table, n, f"tfrecord:{os.path.abspath(path)}"
    elif isinstance(source, str):
        ds = load(source)
    else:
        raise TypeError(f"{what}: expected a Dataset, a dataset spec or a TFRecord folder, got {type(source).__name__}")
    if task and ds.task != task:
        raise ValueError(f"{what}: {ds.spec} is a {ds.task} dataset, {task} data is needed")
    if len(ds) == 0:
        raise ValueError(f"{what}: {ds.spec} has no samples")
    return ds, ds.classes, len(ds), ds.spec


def source_ids_of(source: Source) -> Optional[List[str]]:
    """The sorted ``source_id`` s of a Dataset; None for a TFRecord folder (its ids are not listed
    without reading every record). Recorded with every trained model, so a filter or teacher built
    from it can be checked against an experiment's subset
    (:func:`~synthseg_tf.experiments.protocol.check_quality_provenance`)."""
    return source.source_ids() if isinstance(source, Dataset) else None


def check_same_classes(a: ClassTable, b: ClassTable, what_a: str, what_b: str) -> None:
    """Refuse to mix data whose class ids mean different things."""
    if a.names != b.names:
        raise ValueError(f"{what_b} has classes {b.names} but {what_a} has {a.names}; class ids must mean the "
                         "same thing in both (generate the synthetic data with a generator trained on this data)")


def should_cache(source: Source, n: int, cache: Optional[bool]) -> bool:
    """``cache=None``: keep decoded samples in memory when the whole set needs < 1.5 GiB."""
    if cache is not None:
        return bool(cache)
    from synthseg_tf.data.tfdata import raw_source

    try:
        el = next(iter(raw_source(source)[0].take(1)))
    except StopIteration:
        return False
    h, w = (int(s) for s in el["image"].shape[:2])
    return n * h * w * 4 < CACHE_LIMIT_BYTES


def prepare_out_dir(out_dir: str, overwrite: bool) -> str:
    """Absolute ``out_dir``; refuses an existing non-empty one unless ``overwrite`` (an empty one is removed)."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.isdir(out_dir) and not os.listdir(out_dir):
        os.rmdir(out_dir)
    elif os.path.exists(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another output folder or pass overwrite=True "
                              "(--overwrite)")
    return out_dir


def write_json(path: str, obj) -> None:
    from synthseg_tf.utils import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if math.isnan(float(o)) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def write_history_csv(path: str, history: Dict[str, List[float]]) -> None:
    """Keras ``History.history`` -> CSV with an ``epoch`` column (1-based)."""
    import io

    from synthseg_tf.utils import atomic_write_text

    keys = list(history)
    n = max((len(v) for v in history.values()), default=0)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["epoch"] + keys)
    for i in range(n):
        w.writerow([i + 1] + [_fmt(history[k][i]) if i < len(history[k]) else "" for k in keys])
    atomic_write_text(path, buf.getvalue())


def _fmt(v) -> str:
    return repr(float(v))


def read_history_csv(path: str) -> Dict[str, List[float]]:
    """``history.csv`` -> ``{column: [values]}`` (``epoch`` included); empty cells become NaN."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [float(r[k]) if r[k] not in ("", None) else float("nan") for r in rows] for k in rows[0]}


def environment_info() -> Dict:
    import tensorflow as tf

    from synthseg_tf import __version__

    return {"synthseg_tf": __version__, "tensorflow": tf.__version__, "python": platform.python_version()}


EMA_WARMUP = 10.0  # the weight average's decay is min(decay, (1 + t) / (EMA_WARMUP + t)) after step t


def check_ema_decay(decay) -> float:
    """``decay`` as a float, or ValueError unless it lies strictly between 0 and 1."""
    v = float(decay)
    if not 0.0 < v < 1.0:
        raise ValueError(f"weight EMA decay (ema) must be in (0, 1), got {decay}")
    return v


def weight_ema_callback(decay: float, warmup: float = EMA_WARMUP):
    """A callback keeping an exponential moving average of the model's trainable weights during
    ``fit`` (Polyak averaging), and validating it: the selection metrics of every epoch are those
    of the averaged weights, and :meth:`weights` returns them (what keep-best stores).

    After each optimizer step, ``average = d * average + (1 - d) * weight`` with
    ``d = min(decay, (1 + t) / (warmup + t))`` (``t``: steps so far, this one included), so the first steps do not
    keep the random initialisation in the average. Around each validation pass (``fit``'s
    ``on_test_begin`` / ``on_test_end``) the averaged values are swapped into the model and the
    trained ones swapped back; non-trainable weights (batch-norm statistics) are the model's
    own. :meth:`apply` leaves the averaged weights in the model.
    """
    import tensorflow as tf

    decay = check_ema_decay(decay)

    class WeightEMA(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.decay, self.warmup = float(decay), float(warmup)
            self._avg = None
            self._steps = None
            self._backup = None
            self._fitting = False
            self._update = None

        def on_train_begin(self, logs=None):
            self._fitting = True
            if self._avg is not None:
                return  # a second fit() call continues the same average
            tvars = self.model.trainable_variables
            self._avg = [tf.Variable(v, trainable=False, name="ema/" + v.name.split(":")[0]) for v in tvars]
            self._steps = tf.Variable(0.0, trainable=False, dtype=tf.float32)

            @tf.function
            def update():
                t = self._steps.assign_add(1.0)
                d = tf.minimum(self.decay, (1.0 + t) / (self.warmup + t))
                for a, v in zip(self._avg, tvars):
                    a.assign(d * a + (1.0 - d) * tf.cast(v, a.dtype))

            self._update = update

        def on_train_batch_end(self, batch, logs=None):
            self._update()

        def on_train_end(self, logs=None):
            self._fitting = False

        def on_test_begin(self, logs=None):
            if self._fitting and self._avg is not None:
                tvars = self.model.trainable_variables
                self._backup = [v.numpy() for v in tvars]
                for v, a in zip(tvars, self._avg):
                    v.assign(a)

        def on_test_end(self, logs=None):
            if self._backup is not None:
                for v, b in zip(self.model.trainable_variables, self._backup):
                    v.assign(b)
                self._backup = None

        def weights(self):
            """The model's weights (``get_weights`` order) with the averaged trainable ones."""
            if self._avg is None:
                return self.model.get_weights()
            avg = {id(v): a for v, a in zip(self.model.trainable_variables, self._avg)}
            return [avg[id(v)].numpy() if id(v) in avg else v.numpy() for v in self.model.weights]

        def apply(self):
            """Put the averaged weights into the model (the final weights when keeping the last)."""
            if self._avg is not None:
                for v, a in zip(self.model.trainable_variables, self._avg):
                    v.assign(a)

    return WeightEMA()


def keep_best_callback(monitor: str, mode: str, weights_fn=None):
    """A callback remembering the weights of the best epoch by ``monitor`` and restoring them at the end.

    (Keras' ``EarlyStopping(restore_best_weights=True)`` restores only when it stops early.)
    ``weights_fn`` (default ``model.get_weights``) gives the weights the epoch's metrics were
    measured on, e.g. :func:`weight_ema_callback`'s ``weights``.
    """
    import tensorflow as tf

    class KeepBest(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.monitor, self.mode = monitor, mode
            self.best = None
            self.best_epoch = None
            self.best_weights = None

        def on_epoch_end(self, epoch, logs=None):
            v = (logs or {}).get(self.monitor)
            if v is None or not np.isfinite(v):
                return
            if self.best is None or (v > self.best if self.mode == "max" else v < self.best):
                self.best, self.best_epoch = float(v), epoch + 1
                self.best_weights = weights_fn() if weights_fn is not None else self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return KeepBest()


def early_stopping_start(steps_per_epoch: int, total_steps: int,
                         warmup_steps: int = EARLY_STOPPING_WARMUP_STEPS) -> int:
    """The epochs early stopping ignores (Keras ``start_from_epoch``): as many whole epochs as fit in
    ``min(warmup_steps, total_steps // 4)`` optimizer steps."""
    return int(min(int(warmup_steps), int(total_steps) // 4) // max(1, int(steps_per_epoch)))


def schedule(n_real: int, batch_size: int, epochs: Optional[int], steps: Optional[int]) -> Tuple[int, int]:
    """``(epochs, steps_per_epoch)`` from the real set size (see the module docstring).

    - ``epochs``: ``steps_per_epoch = ceil(n_real / batch_size)``;
    - ``steps`` (total optimizer steps): that many steps, validated about once per real epoch
      (``epochs = ceil(steps / real_steps_per_epoch)``; the total is ``steps`` rounded up to a
      multiple of ``epochs``);
    - neither: ``DEFAULT_EPOCHS`` epochs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    real_spe = max(1, math.ceil(n_real / batch_size))
    if epochs is not None and steps is not None:
        raise ValueError("give epochs or steps, not both")
    if steps is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        e = max(1, math.ceil(int(steps) / real_spe))
        return e, math.ceil(int(steps) / e)
    e = DEFAULT_EPOCHS if epochs is None else int(epochs)
    if e < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    return e, real_spe


# ============================================================================ data
def class_pixel_frequencies(source: Source, num_classes: int) -> np.ndarray:
    """Pixel count per class over the masks of ``source`` (void and out-of-range ids skipped)."""
    from synthseg_tf.data.tfdata import raw_source

    raw, _ = raw_source(source)
    counts = np.zeros(num_classes, dtype=np.int64)
    for m in raw.map(lambda e: e["mask"]).as_numpy_iterator():
        m = m[m < num_classes]
        counts += np.bincount(m.ravel(), minlength=num_classes)[:num_classes]
    return counts


def _repeated_raw(source: Source, n: int, cache: bool, seed: int):
    from synthseg_tf.data.tfdata import raw_source

    raw, _ = raw_source(source)
    if cache:
        raw = raw.cache()
    raw = raw.shuffle(max(1, min(n, 1024)), seed=seed, reshuffle_each_iteration=True).repeat()
    return raw.map(lambda el: {"image": el["image"], "mask": el["mask"]})


def training_pipeline(real: Optional[Source], n_real: int, synthetic: Optional[Source], n_syn: int,
                      synthetic_ratio: float, image_size: Tuple[int, int], batch_size: int, augment: bool,
                      seed: int, cache_real: bool, cache_syn: bool):
    """Endless batches ``(images, masks)``: real and synthetic samples mixed at ``synthetic_ratio``."""
    import tensorflow as tf

    from synthseg_tf.data.tfdata import mix_datasets, prepare
    from synthseg_tf.models.unet import to_unet_inputs

    parts, weights = [], []
    if synthetic_ratio < 1.0:
        parts.append(_repeated_raw(real, n_real, cache_real, seed))
        weights.append(1.0 - synthetic_ratio)
    if synthetic is not None and synthetic_ratio > 0.0:
        parts.append(_repeated_raw(synthetic, n_syn, cache_syn, seed + 1))
        weights.append(synthetic_ratio)
    raw = parts[0] if len(parts) == 1 else mix_datasets(parts, weights, seed=seed + 2)
    ds = prepare(raw, image_size, augment=augment, seed=seed)
    return ds.batch(batch_size, drop_remainder=True).map(to_unet_inputs).prefetch(tf.data.AUTOTUNE)


# ============================================================================ evaluation
def model_segment_fn(model, image_size: Tuple[int, int], use_tf_function: bool = True) -> Callable:
    """What the exported SavedModel does, on an in-memory model: float images [0,1] of any size ->
    resize to ``image_size`` -> probabilities -> resized back (bilinear) -> argmax ids."""
    import tensorflow as tf

    from synthseg_tf.models.unet import probabilities_at_input_size

    size = tf.constant(image_size, tf.int32)

    def segment(images):
        return tf.argmax(probabilities_at_input_size(model, images, size), axis=-1, output_type=tf.int32)

    if use_tf_function:
        segment = tf.function(segment, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    return lambda x: segment(tf.convert_to_tensor(x, tf.float32)).numpy()


def confusion_over(segment: Callable, source: Source, num_classes: int, batch_size: int = 8,
                   image_size: Optional[Tuple[int, int]] = None):
    """Run ``segment`` (float [B,H,W,3] in [0,1] -> ids [B,H,W]) over every sample of ``source``.

    ``image_size=None`` evaluates at each sample's native resolution (consecutive samples of the
    same size are batched together); otherwise images are resized (bilinear) and masks
    (nearest) to ``image_size`` first. Returns a :class:`~synthseg_tf.metrics.ConfusionMatrix`.
    """
    import tensorflow as tf

    from synthseg_tf.data.tfdata import prepare, raw_source
    from synthseg_tf.metrics.segmentation import ConfusionMatrix

    raw, _ = raw_source(source)
    if image_size is not None:
        raw = prepare(raw, image_size)
    else:
        raw = raw.map(lambda e: dict(e, image=tf.image.convert_image_dtype(e["image"], tf.float32)),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    raw = raw.map(lambda e: (e["image"], e["mask"])).prefetch(tf.data.AUTOTUNE)
    cm = ConfusionMatrix(num_classes)
    imgs: List[np.ndarray] = []
    masks: List[np.ndarray] = []

    def flush():
        if imgs:
            ids = np.asarray(segment(np.stack(imgs)))
            cm.update(np.stack(masks), ids)
            imgs.clear()
            masks.clear()

    for img, mask in raw.as_numpy_iterator():
        if imgs and (img.shape != imgs[0].shape or len(imgs) >= batch_size):
            flush()
        imgs.append(img)
        masks.append(mask)
    flush()
    if cm.total == 0:
        raise ValueError("the evaluation data has no labelled (non-void) pixels")
    return cm


def _resolve_model_dir(model_dir: str) -> str:
    """Accept the export folder itself or a run folder holding ``model/``."""
    model_dir = os.fspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")) and \
            os.path.isfile(os.path.join(model_dir, "model", "saved_model.pb")):
        return os.path.join(model_dir, "model")
    return model_dir


def evaluate_unet(model_dir: str, data: Source, image_size=None, batch_size: int = 8) -> Dict:
    """Evaluate an exported segmenter (``RUN_DIR/model`` or ``RUN_DIR``) on a Dataset, spec or TFRecord folder.

    Predictions are made with :func:`~synthseg_tf.models.unet.load_segmenter` (which resizes to
    the training size and back) and compared at the native label resolution; with
    ``image_size`` (``N``, ``"HxW"`` or a pair) images (bilinear) and labels (nearest) are
    resized to that size first. The data's class table must match the model's.

    Returns :meth:`ConfusionMatrix.as_dict` (per-class IoU/Dice/accuracy, mean IoU, mean Dice,
    pixel accuracy, confusion matrix) plus ``model``, ``data`` and ``samples``.
    """
    from synthseg_tf.models.unet import load_segmenter

    model_dir = _resolve_model_dir(model_dir)
    seg = load_segmenter(model_dir)
    src, table, n, desc = resolve_source(data, SEGMENTATION, "data")
    if table.names != seg.class_table.names:
        raise ValueError(f"{desc} has classes {table.names} but the model {model_dir} was trained on "
                         f"{seg.class_table.names}")
    size = parse_image_size(image_size) if image_size is not None else None
    cm = confusion_over(lambda x: seg(x), src, seg.num_classes, batch_size=batch_size, image_size=size)
    out = cm.as_dict(seg.class_table.names)
    out.update(model=os.path.abspath(model_dir), data=desc, samples=n,
               resolution="native" if size is None else f"{size[0]}x{size[1]}")
    return out


# ============================================================================ training
def train_unet(
    train: Source,
    val: Optional[Source],
    out_dir: str,
    image_size=(128, 128),
    batch_size: int = 8,
    epochs: Optional[int] = None,
    steps: Optional[int] = None,
    synthetic: Optional[str] = None,
    synthetic_ratio: float = 0.5,
    learning_rate: float = 1e-3,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    focal_weight: float = 0.0,
    class_weights: Union[None, str, Sequence[float]] = None,
    seed: int = 0,
    backbone: str = "resnet34",
    encoder_weights: Optional[str] = None,
    augment: Union[bool, str] = True,
    keep: str = "best",
    patience: Optional[int] = None,
    evaluate: Optional[Source] = None,
    cache: Optional[bool] = None,
    export: bool = True,
    verbose: int = 1,
    overwrite: bool = False,
    run_eagerly: bool = False,
    extra_config: Optional[Dict] = None,
    init_weights: Optional[str] = None,
    save_weights: bool = False,
    ema: Optional[float] = None,
) -> Dict:
    """Train a U-Net on ``train`` (+ optional ``synthetic``), evaluate on ``val``, write ``out_dir``.

    ``train``/``val``: Dataset objects, spec strings or TFRecord folders (segmentation data with
    the same class table). ``val=None`` splits a Dataset/spec with ``Dataset.train_val()``.
    ``synthetic``: a TFRecord folder of generated samples (``synthseg generate`` output) mixed
    into training with probability ``synthetic_ratio`` (1.0 = synthetic only); its class table
    must equal the real one. Steps per epoch follow the *real* set size (module docstring), so
    runs with and without synthetic data get the same budget. ``epochs`` / ``steps``: see
    :func:`schedule`. Loss: ``dice_weight * Dice + ce_weight * CE + focal_weight * focal``;
    ``class_weights``: None, ``"auto"`` (inverse square root of the real training set's pixel
    frequencies) or one weight per class. ``keep``: ``"best"`` (highest ``val_mean_iou``) or
    ``"last"`` weights. ``cache=None`` keeps decoded samples in memory when they fit in
    1.5 GiB. ``export=False`` skips the SavedModel (experiments use it to save disk);
    ``save_weights=True`` still writes ``weights.h5``. ``init_weights``: a ``weights.h5`` of an
    earlier run with the same backbone, class table and image size to start from (pretrain on
    synthetic data, then fine-tune on real data). ``ema`` (e.g. 0.99): keep an exponential moving
    average of the weights (:func:`weight_ema_callback`); selection, keep-best and the returned
    model then use the averaged weights.

    Selection vs evaluation: ``val`` is the *selection* split: keep-best and early stopping
    (``patience``: stop when ``val_mean_iou`` has not improved for that many epochs, counted after
    a warm-up of :func:`early_stopping_start` epochs; ``epochs`` / ``steps`` is then the maximum)
    read it, and ``metrics["val"]`` reports it. ``evaluate``
    (optional) is a separate *evaluation* split that nothing in training reads: it is scored
    once, after training, at native resolution, into ``metrics["eval"]``.

    Returns ``{"out_dir", "model_dir", "metrics", "config", "history"}``; refuses an existing
    ``out_dir`` unless ``overwrite``.
    """
    import tensorflow as tf

    from synthseg_tf.models.unet import SegmentationLoss, build_unet, compile_unet, export_unet, to_unet_inputs
    from synthseg_tf.data.tfdata import make_dataset
    from synthseg_tf.utils import atomic_directory

    t0 = time.time()
    size = parse_image_size(image_size)
    if not 0.0 <= float(synthetic_ratio) <= 1.0:
        raise ValueError(f"synthetic_ratio must be in [0, 1], got {synthetic_ratio}")
    synthetic_ratio = float(synthetic_ratio) if synthetic is not None else 0.0
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    if patience is not None and int(patience) < 1:
        raise ValueError(f"patience must be >= 1 (or None for no early stopping), got {patience}")
    if ema is not None:
        ema = check_ema_decay(ema)
    out_dir = prepare_out_dir(out_dir, overwrite)

    if val is None:
        if isinstance(train, str) and is_tfrecord_source(train):
            raise ValueError("train is a TFRecord folder: pass val (a spec or TFRecord folder) as well")
        from synthseg_tf.data.layouts import load

        train, val = load(train).train_val()
    train_src, table, n_real, train_desc = resolve_source(train, SEGMENTATION, "train")
    val_src, val_table, n_val, val_desc = resolve_source(val, SEGMENTATION, "val")
    check_same_classes(table, val_table, f"train ({train_desc})", f"val ({val_desc})")
    eval_src, n_eval, eval_desc = None, 0, None
    if evaluate is not None:
        eval_src, eval_table, n_eval, eval_desc = resolve_source(evaluate, SEGMENTATION, "evaluate")
        check_same_classes(table, eval_table, f"train ({train_desc})", f"evaluate ({eval_desc})")
    syn_src, n_syn, syn_desc = None, 0, None
    if synthetic is not None:
        syn_src, syn_table, n_syn, syn_desc = resolve_source(synthetic, SEGMENTATION, "synthetic")
        check_same_classes(table, syn_table, f"train ({train_desc})", f"synthetic ({syn_desc})")
    k = table.num_classes
    n_epochs, spe = schedule(n_real, batch_size, epochs, steps)
    es_start = early_stopping_start(spe, n_epochs * spe)

    cw = None
    if isinstance(class_weights, str):
        if class_weights != "auto":
            raise ValueError(f"class_weights must be None, 'auto' or a list, got {class_weights!r}")
        from synthseg_tf.models.unet import class_weights_from_frequencies

        cw = class_weights_from_frequencies(class_pixel_frequencies(train_src, k)).tolist()
    elif class_weights is not None:
        cw = [float(v) for v in class_weights]

    tf.keras.utils.set_random_seed(int(seed))
    cache_real = should_cache(train_src, n_real, cache) if synthetic_ratio < 1.0 else False
    cache_syn = should_cache(syn_src, n_syn, cache) if syn_src is not None and synthetic_ratio > 0 else False
    train_ds = training_pipeline(train_src, n_real, syn_src, n_syn, synthetic_ratio, size, batch_size, augment,
                                 int(seed), cache_real, cache_syn)
    val_ds = make_dataset(val_src, image_size=size, batch_size=batch_size, augment=False, shuffle=False,
                          cache=should_cache(val_src, n_val, cache)).map(to_unet_inputs)

    model = build_unet(k, backbone=backbone, encoder_weights=encoder_weights, input_shape=(size[0], size[1], 3))
    if init_weights is not None:
        _load_init_weights(model, init_weights, {"image_size": list(size), "backbone": backbone,
                                                 "class_names": list(table.names)})
    loss = SegmentationLoss(k, dice_weight=dice_weight, ce_weight=ce_weight, focal_weight=focal_weight,
                            class_weights=cw)
    compile_unet(model, k, learning_rate=learning_rate, loss=loss)
    model.run_eagerly = bool(run_eagerly)

    config = {
        "task": "segmentation",
        "train": train_desc, "train_samples": n_real,
        "val": val_desc, "val_samples": n_val, "val_role": "selection (keep-best, early stopping)",
        "evaluate": eval_desc, "evaluate_samples": n_eval,
        "synthetic": syn_desc, "synthetic_samples": n_syn, "synthetic_ratio": synthetic_ratio,
        "image_size": list(size), "batch_size": int(batch_size),
        "epochs": n_epochs, "steps_per_epoch": spe, "total_steps": n_epochs * spe,
        "requested": {"epochs": epochs, "steps": steps},
        "budget": "steps_per_epoch = ceil(real training samples / batch_size), whatever the synthetic mix",
        "learning_rate": float(learning_rate), "optimizer": "adam",
        "loss": {"dice_weight": float(dice_weight), "ce_weight": float(ce_weight),
                 "focal_weight": float(focal_weight), "class_weights": cw,
                 "class_weights_mode": class_weights if isinstance(class_weights, str) else None},
        "backbone": backbone, "encoder_weights": encoder_weights, "init_weights": init_weights,
        "augment": augment if isinstance(augment, str) else bool(augment),
        "keep": keep, "patience": None if patience is None else int(patience),
        "early_stopping_from_epoch": None if patience is None else es_start,
        "seed": int(seed), "num_classes": k, "class_names": table.names,
        "weight_ema": ema,
        "environment": environment_info(),
        "source_ids": {"train": source_ids_of(train_src), "selection": source_ids_of(val_src)},
        **dict(extra_config or {}),
    }
    averager = weight_ema_callback(ema) if ema is not None else None
    keeper = keep_best_callback("val_mean_iou", "max", averager.weights if averager is not None else None)
    callbacks = [averager] if averager is not None else []  # (first: it swaps the average in for validation)
    if keep == "best":
        callbacks.append(keeper)
    if patience is not None:
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="val_mean_iou", mode="max", patience=int(patience),
                                                          start_from_epoch=es_start))
    if verbose:
        mix = f" + synthetic {syn_desc} (ratio {synthetic_ratio:g})" if syn_src is not None else ""
        print(f"training U-Net ({backbone}, {k} classes, {size[0]}x{size[1]}) on {n_real} real samples{mix}: "
              f"{n_epochs} epoch(s) x {spe} steps, batch {batch_size}", flush=True)
    t_fit = time.time()
    hist = model.fit(train_ds, epochs=n_epochs, steps_per_epoch=spe, validation_data=val_ds,
                     callbacks=callbacks, verbose=2 if verbose else 0)
    fit_seconds = time.time() - t_fit
    if averager is not None and keep == "last":
        averager.apply()
    history = {key: [float(v) for v in vals] for key, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))

    segment = model_segment_fn(model, size, use_tf_function=not run_eagerly)
    cm = confusion_over(segment, val_src, k, batch_size=batch_size)
    metrics = {
        "val": cm.as_dict(table.names),
        "val_data": val_desc,
        "val_samples": n_val,
        "resolution": "native",
        "weights": keep,
        "best_epoch": keeper.best_epoch if keep == "best" else n_epochs,
        "best_val_mean_iou_at_train_size": keeper.best if keep == "best" else history.get("val_mean_iou", [None])[-1],
        "epochs_run": epochs_run,
        "steps_run": epochs_run * spe,
        "stopped_early": epochs_run < n_epochs,
        "train_seconds": round(fit_seconds, 1),
    }
    if eval_src is not None:
        metrics["eval"] = confusion_over(segment, eval_src, k, batch_size=batch_size).as_dict(table.names)
        metrics["eval_data"] = eval_desc
        metrics["eval_samples"] = n_eval
    metrics["seconds"] = round(time.time() - t0, 1)
    model_dir = os.path.join(out_dir, "model") if export else None
    with atomic_directory(out_dir, overwrite=True) as tmp:
        if export:
            export_unet(model, os.path.join(tmp, "model"), table.names, size,
                        extra_config={"trained_on": train_desc, "run_dir": out_dir, "seed": int(seed),
                                      "train_source_ids": config["source_ids"]["train"],
                                      "selection_source_ids": config["source_ids"]["selection"]})
        if export or save_weights:
            model.save_weights(os.path.join(tmp, "weights.h5"))
        table.save(os.path.join(tmp, "classes.json"))
        write_history_csv(os.path.join(tmp, "history.csv"), history)
        write_json(os.path.join(tmp, "config.json"), config)
        write_json(os.path.join(tmp, "metrics.json"), metrics)
    if verbose:
        ev = f"; eval mean IoU {_pct(metrics['eval']['mean_iou'])}" if "eval" in metrics else ""
        print(f"val mean IoU {_pct(metrics['val']['mean_iou'])}, pixel accuracy "
              f"{_pct(metrics['val']['pixel_accuracy'])}{ev} ({epochs_run} epochs, {epochs_run * spe} steps) "
              f"-> {out_dir}", flush=True)
    return {"out_dir": out_dir, "model_dir": model_dir, "metrics": metrics, "config": config, "history": history}


def _load_init_weights(model, path: str, expect: Dict, what: str = "U-Net",
                       needs: str = "same backbone, class table and image size") -> None:
    """Load a run's ``weights.h5`` (or a run folder holding one) into ``model``, naming the file on
    any mismatch: the run's ``config.json`` beside it must agree on ``expect`` (image size,
    backbone, class names: a fully convolutional U-Net would load weights of another size or class
    table without complaint), and the weights must fit the model (``what``, ``needs`` word the
    error)."""
    import tensorflow as tf

    from synthseg_tf.errors import ModelLoadError

    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        path = os.path.join(path, "weights.h5")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"init_weights: {path} does not exist (a run trained with save_weights=True "
                                "or export=True writes weights.h5)")
    cfg_path = os.path.join(os.path.dirname(path), "config.json")
    if tf.io.gfile.exists(cfg_path):
        with tf.io.gfile.GFile(cfg_path, "r") as f:
            cfg = json.load(f)
        diff = [k for k, v in expect.items() if k in cfg and cfg[k] != v]
        if diff:
            raise ModelLoadError(f"init_weights: {path} was trained with other " + ", ".join(
                f"{k} ({cfg[k]} vs {expect[k]})" for k in diff))
    try:
        model.load_weights(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"init_weights: {path} does not fit this {what} ({needs} needed): {e}") from e


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


__all__ = ["train_unet", "evaluate_unet", "schedule", "confusion_over", "model_segment_fn",
           "class_pixel_frequencies", "parse_image_size", "resolve_source", "read_history_csv"]
