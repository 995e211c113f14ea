"""Pipeline settings: names, paths, sizes, steps. Every value can be overridden by an environment
variable (``SYNTHSEG_TFX_<NAME>``) so the same code serves a laptop run, CI and Vertex AI.

Nothing here touches the network (no ``google.auth.default()`` probing): the Google Cloud
project and bucket come from ``GOOGLE_CLOUD_PROJECT`` / ``SYNTHSEG_TFX_GCS_BUCKET``.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
from typing import Any, Dict, List, Optional, Tuple

_PREFIX = "SYNTHSEG_TFX_"


def env(name: str, default: Optional[str] = None) -> Optional[str]:
    """``SYNTHSEG_TFX_<name>`` if set and non-empty, else ``default``."""
    v = os.environ.get(_PREFIX + name)
    return v if v not in (None, "") else default


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


def env_bool(name: str, default: bool) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); ``default`` when unset."""
    v = env(name)
    if v is None:
        return default
    if v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{_PREFIX}{name}={v!r}: expected 1/0, true/false, yes/no or on/off")


def env_float(name: str, default: Optional[float]) -> Optional[float]:
    v = env(name)
    return default if v is None else float(v)


def env_list(name: str, default: List[str]) -> List[str]:
    """Shell-style word list (``"--a=1 --b 2"``)."""
    v = env(name)
    return list(default) if v is None else shlex.split(v)


def parse_size(s) -> Tuple[int, int]:
    """``128`` / ``"96x128"`` / ``(96, 128)`` -> ``(96, 128)``."""
    if isinstance(s, str):
        parts = [int(p) for p in s.lower().replace(",", "x").split("x") if p.strip()]
        s = parts[0] if len(parts) == 1 else tuple(parts)
    if isinstance(s, int):
        return s, s
    h, w = s
    return int(h), int(w)


# --------------------------------------------------------------------------- module names
# Installed (a wheel, `pip install .`, or the editable `make setup`), pipeline/ and components/ are
# the packages synthseg_tf_tfx.pipeline and synthseg_tf_tfx.components (setup.py), never the generic
# top-level names. TFX writes the module and executor names into the pipeline IR and imports them
# again in each component's process or container, so the pipeline refers to them by these installed
# names. Only a bare checkout that was never installed falls back to the folder names.
TFX_NAMESPACE = "synthseg_tf_tfx"


def _package_prefix() -> str:
    if __name__.startswith(TFX_NAMESPACE + "."):
        return TFX_NAMESPACE + "."
    try:
        if importlib.util.find_spec(TFX_NAMESPACE + ".pipeline") is not None:
            return TFX_NAMESPACE + "."
    except (ImportError, ValueError):
        pass
    return ""


PIPELINE_PACKAGE = _package_prefix() + "pipeline"
COMPONENTS_PACKAGE = _package_prefix() + "components"
# The Transform/Trainer user module (preprocessing_fn, run_fn), by importable name.
DEFAULT_MODULE = PIPELINE_PACKAGE + ".module_file"
# The GanTrainer's user module (run_fn: pix2pix on the real training split).
DEFAULT_GAN_MODULE = PIPELINE_PACKAGE + ".gan_module_file"
# The classification pipeline's user modules (--task classification): the CNN classifier (and the
# Evaluator's MacroF1 metric), and the class-conditional GAN.
DEFAULT_CLASSIFICATION_MODULE = PIPELINE_PACKAGE + ".classification_module_file"
DEFAULT_CLASSIFICATION_GAN_MODULE = PIPELINE_PACKAGE + ".classification_gan_module_file"

# --------------------------------------------------------------------------- names
PIPELINE_NAME = env("PIPELINE_NAME", "synthseg-segmentation")  # Vertex: [a-z0-9-]{1,128}

# --------------------------------------------------------------------------- local paths
OUTPUT_DIR = env("OUTPUT_DIR", os.path.join(".", "tfx_runs"))
DATA_ROOT = env("DATA_ROOT")  # a TFRecord folder of `synthseg data to-tfrecord`
DATASET_SPEC = env("DATASET_SPEC")  # converted to DATA_ROOT by the local runner when DATA_ROOT is missing
GENERATOR_DIR = env("GENERATOR_DIR")  # `synthseg gan train` run folder or generator export; None = no generation
QUALITY_MODEL_DIR = env("QUALITY_MODEL_DIR")  # segmenter export for the generation quality filter

# --------------------------------------------------------------------------- data and model
IMAGE_SIZE = parse_size(env("IMAGE_SIZE", "128x128"))  # H, W: multiples of 32
BACKBONE = env("BACKBONE", "resnet34")
BATCH_SIZE = env_int("BATCH_SIZE", 8)
LEARNING_RATE = env_float("LEARNING_RATE", 1e-3)
SEED = env_int("SEED", 0)
CLASS_NAMES: Optional[List[str]] = [c for c in env("CLASS_NAMES", "").split(",") if c] or None  # else classes.json
# ImportExampleGen hash buckets: train:eval
TRAIN_BUCKETS = env_int("TRAIN_BUCKETS", 4)
EVAL_BUCKETS = env_int("EVAL_BUCKETS", 1)

# --------------------------------------------------------------------------- training / evaluation
TRAIN_NUM_STEPS = env_int("TRAIN_STEPS", 1000)
EVAL_NUM_STEPS = env_int("EVAL_STEPS", 20)
# Blessing: the candidate's mean IoU on the eval split must reach this, and (when a blessed
# model exists) not fall below the baseline's by more than MAX_MEAN_IOU_DROP.
MIN_MEAN_IOU = env_float("MIN_MEAN_IOU", 0.3)
MAX_MEAN_IOU_DROP = env_float("MAX_MEAN_IOU_DROP", 0.01)

# --------------------------------------------------------------------------- synthetic data
# Without GENERATOR_DIR, TRAIN_GAN adds the GanTrainer (pix2pix on the real training split) whose
# generator feeds SyntheticGeneration; a BaselineTrainer (real data only) is then what the
# augmented model must not fall behind by more than MAX_MEAN_IOU_DROP.
TRAIN_GAN = env_bool("TRAIN_GAN", True)
GAN_STEPS = env_int("GAN_STEPS", 5000)
GAN_BATCH_SIZE = env_int("GAN_BATCH_SIZE", 4)
GAN_BASE_FILTERS = env_int("GAN_BASE_FILTERS", 64)
SYNTHETIC_N = env_int("SYNTHETIC_N", 1000)
SYNTHETIC_SEED = env_int("SYNTHETIC_SEED", 0)
SYNTHETIC_MASKS = env("SYNTHETIC_MASKS", "sample")
CLASS_BALANCE = env("CLASS_BALANCE", "rare")
MIN_QUALITY = env_float("MIN_QUALITY", None)

# --------------------------------------------------------------------------- Beam
# Empty = Beam's DirectRunner in memory. Any non-empty list makes TFX build an ephemeral TFX sdist
# for the workers (unless it names --extra_package/--setup_file/--sdk_container_image), which costs
# time on every Beam component; e.g. "--direct_running_mode=multi_processing --direct_num_workers=0".
BEAM_PIPELINE_ARGS = env_list("BEAM_ARGS", [])

# --------------------------------------------------------------------------- Vertex AI Pipelines
GOOGLE_CLOUD_PROJECT = os.environ.get("GOOGLE_CLOUD_PROJECT", "")
GOOGLE_CLOUD_REGION = env("REGION", "us-central1")
GCS_BUCKET_NAME = env("GCS_BUCKET", (GOOGLE_CLOUD_PROJECT or "my-project") + "-vertex-pipelines")
PIPELINE_IMAGE = env("PIPELINE_IMAGE", f"gcr.io/{GOOGLE_CLOUD_PROJECT or 'my-project'}/{PIPELINE_NAME}:latest")
VERTEX_PIPELINE_ROOT = env("VERTEX_PIPELINE_ROOT", f"gs://{GCS_BUCKET_NAME}/tfx_pipeline_output/{PIPELINE_NAME}")
VERTEX_DATA_ROOT = env("VERTEX_DATA_ROOT", f"gs://{GCS_BUCKET_NAME}/data/{PIPELINE_NAME}")
VERTEX_SERVING_MODEL_DIR = env("VERTEX_SERVING_MODEL_DIR", f"{VERTEX_PIPELINE_ROOT}/serving_model")


# --------------------------------------------------------------------------- presets
# `synthseg pipeline run --preset NAME`: sizes and steps (pipeline.create_pipeline arguments, plus
# `shards` for the TFRecord conversion). "demo" runs in a few minutes on 2 CPU cores (a 20-step GAN
# with 8 base filters, 16 synthetic samples, two 20-step U-Nets) and always blesses (min_mean_iou 0,
# a tolerance of 1.0 against the baseline), so the run ends with a pushed model; "full" is the env
# defaults above.
PRESETS: Dict[str, Dict[str, Any]] = {
    "demo": {"image_size": (64, 64), "backbone": "resnet18", "batch_size": 4, "train_steps": 20, "eval_steps": 2,
             "min_mean_iou": 0.0, "max_mean_iou_drop": 1.0, "synthetic_n": 16, "shards": 2, "log_every": 5,
             "train_gan": True, "gan_steps": 20, "gan_batch_size": 4, "gan_base_filters": 8, "gan_log_every": 5},
    "small": {"image_size": (128, 128), "backbone": "resnet34", "batch_size": 8, "train_steps": 300,
              "eval_steps": 10, "min_mean_iou": 0.1, "max_mean_iou_drop": MAX_MEAN_IOU_DROP, "synthetic_n": 200,
              "shards": 4, "log_every": 25, "train_gan": True, "gan_steps": 500, "gan_batch_size": 4,
              "gan_base_filters": 32, "gan_log_every": 50},
    "full": {"image_size": IMAGE_SIZE, "backbone": BACKBONE, "batch_size": BATCH_SIZE, "train_steps": TRAIN_NUM_STEPS,
             "eval_steps": EVAL_NUM_STEPS, "min_mean_iou": MIN_MEAN_IOU, "max_mean_iou_drop": MAX_MEAN_IOU_DROP,
             "synthetic_n": SYNTHETIC_N, "shards": 4, "log_every": 50, "train_gan": TRAIN_GAN,
             "gan_steps": GAN_STEPS, "gan_batch_size": GAN_BATCH_SIZE, "gan_base_filters": GAN_BASE_FILTERS,
             "gan_log_every": 100},
}


# --------------------------------------------------------------------------- classification
# `synthseg pipeline run --task classification` (pipeline.classification_pipeline): class-folder data,
# the class-conditional GAN, synthetic images of the rare classes, CNN classifiers, blessing on macro-F1.
# The "full" values mirror the classification experiment (GAN_DEFAULTS: 1500 steps, batch 16, 32 base
# filters; generation min_confidence 0.5) and can be overridden with SYNTHSEG_TFX_CLS_* variables.
CLS_IMAGE_SIZE = parse_size(env("CLS_IMAGE_SIZE", "64x64"))  # H, W: multiples of 16
CLS_BATCH_SIZE = env_int("CLS_BATCH_SIZE", 32)
CLS_LEARNING_RATE = env_float("CLS_LEARNING_RATE", 2e-3)
CLS_TRAIN_STEPS = env_int("CLS_TRAIN_STEPS", 2000)
CLS_EVAL_STEPS = env_int("CLS_EVAL_STEPS", 10)
MIN_MACRO_F1 = env_float("MIN_MACRO_F1", 0.0)
MAX_MACRO_F1_DROP = env_float("MAX_MACRO_F1_DROP", 0.01)
CLS_GAN_STEPS = env_int("CLS_GAN_STEPS", 1500)
CLS_GAN_BATCH_SIZE = env_int("CLS_GAN_BATCH_SIZE", 16)
CLS_GAN_BASE_FILTERS = env_int("CLS_GAN_BASE_FILTERS", 32)
CLS_SYNTHETIC_N = env_int("CLS_SYNTHETIC_N", 1000)
CLS_LABELS = env("CLS_LABELS", "rare")  # class ids of the synthetic images: rare | balanced | random | <id>
MIN_CONFIDENCE = env_float("MIN_CONFIDENCE", 0.5)  # the confidence filter (real-only classifier); unset: 0.5

# "demo" runs in a few minutes on 2 CPU cores (32x32 images, a 20-step GAN with 8 base filters, 32 synthetic
# images, two 60-step classifiers) and always blesses (min_macro_f1 0, a tolerance of 1.0 against the
# baseline, a confidence filter of 0 that keeps every image), so the run ends with a pushed model.
CLASSIFICATION_PRESETS: Dict[str, Dict[str, Any]] = {
    "demo": {"image_size": (32, 32), "batch_size": 16, "train_steps": 60, "eval_steps": 2, "min_macro_f1": 0.0,
             "max_macro_f1_drop": 1.0, "synthetic_n": 32, "shards": 2, "log_every": 10, "train_gan": True,
             "gan_steps": 20, "gan_batch_size": 8, "gan_base_filters": 8, "gan_log_every": 5, "min_quality": 0.0,
             "labels": "rare"},
    "small": {"image_size": (64, 64), "batch_size": 32, "train_steps": 500, "eval_steps": 5, "min_macro_f1": 0.0,
              "max_macro_f1_drop": MAX_MACRO_F1_DROP, "synthetic_n": 300, "shards": 4, "log_every": 50,
              "train_gan": True, "gan_steps": 500, "gan_batch_size": 16, "gan_base_filters": 32, "gan_log_every": 50,
              "min_quality": MIN_CONFIDENCE, "labels": CLS_LABELS},
    "full": {"image_size": CLS_IMAGE_SIZE, "batch_size": CLS_BATCH_SIZE, "train_steps": CLS_TRAIN_STEPS,
             "eval_steps": CLS_EVAL_STEPS, "min_macro_f1": MIN_MACRO_F1, "max_macro_f1_drop": MAX_MACRO_F1_DROP,
             "synthetic_n": CLS_SYNTHETIC_N, "shards": 4, "log_every": 100, "train_gan": TRAIN_GAN,
             "gan_steps": CLS_GAN_STEPS, "gan_batch_size": CLS_GAN_BATCH_SIZE, "gan_base_filters": CLS_GAN_BASE_FILTERS,
             "gan_log_every": 100, "min_quality": MIN_CONFIDENCE, "labels": CLS_LABELS},
}
TASK_PRESETS = {"segmentation": PRESETS, "classification": CLASSIFICATION_PRESETS}


def preset(name: str, task: str = "segmentation") -> Dict[str, Any]:
    """A copy of the ``task``'s preset ``name`` (``ValueError`` naming the choices for an unknown name/task)."""
    if task not in TASK_PRESETS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASK_PRESETS)}")
    presets = TASK_PRESETS[task]
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return dict(presets[name])


def dataflow_beam_args(project: str = GOOGLE_CLOUD_PROJECT, region: str = GOOGLE_CLOUD_REGION,
                       bucket: str = GCS_BUCKET_NAME, image: str = PIPELINE_IMAGE,
                       temp_location: Optional[str] = None) -> List[str]:
    """Beam args that run the Beam components (and the generation job) on Dataflow with the pipeline image.

    ``temp_location`` defaults to ``gs://<bucket>/tmp``.
    """
    return [f"--project={project}", f"--region={region}", "--runner=DataflowRunner",
            f"--temp_location={temp_location or f'gs://{bucket}/tmp'}", f"--sdk_container_image={image}",
            "--experiments=use_runner_v2"]
