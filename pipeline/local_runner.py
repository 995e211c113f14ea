"""Run the pipeline on this machine: ``LocalDagRunner`` + an embedded SQLite ML Metadata store.

::

    # the same as `synthseg pipeline run --data SPEC --out DIR --preset demo|small|full`

    # convert a dataset spec to TFRecords first (skipped when --data-root already exists), then run
    python -m pipeline.local_runner --dataset "demo-scenes?n=200&size=128" --data-root runs/tfx/data \\
        --output-root runs/tfx --train-steps 200 --image-size 128x128

    # a TFRecord folder from `synthseg data to-tfrecord`; the GAN is trained in the pipeline
    # (GanTrainer, --gan-steps) unless --no-train-gan, or imported from a GAN run with --generator
    python -m pipeline.local_runner --data-root out/camvid_tfr --output-root runs/tfx \\
        --generator runs/gan --synthetic-n 500

Layout under ``--output-root``::

    pipeline_root/<name>/...        artifacts of every component (ExampleGen, Transform, Trainer, ...)
    metadata/<name>/metadata.db     ML Metadata (SQLite): executions, artifacts, lineage
    serving_model/<name>/<version>/ the SavedModel pushed when the Evaluator blessed it

Defaults come from :mod:`pipeline.configs` (``SYNTHSEG_TFX_*`` environment variables). Installed,
the module is ``synthseg_tf_tfx.pipeline.local_runner`` (``python -m synthseg_tf_tfx.pipeline.local_runner``).
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
from typing import Any, Dict, Optional, Sequence

from . import configs


def paths(output_root: str, pipeline_name: str = configs.PIPELINE_NAME) -> Dict[str, str]:
    """Where a local run puts its pipeline root, metadata store and pushed models."""
    root = os.path.abspath(output_root)
    return {
        "pipeline_root": os.path.join(root, "pipeline_root", pipeline_name),
        "metadata_path": os.path.join(root, "metadata", pipeline_name, "metadata.db"),
        "serving_model_dir": os.path.join(root, "serving_model", pipeline_name),
    }


def prepare_data(data_root: str, dataset_spec: Optional[str] = None, shards: int = 4) -> str:
    """Convert ``dataset_spec`` to a TFRecord folder at ``data_root`` unless one is already there."""
    if os.path.isdir(data_root) and os.listdir(data_root):
        return data_root
    if not dataset_spec:
        raise FileNotFoundError(f"{data_root} does not exist; pass --dataset SPEC to create it from a dataset")
    from synthseg_tf.data import load, write_tfrecords

    meta = write_tfrecords(load(dataset_spec), data_root, shards=shards)
    logging.info("wrote %d examples of %s to %s", meta["count"], dataset_spec, data_root)
    return data_root


def build(data_root: str, output_root: str, dataset_spec: Optional[str] = None, shards: int = 4,
          pipeline_name: str = configs.PIPELINE_NAME, task: str = "segmentation", **pipeline_kwargs):
    """Prepare the data if asked and build the pipeline; returns ``(pipeline, paths)`` (nothing runs).

    ``task``: ``segmentation`` (:func:`pipeline.pipeline.create_pipeline`) or ``classification``
    (:func:`pipeline.classification_pipeline.create_classification_pipeline`, class-folder data).
    Raises ``ValueError`` for settings the pipeline cannot take (image size, class names, ...)
    before any component runs.
    """
    from .pipeline import DEFAULT_MODULE, builder

    create_pipeline = builder(task)
    data_root = os.path.abspath(prepare_data(data_root, dataset_spec, shards))
    p = paths(output_root, pipeline_name)
    if task == "segmentation":
        pipeline_kwargs.setdefault("module_file", DEFAULT_MODULE)
    dsl_pipeline = create_pipeline(
        pipeline_name=pipeline_name, pipeline_root=p["pipeline_root"], data_root=data_root,
        serving_model_dir=p["serving_model_dir"], metadata_path=p["metadata_path"], **pipeline_kwargs)
    return dsl_pipeline, p


def run(data_root: str, output_root: str, dataset_spec: Optional[str] = None, shards: int = 4,
        pipeline_name: str = configs.PIPELINE_NAME, task: str = "segmentation", **pipeline_kwargs) -> Dict[str, str]:
    """Prepare the data if asked, build the pipeline and run it; returns :func:`paths`.

    ``pipeline_kwargs`` go to :func:`pipeline.pipeline.create_pipeline` (``train_steps``,
    ``image_size``, ``generator_dir``, ``beam_pipeline_args``, ...), or with ``task="classification"``
    to :func:`pipeline.classification_pipeline.create_classification_pipeline`.
    """
    from tfx import v1 as tfx

    dsl_pipeline, p = build(data_root, output_root, dataset_spec, shards, pipeline_name, task=task,
                            **pipeline_kwargs)
    os.makedirs(os.path.dirname(p["metadata_path"]), exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(dsl_pipeline)
    return p


def latest_run(store) -> Dict[str, Dict[str, Any]]:
    """``{node id: {"state": execution state name, "execution": id, "outputs": {output key: [artifacts]}}}``
    of the latest pipeline run (a cached node's execution is ``CACHED`` and its outputs are the
    artifacts it reused)."""
    import ml_metadata as mlmd

    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return {}
    latest = max(runs, key=lambda c: c.id)
    executions = store.get_executions_by_context(latest.id)
    node_type = store.get_context_type("node")
    events = [e for e in store.get_events_by_execution_ids([x.id for x in executions])
              if e.type == mlmd.proto.Event.OUTPUT and e.path.steps]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted({e.artifact_id for e in events}))}
    out: Dict[str, Dict[str, Any]] = {}
    for x in sorted(executions, key=lambda x: x.id):
        nodes = [c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(x.id) if c.type_id == node_type.id]
        node = nodes[0] if nodes else str(x.id)
        outputs: Dict[str, list] = {}
        for e in sorted((e for e in events if e.execution_id == x.id), key=lambda e: e.artifact_id):
            outputs.setdefault(e.path.steps[0].key, []).append(artifacts[e.artifact_id])
        out[node] = {"state": mlmd.proto.Execution.State.Name(x.last_known_state), "execution": x.id,
                     "outputs": outputs}
    return out


def _anomaly_features(uri: str) -> Dict[str, list]:
    """``{split: [flagged feature names]}`` of an ``ExampleAnomalies`` artifact (``Split-*/SchemaDiff.pb``)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    out: Dict[str, list] = {}
    for split_dir in sorted(glob.glob(os.path.join(uri, "Split-*"))):
        path = os.path.join(split_dir, "SchemaDiff.pb")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                anomalies = anomalies_pb2.Anomalies.FromString(f.read())
            out[os.path.basename(split_dir)[len("Split-"):]] = sorted(anomalies.anomaly_info)
    return out


def _custom(artifact, name: str, default: Any = None) -> Any:
    if artifact is None or name not in artifact.custom_properties:
        return default
    v = artifact.custom_properties[name]
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else default


def _output(latest: Dict[str, Dict[str, Any]], node: str, key: str):
    artifacts = latest.get(node, {}).get("outputs", {}).get(key) or []
    return artifacts[0] if artifacts else None


def _serving_dir(model) -> Optional[str]:
    if model is None:
        return None
    serving = os.path.join(model.uri, "Format-Serving")
    return serving if os.path.isdir(serving) else model.uri


def _eval_metrics(uri: str, model_name: Optional[str] = None) -> Dict[str, float]:
    """Overall (unsliced) metric values of a TFMA result; ``model_name`` for multi-model evaluations."""
    import tensorflow_model_analysis as tfma

    values = tfma.load_eval_result(uri, model_name=model_name).slicing_metrics[0][1][""][""]
    return {k: float(v["doubleValue"]) for k, v in values.items() if "doubleValue" in v}


def summarize(p: Dict[str, str]) -> Dict[str, Any]:
    """What the latest run recorded in ML Metadata (``p`` from :func:`run`/:func:`paths`).

    Only the latest pipeline run's artifacts count (those a cached component reused included).
    ``pushed_model``: the SavedModel folder the Pusher wrote (None when the model was not blessed
    or the run stopped earlier); ``blessed``: the Evaluator's verdict (None without an Evaluator);
    ``evaluation``: the TFMA result folder and ``metrics`` the candidate's overall values
    (``mean_iou``, ``pixel_accuracy``, ...); ``baseline_metrics``: the baseline model's, when the
    Evaluator compared against one (``baseline_model``: its folder); ``model``: the Trainer's
    SavedModel; ``generator``: the generator run folder (the GanTrainer's or the imported one)
    and ``generator_node`` which node gave it; ``synthetic_examples``: SyntheticGeneration's
    Examples folder and ``synthetic_count`` its sample count; ``anomalies``: the ExampleValidator's
    output folder and ``anomaly_features`` ``{split: [feature names]}`` of what it flagged;
    ``executions``: ``{node id: state}`` (``COMPLETE``, ``CACHED``, ...) and ``cached`` the nodes
    whose results were reused; ``metadata_path``: the SQLite store itself.
    """
    from tfx.orchestration import metadata

    out: Dict[str, Any] = {"metadata_path": p["metadata_path"], "pipeline_root": p["pipeline_root"],
                           "pushed_model": None, "blessed": None, "evaluation": None, "metrics": {},
                           "baseline_model": None, "baseline_metrics": {}, "model": None, "generator": None,
                           "generator_node": None, "synthetic_examples": None, "synthetic_count": None,
                           "anomalies": None, "anomaly_features": {}, "executions": {}, "cached": []}
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(p["metadata_path"])) as m:
        latest = latest_run(m.store)
    out["executions"] = {node: v["state"] for node, v in latest.items()}
    out["cached"] = sorted(node for node, state in out["executions"].items() if state == "CACHED")
    out["model"] = _serving_dir(_output(latest, "Trainer", "model"))
    out["baseline_model"] = _serving_dir(_output(latest, "BaselineTrainer", "model"))
    for node, key in (("GanTrainer", "model"), ("generator_importer", "result")):
        generator = _output(latest, node, key)
        if generator is not None:
            out["generator"], out["generator_node"] = _serving_dir(generator), node
    synthetic = _output(latest, "SyntheticGeneration", "examples")
    if synthetic is not None:
        out["synthetic_examples"] = synthetic.uri
        out["synthetic_count"] = _custom(synthetic, "synthetic_count")
    anomalies = _output(latest, "ExampleValidator", "anomalies")
    if anomalies is not None:
        out["anomalies"] = anomalies.uri
        out["anomaly_features"] = _anomaly_features(anomalies.uri)
    blessing = _output(latest, "Evaluator", "blessing")
    if blessing is not None:
        out["blessed"] = bool(_custom(blessing, "blessed", 0))
    pushed = _output(latest, "Pusher", "pushed_model")
    if pushed is not None and _custom(pushed, "pushed", 0):
        out["pushed_model"] = _custom(pushed, "pushed_destination")
    evaluation = _output(latest, "Evaluator", "evaluation")
    if evaluation is not None:
        out["evaluation"] = evaluation.uri
        try:
            if blessing is not None and _custom(blessing, "baseline_model"):
                out["baseline_model"] = out["baseline_model"] or _custom(blessing, "baseline_model")
                out["metrics"] = _eval_metrics(evaluation.uri, "candidate")
                out["baseline_metrics"] = _eval_metrics(evaluation.uri, "baseline")
            else:
                out["metrics"] = _eval_metrics(evaluation.uri)
        except Exception as e:  # a summary must not fail the run it describes
            logging.warning("could not read the evaluation metrics in %s: %s", evaluation.uri, e)
    return out


def build_parser() -> argparse.ArgumentParser:
    prog = "python -m " + (__spec__.name if __spec__ else "pipeline.local_runner")  # the name it was run by
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=configs.DATA_ROOT, required=configs.DATA_ROOT is None,
                    help="TFRecord folder (synthseg data to-tfrecord); created from --dataset when missing")
    ap.add_argument("--dataset", default=configs.DATASET_SPEC, help="dataset spec to convert into --data-root first")
    ap.add_argument("--shards", type=int, default=4, help="TFRecord shards when converting --dataset")
    ap.add_argument("--output-root", default=configs.OUTPUT_DIR)
    ap.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)
    ap.add_argument("--module", default=configs.DEFAULT_MODULE, help="module name or .py file with "
                    "preprocessing_fn and run_fn")
    ap.add_argument("--image-size", default="x".join(map(str, configs.IMAGE_SIZE)))
    ap.add_argument("--backbone", default=configs.BACKBONE)
    ap.add_argument("--batch-size", type=int, default=configs.BATCH_SIZE)
    ap.add_argument("--learning-rate", type=float, default=configs.LEARNING_RATE)
    ap.add_argument("--train-steps", type=int, default=configs.TRAIN_NUM_STEPS)
    ap.add_argument("--eval-steps", type=int, default=configs.EVAL_NUM_STEPS)
    ap.add_argument("--class-names", default=",".join(configs.CLASS_NAMES or []),
                    help="comma-separated; default: classes.json of --data-root")
    ap.add_argument("--min-mean-iou", type=float, default=configs.MIN_MEAN_IOU, help="blessing threshold")
    ap.add_argument("--generator", default=configs.GENERATOR_DIR, help="GAN run folder or generator export "
                    "(imported; no GanTrainer)")
    ap.add_argument("--train-gan", action=argparse.BooleanOptionalAction, default=configs.TRAIN_GAN,
                    help="without --generator: train the GAN in the pipeline (GanTrainer) and add synthetic samples")
    ap.add_argument("--gan-steps", type=int, default=configs.GAN_STEPS)
    ap.add_argument("--gan-batch-size", type=int, default=configs.GAN_BATCH_SIZE)
    ap.add_argument("--gan-base-filters", type=int, default=configs.GAN_BASE_FILTERS)
    ap.add_argument("--max-mean-iou-drop", type=float, default=configs.MAX_MEAN_IOU_DROP,
                    help="tolerated mean IoU drop against the baseline")
    ap.add_argument("--synthetic-n", type=int, default=configs.SYNTHETIC_N)
    ap.add_argument("--synthetic-seed", type=int, default=configs.SYNTHETIC_SEED)
    ap.add_argument("--class-balance", default=configs.CLASS_BALANCE)
    ap.add_argument("--min-quality", type=float, default=configs.MIN_QUALITY)
    ap.add_argument("--quality-model", default=configs.QUALITY_MODEL_DIR)
    ap.add_argument("--beam-arg", action="append", default=None,
                    help="Beam pipeline arg for every Beam component (repeatable); default SYNTHSEG_TFX_BEAM_ARGS")
    ap.add_argument("--cache", action="store_true", help="reuse results of unchanged components")
    ap.add_argument("--until", default=None, help="stop after this component (e.g. Trainer: no evaluation/push)")
    ap.add_argument("--log-every", type=int, default=None, help="Trainer progress line every N steps")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    out = run(
        args.data_root, args.output_root, dataset_spec=args.dataset, shards=args.shards,
        pipeline_name=args.pipeline_name, module_file=args.module, image_size=configs.parse_size(args.image_size),
        backbone=args.backbone, batch_size=args.batch_size, learning_rate=args.learning_rate,
        train_steps=args.train_steps, eval_steps=args.eval_steps,
        class_names=[c for c in args.class_names.split(",") if c] or None, min_mean_iou=args.min_mean_iou,
        generator_dir=args.generator, synthetic_n=args.synthetic_n, synthetic_seed=args.synthetic_seed,
        class_balance=args.class_balance or None, min_quality=args.min_quality, quality_model_dir=args.quality_model,
        beam_pipeline_args=args.beam_arg if args.beam_arg is not None else configs.BEAM_PIPELINE_ARGS,
        train_buckets=configs.TRAIN_BUCKETS, eval_buckets=configs.EVAL_BUCKETS, seed=configs.SEED,
        enable_cache=args.cache, until=args.until, log_every=args.log_every, train_gan=args.train_gan,
        gan_steps=args.gan_steps, gan_batch_size=args.gan_batch_size, gan_base_filters=args.gan_base_filters,
        max_mean_iou_drop=args.max_mean_iou_drop)
    for k, v in out.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
