"""U-Net training and evaluation: run folder, synthetic mixing, budget, determinism, exported-model metrics.

The helpers at the top (tiny blob scenes in the pairs layout, a synthetic TFRecord folder) are
also used by test_experiments.py and test_report.py.
"""
import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

import synthseg_tf  # noqa: F401

CLASSES = ["background", "blob", "bar"]
COLORS = np.array([[40, 40, 40], [220, 60, 60], [60, 200, 80]], np.uint8)
SIZE = 32


# ---------------------------------------------------------------------------- fixture helpers
def blob_scene(rng, size=SIZE):
    """A dark scene with a red disc (class 1) and a green bar (class 2); colours identify classes."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint8)
    cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 8)
    mask[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
    y0 = rng.integers(0, size - 6)
    band = mask[y0:y0 + 4]
    band[band == 0] = 2
    img = COLORS[mask].astype(np.int16) + rng.integers(-20, 20, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def write_scenes(root, n=12, seed=0, void_every=4):
    """``n`` scenes in the pairs layout (+ classes.json); every ``void_every``-th mask has 2 void rows."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    for i in range(n):
        img, mask = blob_scene(rng)
        if void_every and i % void_every == 0:
            mask[:2] = 255
        Image.fromarray(img).save(os.path.join(root, "images", f"s{i:02d}.png"))
        Image.fromarray(mask).save(os.path.join(root, "masks", f"s{i:02d}.png"))
    with open(os.path.join(root, "masks", "classes.json"), "w") as f:
        json.dump({"classes": CLASSES, "colors": COLORS.tolist()}, f)
    return f"pairs:{root}/images:{root}/masks"


def write_synthetic(root, n=8, seed=1):
    """A generated-samples folder as ``synthseg generate`` writes it: TFRecords (synthetic=1),
    classes.json, dataset.json, manifest.jsonl and the PNG pairs."""
    import tensorflow as tf

    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.data.tfrecord import make_example, shard_name

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "masks"))
    lines = []
    with tf.io.TFRecordWriter(os.path.join(root, shard_name(0, 1))) as w:
        for i in range(n):
            img, mask = blob_scene(rng)
            prov = {"index": i, "map": "source", "source_ids": [f"s{i:02d}"], "quality": None}
            w.write(make_example(img, mask, source_id=f"synthetic/{i:08d}", synthetic=True, provenance=prov))
            Image.fromarray(img).save(os.path.join(root, "images", f"{i:08d}.png"))
            Image.fromarray(mask).save(os.path.join(root, "masks", f"{i:08d}.png"))
            lines.append(json.dumps({"index": i, "shard": 0, "source_id": f"synthetic/{i:08d}",
                                     "image": f"images/{i:08d}.png", "mask": f"masks/{i:08d}.png", **prov}))
    ClassTable(CLASSES, colors=COLORS.tolist()).save(os.path.join(root, "classes.json"))
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"schema_version": 1, "task": "segmentation", "count": n, "synthetic": True}, f)
    with open(os.path.join(root, "manifest.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("segdata")
    spec = write_scenes(str(root / "real"))
    syn = write_synthetic(str(root / "synthetic"))
    return {"root": root, "spec": spec, "synthetic": syn}


@pytest.fixture(scope="module")
def trained(seg_data, tmp_path_factory):
    """One real+synthetic ResNet34 run (the only ResNet34 build of this file)."""
    from synthseg_tf.training.segmentation import train_unet

    out = str(tmp_path_factory.mktemp("runs") / "run")
    res = train_unet(seg_data["spec"], None, out, image_size=SIZE, batch_size=4, steps=2,
                     synthetic=seg_data["synthetic"], synthetic_ratio=0.5, class_weights="auto", seed=0, verbose=0,
                     run_eagerly=True)
    return res


# ---------------------------------------------------------------------------- schedule
def test_schedule_follows_the_real_set_size():
    from synthseg_tf.training.segmentation import schedule

    assert schedule(10, 4, epochs=3, steps=None) == (3, 3)        # ceil(10 / 4) steps per epoch
    assert schedule(10, 4, epochs=None, steps=2) == (1, 2)
    assert schedule(10, 4, epochs=None, steps=7) == (3, 3)        # ~ one validation per real epoch
    assert schedule(10, 4, epochs=None, steps=None)[1] == 3
    with pytest.raises(ValueError, match="not both"):
        schedule(10, 4, epochs=1, steps=1)
    with pytest.raises(ValueError):
        schedule(10, 0, epochs=1, steps=None)


def test_early_stopping_waits_for_the_warm_up(seg_data, tmp_path):
    """Early stopping ignores the first epochs (up to 200 steps, a quarter of the budget at most)."""
    from synthseg_tf.training.segmentation import early_stopping_start, train_unet

    assert early_stopping_start(10, 800) == 20      # CamVid 25 %: 200 steps
    assert early_stopping_start(10, 400) == 10      # a quarter of a 400-step budget
    assert early_stopping_start(4, 6) == 0          # tiny budgets: from the first epoch
    assert early_stopping_start(3, 36, warmup_steps=9) == 3
    # learning rate 0: nothing improves, so patience 1 would stop at epoch 2 without the warm-up
    res = train_unet(seg_data["spec"], None, str(tmp_path / "es"), image_size=SIZE, batch_size=4, epochs=12,
                     patience=1, learning_rate=0.0, augment=False, seed=0, backbone="resnet18", export=False,
                     verbose=0)
    es_from = res["config"]["early_stopping_from_epoch"]
    spe = res["config"]["steps_per_epoch"]
    assert es_from == min(200, 12 * spe // 4) // spe >= 2
    assert es_from + 2 <= res["metrics"]["epochs_run"] < 12


# ---------------------------------------------------------------------------- train_unet
def test_run_folder_contents(trained, seg_data):
    out = trained["out_dir"]
    for name in ("history.csv", "metrics.json", "classes.json", "config.json", "model/saved_model.pb",
                 "model/config.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["train_samples"] + cfg["val_samples"] == 12
    assert cfg["synthetic_samples"] == 8 and cfg["synthetic_ratio"] == 0.5
    assert cfg["total_steps"] == cfg["epochs"] * cfg["steps_per_epoch"] == 2
    assert len(cfg["loss"]["class_weights"]) == 3 and cfg["loss"]["class_weights_mode"] == "auto"
    assert cfg["class_names"] == CLASSES and cfg["seed"] == 0

    m = json.load(open(os.path.join(out, "metrics.json")))
    val = m["val"]
    assert set(val["per_class"]) == set(CLASSES)
    for c in CLASSES:
        assert {"iou", "dice"} <= set(val["per_class"][c])
    cm = np.array(val["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == val["pixels"]
    assert val["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    ious = [v["iou"] for v in val["per_class"].values() if v["iou"] is not None]
    assert val["mean_iou"] == pytest.approx(np.mean(ious))
    # void rows are not counted: val pixels = 32*32*n minus 2 rows per void-marked mask
    from synthseg_tf.data import load

    _, va = load(seg_data["spec"]).train_val()
    void = sum(int((va.read_mask(s)[0] == 255).sum()) for s in va.samples)
    assert val["pixels"] == SIZE * SIZE * len(va) - void

    with open(os.path.join(out, "history.csv")) as f:
        header = f.readline().strip().split(",")
    assert header[0] == "epoch" and "val_mean_iou" in header and "loss" in header
    assert trained["metrics"]["best_epoch"] >= 1


def test_exported_model_reproduces_the_run_metrics(trained, seg_data):
    from synthseg_tf.data import load
    from synthseg_tf.training.segmentation import evaluate_unet

    _, va = load(seg_data["spec"]).train_val()
    res = evaluate_unet(trained["out_dir"], va, batch_size=3)   # a run folder is accepted
    assert res["confusion_matrix"] == trained["metrics"]["val"]["confusion_matrix"]
    assert res["resolution"] == "native" and res["samples"] == len(va)


def test_refuses_existing_output_and_bad_arguments(trained, seg_data, tmp_path):
    from synthseg_tf.training.segmentation import train_unet

    with pytest.raises(FileExistsError, match="already exists"):
        train_unet(seg_data["spec"], None, trained["out_dir"], image_size=SIZE, steps=1, verbose=0)
    with pytest.raises(ValueError, match="synthetic_ratio"):
        train_unet(seg_data["spec"], None, str(tmp_path / "r"), synthetic=seg_data["synthetic"],
                   synthetic_ratio=1.5, verbose=0)
    # a synthetic folder whose class table differs is refused before training
    other = tmp_path / "other"
    import shutil

    shutil.copytree(seg_data["synthetic"], other)
    from synthseg_tf.data.classes import ClassTable

    ClassTable(["a", "b", "c"]).save(str(other / "classes.json"))
    with pytest.raises(ValueError, match="class ids must mean the same"):
        train_unet(seg_data["spec"], None, str(tmp_path / "r2"), synthetic=str(other), steps=1, verbose=0)
    assert not os.path.exists(tmp_path / "r2")


def test_same_seed_same_run(seg_data, tmp_path):
    """Deterministic given the seed (small backbone, eager, no export to keep it quick)."""
    from synthseg_tf.training.segmentation import train_unet

    kw = dict(image_size=SIZE, batch_size=4, steps=1, synthetic=seg_data["synthetic"], seed=3, backbone="resnet18",
              export=False, run_eagerly=True, verbose=0)
    a = train_unet(seg_data["spec"], None, str(tmp_path / "a"), **kw)
    b = train_unet(seg_data["spec"], None, str(tmp_path / "b"), **kw)
    assert a["history"] == b["history"]
    assert a["metrics"]["val"]["confusion_matrix"] == b["metrics"]["val"]["confusion_matrix"]
    assert a["model_dir"] is None and not os.path.exists(tmp_path / "a" / "model")


# ---------------------------------------------------------------------------- evaluate_unet with known predictions
def _export_rule_model(path, rule):
    """Export a weight-free 'segmenter' whose prediction is known: ``rule`` maps images to logits."""
    import tensorflow as tf

    from synthseg_tf.models.unet import export_unet

    inp = tf.keras.Input((SIZE, SIZE, 3))
    out = tf.keras.layers.Lambda(lambda x: tf.nn.softmax(rule(x)))(inp)
    return export_unet(tf.keras.Model(inp, out), path, CLASSES, (SIZE, SIZE))


def _colour_rule(x):
    """Red disc -> 1, green bar -> 2, dark background -> 0 (exact on the fixture's colours)."""
    import tensorflow as tf

    r, g = x[..., 0], x[..., 1]
    return tf.stack([tf.fill(tf.shape(r), 2.0), 10.0 * (r - g), 10.0 * (g - r)], axis=-1)


def test_evaluate_unet_known_predictions(seg_data, tmp_path):
    import tensorflow as tf

    from synthseg_tf.data import load
    from synthseg_tf.training.segmentation import evaluate_unet

    ds = load(seg_data["spec"])
    perfect = _export_rule_model(str(tmp_path / "perfect"), _colour_rule)
    res = evaluate_unet(perfect, ds)
    assert res["pixel_accuracy"] == 1.0 and res["mean_iou"] == 1.0 and res["samples"] == 12
    masks = np.stack([ds.read_mask(s)[0] for s in ds.samples])
    assert res["pixels"] == int((masks != 255).sum())  # void skipped

    # always "background": IoU(background) = background pixels / labelled pixels, others 0
    const = _export_rule_model(str(tmp_path / "const"),
                               lambda x: tf.concat([tf.ones_like(x[..., :1]), tf.zeros_like(x[..., :2])], -1))
    res = evaluate_unet(const, seg_data["spec"])
    labelled = masks[masks != 255]
    frac_bg = float((labelled == 0).mean())
    assert res["per_class"]["background"]["iou"] == pytest.approx(frac_bg)
    assert res["per_class"]["blob"]["iou"] == 0.0 and res["per_class"]["bar"]["iou"] == 0.0
    assert res["mean_iou"] == pytest.approx(frac_bg / 3)
    assert res["pixel_accuracy"] == pytest.approx(frac_bg)

    # resized evaluation (nearest labels): every pixel of a 64x64 map is counted
    res64 = evaluate_unet(const, seg_data["spec"], image_size="64x64")
    assert res64["resolution"] == "64x64"
    assert res64["pixels"] == 64 * 64 * 12 - 3 * (4 * 64)  # 3 masks with 2 void rows (4 at 64 px)

    # a dataset with another class table is refused
    from synthseg_tf.data.classes import ClassTable

    ds2 = load(seg_data["spec"])
    ds2.classes = ClassTable(["x", "y", "z"])
    with pytest.raises(ValueError, match="trained on"):
        evaluate_unet(const, ds2)


# ---------------------------------------------------------------------------- CLI
def _parser():
    from synthseg_tf import cli_models

    p = argparse.ArgumentParser(prog="synthseg")
    sub = p.add_subparsers()
    cli_models.register(sub, "spec")
    return p


def test_cli_unet_train_and_evaluate(seg_data, tmp_path, capsys, monkeypatch):
    import functools

    import synthseg_tf.training.segmentation as seg

    # eager execution only to keep this tiny run fast (no graph tracing); everything else is the CLI's
    monkeypatch.setattr(seg, "train_unet", functools.partial(seg.train_unet, run_eagerly=True))
    p = _parser()
    out = str(tmp_path / "cli_run")
    args = p.parse_args(["unet", "train", "--data", seg_data["spec"], "--synthetic", seg_data["synthetic"],
                         "--synthetic-ratio", "0.25", "--image-size", "32x32", "--steps", "1", "--batch-size", "4",
                         "--fraction", "0.5", "--backbone", "resnet18", "--quiet", "--out", out])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert f"run folder: {out}" in text and os.path.join(out, "model") in text
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["synthetic_ratio"] == 0.25 and cfg["total_steps"] == 1 and cfg["train_samples"] == 5

    args = p.parse_args(["unet", "evaluate", "--model", os.path.join(out, "model"), "--data", seg_data["spec"],
                         "--out", str(tmp_path / "eval.json")])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "mean IoU" in text and "background" in text
    assert json.load(open(tmp_path / "eval.json"))["samples"] == 12

    from synthseg_tf.cli import CliError

    args = p.parse_args(["unet", "train", "--data", seg_data["synthetic"], "--out", str(tmp_path / "x")])
    with pytest.raises(CliError, match="--val"):
        args.func(args)
    with pytest.raises(SystemExit):
        p.parse_args(["unet", "train", "--data", "x", "--epochs", "1", "--steps", "2", "--out", "o"])
