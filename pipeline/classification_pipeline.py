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
from .pipeline import (BASELINE, CANDIDATE, DATA_ROOT_PARAMETER, INPUT_PATTERN, SyntheticGeneration, _user_code,
                       resolve_class_names)

# Node ids in build order (``until`` takes any of those the configuration has).
NODE_ORDER = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "GanTrainer",
              "generator_importer", "BaselineTrainer", "quality_model_importer", "SyntheticGeneration", "Transform",
              "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"]
LABEL_KEY = "label"
METRIC_MODULE = DEFAULT_CLASSIFICATION_MODULE  # where TFMA finds MacroF1


def pipeline_nodes(generator_dir: Optional[str] = None, train_gan: bool = False,
                   quality_model_dir: Optional[str] = None, train_baseline: bool = True) -> List[str]:
    """The node ids :func:`create_classification_pipeline` builds for these settings, in build order."""
    synthetic = bool(generator_dir) or bool(train_gan)
    baseline = synthetic and train_baseline
    skip = set()
    if not (synthetic and (baseline or not generator_dir)):
        skip.add("RealTransform")
    if generator_dir or not synthetic:
        skip.add("GanTrainer")
    if not generator_dir:
        skip.add("generator_importer")
    if not (synthetic and quality_model_dir):
        skip.add("quality_model_importer")
    if not synthetic:
        skip.add("SyntheticGeneration")
    if not baseline:
        skip.add("BaselineTrainer")
    else:
        skip.add("latest_blessed_model_resolver")
    return [n for n in NODE_ORDER if n not in skip]


def make_eval_config(num_classes: int, min_macro_f1: float, max_macro_f1_drop: Optional[float] = None,
                     baseline: bool = False) -> tfma.EvalConfig:
    """TFMA config: accuracy + macro-F1 of the ``probabilities`` against the raw ``label`` feature, with a
    value threshold on ``macro_f1`` (``min_macro_f1``) and a change threshold against the baseline
    (``candidate - baseline >= -max_macro_f1_drop``). ``baseline``: name the two models ``candidate``
    and ``baseline`` (``is_baseline=True``), as :func:`pipeline.pipeline.make_eval_config` does."""
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": float(min_macro_f1)}))
    if max_macro_f1_drop is not None:
        threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -float(max_macro_f1_drop)}))

    def spec(**kw) -> tfma.ModelSpec:
        return tfma.ModelSpec(signature_name="serving_tf_example", label_key=LABEL_KEY,
                              prediction_key="probabilities", model_type="tf_generic", **kw)

    model_specs = [spec(name=CANDIDATE), spec(name=BASELINE, is_baseline=True)] if baseline else [spec()]
    return tfma.EvalConfig(
        model_specs=model_specs,
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="SparseCategoricalAccuracy", config=json.dumps({"name": "accuracy"})),
            tfma.MetricConfig(class_name="MacroF1", module=METRIC_MODULE,
                              config=json.dumps({"num_classes": int(num_classes), "name": "macro_f1"}),
                              threshold=threshold),
        ])])


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
    nodes = pipeline_nodes(generator_dir, train_gan, quality_model_dir, train_baseline)
    if until is not None and until not in nodes:
        raise ValueError(f"until must be one of {nodes}, got {until!r}")
    if not serving_model_dir and until in (None, "Pusher"):
        raise ValueError("serving_model_dir is required (where Pusher copies blessed models)")
    h, w = (int(s) for s in image_size)
    if h < 16 or w < 16 or h % 16 or w % 16:
        raise ValueError(f"image_size must be multiples of 16 (the classifier's 4 pooling blocks and the GAN), "
                         f"got {h}x{w}")
    if "GanTrainer" in nodes and (int(gan_steps) < 1 or int(gan_batch_size) < 1):
        raise ValueError(f"gan_steps and gan_batch_size must be >= 1, got {gan_steps} and {gan_batch_size}")
    if conditioning not in ("edges", "class"):
        raise ValueError(f"conditioning must be 'edges' or 'class', got {conditioning!r}")
    names = resolve_class_names(data_root, class_names)
    if len(names) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {len(names)} ({', '.join(names)})")
    custom_config = {"image_size": [h, w], "num_classes": len(names), "class_names": names,
                     "batch_size": int(batch_size), "learning_rate": float(learning_rate), "seed": int(seed),
                     "augment": bool(augment)}
    if classifier_options:
        custom_config["classifier"] = {k: (list(v) if isinstance(v, tuple) else v)
                                       for k, v in dict(classifier_options).items()}
    trainer_config = dict(custom_config)
    if log_every:
        trainer_config["log_every"] = int(log_every)
    transform_code, trainer_code = _user_code(module_file)
    components = []

    class _Done(Exception):
        pass

    def add(*new) -> None:
        components.extend(new)
        if until is not None and any(c.id == until for c in new):
            raise _Done

    def make(nodes) -> tfx.dsl.Pipeline:
        config = metadata_connection_config
        if config is None and metadata_path:
            config = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
        return tfx.dsl.Pipeline(pipeline_name=pipeline_name, pipeline_root=pipeline_root, components=nodes,
                                enable_cache=enable_cache, metadata_connection_config=config,
                                beam_pipeline_args=list(beam_pipeline_args or []))

    def transform_of(examples, node_id: str):
        # Transform's preprocessing_fn only needs the transform settings (no log_every etc.).
        return tfx.components.Transform(examples=examples, schema=schema_gen.outputs["schema"],
                                        custom_config={"image_size": [h, w]}, **transform_code).with_id(node_id)

    def classifier_trainer(transform, node_id: str):
        return tfx.components.Trainer(
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(num_steps=int(train_steps)),
            eval_args=tfx.proto.EvalArgs(num_steps=int(eval_steps)),
            custom_config=trainer_config if node_id == "Trainer" else {**trainer_config, "log_name": node_id},
            **trainer_code).with_id(node_id)

    input_base = data_root
    if runtime_parameters:
        input_base = tfx.dsl.experimental.RuntimeParameter(name=DATA_ROOT_PARAMETER, ptype=str, default=str(data_root))
    example_gen = tfx.components.ImportExampleGen(
        input_base=input_base,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="all", pattern=input_pattern)]),
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name="train", hash_buckets=int(train_buckets)),
            tfx.proto.SplitConfig.Split(name="eval", hash_buckets=int(eval_buckets)),
        ], partition_feature_name="source_id")))
    schema_gen = None
    try:
        add(example_gen)
        statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
        add(statistics_gen)
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                              infer_feature_shape=True)
        add(schema_gen)
        add(tfx.components.ExampleValidator(statistics=statistics_gen.outputs["statistics"],
                                            schema=schema_gen.outputs["schema"]))

        real_transform = None
        if "RealTransform" in nodes:
            real_transform = transform_of(example_gen.outputs["examples"], "RealTransform")
            add(real_transform)
        training_examples = example_gen.outputs["examples"]
        baseline_trainer = None
        if "SyntheticGeneration" in nodes:
            # ---- the class-conditional generator: GanTrainer (or an imported one)
            if generator_dir:
                generator = tfx.dsl.Importer(source_uri=generator_dir, artifact_type=tfx.types.standard_artifacts.Model
                                             ).with_id("generator_importer")
                add(generator)
                generator_channel = generator.outputs["result"]
            else:
                gan_config = {"image_size": [h, w], "num_classes": len(names), "class_names": names,
                              "batch_size": int(gan_batch_size), "base_filters": int(gan_base_filters),
                              "seed": int(seed), "conditioning": conditioning}
                if gan_log_every:
                    gan_config["log_every"] = int(gan_log_every)
                if gan_options:
                    gan_config["gan_options"] = dict(gan_options)
                gan_code = ({"module_file": gan_module} if str(gan_module).endswith(".py")
                            else {"run_fn": f"{gan_module}.run_fn"})
                gan_trainer = tfx.components.Trainer(
                    examples=real_transform.outputs["transformed_examples"],
                    transform_graph=real_transform.outputs["transform_graph"],
                    schema=schema_gen.outputs["schema"],
                    train_args=tfx.proto.TrainArgs(num_steps=int(gan_steps)),
                    eval_args=tfx.proto.EvalArgs(num_steps=0),
                    custom_config=gan_config, **gan_code).with_id("GanTrainer")
                add(gan_trainer)
                generator_channel = gan_trainer.outputs["model"]
            # ---- the real-only baseline classifier: the Evaluator's baseline and the confidence filter
            if "BaselineTrainer" in nodes:
                baseline_trainer = classifier_trainer(real_transform, "BaselineTrainer")
                add(baseline_trainer)
            quality = None
            if quality_model_dir:
                importer = tfx.dsl.Importer(source_uri=quality_model_dir,
                                            artifact_type=tfx.types.standard_artifacts.Model
                                            ).with_id("quality_model_importer")
                add(importer)
                quality = importer.outputs["result"]
            elif baseline_trainer is not None:
                quality = baseline_trainer.outputs["model"]
            synthetic = SyntheticGeneration(
                generator=generator_channel, n=synthetic_n, real_examples=example_gen.outputs["examples"],
                quality_model=quality if min_quality is not None else None, seed=synthetic_seed, masks="sample",
                labels=labels, min_quality=min_quality if quality is not None else None,
                beam_pipeline_args=generation_beam_args)
            add(synthetic)
            training_examples = synthetic.outputs["examples"]

        # ---- the candidate classifier (real + synthetic when there are synthetic samples)
        transform = transform_of(training_examples, "Transform")
        add(transform)
        trainer = classifier_trainer(transform, "Trainer")
        add(trainer)

        # ---- evaluation on the real eval split, against the baseline (or the latest blessed model)
        if baseline_trainer is not None:
            baseline_model = baseline_trainer.outputs["model"]
        else:
            model_resolver = tfx.dsl.Resolver(
                strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
                model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
                model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
            ).with_id("latest_blessed_model_resolver")
            add(model_resolver)
            baseline_model = model_resolver.outputs["model"]
        evaluator = tfx.components.Evaluator(
            examples=example_gen.outputs["examples"],
            model=trainer.outputs["model"],
            baseline_model=baseline_model,
            eval_config=make_eval_config(len(names), min_macro_f1, max_macro_f1_drop,
                                         baseline=baseline_trainer is not None))
        add(evaluator)

        pusher = tfx.components.Pusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
        add(pusher)
    except _Done:
        pass
    return make(components)


__all__ = ["create_classification_pipeline", "make_eval_config", "pipeline_nodes", "NODE_ORDER"]
