"""The TFX pipeline: real TFRecords -> [GAN -> synthetic samples] -> Transform -> U-Nets -> TFMA -> push.

This module builds the segmentation pipeline; :func:`builder` picks a task's factory, and
``task="classification"`` (class-folder data) is :mod:`pipeline.classification_pipeline`: the same
structure with a class-conditional GAN, synthetic images of the rare classes and CNN classifiers.

::

    ImportExampleGen (synthseg TFRecord folder, hash split train:eval on source_id)
      ├─ StatisticsGen ─ SchemaGen ─ ExampleValidator (anomalies)
      ├─ RealTransform (real train/eval)
      │    ├─ GanTrainer (pix2pix on the train split)        [or Importer(generator_dir)]
      │    │    └─ SyntheticGeneration (real train + synthetic, real eval)
      │    │         └─ Transform ─ Trainer (U-Net, candidate) ────────────── model ─┐
      │    └─ BaselineTrainer (U-Net, real only) ────────────────────── baseline_model ─┤
      └─ (real eval split) ─────────────────────────────────────────────────── Evaluator (TFMA)
                                                                                      └─ Pusher (when blessed)

Without synthetic data (``train_gan=False`` and no ``generator_dir``) the pipeline is
ImportExampleGen ... Transform -> Trainer -> Evaluator (against the latest blessed model, a
``Resolver``) -> Pusher.

Data validation
---------------
``ExampleValidator`` checks the statistics of every split against the inferred schema and writes
the anomalies (missing or unexpected features, wrong types, out-of-domain values) as an
``ExampleAnomalies`` artifact; it records them, it does not stop the run.

Evaluation choice
-----------------
The standard ``Evaluator`` (TFMA 0.46) is used, not a custom component. TFMA's Keras-metric
wrapper hands a metric the stacked labels and predictions of a batch *without flattening*
(unless micro-averaging is asked for), so per-pixel outputs work: the label is the
``mask`` feature produced by the model's ``transform_features`` signature
(``ModelSpec.preprocessing_function_names``), the prediction is the ``probabilities`` output
of the ``serving_tf_example`` signature (``[H, W, K]`` per example), and the metrics are the
library's own Keras metrics, loaded by TFMA from their modules:
``synthseg_tf.models.unet.PixelAccuracy`` and ``synthseg_tf.metrics.segmentation.MeanIoUIgnore``
(void pixels skipped, the same numbers the Trainer's compiled metrics report). The blessing
threshold is a value threshold on ``mean_iou`` (``min_mean_iou``) plus a change threshold against
the baseline (``max_mean_iou_drop``): the ``BaselineTrainer``'s model with synthetic data, else
the latest blessed model once one exists. The evaluation always runs on the
real eval split of ImportExampleGen, never on synthetic samples. The model type is set to
``tf_generic`` (the export is a ``tf.Module`` with signatures, not a Keras SavedModel), which
also spares TFMA its trial ``keras.models.load_model``.

Synthetic data
--------------
``train_gan`` adds the ``GanTrainer``: a generic TFX ``Trainer`` whose ``run_fn``
(:mod:`pipeline.gan_module_file`) trains the library's pix2pix (``train_gan``) on
``RealTransform``'s train split and writes a ``synthseg gan train`` run folder whose ``config.json``
records the training label maps (written next to it as a ``pairs:`` dataset) as ``data`` and
``train_source_ids``, so :class:`components.SyntheticGeneration` (``masks="sample"``) samples new
maps from the training split only. ``generator_dir`` instead imports a generator trained elsewhere
(an ``Importer``). Either way ``SyntheticGeneration`` gets ``real_examples`` wired in, so its single
output artifact holds real train + synthetic samples in ``Split-train`` and the real ``Split-eval``;
that artifact feeds ``Transform`` and the candidate ``Trainer``. Statistics, schema and evaluation
stay on the real data. (TFX cannot union two ``Examples`` artifacts with different splits into
Transform, and unions do not compile for Vertex, hence the merged artifact and the second
Transform.)

Baseline
--------
With synthetic data, ``BaselineTrainer`` trains the same U-Net (same settings and steps) on
``RealTransform``'s real examples only, and is the Evaluator's ``baseline_model``: the EvalConfig
names two models, ``candidate`` and ``baseline`` (``is_baseline=True``), and the candidate is
blessed when its ``mean_iou`` reaches ``min_mean_iou`` and is not below the baseline's by more than
``max_mean_iou_drop`` (``GenericChangeThreshold(absolute=-max_mean_iou_drop, HIGHER_IS_BETTER)``).
Only the candidate is pushed. ``train_baseline=False`` falls back to the latest blessed model.
"""
from __future__ import annotations

import importlib
import json
import os
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from . import configs
from .configs import DEFAULT_GAN_MODULE, DEFAULT_MODULE  # "synthseg_tf_tfx.pipeline.module_file", ...gan_module_file

# By its installed name (synthseg_tf_tfx.components...): TFX records the executor's class path in
# the pipeline IR, and each component's process or container imports it again from there.
SyntheticGeneration = importlib.import_module(configs.COMPONENTS_PACKAGE + ".synthetic_generation").SyntheticGeneration
DATA_ROOT_PARAMETER = "data_root"  # the runtime parameter of ImportExampleGen's input_base (runtime_parameters=True)
INPUT_PATTERN = "*.tfrecord*"  # `synthseg data to-tfrecord` shards (plain or .gz); classes.json is skipped
CANDIDATE, BASELINE = "candidate", "baseline"  # TFMA model names (tfma.CANDIDATE_KEY / tfma.BASELINE_KEY)


TASKS = ("segmentation", "classification")


def builder(task: str = "segmentation"):
    """The pipeline factory of a task: :func:`create_pipeline` (segmentation) or
    :func:`pipeline.classification_pipeline.create_classification_pipeline`; both take the same first
    arguments (``pipeline_name``, ``pipeline_root``, ``data_root``, ``serving_model_dir``, ...)."""
    if task == "segmentation":
        return create_pipeline
    if task == "classification":
        from .classification_pipeline import create_classification_pipeline

        return create_classification_pipeline
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def nodes_of(task: str = "segmentation", **settings) -> List[str]:
    """:func:`pipeline_nodes` of a task (settings: ``generator_dir``, ``train_gan``, ``quality_model_dir``,
    ``train_baseline``)."""
    if task == "classification":
        from .classification_pipeline import pipeline_nodes as classification_nodes

        return classification_nodes(**settings)
    return pipeline_nodes(**settings)


def _has_scheme(path: str) -> bool:
    return "://" in str(path)


def resolve_class_names(data_root: str, class_names: Optional[Sequence[str]] = None) -> List[str]:
    """``class_names`` if given, else the ``classes.json`` that ``synthseg data to-tfrecord`` wrote.

    Only a local ``data_root`` is read (compiling for Vertex must work offline): pass
    ``class_names`` for a ``gs://`` data root.
    """
    if class_names:
        return [str(c) for c in class_names]
    path = os.path.join(str(data_root), "classes.json")
    if not _has_scheme(data_root) and os.path.isfile(path):
        from synthseg_tf.data.classes import ClassTable

        return ClassTable.load(path).names
    raise ValueError(f"no class names: {path} is not a readable local file; pass class_names "
                     "(or set SYNTHSEG_TFX_CLASS_NAMES=a,b,c)")


def _user_code(module_file: str) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Transform and Trainer arguments for a module *file* (``.py``) or an importable module name."""
    if str(module_file).endswith(".py"):
        return {"module_file": module_file}, {"module_file": module_file}
    return ({"preprocessing_fn": f"{module_file}.preprocessing_fn"}, {"run_fn": f"{module_file}.run_fn"})


def make_eval_config(num_classes: int, min_mean_iou: float, max_mean_iou_drop: Optional[float] = None,
                     baseline: bool = False) -> tfma.EvalConfig:
    """TFMA config: pixel accuracy + mean IoU (the library's Keras metrics) with a blessing threshold.

    ``min_mean_iou``: a value threshold on the candidate's ``mean_iou``. ``max_mean_iou_drop``: a
    change threshold, ``candidate - baseline >= -max_mean_iou_drop`` (``HIGHER_IS_BETTER``); it
    applies when the Evaluator gets a ``baseline_model`` (TFX drops it otherwise: the first run is
    rubber-stamped). ``baseline``: spell out the two models, ``candidate`` and ``baseline``
    (``is_baseline=True``), for an Evaluator whose baseline is always there (the real-only
    ``BaselineTrainer``); without it TFX derives the baseline spec from the single one when a
    baseline model (the latest blessed one) exists.
    """
    return eval_config_of(
        {"preprocessing_function_names": ["transform_features"], "label_key": "mask"}, baseline, [
            tfma.MetricConfig(class_name="PixelAccuracy", module="synthseg_tf.models.unet"),
            tfma.MetricConfig(class_name="MeanIoUIgnore", module="synthseg_tf.metrics.segmentation",
                              config=json.dumps({"num_classes": int(num_classes), "name": "mean_iou"}),
                              threshold=blessing_threshold(min_mean_iou, max_mean_iou_drop)),
        ])


def blessing_threshold(minimum: float, max_drop: Optional[float] = None) -> tfma.MetricThreshold:
    """A value threshold (``>= minimum``) and, unless ``max_drop`` is ``None``, a change threshold
    (``candidate - baseline >= -max_drop``, ``HIGHER_IS_BETTER``) on a metric."""
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": float(minimum)}))
    if max_drop is not None:
        threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -float(max_drop)}))
    return threshold


def eval_config_of(model_spec: Dict[str, Any], baseline: bool, metrics: List[tfma.MetricConfig]) -> tfma.EvalConfig:
    """An EvalConfig over the ``probabilities`` of the ``serving_tf_example`` signature (``tf_generic``
    model; ``model_spec``: the task's label and preprocessing fields), one overall slice and ``metrics``.
    ``baseline``: two model specs, ``candidate`` and ``baseline`` (``is_baseline=True``), else one."""
    def spec(**kw) -> tfma.ModelSpec:
        return tfma.ModelSpec(signature_name="serving_tf_example", prediction_key="probabilities",
                              model_type="tf_generic", **model_spec, **kw)

    model_specs = [spec(name=CANDIDATE), spec(name=BASELINE, is_baseline=True)] if baseline else [spec()]
    return tfma.EvalConfig(model_specs=model_specs, slicing_specs=[tfma.SlicingSpec()],
                           metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


# Node ids in build order (``until`` takes any of those the configuration has).
NODE_ORDER = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "GanTrainer",
              "generator_importer", "quality_model_importer", "SyntheticGeneration", "Transform", "BaselineTrainer",
              "Trainer", "latest_blessed_model_resolver", "Evaluator", "Pusher"]


def pipeline_nodes(generator_dir: Optional[str] = None, train_gan: bool = False,
                   quality_model_dir: Optional[str] = None, train_baseline: bool = True) -> List[str]:
    """The node ids :func:`create_pipeline` builds for these settings, in build order."""
    return select_nodes(NODE_ORDER, generator_dir, train_gan, quality_model_dir, train_baseline)


def select_nodes(order: Sequence[str], generator_dir: Optional[str] = None, train_gan: bool = False,
                 quality_model_dir: Optional[str] = None, train_baseline: bool = True) -> List[str]:
    """The node ids of ``order`` (a task's ``NODE_ORDER``) that these settings build."""
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
    return [n for n in order if n not in skip]


def check_nodes(nodes: List[str], until: Optional[str], serving_model_dir: str) -> None:
    """``until`` must be one of ``nodes``; a pipeline that reaches the Pusher needs ``serving_model_dir``."""
    if until is not None and until not in nodes:
        raise ValueError(f"until must be one of {nodes}, got {until!r}")
    if not serving_model_dir and until in (None, "Pusher"):
        raise ValueError("serving_model_dir is required (where Pusher copies blessed models)")


def check_gan(nodes: List[str], gan_steps: int, gan_batch_size: int) -> None:
    if "GanTrainer" in nodes and (int(gan_steps) < 1 or int(gan_batch_size) < 1):
        raise ValueError(f"gan_steps and gan_batch_size must be >= 1, got {gan_steps} and {gan_batch_size}")


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    module_file: str = DEFAULT_MODULE,
    serving_model_dir: str = "",
    generator_dir: Optional[str] = None,
    metadata_path: Optional[str] = None,
    beam_pipeline_args: Optional[List[str]] = None,
    train_steps: int = 1000,
    eval_steps: int = 20,
    image_size: Sequence[int] = (128, 128),
    batch_size: int = 8,
    backbone: str = "resnet34",
    learning_rate: float = 1e-3,
    seed: int = 0,
    class_names: Optional[Sequence[str]] = None,
    train_buckets: int = 4,
    eval_buckets: int = 1,
    min_mean_iou: float = 0.3,
    max_mean_iou_drop: Optional[float] = 0.01,
    synthetic_n: int = 1000,
    synthetic_seed: int = 0,
    synthetic_masks: str = "sample",
    class_balance: Optional[str] = "rare",
    min_quality: Optional[float] = None,
    quality_model_dir: Optional[str] = None,
    generation_beam_args: Optional[List[str]] = None,
    enable_cache: bool = False,
    metadata_connection_config: Any = None,
    input_pattern: str = INPUT_PATTERN,
    until: Optional[str] = None,
    log_every: Optional[int] = None,
    runtime_parameters: bool = False,
    train_gan: bool = False,
    gan_steps: int = 2000,
    gan_batch_size: int = 4,
    gan_base_filters: int = 64,
    gan_log_every: Optional[int] = None,
    gan_options: Optional[Dict[str, Any]] = None,
    gan_module: str = DEFAULT_GAN_MODULE,
    train_baseline: bool = True,
) -> tfx.dsl.Pipeline:
    """Build the pipeline (see the module docstring).

    ``data_root``: a TFRecord folder written by ``synthseg data to-tfrecord`` (or
    ``synthseg_tf.data.write_tfrecords``). ``module_file``: an importable module name (default
    ``synthseg_tf_tfx.pipeline.module_file``, installed with the package; nothing to package) or a
    path to a ``.py`` file (TFX packages it).
    ``metadata_path``: a SQLite ML Metadata file for local runs (``metadata_connection_config``
    overrides it; leave both unset for Vertex).

    Synthetic data: ``generator_dir`` imports a generator trained elsewhere (a ``synthseg gan
    train`` run folder or generator export); otherwise ``train_gan`` adds the ``GanTrainer``
    (``gan_module``'s ``run_fn``: ``gan_steps`` steps, batch ``gan_batch_size``, ``gan_base_filters``,
    a progress line every ``gan_log_every`` steps, ``gan_options`` more :func:`train_gan` keywords) on
    the real training split. Either way ``SyntheticGeneration`` renders ``synthetic_n`` samples, the
    candidate ``Trainer`` trains on real + synthetic and, with ``train_baseline``, the
    ``BaselineTrainer`` trains the same U-Net on the real data only; the Evaluator then compares the
    candidate with it (``max_mean_iou_drop``: the tolerated mean IoU drop). Without a baseline the
    candidate is compared with the latest blessed model, as without synthetic data.

    ``until``: build only the components up to this node id (e.g. ``"Trainer"``: train without
    evaluating or pushing; later components are not even created, so nothing dangles); it must be a
    node of this configuration (:func:`pipeline_nodes`). ``log_every``: the Trainers log a progress
    line every this many steps (default: about 20 lines per run).
    ``runtime_parameters``: make ``data_root`` a runtime parameter named ``data_root`` (its value
    here is the default), settable per run on Vertex AI Pipelines; orchestrators that lack
    runtime parameters (LocalDagRunner) need it off. The remaining arguments size the data,
    model, training and blessing.
    """
    args = dict(locals())  # the arguments (before any other local name), for build_pipeline
    nodes = pipeline_nodes(generator_dir, train_gan, quality_model_dir, train_baseline)
    check_nodes(nodes, until, serving_model_dir)
    h, w = (int(s) for s in image_size)
    if h % 32 or w % 32:
        raise ValueError(f"image_size must be multiples of 32 (U-Net), got {h}x{w}")
    check_gan(nodes, gan_steps, gan_batch_size)
    names = resolve_class_names(data_root, class_names)
    custom_config = {"image_size": [h, w], "num_classes": len(names), "class_names": names, "backbone": backbone,
                     "batch_size": int(batch_size), "learning_rate": float(learning_rate), "seed": int(seed)}
    return build_pipeline(
        args, nodes, names, (h, w), custom_config=custom_config, transform_config=custom_config,
        generation=lambda quality: {"quality_model": quality, "masks": synthetic_masks, "class_balance": class_balance,
                                    "min_quality": min_quality},
        eval_config=lambda baseline: make_eval_config(len(names), min_mean_iou, max_mean_iou_drop, baseline=baseline))


def build_pipeline(args: Dict[str, Any], nodes: List[str], names: List[str], size: Tuple[int, int],
                   custom_config: Dict[str, Any], transform_config: Dict[str, Any],
                   generation: Callable[[Any], Dict[str, Any]], eval_config: Callable[[bool], tfma.EvalConfig],
                   gan_extra: Optional[Dict[str, Any]] = None, baseline_as_quality: bool = False) -> tfx.dsl.Pipeline:
    """The node chain both tasks share (see the module docstring), for a task's factory.

    ``args``: the factory's arguments (:func:`create_pipeline`'s names; the task's own ones are not read
    here). ``nodes``: its :func:`select_nodes`; ``names`` the class names, ``size`` ``(H, W)``.
    ``custom_config``: the Trainers' ``custom_config`` (plus ``log_every``, and ``log_name`` for the
    ``BaselineTrainer``); ``transform_config``: the Transforms'. ``gan_extra``: more ``GanTrainer``
    settings. ``generation(quality)``: the task's ``SyntheticGeneration`` arguments for the quality model
    channel (or ``None``). ``eval_config(baseline)``: the Evaluator's config. ``baseline_as_quality``: build
    the ``BaselineTrainer`` before ``SyntheticGeneration`` and, without ``quality_model_dir``, use its model
    as the quality model (classification); otherwise it follows the candidate's ``Transform``.
    """
    a = SimpleNamespace(**args)
    h, w = size
    until = a.until
    trainer_config = dict(custom_config)
    if a.log_every:
        trainer_config["log_every"] = int(a.log_every)
    transform_code, trainer_code = _user_code(a.module_file)
    components = []

    class _Done(Exception):
        pass

    def add(*new) -> None:
        """Append components; stop building once ``until`` is among them."""
        components.extend(new)
        if until is not None and any(c.id == until for c in new):
            raise _Done

    def make(nodes) -> tfx.dsl.Pipeline:
        config = a.metadata_connection_config
        if config is None and a.metadata_path:
            config = tfx.orchestration.metadata.sqlite_metadata_connection_config(a.metadata_path)
        return tfx.dsl.Pipeline(pipeline_name=a.pipeline_name, pipeline_root=a.pipeline_root, components=nodes,
                                enable_cache=a.enable_cache, metadata_connection_config=config,
                                beam_pipeline_args=list(a.beam_pipeline_args or []))

    def transform_of(examples, node_id: str):
        return tfx.components.Transform(examples=examples, schema=schema_gen.outputs["schema"],
                                        custom_config=transform_config, **transform_code).with_id(node_id)

    def model_trainer(transform, node_id: str):
        return tfx.components.Trainer(
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(num_steps=int(a.train_steps)),
            eval_args=tfx.proto.EvalArgs(num_steps=int(a.eval_steps)),
            custom_config=trainer_config if node_id == "Trainer" else {**trainer_config, "log_name": node_id},
            **trainer_code).with_id(node_id)

    def imported_model(uri: str, node_id: str):
        """Add an Importer of the Model at ``uri``; returns its channel."""
        importer = tfx.dsl.Importer(source_uri=uri, artifact_type=tfx.types.standard_artifacts.Model).with_id(node_id)
        add(importer)
        return importer.outputs["result"]

    input_base = a.data_root
    if a.runtime_parameters:
        input_base = tfx.dsl.experimental.RuntimeParameter(name=DATA_ROOT_PARAMETER, ptype=str,
                                                           default=str(a.data_root))
    example_gen = tfx.components.ImportExampleGen(
        input_base=input_base,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="all", pattern=a.input_pattern)]),
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name="train", hash_buckets=int(a.train_buckets)),
            tfx.proto.SplitConfig.Split(name="eval", hash_buckets=int(a.eval_buckets)),
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

        # ---- synthetic data: GanTrainer (or an imported generator) -> SyntheticGeneration
        real_transform = None
        if "RealTransform" in nodes:
            real_transform = transform_of(example_gen.outputs["examples"], "RealTransform")
            add(real_transform)
        training_examples = example_gen.outputs["examples"]
        baseline_trainer = None
        if "SyntheticGeneration" in nodes:
            if a.generator_dir:
                generator_channel = imported_model(a.generator_dir, "generator_importer")
            else:
                gan_config = {"image_size": [h, w], "num_classes": len(names), "class_names": names,
                              "batch_size": int(a.gan_batch_size), "base_filters": int(a.gan_base_filters),
                              "seed": int(a.seed), **dict(gan_extra or {})}
                if a.gan_log_every:
                    gan_config["log_every"] = int(a.gan_log_every)
                if a.gan_options:
                    gan_config["gan_options"] = dict(a.gan_options)
                gan_code = ({"module_file": a.gan_module} if str(a.gan_module).endswith(".py")
                            else {"run_fn": f"{a.gan_module}.run_fn"})
                gan_trainer = tfx.components.Trainer(
                    examples=real_transform.outputs["transformed_examples"],
                    transform_graph=real_transform.outputs["transform_graph"],
                    schema=schema_gen.outputs["schema"],
                    train_args=tfx.proto.TrainArgs(num_steps=int(a.gan_steps)),
                    eval_args=tfx.proto.EvalArgs(num_steps=0),
                    custom_config=gan_config, **gan_code).with_id("GanTrainer")
                add(gan_trainer)
                generator_channel = gan_trainer.outputs["model"]
            if baseline_as_quality and "BaselineTrainer" in nodes:
                # the real-only baseline: the Evaluator's baseline and the confidence filter
                baseline_trainer = model_trainer(real_transform, "BaselineTrainer")
                add(baseline_trainer)
            quality = None
            if a.quality_model_dir:
                quality = imported_model(a.quality_model_dir, "quality_model_importer")
            elif baseline_trainer is not None:
                quality = baseline_trainer.outputs["model"]
            synthetic = SyntheticGeneration(
                generator=generator_channel, n=a.synthetic_n, real_examples=example_gen.outputs["examples"],
                seed=a.synthetic_seed, beam_pipeline_args=a.generation_beam_args, **generation(quality))
            add(synthetic)
            training_examples = synthetic.outputs["examples"]

        # ---- the candidate model (real + synthetic when there are synthetic samples) and the baseline
        transform = transform_of(training_examples, "Transform")
        add(transform)
        if "BaselineTrainer" in nodes and baseline_trainer is None:
            baseline_trainer = model_trainer(real_transform, "BaselineTrainer")
            add(baseline_trainer)
        trainer = model_trainer(transform, "Trainer")
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
            eval_config=eval_config(baseline_trainer is not None))
        add(evaluator)

        pusher = tfx.components.Pusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=a.serving_model_dir)))
        add(pusher)
    except _Done:
        pass
    return make(components)
