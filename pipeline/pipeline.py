"""The TFX pipeline: real TFRecords (+ optional synthetic samples) -> Transform -> U-Net -> TFMA -> push.

::

    ImportExampleGen (synthseg TFRecord folder, hash split train:eval on source_id)
      ├─ StatisticsGen ─ SchemaGen ───────────────────────────────┐
      │                                                           │
      ├─ [Importer(generator) ─ SyntheticGeneration]  ── examples │ (real train + synthetic, real eval)
      │                                                   │       │
      │                                    Transform(preprocessing_fn) ─ Trainer(run_fn)
      │                                                                      │
      └───────────── Evaluator (TFMA on the *real* eval split) ──────────────┤  + Resolver(latest blessed)
                                                                             │
                                                                          Pusher (when blessed)

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
threshold is a value threshold on ``mean_iou`` (``min_mean_iou``) plus, once a blessed model
exists, a change threshold against it (``max_mean_iou_drop``). The evaluation always runs on the
real eval split of ImportExampleGen, never on synthetic samples. The model type is set to
``tf_generic`` (the export is a ``tf.Module`` with signatures, not a Keras SavedModel), which
also spares TFMA its trial ``keras.models.load_model``.

Synthetic data
--------------
With ``generator_dir`` the pipeline imports the generator as a ``Model`` artifact and adds
:class:`components.SyntheticGeneration` with ``real_examples`` wired in, so its single output
artifact holds real train + synthetic samples in ``Split-train`` and the real ``Split-eval``; that
artifact feeds Transform (and thus the Trainer). Statistics, schema and evaluation stay on the
real data. (TFX cannot union two ``Examples`` artifacts with different splits into Transform,
and unions do not compile for Vertex, hence the merged artifact.)
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.synthetic_generation import SyntheticGeneration

DEFAULT_MODULE = "pipeline.module_file"
INPUT_PATTERN = "*.tfrecord*"  # `synthseg data to-tfrecord` shards (plain or .gz); classes.json is skipped


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


def make_eval_config(num_classes: int, min_mean_iou: float, max_mean_iou_drop: Optional[float] = None
                     ) -> tfma.EvalConfig:
    """TFMA config: pixel accuracy + mean IoU (the library's Keras metrics) with a blessing threshold."""
    threshold = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": float(min_mean_iou)}))
    if max_mean_iou_drop is not None:
        threshold.change_threshold.CopyFrom(tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -float(max_mean_iou_drop)}))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_tf_example",
            preprocessing_function_names=["transform_features"],
            label_key="mask",
            prediction_key="probabilities",
            model_type="tf_generic")],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="PixelAccuracy", module="synthseg_tf.models.unet"),
            tfma.MetricConfig(class_name="MeanIoUIgnore", module="synthseg_tf.metrics.segmentation",
                              config=json.dumps({"num_classes": int(num_classes), "name": "mean_iou"}),
                              threshold=threshold),
        ])])


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
) -> tfx.dsl.Pipeline:
    """Build the pipeline (see the module docstring).

    ``data_root``: a TFRecord folder written by ``synthseg data to-tfrecord`` (or
    ``synthseg_tf.data.write_tfrecords``). ``module_file``: an importable module name (default
    ``pipeline.module_file``; nothing to package) or a path to a ``.py`` file (TFX packages it).
    ``metadata_path``: a SQLite ML Metadata file for local runs (``metadata_connection_config``
    overrides it; leave both unset for Vertex). ``generator_dir``: adds generation. ``until``:
    build only the components up to this node id (e.g. ``"Trainer"``: train without evaluating or
    pushing; later components are not even created, so nothing dangles). The remaining arguments
    size the data, model, training and blessing.
    """
    order = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "SyntheticGeneration", "Transform", "Trainer",
             "Evaluator", "Pusher"]
    if until is not None and until not in order:
        raise ValueError(f"until must be one of {order}, got {until!r}")
    if not serving_model_dir and until in (None, "Pusher"):
        raise ValueError("serving_model_dir is required (where Pusher copies blessed models)")
    h, w = (int(s) for s in image_size)
    if h % 32 or w % 32:
        raise ValueError(f"image_size must be multiples of 32 (U-Net), got {h}x{w}")
    names = resolve_class_names(data_root, class_names)
    custom_config = {"image_size": [h, w], "num_classes": len(names), "class_names": names, "backbone": backbone,
                     "batch_size": int(batch_size), "learning_rate": float(learning_rate), "seed": int(seed)}
    transform_code, trainer_code = _user_code(module_file)
    components = []

    def done(node_id: str) -> bool:
        return until is not None and order.index(node_id) >= order.index(until)

    def make(nodes) -> tfx.dsl.Pipeline:
        config = metadata_connection_config
        if config is None and metadata_path:
            config = tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
        return tfx.dsl.Pipeline(pipeline_name=pipeline_name, pipeline_root=pipeline_root, components=nodes,
                                enable_cache=enable_cache, metadata_connection_config=config,
                                beam_pipeline_args=list(beam_pipeline_args or []))

    example_gen = tfx.components.ImportExampleGen(
        input_base=data_root,
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="all", pattern=input_pattern)]),
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name="train", hash_buckets=int(train_buckets)),
            tfx.proto.SplitConfig.Split(name="eval", hash_buckets=int(eval_buckets)),
        ], partition_feature_name="source_id")))
    components.append(example_gen)
    if done("ImportExampleGen"):
        return make(components)

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    components.append(statistics_gen)
    if done("StatisticsGen"):
        return make(components)
    components.append(schema_gen)
    if done("SchemaGen"):
        return make(components)

    training_examples = example_gen.outputs["examples"]
    if generator_dir:
        generator = tfx.dsl.Importer(source_uri=generator_dir, artifact_type=tfx.types.standard_artifacts.Model
                                     ).with_id("generator_importer")
        components.append(generator)
        quality = None
        if quality_model_dir:
            quality = tfx.dsl.Importer(source_uri=quality_model_dir, artifact_type=tfx.types.standard_artifacts.Model
                                       ).with_id("quality_model_importer")
            components.append(quality)
        synthetic = SyntheticGeneration(
            generator=generator.outputs["result"], n=synthetic_n, real_examples=example_gen.outputs["examples"],
            quality_model=quality.outputs["result"] if quality is not None else None, seed=synthetic_seed,
            masks=synthetic_masks, class_balance=class_balance, min_quality=min_quality,
            beam_pipeline_args=generation_beam_args)
        components.append(synthetic)
        training_examples = synthetic.outputs["examples"]
    if done("SyntheticGeneration"):
        return make(components)

    transform = tfx.components.Transform(
        examples=training_examples, schema=schema_gen.outputs["schema"], custom_config=custom_config,
        **transform_code)
    components.append(transform)
    if done("Transform"):
        return make(components)

    trainer = tfx.components.Trainer(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=int(train_steps)),
        eval_args=tfx.proto.EvalArgs(num_steps=int(eval_steps)),
        custom_config=custom_config,
        **trainer_code)
    components.append(trainer)
    if done("Trainer"):
        return make(components)

    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    components.append(model_resolver)

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        eval_config=make_eval_config(len(names), min_mean_iou, max_mean_iou_drop))
    components.append(evaluator)
    if done("Evaluator"):
        return make(components)

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    components.append(pusher)
    return make(components)
