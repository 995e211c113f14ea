"""``synthseg pipeline``: the TFX pipeline from the command line.

``register(sub, spec_help)`` adds::

    synthseg pipeline run --data SPEC|TFRECORD_DIR --out DIR [--preset demo|small|full]
        [--task segmentation|classification] [--train-gan/--no-train-gan] [--gan-steps N] [--synthetic-n N]
        [--generator DIR] [--cache]
    synthseg pipeline compile --target vertex --project P --region R --image IMG --pipeline-root gs://... \\
        (--class-names a,b,c | --classes-json FILE | --classes-from SPEC) [--dataflow] --output FILE

``--task`` selects the pipeline: ``segmentation`` (image + label-map data, pix2pix, U-Nets, mean IoU;
``pipeline/pipeline.py``) or ``classification`` (class-folder data ``classfolders:DIR`` / ``demo-classes``, a
class-conditional GAN, synthetic images of the rare classes with a confidence filter, CNN classifiers,
macro-F1 and accuracy; ``pipeline/classification_pipeline.py``); each task has its own presets.

``run`` is ``pipeline/local_runner.py`` (``LocalDagRunner``, ML Metadata in SQLite under DIR); it prints
the generator (trained by the ``GanTrainer``, or imported with ``--generator``), the synthetic
examples, the candidate's and the real-only baseline's evaluations, the blessing, the pushed model
and which components were reused from the cache;
``compile`` is ``pipeline/kubeflow_v2_runner.py`` (a Vertex AI Pipelines JSON spec, offline).
The pipeline code is the installed package ``synthseg_tf_tfx.pipeline`` (the repository's
``pipeline/`` folder, see setup.py). TFX is imported only when one of these commands runs:
``import synthseg_tf`` and ``synthseg --help`` never import it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from typing import Any, Dict, List

from synthseg_tf.cli import EXIT_OK, CliError
from synthseg_tf.cli_models import _positive_int
from synthseg_tf.errors import EXIT_BAD_DATA, EXIT_CONFLICT, EXIT_ERROR

TFX_PACKAGE = "synthseg_tf_tfx.pipeline"
PRESET_NAMES = ("demo", "small", "full")  # pipeline/configs.py PRESETS (not imported to build the parser)
TASKS = ("segmentation", "classification")
VERTEX_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


def _tfx(module: str):
    """``synthseg_tf_tfx.pipeline.<module>``, or a one-line error when the pipeline cannot be imported."""
    try:
        return importlib.import_module(f"{TFX_PACKAGE}.{module}")
    except ModuleNotFoundError as e:
        if e.name and (e.name == "synthseg_tf_tfx" or e.name.startswith(TFX_PACKAGE)):
            raise CliError(f"the TFX pipeline package {TFX_PACKAGE} is not installed: install this repository "
                           "(make setup, or pip install .)", EXIT_ERROR) from e
        if e.name and e.name.split(".")[0] in ("tfx", "tensorflow_transform", "tensorflow_model_analysis",
                                                 "ml_metadata", "tfx_bsl", "kfp_pipeline_spec"):
            raise CliError(f"the TFX pipeline needs {e.name}, which is not installed: pip install "
                           "'synthseg-tf[pipeline]' (or make setup)", EXIT_ERROR) from e
        raise


def _size(text: str):
    parts = [p for p in re.split(r"[x,]", text.strip().lower()) if p]
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) > 2 or h < 32 or w < 32 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"the U-Net needs sizes that are multiples of 32, got {text!r}")
    return h, w


# Options that only one task's pipeline has (the other task refuses them rather than ignore them).
TASK_ONLY = {"backbone": "segmentation", "min_mean_iou": "segmentation", "min_macro_f1": "classification"}


def _check_task(args) -> None:
    """Refuse options of the other task (e.g. ``--backbone`` with ``--task classification``)."""
    for key, task in TASK_ONLY.items():
        if getattr(args, key, None) is not None and args.task != task:
            raise CliError(f"--{key.replace('_', '-')} is an option of --task {task}, not {args.task}",
                           EXIT_BAD_DATA)


def _name(args) -> str:
    """``--name``, else SYNTHSEG_TFX_PIPELINE_NAME, else ``synthseg-<task>``."""
    return args.name or os.environ.get("SYNTHSEG_TFX_PIPELINE_NAME") or f"synthseg-{args.task}"


def _settings(args) -> Dict[str, Any]:
    """The task's preset (sizes, steps, blessing) with the command line's overrides."""
    _check_task(args)
    configs = _tfx("configs")
    s = configs.preset(args.preset, args.task)
    for key in ("image_size", "backbone", "batch_size", "train_steps", "eval_steps", "min_mean_iou", "min_macro_f1",
                "synthetic_n", "log_every", "train_gan", "gan_steps"):
        value = getattr(args, key, None)
        if value is not None:
            s[key] = value
    return s


def _task_kwargs(args, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The task's ``create_pipeline`` arguments from the settings (sizes, steps, blessing, generation)."""
    configs = _tfx("configs")
    common = dict(image_size=settings["image_size"], batch_size=settings["batch_size"],
                  train_steps=settings["train_steps"], eval_steps=settings["eval_steps"],
                  synthetic_n=settings["synthetic_n"], log_every=settings.get("log_every"),
                  generator_dir=args.generator, seed=args.seed, **_gan_kwargs(settings))
    if args.task == "classification":
        return dict(common, task="classification", min_macro_f1=settings["min_macro_f1"],
                    max_macro_f1_drop=settings.get("max_macro_f1_drop"), min_quality=settings.get("min_quality"),
                    labels=settings.get("labels", "rare"), learning_rate=configs.CLS_LEARNING_RATE)
    return dict(common, backbone=settings["backbone"], min_mean_iou=settings["min_mean_iou"],
                max_mean_iou_drop=settings.get("max_mean_iou_drop"), class_balance=configs.CLASS_BALANCE)


# --------------------------------------------------------------------------- logging
_PROGRESS = re.compile(r"^(Component \S+ is (running|finished)\.|(Gan|Baseline)?Trainer: )")
# TFX 1.15 warnings that every local run prints and that ask nothing of the user.
_TFX_NOISE = re.compile(r"ArtifactQuery\.property_predicate is not supported|"
                        r"does not have payload_format custom property")


class _ProgressOnly(logging.Filter):
    """Warnings and errors (less TFX's routine ones), plus the lines that say where the run is
    (components starting and finishing, the Trainer's progress)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return record.levelno >= logging.WARNING
        if record.levelno >= logging.WARNING:
            return record.levelno > logging.WARNING or not _TFX_NOISE.search(message)
        return bool(_PROGRESS.match(message))


def _configure_logging(verbose: bool) -> None:
    """absl (TFX's logger) at INFO; without ``verbose`` only the progress lines and warnings show."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname).1s %(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    for handler in root.handlers:
        if verbose:
            handler.filters = [f for f in handler.filters if not isinstance(f, _ProgressOnly)]
        elif not any(isinstance(f, _ProgressOnly) for f in handler.filters):
            handler.addFilter(_ProgressOnly())
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    if verbose:
        root.setLevel(logging.INFO)


# --------------------------------------------------------------------------- data
def _tfrecord_folder(path: str) -> bool:
    return os.path.isdir(path) and any(f.endswith((".tfrecord", ".tfrecord.gz")) for f in os.listdir(path))


_WANTS = {"segmentation": "segmentation (image + mask pairs)",
          "classification": "classification (class folders: classfolders:DIR or demo-classes)"}


def _prepare_data(data: str, out: str, shards: int, task: str = "segmentation") -> str:
    """A TFRecord folder for ImportExampleGen: ``data`` itself, or ``out/data`` converted from the spec
    (``synthseg data to-tfrecord``); its task must be ``task``."""
    from synthseg_tf.data.tfrecord import read_metadata

    if _tfrecord_folder(data):
        have = read_metadata(data).get("task", "segmentation")
        if have != task:
            raise CliError(f"{data} holds {have} records; the --task {task} pipeline trains {_WANTS[task]}"
                           + (f" (use --task {have})" if have in _WANTS else ""), EXIT_BAD_DATA)
        if not os.path.isfile(os.path.join(data, "classes.json")):
            raise CliError(f"{data}: no classes.json (write the folder with `synthseg data to-tfrecord`)",
                           EXIT_BAD_DATA)
        return os.path.abspath(data)
    from synthseg_tf.data import load, write_tfrecords

    ds = load(data)
    if ds.task != task:
        raise CliError(f"{data} is a {ds.task} dataset; the --task {task} pipeline trains {_WANTS[task]}"
                       + (f" (use --task {ds.task})" if ds.task in _WANTS else ""), EXIT_BAD_DATA)
    target = os.path.join(out, "data")
    if os.path.isdir(target) and os.listdir(target):
        have = read_metadata(target).get("spec")
        if have != ds.spec:
            raise CliError(f"{target} already holds the records of {have!r}, not {ds.spec!r}: use another --out "
                           "or delete that folder", EXIT_CONFLICT)
        print(f"data: reusing {target} ({ds.spec})")
        return target
    meta = write_tfrecords(ds, target, shards=shards)
    print(f"data: wrote {meta['count']} examples of {ds.spec} to {target}")
    return target


# --------------------------------------------------------------------------- run
def cmd_pipeline_run(args) -> int:
    settings = _settings(args)
    name = _name(args)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise CliError(f"--out {args.out} is a file, not a folder", EXIT_CONFLICT)
    # data errors before TFX loads
    data_root = _prepare_data(args.data, out, int(settings.pop("shards", 4)), args.task)
    local_runner = _tfx("local_runner")
    configs = _tfx("configs")
    from tfx import v1 as tfx  # noqa: F401  (imported before logging is set up: it installs handlers)

    _configure_logging(args.verbose)
    try:
        dsl_pipeline, paths = local_runner.build(
            data_root, out, pipeline_name=name,
            beam_pipeline_args=args.beam_arg if args.beam_arg is not None else configs.BEAM_PIPELINE_ARGS,
            enable_cache=args.cache, until=args.until, **_task_kwargs(args, settings))
    except ValueError as e:
        raise CliError(str(e), EXIT_BAD_DATA) from e
    nodes = [c.id for c in dsl_pipeline.components]
    print(f"pipeline {name} ({args.task}, preset {args.preset}): {' -> '.join(nodes)}")
    print(f"  pipeline root: {paths['pipeline_root']}")
    os.makedirs(os.path.dirname(paths["metadata_path"]), exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(dsl_pipeline)

    s = local_runner.summarize(paths)
    print_summary(s, settings)
    return EXIT_OK


def _gan_kwargs(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The preset's GanTrainer settings (with the command line's overrides) for ``create_pipeline``."""
    return {k: settings[k] for k in ("train_gan", "gan_steps", "gan_batch_size", "gan_base_filters", "gan_log_every")
            if settings.get(k) is not None}


def _metrics(values: Dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(values.items()))


def print_summary(s: Dict[str, Any], settings: Dict[str, Any]) -> None:
    """The run's outcome (``local_runner.summarize``): generator, synthetic examples, evaluations,
    blessing, pushed model, anomalies, cached nodes."""
    metrics = _metrics(s["metrics"])
    done = s["executions"]
    print("done" + (f" ({len(s['cached'])} of {len(done)} components reused from the cache: "
                    f"{', '.join(s['cached'])})" if s["cached"] else ""))
    if s["generator"]:
        how = "trained by the GanTrainer" if s["generator_node"] == "GanTrainer" else "imported"
        print(f"  generator:     {s['generator']} ({how})")
    if s["synthetic_examples"]:
        print(f"  synthetic examples: {s['synthetic_examples']} ({s['synthetic_count']} samples, with the real "
              "train/eval splits)")
    if s["baseline_model"] and "BaselineTrainer" in done:
        print(f"  baseline model (real data only): {s['baseline_model']}")
    if s["model"]:
        print(f"  trained model: {s['model']}" + (" (real + synthetic data)" if s["synthetic_examples"] else ""))
    if s["evaluation"]:
        print(f"  evaluation:    {s['evaluation']}" + (f" ({metrics})" if metrics else ""))
        if s["baseline_metrics"]:
            print(f"  baseline evaluation: {_metrics(s['baseline_metrics'])}")
    # the blessing metric: mean_iou (segmentation) or macro_f1 (classification)
    metric = "macro_f1" if "min_macro_f1" in settings else "mean_iou"
    minimum, drop = settings[f"min_{metric}"], settings.get(f"max_{metric}_drop")
    if s["blessed"] is not None:
        rule = f"{metric} >= {minimum}"
        if s["baseline_metrics"] and drop is not None:
            rule += f" and at most {drop} below the baseline's"
        print(f"  blessing:      {'BLESSED' if s['blessed'] else 'NOT blessed'} ({rule})")
    if s["pushed_model"]:
        print(f"  pushed model:  {s['pushed_model']}")
    elif s["blessed"] is False:
        against = "the baseline" if s["baseline_metrics"] else "the last blessed one"
        print(f"  pushed model:  none: the Evaluator did not bless the model ({metric} below {minimum}"
              f" or worse than {against})")
    else:
        print("  pushed model:  none (the run stopped before the Pusher)")
    if s["anomalies"]:
        found = "; ".join(f"{split}: {', '.join(names)}" for split, names in s["anomaly_features"].items() if names)
        print(f"  data anomalies: {found or 'none'} (ExampleValidator: {s['anomalies']})")
    print(f"  metadata (ML Metadata, SQLite): {s['metadata_path']}")


# --------------------------------------------------------------------------- compile
def _class_names(args) -> List[str]:
    if args.class_names:
        return [c.strip() for c in args.class_names.split(",") if c.strip()]
    if args.classes_json:
        from synthseg_tf.data.classes import ClassTable

        if not os.path.isfile(args.classes_json):
            raise CliError(f"--classes-json {args.classes_json}: no such file", EXIT_BAD_DATA)
        return ClassTable.load(args.classes_json).names
    if args.classes_from:
        if _tfrecord_folder(args.classes_from):
            from synthseg_tf.data.classes import ClassTable

            path = os.path.join(args.classes_from, "classes.json")
            if not os.path.isfile(path):
                raise CliError(f"{args.classes_from}: no classes.json", EXIT_BAD_DATA)
            return ClassTable.load(path).names
        from synthseg_tf.data import load

        return load(args.classes_from).classes.names
    names = _tfx("configs").CLASS_NAMES
    if names:
        return list(names)
    raise CliError("class names are needed (the compiler reads no data): --class-names a,b,c, --classes-json "
                   "FILE, --classes-from SPEC or SYNTHSEG_TFX_CLASS_NAMES", EXIT_BAD_DATA)


def compile_vertex(args) -> str:
    """Write the Vertex AI Pipelines JSON for ``args`` (the ``compile`` options); returns its path."""
    settings = _settings(args)
    name = _name(args)
    if not VERTEX_NAME.match(name):
        raise CliError(f"--name {name!r}: Vertex pipeline names are lowercase letters, digits and '-' "
                       "(at most 128)", EXIT_BAD_DATA)
    if not args.pipeline_root.startswith("gs://"):
        raise CliError(f"--pipeline-root {args.pipeline_root!r}: Vertex AI Pipelines needs a gs:// folder",
                       EXIT_BAD_DATA)
    if args.dataflow and not args.project:
        raise CliError("--dataflow needs --project (or GOOGLE_CLOUD_PROJECT)", EXIT_BAD_DATA)
    names = _class_names(args)
    if args.task == "classification" and len(names) < 2:
        raise CliError(f"--task classification needs at least 2 class names, got {len(names)}", EXIT_BAD_DATA)
    runner = _tfx("kubeflow_v2_runner")
    configs = _tfx("configs")
    root = args.pipeline_root.rstrip("/")
    beam_args, generation_args = runner.vertex_beam_args(
        args.dataflow, args.image, project=args.project, region=args.region,
        temp_location=args.temp_location or f"{root}/tmp")
    try:
        return runner.compile_pipeline(
            args.output, image=args.image, pipeline_name=name, pipeline_root=root,
            data_root=args.data_root or f"{root}/data",
            serving_model_dir=args.serving_model_dir or f"{root}/serving_model",
            class_names=names, beam_pipeline_args=beam_args, generation_beam_args=generation_args,
            train_buckets=configs.TRAIN_BUCKETS, eval_buckets=configs.EVAL_BUCKETS,
            **{"learning_rate": configs.LEARNING_RATE, **_task_kwargs(args, settings)})
    except ValueError as e:
        raise CliError(str(e), EXIT_BAD_DATA) from e


def cmd_pipeline_compile(args) -> int:
    path = compile_vertex(args)
    print(f"wrote {path}")
    print(f"  image: {args.image}; pipeline root: {args.pipeline_root}"
          + ("; Beam components on Dataflow" if args.dataflow else ""))
    print("  submit: google.cloud.aiplatform.PipelineJob(display_name=..., template_path="
          f"{path!r}, parameter_values={{'data_root': 'gs://...'}}).submit()")
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def _sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=PRESET_NAMES, default="full",
                   help="sizes and steps: demo (a few minutes on 2 CPU cores), small, full (the SYNTHSEG_TFX_* "
                   "settings; default)")
    p.add_argument("--task", choices=TASKS, default="segmentation",
                   help="segmentation (default: label-map data, pix2pix, U-Nets, mean IoU) or classification "
                   "(class folders: classfolders:DIR or demo-classes; a class-conditional GAN for the rare classes, "
                   "CNN classifiers, macro-F1 and accuracy); each task has its own presets")
    p.add_argument("--image-size", type=_size, default=None, metavar="HxW",
                   help="override the preset (multiples of 32)")
    p.add_argument("--backbone", default=None, help="segmentation: U-Net encoder (override the preset)")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--train-steps", type=_positive_int, default=None)
    p.add_argument("--eval-steps", type=_positive_int, default=None)
    p.add_argument("--min-mean-iou", type=float, default=None,
                   help="segmentation: blessing threshold (override the preset)")
    p.add_argument("--min-macro-f1", type=float, default=None,
                   help="classification: blessing threshold on the eval split's macro-F1 (override the preset)")
    p.add_argument("--log-every", type=_positive_int, default=None, help="Trainer progress line every N steps")
    p.add_argument("--generator", default=None, metavar="DIR",
                   help="a `synthseg gan train` run folder or generator export, imported instead of training the "
                   "GAN in the pipeline")
    p.add_argument("--train-gan", action=argparse.BooleanOptionalAction, default=None,
                   help="train the pix2pix GAN in the pipeline (GanTrainer) and add its synthetic samples, with a "
                   "real-data BaselineTrainer to compare against (default: the preset's, on for every preset; "
                   "ignored with --generator)")
    p.add_argument("--gan-steps", type=_positive_int, default=None, help="GanTrainer steps (override the preset)")
    p.add_argument("--synthetic-n", type=_positive_int, default=None,
                   help="synthetic samples (with the GanTrainer or --generator)")
    p.add_argument("--name", default=None,
                   help="pipeline name (default SYNTHSEG_TFX_PIPELINE_NAME, else synthseg-segmentation or "
                   "synthseg-classification)")
    p.add_argument("--seed", type=int, default=0)


def register(sub, spec_help: str) -> None:
    """Add ``pipeline run`` and ``pipeline compile`` to the top-level subparsers ``sub``."""
    p = sub.add_parser("pipeline", help="the TFX pipeline: run it here or compile it for Vertex AI Pipelines",
                       description="ImportExampleGen -> StatisticsGen -> SchemaGen -> ExampleValidator -> "
                       "[RealTransform -> GanTrainer (pix2pix) | generator Importer] -> [SyntheticGeneration] -> "
                       "Transform -> Trainer (U-Net; real + synthetic) [+ BaselineTrainer (U-Net; real only)] -> "
                       "Evaluator (TFMA, against the baseline) -> Pusher. With --task classification (class "
                       "folders): the GAN is class-conditional, SyntheticGeneration renders images of the rare "
                       "classes kept by a confidence filter (the real-only BaselineTrainer classifier), the Trainers "
                       "are CNN classifiers and the Evaluator scores macro-F1 and accuracy.")
    psub = p.add_subparsers(dest="pipeline_command", metavar="PIPELINE_COMMAND")
    psub.required = True

    r = psub.add_parser("run", help="run the pipeline on this machine (LocalDagRunner, SQLite ML Metadata)",
                        description="Run the TFX pipeline with the LocalDagRunner. DIR gets data/ (the TFRecords "
                        "converted from --data), pipeline_root/ (every component's artifacts), metadata/ (ML "
                        "Metadata in SQLite) and serving_model/ (the pushed SavedModel). Rerunning into the same "
                        "DIR adds a run to the same metadata store.")
    r.add_argument("--data", required=True, help=spec_help + "; or a TFRecord folder (synthseg data to-tfrecord)")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder (created; rerun to add runs)")
    _sizes(r)
    r.add_argument("--cache", action="store_true", help="reuse the results of unchanged components")
    r.add_argument("--until", default=None, metavar="COMPONENT", help="stop after this component (e.g. Trainer)")
    r.add_argument("--beam-arg", action="append", default=None,
                   help="Beam pipeline arg for the Beam components (repeatable; default SYNTHSEG_TFX_BEAM_ARGS)")
    r.add_argument("--verbose", action="store_true", help="show TFX's and Beam's INFO logs")
    r.set_defaults(func=cmd_pipeline_run)

    c = psub.add_parser("compile", help="compile the pipeline to a Vertex AI Pipelines JSON spec (offline)",
                        description="Write the pipeline as a Vertex AI Pipelines (KFP v2) JSON spec. Nothing is read "
                        "or uploaded: build and push the image (Dockerfile) and submit the JSON yourself. The data "
                        "root is the runtime parameter data_root.")
    c.add_argument("--target", choices=("vertex",), required=True)
    c.add_argument("--image", required=True, help="container image with this package installed (the Dockerfile)")
    c.add_argument("--pipeline-root", required=True, metavar="GS_DIR", help="gs:// folder for the artifacts")
    c.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT", ""), help="Google Cloud project")
    c.add_argument("--region", default=os.environ.get("SYNTHSEG_TFX_REGION") or "us-central1")
    c.add_argument("--data-root", default=None, metavar="GS_DIR",
                   help="TFRecord folder (synthseg data to-tfrecord); the default of the runtime parameter "
                   "data_root (default PIPELINE_ROOT/data)")
    c.add_argument("--serving-model-dir", default=None, help="where Pusher copies blessed models "
                   "(default PIPELINE_ROOT/serving_model)")
    c.add_argument("--class-names", default=None, help="comma-separated class names of the data")
    c.add_argument("--classes-json", default=None, metavar="FILE", help="a local copy of the data's classes.json")
    c.add_argument("--classes-from", default=None, metavar="SPEC", help="take the class names of this local dataset "
                   "spec or TFRecord folder")
    c.add_argument("--dataflow", action="store_true", help="run the Beam components on Dataflow (--runner="
                   "DataflowRunner --project --region --temp_location, workers in --image)")
    c.add_argument("--temp-location", default=None, metavar="GS_DIR", help="Dataflow temp folder "
                   "(default PIPELINE_ROOT/tmp)")
    c.add_argument("--output", required=True, metavar="FILE", help="the JSON file to write")
    _sizes(c)
    c.set_defaults(func=cmd_pipeline_compile)
