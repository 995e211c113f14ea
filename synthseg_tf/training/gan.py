"""Train the pix2pix GAN into a run directory, resumable exactly, on one or several replicas.

Run directory layout (``out_dir``)::

    config.json          model/training settings (read back by load_generator and on resume)
    classes.json         the class table, when one is given
    checkpoints/         tf.train.Checkpoint: generator, discriminator, both optimisers, step,
                         the dropout RNG state (inside the generator), the EMA generator and
                         the DiffAugment RNG state (when used) and, when the input pipeline
                         supports it, the tf.data iterator position. Written atomically; the
                         last ``keep_checkpoints`` are kept plus the best by the held-out
                         ``val_g_l1`` (``best.json``), see :class:`CheckpointKeeper`
    log.csv              step, time, training losses (mean over the last log window), val losses
    tensorboard/         scalars and image grids (label map | real | generated)
    samples/step_XXXXXX.png   the same grids as PNG
    generator/           the trained generator (its EMA weights when ``ema_decay`` is set), a
                         Keras SavedModel that takes class-id masks

Multiple replicas: :func:`make_strategy` builds a ``MirroredStrategy`` over GPUs, or over
logical CPU devices when there is no GPU (useful for testing). Splitting the CPU must happen
before TensorFlow initialises its devices, i.e. before any dataset or tensor is created; call
``make_strategy(n)`` first, then build the datasets, then ``train_gan(..., replicas=n)``.

Exact resume: training draws batches from a host-side iterator of global batches that is
checkpointed with the model (or, for pipelines tf.data cannot checkpoint, fast-forwarded by the
number of steps done), each replica takes its slice of the global batch, and the only training
randomness (generator dropout, DiffAugment draws) comes from ``tf.random.Generator`` states
stored in the checkpoint. Training 2 steps, resuming and training 2 more gives the weights of 4 straight steps.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from synthseg_tf.data.classes import CLASS_TABLE_FILE, IGNORE_ID, ClassTable
from synthseg_tf.errors import ModelLoadError, StorageError, TrainingDiverged
from synthseg_tf.models.pix2pix import (D_LABEL_CONDITIONINGS, DEFAULT_DIFFAUGMENT, GENERATOR_ARCHS, LABEL_CONDITIONINGS,
                                        UPSAMPLES, Pix2Pix, build_pix2pix, check_discriminator_scales,
                                        check_spade_generator, check_style_dim, default_optimizers, generator_depth,
                                        generator_inputs, loss_weight, parse_diffaugment)
from synthseg_tf.utils import atomic_directory, atomic_write_bytes, atomic_write_text

CONFIG_FILE = "config.json"
LOG_FILE = "log.csv"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"
BEST_FILE = "best.json"  # in checkpoints/: the kept best checkpoint by MONITOR
MONITOR = "val_g_l1"  # held-out L1 reconstruction loss: lower is better
GENERATOR_DIR = "generator"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"

# Settings that define the networks or the optimisation; a resumed run must use the same ones.
ARCHITECTURE_KEYS = ("num_classes", "image_size", "num_labels", "norm", "spectral_norm", "base_filters",
                     "dropout", "gan_loss", "l1_weight", "feature_matching_weight", "learning_rate", "beta_1",
                     "upsample", "label_conditioning", "diffaugment", "ema_decay", "class_loss_weight",
                     "class_loss_model", "mismatch_weight", "d_label_conditioning", "generator_arch", "d_scales",
                     "aux_class_weight", "style_dim")
# What a run whose config.json predates a key did (transposed-conv decoder, label at the
# bottleneck, no DiffAugment, no EMA); see run_settings.
LEGACY_DEFAULTS = {"upsample": "transpose", "label_conditioning": "bottleneck", "diffaugment": None,
                   "ema_decay": None, "class_loss_weight": 0.0, "class_loss_model": None,
                   "mismatch_weight": 0.0, "d_label_conditioning": "input", "generator_arch": "unet",
                   "d_scales": 1, "aux_class_weight": 0.0, "style_dim": 0}

LABEL_ONLY_KEYS = ("label_conditioning", "d_label_conditioning")  # None in a run without class labels

DatasetLike = Union[tf.data.Dataset, Callable[[], tf.data.Dataset]]

_STRATEGIES: Dict[Tuple[str, ...], tf.distribute.Strategy] = {}


# --------------------------------------------------------------------------- strategy
def make_strategy(replicas: int = 1) -> tf.distribute.Strategy:
    """A distribution strategy with ``replicas`` replicas.

    - ``replicas == 1``: TensorFlow's default strategy (whatever device TF picks).
    - ``replicas > 1`` with at least that many GPUs: ``MirroredStrategy`` over the first ones.
    - ``replicas > 1`` without GPUs: splits the CPU into ``replicas`` logical devices and
      mirrors over them. This must happen before TensorFlow initialises its devices (before
      creating any tensor, dataset or model); otherwise a ``RuntimeError`` says so.

    Strategies are cached per device list: several ``MirroredStrategy`` objects over the same
    devices in one process make their collective ops collide (shape-mismatch errors).
    """
    replicas = int(replicas)
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if replicas == 1:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < replicas:
            raise ValueError(f"replicas={replicas} but only {len(gpus)} GPU(s) are visible")
        devices = tuple(d.name for d in tf.config.list_logical_devices("GPU")[:replicas])
    else:
        devices = _split_cpu(replicas)
    if devices not in _STRATEGIES:
        _STRATEGIES[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
    return _STRATEGIES[devices]


def _split_cpu(replicas: int) -> Tuple[str, ...]:
    """Names of ``replicas`` logical CPU devices, creating them if TF has not started yet."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing is None or len(existing) < replicas:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError as e:
            have = len(existing) if existing else 1
            raise RuntimeError(
                f"cannot split the CPU into {replicas} devices for replicas={replicas}: TensorFlow has already "
                f"initialised its devices ({have} CPU device(s)). Call synthseg_tf.training.gan.make_strategy"
                f"({replicas}) at the start of the program, before creating datasets, tensors or models.") from e
    return tuple(d.name for d in tf.config.list_logical_devices("CPU")[:replicas])


# --------------------------------------------------------------------------- run directory
def _has_previous_run(out_dir: str) -> bool:
    ckpt_dir = os.path.join(out_dir, CHECKPOINT_DIR)
    return (os.path.exists(os.path.join(out_dir, CONFIG_FILE)) or os.path.exists(os.path.join(out_dir, LOG_FILE))
            or (os.path.isdir(ckpt_dir) and bool(os.listdir(ckpt_dir))))


def read_config(run_dir: str) -> Dict:
    path = os.path.join(run_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable GAN run config ({e})") from e


def _write_config(out_dir: str, config: Dict) -> None:
    atomic_write_text(os.path.join(out_dir, CONFIG_FILE), json.dumps(config, indent=1))


def run_settings(config: Dict) -> Dict:
    """``config`` with the settings an older run's ``config.json`` lacks filled in as that run used them.

    Runs written before ``upsample``, ``label_conditioning``, ``diffaugment`` and ``ema_decay``
    existed used :data:`LEGACY_DEFAULTS` (``label_conditioning`` and ``d_label_conditioning`` only
    apply to class-conditional runs: ``None`` for the others). Present keys are kept.
    """
    out = dict(config)
    for k, v in LEGACY_DEFAULTS.items():
        if k not in out:
            out[k] = v if (k not in LABEL_ONLY_KEYS or out.get("num_labels")) else None
    return out


def _check_same_architecture(saved: Dict, current: Dict, out_dir: str) -> None:
    saved = run_settings(saved)
    diffs = [f"{k}: run has {saved.get(k)!r}, asked {current.get(k)!r}"
             for k in ARCHITECTURE_KEYS if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"cannot resume {out_dir} with different settings (pass the run's own): " + "; ".join(diffs))
    if saved.get("train_source_ids") is not None and current.get("train_source_ids") is not None \
            and sorted(saved["train_source_ids"]) != sorted(current["train_source_ids"]):
        a, b = set(saved["train_source_ids"]), set(current["train_source_ids"])
        raise ValueError(f"cannot resume {out_dir} on different training samples: the run trained on {len(a)} "
                         f"samples, asked {len(b)} ({len(a - b)} missing, {len(b - a)} new); use the same data, "
                         "--fraction and --subset-seed")


class _CsvLog:
    """``log.csv``: one row per logged step; rows past a resumed checkpoint are dropped."""

    def __init__(self, path: str, columns: Sequence[str]):
        self.path = path
        self.columns = list(columns)
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), None)
            if header:
                self.columns = header

    def truncate_after(self, step: int) -> None:
        """Keep only rows with ``step <= step`` (rewritten atomically)."""
        if not os.path.exists(self.path):
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, row: Dict) -> None:
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _csv_value(v) for k, v in row.items()})
            f.flush()


def _csv_value(v):
    return f"{v:.6g}" if isinstance(v, float) else v


# --------------------------------------------------------------------------- data
def _as_dataset(ds: Optional[DatasetLike]) -> Optional[tf.data.Dataset]:
    return ds() if callable(ds) and not isinstance(ds, tf.data.Dataset) else ds


def _iterator_checkpointable(iterator) -> bool:
    """Whether tf.data can save this iterator's position (not for py_function/generator pipelines)."""
    with tempfile.TemporaryDirectory() as d:
        try:
            tf.train.Checkpoint(iterator=iterator).write(os.path.join(d, "probe"))
            return True
        except (tf.errors.OpError, ValueError, TypeError):
            return False


def _sample_batch(source: DatasetLike, num_samples: int, num_labels: Optional[int]) -> Dict[str, np.ndarray]:
    """The first ``num_samples`` examples of the first batch of ``source``, as numpy arrays.

    A callable source is called anew, so the sample pipeline shares no state with training;
    a dataset is read through ``take(1)`` and the iterator is finished before training starts.
    """
    ds = _as_dataset(source).take(1)
    first = next(iter(ds))
    return {k: v[:num_samples].numpy() for k, v in _strip_batch(first, num_labels).items()}


def _replica_slice(batch, num_replicas: int):
    """This replica's contiguous share of a global batch (identity with one replica)."""
    if num_replicas == 1:
        return batch
    rid = tf.distribute.get_replica_context().replica_id_in_sync_group

    def cut(x):
        n = tf.shape(x)[0]
        tf.debugging.assert_equal(n % num_replicas, 0,
                                  message=f"global batch size must be divisible by replicas={num_replicas}")
        per = n // num_replicas
        return x[rid * per:(rid + 1) * per]

    return tf.nest.map_structure(cut, batch)


def _strip_batch(batch: Dict, num_labels: Optional[int]) -> Dict:
    """The keys the GAN uses (drops e.g. file names, which strategy.run cannot split)."""
    keys = ["image", "mask"] + (["label"] if num_labels else [])
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"GAN batches need keys {keys}; missing {missing}")
    return {k: batch[k] for k in keys}


# --------------------------------------------------------------------------- images
def _palette(num_classes: int, class_table: Optional[ClassTable]) -> np.ndarray:
    """256x3 uint8 colours: class colours, black for void and unknown ids."""
    table = class_table or ClassTable([f"class_{i}" for i in range(num_classes)])
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:num_classes] = np.array(table.colors[:num_classes], dtype=np.uint8)
    palette[IGNORE_ID] = 0
    return palette


def sample_grid(generator: tf.keras.Model, batch: Dict, palette: np.ndarray) -> np.ndarray:
    """``uint8 [rows*H, 3*W, 3]``: one row per example, columns label map | real | generated."""
    mask = np.asarray(batch["mask"]).astype(np.int64)
    # (a reference-image generator takes each image as its own reference: its appearance, its pose)
    fake = generator(generator_inputs(generator, batch), training=False).numpy()
    fake = np.clip((fake + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    real = np.clip(np.asarray(batch["image"]) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    colour = palette[np.clip(mask, 0, 255)]
    rows = [np.concatenate([c, r, f], axis=1) for c, r, f in zip(colour, real, fake)]
    return np.concatenate(rows, axis=0)


def _save_png(path: str, image: np.ndarray) -> None:
    atomic_write_bytes(path, tf.io.encode_png(image).numpy())


# --------------------------------------------------------------------------- model + checkpoint
def _build_model(strategy, num_classes, image_size, num_labels, norm, spectral_norm, base_filters, dropout,
                 gan_loss, l1_weight, feature_matching_weight, learning_rate, beta_1, upsample="transpose",
                 label_conditioning=None, diffaugment=None, ema_decay=None, class_model=None,
                 class_loss_weight: float = 0.0, mismatch_weight: float = 0.0,
                 d_label_conditioning: str = "input", generator_arch: str = "unet", d_scales: int = 1,
                 aux_class_weight: float = 0.0, style_dim: int = 0) -> Pix2Pix:
    """Pix2Pix with compiled, already built optimisers, inside ``strategy.scope()``."""
    with strategy.scope():
        model = build_pix2pix(num_classes, image_size, base_filters=base_filters, norm=norm,
                              spectral_norm=spectral_norm, num_labels=num_labels, dropout=dropout,
                              upsample=upsample, label_conditioning=label_conditioning, diffaugment=diffaugment,
                              ema_decay=ema_decay, d_label_conditioning=d_label_conditioning or "input",
                              arch=generator_arch or "unet", d_scales=d_scales, style_dim=style_dim)
        g_opt, d_opt = default_optimizers(learning_rate, beta_1)
        model.compile(g_opt, d_opt, gan_loss=gan_loss, l1_weight=l1_weight,
                      feature_matching_weight=feature_matching_weight, class_model=class_model,
                      class_loss_weight=class_loss_weight, mismatch_weight=mismatch_weight,
                      aux_class_weight=aux_class_weight)
        model.build_optimizers()  # slots exist before a restore, so nothing is restored lazily
    return model


def _make_checkpoint(model: Pix2Pix, step: tf.Variable, iterator=None) -> tf.train.Checkpoint:
    parts = dict(step=step, generator=model.generator, discriminator=model.discriminator,
                 g_optimizer=model.g_optimizer, d_optimizer=model.d_optimizer)
    if model.ema_generator is not None:
        parts["ema_generator"] = model.ema_generator
    if model.aux_classifier is not None:
        parts["aux_classifier"] = model.aux_classifier
    if model.augment_rng is not None:
        parts["augment_rng"] = model.augment_rng
    if iterator is not None:
        parts["iterator"] = iterator
    return tf.train.Checkpoint(**parts)


_CKPT_RE = re.compile(r"^" + CHECKPOINT_PREFIX + r"-(\d+)(\.index|\.data-\d+-of-\d+|_temp.*)$")


def _move_checkpoint(src: str, dst: str) -> None:
    """Rename the files of checkpoint ``src`` (a prefix) to ``dst``: the data shards first, the
    ``.index`` last, so a complete ``.index`` under ``dst`` means a complete checkpoint."""
    for data in sorted(glob.glob(glob.escape(src) + ".data-*")):
        os.replace(data, dst + data[len(src):])
    os.replace(src + ".index", dst + ".index")


def _remove_path(path: str) -> None:
    """Delete a file or folder that may already be gone."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _remove_checkpoint_files(prefix: str) -> None:
    for f in glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp*"):
        _remove_path(f)


class CheckpointKeeper:
    """``checkpoints/`` of a run: written atomically, the last ``keep`` plus the best kept.

    A checkpoint is written under a temporary name (``.tmp-ckpt-STEP``), its files are renamed to
    ``ckpt-STEP.*`` (the ``.index`` last), and only then is the ``checkpoint`` state file (what
    ``tf.train.latest_checkpoint`` reads) rewritten, atomically. A process killed or a write
    failing at any point leaves the previous checkpoints and the state file as they were; the
    leftovers (temporary or unlisted files) are removed when the run is opened again.

    Kept: the ``keep`` most recent checkpoints and the best one by :data:`MONITOR` (the held-out
    loss, lower is better) among those saved at a step where it was evaluated, recorded in
    ``checkpoints/best.json``. Without validation data only the last ``keep`` are kept.
    """

    def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, keep: int, monitor: str = MONITOR):
        if int(keep) < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        self.checkpoint, self.dir, self.keep, self.monitor = checkpoint, directory, int(keep), monitor
        checkpoint.save_counter  # noqa: B018  (created now, so every checkpoint holds it, as CheckpointManager's do)
        os.makedirs(directory, exist_ok=True)
        try:
            state = tf.train.get_checkpoint_state(directory)
        except (ValueError, tf.errors.OpError):  # an empty or damaged state file
            state = None
        listed = list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path] if state else []
        if not listed:  # no readable state file (lost in a copy, damaged): every complete checkpoint counts,
            # so nothing good is deleted as "unlisted" (a checkpoint is complete once its .index exists)
            listed = [n[:-len(".index")] for n in os.listdir(directory)
                      if n.startswith(f"{CHECKPOINT_PREFIX}-") and n.endswith(".index")]
        self.steps = sorted({int(m.group(1)) for m in (re.match(rf"^{CHECKPOINT_PREFIX}-(\d+)$", os.path.basename(p))
                                                       for p in listed if p) if m
                             and os.path.exists(self.prefix(int(m.group(1))) + ".index")})
        self.best = self._read_best()
        self._apply_policy()
        self._remove_leftovers()

    def prefix(self, step: int) -> str:
        return os.path.join(self.dir, f"{CHECKPOINT_PREFIX}-{step}")

    @property
    def latest_step(self) -> Optional[int]:
        return self.steps[-1] if self.steps else None

    @property
    def latest_checkpoint(self) -> Optional[str]:
        return None if self.latest_step is None else self.prefix(self.latest_step)

    def _read_best(self) -> Optional[Dict]:
        path = os.path.join(self.dir, BEST_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                best = json.load(f)
            if int(best["step"]) in self.steps and best.get("monitor") == self.monitor and math.isfinite(best["value"]):
                return best
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def _write_state(self) -> None:
        """The ``checkpoint`` proto text file, as tf.train.CheckpointManager writes it (relative paths)."""
        lines = []
        if self.steps:
            lines.append(f'model_checkpoint_path: "{CHECKPOINT_PREFIX}-{self.steps[-1]}"')
            lines += [f'all_model_checkpoint_paths: "{CHECKPOINT_PREFIX}-{s}"' for s in self.steps]
        atomic_write_text(os.path.join(self.dir, "checkpoint"), "\n".join(lines) + "\n")

    def _apply_policy(self) -> None:
        """List only the kept checkpoints in the state file, then delete the others' files."""
        kept = set(self.steps[-self.keep:])
        if self.best is not None:
            kept.add(int(self.best["step"]))
        dropped = [s for s in self.steps if s not in kept]
        self.steps = sorted(kept & set(self.steps))
        if dropped:
            self._write_state()
            for s in dropped:
                _remove_checkpoint_files(self.prefix(s))

    def _remove_leftovers(self) -> None:
        """Files of checkpoints never completed (a killed or failed save) or no longer listed."""
        for name in os.listdir(self.dir):
            m = _CKPT_RE.match(name)
            path = os.path.join(self.dir, name)
            if name.startswith(f".tmp-{CHECKPOINT_PREFIX}-") or (m and int(m.group(1)) not in self.steps):
                _remove_path(path)

    def restore(self, log: Callable[[str], None] = lambda m: None) -> Optional[str]:
        """Restore the newest checkpoint that reads back whole; returns its path (``None``: none kept).

        Every tensor is read back (checksummed) before anything is assigned. A damaged newest
        checkpoint (e.g. a disk error after it was written) is reported through ``log`` and the
        previous kept one is used; the damaged ones are then unlisted and deleted. When none reads
        back, or one reads back but does not fit the model, a ModelLoadError says so and nothing is
        deleted.
        """
        damaged = []
        for step in reversed(self.steps):
            path = self.prefix(step)
            try:
                _verify_checkpoint(path)
            except (tf.errors.OpError, ValueError, IndexError, KeyError) as e:
                if not _is_corruption(e):
                    # a transient read error (permission, network filesystem) propagates instead of
                    # getting newer checkpoints deleted as "damaged"
                    raise
                msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                damaged.append((step, f"{path}: {msg}"))
                log(f"warning: {path} is damaged ({msg}); trying the previous checkpoint")
                continue
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError) as e:
                msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ModelLoadError(f"{path}: this checkpoint does not fit the model being trained (another "
                                     f"version or other settings?): {msg}") from e
            if damaged:
                bad = {s for s, _ in damaged}
                self.steps = [s for s in self.steps if s not in bad]
                if self.best is not None and int(self.best["step"]) in bad:
                    self.best = None
                self._write_state()
                for s in bad:
                    _remove_checkpoint_files(self.prefix(s))
            return path
        if damaged:
            raise ModelLoadError(f"{self.dir}: no checkpoint reads back whole (left in place): "
                                 + "; ".join(m for _, m in damaged))
        return None

    def save(self, step: int, score: Optional[float] = None) -> str:
        """Write the checkpoint of ``step`` (``score``: its :data:`MONITOR` value, if evaluated)."""
        final, tmp = self.prefix(step), os.path.join(self.dir, f".tmp-{CHECKPOINT_PREFIX}-{step}")
        previous = self.latest_checkpoint
        if step in self.steps:  # rewriting a step: unlist it first, so the state never names half a checkpoint
            self.steps.remove(step)
            self._write_state()
        try:
            _remove_checkpoint_files(tmp)
            _remove_checkpoint_files(final)
            self.checkpoint.save_counter.assign_add(1)
            self.checkpoint.write(tmp)
            _move_checkpoint(tmp, final)
        except (OSError, tf.errors.OpError) as e:
            _remove_checkpoint_files(tmp)
            _remove_checkpoint_files(final)
            kept = f"the previous checkpoint {previous} is kept" if previous else "no earlier checkpoint exists"
            raise StorageError(f"{final}: writing the step {step} checkpoint failed ({e}); {kept}") from e
        self.steps = sorted(set(self.steps) | {step})
        self._write_state()
        if score is not None and math.isfinite(score) and (self.best is None or score < self.best["value"]):
            self.best = {"monitor": self.monitor, "step": int(step), "value": float(score),
                         "checkpoint": os.path.basename(final)}
            atomic_write_text(os.path.join(self.dir, BEST_FILE), json.dumps(self.best, indent=1))
        self._apply_policy()
        return final


_CORRUPTION_WORDS = ("checksum", "corrupt", "truncat", "data loss", "dataloss", "unexpected end", "bad magic",
                     "failed to parse", "out of range", "not found", "no such file")


def _is_corruption(e: BaseException) -> bool:
    """Whether a checkpoint read failed because the files are damaged (vs a transient read error)."""
    if isinstance(e, (tf.errors.DataLossError, tf.errors.OutOfRangeError, tf.errors.NotFoundError,
                      tf.errors.InvalidArgumentError, ValueError, IndexError, KeyError)):
        return True
    return any(w in str(e).lower() for w in _CORRUPTION_WORDS)


def _verify_checkpoint(prefix: str) -> None:
    """Read every tensor of a checkpoint (TensorBundle checks each one's CRC32C); raises if damaged."""
    reader = tf.train.load_checkpoint(prefix)
    for key, dtype in reader.get_variable_to_dtype_map().items():
        if dtype != tf.variant:  # the tf.data iterator state: not readable here, checked when restored
            reader.get_tensor(key)


def _all_finite(variables) -> bool:
    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables
                               if v.dtype.is_floating]).numpy()) if variables else True


def _read_metrics(model: Pix2Pix, prefix: str = "") -> Dict[str, float]:
    """Current tracker means (global over replicas), then reset them."""
    values = {prefix + m.name: float(m.result()) for m in model.metrics}
    for m in model.metrics:
        m.reset_state()
    return values


def save_generator(generator: tf.keras.Model, path: str) -> str:
    """Save ``generator`` as a Keras SavedModel directory at ``path``, replacing it atomically."""
    with atomic_directory(path, overwrite=True) as tmp:
        generator.save(tmp, save_format="tf", include_optimizer=False)
    return path


def load_generator(run_dir: str) -> Tuple[tf.keras.Model, Dict]:
    """The trained generator of a run directory and the run's ``config.json`` contents.

    The generator takes ``mask`` int32 ``[B,H,W]`` class ids (plus ``label`` int32 ``[B]`` for
    class-conditional runs, as a dict) and returns RGB in ``[-1, 1]``. For runs with
    ``ema_decay`` it carries the EMA weights. The config has the settings older runs lack
    filled in with what they used (see :func:`run_settings`). Loaded in Keras' safe mode; a
    folder that is not a finished run is a :class:`~synthseg_tf.errors.ModelLoadError` saying so.
    """
    import synthseg_tf.models.pix2pix  # noqa: F401  (registers the custom layers)
    from synthseg_tf.models.loading import load_keras_model

    run_dir = os.path.abspath(os.fspath(run_dir))
    check_run_dir(run_dir)
    config = run_settings(read_config(run_dir))
    generator = load_keras_model(os.path.join(run_dir, GENERATOR_DIR), what="trained generator (Keras SavedModel)")
    return generator, config


def check_run_dir(run_dir: str) -> str:
    """``run_dir`` if it is a finished ``synthseg gan train`` run (``config.json`` and ``generator/``);
    else a :class:`~synthseg_tf.errors.ModelLoadError` naming the folder and what is missing."""
    from synthseg_tf.models.loading import ModelNotFound, _listing

    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise ModelNotFound(f"{run_dir}: GAN run folder not found" if not os.path.exists(run_dir)
                            else f"{run_dir}: not a GAN run folder (a file)")
    has_config = os.path.isfile(os.path.join(run_dir, CONFIG_FILE))
    if os.path.isdir(os.path.join(run_dir, GENERATOR_DIR)) and has_config:
        return run_dir
    ckpt = tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR)) if has_config else None
    if ckpt:
        raise ModelLoadError(f"{run_dir}: this GAN run has no trained generator ({GENERATOR_DIR}/) yet: training "
                             f"did not finish (last checkpoint {os.path.basename(ckpt)}); continue it with "
                             "`synthseg gan train ... --resume`")
    raise ModelLoadError(f"{run_dir}: not a `synthseg gan train` run folder (expected {CONFIG_FILE} and "
                         f"{GENERATOR_DIR}/); it holds {_listing(run_dir)}")


# --------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    """What :func:`train_gan` returns: the trained model and where things went."""

    model: Pix2Pix
    step: int
    out_dir: str
    metrics: Dict[str, float] = field(default_factory=dict)


def train_gan(train_ds: DatasetLike, out_dir: str, num_classes: int, image_size, steps: int, batch_size: int,
              class_table: Optional[ClassTable] = None, val_ds: Optional[DatasetLike] = None,
              num_labels: Optional[int] = None, replicas: int = 1, resume: bool = False, seed: int = 0,
              log_every: int = 50, image_every: int = 500, checkpoint_every: int = 500, norm: str = "instance",
              gan_loss: str = "bce", l1_weight: float = 100.0, feature_matching_weight: float = 0.0,
              spectral_norm: bool = False, base_filters: int = 64, dropout: float = 0.5,
              learning_rate: float = 2e-4, beta_1: float = 0.5, val_steps: int = 10, num_samples: int = 4,
              keep_checkpoints: int = 2, checkpoint_iterator: bool = True,
              strategy: Optional[tf.distribute.Strategy] = None, verbose: bool = True,
              extra_config: Optional[Dict] = None, upsample: str = "resize",
              label_conditioning: Optional[str] = None, diffaugment: Optional[str] = DEFAULT_DIFFAUGMENT,
              ema_decay: Optional[float] = 0.999, max_checkpoints: Optional[int] = None,
              class_loss_model: Optional[str] = None, class_loss_weight: float = 0.0,
              mismatch_weight: float = 0.0, d_label_conditioning: Optional[str] = None,
              generator_arch: str = "unet", d_scales: int = 1, aux_class_weight: float = 0.0,
              style_dim: int = 0) -> TrainResult:
    """Train pix2pix for ``steps`` global steps (total, counting resumed ones) into ``out_dir``.

    ``train_ds``: a repeating ``tf.data.Dataset`` of *global* batches (``batch_size`` examples,
    divisible by ``replicas``) of dicts ``{"image", "mask"[, "label"]}``, or a zero-argument
    callable returning one. ``val_ds`` (optional, same format): ``val_steps`` batches are
    evaluated every ``image_every`` steps and the first one is also the sample batch (else the
    first training batch). ``num_labels`` makes the model class-conditional on ``label``.

    ``norm`` defaults to "instance": batch statistics are per replica, so batch norm would
    make results depend on the replica count. ``resume=True`` continues from the last
    checkpoint; an ``out_dir`` with a previous run is refused otherwise. With
    ``checkpoint_iterator`` the tf.data position is checkpointed when the pipeline allows it;
    otherwise a resume skips the consumed batches (exact for deterministic pipelines).
    Pass ``strategy`` to use one you made; else :func:`make_strategy` ``(replicas)``.

    Checkpoints (every ``checkpoint_every`` steps and at the end) are written atomically
    (:class:`CheckpointKeeper`): a kill or a failed write never replaces the previous one. The last
    ``keep_checkpoints`` (default 2) are kept, plus the best by the held-out ``val_g_l1`` among
    those saved at a validation step (``checkpoints/best.json``; needs ``val_ds``; make
    ``checkpoint_every`` a multiple of ``image_every`` to make every checkpoint a candidate).
    ``max_checkpoints`` is the former name of ``keep_checkpoints``.

    Divergence: a NaN/Inf training loss (checked every step) or non-finite weights (checked before
    every checkpoint) stop training with :class:`~synthseg_tf.errors.TrainingDiverged` naming the
    step, the loss values and the last good checkpoint, which is kept (no non-finite state is
    ever saved); ``config.json`` gets ``status: "diverged"``.
    ``extra_config`` is recorded in ``config.json`` (e.g. the data spec and conditioning,
    which ``synthseg generate --masks sample`` reads, and ``train_source_ids``, the sorted
    ``source_id`` s trained on; a resume with different ``train_source_ids`` is refused).

    Generator quality options (recorded in ``config.json``; a resume must keep them):
    ``upsample`` "resize" (nearest 2x + 3x3 conv, no checkerboard) or "transpose" (original
    pix2pix); ``label_conditioning`` for class-conditional runs, "film" (default: class FiLM in
    every decoder block) or "bottleneck"; ``diffaugment`` the DiffAugment policy applied to the
    discriminator's inputs (default "color,translation,cutout"; ``None``/"none" disables);
    ``ema_decay`` the generator weight EMA decay (default 0.999 with a warm-up, ``None``
    disables): the EMA generator is the one saved to ``generator/``, drawn in the sample grids and
    evaluated on ``val_ds``. ``class_loss_weight`` > 0 (class-conditional runs) adds the class
    loss: the generator also minimises that weight times the cross-entropy of each image's
    intended label under the frozen classifier export ``class_loss_model`` (``synthseg
    classifier train`` output, over the same class names; train it on the same images as the
    GAN). ``mismatch_weight`` > 0 (class-conditional runs) makes the discriminator
    matching-aware: it also learns to call each real pair fake under a wrong class label, with
    that weight. ``d_label_conditioning`` (class-conditional runs): how the discriminator takes
    the class label, "input" (default: an embedding tiled beside the label map) or "projection"
    (a projection discriminator: the label's embedding dotted with the last hidden features of
    every patch, added to its logit). ``generator_arch``: "unet" (default, pix2pix's U-Net) or
    "spade" (a SPADE/GauGAN generator whose every normalisation the label map modulates; it
    needs ``upsample="resize"``). ``d_scales`` > 1: pix2pixHD's multi-scale discriminator, one
    PatchGAN per scale on the inputs pooled by 1, 2, ... ``2**(d_scales-1)`` (default 1: the single
    PatchGAN). ``aux_class_weight`` > 0 (class-conditional runs with
    ``d_label_conditioning="projection"``): AC-GAN's auxiliary classifier, a head on the
    discriminator's last trunk convolution that learns the classes on the real images and scores
    the generated ones with that weight (checkpointed with the discriminator). ``style_dim`` > 0
    (U-Net generators): the generator also takes a reference image, encoded to ``style_dim``
    numbers that FiLM its decoder, and learns to give its output the reference's appearance; each
    training image, flipped and shifted, is its own reference (generation passes a real training
    image of the candidate's class). See :mod:`synthseg_tf.models.pix2pix`.
    """
    out_dir = os.path.abspath(out_dir)
    if max_checkpoints is not None:
        keep_checkpoints = max_checkpoints
    if int(keep_checkpoints) < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {keep_checkpoints}")
    for name, every in (("log_every", log_every), ("image_every", image_every), ("checkpoint_every", checkpoint_every)):
        if every < 1:
            raise ValueError(f"{name} must be >= 1, got {every}")
    strategy = strategy or make_strategy(replicas)
    n = strategy.num_replicas_in_sync
    if batch_size % n:
        raise ValueError(f"batch_size={batch_size} must be divisible by the number of replicas ({n})")
    image_size = list(_pair(image_size))
    if generator_arch == "unet":
        generator_depth(image_size)  # fail fast on an unsupported size
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {UPSAMPLES}, got {upsample!r}")
    if generator_arch not in GENERATOR_ARCHS:
        raise ValueError(f"generator_arch must be one of {GENERATOR_ARCHS}, got {generator_arch!r}")
    if num_labels:
        label_conditioning = label_conditioning or "film"
        if label_conditioning not in LABEL_CONDITIONINGS:
            raise ValueError(f"label_conditioning must be one of {LABEL_CONDITIONINGS}, got {label_conditioning!r}")
    else:
        label_conditioning = None  # nothing to condition on
    if generator_arch == "spade":
        check_spade_generator(image_size, num_labels, label_conditioning, upsample)
    style_dim = check_style_dim(style_dim, generator_arch, label_conditioning)  # before the run folder is written
    diffaugment = parse_diffaugment(diffaugment)
    if ema_decay is not None and not 0.0 < float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
    ema_decay = None if ema_decay is None else float(ema_decay)
    if num_labels:
        d_label_conditioning = d_label_conditioning or "input"
        if d_label_conditioning not in D_LABEL_CONDITIONINGS:
            raise ValueError(f"d_label_conditioning must be one of {D_LABEL_CONDITIONINGS}, got "
                             f"{d_label_conditioning!r}")
    elif d_label_conditioning not in (None, "input"):
        raise ValueError(f"d_label_conditioning={d_label_conditioning!r} needs a class-conditional GAN (num_labels): "
                         "a label-map GAN has no class label to project")
    else:
        d_label_conditioning = None
    d_scales = check_discriminator_scales(d_scales, image_size)  # fail fast, before the run folder is written
    l1_weight = loss_weight("l1_weight", l1_weight)
    feature_matching_weight = loss_weight("feature_matching_weight", feature_matching_weight)
    mismatch_weight = loss_weight("mismatch_weight", mismatch_weight)
    if mismatch_weight > 0.0 and not num_labels:
        raise ValueError("mismatch_weight > 0 needs a class-conditional GAN (num_labels): the discriminator learns "
                         "to refuse real images under a wrong class label")
    aux_class_weight = loss_weight("aux_class_weight", aux_class_weight)
    if aux_class_weight > 0.0 and d_label_conditioning != "projection":
        raise ValueError("aux_class_weight > 0 needs a class-conditional GAN (num_labels) with "
                         "d_label_conditioning='projection': the auxiliary classifier reads the discriminator's "
                         "features, which must not be given the class label at the input")
    class_loss_weight, class_loss_model, class_model = _class_loss(class_loss_weight, class_loss_model, num_labels,
                                                                   (extra_config or {}).get("label_names"))
    config = dict(model="pix2pix", num_classes=int(num_classes), image_size=image_size,
                  num_labels=int(num_labels) if num_labels else None, norm=norm, spectral_norm=bool(spectral_norm),
                  base_filters=int(base_filters), dropout=float(dropout), gan_loss=gan_loss,
                  l1_weight=float(l1_weight), feature_matching_weight=float(feature_matching_weight),
                  learning_rate=float(learning_rate), beta_1=float(beta_1), batch_size=int(batch_size),
                  replicas=int(n), seed=int(seed), steps=int(steps), ignore_id=IGNORE_ID,
                  upsample=upsample, label_conditioning=label_conditioning, diffaugment=diffaugment,
                  ema_decay=ema_decay, class_loss_weight=class_loss_weight, class_loss_model=class_loss_model,
                  mismatch_weight=mismatch_weight, d_label_conditioning=d_label_conditioning,
                  generator_arch=generator_arch, d_scales=d_scales, aux_class_weight=aux_class_weight,
                  style_dim=style_dim,
                  generator_inputs=["mask"] + (["label"] if num_labels else []) + (["reference"] if style_dim else []),
                  generator_output="RGB in [-1, 1] (tanh)",
                  class_names=class_table.names if class_table else None, **(extra_config or {}))
    saved = _prepare_run_dir(out_dir, resume, config, class_table)
    if class_table is None and os.path.exists(os.path.join(out_dir, CLASS_TABLE_FILE)):
        class_table = ClassTable.load(out_dir)

    tf.keras.utils.set_random_seed(seed)
    model = _build_model(strategy, num_classes, image_size, num_labels, norm, spectral_norm, base_filters,
                         dropout, gan_loss, l1_weight, feature_matching_weight, learning_rate, beta_1,
                         upsample=upsample, label_conditioning=label_conditioning, diffaugment=diffaugment,
                         ema_decay=ema_decay, class_model=class_model, class_loss_weight=class_loss_weight,
                         mismatch_weight=mismatch_weight, d_label_conditioning=d_label_conditioning,
                         generator_arch=generator_arch, d_scales=d_scales, aux_class_weight=aux_class_weight,
                         style_dim=style_dim)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    val_ds = _as_dataset(val_ds)
    # The sample batch is read (and its iterator finished) before the training iterator exists:
    # iterators of a dataset that reshuffles each epoch share one seed generator, so two live
    # iterators of the same dataset would race for seeds and make the batch order unrepeatable.
    sample_batch = _sample_batch(val_ds if val_ds is not None else train_ds, num_samples, num_labels)
    train_ds = _as_dataset(train_ds).map(lambda b: _strip_batch(b, num_labels))
    iterator, iterator_in_ckpt = _open_iterator(train_ds, saved, checkpoint_iterator)
    config["iterator_in_checkpoint"] = iterator_in_ckpt
    _write_config(out_dir, {**config, "status": "running"})

    ckpt = _make_checkpoint(model, step, iterator if iterator_in_ckpt else None)
    keeper = CheckpointKeeper(ckpt, os.path.join(out_dir, CHECKPOINT_DIR), keep_checkpoints)
    if resume and keeper.latest_checkpoint:
        keeper.restore(log=lambda m: print(m, file=sys.stderr, flush=True))
        if verbose:
            print(f"resumed {out_dir} at step {int(step.numpy())}", flush=True)
    start = int(step.numpy())
    if not iterator_in_ckpt and (iterator is None or start):
        iterator = iter(train_ds.skip(start))  # deterministic pipelines land on the same batch

    log_columns = ["step", "elapsed_s", "wall_time"] + [m.name for m in model.metrics]
    if val_ds is not None:
        log_columns += ["val_" + m.name for m in model.metrics]
    csv_log = _CsvLog(os.path.join(out_dir, LOG_FILE), log_columns)
    csv_log.truncate_after(start)

    loop = _TrainLoop(model=model, strategy=strategy, step=step, keeper=keeper, csv_log=csv_log,
                      out_dir=out_dir, sample_batch=sample_batch, palette=_palette(num_classes, class_table),
                      val_ds=val_ds, val_steps=val_steps, num_labels=num_labels, log_every=log_every,
                      image_every=image_every, checkpoint_every=checkpoint_every, verbose=verbose)
    try:
        metrics = loop.run(iterator, steps)
        done = int(step.numpy())
        if keeper.latest_step != done:
            loop.save_checkpoint(done, metrics)
    except TrainingDiverged as e:
        _write_config(out_dir, {**config, "status": "diverged", "diverged_at_step": e.step,
                                "last_good_checkpoint": keeper.latest_checkpoint and
                                os.path.basename(keeper.latest_checkpoint)})
        raise
    delivered = model.inference_generator  # the EMA generator when there is one
    frozen = not delivered.trainable
    delivered.trainable = True  # the EMA copy is frozen while training; save it as a normal, trainable model
    try:
        save_generator(delivered, os.path.join(out_dir, GENERATOR_DIR))
    finally:
        delivered.trainable = not frozen
    _write_config(out_dir, {**config, "status": "finished", "steps_done": done})
    return TrainResult(model=model, step=done, out_dir=out_dir, metrics=metrics)


def _class_loss(weight, model_dir: Optional[str], num_labels: Optional[int], label_names: Optional[Sequence[str]]):
    """``(weight, absolute model path or None, the classifier's [0,1] images -> probabilities function or None)``
    of ``train_gan``'s class loss, checked: a class-conditional run and a classifier over its labels
    (``label_names``, when the run records them in ``extra_config``)."""
    weight = loss_weight("class_loss_weight", weight)
    if weight == 0.0:
        return 0.0, None, None
    if not num_labels:
        raise ValueError("class_loss_weight > 0 needs a class-conditional GAN (num_labels): the loss scores each "
                         "image against its intended class")
    if not model_dir:
        raise ValueError("class_loss_weight > 0 needs class_loss_model, a classifier export (synthseg classifier "
                         "train output) over the GAN's class labels")
    from synthseg_tf import storage
    from synthseg_tf.models.classifier import load_classifier

    model_dir = storage.abspath(model_dir)
    clf = load_classifier(model_dir)
    names = list(clf.class_names)
    if len(names) != int(num_labels):
        raise ValueError(f"class_loss_model {model_dir} has {len(names)} classes; the GAN's labels have {num_labels}")
    if label_names is not None and list(label_names) != names:
        raise ValueError(f"class_loss_model {model_dir} names other classes than the GAN's labels "
                         f"(first differences: {[(a, b) for a, b in zip(names, label_names) if a != b][:3]})")
    return weight, model_dir, clf.classify_function


def _prepare_run_dir(out_dir: str, resume: bool, config: Dict, class_table: Optional[ClassTable]) -> Optional[Dict]:
    """Create ``out_dir``; refuse a previous run unless ``resume``; return the previous config."""
    previous = _has_previous_run(out_dir)
    if previous and not resume:
        raise FileExistsError(f"{out_dir} already contains a run; pass resume=True to continue it "
                              "or choose another output directory")
    saved = None
    if previous and os.path.exists(os.path.join(out_dir, CONFIG_FILE)):
        saved = read_config(out_dir)
        _check_same_architecture(saved, config, out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if class_table is not None:
        class_table.save(os.path.join(out_dir, CLASS_TABLE_FILE))
    return saved


def _open_iterator(train_ds: tf.data.Dataset, saved: Optional[Dict], checkpoint_iterator: bool):
    """``(iterator or None, whether the checkpoint holds the iterator)``.

    A resumed run keeps its first decision; a new run checkpoints the iterator when asked and
    tf.data can save it. With ``None`` the caller opens the iterator once the step is known
    (an iterator that is not checkpointed is only usable from step 0).
    """
    if saved and "iterator_in_checkpoint" in saved:
        in_ckpt = bool(saved["iterator_in_checkpoint"])
        return (iter(train_ds) if in_ckpt else None), in_ckpt
    if not checkpoint_iterator:
        return None, False
    iterator = iter(train_ds)
    return iterator, _iterator_checkpointable(iterator)


@dataclass
class _TrainLoop:
    """The step loop of :func:`train_gan` with its periodic logging, samples and checkpoints."""

    model: Pix2Pix
    strategy: tf.distribute.Strategy
    step: tf.Variable
    keeper: CheckpointKeeper
    csv_log: _CsvLog
    out_dir: str
    sample_batch: Dict[str, np.ndarray]
    palette: np.ndarray
    val_ds: Optional[tf.data.Dataset]
    val_steps: int
    num_labels: Optional[int]
    log_every: int
    image_every: int
    checkpoint_every: int
    verbose: bool
    steps: int = 0

    def run(self, iterator, steps: int) -> Dict[str, float]:
        """Train until ``step == steps``; returns the last logged metrics."""
        self.steps = steps
        n = self.strategy.num_replicas_in_sync
        train_fn = _make_train_function(self.model, self.strategy, iterator, n)
        eval_fn = _make_eval_function(self.model, self.strategy, n)
        writer = tf.summary.create_file_writer(os.path.join(self.out_dir, TENSORBOARD_DIR))
        metrics: Dict[str, float] = {}
        t0 = time.time()
        try:
            while int(self.step.numpy()) < steps:
                try:
                    train_fn()
                except tf.errors.OutOfRangeError:
                    raise ValueError(f"train_ds ran out after {int(self.step.numpy())} steps; pass a repeating "
                                     "dataset (dataset.repeat())") from None
                s = int(self.step.assign_add(1).numpy())
                if not self._losses_finite():
                    metrics = _read_metrics(self.model)
                    _log(self.csv_log, writer, s, metrics, t0, self.verbose, steps)
                    self._diverged(s, metrics, "non-finite training loss")
                last = s == steps
                images_due = s % self.image_every == 0 or last
                if s % self.log_every == 0 or images_due:
                    metrics = _read_metrics(self.model)
                    if self.val_ds is not None and images_due:
                        metrics.update(_evaluate(self.model, eval_fn, self.val_ds, self.val_steps, self.num_labels))
                    _log(self.csv_log, writer, s, metrics, t0, self.verbose, steps)
                    metrics["_step"] = s
                if images_due:
                    self._write_samples(writer, s)
                if s % self.checkpoint_every == 0 or last:
                    self.save_checkpoint(s, metrics)
        finally:
            writer.close()
        metrics.pop("_step", None)
        return metrics

    def _losses_finite(self) -> bool:
        """Whether every training loss tracker (a mean since the last log) is still finite."""
        return all(math.isfinite(float(m.result())) for m in self.model.metrics)

    def save_checkpoint(self, s: int, metrics: Dict[str, float]) -> None:
        """Checkpoint step ``s`` after checking every weight is finite; ``metrics`` (when logged at
        this step) give the checkpoint's monitor score."""
        model = self.model
        variables = model.generator.variables + model.discriminator.variables
        if model.ema_generator is not None:
            variables = variables + model.ema_generator.variables
        if model.aux_classifier is not None:
            variables = variables + model.aux_classifier.variables
        if not _all_finite(variables):
            self._diverged(s, {k: v for k, v in metrics.items() if not k.startswith("_")},
                           "non-finite weights before saving the checkpoint")
        score = metrics.get(MONITOR) if metrics.get("_step") == s else None
        self.keeper.save(s, score)

    def _diverged(self, s: int, metrics: Dict[str, float], what: str):
        ckpt = self.keeper.latest_checkpoint
        losses = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "not logged"
        kept = (f"the last good checkpoint {ckpt} (step {self.keeper.latest_step}) is kept and nothing after it "
                "was saved" if ckpt else "no checkpoint had been saved yet, none was written")
        err = TrainingDiverged(
            f"{self.out_dir}: training diverged at step {s}/{self.steps}: {what} ({losses}); {kept}. A --resume "
            "would repeat the same steps: start a new run with a lower learning rate (or --gan-loss hinge, "
            "--spectral-norm), or check the training data for NaN/Inf values")
        err.step, err.checkpoint = s, ckpt
        raise err

    def _write_samples(self, writer, s: int) -> None:
        """The sample grid as ``samples/step_XXXXXX.png`` and as a TensorBoard image."""
        grid = sample_grid(self.model.inference_generator, self.sample_batch, self.palette)
        _save_png(os.path.join(self.out_dir, SAMPLES_DIR, f"step_{s:06d}.png"), grid)
        with writer.as_default(step=s):
            tf.summary.image("samples/label_real_generated", grid[None], max_outputs=1)


def _pair(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _make_train_function(model: Pix2Pix, strategy, iterator, num_replicas: int):
    """A ``tf.function`` doing one training step on the next global batch of ``iterator``."""

    def replica_step(batch):
        model.train_step(_replica_slice(batch, num_replicas))

    @tf.function
    def train_fn():
        strategy.run(replica_step, args=(next(iterator),))

    return train_fn


def _make_eval_function(model: Pix2Pix, strategy, num_replicas: int):
    """A ``tf.function`` accumulating the losses of one global batch (no updates)."""

    def replica_step(batch):
        model.test_step(_replica_slice(batch, num_replicas))

    @tf.function
    def eval_fn(batch):
        strategy.run(replica_step, args=(batch,))

    return eval_fn


def _evaluate(model: Pix2Pix, eval_fn, val_ds: tf.data.Dataset, val_steps: int, num_labels) -> Dict[str, float]:
    """Mean losses over ``val_steps`` validation batches, keys prefixed ``val_``."""
    for m in model.metrics:
        m.reset_state()
    for batch in val_ds.take(val_steps):
        eval_fn(_strip_batch(batch, num_labels))
    return _read_metrics(model, prefix="val_")


def _log(csv_log: _CsvLog, writer, step: int, metrics: Dict[str, float], t0: float, verbose: bool, steps: int):
    """One CSV row, TensorBoard scalars and (verbose) a console line."""
    elapsed = time.time() - t0
    csv_log.append({"step": step, "elapsed_s": f"{elapsed:.3f}", "wall_time": f"{time.time():.3f}", **metrics})
    with writer.as_default(step=step):
        for k, v in metrics.items():
            tag = f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}"
            tf.summary.scalar(tag, v)
    if verbose:
        text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"step {step}/{steps} ({elapsed:.1f}s) {text}", flush=True)
