"""Exponential moving average of weights: the U-Net (``train_unet(ema=...)``) and the classifier (``train_classifier(ema=...)``), ``--ema``."""
import argparse
import json

import numpy as np
import pytest

import synthseg_tf  # noqa: F401


def _tiny_model(seed=0):
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((4,))
    x = tf.keras.layers.Dense(3, name="d1")(inp)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    out = tf.keras.layers.Dense(1, name="d2")(x)
    m = tf.keras.Model(inp, out)
    m.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
    return m


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, (x @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]


def test_average_follows_the_documented_recurrence_and_validation_reads_it():
    import tensorflow as tf

    from synthseg_tf.training.segmentation import EMA_WARMUP, weight_ema_callback

    model = _tiny_model()
    x, y = _data()
    decay = 0.8
    ema = weight_ema_callback(decay)
    start, trained, seen_by_validation, after_validation = [], [], [], []

    def snapshot():
        return [v.numpy().copy() for v in model.trainable_variables]

    class Record(tf.keras.callbacks.Callback):  # runs after the EMA callback
        def on_train_begin(self, logs=None):
            start.extend(snapshot())

        def on_train_batch_end(self, batch, logs=None):
            trained.append(snapshot())

        def on_test_begin(self, logs=None):
            seen_by_validation.append(snapshot())

        def on_epoch_end(self, epoch, logs=None):
            after_validation.append(snapshot())

    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), callbacks=[ema, Record()], verbose=0,
              shuffle=False)
    assert len(trained) == 8
    avg, expected_per_epoch = start, []
    for t, ws in enumerate(trained, start=1):
        d = min(decay, (1.0 + t) / (EMA_WARMUP + t))
        avg = [d * a + (1 - d) * w for a, w in zip(avg, ws)]
        if t % 4 == 0:
            expected_per_epoch.append(avg)
    # validation ran on the averaged weights, and training went on from the trained ones
    assert len(seen_by_validation) == 2
    for got, want in zip(seen_by_validation, expected_per_epoch):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for got, raw in zip(after_validation, (trained[3], trained[7])):
        for g, w in zip(got, raw):
            np.testing.assert_array_equal(g, w)
    assert not np.allclose(expected_per_epoch[-1][0], trained[7][0])  # the average is not the last weights
    # weights(): the average for trainable variables, the model's own batch-norm statistics
    ws = ema.weights()
    assert any(not v.trainable for v in model.weights)
    for v, w in zip(model.weights, ws):
        if not v.trainable:
            np.testing.assert_array_equal(w, v.numpy())
    for g, w in zip([w for v, w in zip(model.weights, ws) if v.trainable], expected_per_epoch[-1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    ema.apply()
    for v, w in zip(model.trainable_variables, expected_per_epoch[-1]):
        np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-6)


def test_keep_best_stores_the_weights_that_were_validated():
    from synthseg_tf.training.segmentation import keep_best_callback, weight_ema_callback

    model = _tiny_model()
    x, y = _data()
    ema = weight_ema_callback(0.9)
    keeper = keep_best_callback("val_loss", "min", ema.weights)
    model.fit(x, y, batch_size=4, epochs=3, validation_data=(x, y), callbacks=[ema, keeper], verbose=0,
              shuffle=False)
    # the restored weights score the best validation loss the history recorded
    best = min(model.history.history["val_loss"])
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), best, rtol=1e-5)


def test_bad_decay_is_refused():
    from synthseg_tf.cli_models import _ema_decay
    from synthseg_tf.training.segmentation import weight_ema_callback

    for bad in (0.0, 1.0, -0.5, 2):
        with pytest.raises(ValueError, match="decay"):
            weight_ema_callback(bad)
    assert _ema_decay("0.99") == 0.99
    for bad in ("1", "0", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _ema_decay(bad)


def test_train_unet_records_and_uses_the_average(tmp_path):
    from test_training_seg import SIZE, write_scenes

    from synthseg_tf.training.segmentation import train_unet

    spec = write_scenes(str(tmp_path / "data"))
    kw = dict(image_size=SIZE, batch_size=4, steps=3, seed=0, backbone="resnet18", export=False,
              run_eagerly=True, verbose=0)
    with pytest.raises(ValueError, match="ema"):
        train_unet(spec, None, str(tmp_path / "bad"), ema=1.0, **kw)
    res = train_unet(spec, None, str(tmp_path / "ema"), ema=0.5, **kw)
    assert res["config"]["weight_ema"] == 0.5
    plain = train_unet(spec, None, str(tmp_path / "plain"), **kw)
    assert plain["config"]["weight_ema"] is None
    # the same seed and data: the selection figures differ only through the average
    assert res["history"]["loss"] == plain["history"]["loss"]
    assert res["history"]["val_loss"] != plain["history"]["val_loss"]


def test_train_classifier_selects_and_keeps_the_average(tmp_path):
    from test_training_cls import SMALL, write_classfolders

    from synthseg_tf import cli_models
    from synthseg_tf.training.classification import train_classifier

    spec = write_classfolders(str(tmp_path / "cf"))
    kw = dict(image_size=32, batch_size=8, epochs=4, patience=4, fractions=(0.6, 0.2, 0.2), seed=0, export=False,
              verbose=0, monitor="val_accuracy", **SMALL)
    with pytest.raises(ValueError, match="ema"):
        train_classifier(spec, str(tmp_path / "bad"), ema=0.0, **kw)
    assert not (tmp_path / "bad").exists()
    res = train_classifier(spec, str(tmp_path / "ema"), ema=0.6, **kw)
    plain = train_classifier(spec, str(tmp_path / "plain"), **kw)
    assert res["config"]["weight_ema"] == 0.6 and plain["config"]["weight_ema"] is None
    # the same seed and data: training is the same, what validation reads is the average
    assert res["history"]["loss"] == plain["history"]["loss"]
    assert res["history"]["val_loss"] != plain["history"]["val_loss"]
    # the kept model is the validated average of the best epoch: its val report repeats that epoch's figure
    m = res["metrics"]
    assert m["best_monitor_value"] == max(res["history"]["val_accuracy"])
    assert m["val"]["accuracy"] == pytest.approx(res["history"]["val_accuracy"][m["best_epoch"] - 1], abs=1e-6)

    p = argparse.ArgumentParser(prog="synthseg")
    sub = p.add_subparsers()
    cli_models.register(sub, "spec")
    out = str(tmp_path / "cli")
    args = p.parse_args(["classifier", "train", "--data", spec, "--ema", "0.9", "--image-size", "32", "--epochs", "1",
                         "--batch-size", "8", "--split", "0.6,0.2,0.2", "--quiet", "--out", out])
    assert args.func(args) == 0
    assert json.load(open(f"{out}/config.json"))["weight_ema"] == 0.9
    args = p.parse_args(["experiment", "classification", "--data", spec, "--ema", "0.95", "--out", "x"])
    assert args.ema == 0.95
    with pytest.raises(SystemExit):
        p.parse_args(["experiment", "classification", "--data", spec, "--ema", "1", "--out", "x"])
