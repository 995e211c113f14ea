"""The TFX pipeline: a local end-to-end run (ML Metadata, synthetic examples, TFMA blessing, pushed
SavedModel and its signatures), the Vertex AI compile, and the small pure helpers.

The end-to-end run is one test on purpose: its pipeline (tiny GAN, 40 demo scenes at 64x64,
2 U-Net steps, generation, TFMA, push) is the expensive part and, as a single test, runs once even
under ``pytest -n``. It takes 1.5 min of CPU, 3-4.5 min of wall time on a busy 2-core machine,
so it is marked ``slow``; ``test_local_pipeline_up_to_trainer`` is the fast path through the real
components up to the Trainer (``pytest -m "not slow"``).
"""
import glob
import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:  # `components` / `pipeline` live at the repository root
    sys.path.insert(0, REPO)

import synthseg_tf  # noqa: E402,F401  (environment settings before TensorFlow loads)

pytest.importorskip("tfx")

SPEC = "demo-scenes?n=40&size=64"
SIZE = 64
N_SYNTHETIC = 12
# node ids of the pipeline with an imported generator (the candidate is compared with a real-only baseline)
NODES = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "RealTransform", "generator_importer", "SyntheticGeneration",
         "Transform", "BaselineTrainer", "Trainer", "Evaluator", "Pusher"]
SIGNATURES = {"serving_default", "serving_bytes", "serving_tf_example", "transform_features"}


# ---------------------------------------------------------------------------------------------- helpers
def _count_records(pattern, gzip=True):
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP" if gzip else None)) if files else 0


def _train_tiny_gan(out, spec):
    from synthseg_tf.data import load, make_dataset
    from synthseg_tf.training.gan import train_gan

    ds = load(spec)
    train = make_dataset(ds, image_size=SIZE, batch_size=2, repeat=True, seed=0, drop_remainder=True)
    train_gan(train, out, num_classes=ds.num_classes, image_size=SIZE, steps=2, batch_size=2, class_table=ds.classes,
              base_filters=8, image_every=2, log_every=1, checkpoint_every=2, verbose=False,
              extra_config={"data": spec, "conditioning": "labelmap"})
    return out


def _executions_by_node(metadata_path):
    """{node id: [execution states]} from the run's SQLite ML Metadata store."""
    from tfx.orchestration import metadata

    out = {}
    with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
        node_type = m.store.get_context_type("node")
        for ctx in m.store.get_contexts_by_type(node_type.name):
            node = ctx.name.split(".", 1)[1]
            out[node] = [e.last_known_state for e in m.store.get_executions_by_context(ctx.id)]
        examples = {a.uri: a for a in m.store.get_artifacts_by_type("Examples")}
    return out, examples


# ---------------------------------------------------------------------------------------------- up to Trainer
FAST_NODES = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform", "Trainer"]


def test_local_pipeline_up_to_trainer(tmp_path):
    """The real components up to the Trainer (no GAN, no TFMA, no push): the fast path of the suite."""
    import ml_metadata as mlmd
    import tensorflow as tf
    from tfx import v1 as tfx

    from pipeline import local_runner
    from pipeline.pipeline import create_pipeline

    data = local_runner.prepare_data(str(tmp_path / "data"), SPEC, shards=2)  # converts the spec with the library
    assert os.path.isfile(os.path.join(data, "classes.json"))
    paths = local_runner.paths(str(tmp_path / "out"), "synthseg-fast")
    p = create_pipeline("synthseg-fast", paths["pipeline_root"], data, serving_model_dir=paths["serving_model_dir"],
                        metadata_path=paths["metadata_path"], image_size=(SIZE, SIZE), batch_size=4, train_steps=1,
                        eval_steps=1, until="Trainer")
    assert [c.id for c in p.components] == FAST_NODES
    os.makedirs(os.path.dirname(paths["metadata_path"]), exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(p)

    states, _ = _executions_by_node(paths["metadata_path"])
    assert sorted(states) == sorted(FAST_NODES)
    assert all(states[n] == [mlmd.proto.Execution.COMPLETE] for n in FAST_NODES), states
    root = paths["pipeline_root"]
    real_dir = glob.glob(os.path.join(root, "ImportExampleGen", "examples", "*"))[0]
    xf_dir = glob.glob(os.path.join(root, "Transform", "transformed_examples", "*"))[0]
    for split in ("train", "eval"):
        n = _count_records(os.path.join(real_dir, f"Split-{split}", "*"))
        assert n > 0 and _count_records(os.path.join(xf_dir, f"Split-{split}", "*")) == n
    model_dir = glob.glob(os.path.join(root, "Trainer", "model", "*", "Format-Serving"))[0]
    loaded = tf.saved_model.load(model_dir)
    assert SIGNATURES <= set(loaded.signatures)
    out = loaded.signatures["serving_default"](images=tf.zeros([1, SIZE, SIZE, 3], tf.uint8))
    assert out["probabilities"].shape == (1, SIZE, SIZE, 9)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_local_pipeline_end_to_end(tmp_path):
    import ml_metadata as mlmd
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    from pipeline import local_runner
    from synthseg_tf.data import load, write_tfrecords
    from synthseg_tf.data.tfdata import parse_example
    from synthseg_tf.data.tfrecord import make_example
    from synthseg_tf.models.unet import load_segmenter

    data = str(tmp_path / "data")
    write_tfrecords(load(SPEC), data, shards=2)
    gan = _train_tiny_gan(str(tmp_path / "gan"), SPEC)

    paths = local_runner.run(
        data, str(tmp_path / "out"), pipeline_name="synthseg-test", image_size=(SIZE, SIZE), backbone="resnet34",
        batch_size=4, train_steps=2, eval_steps=1, min_mean_iou=0.0, max_mean_iou_drop=1.0, generator_dir=gan,
        synthetic_n=N_SYNTHETIC, synthetic_seed=1, class_balance="rare", beam_pipeline_args=[])
    root = paths["pipeline_root"]

    # ML Metadata: one completed execution per component
    states, examples = _executions_by_node(paths["metadata_path"])
    complete = mlmd.proto.Execution.COMPLETE
    assert set(NODES) <= set(states), sorted(states)
    for node in NODES:
        assert states[node] == [complete], (node, states[node])

    # SyntheticGeneration: one Examples artifact with real train + synthetic, real eval
    syn_dir = glob.glob(os.path.join(root, "SyntheticGeneration", "examples", "*"))
    assert len(syn_dir) == 1
    syn_dir = syn_dir[0]
    syn = examples[syn_dir]
    assert json.loads(syn.properties["split_names"].string_value) == ["train", "eval"]
    assert syn.custom_properties["payload_format"].string_value == "FORMAT_TF_EXAMPLE"
    assert syn.custom_properties["file_format"].string_value == "tfrecords_gzip"
    assert syn.custom_properties["synthetic_count"].int_value == N_SYNTHETIC
    assert {"classes.json", "generation.json", "manifest.jsonl"} <= set(os.listdir(os.path.join(syn_dir, "generation")))
    synthetic_files = glob.glob(os.path.join(syn_dir, "Split-train", "synthetic-*.tfrecord.gz"))
    assert synthetic_files and _count_records(os.path.join(syn_dir, "Split-train", "synthetic-*")) == N_SYNTHETIC
    parsed = [parse_example(r) for r in tf.data.TFRecordDataset(synthetic_files, compression_type="GZIP").take(2)]
    assert all(int(p["synthetic"]) == 1 and p["image"].shape == (SIZE, SIZE, 3) for p in parsed)
    assert all(os.path.basename(f).startswith("real-") for f in os.listdir(os.path.join(syn_dir, "Split-eval")))
    real_dir = glob.glob(os.path.join(root, "ImportExampleGen", "examples", "*"))[0]
    n_real_train = _count_records(os.path.join(real_dir, "Split-train", "*"))
    n_real_eval = _count_records(os.path.join(real_dir, "Split-eval", "*"))
    assert n_real_train + n_real_eval == 40 and n_real_eval > 0
    assert _count_records(os.path.join(syn_dir, "Split-eval", "*")) == n_real_eval

    # Transform decoded and resized every (real + synthetic) training example
    xf_dir = glob.glob(os.path.join(root, "Transform", "transformed_examples", "*"))[0]
    assert _count_records(os.path.join(xf_dir, "Split-train", "*")) == n_real_train + N_SYNTHETIC

    # Evaluator (TFMA with the library's Keras metrics on per-pixel outputs) blessed the model
    eval_dir = glob.glob(os.path.join(root, "Evaluator", "evaluation", "*"))[0]
    metrics = tfma.load_eval_result(eval_dir, model_name="candidate").slicing_metrics[0][1][""][""]
    for name in ("pixel_accuracy", "mean_iou"):
        assert 0.0 <= metrics[name]["doubleValue"] <= 1.0, metrics
    assert tfma.load_validation_result(eval_dir).validation_ok
    assert glob.glob(os.path.join(root, "Evaluator", "blessing", "*", "BLESSED"))

    # Pusher: the pushed SavedModel loads and serves images, PNG bytes and tf.Examples alike
    versions = os.listdir(paths["serving_model_dir"])
    assert len(versions) == 1
    pushed = os.path.join(paths["serving_model_dir"], versions[0])
    loaded = tf.saved_model.load(pushed)
    assert SIGNATURES <= set(loaded.signatures)
    ds = load(SPEC)
    image, mask = ds.read(ds.samples[0])
    out = loaded.signatures["serving_default"](images=tf.constant(image[None]))
    assert out["label_ids"].shape == (1, SIZE, SIZE) and out["probabilities"].shape == (1, SIZE, SIZE, 9)
    request = tf.train.Example(features=tf.train.Features(feature={"image/encoded": tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[tf.train.Example.FromString(make_example(image)).features.feature[
            "image/encoded"].bytes_list.value[0]]))}))  # image only: no mask, no other feature
    by_example = loaded.signatures["serving_tf_example"](examples=tf.constant([request.SerializeToString()]))
    np.testing.assert_allclose(by_example["probabilities"].numpy(), out["probabilities"].numpy(), atol=2e-3)
    xf = loaded.signatures["transform_features"](examples=tf.constant([make_example(image, mask)]))
    assert xf["image"].shape == (1, SIZE, SIZE, 3) and np.array_equal(xf["mask"].numpy()[0], mask.astype(np.int64))
    assert load_segmenter(pushed)(image[None]).shape == (1, SIZE, SIZE)  # also a regular library export


# ---------------------------------------------------------------------------------------------- Vertex compile
def test_vertex_compile_writes_pipeline_spec(tmp_path):
    from pipeline import kubeflow_v2_runner

    out = tmp_path / "vertex" / "pipeline.json"
    image = "gcr.io/test-project/synthseg-tfx:test"
    names = ["sky", "building", "road", "sidewalk", "vegetation", "car", "person", "pole", "sign"]
    rc = kubeflow_v2_runner.main([
        "--output", str(out), "--image", image, "--pipeline-name", "synthseg-vertex",
        "--pipeline-root", "gs://bucket/tfx/root", "--data-root", "gs://bucket/data/tfr",
        "--serving-model-dir", "gs://bucket/serving", "--class-names", ",".join(names),
        "--generator", "gs://bucket/gan_run", "--synthetic-n", "500", "--image-size", "64x64", "--train-steps", "10",
        "--dataflow"])
    assert rc == 0 and out.is_file()
    spec = json.loads(out.read_text())["pipelineSpec"]
    tasks = set(spec["root"]["dag"]["tasks"])
    for node in ["ImportExampleGen", "StatisticsGen", "SchemaGen", "RealTransform", "generator_importer",
                 "SyntheticGeneration", "Transform", "BaselineTrainer", "Trainer", "Evaluator", "Pusher"]:
        assert node in tasks, sorted(tasks)
    assert not any(t.startswith("latest_blessed_model_resolver") for t in tasks)  # the baseline is BaselineTrainer's
    executors = spec["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert containers and all(c["image"] == image for c in containers)
    gen_args = executors["SyntheticGeneration_executor"]["container"]["args"]
    assert "synthseg_tf_tfx.components.synthetic_generation.Executor" in gen_args  # the installed name
    assert "--runner=DataflowRunner" in gen_args and "--runner=DirectRunner" not in gen_args  # generation on Dataflow
    assert "--runner=DataflowRunner" in executors["Transform_executor"]["container"]["args"]
    text = out.read_text()
    assert "pipeline.module_file.preprocessing_fn" in text and "pipeline.module_file.run_fn" in text
    assert "gs://bucket/gan_run" in text and '\\"sign\\"' in text


# ---------------------------------------------------------------------------------------------- helpers
def test_split_beam_args():
    from components.synthetic_generation import split_beam_args

    assert split_beam_args([]) == ("DirectRunner", 1, [])
    runner, workers, rest = split_beam_args(["--runner", "DataflowRunner", "--project=p", "--direct_num_workers=3",
                                             "--direct_running_mode=multi_processing", "--labels", "a=b"])
    assert (runner, workers) == ("DataflowRunner", 3) and rest == ["--project=p", "--labels", "a=b"]
    assert split_beam_args(["--direct_num_workers=0"])[1] >= 1
    assert split_beam_args(["--runner=DataflowRunner", "--runner=direct"])[0] == "DirectRunner"  # the last one wins


def test_component_and_pipeline_validation(tmp_path):
    from tfx import v1 as tfx

    from components import SyntheticGeneration
    from pipeline.pipeline import create_pipeline, make_eval_config, resolve_class_names

    gen = tfx.dsl.Importer(source_uri="/x", artifact_type=tfx.types.standard_artifacts.Model).with_id("g")
    with pytest.raises(ValueError, match="quality_model"):
        SyntheticGeneration(generator=gen.outputs["result"], n=5, min_quality=0.5)
    with pytest.raises(ValueError, match="n must be"):
        SyntheticGeneration(generator=gen.outputs["result"], n=0)
    with pytest.raises(ValueError, match="class names"):
        resolve_class_names("gs://bucket/data")
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b"]}))
    assert resolve_class_names(str(tmp_path)) == ["a", "b"]
    with pytest.raises(ValueError, match="until must be"):
        create_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir="s", until="Nope")
    with pytest.raises(ValueError, match="multiples of 32"):
        create_pipeline("p", str(tmp_path / "r"), str(tmp_path), serving_model_dir=str(tmp_path / "s"),
                        image_size=(50, 64))
    cfg = make_eval_config(3, 0.4, 0.02)
    iou = [m for m in cfg.metrics_specs[0].metrics if m.class_name == "MeanIoUIgnore"][0]
    assert json.loads(iou.config)["num_classes"] == 3
    assert iou.threshold.value_threshold.lower_bound.value == pytest.approx(0.4)
    assert iou.threshold.change_threshold.absolute.value == pytest.approx(-0.02)
