"""The classification TFX pipeline (``--task classification``): class-folder TFRecords -> class-conditional
GAN -> synthetic images of the rare classes -> CNN classifiers -> TFMA (macro-F1, accuracy) -> push.

::

    ImportExampleGen (synthseg TFRecord folder of class-folder data, hash split train:eval on source_id)
      ├─ StatisticsGen ─ SchemaGen ─ ExampleValidator (anomalies)
      ├─ RealTransform (real train/eval: decoded, resized images + class ids)
      │    ├─ GanTrainer (class-conditional pix2pix on the train split)      [or Importer(generator_dir)]
      │    ├─ BaselineTrainer (CNN, real only) ──────────────────────────────────── baseline_model ─┐
      │    │    └─ (confidence filter)                                                             │
      │    └─ SyntheticGeneration (labels="rare", min_quality; real train + synthetic, real eval)   │
      │         └─ Transform ─ Trainer (CNN, candidate) ──────────────────────────────────── model ─┤
      └─ (real eval split) ──────────────────────────────────────────────────────────── Evaluator (TFMA)
                                                                                          └─ Pusher (when blessed)

The same structure as the segmentation pipeline (:mod:`pipeline.pipeline`), with the library's
classification side:

- Transform/Trainer user module :mod:`pipeline.classification_module_file` (the library's CNN classifier
  and its training recipe, ``CLASSIFIER_DEFAULTS``; a library classifier export with a
  ``serving_tf_example`` signature);
- ``GanTrainer`` user module :mod:`pipeline.classification_gan_module_file` (``train_gan`` with the
  classification experiment's settings: edge-map + class conditioning, class FiLM);
- ``SyntheticGeneration`` with ``labels="rare"`` (classes drawn with probability proportional to
  ``1 / count`` in the generator's training split) and, as in the experiment, a confidence filter: a
  sample is kept when a classifier trained on the real training split gives its intended class at
  least ``min_quality``. That classifier is the ``BaselineTrainer``'s model (or ``quality_model_dir``,
  imported); without either the filter is off.
- Evaluator: both models on the real eval split with ``accuracy``
  (``tf.keras.metrics.SparseCategoricalAccuracy``) and ``macro_f1``
  (:class:`pipeline.classification_module_file.MacroF1`, arg-max, the library's macro-F1); the
  candidate is blessed when its ``macro_f1`` reaches ``min_macro_f1`` and is not below the
  baseline's by more than ``max_macro_f1_drop``.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from .configs import DEFAULT_CLASSIFICATION_GAN_MODULE, DEFAULT_CLASSIFICATION_MODULE
from .pipeline import (INPUT_PATTERN, blessing_threshold, build_pipeline, check_gan, check_nodes, eval_config_of,
                       resolve_class_names, select_nodes)

# Node ids in build order (``until`` takes any of those the configuration has).
NODE_ORDER = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "GanTrainer",
              "generator_importer", "BaselineTrainer", "quality_model_importer", "SyntheticGeneration", "Transform",
              "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"]
LABEL_KEY = "label"
METRIC_MODULE = DEFAULT_CLASSIFICATION_MODULE  # where TFMA finds MacroF1


def pipeline_nodes(generator_dir: Optional[str] = None, train_gan: bool = False,
                   quality_model_dir: Optional[str] = None, train_baseline: bool = True) -> List[str]:
    """The node ids :func:`create_classification_pipeline` builds for these settings, in build order."""
    return select_nodes(NODE_ORDER, generator_dir, train_gan, quality_model_dir, train_baseline)


def make_eval_config(num_classes: int, min_macro_f1: float, max_macro_f1_drop: Optional[float] = None,
                     baseline: bool = False) -> tfma.EvalConfig:
    """TFMA config: accuracy + macro-F1 of the ``probabilities`` against the raw ``label`` feature, with a
    value threshold on ``macro_f1`` (``min_macro_f1``) and a change threshold against the baseline
    (``candidate - baseline >= -max_macro_f1_drop``). ``baseline``: name the two models ``candidate``
    and ``baseline`` (``is_baseline=True``), as :func:`pipeline.pipeline.make_eval_config` does."""
    return eval_config_of({"label_key": LABEL_KEY}, baseline, [
        tfma.MetricConfig(class_name="SparseCategoricalAccuracy", config=json.dumps({"name": "accuracy"})),
        tfma.MetricConfig(class_name="MacroF1", module=METRIC_MODULE,
                          config=json.dumps({"num_classes": int(num_classes), "name": "macro_f1"}),
                          threshold=blessing_threshold(min_macro_f1, max_macro_f1_drop)),
    ])


def create_classification_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    module_file: str = DEFAULT_CLASSIFICATION_MODULE,
    serving_model_dir: str = "",
    generator_dir: Optional[str] = None,
    metadata_path: Optional[str] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    train_steps: int = 1000,
    eval_steps: int = 20,
    image_size: Sequence[int] = (64, 64),
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    class_names: Optional[Sequence[str]] = None,
    train_buckets: int = 4,
    eval_buckets: int = 1,
    min_macro_f1: float = 0.0,
    max_macro_f1_drop: Optional[float] = 0.01,
    synthetic_n: int = 1000,
    synthetic_seed: int = 0,
    labels: str = "rare",
    min_quality: Optional[float] = 0.5,
    quality_model_dir: Optional[str] = None,
    generation_beam_args: Optional[List[str]] = None,
    enable_cache: bool = False,
    metadata_connection_config: Any = None,
    input_pattern: str = INPUT_PATTERN,
    until: Optional[str] = None,
    log_every: Optional[int] = None,
    runtime_parameters: bool = False,
    train_gan: bool = False,
    gan_steps: int = 1500,
    gan_batch_size: int = 16,
    gan_base_filters: int = 32,
    gan_log_every: Optional[int] = None,
    gan_options: Optional[Dict[str, Any]] = None,
    gan_module: str = DEFAULT_CLASSIFICATION_GAN_MODULE,
    conditioning: str = "edges",
    train_baseline: bool = True,
    classifier_options: Optional[Dict[str, Any]] = None,
    augment: bool = True,
) -> tfx.dsl.Pipeline:
    """Build the classification pipeline (see the module docstring).

    ``data_root``: a TFRecord folder of class-folder data written by ``synthseg data to-tfrecord``
    (``classfolders:DIR`` or ``demo-classes``). ``train_gan`` adds the ``GanTrainer`` (``gan_steps``
    steps, batch ``gan_batch_size``, ``gan_base_filters``, ``conditioning`` ``edges`` or ``class``,
    ``gan_options`` more :func:`train_gan` keywords); ``generator_dir`` imports a class-conditional
    generator instead. ``SyntheticGeneration`` then renders ``synthetic_n`` images, classes drawn by
    ``labels`` (``rare``), kept when the quality classifier gives them ``min_quality`` (``None``: no
    filter). ``classifier_options``: :func:`build_classifier`/:func:`compile_classifier` settings over
    the library's ``CLASSIFIER_DEFAULTS``. The remaining arguments are those of
    :func:`pipeline.pipeline.create_pipeline`.
    """
    args = dict(locals())  # the arguments (before any other local name), for build_pipeline
    nodes = pipeline_nodes(generator_dir, train_gan, quality_model_dir, train_baseline)
    check_nodes(nodes, until, serving_model_dir)
    h, w = (int(s) for s in image_size)
    if h < 16 or w < 16 or h % 16 or w % 16:
        raise ValueError(f"image_size must be multiples of 16 (the classifier's 4 pooling blocks and the GAN), "
                         f"got {h}x{w}")
    check_gan(nodes, gan_steps, gan_batch_size)
    from synthseg_tf.data.conditioning import EDGE_CONDITIONINGS

    if conditioning not in EDGE_CONDITIONINGS + ("class",):
        raise ValueError(f"conditioning must be one of {EDGE_CONDITIONINGS + ('class',)}, got {conditioning!r}")
    names = resolve_class_names(data_root, class_names)
    if len(names) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {len(names)} ({', '.join(names)})")
    custom_config = {"image_size": [h, w], "num_classes": len(names), "class_names": names,
                     "batch_size": int(batch_size), "learning_rate": float(learning_rate), "seed": int(seed),
                     "augment": bool(augment)}
    if classifier_options:
        custom_config["classifier"] = {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in dict(classifier_options).items()}
    # Transform's preprocessing_fn only needs the transform settings (no log_every etc.).
    return build_pipeline(
        args, nodes, names, (h, w), custom_config=custom_config, transform_config={"image_size": [h, w]},
        gan_extra={"conditioning": conditioning}, baseline_as_quality=True,
        generation=lambda quality: {"quality_model": quality if min_quality is not None else None, "masks": "sample",
                                    "labels": labels, "min_quality": min_quality if quality is not None else None},
        eval_config=lambda baseline: make_eval_config(len(names), min_macro_f1, max_macro_f1_drop,
                                                      baseline=baseline))

__all__ = ["create_classification_pipeline", "make_eval_config", "pipeline_nodes", "NODE_ORDER"]
