"""TFX user module: ``preprocessing_fn`` (Transform) and ``run_fn`` (Trainer) for the U-Net.

Both read their settings from the component's ``custom_config`` (see
:func:`pipeline.pipeline.create_pipeline`): ``image_size`` ``[H, W]`` (multiples of 32),
``num_classes``, ``class_names``, ``backbone``, ``batch_size``, ``learning_rate``, ``seed``.

Transform (``preprocessing_fn``)
    Raw features are the package's ``tf.Example`` schema (``synthseg_tf.data.tfrecord``). The
    PNG strings are decoded with ``tf.io.decode_png`` inside ``tf.map_fn`` (tf.Transform feeds
    batches of strings) and resized exactly as the library's input pipeline does
    (:func:`synthseg_tf.data.tfdata.resize_pair`: bilinear + antialias for the image, nearest for
    the mask). Outputs: ``image`` float32 ``[H, W, 3]`` in [0, 1], ``mask`` int64 ``[H, W]``
    (class ids, 255 = void) and ``synthetic`` int64. No analyzers: the transform is per example,
    but running it in Transform puts decoding and resizing into the transform graph that the
    exported model embeds, so training and serving cannot drift apart.

Trainer (``run_fn``)
    Builds the U-Net with :func:`synthseg_tf.models.unet.build_unet`, compiles it with the
    library's Dice loss and metrics (``pixel_accuracy``, ``mean_iou``; void skipped), trains for
    ``fn_args.train_steps`` steps on the transformed examples and writes a SavedModel to
    ``fn_args.serving_model_dir`` with these signatures:

    - ``serving_default``: ``images`` uint8 ``[B,H,W,3]`` -> ``label_ids`` uint8 ``[B,H,W]``,
      ``probabilities`` float32 ``[B,H,W,K]`` (the library's export, see ``export_unet``);
    - ``serving_bytes``: ``image_bytes`` string ``[B]`` (PNG/JPEG) -> the same;
    - ``serving_tf_example``: ``examples`` string ``[B]`` of serialized ``tf.Example`` (only
      ``image/encoded`` is needed) -> the same, through the Transform graph: what TFX/TFMA and
      batch prediction on TFRecords use;
    - ``transform_features``: serialized ``tf.Example`` -> transformed features (``image``,
      ``mask``, ...); TFMA uses it to get the ``mask`` label for evaluation.

    An example without ``mask/encoded`` (a serving request) gets an all-void mask in the
    Transform graph, which lets ``serving_tf_example`` run through the same graph.

    ``classes.json`` and ``config.json`` are written next to it, so the pushed model is also a
    regular library export: ``synthseg_tf.models.unet.load_segmenter(dir)`` and the generation
    quality filter accept it.

    Progress: :class:`ProgressLogger` logs a line every ``log_every`` steps (``custom_config``;
    default about 20 lines per run) through absl logging, which the TFX executor (locally and
    on Vertex) writes to its log: step/total, epoch, the running loss and metrics, images/s; and
    one line per epoch with the validation values. The lines start with ``log_name``
    (``custom_config``, default ``Trainer``; the pipeline's ``BaselineTrainer`` sets its own id).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from synthseg_tf import _env  # noqa: F401  (SM_FRAMEWORK=tf.keras before TF/segmentation_models load)

import tensorflow as tf  # noqa: E402

from synthseg_tf.data.classes import IGNORE_ID  # noqa: E402  (255, void)

IMAGE_KEY = "image/encoded"
MASK_KEY = "mask/encoded"
SYNTHETIC_KEY = "synthetic"
# Transformed feature names (the same keys as the library's tf.data batches).
IMAGE_XF = "image"
MASK_XF = "mask"
SYNTHETIC_XF = "synthetic"
LABEL_KEY = MASK_XF

DEFAULTS = {"image_size": [128, 128], "backbone": "resnet34", "batch_size": 8, "learning_rate": 1e-3, "seed": 0}


def settings(custom_config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``custom_config`` with defaults filled in and ``image_size`` as an ``(H, W)`` tuple."""
    cfg = {**DEFAULTS, **(custom_config or {})}
    size = cfg["image_size"]
    if isinstance(size, (int, float)):
        size = [int(size), int(size)]
    cfg["image_size"] = (int(size[0]), int(size[1]))
    if cfg.get("class_names") and not cfg.get("num_classes"):
        cfg["num_classes"] = len(cfg["class_names"])
    return cfg


# =========================================================================== Transform
def _dense_strings(x) -> tf.Tensor:
    """A ``[B]`` string tensor from a dense ``[B]``/``[B,1]`` tensor or a (VarLen) SparseTensor."""
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value="")
        x = x[:, 0] if x.shape.rank == 2 else x
    elif x.shape.rank == 2:
        x = x[:, 0]
    return x


def _dense_ints(x) -> tf.Tensor:
    if isinstance(x, tf.SparseTensor):
        x = tf.sparse.to_dense(x, default_value=0)
    return x[:, 0] if x.shape.rank == 2 else x


def decode_and_resize(image_png: tf.Tensor, mask_png: Optional[tf.Tensor], size: Tuple[int, int]):
    """Batched PNG strings ``[B]`` -> image float32 ``[B,H,W,3]`` in [0,1] (and mask int64 ``[B,H,W]``)."""
    from synthseg_tf.data.tfdata import resize_pair

    h, w = size

    def one_image(b):
        img, _ = resize_pair(tf.io.decode_png(b, channels=3), None, (h, w))
        return tf.ensure_shape(img, [h, w, 3])

    images = tf.map_fn(one_image, image_png, fn_output_signature=tf.TensorSpec([h, w, 3], tf.float32))
    if mask_png is None:
        return images, None

    def one_mask(b):
        def decode():
            m = tf.io.decode_png(b, channels=1)[..., 0]
            return tf.cast(tf.image.resize(m[..., None], (h, w), method="nearest")[..., 0], tf.int64)  # as resize_pair

        # No mask (serving requests, classification records): all void, so nothing is scored.
        m = tf.cond(tf.strings.length(b) > 0, decode, lambda: tf.fill([h, w], tf.constant(IGNORE_ID, tf.int64)))
        return tf.ensure_shape(m, [h, w])

    masks = tf.map_fn(one_mask, mask_png, fn_output_signature=tf.TensorSpec([h, w], tf.int64))
    return images, masks


def preprocessing_fn(inputs: Dict[str, Any], custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """tf.Transform: decode + resize the PNGs (see the module docstring)."""
    size = settings(custom_config)["image_size"]
    images, masks = decode_and_resize(_dense_strings(inputs[IMAGE_KEY]), _dense_strings(inputs[MASK_KEY]), size)
    out = {IMAGE_XF: images, MASK_XF: masks}
    if SYNTHETIC_KEY in inputs:
        out[SYNTHETIC_XF] = tf.cast(_dense_ints(inputs[SYNTHETIC_KEY]), tf.int64)
    return out


# =========================================================================== Trainer
def input_fn(file_pattern: List[str], data_accessor, tf_transform_output, batch_size: int,
             seed: Optional[int] = None) -> tf.data.Dataset:
    """Transformed examples -> repeating ``(images float32 [B,H,W,3], masks int32 [B,H,W])`` batches."""
    from tfx_bsl.public import tfxio

    ds = data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL_KEY, shuffle_seed=seed),
        tf_transform_output.transformed_metadata.schema)
    return ds.map(lambda features, mask: (features[IMAGE_XF], tf.cast(mask, tf.int32)))


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


def _serving_module(model: tf.keras.Model, image_size: Tuple[int, int], tf_transform_output):
    """The library's segmenter module plus the tf.Example and transform signatures."""
    from synthseg_tf.models.unet import _SegmenterModule

    module = _SegmenterModule(model, image_size)
    module.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = {IMAGE_KEY: raw_spec[IMAGE_KEY]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        """Serialized tf.Examples (only image/encoded is needed) -> label_ids, probabilities."""
        # The Transform graph fills the features a request lacks with their defaults (an empty
        # mask decodes to all-void), so serving goes through exactly the training preprocessing.
        features = module.tft_layer(tf.io.parse_example(serialized, serving_spec))
        return module.segment(features[IMAGE_XF])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(serialized):
        """Serialized tf.Examples -> the Transform outputs (image, mask, synthetic)."""
        raw = tf.io.parse_example(serialized, raw_spec)
        return module.tft_layer(raw)

    module.serve_tf_examples = serve_tf_examples
    module.transform_features = transform_features
    return module


def export_serving_model(model: tf.keras.Model, export_dir: str, tf_transform_output, class_names: List[str],
                         image_size: Tuple[int, int], extra_config: Optional[Dict] = None) -> str:
    """Write the SavedModel (+ classes.json/config.json) the Trainer hands to Evaluator/Pusher."""
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.models.unet import CONFIG_FILE, EXPORT_FORMAT

    module = _serving_module(model, image_size, tf_transform_output)
    signatures = {
        "serving_default": module.serve.get_concrete_function(),
        "serving_bytes": module.serve_bytes.get_concrete_function(),
        "serving_tf_example": module.serve_tf_examples.get_concrete_function(),
        "transform_features": module.transform_features.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
    table = ClassTable(list(class_names))
    config = {
        "format": EXPORT_FORMAT, "version": 1, "task": "segmentation", "model_name": model.name,
        "image_size": list(image_size), "num_classes": int(model.output_shape[-1]), "class_names": table.names,
        "ignore_id": IGNORE_ID,
        "inputs": ("serving_default: images uint8 [B,H,W,3]; serving_bytes: image_bytes string [B] (PNG/JPEG); "
                   "serving_tf_example: examples string [B] (serialized tf.Example with image/encoded)"),
        "outputs": {"label_ids": "uint8 [B,H,W]", "probabilities": "float32 [B,H,W,K]"},
        "resize": "bilinear to image_size; probabilities resized back bilinear before argmax",
        "trained_by": "tfx", **dict(extra_config or {}),
    }
    # The Trainer's output folder may be remote (gs://): write with tf.io.gfile.
    with tf.io.gfile.GFile(os.path.join(export_dir, "classes.json"), "w") as f:
        f.write(json.dumps(table.to_dict(), indent=1))
    with tf.io.gfile.GFile(os.path.join(export_dir, CONFIG_FILE), "w") as f:
        f.write(json.dumps(config, indent=1))
    return export_dir


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (generic Trainer, ``fn_args: tfx.components.FnArgs``)."""
    import tensorflow_transform as tft

    from synthseg_tf.models.unet import build_unet, compile_unet

    cfg = settings(fn_args.custom_config)
    num_classes = int(cfg["num_classes"])
    class_names = list(cfg.get("class_names") or [f"class_{i}" for i in range(num_classes)])
    size = cfg["image_size"]
    seed = int(cfg["seed"])
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

    train = input_fn(fn_args.train_files, fn_args.data_accessor, tf_transform_output, int(cfg["batch_size"]), seed)
    val = input_fn(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, int(cfg["batch_size"]), seed)

    tf.keras.utils.set_random_seed(seed)
    model = build_unet(num_classes, backbone=cfg["backbone"], encoder_weights=cfg.get("encoder_weights"),
                       input_shape=(size[0], size[1], 3))
    compile_unet(model, num_classes, learning_rate=float(cfg["learning_rate"]))
    steps = int(fn_args.train_steps or 100)
    epochs = max(1, int(cfg.get("epochs", 1)))
    batch_size = int(cfg["batch_size"])
    every = int(cfg.get("log_every") or max(1, steps // 20))
    callbacks: List[tf.keras.callbacks.Callback] = [ProgressLogger(every, max(1, steps // epochs) * epochs, epochs,
                                                                   batch_size, name=cfg.get("log_name", "Trainer"))]
    if fn_args.model_run_dir:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch",
                                                        profile_batch=0, write_graph=False))
    history = model.fit(train, epochs=epochs, steps_per_epoch=max(1, steps // epochs), validation_data=val,
                        validation_steps=max(1, int(fn_args.eval_steps or 1)), callbacks=callbacks, verbose=0)
    last = {k: float(v[-1]) for k, v in history.history.items()}
    export_serving_model(model, fn_args.serving_model_dir, tf_transform_output, class_names, size,
                         extra_config={"backbone": cfg["backbone"], "train_steps": steps, "history": last})
