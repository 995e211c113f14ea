"""``synthseg pipeline run --preset demo``: the GanTrainer path from the command line, in-process.

A first run on 24 demo scenes at 32x32 (the demo preset with fewer steps) prints the generator, the
synthetic examples, both evaluations and the blessing, and every printed path exists; a second
run with ``--cache`` reuses every component, which both the command's report and ML Metadata
(the latest run's executions are all ``CACHED``) show.
"""
import os
import re
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import synthseg_tf  # noqa: E402,F401  (environment settings before TensorFlow loads)

pytest.importorskip("tfx")

ARGS = ["--data", "demo-scenes?n=24&size=32", "--preset", "demo", "--image-size", "32", "--gan-steps", "4",
        "--train-steps", "2", "--eval-steps", "1", "--synthetic-n", "8", "--name", "synthseg-cli", "--cache"]
NODES = {"ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "GanTrainer",
         "SyntheticGeneration", "Transform", "BaselineTrainer", "Trainer", "Evaluator", "Pusher"}


def _field(text: str, label: str) -> str:
    m = re.search(rf"^  {re.escape(label)}:\s+(\S+)", text, re.M)
    assert m, f"no {label!r} line in:\n{text}"
    return m.group(1)


def _latest_states(metadata_path):
    from tfx.orchestration import metadata

    from synthseg_tf_tfx.pipeline.local_runner import latest_run

    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        return {node: v["state"] for node, v in latest_run(m.store).items()}


@pytest.mark.slow
def test_pipeline_run_demo_preset_then_cached_rerun(tmp_path, capsys):
    from synthseg_tf.cli import main

    out = tmp_path / "run"
    assert main(["pipeline", "run", "--out", str(out), *ARGS]) == 0
    text = capsys.readouterr().out
    assert "-> GanTrainer ->" in text and "BaselineTrainer" in text
    for label in ("generator", "synthetic examples", "baseline model (real data only)", "trained model", "evaluation",
                  "pushed model", "metadata (ML Metadata, SQLite)"):
        assert os.path.exists(_field(text, label)), label
    assert "(trained by the GanTrainer)" in text and "(8 samples" in text
    assert re.search(r"^  evaluation: .*mean_iou \d\.\d{4}", text, re.M)
    assert re.search(r"^  baseline evaluation: .*mean_iou \d\.\d{4}", text, re.M)
    assert "  blessing:      BLESSED (mean_iou >= 0.0 and at most 1.0 below the baseline's)" in text
    assert os.path.isfile(os.path.join(_field(text, "generator"), "config.json"))
    metadata_path = _field(text, "metadata (ML Metadata, SQLite)")
    first = _latest_states(metadata_path)
    assert set(first) == NODES and set(first.values()) == {"COMPLETE"}, first

    # the same command again with --cache: nothing runs again
    assert main(["pipeline", "run", "--out", str(out), *ARGS]) == 0
    again = capsys.readouterr().out
    assert f"({len(NODES)} of {len(NODES)} components reused from the cache" in again
    assert "data: reusing" in again
    second = _latest_states(metadata_path)
    assert set(second) == NODES and set(second.values()) == {"CACHED"}, second
    assert _field(again, "generator") == _field(text, "generator")
    assert _field(again, "synthetic examples") == _field(text, "synthetic examples")
