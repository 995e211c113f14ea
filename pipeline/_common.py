"""What the pipeline's user modules share: settings from ``custom_config``/``fn_args``, the Keras
Trainers' fit loop with its progress lines, and the serving export's tf.Example signatures.

Used by :mod:`pipeline.module_file`, :mod:`pipeline.classification_module_file`,
:mod:`pipeline.gan_module_file` and :mod:`pipeline.classification_gan_module_file`. TensorFlow only
(no TFX import). The user modules import it relatively (``synthseg_tf_tfx.pipeline._common``) or,
where TFX packages a user module given as a ``.py`` file (every ``.py`` of its folder becomes a
top-level module of the user-code wheel), as the top-level module ``_common``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from synthseg_tf import _env  # noqa: F401  (environment settings before TensorFlow loads)

import tensorflow as tf  # noqa: E402

IMAGE_KEY = "image/encoded"  # the raw image feature (synthseg_tf.data.tfrecord)
IMAGE_XF = "image"  # the transformed image feature


# =========================================================================== settings
def with_defaults(custom_config: Optional[Dict[str, Any]], defaults: Dict[str, Any]) -> Dict[str, Any]:
    """``custom_config`` with ``defaults`` filled in, ``image_size`` as an ``(H, W)`` tuple and
    ``num_classes`` from ``class_names`` when it is missing."""
    cfg = {**defaults, **(custom_config or {})}
    size = cfg["image_size"]
    if isinstance(size, (int, float)):
        size = [int(size), int(size)]
    cfg["image_size"] = (int(size[0]), int(size[1]))
    if cfg.get("class_names") and not cfg.get("num_classes"):
        cfg["num_classes"] = len(cfg["class_names"])
    return cfg


@dataclass(frozen=True)
class TrainerSettings:
    """What every ``run_fn`` reads first (see :func:`trainer_settings`)."""

    cfg: Dict[str, Any]  # custom_config with the module's defaults
    num_classes: int
    class_names: List[str]
    image_size: Tuple[int, int]
    seed: int
    batch_size: int
    steps: int  # fn_args.train_steps (default 100)
    log_every: int  # a progress line every this many steps (default: about 20 lines per run)
    tf_transform_output: Any  # tft.TFTransformOutput of fn_args.transform_output


def trainer_settings(fn_args, defaults: Dict[str, Any]) -> TrainerSettings:
    """The settings of a Trainer's ``run_fn`` from ``fn_args`` (``tfx.components.FnArgs``): its
    ``custom_config`` over ``defaults`` (:func:`with_defaults`), the class names (``class_<i>`` when
    none are given), the step count and the Transform output."""
    import tensorflow_transform as tft

    cfg = with_defaults(fn_args.custom_config, defaults)
    num_classes = int(cfg["num_classes"])
    steps = int(fn_args.train_steps or 100)
    return TrainerSettings(
        cfg=cfg, num_classes=num_classes,
        class_names=list(cfg.get("class_names") or [f"class_{i}" for i in range(num_classes)]),
        image_size=cfg["image_size"], seed=int(cfg["seed"]), batch_size=int(cfg["batch_size"]), steps=steps,
        log_every=int(cfg.get("log_every") or max(1, steps // 20)),
        tf_transform_output=tft.TFTransformOutput(fn_args.transform_output))


# =========================================================================== Keras training
class ProgressLogger(tf.keras.callbacks.Callback):
    """Log ``Trainer: step S/T (epoch E/N) loss=... pixel_accuracy=... X images/s`` every ``every`` steps.

    The rate covers the steps since the previous line (the first line includes graph building).
    At each epoch's end one line gives the epoch's training and validation values.
    """

    def __init__(self, every: int, total_steps: int, epochs: int, batch_size: int,
                 log: Optional[Callable[[str], None]] = None, name: str = "Trainer"):
        super().__init__()
        self.name = str(name)  # the node id the lines start with (Trainer, BaselineTrainer)
        self.every = max(1, int(every))
        self.total_steps = int(total_steps)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lines: List[str] = []
        self._log = log
        self._step = 0
        self._epoch = 0
        self._mark = (0, time.perf_counter())

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self._log is not None:
            self._log(line)
        else:
            from absl import logging as absl_logging

            absl_logging.info("%s", line)

    @staticmethod
    def _values(logs: Optional[Dict[str, Any]], skip_val: bool = True) -> str:
        items = [(k, v) for k, v in sorted((logs or {}).items()) if not (skip_val and k.startswith("val_"))]
        items.sort(key=lambda kv: (kv[0] != "loss", kv[0]))  # loss first
        return " ".join(f"{k}={float(v):.4f}" for k, v in items)

    def on_train_begin(self, logs=None):
        self._step = 0
        self._mark = (0, time.perf_counter())
        self._emit(f"{self.name}: training {self.total_steps} steps in {self.epochs} epoch(s), "
                   f"batch {self.batch_size}, a progress line every {self.every} steps")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self._step % self.every and self._step != self.total_steps:
            return
        last_step, last_t = self._mark
        now = time.perf_counter()
        rate = (self._step - last_step) * self.batch_size / max(now - last_t, 1e-9)
        self._mark = (self._step, now)
        self._emit(f"{self.name}: step {self._step}/{self.total_steps} (epoch {self._epoch + 1}/{self.epochs}) "
                   f"{self._values(logs)} {rate:.1f} images/s")

    def on_epoch_end(self, epoch, logs=None):
        val = {k[4:]: v for k, v in (logs or {}).items() if k.startswith("val_")}
        self._emit(f"{self.name}: epoch {int(epoch) + 1}/{self.epochs} done: {self._values(logs)}"
                   + (f"; validation {self._values(val)}" if val else ""))


def fit_with_progress(model: tf.keras.Model, train: tf.data.Dataset, val: tf.data.Dataset, fn_args,
        s: TrainerSettings) -> Dict[str, float]:
    """Train a compiled model for ``s.steps`` steps (in ``custom_config`` ``epochs``, default 1) with
    :class:`ProgressLogger` lines (named ``log_name``, default ``Trainer``) and TensorBoard logs in
    ``fn_args.model_run_dir``; returns the last value of each history entry."""
    epochs = max(1, int(s.cfg.get("epochs", 1)))
    callbacks: List[tf.keras.callbacks.Callback] = [
        ProgressLogger(s.log_every, max(1, s.steps // epochs) * epochs, epochs, s.batch_size,
                       name=s.cfg.get("log_name", "Trainer"))]
    if fn_args.model_run_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch",
                                                        profile_batch=0, write_graph=False))
    history = model.fit(train, epochs=epochs, steps_per_epoch=max(1, s.steps // epochs), validation_data=val,
                        validation_steps=max(1, int(fn_args.eval_steps or 1)), callbacks=callbacks, verbose=0)
    return {k: float(v[-1]) for k, v in history.history.items()}


# =========================================================================== serving export
def with_example_signatures(module: tf.Module, tf_transform_output, predict: str) -> tf.Module:
    """Add to a library export module (``_SegmenterModule``, ``_ClassifierModule``) the Transform layer and
    two functions over serialized ``tf.Example`` strings ``[B]``: ``serve_tf_examples`` (only
    ``image/encoded`` is needed; the module's ``predict`` method on the transformed ``image``) and
    ``transform_features`` (the Transform outputs)."""
    module.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = {IMAGE_KEY: raw_spec[IMAGE_KEY]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        """Serialized tf.Examples (only image/encoded is needed) -> the module's outputs."""
        # The Transform graph fills the features a request lacks with their defaults (an empty
        # mask decodes to all-void), so serving goes through exactly the training preprocessing.
        features = module.tft_layer(tf.io.parse_example(serialized, serving_spec))
        return getattr(module, predict)(features[IMAGE_XF])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(serialized):
        """Serialized tf.Examples -> the Transform outputs."""
        return module.tft_layer(tf.io.parse_example(serialized, raw_spec))

    module.serve_tf_examples = serve_tf_examples
    module.transform_features = transform_features
    return module


def save_serving_export(module: tf.Module, export_dir: str, class_table, config: Dict[str, Any],
                        config_file: str) -> str:
    """Save a module of :func:`with_example_signatures` with the signatures ``serving_default``,
    ``serving_bytes``, ``serving_tf_example`` and ``transform_features``, plus ``classes.json`` (of
    ``class_table``) and ``config_file`` (``config``) next to it; returns ``export_dir``."""
    signatures = {
        "serving_default": module.serve.get_concrete_function(),
        "serving_bytes": module.serve_bytes.get_concrete_function(),
        "serving_tf_example": module.serve_tf_examples.get_concrete_function(),
        "transform_features": module.transform_features.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    # The Trainer's output folder may be remote (gs://): write with tf.io.gfile.
    with tf.io.gfile.GFile(os.path.join(export_dir, "classes.json"), "w") as f:
        f.write(json.dumps(class_table.to_dict(), indent=1))
    with tf.io.gfile.GFile(os.path.join(export_dir, config_file), "w") as f:
        f.write(json.dumps(config, indent=1))
    return export_dir
