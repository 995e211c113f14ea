"""Run the pipeline on this machine: ``LocalDagRunner`` + an embedded SQLite ML Metadata store.

::

    # convert a dataset spec to TFRecords first (skipped when --data-root already exists), then run
    python -m pipeline.local_runner --dataset "demo-scenes?n=200&size=128" --data-root runs/tfx/data \\
        --output-root runs/tfx --train-steps 200 --image-size 128x128

    # a TFRecord folder from `synthseg data to-tfrecord`, plus synthetic samples from a GAN run
    python -m pipeline.local_runner --data-root out/camvid_tfr --output-root runs/tfx \\
        --generator runs/gan --synthetic-n 500

Layout under ``--output-root``::

    pipeline_root/<name>/...        artifacts of every component (ExampleGen, Transform, Trainer, ...)
    metadata/<name>/metadata.db     ML Metadata (SQLite): executions, artifacts, lineage
    serving_model/<name>/<version>/ the SavedModel pushed when the Evaluator blessed it

Defaults come from :mod:`pipeline.configs` (``SYNTHSEG_TFX_*`` environment variables).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, Optional, Sequence

from pipeline import configs


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


def run(data_root: str, output_root: str, dataset_spec: Optional[str] = None, shards: int = 4,
        pipeline_name: str = configs.PIPELINE_NAME, **pipeline_kwargs) -> Dict[str, str]:
    """Prepare the data if asked, build the pipeline and run it; returns :func:`paths`.

    ``pipeline_kwargs`` go to :func:`pipeline.pipeline.create_pipeline` (``train_steps``,
    ``image_size``, ``generator_dir``, ``beam_pipeline_args``, ...).
    """
    from tfx import v1 as tfx

    from pipeline.pipeline import DEFAULT_MODULE, create_pipeline

    data_root = os.path.abspath(prepare_data(data_root, dataset_spec, shards))
    p = paths(output_root, pipeline_name)
    os.makedirs(os.path.dirname(p["metadata_path"]), exist_ok=True)
    pipeline_kwargs.setdefault("module_file", DEFAULT_MODULE)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(
        pipeline_name=pipeline_name, pipeline_root=p["pipeline_root"], data_root=data_root,
        serving_model_dir=p["serving_model_dir"], metadata_path=p["metadata_path"], **pipeline_kwargs))
    return p


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline.local_runner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=configs.DATA_ROOT, required=configs.DATA_ROOT is None,
                    help="TFRecord folder (synthseg data to-tfrecord); created from --dataset when missing")
    ap.add_argument("--dataset", default=configs.DATASET_SPEC, help="dataset spec to convert into --data-root first")
    ap.add_argument("--shards", type=int, default=4, help="TFRecord shards when converting --dataset")
    ap.add_argument("--output-root", default=configs.OUTPUT_DIR)
    ap.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)
    ap.add_argument("--module", default="pipeline.module_file", help="module name or .py file with "
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
    ap.add_argument("--generator", default=configs.GENERATOR_DIR, help="GAN run folder or generator export")
    ap.add_argument("--synthetic-n", type=int, default=configs.SYNTHETIC_N)
    ap.add_argument("--synthetic-seed", type=int, default=configs.SYNTHETIC_SEED)
    ap.add_argument("--class-balance", default=configs.CLASS_BALANCE)
    ap.add_argument("--min-quality", type=float, default=configs.MIN_QUALITY)
    ap.add_argument("--quality-model", default=configs.QUALITY_MODEL_DIR)
    ap.add_argument("--beam-arg", action="append", default=None,
                    help="Beam pipeline arg for every Beam component (repeatable); default SYNTHSEG_TFX_BEAM_ARGS")
    ap.add_argument("--cache", action="store_true", help="reuse results of unchanged components")
    ap.add_argument("--until", default=None, help="stop after this component (e.g. Trainer: no evaluation/push)")
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
        enable_cache=args.cache, until=args.until)
    for k, v in out.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
