"""Export a trained pix2pix generator as a SavedModel that TF Serving can host.

Signatures:

- ``serving_default``: ``label_map`` uint8 ``[B,H,W]`` (class ids, 255 = void), plus
  ``class_id`` int32 ``[B]`` for class-conditional generators -> ``image`` uint8 ``[B,H,W,3]``.
  Label maps of another size are resized (nearest) to the training size and the image is
  resized back (bilinear), so any size works.
- ``serving_png``: ``label_map_png`` string ``[B]``: PNG bytes of single-channel label maps, as TF
  Serving's REST API delivers ``{"b64": "..."}`` values (plus ``class_id``) -> ``image_png``
  string ``[B]`` and ``image`` uint8. Label maps in one request must share a size.

Bad requests fail with ``tf.errors.InvalidArgumentError`` (TF Serving answers them with an error
status; the server keeps running) and a message saying what is wrong: ids outside the generator's
``K`` classes (and void 255), bytes that are not PNG (with the request indices), maps of different
sizes in one request, class ids out of range, inputs of the wrong rank (``label_map [1,32,32,1] is not
compatible with expected shape [?,?,?]``) or dtype.

``config.json`` and ``classes.json`` are written beside ``saved_model.pb``, so
:class:`~synthseg_tf.generation.Renderer` and ``synthseg generate`` take the export directly.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import tensorflow as tf

from synthseg_tf import storage
from synthseg_tf.data.classes import ClassTable
from synthseg_tf.utils import atomic_directory, atomic_write_text


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _GeneratorModule(tf.Module):
    def __init__(self, generator: tf.keras.Model, image_size, conditional: bool):
        from synthseg_tf.models.pix2pix import fused_generator

        super().__init__()
        self.generator = generator
        # served through the fused-upsampling twin (same variables, the same function in fewer
        # multiply-adds; see synthseg_tf.models.pix2pix.fused_generator) when the generator has one
        self.inference = fused_generator(generator) or generator
        self.size = tuple(int(s) for s in image_size)
        self.conditional = conditional
        embeds = [l.input_dim for l in generator.layers if isinstance(l, tf.keras.layers.Embedding)]
        self.num_labels = int(min(embeds)) if conditional and embeds else None

    def render(self, label_map, class_id=None):
        # a loaded signature does not check its inputs' shapes: fail with a message, not deep in a resize
        label_map = tf.ensure_shape(label_map, [None, None, None], name="label_map_must_be_B_H_W")
        if class_id is not None:
            class_id = tf.ensure_shape(class_id, [None], name="class_id_must_be_B")
            tf.debugging.assert_equal(tf.shape(class_id)[0], tf.shape(label_map)[0],
                                      message="class_id needs one id per label map")
        in_hw = tf.shape(label_map)[1:3]
        m = tf.image.resize(label_map[..., None], self.size, method="nearest")[..., 0]
        m = tf.cast(m, tf.int32)
        if self.num_labels is not None:  # an Embedding on GPU returns zeros for ids out of range instead of failing
            check = tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(class_id >= 0, class_id < self.num_labels)),
                [f"class_id must be in 0..{self.num_labels - 1} (the generator's {self.num_labels} classes); got:",
                 class_id], summarize=64)
            with tf.control_dependencies([check]):  # checked before the embedding lookup can fail on its own
                class_id = tf.identity(class_id)
        out = self.inference([m, class_id] if self.conditional else m, training=False)
        out = tf.image.resize(out, in_hw, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round((out + 1.0) * 127.5), 0.0, 255.0), tf.uint8)

    def decode_maps(self, pngs):
        """PNG bytes ``[B]`` -> uint8 ``[B,H,W]``; data that is not PNG, or maps of different sizes,
        fail with ``InvalidArgumentError`` naming the request indices and sizes."""
        pngs = tf.ensure_shape(pngs, [None], name="label_map_png_must_be_B")
        is_png = tf.logical_and(tf.equal(tf.strings.substr(pngs, 0, 8), PNG_SIGNATURE),
                                tf.strings.length(pngs) >= 33)
        not_png = tf.debugging.Assert(
            tf.reduce_all(is_png),
            ["label_map_png: not PNG data (expected the PNG bytes of single-channel label maps) at request "
             "index(es):", tf.where(tf.logical_not(is_png))[:, 0]], summarize=32)
        with tf.control_dependencies([not_png]):
            header = tf.cast(tf.io.decode_raw(tf.strings.substr(pngs, 16, 8), tf.uint8), tf.int64)  # IHDR w, h
        scale = tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64)
        sizes = tf.stack([tf.reduce_sum(header[:, 4:] * scale, 1), tf.reduce_sum(header[:, :4] * scale, 1)], 1)
        same = tf.debugging.Assert(
            tf.reduce_all(tf.equal(sizes, sizes[:1])),
            ["label_map_png: the label maps of one request must share a size; (height, width) per index:", sizes],
            summarize=64)
        with tf.control_dependencies([same]):
            return tf.map_fn(lambda b: tf.io.decode_png(b, channels=1)[..., 0], pngs,
                             fn_output_signature=tf.TensorSpec([None, None], tf.uint8))

    def encode_images(self, images):
        return tf.map_fn(tf.io.encode_png, images, fn_output_signature=tf.TensorSpec([], tf.string))


def export_generator(generator: tf.keras.Model, export_dir: str, image_size, classes: Optional[ClassTable] = None,
                     config: Optional[Dict] = None, overwrite: bool = False) -> str:
    """Write the generator SavedModel (atomically) and return ``export_dir``."""
    if "reference" in generator.input_names:
        raise ValueError(f"{generator.name} takes a reference image (trained with style_dim > 0); its serving "
                         "signatures are not built yet: render it from its run folder (`synthseg generate "
                         "--generator RUN_DIR`)")
    conditional = len(generator.inputs) > 1
    module = _GeneratorModule(generator, image_size, conditional)
    maps = tf.TensorSpec([None, None, None], tf.uint8, name="label_map")
    pngs = tf.TensorSpec([None], tf.string, name="label_map_png")
    ids = tf.TensorSpec([None], tf.int32, name="class_id")
    if conditional:
        default = tf.function(lambda label_map, class_id: {"image": module.render(label_map, class_id)},
                              input_signature=[maps, ids])

        def png_fn(label_map_png, class_id):
            img = module.render(module.decode_maps(label_map_png), class_id)
            return {"image": img, "image_png": module.encode_images(img)}

        png = tf.function(png_fn, input_signature=[pngs, ids])
    else:
        default = tf.function(lambda label_map: {"image": module.render(label_map)}, input_signature=[maps])

        def png_fn(label_map_png):
            img = module.render(module.decode_maps(label_map_png))
            return {"image": img, "image_png": module.encode_images(img)}

        png = tf.function(png_fn, input_signature=[pngs])
    if os.path.isdir(export_dir) and not os.listdir(export_dir):
        os.rmdir(export_dir)
    with atomic_directory(export_dir, overwrite=overwrite) as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": default, "serving_png": png})
        cfg = dict(config or {})
        cfg.update(image_size=list(module.size), conditional=conditional, format="synthseg-generator-savedmodel")
        atomic_write_text(os.path.join(tmp, "config.json"), json.dumps(cfg, indent=1))
        if classes is not None:
            classes.save(os.path.join(tmp, "classes.json"))
    return export_dir


def export_run(run_dir: str, export_dir: str, overwrite: bool = False) -> str:
    """Export the generator of a ``synthseg gan train`` run folder.

    The export's ``config.json`` is the run's (with the settings older runs lack filled in, see
    :func:`synthseg_tf.training.gan.run_settings`), so it keeps e.g. ``data`` and
    ``train_source_ids``. The generator is the run's ``generator/``: its EMA weights when the run
    used ``ema_decay``.
    """
    from synthseg_tf.generation.renderer import _read_json

    import tensorflow_addons  # noqa: F401  (custom layers)

    import synthseg_tf.models.pix2pix  # noqa: F401  (registers the custom layers)

    from synthseg_tf.models.loading import load_keras_model
    from synthseg_tf.training.gan import check_run_dir, run_settings

    run_dir = check_run_dir(run_dir)  # a ModelLoadError naming the folder if it is not a finished run
    generator = load_keras_model(os.path.join(run_dir, "generator"), what="trained generator (Keras SavedModel)")
    # settings older runs lack (upsample, label_conditioning, ...) recorded as those runs used them
    config = run_settings(_read_json(os.path.join(run_dir, "config.json")))
    cj = storage.join(run_dir, "classes.json")
    classes = ClassTable.load(cj) if storage.isfile(cj) else None
    return export_generator(generator, export_dir, config["image_size"], classes, config, overwrite=overwrite)


__all__ = ["export_generator", "export_run"]
