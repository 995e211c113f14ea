"""train_gan: run-directory outputs, refusal to overwrite, exact resume, loading the generator."""
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.data.classes import IGNORE_ID, ClassTable
from synthseg_tf.training import gan

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SIZE, K, B = 32, 3, 4
SMALL = dict(base_filters=4, log_every=2, image_every=2, checkpoint_every=2, verbose=False)


def blob_data(n=8, seed=0):
    """Masks with random rectangles ("blobs") over class 0, some void; images coloured by class."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, SIZE, SIZE), np.uint8)
    for i in range(n):
        for _ in range(3):
            y, x = rng.integers(0, SIZE - 8, 2)
            masks[i, y:y + 8, x:x + 8] = rng.integers(1, K)
    masks[0, :4] = IGNORE_ID
    colours = np.zeros((256, 3), np.float32)
    colours[:K] = np.eye(3)[:K] * 0.8
    images = colours[masks] + rng.random((n, SIZE, SIZE, 3)).astype(np.float32) * 0.2
    return {"image": images, "mask": masks, "label": rng.integers(0, 2, n).astype(np.int32)}


def dataset(seed=0):
    """Infinite, reshuffled each epoch (so the iterator position matters on resume), batched."""
    tf.random.set_seed(0)  # shuffle seeds combine the global seed (train_gan sets it) with the op seed
    return tf.data.Dataset.from_tensor_slices(blob_data(seed=seed)).shuffle(8, seed=1).repeat().batch(B)


def all_weights(model):
    """Every trained state: networks, optimisers, and (train_gan's defaults) the EMA generator and DiffAugment RNG."""
    return (model.generator.get_weights() + model.discriminator.get_weights()
            + [v.numpy() for v in model.g_optimizer.variables + model.d_optimizer.variables]
            + model.ema_generator.get_weights() + [model.augment_rng.state.numpy()])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step run with a class table and validation data, shared by the read-only tests."""
    out = str(tmp_path_factory.mktemp("gan") / "run")
    table = ClassTable(["background", "car", "tree"])
    res = gan.train_gan(dataset, out, K, SIZE, steps=4, batch_size=B, class_table=table,
                        val_ds=lambda: dataset(seed=1).take(2), val_steps=2, **SMALL)
    return out, res, table


def test_run_directory_outputs(finished_run):
    out, res, table = finished_run
    assert res.step == 4 and np.isfinite(res.metrics["g_loss"]) and "val_d_loss" in res.metrics
    assert tf.train.latest_checkpoint(os.path.join(out, "checkpoints")).endswith("ckpt-4")
    with open(os.path.join(out, "log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"g_loss", "g_gan", "g_l1", "d_loss", "val_g_l1", "elapsed_s"} <= set(rows[0])
    assert sorted(os.listdir(os.path.join(out, "samples"))) == ["step_000002.png", "step_000004.png"]
    png = tf.io.decode_png(tf.io.read_file(os.path.join(out, "samples", "step_000004.png"))).numpy()
    assert png.shape == (4 * SIZE, 3 * SIZE, 3)  # 4 samples x (label map | real | generated)
    assert glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
    assert os.path.exists(os.path.join(out, "generator", "saved_model.pb"))
    assert ClassTable.load(out).names == table.names
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["status"] == "finished" and config["steps_done"] == 4 and config["image_size"] == [SIZE, SIZE]
    # the quality levers' defaults for new runs
    assert (config["upsample"], config["diffaugment"], config["ema_decay"], config["label_conditioning"]) == (
        "resize", "color,translation,cutout", 0.999, None)
    assert set(gan.ARCHITECTURE_KEYS) >= {"upsample", "diffaugment", "ema_decay", "label_conditioning"}


def test_refuses_previous_run_without_resume(finished_run):
    out, _, _ = finished_run
    with pytest.raises(FileExistsError, match="already contains a run"):
        gan.train_gan(dataset(), out, K, SIZE, steps=4, batch_size=B, **SMALL)


def test_resume_refuses_different_architecture(finished_run):
    out, _, _ = finished_run
    with pytest.raises(ValueError, match="num_classes"):
        gan.train_gan(dataset(), out, K + 1, SIZE, steps=8, batch_size=B, resume=True, **SMALL)
    for change, key in ((dict(diffaugment=None), "diffaugment"), (dict(ema_decay=0.99), "ema_decay"),
                        (dict(upsample="transpose"), "upsample")):
        with pytest.raises(ValueError, match=f"{key}: run has"):
            gan.train_gan(dataset(), out, K, SIZE, steps=8, batch_size=B, resume=True, **SMALL, **change)


def test_resume_refuses_other_training_samples(finished_run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run[0], out)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    cfg["train_source_ids"] = ["a", "b"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match="different training samples"):
        gan.train_gan(dataset(), out, K, SIZE, steps=8, batch_size=B, resume=True, **SMALL,
                      extra_config={"train_source_ids": ["a", "c"]})


def test_legacy_run_settings_and_resume(tmp_path):
    """A run whose config.json predates the quality options keeps its old behaviour: each missing
    option counts as off (LEGACY_DEFAULTS), and a resume must keep it."""
    assert gan.run_settings({"num_labels": 3}) == {"num_labels": 3, "upsample": "transpose",
                                                   "label_conditioning": "bottleneck", "diffaugment": None,
                                                   "ema_decay": None, "class_loss_weight": 0.0,
                                                   "class_loss_model": None, "mismatch_weight": 0.0,
                                                   "d_label_conditioning": "input", "generator_arch": "unet",
                                                   "d_scales": 1, "aux_class_weight": 0.0, "style_dim": 0}
    label_map_gan = gan.run_settings({"num_labels": None})  # the class options apply to class-conditional runs
    assert label_map_gan["label_conditioning"] is None and label_map_gan["d_label_conditioning"] is None
    assert gan.run_settings({"upsample": "resize"})["upsample"] == "resize"
    out = str(tmp_path / "old")
    old = dict(SMALL, upsample="transpose", diffaugment=None, ema_decay=None)
    gan.train_gan(dataset(), out, K, SIZE, steps=1, batch_size=B, **old)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    for k in gan.LEGACY_DEFAULTS:  # as an older version wrote it
        cfg.pop(k)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    generator, loaded = gan.load_generator(out)
    assert (loaded["upsample"], loaded["diffaugment"], loaded["ema_decay"]) == ("transpose", None, None)
    assert any(isinstance(l, tf.keras.layers.Conv2DTranspose) for l in generator.layers)
    with pytest.raises(ValueError, match="upsample: run has 'transpose', asked 'resize'"):
        gan.train_gan(dataset(), out, K, SIZE, steps=2, batch_size=B, resume=True, **SMALL)
    assert gan.train_gan(dataset(), out, K, SIZE, steps=2, batch_size=B, resume=True, **old).step == 2


def test_load_generator(finished_run):
    out, res, _ = finished_run
    generator, cfg = gan.load_generator(out)
    assert cfg["num_classes"] == K and cfg["num_labels"] is None
    mask = tf.constant(blob_data()["mask"][:2].astype(np.int32))
    # the saved generator is the EMA generator (train_gan's default), not the raw one
    np.testing.assert_allclose(generator(mask).numpy(), res.model.ema_generator(mask, training=False).numpy(),
                               atol=1e-5)
    assert not np.allclose(generator(mask).numpy(), res.model.generator(mask, training=False).numpy(), atol=1e-5)


def test_resume_truncates_log_rows_past_the_checkpoint(finished_run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run[0], out)
    with open(os.path.join(out, "log.csv"), "a") as f:  # a row logged after the last checkpoint
        f.write("5,0,0,1,1,1,1\n")
    res = gan.train_gan(dataset(), out, K, SIZE, steps=4, batch_size=B, resume=True, **SMALL)
    assert res.step == 4
    with open(os.path.join(out, "log.csv"), newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]


@pytest.mark.parametrize("checkpoint_iterator", [True, False])
def test_resume_is_exact(tmp_path, checkpoint_iterator):
    kw = dict(SMALL, checkpoint_iterator=checkpoint_iterator)  # dropout stays on: its RNG state is restored too
    straight = gan.train_gan(dataset(), str(tmp_path / "a"), K, SIZE, steps=4, batch_size=B, **kw)
    part = str(tmp_path / "b")
    gan.train_gan(dataset(), part, K, SIZE, steps=2, batch_size=B, **kw)
    resumed = gan.train_gan(dataset(), part, K, SIZE, steps=4, batch_size=B, resume=True, **kw)
    assert resumed.step == 4
    with open(os.path.join(part, "config.json")) as f:
        assert json.load(f)["iterator_in_checkpoint"] is checkpoint_iterator
    for a, b in zip(all_weights(straight.model), all_weights(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with open(os.path.join(part, "log.csv"), newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]


def test_class_conditional_run(tmp_path):
    out = str(tmp_path / "run")
    gan.train_gan(dataset(), out, K, SIZE, steps=1, batch_size=B, num_labels=2, gan_loss="hinge",
                  spectral_norm=True, feature_matching_weight=1.0, **SMALL)
    generator, cfg = gan.load_generator(out)
    assert cfg["generator_inputs"] == ["mask", "label"]
    out_img = generator({"mask": tf.zeros((2, SIZE, SIZE), tf.int32), "label": tf.constant([0, 1])})
    assert out_img.shape == (2, SIZE, SIZE, 3)


# Every option a run records and fixes for a resume, on together in one run (one run and one resume
# instead of one per option: each costs a model build and a trace).
OPTIONS = dict(num_labels=2, class_loss_weight=0.5, mismatch_weight=0.5, d_label_conditioning="projection",
               d_scales=2, generator_arch="spade", aux_class_weight=0.5)
# another value of each option (asked on resume: refused; all but class_loss_weight and
# aux_class_weight are the "off" values; d_label_conditioning "input" with the head is refused
# as such, so it is asked with aux_class_weight 0 below)
OTHER = dict(class_loss_weight=1.0, mismatch_weight=0.0, d_scales=1, generator_arch="unet", aux_class_weight=1.0)


def small_classifier(tmp_path, names):
    from synthseg_tf.models.classifier import build_classifier, export_classifier

    clf = build_classifier(len(names), input_shape=(SIZE, SIZE, 3), filters=(4,), dense_units=(8,))
    return export_classifier(clf, str(tmp_path / f"clf{len(names)}"), list(names), SIZE)


def test_gan_options_together_are_recorded_fixed_on_resume_and_render(tmp_path):
    """The class loss (a classifier export, logged as g_cls), the matching-aware discriminator
    (d_mis), the projection discriminator, two discriminator scales, the SPADE generator and the
    auxiliary classifier (g_aux, d_aux; its head checkpointed and restored) in one run: each is
    recorded in config.json and a resume asking another value for any one of them is refused; the
    saved generator is a SPADE one that the renderer loads and runs."""
    from synthseg_tf.generation.renderer import load_renderer

    clf_dir = small_classifier(tmp_path, ["a", "b"])
    out = str(tmp_path / "run")
    kw = dict(SMALL, class_table=None, class_loss_model=clf_dir, **OPTIONS)
    gan.train_gan(dataset(), out, K, SIZE, steps=2, batch_size=B, **kw)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert {k: cfg[k] for k in OPTIONS} == OPTIONS and cfg["class_loss_model"] == clf_dir
    with open(os.path.join(out, "log.csv"), newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert all(float(last[k]) > 0 for k in ("g_cls", "d_mis", "g_aux", "d_aux"))
    asks = [(key, {key: other}) for key, other in OTHER.items()]
    asks.append(("d_label_conditioning", dict(d_label_conditioning="input", aux_class_weight=0.0)))
    for key, ask in asks:
        with pytest.raises(ValueError, match=f"{key}: run has {OPTIONS[key]!r}, asked {ask[key]!r}"):
            gan.train_gan(dataset(), out, K, SIZE, steps=4, batch_size=B, resume=True, **dict(kw, **ask))
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(out, "checkpoints")))
    [key] = [k for k in reader.get_variable_to_shape_map()
             if k.startswith("aux_classifier/") and "/kernel/" in k and "OPTIMIZER_SLOT" not in k]
    restored = gan.train_gan(dataset(), out, K, SIZE, steps=2, batch_size=B, resume=True, **kw)  # no new step
    head = restored.model.aux_classifier.get_layer("d_aux_classifier_logits")
    np.testing.assert_array_equal(head.kernel.numpy(), reader.get_tensor(key))
    assert gan.train_gan(dataset(), out, K, SIZE, steps=4, batch_size=B, resume=True, **kw).step == 4

    generator, _ = gan.load_generator(out)
    assert any(l.name.endswith("_gamma") for l in generator.layers)
    maps, labels = blob_data()["mask"][:2], np.array([0, 1], np.int32)
    img = load_renderer(out).render(maps, labels)
    assert img.shape == (2, SIZE, SIZE, 3) and img.dtype == np.uint8
    raw = generator({"mask": tf.constant(maps, tf.int32), "label": tf.constant(labels)}).numpy()
    want = np.clip(np.round((raw + 1) * 127.5), 0, 255)
    assert np.abs(img.astype(int) - want.astype(int)).max() <= 1


def test_reference_image_run_is_recorded_fixed_on_resume_and_renders_its_references(tmp_path):
    """style_dim > 0 on a label-map GAN (the reference's code is the decoder's only FiLM input): recorded,
    a resume without it is refused, the sample grid is drawn, and the renderer needs one reference per
    map and gives the saved generator's output for it; the export and the FCN-score are refused by name."""
    from synthseg_tf.export.generator import export_generator
    from synthseg_tf.generation.evaluate import evaluate_generator
    from synthseg_tf.generation.renderer import load_renderer

    out = str(tmp_path / "run")
    kw = dict(SMALL, class_table=None, style_dim=4)
    res = gan.train_gan(dataset(), out, K, SIZE, steps=2, batch_size=B, **kw)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["style_dim"] == 4 and cfg["generator_inputs"] == ["mask", "reference"]
    assert os.listdir(os.path.join(out, "samples"))
    with pytest.raises(ValueError, match="style_dim: run has 4, asked 0"):
        gan.train_gan(dataset(), out, K, SIZE, steps=4, batch_size=B, resume=True, **dict(kw, style_dim=0))
    generator, _ = gan.load_generator(out)
    assert generator.input_names == ["mask", "reference"]
    data = blob_data()
    maps = data["mask"][:2]
    refs = np.clip(np.round(data["image"][:2] * 255), 0, 255).astype(np.uint8)
    r = load_renderer(out)
    assert r.reference_conditioned and not r.conditional
    with pytest.raises(ValueError, match="pass one real image per label map"):
        r.render(maps)
    with pytest.raises(ValueError, match="matching the label maps"):
        r.render(maps, references=refs[:1])
    img = r.render(maps, references=refs)
    raw = generator({"mask": tf.constant(maps, tf.int32),
                     "reference": tf.constant(refs.astype(np.float32) / 255.0)}).numpy()
    want = np.clip(np.round((raw + 1) * 127.5), 0, 255)
    assert np.abs(img.astype(int) - want.astype(int)).max() <= 1
    assert not np.array_equal(r.render(maps, references=255 - refs), img)  # the reference matters
    with pytest.raises(ValueError, match="takes a reference image"):
        export_generator(res.model.inference_generator, str(tmp_path / "export"), (SIZE, SIZE))
    assert not os.path.exists(tmp_path / "export")
    with pytest.raises(ValueError, match="takes a reference image .* FCN-score is not defined"):
        evaluate_generator(out, str(tmp_path / "no-segmenter"), "demo-scenes")


def test_gan_options_are_refused_before_the_run_folder_is_written(tmp_path):
    """Bad option values, or options the GAN's kind cannot take, fail before anything is written."""
    clf2 = small_classifier(tmp_path, ["a", "b"])
    clf3 = small_classifier(tmp_path, ["a", "b", "c"])
    labelled = dict(SMALL, num_labels=2)
    cases = [
        (dict(labelled, class_loss_model=clf3, class_loss_weight=1.0), "has 3 classes"),
        (dict(SMALL, class_loss_model=clf2, class_loss_weight=1.0), "class-conditional"),
        (dict(labelled, class_loss_model=clf2, class_loss_weight=1.0, extra_config={"label_names": ["a", "x"]}),
         "names other classes"),
        (dict(SMALL, mismatch_weight=1.0), "needs a class-conditional GAN"),
        (dict(labelled, mismatch_weight=-1), ">= 0"),
        (dict(SMALL, l1_weight=-1.0), "l1_weight must be a finite number >= 0"),
        (dict(SMALL, feature_matching_weight=float("inf")), "feature_matching_weight must be a finite"),
        (dict(SMALL, d_label_conditioning="projection"), "needs a class-conditional GAN"),
        (dict(labelled, aux_class_weight=1.0), "d_label_conditioning='projection'"),
        (dict(SMALL, aux_class_weight=1.0), "d_label_conditioning='projection'"),
        (dict(labelled, d_label_conditioning="projection", aux_class_weight=-1), ">= 0"),
        (dict(labelled, d_label_conditioning="x"), "must be one of"),
        (dict(SMALL, d_scales=0), "integer from 1 to 4"),
        (dict(SMALL, d_scales=1.5), "integer from 1 to 4"),
        (dict(SMALL, d_scales=4), "at least 64 pixels"),
        (dict(SMALL, generator_arch="spade", upsample="transpose"), "upsamples by nearest resizing"),
        (dict(SMALL, generator_arch="x"), "generator_arch must be one of"),
        (dict(SMALL, generator_arch="spade", image_size=(9, 9)), "too small or odd for a SPADE generator"),
        (dict(SMALL, style_dim=-1), "whole number"),
        (dict(SMALL, style_dim=2.5), "whole number"),
        (dict(SMALL, generator_arch="spade", style_dim=4), "for the U-Net generator"),
        (dict(labelled, label_conditioning="bottleneck", style_dim=4), "label_conditioning='film'"),
    ]
    for i, (kw, match) in enumerate(cases):
        kw = dict(kw)
        size = kw.pop("image_size", SIZE)
        with pytest.raises(ValueError, match=match):
            gan.train_gan(dataset(), str(tmp_path / f"r{i}"), K, size, steps=1, batch_size=B, **kw)
        assert not os.path.exists(tmp_path / f"r{i}"), (kw, match)


def test_a_process_that_rendered_exits_without_a_destructor_traceback(finished_run):
    """A loaded renderer is freed at exit while TensorFlow is intact: no "Exception ignored in
    AtomicFunction.__del__" traceback at the end of a successful generation."""
    out, _, _ = finished_run
    code = textwrap.dedent(f"""
        import numpy as np
        import synthseg_tf
        from synthseg_tf.generation.renderer import load_renderer
        print(load_renderer({out!r}).render(np.zeros((1, {SIZE}, {SIZE}), np.uint8)).shape)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"(1, {SIZE}, {SIZE}, 3)" in p.stdout
    assert "Exception ignored" not in p.stderr, p.stderr[-2000:]


def test_batch_keys_are_checked(tmp_path):
    ds = tf.data.Dataset.from_tensor_slices({"image": blob_data()["image"]}).repeat().batch(B)
    with pytest.raises(ValueError, match="missing"):
        gan.train_gan(ds, str(tmp_path / "run"), K, SIZE, steps=1, batch_size=B, **SMALL)


def test_iterator_checkpointability_probe():
    assert gan._iterator_checkpointable(iter(tf.data.Dataset.range(5).shuffle(3)))
    gen = tf.data.Dataset.from_generator(lambda: iter(range(5)), output_signature=tf.TensorSpec((), tf.int64))
    assert not gan._iterator_checkpointable(iter(gen))  # such pipelines resume by skipping batches


def test_make_strategy_single_and_too_late():
    assert gan.make_strategy(1).num_replicas_in_sync == 1
    tf.constant(0)  # TensorFlow has initialised its devices in this process
    if tf.config.list_physical_devices("GPU") or len(tf.config.list_logical_devices("CPU")) >= 2:
        pytest.skip("this process has several devices; nothing to split")
    with pytest.raises(RuntimeError, match="before creating datasets"):
        gan.make_strategy(2)


TWO_REPLICA_SCRIPT = textwrap.dedent(r"""
    import sys, numpy as np
    import synthseg_tf
    from synthseg_tf.training import gan
    strategy = gan.make_strategy(2)  # before TensorFlow touches devices
    import tensorflow as tf
    assert gan.make_strategy(2) is strategy  # cached: one MirroredStrategy per device set
    rng = np.random.default_rng(0)
    data = {"image": rng.random((8, 32, 32, 3)).astype("float32"),
            "mask": rng.integers(0, 3, (8, 32, 32)).astype("uint8")}
    ds = lambda: tf.data.Dataset.from_tensor_slices(data).repeat().batch(4)
    out = sys.argv[1]
    kw = dict(base_filters=4, log_every=1, image_every=2, checkpoint_every=1, verbose=False, replicas=2)
    gan.train_gan(ds, out, 3, 32, steps=1, batch_size=4, **kw)
    res = gan.train_gan(ds, out, 3, 32, steps=2, batch_size=4, resume=True, **kw)
    print("RESULT", res.step, res.model.distribute_strategy.num_replicas_in_sync, res.metrics["g_loss"])
""")


def test_two_replica_training_and_resume(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", TWO_REPLICA_SCRIPT, out], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    _, step, replicas, g_loss = lines[-1].split()
    assert (int(step), int(replicas)) == (2, 2) and np.isfinite(float(g_loss))
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["replicas"] == 2


# --------------------------------------------------------------------------- which samples the GAN sees
def camvid_tree(root, counts=(("train", 10), ("val", 3), ("test", 2)), size=SIZE):
    """A tiny CamVid layout (train/ trainannot/ val/ valannot/ test/ testannot/)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in counts:
        for d in (split, split + "annot"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                os.path.join(root, split, f"{split}_{i:02d}.png"))
            Image.fromarray(rng.integers(0, 12, (size, size), dtype=np.uint8)).save(
                os.path.join(root, split + "annot", f"{split}_{i:02d}.png"))
    return str(root)


def ids(ds):
    return sorted(s.source_id for s in ds.samples)


def test_gan_train_part_rules(tmp_path):
    from synthseg_tf.data import load
    from synthseg_tf.training.gan_data import gan_train_part

    root = camvid_tree(tmp_path / "camvid")
    ds = load(f"camvid:{root}")
    assert ids(gan_train_part(ds)) == [f"train_{i:02d}" for i in range(10)]  # never val or test
    assert ids(gan_train_part(load(f"camvid:{root}?split=val"))) == [f"val_{i:02d}" for i in range(3)]  # explicit
    unlabelled = load(f"pairs:{root}/train:{root}/trainannot")  # no split labels: the experiments' holdout
    assert ids(gan_train_part(unlabelled)) == ids(unlabelled.train_val()[0]) and len(unlabelled.train_val()[1])


def test_gan_datasets_fraction_monitor_and_provenance(tmp_path):
    from synthseg_tf.data import load
    from synthseg_tf.training.gan_data import gan_datasets

    ds = load(f"camvid:{camvid_tree(tmp_path / 'camvid')}")
    train = ds.train_val()[0]
    evaluation = {s.source_id for s in ds.samples if s.split != "train"}

    gd = gan_datasets(ds, SIZE, 2, fraction=0.5, subset_seed=1, monitor=2)
    assert gd.train_source_ids == ids(train.fraction(0.5, seed=1)) and gd.train_size == 5  # Dataset.fraction's rule
    assert gd.train_source_ids != ids(train.fraction(0.5, seed=2))
    mon = set(gd.monitor_source_ids)
    assert len(mon) == 2 and not mon & set(gd.train_source_ids) and not mon & evaluation  # outside the subset
    assert gd.provenance() == {"train_source_ids": gd.train_source_ids, "monitor_source_ids": sorted(mon)}
    first = next(iter(gd.val))
    assert first["image"].shape == (2, SIZE, SIZE, 3) and first["mask"].shape == (2, SIZE, SIZE)

    whole = gan_datasets(ds, SIZE, 2, monitor=2)  # 10 >= 5 * 2: two held out of the train split
    assert len(whole.train_source_ids) == 8 and len(whole.monitor_source_ids) == 2
    assert sorted(whole.train_source_ids + whole.monitor_source_ids) == ids(train)
    few = gan_datasets(ds, SIZE, 2)  # 10 < 5 * 4: no monitoring rather than losing 40%
    assert few.val is None and few.monitor_source_ids == [] and few.train_source_ids == ids(train)

    given = train.fraction(0.3, seed=0)  # library use: an explicit, already subsetted training set
    lib = gan_datasets(given, SIZE, 2, val=False)
    assert lib.train_source_ids == ids(given) and lib.val is None and lib.monitor_source_ids == []


def test_cli_gan_train_records_its_training_samples(tmp_path, capsys):
    from synthseg_tf.cli import main
    from synthseg_tf.data import load

    root = camvid_tree(tmp_path / "camvid")
    out = str(tmp_path / "run")
    rc = main(["gan", "train", "--data", f"camvid:{root}", "--out", out, "--image-size", str(SIZE), "--steps", "1",
               "--batch-size", "2", "--base-filters", "4", "--fraction", "0.5", "--subset-seed", "1", "--monitor", "2",
               "--log-every", "1", "--image-every", "1", "--checkpoint-every", "1", "--ema-decay", "0.99"])
    assert rc == 0
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    train = load(f"camvid:{root}").train_val()[0]
    assert cfg["data"] == f"camvid:{os.path.abspath(root)}"
    assert cfg["train_source_ids"] == ids(train.fraction(0.5, seed=1))
    assert len(cfg["monitor_source_ids"]) == 2 and all(i.startswith("train_") for i in cfg["monitor_source_ids"])
    assert not set(cfg["monitor_source_ids"]) & set(cfg["train_source_ids"])
    assert (cfg["fraction"], cfg["subset_seed"], cfg["ema_decay"], cfg["upsample"], cfg["diffaugment"]) == (
        0.5, 1, 0.99, "resize", "color,translation,cutout")
    with open(os.path.join(out, "log.csv"), newline="") as f:
        assert "val_g_l1" in next(csv.DictReader(f))  # validation losses on the monitoring samples
    assert main(["gan", "train", "--data", f"camvid:{root}", "--out", str(tmp_path / "bad"), "--steps", "1",
                 "--image-size", str(SIZE), "--diffaugment", "color,flip"]) != 0
    assert "diffaugment: unknown op(s) ['flip']" in capsys.readouterr().err
    # the class loss is for class-conditional GANs: refused on label maps, as one line
    assert main(["gan", "train", "--data", f"camvid:{root}", "--out", str(tmp_path / "cls"), "--steps", "1",
                 "--image-size", str(SIZE), "--class-loss", "1", "--class-loss-model", str(tmp_path)]) != 0
    assert "needs a class-conditional GAN" in capsys.readouterr().err
    assert main(["gan", "train", "--data", f"camvid:{root}", "--out", str(tmp_path / "mis"), "--steps", "1",
                 "--image-size", str(SIZE), "--mismatch", "1"]) != 0
    assert "mismatch_weight > 0 needs a class-conditional GAN" in capsys.readouterr().err
