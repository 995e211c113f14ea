"""Pipeline settings: names, paths, sizes, steps. Every value can be overridden by an environment
variable (``SYNTHSEG_TFX_<NAME>``) so the same code serves a laptop run, CI and Vertex AI.

Nothing here touches the network (no ``google.auth.default()`` probing): the Google Cloud
project and bucket come from ``GOOGLE_CLOUD_PROJECT`` / ``SYNTHSEG_TFX_GCS_BUCKET``.
"""
from __future__ import annotations

import os
import shlex
from typing import List, Optional, Tuple

_PREFIX = "SYNTHSEG_TFX_"


def env(name: str, default: Optional[str] = None) -> Optional[str]:
    """``SYNTHSEG_TFX_<name>`` if set and non-empty, else ``default``."""
    v = os.environ.get(_PREFIX + name)
    return v if v not in (None, "") else default


def env_int(name: str, default: int) -> int:
    return int(env(name, str(default)))


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


def dataflow_beam_args(project: str = GOOGLE_CLOUD_PROJECT, region: str = GOOGLE_CLOUD_REGION,
                       bucket: str = GCS_BUCKET_NAME, image: str = PIPELINE_IMAGE) -> List[str]:
    """Beam args that run the Beam components (and the generation job) on Dataflow with the pipeline image."""
    return [f"--project={project}", f"--region={region}", "--runner=DataflowRunner",
            f"--temp_location=gs://{bucket}/tmp", f"--sdk_container_image={image}",
            "--experiments=use_runner_v2"]
