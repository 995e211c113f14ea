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

from typing import Any, Dict, List, Optional, Tuple

from synthseg_tf import _env  # noqa: F401  (SM_FRAMEWORK=tf.keras before TF/segmentation_models load)

import tensorflow as tf  # noqa: E402

from synthseg_tf.data.classes import IGNORE_ID  # noqa: E402  (255, void)

# The shared helpers. A module file (module_file=".../module_file.py") is packaged by TFX with the .py
# files of its folder as top-level modules: there _common is a top-level module too.
if __package__:
    from ._common import (IMAGE_KEY, IMAGE_XF, ProgressLogger, fit_with_progress,  # noqa: E402,F401
                          save_serving_export, trainer_settings, with_defaults, with_example_signatures)
else:
    from _common import (IMAGE_KEY, IMAGE_XF, ProgressLogger, fit_with_progress,  # noqa: E402,F401
                         save_serving_export, trainer_settings, with_defaults, with_example_signatures)

MASK_KEY = "mask/encoded"
SYNTHETIC_KEY = "synthetic"
# Transformed feature names (the same keys as the library's tf.data batches; IMAGE_XF = "image").
MASK_XF = "mask"
SYNTHETIC_XF = "synthetic"
LABEL_KEY = MASK_XF

DEFAULTS = {"image_size": [128, 128], "backbone": "resnet34", "batch_size": 8, "learning_rate": 1e-3, "seed": 0}


def settings(custom_config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``custom_config`` with defaults filled in and ``image_size`` as an ``(H, W)`` tuple."""
    return with_defaults(custom_config, DEFAULTS)


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


def _serving_module(model: tf.keras.Model, image_size: Tuple[int, int], tf_transform_output):
    """The library's segmenter module plus the tf.Example and transform signatures."""
    from synthseg_tf.models.unet import _SegmenterModule

    return with_example_signatures(_SegmenterModule(model, image_size), tf_transform_output, "segment")


def export_serving_model(model: tf.keras.Model, export_dir: str, tf_transform_output, class_names: List[str],
                         image_size: Tuple[int, int], extra_config: Optional[Dict] = None) -> str:
    """Write the SavedModel (+ classes.json/config.json) the Trainer hands to Evaluator/Pusher."""
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.models.unet import CONFIG_FILE, EXPORT_FORMAT

    module = _serving_module(model, image_size, tf_transform_output)
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
    return save_serving_export(module, export_dir, table, config, CONFIG_FILE)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (generic Trainer, ``fn_args: tfx.components.FnArgs``)."""
    from synthseg_tf.models.unet import build_unet, compile_unet

    s = trainer_settings(fn_args, DEFAULTS)
    cfg, size = s.cfg, s.image_size
    train = input_fn(fn_args.train_files, fn_args.data_accessor, s.tf_transform_output, s.batch_size, s.seed)
    val = input_fn(fn_args.eval_files, fn_args.data_accessor, s.tf_transform_output, s.batch_size, s.seed)

    tf.keras.utils.set_random_seed(s.seed)
    model = build_unet(s.num_classes, backbone=cfg["backbone"], encoder_weights=cfg.get("encoder_weights"),
                       input_shape=(size[0], size[1], 3))
    compile_unet(model, s.num_classes, learning_rate=float(cfg["learning_rate"]))
    last = fit_with_progress(model, train, val, fn_args, s)
    export_serving_model(model, fn_args.serving_model_dir, s.tf_transform_output, s.class_names, size,
                         extra_config={"backbone": cfg["backbone"], "train_steps": s.steps, "history": last})
