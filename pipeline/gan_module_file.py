"""TFX user module of the ``GanTrainer``: ``run_fn`` trains the pix2pix GAN on the pipeline's own data.

The ``GanTrainer`` is a generic TFX ``Trainer`` (``run_fn="synthseg_tf_tfx.pipeline.gan_module_file.run_fn"``)
fed by ``RealTransform``: the *real* examples of ImportExampleGen, decoded and resized by the same
``preprocessing_fn`` as the U-Net's (``image`` float32 ``[H, W, 3]`` in [0, 1], ``mask`` int64
``[H, W]``, 255 = void). Only the ``train`` split is read; the ``eval`` split is the Evaluator's
test data and the GAN never sees it (no monitoring on it either).

Training is the library's: :func:`synthseg_tf.training.gan.train_gan` (``Pix2Pix.train_step`` under
a ``MirroredStrategy`` over the visible GPUs when there are several, checkpoints written atomically,
exact resume). Settings come from ``custom_config``: ``image_size``, ``num_classes``,
``class_names``, ``batch_size`` (the GAN's), ``base_filters``, ``seed``, ``log_every``,
``checkpoint_every``, ``replicas`` (default: the GPUs when more than one divides the batch, else 1)
and any other :func:`train_gan` keyword under ``gan_options`` (e.g. ``{"l1_weight": 50}``);
``fn_args.train_steps`` is the number of steps.

Run folder and resume
    The run trains in ``<model_run_dir>/gan_run`` (the Trainer's ``ModelRun`` artifact: checkpoints,
    ``log.csv``, TensorBoard, sample grids) with ``resume=True``, so an execution retried into the same
    artifact (Vertex AI retries, a rerun of the executor) continues from its last checkpoint instead of
    starting over. A remote ``model_run_dir`` (``gs://``) gets a local working folder whose logs are
    copied there at the end.

Output (``fn_args.serving_model_dir``, the Model artifact's ``Format-Serving/``)
    A ``synthseg gan train`` run folder that :class:`components.SyntheticGeneration` (and
    ``synthseg generate``, ``load_renderer``) accept: ``config.json``, ``classes.json``,
    ``generator/`` (the EMA generator, Keras SavedModel), ``log.csv``, ``samples/``, plus
    ``train_maps/``: the label maps (with their images) the GAN trained on, as a ``pairs:`` dataset.
    ``config.json`` records ``data`` = that ``pairs:`` spec and ``train_source_ids`` = its samples, so
    ``SyntheticGeneration(masks="sample")`` samples new maps from the pipeline's training split only:
    no eval-split map can leak into the synthetic training data.

Progress: ``GanTrainer: step S/T g_total=... d_loss=... X images/s`` lines every ``log_every`` steps
through absl logging (the executor's log, locally and on Vertex), as the U-Net ``Trainer`` does.
"""
from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from synthseg_tf import _env  # noqa: F401  (environment settings before TensorFlow loads)

import tensorflow as tf  # noqa: E402

# The shared helpers (as in module_file: a module *file* is packaged with its folder's .py files as
# top-level modules).
if __package__:
    from ._common import TrainerSettings, trainer_settings, with_defaults  # noqa: E402,F401
else:
    from _common import TrainerSettings, trainer_settings, with_defaults  # noqa: E402,F401

IMAGE_XF = "image"
MASK_XF = "mask"
RUN_SUBDIR = "gan_run"
MAPS_DIR = "train_maps"
# What the run folder handed to SyntheticGeneration holds (besides train_maps/).
EXPORTED = ("config.json", "classes.json", "generator", "log.csv", "samples")
LOG_PREFIX = "GanTrainer: "

DEFAULTS = {"image_size": [128, 128], "batch_size": 4, "base_filters": 64, "seed": 0}


def settings(custom_config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``custom_config`` with defaults filled in and ``image_size`` as an ``(H, W)`` tuple."""
    return with_defaults(custom_config, DEFAULTS)


def _has_scheme(path: str) -> bool:
    return "://" in str(path)


def _log(line: str) -> None:
    from absl import logging as absl_logging

    absl_logging.info("%s", line)


# =========================================================================== data
def train_dataset(file_pattern: List[str], data_accessor, tf_transform_output, batch_size: int,
                  seed: Optional[int]) -> tf.data.Dataset:
    """Transformed examples -> repeating ``{"image" float32 [B,H,W,3] in [0,1], "mask" int32 [B,H,W]}`` batches."""
    from tfx_bsl.public import tfxio

    ds = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, drop_final_batch=True, shuffle_seed=seed,
                                                    shuffle_buffer_size=1000),
        tf_transform_output.transformed_metadata.schema)
    return ds.map(lambda f: {"image": tf.cast(f[IMAGE_XF], tf.float32), "mask": tf.cast(f[MASK_XF], tf.int32)})


def write_train_maps(file_pattern: List[str], data_accessor, tf_transform_output, out_dir: str,
                     class_names: List[str]) -> Tuple[str, int]:
    """Write every transformed training example once as ``images/NNNNNN.png`` + ``masks/NNNNNN.png``
    (class ids, 255 void) with ``classes.json`` under ``out_dir`` (local or remote); returns
    ``(pairs spec, count)``."""
    from tfx_bsl.public import tfxio

    from synthseg_tf.data.classes import ClassTable

    ds = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=64, num_epochs=1, shuffle=False),
        tf_transform_output.transformed_metadata.schema)
    images_dir, masks_dir = f"{out_dir}/images", f"{out_dir}/masks"
    for d in (images_dir, masks_dir):
        tf.io.gfile.makedirs(d)
    n = 0
    for batch in ds:
        images = tf.cast(tf.round(tf.clip_by_value(batch[IMAGE_XF], 0.0, 1.0) * 255.0), tf.uint8)
        masks = tf.cast(batch[MASK_XF], tf.uint8)[..., None]  # ids < 255, void = 255
        for image, mask in zip(images, masks):
            name = f"{n:06d}.png"
            with tf.io.gfile.GFile(f"{images_dir}/{name}", "wb") as f:
                f.write(tf.io.encode_png(image).numpy())
            with tf.io.gfile.GFile(f"{masks_dir}/{name}", "wb") as f:
                f.write(tf.io.encode_png(mask).numpy())
            n += 1
    if not n:
        raise ValueError(f"no training examples in {file_pattern}")
    classes = f"{out_dir}/classes.json"
    with tf.io.gfile.GFile(classes, "w") as f:
        f.write(json.dumps(ClassTable(list(class_names)).to_dict(), indent=1))
    return f"pairs:{images_dir}:{masks_dir}?classes={classes}", n


# =========================================================================== progress
class _ProgressLines(io.TextIOBase):
    """Stands in for stdout while ``train_gan(verbose=True)`` runs: its ``step S/T (Es) losses`` lines
    become ``GanTrainer: step S/T losses X images/s`` log lines; anything else is logged as is."""

    STEP = re.compile(r"^step (\d+)/(\d+) \(([\d.]+)s\) ?(.*)$")
    RESUMED = re.compile(r"^resumed .* at step (\d+)$")

    def __init__(self, batch_size: int, log: Callable[[str], None] = _log):
        super().__init__()
        self.batch_size = int(batch_size)
        self.log = log
        self.lines: List[str] = []
        self._buf = ""
        self._last = (0, 0.0)  # (step, elapsed s) of the previous line

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line.rstrip())
        return len(s)

    def flush(self) -> None:
        pass

    def _line(self, line: str) -> None:
        if not line:
            return
        m = self.STEP.match(line)
        if m:
            step, total, elapsed, values = int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)
            last_step, last_t = self._last
            rate = (step - last_step) * self.batch_size / max(elapsed - last_t, 1e-9)
            self._last = (step, elapsed)
            text = f"{LOG_PREFIX}step {step}/{total} {values} {rate:.1f} images/s".replace("  ", " ")
        else:
            r = self.RESUMED.match(line)
            if r:
                self._last = (int(r.group(1)), 0.0)
            text = LOG_PREFIX + line
        self.lines.append(text)
        self.log(text)


# =========================================================================== helpers
def _replicas(cfg: Dict[str, Any], batch_size: int) -> int:
    if cfg.get("replicas"):
        return int(cfg["replicas"])
    gpus = len(tf.config.list_physical_devices("GPU"))
    return gpus if gpus > 1 and batch_size % gpus == 0 else 1


def _copy_tree(src: str, dst: str) -> None:
    """Copy a file or folder (local or remote, either side) with tf.io.gfile."""
    if not tf.io.gfile.isdir(src):
        tf.io.gfile.copy(src, dst, overwrite=True)
        return
    tf.io.gfile.makedirs(dst)
    for name in tf.io.gfile.listdir(src):
        name = name.rstrip("/")
        _copy_tree(f"{src.rstrip('/')}/{name}", f"{dst.rstrip('/')}/{name}")


def _work_dir(model_run_dir: Optional[str]) -> Tuple[str, Optional[str]]:
    """``(local folder to train in, remote folder to copy the logs to or None)``."""
    if model_run_dir and not _has_scheme(model_run_dir):
        return os.path.join(model_run_dir, RUN_SUBDIR), None
    return tempfile.mkdtemp(prefix="synthseg_gan_run_"), (f"{model_run_dir}/{RUN_SUBDIR}" if model_run_dir else None)


def gan_settings(fn_args, defaults: Dict[str, Any]) -> Tuple[TrainerSettings, int, str]:
    """``(settings, checkpoint_every, serving folder)`` of a ``GanTrainer`` run: :func:`trainer_settings`
    (``custom_config`` over ``defaults``), a checkpoint every ``checkpoint_every`` steps (default a
    quarter of the run, at most 500) and ``fn_args.serving_model_dir`` without a trailing ``/``."""
    s = trainer_settings(fn_args, defaults)
    checkpoint_every = int(s.cfg.get("checkpoint_every") or max(1, min(500, s.steps // 4 or 1)))
    return s, checkpoint_every, str(fn_args.serving_model_dir).rstrip("/")


def gan_runtime(fn_args, s: TrainerSettings):
    """``(replicas, strategy, local run folder, remote folder for its logs or None)`` of a ``GanTrainer``."""
    from synthseg_tf.training.gan import make_strategy

    replicas = _replicas(s.cfg, s.batch_size)
    strategy = make_strategy(replicas)
    work, remote_logs = _work_dir(fn_args.model_run_dir)
    return replicas, strategy, work, remote_logs


def train_logged(train: tf.data.Dataset, work: str, s: TrainerSettings, checkpoint_every: int, **kwargs):
    """:func:`synthseg_tf.training.gan.train_gan` on ``train`` in ``work`` for ``s.steps`` steps (resumed),
    its progress as ``GanTrainer:`` log lines (:class:`_ProgressLines`) and a closing summary line;
    ``kwargs``: the task's other ``train_gan`` keywords. Returns its result."""
    from synthseg_tf.training.gan import train_gan

    progress = _ProgressLines(s.batch_size)
    t0 = time.perf_counter()
    stdout = sys.stdout
    sys.stdout = progress
    try:
        result = train_gan(
            train, work, image_size=s.image_size, steps=s.steps, batch_size=s.batch_size, val_ds=None, resume=True,
            seed=s.seed, log_every=s.log_every, image_every=s.steps, checkpoint_every=checkpoint_every,
            base_filters=int(s.cfg["base_filters"]), verbose=True, **kwargs)
    finally:
        sys.stdout = stdout
    _log(f"{LOG_PREFIX}trained {result.step} steps in {time.perf_counter() - t0:.1f}s: "
         + " ".join(f"{k}={v:.4f}" for k, v in sorted(result.metrics.items())))
    return result


def export_run_folder(work: str, serving: str, remote_logs: Optional[str]) -> None:
    """Copy the run folder's :data:`EXPORTED` parts to ``serving`` (what SyntheticGeneration reads) and,
    for a remote ``model_run_dir``, the whole run folder to ``remote_logs``."""
    tf.io.gfile.makedirs(serving)
    for name in EXPORTED:
        src = os.path.join(work, name)
        if os.path.exists(src):
            _copy_tree(src, f"{serving}/{name}")
    if remote_logs:
        _copy_tree(work, remote_logs)
    _log(f"{LOG_PREFIX}generator run folder written to {serving}")


# =========================================================================== Trainer
def run_fn(fn_args) -> None:
    """TFX Trainer entry point of the ``GanTrainer`` (``fn_args: tfx.components.FnArgs``)."""
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.data.layouts import load

    s, checkpoint_every, serving = gan_settings(fn_args, DEFAULTS)
    size = s.image_size

    # 1. The label maps the GAN trains on, as a dataset the generation job can read: only the train split.
    maps_dir = f"{serving}/{MAPS_DIR}"
    spec, count = write_train_maps(fn_args.train_files, fn_args.data_accessor, s.tf_transform_output, maps_dir,
                                   s.class_names)
    source_ids = sorted(x.source_id for x in load(spec).samples)
    _log(f"{LOG_PREFIX}{count} training examples (train split) written to {maps_dir}")

    # 2. Train (resumable) in the ModelRun folder.
    replicas, strategy, work, remote_logs = gan_runtime(fn_args, s)
    train = train_dataset(fn_args.train_files, fn_args.data_accessor, s.tf_transform_output, s.batch_size, s.seed)
    _log(f"{LOG_PREFIX}training {s.steps} steps, batch {s.batch_size} on {replicas} replica(s), {size[0]}x{size[1]}, "
         f"base filters {int(s.cfg['base_filters'])}, run folder {work}, a progress line every {s.log_every} steps")
    # The input position is not checkpointed (a shuffle buffer of images would be saved with every
    # checkpoint); a resume skips the batches already used, exact for this seeded, ordered reader.
    options = {"checkpoint_iterator": False, **dict(s.cfg.get("gan_options") or {})}
    train_logged(train, work, s, checkpoint_every, num_classes=s.num_classes, class_table=ClassTable(s.class_names),
                 replicas=replicas, strategy=strategy,
                 extra_config={"data": spec, "conditioning": "labelmap", "train_source_ids": source_ids,
                               "monitor_source_ids": [], "trained_by": "tfx", "train_examples": count},
                 **options)

    # 3. The run folder SyntheticGeneration reads.
    export_run_folder(work, serving, remote_logs)
