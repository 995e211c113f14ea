"""TFX user module of the classification pipeline's ``GanTrainer``: ``run_fn`` trains the library's
class-conditional pix2pix on the pipeline's real training split.

The ``GanTrainer`` is a generic TFX ``Trainer``
(``run_fn="synthseg_tf_tfx.pipeline.classification_gan_module_file.run_fn"``) fed by ``RealTransform``:
the real examples decoded and resized by :mod:`pipeline.classification_module_file` (``image`` float32
``[H, W, 3]`` in [0, 1], ``label`` int64). Only the ``train`` split is read; the ``eval`` split is the
Evaluator's test data and the GAN never sees it.

Training is the library's :func:`synthseg_tf.training.gan.train_gan` with the settings of the
classification experiment (:data:`synthseg_tf.experiments.classification.GAN_DEFAULTS`: conditioning on
Canny edge maps of real images plus the class id (``conditioning="edges"``, ``num_labels`` = the
classes), class FiLM in the decoder (``label_conditioning="film"``), resize upsampling, DiffAugment,
generator EMA), the library's standard augmentation before the edge maps are drawn (as
:func:`synthseg_tf.training.gan_data.gan_datasets` does). ``custom_config``: ``image_size``,
``num_classes``, ``class_names``, ``batch_size``, ``base_filters``, ``seed``, ``log_every``,
``checkpoint_every``, ``replicas``, ``conditioning`` (``edges``, ``color-edges`` or ``class``) and ``gan_options`` (more
:func:`train_gan` keywords, over ``GAN_DEFAULTS``); ``fn_args.train_steps`` is the number of steps.
The run trains resumably in ``<model_run_dir>/gan_run``, as the segmentation ``GanTrainer`` does
(:mod:`pipeline.gan_module_file`).

Output (``fn_args.serving_model_dir``): a ``synthseg gan train`` run folder (``config.json``,
``classes.json``, ``generator/``, ``log.csv``, ``samples/``) plus ``train_images/``: the training
split's images in the ``classfolders`` layout (one folder per class id, ``NNNN-<name>``, so the
loader's sorted folder order is the class id order, empty folders included).
``config.json`` records ``data`` = that ``classfolders:`` spec, ``conditioning``, ``label_names``
and ``train_source_ids``, so ``SyntheticGeneration(masks="sample", labels="rare")`` draws the
edge maps of new samples from the training split only, with classes drawn towards the rare ones.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from synthseg_tf import _env  # noqa: F401  (environment settings before TensorFlow loads)

import tensorflow as tf  # noqa: E402

from ._common import with_defaults  # noqa: E402
from .gan_module_file import (LOG_PREFIX, _log, export_run_folder, gan_runtime, gan_settings,  # noqa: E402
                              train_logged)

IMAGE_XF = "image"
LABEL_XF = "label"
IMAGES_DIR = "train_images"
DEFAULTS = {"image_size": [64, 64], "batch_size": 16, "base_filters": 32, "seed": 0, "conditioning": "edges"}


def settings(custom_config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``custom_config`` with defaults filled in and ``image_size`` as an ``(H, W)`` tuple."""
    return with_defaults(custom_config, DEFAULTS)


def class_folder(i: int, name: str) -> str:
    """The folder of class id ``i``: ``NNNN-<name>`` (sorted order = id order)."""
    return f"{int(i):04d}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)) or "class")


# =========================================================================== data
def write_train_images(file_pattern: List[str], data_accessor, tf_transform_output, out_dir: str,
                       class_names: List[str]) -> Tuple[str, int]:
    """Write every transformed training example once as ``out_dir/<class folder>/NNNNNN.png`` (local or
    remote); returns ``(classfolders spec, count)``."""
    from tfx_bsl.public import tfxio

    ds = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=64, num_epochs=1, shuffle=False),
        tf_transform_output.transformed_metadata.schema)
    folders = [f"{out_dir}/{class_folder(i, n)}" for i, n in enumerate(class_names)]
    for d in folders:
        tf.io.gfile.makedirs(d)
    n = 0
    for batch in ds:
        images = tf.cast(tf.round(tf.clip_by_value(batch[IMAGE_XF], 0.0, 1.0) * 255.0), tf.uint8)
        labels = tf.reshape(batch[LABEL_XF], [-1]).numpy()
        for image, label in zip(images, labels):
            if not 0 <= int(label) < len(class_names):
                raise ValueError(f"a training example has label {int(label)}; class ids 0..{len(class_names) - 1} "
                                 "are needed (class-folder data written by `synthseg data to-tfrecord`)")
            with tf.io.gfile.GFile(f"{folders[int(label)]}/{n:06d}.png", "wb") as f:
                f.write(tf.io.encode_png(image).numpy())
            n += 1
    if not n:
        raise ValueError(f"no training examples in {file_pattern}")
    return f"classfolders:{out_dir}", n


def train_dataset(file_pattern: List[str], data_accessor, tf_transform_output, batch_size: int,
                  image_size: Tuple[int, int], conditioning: str, seed: Optional[int]) -> tf.data.Dataset:
    """Transformed examples -> repeating ``{"image" [B,H,W,3] in [0,1], "mask" int32 [B,H,W] (the
    conditioning map), "label" int32 [B]}`` batches, augmented as the library's GAN input pipeline."""
    from tfx_bsl.public import tfxio

    from synthseg_tf.data.conditioning import with_conditioning_masks
    from synthseg_tf.data.tfdata import prepare

    ds = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle_seed=seed,
                                                    shuffle_buffer_size=1000),
        tf_transform_output.transformed_metadata.schema)
    ds = ds.unbatch().map(lambda f: {"image": tf.cast(f[IMAGE_XF], tf.float32),
                                     "label": tf.cast(tf.reshape(f[LABEL_XF], []), tf.int32)})
    ds = with_conditioning_masks(prepare(ds, image_size, augment=True, seed=seed), conditioning)
    ds = ds.map(lambda el: {"image": el["image"], "mask": tf.cast(el["mask"], tf.int32), "label": el["label"]})
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# =========================================================================== Trainer
def run_fn(fn_args) -> None:
    """TFX Trainer entry point of the classification ``GanTrainer`` (``fn_args: tfx.components.FnArgs``)."""
    from synthseg_tf.data.conditioning import conditioning_classes
    from synthseg_tf.data.layouts import load
    from synthseg_tf.experiments.classification import GAN_DEFAULTS

    s, checkpoint_every, serving = gan_settings(fn_args, DEFAULTS)
    size, num_classes, class_names = s.image_size, s.num_classes, s.class_names
    conditioning = str(s.cfg["conditioning"])
    table = conditioning_classes(conditioning)

    # 1. The training images, as a class-folder dataset the generation job reads: only the train split.
    images_dir = f"{serving}/{IMAGES_DIR}"
    spec, count = write_train_images(fn_args.train_files, fn_args.data_accessor, s.tf_transform_output, images_dir,
                                     class_names)
    source_ids = sorted(x.source_id for x in load(spec).samples)
    _log(f"{LOG_PREFIX}{count} training images (train split) written to {images_dir}")

    # 2. Train (resumable) in the ModelRun folder, with the classification experiment's GAN settings.
    options = {k: v for k, v in GAN_DEFAULTS.items() if k not in ("steps", "batch_size", "seed", "conditioning",
                                                                  "base_filters")}
    options = {**options, "checkpoint_iterator": False, **dict(s.cfg.get("gan_options") or {})}
    replicas, strategy, work, remote_logs = gan_runtime(fn_args, s)
    train = train_dataset(fn_args.train_files, fn_args.data_accessor, s.tf_transform_output, s.batch_size, size,
                          conditioning, s.seed)
    _log(f"{LOG_PREFIX}training a class-conditional pix2pix ({conditioning}, {num_classes} classes): {s.steps} steps, "
         f"batch {s.batch_size} on {replicas} replica(s), {size[0]}x{size[1]}, "
         f"base filters {int(s.cfg['base_filters'])}, run folder {work}, a progress line every {s.log_every} steps")
    train_logged(train, work, s, checkpoint_every, num_classes=table.num_classes, class_table=table,
                 num_labels=num_classes, replicas=replicas, strategy=strategy,
                 extra_config={"data": spec, "conditioning": conditioning, "label_names": class_names,
                               "train_source_ids": source_ids, "monitor_source_ids": [], "trained_by": "tfx",
                               "train_examples": count},
                 **options)

    # 3. The run folder SyntheticGeneration reads.
    export_run_folder(work, serving, remote_logs)
