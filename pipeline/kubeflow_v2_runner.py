"""Compile the pipeline for Vertex AI Pipelines (``KubeflowV2DagRunner``) into a JSON spec.

Compiling is offline: nothing is uploaded, no GCS path is read. Submit the JSON afterwards,
e.g. with ``google.cloud.aiplatform.PipelineJob(template_path=..., pipeline_root=...).submit()``.

::

    python -m pipeline.kubeflow_v2_runner --output synthseg_pipeline.json \\
        --image gcr.io/my-project/synthseg-tfx:latest \\
        --pipeline-root gs://my-bucket/tfx/synthseg --data-root gs://my-bucket/data/camvid_tfr \\
        --class-names sky,building,road,... [--generator gs://my-bucket/gan_run] [--dataflow]

The image must contain this repository installed (``pip install .[pipeline]``): every
component runs ``pipeline.module_file`` and ``components.synthetic_generation`` from it. The data
root must be a TFRecord folder written by ``synthseg data to-tfrecord``; since the compiler does
not read it, the class names come from ``--class-names`` / ``--classes-json`` (a local copy of
its ``classes.json``) / ``SYNTHSEG_TFX_CLASS_NAMES``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from pipeline import configs


def compile_pipeline(output_file: str, image: str = configs.PIPELINE_IMAGE,
                     pipeline_name: str = configs.PIPELINE_NAME,
                     pipeline_root: str = configs.VERTEX_PIPELINE_ROOT,
                     data_root: str = configs.VERTEX_DATA_ROOT,
                     serving_model_dir: str = configs.VERTEX_SERVING_MODEL_DIR,
                     class_names: Optional[Sequence[str]] = configs.CLASS_NAMES,
                     **pipeline_kwargs) -> str:
    """Build the pipeline and write its Vertex (KFP v2 IR) JSON to ``output_file``; returns the path.

    ``pipeline_kwargs`` go to :func:`pipeline.pipeline.create_pipeline` (``generator_dir``,
    ``train_steps``, ``image_size``, ``beam_pipeline_args``, ...). No metadata connection is
    set: Vertex brings its own ML Metadata.
    """
    from tfx import v1 as tfx

    from pipeline.pipeline import DEFAULT_MODULE, create_pipeline

    pipeline_kwargs.setdefault("module_file", DEFAULT_MODULE)
    dsl_pipeline = create_pipeline(pipeline_name=pipeline_name, pipeline_root=pipeline_root, data_root=data_root,
                                   serving_model_dir=serving_model_dir, class_names=class_names, **pipeline_kwargs)
    output_file = os.path.abspath(output_file)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output_file), output_filename=os.path.basename(output_file))
    runner.run(dsl_pipeline, write_out=True)
    return output_file


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.kubeflow_v2_runner", description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default=f"{configs.PIPELINE_NAME}_pipeline.json")
    ap.add_argument("--image", default=configs.PIPELINE_IMAGE, help="container image with this package installed")
    ap.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)
    ap.add_argument("--pipeline-root", default=configs.VERTEX_PIPELINE_ROOT)
    ap.add_argument("--data-root", default=configs.VERTEX_DATA_ROOT)
    ap.add_argument("--serving-model-dir", default=configs.VERTEX_SERVING_MODEL_DIR)
    ap.add_argument("--class-names", default=",".join(configs.CLASS_NAMES or []), help="comma-separated")
    ap.add_argument("--classes-json", default=None, help="a local copy of the data root's classes.json")
    ap.add_argument("--generator", default=configs.GENERATOR_DIR, help="GAN run folder or generator export (gs://)")
    ap.add_argument("--synthetic-n", type=int, default=configs.SYNTHETIC_N)
    ap.add_argument("--image-size", default="x".join(map(str, configs.IMAGE_SIZE)))
    ap.add_argument("--backbone", default=configs.BACKBONE)
    ap.add_argument("--train-steps", type=int, default=configs.TRAIN_NUM_STEPS)
    ap.add_argument("--eval-steps", type=int, default=configs.EVAL_NUM_STEPS)
    ap.add_argument("--min-mean-iou", type=float, default=configs.MIN_MEAN_IOU)
    ap.add_argument("--dataflow", action="store_true", help="run the Beam components on Dataflow "
                    "(configs.dataflow_beam_args: project, region, bucket, image)")
    args = ap.parse_args(argv)

    names = [c for c in args.class_names.split(",") if c]
    if args.classes_json:
        from synthseg_tf.data.classes import ClassTable

        names = ClassTable.load(args.classes_json).names
    if not names:
        ap.error("class names are needed: --class-names, --classes-json or SYNTHSEG_TFX_CLASS_NAMES")
    beam_args = configs.dataflow_beam_args(image=args.image) if args.dataflow else configs.BEAM_PIPELINE_ARGS
    # The generation job itself stays on the DirectRunner inside its container (see components/).
    generation_args = ["--runner=DirectRunner", "--direct_num_workers=0"] if args.dataflow else None
    path = compile_pipeline(
        args.output, image=args.image, pipeline_name=args.pipeline_name, pipeline_root=args.pipeline_root,
        data_root=args.data_root, serving_model_dir=args.serving_model_dir, class_names=names,
        generator_dir=args.generator, synthetic_n=args.synthetic_n, image_size=configs.parse_size(args.image_size),
        backbone=args.backbone, train_steps=args.train_steps, eval_steps=args.eval_steps,
        min_mean_iou=args.min_mean_iou, beam_pipeline_args=beam_args, batch_size=configs.BATCH_SIZE,
        learning_rate=configs.LEARNING_RATE, seed=configs.SEED, train_buckets=configs.TRAIN_BUCKETS,
        eval_buckets=configs.EVAL_BUCKETS, class_balance=configs.CLASS_BALANCE, min_quality=configs.MIN_QUALITY,
        generation_beam_args=generation_args)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
