"""The GAN inside the TFX pipeline: RealTransform -> GanTrainer -> SyntheticGeneration -> Transform ->
Trainer (real + synthetic) and BaselineTrainer (real only) -> Evaluator (candidate against the baseline).

One local run (LocalDagRunner, SQLite ML Metadata) on 24 demo scenes at 32x32 with a 4-step GAN and
2-step U-Nets; the lineage is checked in ML Metadata, the generator run folder with the library's
renderer, and the synthetic maps' provenance against the train split. The pure parts (node lists,
the eval config, the GanTrainer's progress lines) are checked without running anything.
"""
import glob
import json
import logging
import os
import sys

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:  # `pipeline` lives at the repository root
    sys.path.insert(0, REPO)

import synthseg_tf  # noqa: E402,F401  (environment settings before TensorFlow loads)

pytest.importorskip("tfx")

SPEC = "demo-scenes?n=24&size=32"
SIZE = 32
N_SYNTHETIC = 8
GAN_STEPS = 4
NODES = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "GanTrainer",
         "SyntheticGeneration", "Transform", "BaselineTrainer", "Trainer", "Evaluator", "Pusher"]


def _count_records(pattern):
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP")) if files else 0


def _lineage(metadata_path):
    """{node: {"state", "inputs": {key: [artifact ids]}, "outputs": {key: [artifact ids]}, "properties"}} and
    {artifact id: artifact} of the (single) run."""
    import ml_metadata as mlmd
    from tfx.orchestration import metadata

    out = {}
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        store = m.store
        node_type = store.get_context_type("node")
        for ctx in store.get_contexts_by_type(node_type.name):
            node = ctx.name.split(".", 1)[1]
            executions = store.get_executions_by_context(ctx.id)
            assert len(executions) == 1, (node, executions)
            x = executions[0]
            entry = {"state": x.last_known_state, "inputs": {}, "outputs": {}, "properties": x.custom_properties}
            for e in store.get_events_by_execution_ids([x.id]):
                side = "inputs" if e.type == mlmd.proto.Event.INPUT else "outputs"
                entry[side].setdefault(e.path.steps[0].key, []).append(e.artifact_id)
            out[node] = entry
        artifacts = {a.id: a for a in store.get_artifacts()}
    return out, artifacts


# ---------------------------------------------------------------------------------------------- pure parts
def test_node_lists_and_baseline_eval_config(tmp_path):
    import tensorflow_model_analysis as tfma

    from pipeline.pipeline import create_pipeline, make_eval_config, pipeline_nodes

    assert pipeline_nodes(train_gan=True) == NODES
    assert pipeline_nodes(generator_dir="gs://b/gan") == [
        "ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "generator_importer",
        "SyntheticGeneration", "Transform", "BaselineTrainer", "Trainer", "Evaluator", "Pusher"]
    plain = pipeline_nodes()
    assert "GanTrainer" not in plain and "BaselineTrainer" not in plain and "latest_blessed_model_resolver" in plain
    no_baseline = pipeline_nodes(train_gan=True, train_baseline=False)
    assert "GanTrainer" in no_baseline and "RealTransform" in no_baseline and "BaselineTrainer" not in no_baseline

    cfg = make_eval_config(3, 0.1, 0.05, baseline=True)
    assert [(s.name, s.is_baseline) for s in cfg.model_specs] == [("candidate", False), ("baseline", True)]
    iou = [m for m in cfg.metrics_specs[0].metrics if m.class_name == "MeanIoUIgnore"][0]
    assert iou.threshold.change_threshold.absolute.value == pytest.approx(-0.05)
    assert iou.threshold.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER

    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b"]}))
    with pytest.raises(ValueError, match="until must be one of"):
        create_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir="s", until="GanTrainer")
    p = create_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir="s", train_gan=True,
                        until="GanTrainer")
    assert [c.id for c in p.components][-2:] == ["RealTransform", "GanTrainer"]


def test_gan_progress_lines():
    from pipeline.gan_module_file import _ProgressLines

    lines = []
    p = _ProgressLines(batch_size=4, log=lines.append)
    print("resumed /x at step 10", file=p)
    print("step 12/20 (2.0s) g_total=3.5 d_loss=0.7", file=p)
    p.write("step 16/20 (4.0s) g_total=2.5 ")
    p.write("d_loss=0.6\n")
    assert lines[0] == "GanTrainer: resumed /x at step 10"
    assert lines[1] == "GanTrainer: step 12/20 g_total=3.5 d_loss=0.7 4.0 images/s"
    assert lines[2] == "GanTrainer: step 16/20 g_total=2.5 d_loss=0.6 8.0 images/s"


# ---------------------------------------------------------------------------------------------- local run
@pytest.mark.slow
def test_gan_trainer_feeds_generation_and_evaluator_compares_with_baseline(tmp_path, caplog):
    import ml_metadata as mlmd
    import tensorflow_model_analysis as tfma

    from pipeline import local_runner
    from synthseg_tf.data import load, write_tfrecords
    from synthseg_tf.generation.pipeline import manifest_source_ids
    from synthseg_tf.generation.renderer import load_renderer
    from synthseg_tf.training.gan import read_config

    data = str(tmp_path / "data")
    write_tfrecords(load(SPEC), data, shards=2)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)  # the Trainers' progress lines are absl INFO lines
    caplog.set_level(logging.INFO)
    paths = local_runner.run(
        data, str(tmp_path / "out"), pipeline_name="synthseg-gan", image_size=(SIZE, SIZE), backbone="resnet18",
        batch_size=4, train_steps=2, eval_steps=1, min_mean_iou=0.0, max_mean_iou_drop=1.0, train_gan=True,
        gan_steps=GAN_STEPS, gan_batch_size=4, gan_base_filters=8, gan_log_every=2, synthetic_n=N_SYNTHETIC,
        synthetic_seed=1, class_balance="rare", beam_pipeline_args=[])
    root = paths["pipeline_root"]

    # ML Metadata: every node ran once; the GanTrainer's Model is what SyntheticGeneration consumed
    nodes, artifacts = _lineage(paths["metadata_path"])
    assert sorted(nodes) == sorted(NODES)
    assert all(nodes[n]["state"] == mlmd.proto.Execution.COMPLETE for n in NODES), {n: v["state"] for n, v in
                                                                                     nodes.items()}
    gan_model = nodes["GanTrainer"]["outputs"]["model"]
    assert len(gan_model) == 1 and nodes["SyntheticGeneration"]["inputs"]["generator"] == gan_model
    assert nodes["GanTrainer"]["inputs"]["examples"] == nodes["RealTransform"]["outputs"]["transformed_examples"]
    assert nodes["RealTransform"]["inputs"]["examples"] == nodes["ImportExampleGen"]["outputs"]["examples"]
    # the candidate trains on real + synthetic, the baseline on real only, both evaluated on the real eval split
    assert nodes["Transform"]["inputs"]["examples"] == nodes["SyntheticGeneration"]["outputs"]["examples"]
    assert nodes["Trainer"]["inputs"]["examples"] == nodes["Transform"]["outputs"]["transformed_examples"]
    assert nodes["BaselineTrainer"]["inputs"]["examples"] == nodes["RealTransform"]["outputs"]["transformed_examples"]
    evaluator = nodes["Evaluator"]
    assert evaluator["inputs"]["examples"] == nodes["ImportExampleGen"]["outputs"]["examples"]
    assert evaluator["inputs"]["model"] == nodes["Trainer"]["outputs"]["model"]
    assert evaluator["inputs"]["baseline_model"] == nodes["BaselineTrainer"]["outputs"]["model"]
    blessing = artifacts[evaluator["outputs"]["blessing"][0]]
    assert blessing.custom_properties["baseline_model_id"].int_value == nodes["BaselineTrainer"]["outputs"]["model"][0]
    assert blessing.custom_properties["blessed"].int_value == 1

    # the evaluation holds both models and the change threshold against the baseline
    eval_dir = artifacts[evaluator["outputs"]["evaluation"][0]].uri
    config = tfma.load_eval_result(eval_dir, model_name="candidate").config
    assert sorted((s.name, s.is_baseline) for s in config.model_specs) == [("baseline", True), ("candidate", False)]
    for name in ("candidate", "baseline"):
        values = tfma.load_eval_result(eval_dir, model_name=name).slicing_metrics[0][1][""][""]
        assert 0.0 <= values["mean_iou"]["doubleValue"] <= 1.0, (name, values)
    validation = tfma.load_validation_result(eval_dir)
    assert validation.validation_ok

    # the generator folder is a valid generator: the library's renderer draws a label map with it
    generator = os.path.join(artifacts[gan_model[0]].uri, "Format-Serving")
    assert {"config.json", "classes.json", "generator", "train_maps"} <= set(os.listdir(generator))
    renderer = load_renderer(generator)
    label_map = np.zeros((SIZE, SIZE), np.uint8)
    label_map[SIZE // 2:] = 1
    rgb = renderer.render(label_map)
    assert rgb.shape == (1, SIZE, SIZE, 3) and rgb.dtype == np.uint8
    gen_config = read_config(generator)
    assert gen_config["steps_done"] == GAN_STEPS and gen_config["base_filters"] == 8
    assert gen_config["image_size"] == [SIZE, SIZE] and gen_config["num_classes"] == 9
    # resumable: the checkpoints are in the GanTrainer's ModelRun artifact
    run_dir = artifacts[nodes["GanTrainer"]["outputs"]["model_run"][0]].uri
    assert glob.glob(os.path.join(run_dir, "gan_run", "checkpoints", f"ckpt-{GAN_STEPS}.index"))

    # honest protocol: the generator's label maps are exactly the real train split, and every synthetic
    # sample was built from them only
    real_dir = artifacts[nodes["ImportExampleGen"]["outputs"]["examples"][0]].uri
    n_train = _count_records(os.path.join(real_dir, "Split-train", "*"))
    n_eval = _count_records(os.path.join(real_dir, "Split-eval", "*"))
    assert n_train + n_eval == 24 and n_eval > 0
    maps = load(gen_config["data"])
    assert len(maps) == n_train == len(gen_config["train_source_ids"])
    syn_dir = artifacts[nodes["SyntheticGeneration"]["outputs"]["examples"][0]].uri
    used = manifest_source_ids(os.path.join(syn_dir, "generation"))
    assert used and used <= set(gen_config["train_source_ids"])
    xf_dir = artifacts[nodes["Transform"]["outputs"]["transformed_examples"][0]].uri
    assert _count_records(os.path.join(xf_dir, "Split-train", "*")) == n_train + N_SYNTHETIC

    # progress lines of the GanTrainer
    gan_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GanTrainer: step ")]
    assert gan_lines and all("images/s" in ln and "g_" in ln for ln in gan_lines), gan_lines
    assert any(r.getMessage().startswith("BaselineTrainer: step ") for r in caplog.records)

    # the run summary the command line prints
    s = local_runner.summarize(paths)
    assert s["generator"] == generator and s["generator_node"] == "GanTrainer"
    assert s["synthetic_count"] == N_SYNTHETIC and s["blessed"] is True and s["pushed_model"]
    assert set(s["metrics"]) >= {"mean_iou", "pixel_accuracy"} and "mean_iou" in s["baseline_metrics"]
    assert s["cached"] == [] and set(s["executions"]) == set(NODES)
