"""Pipeline fault: a component that fails (injected into the Trainer) leaves ML Metadata
consistent - the finished components COMPLETE, the failed one FAILED with no live output - and a
rerun with caching reuses the finished components and completes the pipeline."""
import glob
import os
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if REPO not in sys.path:  # `components` / `pipeline` live at the repository root
    sys.path.insert(0, REPO)

import synthseg_tf  # noqa: E402,F401

pytest.importorskip("tfx")

SPEC = "demo-scenes?n=24&size=32"
UPSTREAM = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "Transform"]

FAILING_MODULE = '''
import os

from pipeline.module_file import *  # noqa: F401,F403  (preprocessing_fn and the real run_fn)
from pipeline.module_file import run_fn as _real_run_fn

FLAG = {flag!r}


def run_fn(fn_args):
    if os.path.exists(FLAG):
        raise RuntimeError("injected Trainer failure (flag file " + FLAG + ")")
    return _real_run_fn(fn_args)
'''


def _state(metadata_path):
    """({node: [execution state names]}, {node: [(artifact type, state name)] of its outputs})."""
    import ml_metadata as mlmd
    from tfx.orchestration import metadata

    names = {v: k for k, v in mlmd.proto.Execution.State.items()}
    anames = {v: k for k, v in mlmd.proto.Artifact.State.items()}
    states, outputs = {}, {}
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        node_type = m.store.get_context_type("node")
        for ctx in m.store.get_contexts_by_type(node_type.name):
            node = ctx.name.split(".", 1)[1]
            execs = sorted(m.store.get_executions_by_context(ctx.id), key=lambda e: e.id)  # in run order
            states[node] = [names[e.last_known_state] for e in execs]
            events = m.store.get_events_by_execution_ids([e.id for e in execs])
            out_ids = [ev.artifact_id for ev in events if ev.type == mlmd.proto.Event.OUTPUT]
            outputs[node] = [anames[a.state] for a in m.store.get_artifacts_by_id(out_ids)]
    return states, outputs


def test_a_failed_component_leaves_metadata_consistent_and_the_rerun_resumes_from_cache(tmp_path):
    from tfx import v1 as tfx

    from pipeline import local_runner
    from pipeline.pipeline import create_pipeline

    flag = tmp_path / "fail-trainer"
    flag.write_text("1")
    module = tmp_path / "failing_module.py"
    module.write_text(FAILING_MODULE.format(flag=str(flag)))
    data = local_runner.prepare_data(str(tmp_path / "data"), SPEC, shards=1)
    paths = local_runner.paths(str(tmp_path / "out"), "synthseg-fault")
    os.makedirs(os.path.dirname(paths["metadata_path"]), exist_ok=True)

    def pipeline():
        return create_pipeline("synthseg-fault", paths["pipeline_root"], data,
                               serving_model_dir=paths["serving_model_dir"], metadata_path=paths["metadata_path"],
                               image_size=(32, 32), batch_size=4, train_steps=1, eval_steps=1, until="Trainer",
                               module_file=str(module), enable_cache=True, backbone="resnet18")

    with pytest.raises(Exception, match="injected Trainer failure"):
        tfx.orchestration.LocalDagRunner().run(pipeline())
    states, outputs = _state(paths["metadata_path"])
    assert all(states[n] == ["COMPLETE"] for n in UPSTREAM), states
    assert states["Trainer"] == ["FAILED"], states
    assert "LIVE" not in outputs["Trainer"]  # the failed run published nothing downstream could consume
    assert not glob.glob(os.path.join(paths["pipeline_root"], "Trainer", "model", "*", "Format-Serving",
                                      "saved_model.pb"))

    flag.unlink()  # the fault is gone: the rerun reuses every finished component
    tfx.orchestration.LocalDagRunner().run(pipeline())
    states, outputs = _state(paths["metadata_path"])
    assert all(states[n] == ["COMPLETE", "CACHED"] for n in UPSTREAM), states
    assert states["Trainer"] == ["FAILED", "COMPLETE"], states
    assert outputs["Trainer"].count("LIVE") >= 1
    assert glob.glob(os.path.join(paths["pipeline_root"], "Trainer", "model", "*", "Format-Serving",
                                  "saved_model.pb"))
