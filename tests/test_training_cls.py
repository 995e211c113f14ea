"""Classifier training: stratified splits, synthetic images in the training split only, report, export, CLI."""
import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

import synthseg_tf  # noqa: F401

NAMES = ["blue", "green", "red"]  # classfolders sorts the folder names
RGB = {"red": (220, 40, 40), "green": (40, 220, 40), "blue": (40, 40, 220)}
SMALL = dict(filters=(8, 16), dense_units=(16,), dropout=0.1)


def class_image(rng, name, size=32):
    img = np.full((size, size, 3), 30, np.int16)
    y, x = rng.integers(2, size - 14, 2)
    img[y:y + 12, x:x + 12] = RGB[name]
    return np.clip(img + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


def write_classfolders(root, per_class=10, seed=0):
    rng = np.random.default_rng(seed)
    for name in NAMES:
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            Image.fromarray(class_image(rng, name)).save(os.path.join(root, name, f"{name}{i}.png"))
    return f"classfolders:{root}"


def write_synthetic_classes(root, per_class=4, seed=5, label_of=None):
    """Labelled generated images (TFRecord folder, synthetic=1); ``label_of`` overrides the labels."""
    import tensorflow as tf

    from synthseg_tf.data.tfrecord import make_example, shard_name

    rng = np.random.default_rng(seed)
    os.makedirs(root)
    with tf.io.TFRecordWriter(os.path.join(root, shard_name(0, 1))) as w:
        for c, name in enumerate(NAMES):
            for i in range(per_class):
                label = c if label_of is None else label_of(c)
                w.write(make_example(class_image(rng, name), None, label=label, source_id=f"synthetic/{c}_{i}",
                                     synthetic=True))
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"task": "classification", "count": 3 * per_class, "synthetic": True}, f)
    return root


@pytest.fixture(scope="module")
def cls_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("clsdata")
    return {"spec": write_classfolders(str(root / "cf")), "synthetic": write_synthetic_classes(str(root / "syn")),
            "root": root}


def test_split_classification_is_stratified_and_deterministic(cls_data, tmp_path):
    from synthseg_tf.data import load
    from synthseg_tf.training.classification import split_classification

    ds = load(cls_data["spec"])
    tr, va, te = split_classification(ds, (0.6, 0.2, 0.2), split_seed=0)
    assert (len(tr), len(va), len(te)) == (18, 6, 6)
    for part in (tr, va, te):
        counts = np.bincount([s.label for s in part.samples], minlength=3)
        assert counts.min() == counts.max()  # stratified: same count per class
    ids = lambda d: sorted(s.source_id for s in d.samples)  # noqa: E731
    assert not set(ids(tr)) & set(ids(te)) and not set(ids(va)) & set(ids(te))
    tr2, _, te2 = split_classification(ds, (0.6, 0.2, 0.2), split_seed=0, train_fraction=0.5, seed=1)
    assert ids(te2) == ids(te) and len(tr2) == 9 and set(ids(tr2)) <= set(ids(tr))

    # a layout with its own train/val/test folders keeps them
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for name in NAMES[:2]:
            os.makedirs(tmp_path / "sp" / split / name)
            Image.fromarray(class_image(rng, name)).save(tmp_path / "sp" / split / name / f"{split}.png")
    tr, va, te = split_classification(load(f"classfolders:{tmp_path / 'sp'}"))
    assert [s.split for s in tr.samples + va.samples + te.samples] == ["train"] * 2 + ["val"] * 2 + ["test"] * 2


def test_train_classifier_with_synthetic(cls_data, tmp_path):
    from synthseg_tf.models.classifier import load_classifier
    from synthseg_tf.training.classification import train_classifier

    out = str(tmp_path / "run")
    res = train_classifier(cls_data["spec"], out, image_size=32, batch_size=8, epochs=3, patience=2,
                           synthetic=cls_data["synthetic"], fractions=(0.6, 0.2, 0.2), verbose=0, **SMALL)
    for name in ("config.json", "metrics.json", "history.csv", "classes.json", "splits.json", "model/saved_model.pb"):
        assert os.path.isfile(os.path.join(out, name)), name
    cfg = res["config"]
    assert cfg["splits"] == {"train": 18, "val": 6, "test": 6}
    assert cfg["synthetic_samples"] == 12 and cfg["synthetic_mode"] == "append"
    assert cfg["steps_per_epoch"] == 4  # ceil((18 real + 12 synthetic) / 8)
    test = res["metrics"]["test"]
    assert test["num_samples"] == 6 and set(test["per_class"]) == set(NAMES)
    assert {"precision", "recall", "f1"} <= set(test["macro"]) and "f1" in test["weighted"]
    assert np.array(test["confusion_matrix"]).sum() == 6
    assert 1 <= res["metrics"]["best_epoch"] <= res["metrics"]["epochs_run"] <= 3
    splits = json.load(open(os.path.join(out, "splits.json")))
    assert not any(sid.startswith("synthetic") for sid in splits["train"])  # synthetic never in val/test ids
    assert len(splits["test"]) == 6

    clf = load_classifier(os.path.join(out, "model"))
    x = np.stack([class_image(np.random.default_rng(0), n) for n in NAMES])
    assert clf(x).shape == (3,) and clf.class_names == NAMES


def test_bad_inputs_are_refused(cls_data, tmp_path):
    from synthseg_tf.training.classification import train_classifier

    unlabelled = write_synthetic_classes(str(tmp_path / "unlabelled"), per_class=1, label_of=lambda c: -1)
    with pytest.raises(ValueError, match="labelled -1"):
        train_classifier(cls_data["spec"], str(tmp_path / "r1"), synthetic=unlabelled, verbose=0)
    with pytest.raises(ValueError, match="classfolders"):
        train_classifier(_seg_spec(tmp_path), str(tmp_path / "r2"), verbose=0)
    with pytest.raises(ValueError, match="train_fraction"):
        train_classifier(cls_data["spec"], str(tmp_path / "r3"), train_fraction=0, verbose=0)
    assert not any(os.path.exists(tmp_path / r) for r in ("r1", "r2", "r3"))


def _seg_spec(tmp_path):
    os.makedirs(tmp_path / "seg" / "img")
    os.makedirs(tmp_path / "seg" / "msk")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "seg" / "img" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "seg" / "msk" / "a.png")
    return f"pairs:{tmp_path / 'seg' / 'img'}:{tmp_path / 'seg' / 'msk'}"


def test_cli_classifier_train(cls_data, tmp_path, capsys):
    from synthseg_tf import cli_models

    p = argparse.ArgumentParser(prog="synthseg")
    sub = p.add_subparsers()
    cli_models.register(sub, "spec")
    out = str(tmp_path / "cli")
    args = p.parse_args(["classifier", "train", "--data", cls_data["spec"], "--synthetic", cls_data["synthetic"],
                         "--synthetic-ratio", "0.5", "--image-size", "32", "--epochs", "1", "--batch-size", "8",
                         "--split", "0.6,0.2,0.2", "--min-patience-steps", "0", "--quiet", "--out", out])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and f"run folder: {out}" in text
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["synthetic_mode"] == "mix" and cfg["steps_per_epoch"] == 3  # ceil(18 real / 8)
    assert cfg["min_patience_steps"] == 0 and cfg["patience_epochs"] == cfg["patience"]
    assert cfg["real_passes"] is False
    # a 3-step run: "auto" batch-norm momentum is the floor, 0.9
    assert cfg["bn_momentum"] == 0.9 and cfg["bn_momentum_rule"] == "auto"
    # --real-passes: an epoch is one pass over the 18 real images when half of each batch is synthetic
    args = p.parse_args(["classifier", "train", "--data", cls_data["spec"], "--synthetic", cls_data["synthetic"],
                         "--synthetic-ratio", "0.5", "--real-passes", "--image-size", "32", "--epochs", "1",
                         "--batch-size", "8", "--split", "0.6,0.2,0.2", "--quiet", "--out", out + "2"])
    assert args.func(args) == 0
    cfg = json.load(open(os.path.join(out + "2", "config.json")))
    assert cfg["real_passes"] is True and cfg["steps_per_epoch"] == 5  # ceil(18 / (0.5 * 8))
    args = p.parse_args(["classifier", "train", "--data", cls_data["spec"], "--image-size", "32", "--epochs", "1",
                         "--batch-size", "8", "--split", "0.6,0.2,0.2", "--bn-momentum", "0.95", "--quiet",
                         "--out", out + "3"])
    assert args.func(args) == 0
    cfg = json.load(open(os.path.join(out + "3", "config.json")))
    assert cfg["bn_momentum"] == 0.95 and cfg["bn_momentum_rule"] == "fixed"
    for bad in ("1", "0", "fast"):
        with pytest.raises(SystemExit):
            p.parse_args(["classifier", "train", "--data", "x", "--out", "y", "--bn-momentum", bad])


def test_auto_batch_norm_momentum_follows_the_planned_steps():
    """"auto": 1 - 10 / planned steps within [0.9, 0.99]: long runs keep Keras' 0.99 (the figures
    measured on them hold), short runs forget the initial statistics."""
    from synthseg_tf.training.classification import resolve_bn_momentum

    assert resolve_bn_momentum("auto", 1400) == 0.99 and resolve_bn_momentum("auto", 1000) == 0.99
    assert resolve_bn_momentum("auto", 400) == 0.975 and resolve_bn_momentum("AUTO", 200) == 0.95
    assert resolve_bn_momentum("auto", 50) == 0.9 and resolve_bn_momentum("auto", 0) == 0.9
    assert resolve_bn_momentum(0.97, 5) == 0.97 and resolve_bn_momentum("0.8", 5) == 0.8
    for bad in (1.0, 0.0, "fast", -0.5):
        with pytest.raises(ValueError, match="bn_momentum"):
            resolve_bn_momentum(bad, 100)


def test_mixed_steps_per_epoch():
    from synthseg_tf.training.classification import mixed_steps_per_epoch

    assert mixed_steps_per_epoch(194, 32) == 7 and mixed_steps_per_epoch(194, 32, None) == 7
    assert mixed_steps_per_epoch(194, 32, 0.25) == 9  # 194 / 24 = 8.08
    assert mixed_steps_per_epoch(96, 32, 0.25) == 4  # exactly 4: no extra step from rounding
    assert mixed_steps_per_epoch(194, 32, 1.0) == 7 and mixed_steps_per_epoch(1, 32, 0.5) == 1


def test_patience_spans_at_least_min_patience_steps():
    from synthseg_tf.training.classification import patience_epochs

    assert patience_epochs(12, 25, 300) == 12  # the full demo-classes split: unchanged
    assert patience_epochs(12, 7, 300) == 43  # a quarter of it: 301 steps
    assert patience_epochs(12, 7, 0) == 12 and patience_epochs(2, 1000, 300) == 2
    for bad in (dict(patience=0, steps_per_epoch=7), dict(patience=3, steps_per_epoch=7, min_patience_steps=-1)):
        with pytest.raises(ValueError, match="patience"):
            patience_epochs(**bad)


def test_training_options_are_used_and_recorded(cls_data, tmp_path):
    from synthseg_tf.training.classification import CLASSIFIER_DEFAULTS, train_classifier

    out = str(tmp_path / "opts")
    res = train_classifier(cls_data["spec"], out, image_size=32, batch_size=8, epochs=3, patience=3,
                           fractions=(0.6, 0.2, 0.2), augment="standard", lr_schedule="plateau",
                           monitor="val_accuracy", label_smoothing=0.2, pooling="flatten", batch_norm=False,
                           export=False, verbose=0, **SMALL)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["augment"] == "standard" and cfg["lr_schedule"] == "plateau" and cfg["monitor"] == "val_accuracy"
    assert cfg["label_smoothing"] == 0.2 and cfg["pooling"] == "flatten" and cfg["batch_norm"] is False
    m = res["metrics"]
    assert m["monitor"] == "val_accuracy"
    assert m["best_monitor_value"] == max(res["history"]["val_accuracy"])  # the kept epoch is the best one
    assert m["best_val_loss"] == res["history"]["val_loss"][m["best_epoch"] - 1]
    assert "lr" in res["history"]  # ReduceLROnPlateau logs the learning rate

    defaults = train_classifier(cls_data["spec"], str(tmp_path / "defaults"), image_size=32, batch_size=8,
                                epochs=1, fractions=(0.6, 0.2, 0.2), export=False, verbose=0, **SMALL)["config"]
    for key in ("augment", "batch_norm", "pooling", "label_smoothing", "lr_schedule", "monitor",
                "min_patience_steps"):
        assert defaults[key] == CLASSIFIER_DEFAULTS[key], key
    # 18 training images at batch 8: 3 steps per epoch, so the patience spans 100 epochs (300 steps)
    assert cfg["steps_per_epoch"] == 3 and cfg["patience"] == 3 and cfg["patience_epochs"] == 100

    for bad, match in ((dict(augment="heavy"), "augment must be"), (dict(lr_schedule="step"), "lr_schedule"),
                       (dict(monitor="loss"), "monitor"), (dict(min_patience_steps=-1), "min_patience_steps")):
        with pytest.raises(ValueError, match=match):
            train_classifier(cls_data["spec"], str(tmp_path / "bad"), verbose=0, **bad)
    assert not os.path.exists(tmp_path / "bad")


def test_cli_augment_options(cls_data, tmp_path):
    from synthseg_tf import cli_models
    from synthseg_tf.cli import CliError

    p = argparse.ArgumentParser(prog="synthseg")
    sub = p.add_subparsers()
    cli_models.register(sub, "spec")
    args = p.parse_args(["classifier", "train", "--data", cls_data["spec"], "--augment", "strong", "--no-augment",
                         "--out", str(tmp_path / "x")])
    with pytest.raises(CliError, match="--no-augment"):
        args.func(args)
    args = p.parse_args(["classifier", "train", "--data", cls_data["spec"], "--out", str(tmp_path / "y")])
    assert args.lr is None and args.epochs is None and args.augment is None  # train_classifier's defaults apply
    assert args.min_patience_steps is None
    with pytest.raises(SystemExit):
        p.parse_args(["classifier", "train", "--data", cls_data["spec"], "--min-patience-steps", "-1", "--out", "z"])


def _sharded_synthetic(root, per_class=3, seed=7):
    """One shard per class, so the interleaved read order is not the files' concatenation."""
    import tensorflow as tf

    from synthseg_tf.data.tfrecord import make_example, shard_name

    rng = np.random.default_rng(seed)
    os.makedirs(root)
    for c, name in enumerate(NAMES):
        with tf.io.TFRecordWriter(os.path.join(root, shard_name(c, len(NAMES)))) as w:
            for i in range(per_class):
                w.write(make_example(class_image(rng, name), None, label=c, source_id=f"synthetic/{c}_{i}",
                                     synthetic=True))
    with open(os.path.join(root, "dataset.json"), "w") as f:
        json.dump({"task": "classification", "count": 3 * per_class, "synthetic": True}, f)
    return root


def test_soft_labels_mix_the_teachers_probabilities_into_synthetic_targets(cls_data, tmp_path):
    import tensorflow as tf

    from synthseg_tf.data.tfdata import prepare
    from synthseg_tf.models.classifier import load_classifier
    from synthseg_tf.training.classification import _raw, _with_targets, teacher_targets, train_classifier

    teacher = train_classifier(cls_data["spec"], str(tmp_path / "teacher"), image_size=32, batch_size=8, epochs=1,
                               fractions=(0.6, 0.2, 0.2), min_patience_steps=0, verbose=0, **SMALL)["model_dir"]
    syn = _sharded_synthetic(str(tmp_path / "syn"))
    order = [int(el["label"]) for el in _raw(syn).as_numpy_iterator()]
    assert sorted(order) == [0, 0, 0, 1, 1, 1, 2, 2, 2] and order != sorted(order)  # interleaved
    images = np.stack([el["image"].numpy() for el in prepare(_raw(syn), (32, 32))])
    probs = load_classifier(teacher).predict_proba(images)

    labels, hard = teacher_targets(syn, teacher, NAMES, (32, 32), 0.0)
    assert labels.tolist() == order and np.array_equal(hard, np.eye(3, dtype=np.float32)[order])
    _, full = teacher_targets(syn, teacher, NAMES, (32, 32), 1.0)
    np.testing.assert_allclose(full, probs, atol=1e-5)
    _, half = teacher_targets(syn, teacher, NAMES, (32, 32), 0.5)
    np.testing.assert_allclose(half, 0.5 * hard + 0.5 * probs, atol=1e-5)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="not the data's"):
        teacher_targets(syn, teacher, ["a", "b", "c"], (32, 32), 0.5)

    # every element carries its own row; a read order that differs fails instead of mislabelling
    rows = [el["target"] for el in _with_targets(_raw(syn), labels, half).as_numpy_iterator()]
    np.testing.assert_allclose(np.stack(rows), half)
    with pytest.raises(tf.errors.InvalidArgumentError, match="another order"):
        list(_with_targets(_raw(syn), labels[::-1].copy(), half[::-1].copy()).as_numpy_iterator())

    with pytest.raises(ValueError, match="needs a teacher"):
        train_classifier(cls_data["spec"], str(tmp_path / "r"), synthetic=syn, synthetic_soft_labels=0.5, verbose=0)
    res = train_classifier(cls_data["spec"], str(tmp_path / "soft"), image_size=32, batch_size=8, epochs=1,
                           synthetic=syn, synthetic_ratio=0.5, synthetic_soft_labels=0.5, teacher=teacher,
                           fractions=(0.6, 0.2, 0.2), min_patience_steps=0, verbose=0, export=False, **SMALL)
    soft = res["config"]["synthetic_soft_labels"]
    assert soft["alpha"] == 0.5 and soft["teacher"] == teacher
    assert soft["argmax_is_intended_class"] == pytest.approx(np.mean(half.argmax(axis=1) == labels), abs=1e-4)
    # a run without synthetic images records no soft labels: tests/test_experiments.py's protocol test


def test_training_batches_carry_soft_targets_for_synthetic_images_only(cls_data, tmp_path):
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.classification import _raw, _train_pipeline, split_classification

    syn = _sharded_synthetic(str(tmp_path / "syn"))
    train, _, _ = split_classification(load(cls_data["spec"]), (0.6, 0.2, 0.2))
    labels = np.array([int(el["label"]) for el in _raw(syn).as_numpy_iterator()])
    targets = np.full((9, 3), 0.1, np.float32)
    targets[np.arange(9), labels] = 0.8  # recognisable rows: never one-hot
    ds, _ = _train_pipeline(train, syn, 9, 0.5, (32, 32), 16, True, 0, False, 3, (labels, targets))  # augmented
    x, y = next(iter(ds))
    y = y.numpy()
    soft_rows = np.isclose(y.max(axis=1), 0.8)
    hard_rows = np.isclose(y.max(axis=1), 1.0)
    assert soft_rows.any() and hard_rows.any() and (soft_rows | hard_rows).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)
    ds, _ = _train_pipeline(train, syn, 9, None, (32, 32), 27, False, 0, False, 3, (labels, targets))  # append
    _, y = next(iter(ds))
    assert int(np.isclose(y.numpy().max(axis=1), 0.8).sum()) == 9  # every synthetic image once per pass


class Stop(Exception):
    """Raised by :func:`cli_spy`'s stand-in once it has recorded a call."""


def cli_spy(monkeypatch, module, name):
    """``(parser, calls)``: the model commands' parser, with ``module.name`` replaced by a spy that
    records each call's keyword arguments in ``calls`` and raises :class:`Stop`."""
    from synthseg_tf import cli_models

    p = argparse.ArgumentParser(prog="synthseg")
    cli_models.register(p.add_subparsers(), "spec")
    calls = []

    def spy(*a, **k):
        calls.append(k)
        raise Stop

    monkeypatch.setattr(module, name, spy)
    return p, calls


def test_cli_classifier_train_passes_soft_labels_and_teacher(monkeypatch):
    import synthseg_tf.training.classification as tc
    from synthseg_tf.cli import CliError

    p, calls = cli_spy(monkeypatch, tc, "train_classifier")
    base = ["classifier", "train", "--data", "demo-classes", "--synthetic", "syn", "--out", "x"]
    for extra, want in (([], {}), (["--synthetic-soft-labels", "0.3", "--teacher", "t/model"],
                                   {"synthetic_soft_labels": 0.3, "teacher": "t/model"}),
                        (["--synthetic-ratio", "0.25", "--synthetic-bn", "separate"], {"synthetic_bn": "separate"}),
                        (["--synthetic-ratio", "0.1", "--synthetic-bn", "auxiliary"], {"synthetic_bn": "auxiliary"}),
                        (["--synthetic-ratio", "0.25", "--synthetic-batches", "fixed"], {"synthetic_batches": "fixed"})):
        args = p.parse_args(base + extra)
        with pytest.raises(Stop):
            args.func(args)
        keys = ("synthetic_soft_labels", "teacher", "synthetic_bn", "synthetic_batches")
        assert {k: calls[-1][k] for k in keys if k in calls[-1]} == want
    with pytest.raises(SystemExit):
        p.parse_args(base + ["--synthetic-soft-labels", "1.5"])
    n = len(calls)
    for extra, problem in ((["--synthetic-soft-labels", "0.3"], "needs --synthetic"),
                           (["--teacher", "t/model"], "only read with"),
                           (["--synthetic-bn", "separate"], "needs --synthetic and a --synthetic-ratio"),
                           (["--synthetic-ratio", "1", "--synthetic-bn", "separate"], "between 0 and 1"),
                           (["--synthetic-bn", "auxiliary"], "--synthetic-bn auxiliary needs"),
                           (["--synthetic-batches", "fixed"], "--synthetic-batches fixed needs")):
        args = p.parse_args(base + extra)
        with pytest.raises(CliError, match=problem):  # refused before any training
            args.func(args)
    assert len(calls) == n


def test_separate_synthetic_statistics_normalise_each_part_by_its_own_batch():
    """One step of SeparateSyntheticStatistics: the real rows and the synthetic rows are each normalised
    by their own batch statistics (the loss is that of the two parts run apart), only the real rows move
    the moving statistics, the momentum is restored, and the step differs from a shared-statistics one."""
    import tensorflow as tf

    from synthseg_tf.models.classifier import SeparateSyntheticStatistics, build_classifier, compile_classifier

    def make():
        tf.keras.utils.set_random_seed(3)
        m = build_classifier(3, (16, 16, 3), filters=(4,), dense_units=(8,), dropout=0.0, batch_norm=True,
                             bn_momentum=0.9)
        return compile_classifier(m, learning_rate=0.0)

    rng = np.random.default_rng(0)
    x = rng.random((6, 16, 16, 3)).astype(np.float32)
    x[4:] = x[4:] * 0.3 + 0.6  # the "synthetic" rows: other statistics
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    bn_names = [layer.name for layer in make().layers if isinstance(layer, tf.keras.layers.BatchNormalization)]

    twin = make()  # the expected step, written out: the two parts apart, the real part's statistics kept
    pred = twin(x[:4], training=True)
    moving_after_real = [twin.get_layer(n).moving_mean.numpy().copy() for n in bn_names]
    pred = tf.concat([pred, twin(x[4:], training=True)], 0)
    want_loss = float(tf.keras.losses.CategoricalCrossentropy()(y, pred))  # compile_classifier's, no smoothing

    clf = make()
    sep = SeparateSyntheticStatistics(clf, real_rows=4)
    compile_classifier(sep, learning_rate=0.0)
    assert [w.name for w in sep.weights] == [w.name for w in clf.weights]
    hist = sep.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0)
    assert hist.history["loss"][0] == pytest.approx(want_loss, rel=1e-5)
    for name, want in zip(bn_names, moving_after_real):
        np.testing.assert_allclose(clf.get_layer(name).moving_mean.numpy(), want, rtol=1e-5, atol=1e-7)
        assert clf.get_layer(name).momentum == 0.9

    shared = make()
    compile_classifier(shared, learning_rate=0.0)
    shared_loss = shared.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    assert abs(shared_loss - want_loss) > 1e-3  # the separation is what the test sees
    assert not np.allclose(shared.get_layer(bn_names[0]).moving_mean.numpy(), moving_after_real[0])
    with pytest.raises(ValueError, match="batch normalisation"):
        SeparateSyntheticStatistics(build_classifier(3, (16, 16, 3), filters=(4,), dense_units=(8,)), 4)


def test_auxiliary_batch_norms_train_on_synthetic_rows_only():
    """SeparateSyntheticStatistics(auxiliary=True), AdvProp's auxiliary batch norm: the synthetic rows
    go through copies of the batch norms (started from the classifier's) and every other layer shared.
    A step's loss is that of the two parts run apart; the copies' scales move with the synthetic rows'
    gradient only, the classifier's with the real rows' only; the convolutions see both."""
    import tensorflow as tf

    from synthseg_tf.models.classifier import SeparateSyntheticStatistics, build_classifier, compile_classifier

    def make(lr):
        tf.keras.utils.set_random_seed(3)
        m = build_classifier(3, (16, 16, 3), filters=(4,), dense_units=(8,), dropout=0.0, batch_norm=True,
                             bn_momentum=0.9)
        return compile_classifier(m, learning_rate=lr)

    rng = np.random.default_rng(0)
    x = rng.random((6, 16, 16, 3)).astype(np.float32)
    x[4:] = x[4:] * 0.3 + 0.6
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    bn = tf.keras.layers.BatchNormalization

    twin = make(0.0)
    pred = tf.concat([twin(x[:4], training=True), twin(x[4:], training=True)], 0)
    want_loss = float(tf.keras.losses.CategoricalCrossentropy()(y, pred))

    clf = make(0.0)
    clf.get_layer([l.name for l in clf.layers if isinstance(l, bn)][0]).gamma.assign(tf.fill([4], 1.5))
    aux = SeparateSyntheticStatistics(clf, real_rows=4, auxiliary=True)
    branch = aux.synthetic_branch
    pairs = [(l, branch.get_layer(f"{l.name}_synthetic")) for l in clf.layers if isinstance(l, bn)]
    assert pairs and all(np.allclose(a.gamma.numpy(), b.gamma.numpy()) for a, b in pairs)  # started from clf's
    assert all(a is not b for a, b in pairs)
    conv = [l for l in clf.layers if isinstance(l, tf.keras.layers.Conv2D)][0]
    assert branch.get_layer(conv.name) is conv  # shared, not copied
    assert [w.name for w in aux.weights][:len(clf.weights)] == [w.name for w in clf.weights]
    compile_classifier(aux, learning_rate=0.0)
    pairs[0][0].gamma.assign(tf.ones([4]))  # as twin's
    pairs[0][1].gamma.assign(tf.ones([4]))
    loss = aux.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    assert loss == pytest.approx(want_loss, rel=1e-5)

    # which rows train which scales: synthetic rows alone move only the copies, real rows only clf's
    for real_label_weight, moved, still in ((0.0, 1, 0), (1.0, 0, 1)):
        clf = make(0.1)
        aux = SeparateSyntheticStatistics(clf, real_rows=4, auxiliary=True)
        compile_classifier(aux, learning_rate=0.1)
        pairs = [(l, aux.synthetic_branch.get_layer(f"{l.name}_synthetic")) for l in clf.layers if isinstance(l, bn)]
        before = [(a.gamma.numpy().copy(), b.gamma.numpy().copy()) for a, b in pairs]
        conv = [l for l in clf.layers if isinstance(l, tf.keras.layers.Conv2D)][0]
        kernel = conv.kernel.numpy().copy()
        w = np.array([real_label_weight] * 4 + [1.0 - real_label_weight] * 2, np.float32)
        aux.fit(x, y, sample_weight=w, batch_size=6, epochs=1, shuffle=False, verbose=0)
        for (a, b), got in zip(pairs, before):
            after = (a.gamma.numpy(), b.gamma.numpy())
            assert not np.allclose(after[moved], got[moved])
            np.testing.assert_array_equal(after[still], got[still])
        assert not np.allclose(conv.kernel.numpy(), kernel)


def test_separate_synthetic_bn_stacks_real_then_synthetic_rows(cls_data, tmp_path):
    """synthetic_bn='separate': every batch is the real rows then round(ratio x batch) synthetic ones;
    recorded in config.json; runs without mixed batches train as 'shared'; refused without batch norm."""
    from synthseg_tf.data.layouts import load
    from synthseg_tf.models.classifier import synthetic_rows
    from synthseg_tf.training.classification import _raw, _train_pipeline, split_classification, train_classifier

    assert [synthetic_rows(32, r) for r in (0.25, 0.1, 0.01, 0.99)] == [8, 3, 1, 31]
    for bad in ((1, 0.5), (8, 0.0), (8, 1.0)):
        with pytest.raises(ValueError):
            synthetic_rows(*bad)
    syn = _sharded_synthetic(str(tmp_path / "syn"))
    train, _, _ = split_classification(load(cls_data["spec"]), (0.6, 0.2, 0.2))
    labels = np.array([int(el["label"]) for el in _raw(syn).as_numpy_iterator()])
    targets = np.full((9, 3), 0.1, np.float32)
    targets[np.arange(9), labels] = 0.8  # synthetic targets never one-hot: each row tells its source
    for augment in (True, False):
        ds, _ = _train_pipeline(train, syn, 9, 0.25, (32, 32), 8, augment, 0, False, 3, (labels, targets),
                                synthetic_rows=2)
        for x, y in ds.take(3):
            assert x.shape == (8, 32, 32, 3)
            assert np.isclose(y.numpy().max(axis=1), 0.8).tolist() == [False] * 6 + [True] * 2

    kw = dict(image_size=32, batch_size=8, epochs=1, fractions=(0.6, 0.2, 0.2), min_patience_steps=0, verbose=0,
              export=False, **SMALL)
    res = train_classifier(cls_data["spec"], str(tmp_path / "sep"), synthetic=syn, synthetic_ratio=0.25,
                           synthetic_bn="separate", **kw)
    assert res["config"]["synthetic_bn"] == "separate" and res["config"]["synthetic_rows_per_batch"] == 2
    assert res["config"]["synthetic_batches"] == "fixed"  # implied
    assert res["metrics"]["test"]["num_samples"] == 6
    res = train_classifier(cls_data["spec"], str(tmp_path / "aux"), synthetic=syn, synthetic_ratio=0.25,
                           synthetic_bn="auxiliary", save_weights=True, **kw)
    assert res["config"]["synthetic_bn"] == "auxiliary" and res["config"]["synthetic_rows_per_batch"] == 2
    import h5py

    with h5py.File(tmp_path / "aux" / "weights.h5", "r") as saved:  # the classifier alone, no copies
        names = []
        saved.visit(names.append)
    assert names and not any("_synthetic" in n for n in names)
    res = train_classifier(cls_data["spec"], str(tmp_path / "fixed"), synthetic=syn, synthetic_ratio=0.25,
                           synthetic_batches="fixed", **kw)  # the same batches, shared statistics
    assert res["config"]["synthetic_bn"] == "shared" and res["config"]["synthetic_rows_per_batch"] == 2
    res = train_classifier(cls_data["spec"], str(tmp_path / "sampled"), synthetic=syn, synthetic_ratio=0.25, **kw)
    assert res["config"]["synthetic_batches"] == "sampled" and res["config"]["synthetic_rows_per_batch"] is None
    res = train_classifier(cls_data["spec"], str(tmp_path / "append"), synthetic=syn, synthetic_bn="separate", **kw)
    assert res["config"]["synthetic_rows_per_batch"] is None
    with pytest.raises(ValueError, match="needs batch_norm"):
        train_classifier(cls_data["spec"], str(tmp_path / "nobn"), synthetic=syn, synthetic_ratio=0.25,
                         synthetic_bn="separate", **dict(kw, batch_norm=False))
    with pytest.raises(ValueError, match="needs batch_norm"):
        train_classifier(cls_data["spec"], str(tmp_path / "nobn"), synthetic=syn, synthetic_ratio=0.25,
                         synthetic_bn="auxiliary", **dict(kw, batch_norm=False))
    with pytest.raises(ValueError, match="synthetic_bn must be one of"):
        train_classifier(cls_data["spec"], str(tmp_path / "bad"), synthetic_bn="split", **kw)
    with pytest.raises(ValueError, match="synthetic_batches must be one of"):
        train_classifier(cls_data["spec"], str(tmp_path / "bad2"), synthetic_batches="stacked", **kw)
    assert not any((tmp_path / r).exists() for r in ("nobn", "bad", "bad2"))
