"""Classifier CNN: shapes, stratified split, training, export/load."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from synthseg_tf.data.classes import ClassTable
from synthseg_tf.models.classifier import (
    PENULTIMATE,
    build_classifier,
    compile_classifier,
    early_stopping,
    export_classifier,
    feature_extractor,
    load_classifier,
    stratified_split,
    to_classifier_inputs,
)

SMALL = dict(input_shape=(32, 32, 3), filters=(8, 16), dense_units=(16,))


def _separable(n_per_class=24, classes=3, size=32, seed=0):
    """Class c = noisy image whose channel c is bright."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_per_class * classes, size, size, 3), dtype=np.float32) * 0.3
    y = np.repeat(np.arange(classes), n_per_class).astype(np.int32)
    x[np.arange(len(y)), :, :, y] += 0.6
    order = rng.permutation(len(y))
    return x[order], y[order]


def test_output_shape_and_penultimate():
    model = build_classifier(5, **SMALL)
    probs = model(np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32), training=False).numpy()
    assert probs.shape == (4, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert model.get_layer(PENULTIMATE).units == 16
    assert feature_extractor(model).output_shape == (None, 16)

    default = build_classifier(37)
    assert default.input_shape == (None, 128, 128, 3) and default.output_shape == (None, 37)
    gap = build_classifier(3, input_shape=(None, None, 3), pooling="gap", batch_norm=True, **{k: SMALL[k] for k in ("filters", "dense_units")})
    assert gap(np.zeros((1, 40, 24, 3), np.float32)).shape == (1, 3)


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="penultimate"):
        build_classifier(3, dense_units=())
    with pytest.raises(ValueError, match="fixed input size"):
        build_classifier(3, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="too small"):
        build_classifier(3, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="bn_momentum"):
        build_classifier(3, batch_norm=True, bn_momentum=1.0)
    bns = [l for l in build_classifier(3, input_shape=(32, 32, 3), batch_norm=True, bn_momentum=0.95).layers
           if isinstance(l, tf.keras.layers.BatchNormalization)]
    assert len(bns) == 8 and {l.momentum for l in bns} == {0.95}


def test_stratified_split_on_imbalanced_labels():
    rng = np.random.default_rng(0)
    sizes = [3] * 5 + [1, 2] + list(rng.integers(10, 60, size=30))  # 37 classes
    labels = rng.permutation(np.repeat(np.arange(37), sizes))
    train, val, test = stratified_split(labels, seed=0)

    allidx = np.concatenate([train, val, test])
    assert len(allidx) == len(labels) and len(np.unique(allidx)) == len(labels)  # a partition
    for part in (train, val, test):
        assert np.all(np.diff(part) > 0)  # sorted, no duplicates
    for c, n in enumerate(sizes):
        counts = [int(np.sum(labels[p] == c)) for p in (train, val, test)]
        if n >= 3:
            assert min(counts) >= 1, (c, n, counts)  # represented in every split
        elif n == 2:
            assert counts == [1, 1, 0]
        else:
            assert counts == [1, 0, 0]  # a single sample goes to train
        if n >= 40:
            assert abs(counts[0] - 0.7 * n) <= 2
    assert len(train) / len(labels) == pytest.approx(0.7, abs=0.03)

    again = stratified_split(labels, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train, val, test)))
    other = stratified_split(labels, seed=1)
    assert not np.array_equal(other[0], train)
    two = stratified_split(labels, fractions=(0.8, 0.2))
    assert len(two) == 2 and len(two[0]) + len(two[1]) == len(labels)
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(labels, fractions=(0.5, 0.2))


def test_adapter_and_early_stopping():
    x, y = to_classifier_inputs({"image": tf.zeros((2, 4, 4, 3), tf.float32), "label": tf.constant([2, 0])}, 3)
    np.testing.assert_array_equal(y.numpy(), [[0, 0, 1], [1, 0, 0]])
    cb = early_stopping(patience=3)
    assert cb.monitor == "val_loss" and cb.patience == 3 and cb.restore_best_weights
    acc = early_stopping(patience=2, monitor="val_accuracy")
    assert acc.monitor == "val_accuracy" and acc.monitor_op(0.6, 0.5)  # higher is better
    with pytest.raises(ValueError, match="monitor"):
        early_stopping(monitor="loss")


def test_compile_options():
    model = build_classifier(3, **SMALL)
    compile_classifier(model)
    assert type(model.optimizer).__name__ == "Adam" and model.loss.get_config()["label_smoothing"] == 0.0
    compile_classifier(model, learning_rate=tf.keras.optimizers.schedules.CosineDecay(1e-3, 10),
                       label_smoothing=0.1, weight_decay=1e-4)
    assert type(model.optimizer).__name__ == "AdamW" and model.loss.get_config()["label_smoothing"] == 0.1
    # smoothed targets: a confident correct prediction still has a loss well above zero
    y = tf.one_hot([0], 3)
    assert float(model.loss(y, tf.constant([[0.999, 0.0005, 0.0005]]))) > 0.2
    with pytest.raises(ValueError, match="label_smoothing"):
        compile_classifier(model, label_smoothing=1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        compile_classifier(model, weight_decay=-1)


@pytest.fixture(scope="module")
def trained():
    tf.keras.utils.set_random_seed(0)
    x, y = _separable()
    ds = (
        tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
        .batch(16)
        .map(lambda b: to_classifier_inputs(b, 3))
    )
    model = compile_classifier(build_classifier(3, dropout=0.2, **SMALL), learning_rate=3e-3)
    before = model.evaluate(ds, verbose=0, return_dict=True)["accuracy"]
    model.fit(ds, epochs=8, verbose=0)
    after = model.evaluate(ds, verbose=0, return_dict=True)["accuracy"]
    return model, x, y, before, after


def test_training_improves_accuracy(trained):
    _, _, _, before, after = trained
    assert after > before
    assert after >= 0.9


def test_export_and_load_roundtrip(trained, tmp_path):
    from PIL import Image

    model, x, y, _, _ = trained
    names = ["red", "green", "blue"]
    path = export_classifier(model, str(tmp_path / "clf"), names, image_size=32)
    assert {"classes.json", "config.json", "saved_model.pb"} <= set(os.listdir(path))
    assert ClassTable.load(path).names == names
    assert json.loads(open(os.path.join(path, "config.json")).read())["image_size"] == [32, 32]
    with pytest.raises(FileExistsError):
        export_classifier(model, path, names, image_size=32)
    with pytest.raises(ValueError, match="class names"):
        export_classifier(model, str(tmp_path / "bad"), names[:2], image_size=32)

    clf = load_classifier(path)
    assert clf.class_names == names
    probs = clf.predict_proba(x[:8])
    np.testing.assert_allclose(probs, model(x[:8], training=False).numpy(), atol=1e-5)
    np.testing.assert_array_equal(clf(x[:8]), np.argmax(probs, -1))

    # uint8 images of another size go through serving_default and are resized inside
    big = tf.image.resize(x[:8], (48, 40)).numpy()
    big_u8 = np.clip(np.round(big * 255), 0, 255).astype(np.uint8)
    out = clf._module.signatures["serving_default"](images=tf.constant(big_u8))
    assert out["class_ids"].dtype == tf.int32 and out["probabilities"].shape == (8, 3)
    assert (out["class_ids"].numpy() == y[:8]).mean() >= 0.75

    # classify_function: differentiable, also under two tapes or a persistent one (eager or in a tf.function),
    # with the Keras model's own gradient; the classifier's weights get none
    xs = tf.constant(x[:4])
    with tf.GradientTape() as tape:
        tape.watch(xs)
        loss = tf.reduce_sum(model(xs, training=False)[:, 1])
    want = tape.gradient(loss, xs).numpy()

    def two_tapes(images):
        with tf.GradientTape() as a, tf.GradientTape(persistent=True) as b:
            a.watch(images)
            b.watch(images)
            loss = tf.reduce_sum(clf.classify_function(images)[:, 1])
        return a.gradient(loss, images), b.gradient(loss, images)

    for got in (*two_tapes(xs), *tf.function(two_tapes)(xs)):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(clf.classify_function(xs).numpy(), probs[:4], atol=1e-6)

    # PNG bytes of different sizes in one request
    pngs = []
    for im in (big_u8[0], big_u8[1, :32, :32]):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    out_b = clf._module.signatures["serving_bytes"](image_bytes=tf.constant(pngs))
    assert out_b["class_ids"].shape == (2,)
    assert int(out_b["class_ids"][0]) == int(out["class_ids"][0])
