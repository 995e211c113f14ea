"""``SyntheticGeneration``: a custom TFX component that renders synthetic training examples.

It wraps :func:`synthseg_tf.generation.pipeline.run_generation` (the library's Beam job: new
label maps -> pix2pix generator -> optional quality filter -> TFRecords in the package's
``tf.Example`` schema) and publishes the result as a standard ``Examples`` artifact.

Inputs
------
``generator`` (``Model``)
    The artifact's uri is a ``synthseg gan train`` run folder (``config.json`` +
    ``generator/``) or a generator SavedModel from ``synthseg gan export``; a
    ``Format-Serving/`` sub-folder holding one of those is accepted too. In a pipeline it is
    usually brought in with ``tfx.dsl.Importer(source_uri=..., artifact_type=Model)``. Remote
    (``gs://``) models are read where they are (``tf.io.gfile``), by the driver and by every
    worker. With ``masks="sample"`` the label maps come from the dataset spec recorded in the
    GAN run's ``config.json`` (``data``), which must be readable where the executor runs.
``real_examples`` (``Examples``, optional)
    Real examples (ExampleGen's output). When given, their splits are copied next to the
    generated samples (``real-*`` files), so the output is the *augmented* training set:
    ``Split-train`` = real train + synthetic, every other split (``eval``) = real only.
    This exists because TFX's Transform/Trainer need every ``Examples`` artifact of an input
    channel to have the same splits, and neither ``tfx.dsl.union`` nor multi-artifact
    inputs compile for Vertex AI Pipelines; one self-contained artifact works on both.
``quality_model`` (``Model``, optional)
    A segmenter export (``Trainer`` output or ``synthseg unet train``'s ``model/``) used by the
    quality filter for a label-map generator, or a classifier export (the classification
    pipeline's real-only ``BaselineTrainer``, ``synthseg classifier train``'s ``model/``) for a
    class-conditional one (score: its probability of the intended class); required when
    ``min_quality`` is set.

Parameters: ``n`` (samples kept), ``seed``, ``masks`` ("sample" = the label-map sampler on
the generator's training maps, "sample:SPEC" or a dataset spec), ``class_balance`` (e.g.
``"rare"``), ``min_quality``, ``labels`` (class ids of a class-conditional generator:
``balanced`` (default), ``random``, ``rare`` or one id; see ``GenerationConfig.labels``),
``samples_per_shard``, ``batch_size``, ``write_png`` (0/1).
Beam arguments come the usual TFX way: the pipeline's ``beam_pipeline_args`` plus
``component.with_beam_pipeline_args([...])`` (or ``beam_pipeline_args=`` here; these come last,
so they win). ``--runner`` and ``--direct_num_workers`` select the library's runner and worker
count (``0`` = one per CPU, multi-processing). The generation job runs on the Beam pipeline TFX
makes from those arguments (``_make_beam_pipeline``), so ``--runner=DataflowRunner`` (with its
``--project``/``--region``/``--temp_location``) runs it on Dataflow: the workers write each shard
straight into the output artifact through Beam's ``FileSystems`` (``gs://``), and the driver reads
the shards back from there (:mod:`synthseg_tf.generation.outfs`); no disk is shared.

Output ``examples`` (``Examples``) layout::

    <uri>/Split-train/synthetic-SSSSS.tfrecord.gz   generated samples (gzipped TFRecords)
    <uri>/Split-train/real-*.gz                     only with real_examples
    <uri>/Split-eval/real-*.gz                      only with real_examples
    <uri>/generation/   the generation folder itself (written there by the workers): manifest.jsonl
                        generation.json classes.json dataset.json parts/ data-*.tfrecord [images/ masks/]

Properties: ``split_names`` (``["train"]`` or the real splits), custom properties
``payload_format = FORMAT_TF_EXAMPLE`` and ``file_format = tfrecords_gzip`` (what
ExampleGen writes and what StatisticsGen/Transform/Trainer/Evaluator read; the readers pick
GZIP from the ``.gz`` suffix), ``synthetic_count``, ``generator_fingerprint``,
``includes_real_examples``. The split folders hold record files only, because TFX reads
``Split-<name>/*``; the manifest and PNGs live in ``generation/``.

Why class-based (``BaseBeamComponent`` + ``BaseBeamExecutor`` + ``ComponentSpec``) rather than a
``@component`` function: the executor hands ``run_generation`` TFX's pipeline factory
(``self._make_beam_pipeline``, built from the Beam arguments ``BeamExecutorSpec`` merges from the
pipeline and the component on every orchestrator, Vertex included), so a rerun that needs a second
pass (a quality filter that kept fewer samples than estimated) can make another pipeline; a
``ComponentSpec`` also gives typed optional inputs/parameters that the Kubeflow V2 compiler maps
directly.

The library itself never imports TFX; only this module and ``pipeline/`` do.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from synthseg_tf.generation import outfs

GENERATOR_KEY = "generator"
REAL_EXAMPLES_KEY = "real_examples"
QUALITY_MODEL_KEY = "quality_model"
EXAMPLES_KEY = "examples"

TRAIN_SPLIT = "train"
GENERATION_DIR = "generation"
SYNTHETIC_PREFIX = "synthetic-"
REAL_PREFIX = "real-"
FILE_FORMAT = "tfrecords_gzip"
# The library's own run metadata, copied into <uri>/generation/.

_DEFAULTS = {"seed": 0, "masks": "sample", "samples_per_shard": 200, "batch_size": 16, "write_png": 0}


# =========================================================================== spec
class SyntheticGenerationSpec(types.ComponentSpec):
    """Inputs, outputs and parameters of :class:`SyntheticGeneration`."""

    PARAMETERS = {
        "n": ExecutionParameter(type=int),
        "seed": ExecutionParameter(type=int, optional=True),
        "masks": ExecutionParameter(type=str, optional=True),
        "class_balance": ExecutionParameter(type=str, optional=True),
        "min_quality": ExecutionParameter(type=float, optional=True),
        "labels": ExecutionParameter(type=str, optional=True),
        "samples_per_shard": ExecutionParameter(type=int, optional=True),
        "batch_size": ExecutionParameter(type=int, optional=True),
        "write_png": ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        GENERATOR_KEY: ChannelParameter(type=standard_artifacts.Model),
        REAL_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        QUALITY_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
    }


# =========================================================================== helpers
def resolve_model_dir(uri: str, what: str, markers: Sequence[str]) -> str:
    """The folder inside a ``Model`` artifact that holds one of ``markers`` (uri or uri/Format-Serving)."""
    for cand in (uri, os.path.join(uri, "Format-Serving")):
        if any(fileio.exists(os.path.join(cand, m)) for m in markers):
            return cand
    raise FileNotFoundError(f"{what} artifact {uri}: none of {', '.join(markers)} found there or in "
                            "its Format-Serving/ folder")


def split_beam_args(beam_args: Sequence[str]) -> Tuple[str, int, List[str]]:
    """TFX Beam args -> (runner, DirectRunner worker count, the rest for ``run_generation``).

    The runner and worker count go into the job's ``GenerationConfig`` (logged and recorded);
    the pipeline itself is made by TFX from the full argument list.
    """
    runner, workers, rest = "DirectRunner", 1, []
    args = list(beam_args or [])
    i = 0
    while i < len(args):
        arg = str(args[i])
        name, eq, value = arg.partition("=")
        takes_next = not eq and i + 1 < len(args) and not str(args[i + 1]).startswith("--")
        if name in ("--runner", "--direct_num_workers", "--direct_running_mode"):
            if not eq:
                value = str(args[i + 1]) if takes_next else ""
                i += 1 if takes_next else 0
            if name == "--runner" and value:
                runner = "DirectRunner" if value.lower() in ("direct", "directrunner") else value
            elif name == "--direct_num_workers" and value:
                workers = int(value) if int(value) > 0 else (os.cpu_count() or 1)
        else:
            rest.append(arg)
        i += 1
    return runner, max(1, workers), rest


def _gzip_records(src: str, dst: str) -> int:
    """A generated TFRecord shard (any storage) as a gzipped TFRecord file (what ExampleGen writes
    and TFX readers expect); returns its record count."""
    import gzip

    data = outfs.read_bytes(src)
    n = len(outfs.read_tfrecords(data, src))
    outfs.write_bytes(dst, gzip.compress(data, compresslevel=6, mtime=0))
    return n


# =========================================================================== executor
class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs the library's generation job and lays its output out as a TFX ``Examples`` artifact."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        from synthseg_tf.generation.pipeline import GenerationConfig, run_generation

        self._log_startup(input_dict, output_dict, exec_properties)
        props = {**_DEFAULTS, **{k: v for k, v in exec_properties.items() if v is not None}}
        generator = resolve_model_dir(artifact_utils.get_single_uri(input_dict[GENERATOR_KEY]), "generator",
                                      ("config.json",))
        quality_model = None
        if input_dict.get(QUALITY_MODEL_KEY):
            quality_model = resolve_model_dir(artifact_utils.get_single_uri(input_dict[QUALITY_MODEL_KEY]),
                                              "quality_model", ("saved_model.pb",))
        out = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
        runner, workers, rest = split_beam_args(self._beam_pipeline_args)

        # The generation job writes straight into the output artifact (local or gs://) through Beam's
        # FileSystems, from the workers of the pipeline TFX makes from the merged Beam args (Dataflow
        # when configured); the models are read where they are (tf.io.gfile).
        gen_dir = os.path.join(out.uri, GENERATION_DIR)
        cfg = GenerationConfig(
            generator=generator, out=gen_dir, n=int(props["n"]), masks=str(props["masks"]),
            seed=int(props["seed"]), class_balance=props.get("class_balance") or None,
            min_quality=None if props.get("min_quality") is None else float(props["min_quality"]),
            quality_model=quality_model, labels=str(props.get("labels") or "balanced"),
            samples_per_shard=int(props["samples_per_shard"]),
            batch_size=int(props["batch_size"]), write_png=bool(int(props["write_png"])),
            runner=runner, workers=workers, beam_args=rest)
        logging.info("SyntheticGeneration: %d samples from %s into %s (runner %s)", cfg.n, generator, gen_dir, runner)
        summary = run_generation(cfg, log=logging.info, pipeline_factory=self._make_beam_pipeline)

        train_dir = os.path.join(out.uri, f"Split-{TRAIN_SPLIT}")
        fileio.makedirs(train_dir)
        count = 0
        for path in outfs.files(gen_dir, r"^data-\d{5}\.tfrecord$"):
            shard = outfs.basename(path)[len("data-"):-len(".tfrecord")]
            count += _gzip_records(path, os.path.join(train_dir, f"{SYNTHETIC_PREFIX}{shard}.tfrecord.gz"))
        if count != int(summary["kept"]):
            raise RuntimeError(f"generation reported {summary['kept']} samples but its shards hold {count}")

        splits = [TRAIN_SPLIT]
        real = input_dict.get(REAL_EXAMPLES_KEY) or []
        for artifact in real:
            for split in artifact_utils.decode_split_names(artifact.split_names):
                src_dir = artifact_utils.get_split_uri([artifact], split)
                dst_dir = os.path.join(out.uri, f"Split-{split}")
                fileio.makedirs(dst_dir)
                for src in sorted(fileio.glob(os.path.join(src_dir, "*"))):
                    fileio.copy(src, os.path.join(dst_dir, REAL_PREFIX + os.path.basename(src)), overwrite=True)
                if split not in splits:
                    splits.append(split)
            fmt = artifact.get_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME) \
                if artifact.has_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME) else FILE_FORMAT
            if fmt != FILE_FORMAT:
                raise ValueError(f"real_examples are {fmt!r}; SyntheticGeneration can only merge {FILE_FORMAT}")

        out.split_names = artifact_utils.encode_split_names(splits)
        out.set_string_custom_property(example_gen_utils.PAYLOAD_FORMAT_PROPERTY_NAME,
                                       example_gen_pb2.PayloadFormat.Name(example_gen_pb2.FORMAT_TF_EXAMPLE))
        out.set_string_custom_property(example_gen_utils.FILE_FORMAT_PROPERTY_NAME, FILE_FORMAT)
        out.set_int_custom_property("synthetic_count", count)
        out.set_int_custom_property("includes_real_examples", 1 if real else 0)
        out.set_string_custom_property("generator_fingerprint",
                                       str(summary.get("identity", {}).get("generator_fingerprint", "")))
        logging.info("SyntheticGeneration: %d synthetic samples in %s (splits %s)", count, out.uri, splits)


# =========================================================================== component
class SyntheticGeneration(base_beam_component.BaseBeamComponent):
    """Render ``n`` synthetic (image, label map) examples with a pix2pix generator.

    Example::

        generator = tfx.dsl.Importer(source_uri="runs/gan", artifact_type=tfx.types.standard_artifacts.Model
                                     ).with_id("generator_importer")
        synthetic = SyntheticGeneration(generator=generator.outputs["result"], n=1000,
                                        class_balance="rare", real_examples=example_gen.outputs["examples"])
        transform = tfx.components.Transform(examples=synthetic.outputs["examples"], ...)
    """

    SPEC_CLASS = SyntheticGenerationSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, generator: types.BaseChannel, n: int, real_examples: Optional[types.BaseChannel] = None,
                 quality_model: Optional[types.BaseChannel] = None, seed: int = 0, masks: str = "sample",
                 class_balance: Optional[str] = None, min_quality: Optional[float] = None,
                 labels: Optional[str] = None, samples_per_shard: int = 200, batch_size: int = 16, write_png: bool = False,
                 beam_pipeline_args: Optional[Sequence[str]] = None):
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if min_quality is not None and quality_model is None:
            raise ValueError("min_quality needs a quality_model channel (a segmenter or classifier Model artifact)")
        spec = SyntheticGenerationSpec(
            generator=generator, real_examples=real_examples, quality_model=quality_model,
            n=int(n), seed=int(seed), masks=str(masks), class_balance=class_balance,
            min_quality=None if min_quality is None else float(min_quality),
            labels=None if labels is None else str(labels), samples_per_shard=int(samples_per_shard), batch_size=int(batch_size), write_png=int(bool(write_png)),
            examples=types.Channel(type=standard_artifacts.Examples))
        super().__init__(spec=spec)
        if beam_pipeline_args:
            self.with_beam_pipeline_args(list(beam_pipeline_args))
