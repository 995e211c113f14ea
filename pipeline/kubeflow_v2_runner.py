"""Compile the pipeline for Vertex AI Pipelines (``KubeflowV2DagRunner``) into a JSON spec.

Compiling is offline: nothing is uploaded, no GCS path is read. Submit the JSON afterwards,
e.g. with ``google.cloud.aiplatform.PipelineJob(template_path=..., pipeline_root=...).submit()``.

::

    python -m pipeline.kubeflow_v2_runner --output synthseg_pipeline.json \\
        --image gcr.io/my-project/synthseg-tfx:latest \\
        --pipeline-root gs://my-bucket/tfx/synthseg --data-root gs://my-bucket/data/camvid_tfr \\
        --class-names sky,building,road,... [--generator gs://my-bucket/gan_run | --no-train-gan] [--dataflow]

The same compile from the command line: ``synthseg pipeline compile --target vertex ...``. The
image must contain this repository installed (the ``Dockerfile`` at the repository root: the
locked requirements plus ``pip install --no-deps .``): every component imports
``synthseg_tf_tfx.pipeline.module_file`` and ``synthseg_tf_tfx.components.synthetic_generation``
(and the GanTrainer's ``synthseg_tf_tfx.pipeline.gan_module_file``) from the installed package (never
from a checkout). ``data_root`` becomes the pipeline's runtime
parameter ``data_root`` (the given value is its default). The data
root must be a TFRecord folder written by ``synthseg data to-tfrecord``; since the compiler does
not read it, the class names come from ``--class-names`` / ``--classes-json`` (a local copy of
its ``classes.json``) / ``SYNTHSEG_TFX_CLASS_NAMES``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import configs


def compile_pipeline(output_file: str, image: str = configs.PIPELINE_IMAGE,
                     pipeline_name: str = configs.PIPELINE_NAME,
                     pipeline_root: str = configs.VERTEX_PIPELINE_ROOT,
                     data_root: str = configs.VERTEX_DATA_ROOT,
                     serving_model_dir: str = configs.VERTEX_SERVING_MODEL_DIR,
                     class_names: Optional[Sequence[str]] = configs.CLASS_NAMES,
                     runtime_parameters: bool = True, task: str = "segmentation",
                     **pipeline_kwargs) -> str:
    """Build the pipeline and write its Vertex (KFP v2 IR) JSON to ``output_file``; returns the path.

    ``pipeline_kwargs`` go to :func:`pipeline.pipeline.create_pipeline` (``generator_dir``,
    ``train_steps``, ``image_size``, ``beam_pipeline_args``, ...; with ``task="classification"`` to
    :func:`pipeline.classification_pipeline.create_classification_pipeline`). No metadata connection is
    set: Vertex brings its own ML Metadata. With ``runtime_parameters`` the data root is the
    runtime parameter ``data_root`` (default ``data_root``; override it per run with
    ``PipelineJob(..., parameter_values={"data_root": "gs://..."})``).
    """
    from tfx import v1 as tfx

    from .pipeline import DATA_ROOT_PARAMETER, DEFAULT_MODULE, builder

    create_pipeline = builder(task)
    if task == "segmentation":
        pipeline_kwargs.setdefault("module_file", DEFAULT_MODULE)
    dsl_pipeline = create_pipeline(pipeline_name=pipeline_name, pipeline_root=pipeline_root, data_root=data_root,
                                   serving_model_dir=serving_model_dir, class_names=class_names,
                                   runtime_parameters=runtime_parameters, **pipeline_kwargs)
    output_file = os.path.abspath(output_file)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output_file), output_filename=os.path.basename(output_file))
    parameter_values: Dict[str, Any] = {DATA_ROOT_PARAMETER: str(data_root)} if runtime_parameters else {}
    runner.run(dsl_pipeline, parameter_values=parameter_values, write_out=True)
    return output_file


def vertex_beam_args(dataflow: bool, image: str, project: str = configs.GOOGLE_CLOUD_PROJECT,
                     region: str = configs.GOOGLE_CLOUD_REGION, temp_location: Optional[str] = None
                     ) -> Tuple[List[str], Optional[List[str]]]:
    """(Beam args of the pipeline's Beam components, Beam args of the generation job).

    With ``dataflow`` the Beam components (StatisticsGen, Transform, Evaluator, ...) and the
    generation job of ``SyntheticGeneration`` run on Dataflow (``--runner=DataflowRunner
    --project --region --temp_location``, workers in ``image``, which has the package): the
    generation workers write their shards straight into the output artifact on ``gs://``, so
    no component-level override is needed (``None``).
    """
    if not dataflow:
        return list(configs.BEAM_PIPELINE_ARGS), None
    return (configs.dataflow_beam_args(project=project, region=region, image=image, temp_location=temp_location),
            None)


def main(argv: Optional[List[str]] = None) -> int:
    prog = "python -m " + (__spec__.name if __spec__ else "pipeline.kubeflow_v2_runner")  # the name it was run by
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default=f"{configs.PIPELINE_NAME}_pipeline.json")
    ap.add_argument("--image", default=configs.PIPELINE_IMAGE, help="container image with this package installed")
    ap.add_argument("--pipeline-name", default=configs.PIPELINE_NAME)
    ap.add_argument("--pipeline-root", default=configs.VERTEX_PIPELINE_ROOT)
    ap.add_argument("--data-root", default=configs.VERTEX_DATA_ROOT)
    ap.add_argument("--serving-model-dir", default=configs.VERTEX_SERVING_MODEL_DIR)
    ap.add_argument("--class-names", default=",".join(configs.CLASS_NAMES or []), help="comma-separated")
    ap.add_argument("--classes-json", default=None, help="a local copy of the data root's classes.json")
    ap.add_argument("--generator", default=configs.GENERATOR_DIR, help="GAN run folder or generator export (gs://)")
    ap.add_argument("--train-gan", action=argparse.BooleanOptionalAction, default=configs.TRAIN_GAN,
                    help="without --generator: train the GAN in the pipeline (GanTrainer)")
    ap.add_argument("--gan-steps", type=int, default=configs.GAN_STEPS)
    ap.add_argument("--synthetic-n", type=int, default=configs.SYNTHETIC_N)
    ap.add_argument("--image-size", default="x".join(map(str, configs.IMAGE_SIZE)))
    ap.add_argument("--backbone", default=configs.BACKBONE)
    ap.add_argument("--train-steps", type=int, default=configs.TRAIN_NUM_STEPS)
    ap.add_argument("--eval-steps", type=int, default=configs.EVAL_NUM_STEPS)
    ap.add_argument("--min-mean-iou", type=float, default=configs.MIN_MEAN_IOU)
    ap.add_argument("--dataflow", action="store_true", help="run the Beam components on Dataflow "
                    "(configs.dataflow_beam_args: project, region, bucket, image)")
    ap.add_argument("--project", default=configs.GOOGLE_CLOUD_PROJECT, help="Google Cloud project (Dataflow)")
    ap.add_argument("--region", default=configs.GOOGLE_CLOUD_REGION, help="Google Cloud region (Dataflow)")
    ap.add_argument("--temp-location", default=None, help="Dataflow temp folder (default gs://<bucket>/tmp)")
    args = ap.parse_args(argv)

    names = [c for c in args.class_names.split(",") if c]
    if args.classes_json:
        from synthseg_tf.data.classes import ClassTable

        names = ClassTable.load(args.classes_json).names
    if not names:
        ap.error("class names are needed: --class-names, --classes-json or SYNTHSEG_TFX_CLASS_NAMES")
    beam_args, generation_args = vertex_beam_args(args.dataflow, args.image, project=args.project,
                                                  region=args.region, temp_location=args.temp_location)
    path = compile_pipeline(
        args.output, image=args.image, pipeline_name=args.pipeline_name, pipeline_root=args.pipeline_root,
        data_root=args.data_root, serving_model_dir=args.serving_model_dir, class_names=names,
        generator_dir=args.generator, synthetic_n=args.synthetic_n, image_size=configs.parse_size(args.image_size),
        backbone=args.backbone, train_steps=args.train_steps, eval_steps=args.eval_steps,
        min_mean_iou=args.min_mean_iou, beam_pipeline_args=beam_args, batch_size=configs.BATCH_SIZE,
        learning_rate=configs.LEARNING_RATE, seed=configs.SEED, train_buckets=configs.TRAIN_BUCKETS,
        eval_buckets=configs.EVAL_BUCKETS, class_balance=configs.CLASS_BALANCE, min_quality=configs.MIN_QUALITY,
        generation_beam_args=generation_args, train_gan=args.train_gan, gan_steps=args.gan_steps,
        gan_batch_size=configs.GAN_BATCH_SIZE, gan_base_filters=configs.GAN_BASE_FILTERS)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
