"""The classification TFX pipeline (``--task classification``): class-folder TFRecords -> RealTransform ->
GanTrainer (class-conditional pix2pix) + BaselineTrainer (CNN, real only; also the confidence filter) ->
SyntheticGeneration (labels="rare") -> Transform -> Trainer (CNN, real + synthetic) -> Evaluator (macro-F1,
accuracy; candidate against the baseline) -> Pusher.

One local run (LocalDagRunner, SQLite ML Metadata) on 36 tiny 32x32 class-folder images of 4 imbalanced
classes, a 4-step GAN and 3-step classifiers: the lineage is checked in ML Metadata, the generator with
the library's renderer, the synthetic images' classes and provenance, TFMA's macro-F1 against the
library's own report, and the pushed model is loaded and served. The pure parts (node lists, the eval
config, MacroF1, presets) and the Vertex compile run without training anything.
"""
import glob
import json
import os
import socket
import sys

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:  # `pipeline` lives at the repository root
    sys.path.insert(0, REPO)

import synthseg_tf  # noqa: E402,F401  (environment settings before TensorFlow loads)

pytest.importorskip("tfx")

SIZE = 32
COUNTS = (14, 10, 7, 5)  # imbalanced: the last classes are the rare ones
N_SYNTHETIC = 8
GAN_STEPS = 4
NODES = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "GanTrainer",
         "BaselineTrainer", "SyntheticGeneration", "Transform", "Trainer", "Evaluator", "Pusher"]
IMAGE = "europe-west4-docker.pkg.dev/test-project/synthseg/synthseg-tfx:test"
ROOT = "gs://bucket/tfx/synthseg-cls"


def write_class_folders(root, counts=COUNTS, size=(SIZE, SIZE)):
    """A tiny ``classfolders`` dataset drawn with the demo renderer; returns the class names."""
    from synthseg_tf.data import demo
    from synthseg_tf.data.io import encode_png

    names = []
    for cid, n in enumerate(counts):
        name = demo.CLASSIFICATION_CLASSES[cid]
        names.append(name)
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            with open(os.path.join(d, f"{name}_{i:04d}.png"), "wb") as f:
                f.write(encode_png(demo.render_class_image(0, cid, i, size)))
    return sorted(names)


def _count_records(pattern):
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP")) if files else 0


def _records(pattern):
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _lineage(metadata_path):
    """{node: {"state", "inputs": {key: [artifact ids]}, "outputs": {key: [artifact ids]}}} and
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
            entry = {"state": x.last_known_state, "inputs": {}, "outputs": {}}
            for e in store.get_events_by_execution_ids([x.id]):
                side = "inputs" if e.type == mlmd.proto.Event.INPUT else "outputs"
                entry[side].setdefault(e.path.steps[0].key, []).append(e.artifact_id)
            out[node] = entry
        artifacts = {a.id: a for a in store.get_artifacts()}
    return out, artifacts


# ---------------------------------------------------------------------------------------------- pure parts
def test_nodes_eval_config_and_presets(tmp_path):
    import tensorflow_model_analysis as tfma

    from pipeline import configs
    from pipeline.classification_pipeline import create_classification_pipeline, make_eval_config, pipeline_nodes
    from pipeline.pipeline import builder, create_pipeline, nodes_of

    assert pipeline_nodes(train_gan=True) == NODES
    assert nodes_of("classification", train_gan=True) == NODES
    assert pipeline_nodes(generator_dir="gs://b/gan", quality_model_dir="gs://b/q") == [
        "ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "RealTransform", "generator_importer",
        "BaselineTrainer", "quality_model_importer", "SyntheticGeneration", "Transform", "Trainer", "Evaluator",
        "Pusher"]
    plain = pipeline_nodes()
    assert "GanTrainer" not in plain and "BaselineTrainer" not in plain and "latest_blessed_model_resolver" in plain
    assert builder("classification") is create_classification_pipeline and builder() is create_pipeline
    with pytest.raises(ValueError, match="task must be one of"):
        builder("detection")

    cfg = make_eval_config(4, 0.1, 0.05, baseline=True)
    assert [(s.name, s.is_baseline, s.label_key, s.signature_name) for s in cfg.model_specs] == [
        ("candidate", False, "label", "serving_tf_example"), ("baseline", True, "label", "serving_tf_example")]
    metrics = {m.class_name: m for m in cfg.metrics_specs[0].metrics}
    assert set(metrics) == {"SparseCategoricalAccuracy", "MacroF1"}
    f1 = metrics["MacroF1"]
    assert f1.module.endswith("pipeline.classification_module_file") and json.loads(f1.config)["num_classes"] == 4
    assert f1.threshold.value_threshold.lower_bound.value == pytest.approx(0.1)
    assert f1.threshold.change_threshold.absolute.value == pytest.approx(-0.05)
    assert f1.threshold.change_threshold.direction == tfma.MetricDirection.HIGHER_IS_BETTER

    demo = configs.preset("demo", "classification")
    assert demo["train_gan"] and demo["min_quality"] == 0.0 and demo["labels"] == "rare"
    assert configs.preset("demo") != demo  # the segmentation preset is another one
    with pytest.raises(ValueError, match="unknown task"):
        configs.preset("demo", "detection")

    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    p = create_classification_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir="s",
                                       train_gan=True, until="SyntheticGeneration")
    built = {c.id: c for c in p.components}  # (TFX orders them topologically)
    assert set(built) == set(NODES[:NODES.index("SyntheticGeneration") + 1])
    gen = built["SyntheticGeneration"]
    assert gen.exec_properties["labels"] == "rare" and gen.exec_properties["min_quality"] == 0.5
    assert gen.exec_properties["masks"] == "sample"
    with pytest.raises(ValueError, match="multiples of 16"):
        create_classification_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir="s",
                                       image_size=(40, 40))
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["only"]}))
    with pytest.raises(ValueError, match="at least 2 classes"):
        create_classification_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir="s")


def test_macro_f1_metric_matches_the_library_report():
    from pipeline.classification_module_file import MacroF1
    from synthseg_tf.metrics.classification import classification_report

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 60)
    y[y == 4] = 3  # class 4 never occurs in the truth ...
    scores = rng.random((60, 5)).astype(np.float32)
    m = MacroF1(num_classes=5)
    m.update_state(y[:25, None], scores[:25])  # TFMA's shapes: labels [B, 1], probabilities [B, K]
    m.update_state(y[25:].astype(np.float32), scores[25:])
    want = classification_report(y, scores, num_classes=5)["macro"]["f1"]
    assert float(m.result()) == pytest.approx(want, abs=1e-6)
    clone = MacroF1.from_config(m.get_config())
    assert clone.num_classes == 5 and clone.name == "macro_f1" and float(clone.result()) == 0.0
    m.reset_state()
    assert float(m.result()) == 0.0


def test_compile_for_vertex_with_task_classification(tmp_path):
    from synthseg_tf.cli import main

    names = ["blue_crescent", "blue_cross", "blue_disc_dotted", "blue_square"]

    def no_network(*args, **kwargs):
        raise OSError("network access during compile")

    out = tmp_path / "cls.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        mp.setattr(socket, "getaddrinfo", no_network)
        rc = main(["pipeline", "compile", "--target", "vertex", "--task", "classification", "--image", IMAGE,
                   "--pipeline-root", ROOT, "--class-names", ",".join(names), "--preset", "small",
                   "--train-steps", "40", "--gan-steps", "7", "--output", str(out)])
    assert rc == 0 and out.is_file()
    job = json.loads(out.read_text())
    spec = job["pipelineSpec"]
    assert job["displayName"] == "synthseg-classification"  # the task's default name
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == set(NODES), sorted(tasks)
    param = lambda task, key: tasks[task]["inputs"]["parameters"][key]["runtimeValue"]["constantValue"]  # noqa: E731
    assert param("Trainer", "run_fn")["stringValue"] == "synthseg_tf_tfx.pipeline.classification_module_file.run_fn"
    assert param("Transform", "preprocessing_fn")["stringValue"] == (
        "synthseg_tf_tfx.pipeline.classification_module_file.preprocessing_fn")
    assert param("GanTrainer", "run_fn")["stringValue"] == (
        "synthseg_tf_tfx.pipeline.classification_gan_module_file.run_fn")
    assert json.loads(param("GanTrainer", "train_args")["stringValue"])["num_steps"] == 7
    assert json.loads(param("Trainer", "train_args")["stringValue"])["num_steps"] == 40
    gan_config = json.loads(param("GanTrainer", "custom_config")["stringValue"])
    assert gan_config["conditioning"] == "edges" and gan_config["class_names"] == names
    # the generator and the real-only classifier (the confidence filter) feed SyntheticGeneration
    gen = tasks["SyntheticGeneration"]["inputs"]
    assert gen["artifacts"]["generator"]["taskOutputArtifact"] == {"producerTask": "GanTrainer",
                                                                   "outputArtifactKey": "model"}
    assert gen["artifacts"]["quality_model"]["taskOutputArtifact"]["producerTask"] == "BaselineTrainer"
    assert gen["parameters"]["labels"]["runtimeValue"]["constantValue"]["stringValue"] == "rare"
    assert tasks["Transform"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"]["producerTask"] == (
        "SyntheticGeneration")
    evaluator = tasks["Evaluator"]["inputs"]
    assert evaluator["artifacts"]["baseline_model"]["taskOutputArtifact"]["producerTask"] == "BaselineTrainer"
    assert evaluator["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "Trainer"
    eval_config = json.loads(evaluator["parameters"]["eval_config"]["runtimeValue"]["constantValue"]["stringValue"])
    assert "synthseg_tf_tfx.pipeline.classification_module_file" in json.dumps(eval_config)
    assert spec["root"]["inputDefinitions"]["parameters"]["data_root"]["type"] == "STRING"

    # options of the other task and a single class are one-line errors (exit 2), nothing written
    bad = tmp_path / "bad.json"
    base = ["pipeline", "compile", "--target", "vertex", "--task", "classification", "--image", IMAGE,
            "--pipeline-root", ROOT, "--output", str(bad)]
    assert main(base + ["--class-names", ",".join(names), "--backbone", "resnet18"]) == 2
    assert main(base + ["--class-names", "only"]) == 2
    assert not bad.exists()


# ---------------------------------------------------------------------------------------------- local run
@pytest.mark.slow
def test_local_run_generator_feeds_generation_evaluator_compares_and_pushed_model_serves(tmp_path):
    import ml_metadata as mlmd
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    from pipeline import local_runner
    from synthseg_tf.data import load, write_tfrecords
    from synthseg_tf.generation.renderer import load_renderer
    from synthseg_tf.metrics.classification import classification_report
    from synthseg_tf.models.classifier import load_classifier
    from synthseg_tf.training.gan import read_config

    names = write_class_folders(str(tmp_path / "classes"))
    data = str(tmp_path / "data")
    write_tfrecords(load(f"classfolders:{tmp_path / 'classes'}"), data, shards=2)
    paths = local_runner.run(
        data, str(tmp_path / "out"), pipeline_name="synthseg-cls", task="classification", image_size=(SIZE, SIZE),
        batch_size=8, train_steps=3, eval_steps=1, min_macro_f1=0.0, max_macro_f1_drop=1.0, train_gan=True,
        gan_steps=GAN_STEPS, gan_batch_size=4, gan_base_filters=8, gan_log_every=2, synthetic_n=N_SYNTHETIC,
        synthetic_seed=1, min_quality=0.0, beam_pipeline_args=[])

    # ML Metadata: every node ran once, wired as the docstring says
    nodes, artifacts = _lineage(paths["metadata_path"])
    assert sorted(nodes) == sorted(NODES)
    assert all(nodes[n]["state"] == mlmd.proto.Execution.COMPLETE for n in NODES), {n: v["state"] for n, v in
                                                                                     nodes.items()}
    gan_model = nodes["GanTrainer"]["outputs"]["model"]
    baseline_model = nodes["BaselineTrainer"]["outputs"]["model"]
    assert len(gan_model) == 1 and nodes["SyntheticGeneration"]["inputs"]["generator"] == gan_model
    assert nodes["SyntheticGeneration"]["inputs"]["quality_model"] == baseline_model  # the confidence filter
    assert nodes["GanTrainer"]["inputs"]["examples"] == nodes["RealTransform"]["outputs"]["transformed_examples"]
    assert nodes["BaselineTrainer"]["inputs"]["examples"] == nodes["RealTransform"]["outputs"]["transformed_examples"]
    assert nodes["Transform"]["inputs"]["examples"] == nodes["SyntheticGeneration"]["outputs"]["examples"]
    assert nodes["Trainer"]["inputs"]["examples"] == nodes["Transform"]["outputs"]["transformed_examples"]
    evaluator = nodes["Evaluator"]
    assert evaluator["inputs"]["examples"] == nodes["ImportExampleGen"]["outputs"]["examples"]
    assert evaluator["inputs"]["model"] == nodes["Trainer"]["outputs"]["model"]
    assert evaluator["inputs"]["baseline_model"] == baseline_model
    blessing = artifacts[evaluator["outputs"]["blessing"][0]]
    assert blessing.custom_properties["baseline_model_id"].int_value == baseline_model[0]
    assert blessing.custom_properties["blessed"].int_value == 1
    assert nodes["Pusher"]["inputs"]["model"] == nodes["Trainer"]["outputs"]["model"]

    # the Evaluator compared candidate and baseline on accuracy and macro-F1 (the change threshold)
    eval_dir = artifacts[evaluator["outputs"]["evaluation"][0]].uri
    config = tfma.load_eval_result(eval_dir, model_name="candidate").config
    assert sorted((s.name, s.is_baseline) for s in config.model_specs) == [("baseline", True), ("candidate", False)]
    values = {}
    for name in ("candidate", "baseline"):
        values[name] = tfma.load_eval_result(eval_dir, model_name=name).slicing_metrics[0][1][""][""]
        for metric in ("accuracy", "macro_f1"):
            assert 0.0 <= values[name][metric]["doubleValue"] <= 1.0, (name, values[name])
    assert "macro_f1_diff" in str(values["candidate"])  # TFMA's candidate - baseline
    assert tfma.load_validation_result(eval_dir).validation_ok

    # the eval split is real only, and TFMA's macro-F1 is the library's on the candidate's predictions
    real_dir = artifacts[nodes["ImportExampleGen"]["outputs"]["examples"][0]].uri
    eval_records = _records(os.path.join(real_dir, "Split-eval", "*"))
    n_train = _count_records(os.path.join(real_dir, "Split-train", "*"))
    assert n_train + len(eval_records) == sum(COUNTS) and eval_records
    model_dir = os.path.join(artifacts[nodes["Trainer"]["outputs"]["model"][0]].uri, "Format-Serving")
    labels = [tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0] for r in eval_records]
    loaded = tf.saved_model.load(model_dir)
    probs = loaded.signatures["serving_tf_example"](examples=tf.constant(eval_records))["probabilities"].numpy()
    report = classification_report(labels, probs, num_classes=len(names))
    assert values["candidate"]["macro_f1"]["doubleValue"] == pytest.approx(report["macro"]["f1"], abs=1e-5)
    assert values["candidate"]["accuracy"]["doubleValue"] == pytest.approx(report["accuracy"], abs=1e-5)

    # the generator is a class-conditional library generator trained on the train split only
    generator = os.path.join(artifacts[gan_model[0]].uri, "Format-Serving")
    gen_config = read_config(generator)
    assert gen_config["num_labels"] == len(names) and gen_config["conditioning"] == "edges"
    assert gen_config["label_conditioning"] == "film" and gen_config["steps_done"] == GAN_STEPS
    assert gen_config["label_names"] == names
    train_images = load(gen_config["data"])
    assert len(train_images) == n_train == len(gen_config["train_source_ids"])
    assert train_images.num_classes == len(names)
    renderer = load_renderer(generator)
    rgb = renderer.render(np.zeros((SIZE, SIZE), np.uint8), [1])
    assert renderer.conditional and rgb.shape == (1, SIZE, SIZE, 3) and rgb.dtype == np.uint8

    # the synthetic images: labelled classes, drawn with the "rare" rule, filtered by the baseline classifier
    syn_dir = artifacts[nodes["SyntheticGeneration"]["outputs"]["examples"][0]].uri
    with open(os.path.join(syn_dir, "generation", "generation.json")) as f:
        generation = json.load(f)
    identity = generation["identity"]
    assert identity["labels"] == "rare" and identity["min_quality"] == 0.0
    assert os.path.join("BaselineTrainer", "model") in identity["quality_model"]
    assert identity["map_sources"]["spec"] == gen_config["data"] and identity["map_sources"]["count"] == n_train
    weights = generation["label_weights"]  # 1 / count in the generator's training split: rare classes first
    assert weights[-1] > weights[0] and sum(weights) == pytest.approx(1.0)
    synthetic = [tf.train.Example.FromString(r).features.feature
                 for r in _records(os.path.join(syn_dir, "Split-train", "synthetic-*"))]
    assert len(synthetic) == N_SYNTHETIC
    assert all(f["synthetic"].int64_list.value[0] == 1 and 0 <= f["label"].int64_list.value[0] < len(names)
               for f in synthetic)
    xf_dir = artifacts[nodes["Transform"]["outputs"]["transformed_examples"][0]].uri
    assert _count_records(os.path.join(xf_dir, "Split-train", "*")) == n_train + N_SYNTHETIC

    # the pushed model serves: a library classifier export with a tf.Example serving signature
    s = local_runner.summarize(paths)
    assert s["blessed"] is True and s["pushed_model"] and s["synthetic_count"] == N_SYNTHETIC
    assert {"accuracy", "macro_f1"} <= set(s["metrics"]) and "macro_f1" in s["baseline_metrics"]
    pushed = tf.saved_model.load(s["pushed_model"])
    assert {"serving_default", "serving_bytes", "serving_tf_example"} <= set(pushed.signatures)
    out = pushed.signatures["serving_tf_example"](examples=tf.constant(eval_records[:1]))
    assert out["probabilities"].shape == (1, len(names)) and out["class_ids"].shape == (1,)
    assert float(tf.reduce_sum(out["probabilities"])) == pytest.approx(1.0, abs=1e-4)
    clf = load_classifier(s["pushed_model"])  # and the library loads it as its own classifier export
    assert clf.class_names == names
    image = np.asarray(tf.io.decode_png(
        tf.train.Example.FromString(eval_records[0]).features.feature["image/encoded"].bytes_list.value[0]))
    assert clf(image).shape == (1,)
    np.testing.assert_allclose(clf.predict_proba(image), out["probabilities"].numpy(), atol=1e-4)
