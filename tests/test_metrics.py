"""Tests for synthseg_tf.metrics: hand-computed segmentation scores, Keras metrics vs numpy,
classification report vs scikit-learn, and FID/KID/IS vs independent references."""
import json
import math

import numpy as np
import pytest
import scipy.linalg

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.metrics import (
    INCEPTION_WEIGHTS_HINT,
    ClassIoU,
    ConfusionMatrix,
    FeatureExtractor,
    InceptionV3Extractor,
    KerasLayerExtractor,
    MeanIoUIgnore,
    classification_report,
    classifier_accuracy_on_generated,
    compute_generative_metrics,
    fcn_score,
    fid_from_activations,
    inception_score_from_logits,
    kid_from_activations,
    per_sample_miou,
)

# ------------------------------------------------------------------------------ segmentation
# 2x4 map, 3 classes (+ class 3 never seen), one void pixel
Y_TRUE = np.array([[0, 0, 1, 1],
                   [2, 2, 255, 1]])
Y_PRED = np.array([[0, 1, 1, 1],
                   [2, 0, 0, 2]])
# counted pixels: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,2)
CM_EXPECTED = np.array([[1, 1, 0, 0],
                        [0, 2, 1, 0],
                        [1, 0, 1, 0],
                        [0, 0, 0, 0]])


def test_confusion_matrix_hand_computed():
    cm = ConfusionMatrix(4).update(Y_TRUE, Y_PRED)
    np.testing.assert_array_equal(cm.matrix, CM_EXPECTED)
    assert cm.total == 7
    # IoU: c0 tp1 / (2+2-1)=1/3 ; c1 2/(3+3-2)=1/2 ; c2 1/(2+2-1)=1/3 ; c3 absent -> NaN
    iou = cm.iou_per_class()
    np.testing.assert_allclose(iou[:3], [1 / 3, 1 / 2, 1 / 3])
    assert math.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    dice = cm.dice_per_class()
    np.testing.assert_allclose(dice[:3], [2 / 4, 4 / 6, 2 / 4])
    assert math.isnan(dice[3])
    assert cm.mean_dice() == pytest.approx((0.5 + 4 / 6 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)
    assert cm.mean_class_accuracy() == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)


def test_class_only_predicted_counts_as_zero_iou():
    cm = ConfusionMatrix(3).update(np.array([0, 0, 0, 1]), np.array([0, 0, 2, 1]))
    iou = cm.iou_per_class()
    np.testing.assert_allclose(iou, [2 / 3, 1.0, 0.0])
    assert cm.mean_iou() == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_void_pixels_change_nothing_and_any_shape():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 5, (3, 7, 9))
    p = rng.integers(0, 5, (3, 7, 9))
    base = ConfusionMatrix(5).update(t, p)
    # add void pixels with arbitrary (even out-of-range) predictions: nothing changes
    t2 = np.concatenate([t, np.full((1, 7, 9), IGNORE_ID)], 0)
    p2 = np.concatenate([p, rng.integers(0, 250, (1, 7, 9))], 0)
    withvoid = ConfusionMatrix(5).update(t2.astype(np.uint8), p2.astype(np.int32))
    np.testing.assert_array_equal(base.matrix, withvoid.matrix)
    # flat / [...,1] shapes give the same counts
    flat = ConfusionMatrix(5).update(t.ravel(), p[..., None])
    np.testing.assert_array_equal(base.matrix, flat.matrix)
    # streaming + merge == one shot
    a = ConfusionMatrix(5).update(t[:1], p[:1])
    b = ConfusionMatrix(5).update(t[1:], p[1:])
    np.testing.assert_array_equal(a.merge(b).matrix, base.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(4))


def test_confusion_matrix_errors_and_empty():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="predicted id 3"):
        cm.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError, match="predicted id -1"):
        cm.update(np.array([0, 1]), np.array([0, -1]))
    with pytest.raises(ValueError, match="ground truth id 7"):
        cm.update(np.array([7, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="different sizes"):
        cm.update(np.zeros((2, 2), int), np.zeros((3,), int))
    with pytest.raises(TypeError):
        cm.update(np.array([0.5, 1.0]), np.array([0, 1]))
    assert cm.total == 0 and math.isnan(cm.mean_iou()) and math.isnan(cm.pixel_accuracy())


def test_as_dict_is_json_friendly():
    cm = ConfusionMatrix(4).update(Y_TRUE, Y_PRED)
    d = cm.as_dict(["road", "car", "sky", "tree"])
    json.dumps(d, allow_nan=False)  # NaN became None
    assert d["per_class"]["tree"]["iou"] is None
    assert d["per_class"]["car"]["support"] == 3 and d["per_class"]["car"]["predicted"] == 3
    assert d["mean_iou"] == pytest.approx(cm.mean_iou())
    assert d["confusion_matrix"] == CM_EXPECTED.tolist()
    with pytest.raises(ValueError):
        cm.as_dict(["a", "b"])


def test_per_sample_miou():
    t = np.stack([Y_TRUE, np.zeros((2, 4), int), np.full((2, 4), IGNORE_ID)])
    p = np.stack([Y_PRED, np.zeros((2, 4), int), np.zeros((2, 4), int)])
    out = per_sample_miou(t, p, 4)
    assert out[0] == pytest.approx(ConfusionMatrix(4).update(Y_TRUE, Y_PRED).mean_iou())
    assert out[1] == pytest.approx(1.0)
    assert math.isnan(out[2])
    # probabilities [N,H,W,K] are argmaxed
    probs = np.eye(4, dtype=np.float32)[p]
    np.testing.assert_allclose(per_sample_miou(t[..., None], probs, 4), out, equal_nan=True)


def test_fcn_score_with_a_callable_segmenter():
    rng = np.random.default_rng(2)
    maps = rng.integers(0, 3, (5, 8, 8))
    maps[0, 0, :] = IGNORE_ID
    # images encode the class in the red channel; the "segmenter" reads it back as probabilities
    images = np.zeros((5, 8, 8, 3), np.float32)
    images[..., 0] = np.where(maps == IGNORE_ID, 0, maps) / 2.0
    calls = []

    def segment_fn(x):
        calls.append(x.shape[0])
        assert x.dtype == np.float32 and x.max() <= 1.0
        ids = np.rint(x[..., 0] * 2).astype(int)
        return tf.one_hot(ids, 3)

    res = fcn_score(segment_fn, images, maps, 3, batch_size=2, class_names=["a", "b", "c"], return_per_sample=True)
    assert calls == [2, 2, 1]
    assert res["mean_iou"] == pytest.approx(1.0) and res["pixel_accuracy"] == pytest.approx(1.0)
    assert res["pixels"] == 5 * 64 - 8
    assert res["per_sample_miou"] == pytest.approx([1.0] * 5)
    # a segmenter that always says class 0
    res0 = fcn_score(lambda x: np.zeros(x.shape[:3], int), images, maps, 3)
    ref = ConfusionMatrix(3).update(maps, np.zeros_like(maps))
    assert res0["mean_iou"] == pytest.approx(ref.mean_iou())
    with pytest.raises(ValueError, match="shape"):
        fcn_score(lambda x: np.zeros((x.shape[0], 4, 4), int), images, maps, 3)


# ------------------------------------------------------------------------------ Keras metrics
def _random_batch(seed=3, k=4, shape=(2, 6, 5)):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, shape)
    t[0, :2] = IGNORE_ID
    probs = rng.random(shape + (k,)).astype(np.float32)
    return t, probs


def test_keras_metric_equals_numpy_and_ignores_void():
    t, probs = _random_batch()
    ref = ConfusionMatrix(4).update(t, probs.argmax(-1))
    m = MeanIoUIgnore(4)
    m.update_state(t[..., None].astype(np.float32), probs)  # [B,H,W,1] float ids + probabilities
    np.testing.assert_array_equal(m.confusion_matrix().numpy(), ref.matrix)
    assert float(m.result()) == pytest.approx(ref.mean_iou(), rel=1e-6)
    np.testing.assert_allclose(m.result_per_class().numpy(), ref.iou_per_class(), equal_nan=True)
    # ids as predictions, streaming over two calls
    m2 = MeanIoUIgnore(4)
    ids = probs.argmax(-1)
    m2.update_state(t[:1], ids[:1])
    m2.update_state(t[1:], ids[1:])
    np.testing.assert_array_equal(m2.confusion_matrix().numpy(), ref.matrix)
    m2.reset_state()
    assert float(m2.result()) == 0.0
    # sample_weight of zero on a sample removes it
    m3 = MeanIoUIgnore(4)
    m3.update_state(t, probs, sample_weight=np.array([0.0, 1.0]))
    np.testing.assert_array_equal(m3.confusion_matrix().numpy(), ConfusionMatrix(4).update(t[1:], ids[1:]).matrix)
    # per-class metric
    c = ClassIoU(1, 4)
    c.update_state(t, probs)
    assert float(c.result()) == pytest.approx(ref.iou_per_class()[1], rel=1e-6)
    assert c.name == "iou_class_1"
    assert MeanIoUIgnore.from_config(m.get_config()).num_classes == 4


def test_keras_metric_out_of_range_prediction_fails():
    m = MeanIoUIgnore(3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        m.update_state(np.zeros((1, 2, 2), int), np.full((1, 2, 2), 5))
    with pytest.raises(ValueError, match="channels"):
        m.update_state(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2, 5), np.float32))


def test_keras_metric_inside_tf_function_and_strategy():
    t, probs = _random_batch(seed=4)
    ref = ConfusionMatrix(4).update(t, probs.argmax(-1))
    m = MeanIoUIgnore(4)

    @tf.function
    def step(y, p):
        m.update_state(y, p)
        return m.result()

    for i in range(2):
        out = step(tf.constant(t[i:i + 1]), tf.constant(probs[i:i + 1]))
    assert float(out) == pytest.approx(ref.mean_iou(), rel=1e-6)

    # MirroredStrategy (on whatever CPU devices exist): SUM-aggregated state
    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    with strategy.scope():
        ms = MeanIoUIgnore(4)
    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((t, probs)).batch(2))

    @tf.function
    def dstep(y, p):
        strategy.run(ms.update_state, args=(y, p))

    for y, p in dist:
        dstep(y, p)
    np.testing.assert_array_equal(ms.confusion_matrix().numpy(), ref.matrix)
    assert float(ms.result()) == pytest.approx(ref.mean_iou(), rel=1e-6)


def test_keras_metrics_in_compile_evaluate():
    rng = np.random.default_rng(5)
    x = rng.random((4, 6, 6, 3)).astype(np.float32)
    y = rng.integers(0, 3, (4, 6, 6))
    y[:, 0] = IGNORE_ID
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Input((6, 6, 3)), tf.keras.layers.Conv2D(3, 1, activation="softmax")])
    model.compile("sgd", tf.keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE_ID),
                  metrics=[MeanIoUIgnore(3), ClassIoU(2, 3, name="iou_c")])
    logs = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    ref = ConfusionMatrix(3).update(y, model.predict(x, verbose=0).argmax(-1))
    assert logs["mean_iou"] == pytest.approx(ref.mean_iou(), rel=1e-5)
    assert logs["iou_c"] == pytest.approx(np.nan_to_num(ref.iou_per_class()[2]), rel=1e-5)


# ------------------------------------------------------------------------------ classification
def test_classification_report_matches_sklearn():
    from sklearn.metrics import classification_report as skreport

    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 60)  # class 3 never occurs
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 3, 60))
    names = ["cat", "dog", "bird", "fish"]
    rep = classification_report(y, np.eye(4)[pred], names)  # scores are argmaxed
    sk = skreport(y, pred, output_dict=True, zero_division=0)  # labels present only
    assert rep["accuracy"] == pytest.approx(sk["accuracy"])
    for ours, theirs in (("macro", "macro avg"), ("weighted", "weighted avg")):
        for key, skey in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert rep[ours][key] == pytest.approx(sk[theirs][skey])
    for i, n in enumerate(names[:3]):
        assert rep["per_class"][n]["f1"] == pytest.approx(sk[str(i)]["f1-score"])
        assert rep["per_class"][n]["support"] == sk[str(i)]["support"]
    assert rep["per_class"]["fish"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    cmat = np.array(rep["confusion_matrix"])
    assert cmat.shape == (4, 4) and cmat.sum() == 60 and np.trace(cmat) == (y == pred).sum()
    json.dumps(rep, allow_nan=False)
    # ignored samples are dropped; out-of-range labels raise
    y2 = np.concatenate([y, [IGNORE_ID]])
    p2 = np.concatenate([pred, [1]])
    assert classification_report(y2, p2, names)["num_samples"] == 60
    with pytest.raises(ValueError):
        classification_report(y, np.full(60, 4), names)


def test_classifier_accuracy_on_generated():
    labels = np.array([0, 1, 2, 1, 0])
    images = np.zeros((5, 4, 4, 3), np.float32)
    images[..., 0] = labels[:, None, None] / 2.0
    perfect = lambda x: tf.one_hot(np.rint(x[:, 0, 0, 0] * 2).astype(int), 3)  # noqa: E731
    assert classifier_accuracy_on_generated(perfect, images, labels, batch_size=2) == 1.0
    always0 = lambda x: np.zeros(len(x), int)  # noqa: E731
    rep = classifier_accuracy_on_generated(always0, images, labels, class_names=["a", "b", "c"], report=True)
    assert rep["accuracy"] == pytest.approx(2 / 5) and rep["per_class"]["a"]["recall"] == 1.0


# ------------------------------------------------------------------------------ generative
def _closed_form_fid(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


def test_fid_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(7)
    d, n = 4, 20000
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    a = rng.multivariate_normal(mu1, s1, n)
    b = rng.multivariate_normal(mu2, s2, n)
    fid = fid_from_activations(a.astype(np.float32), b)
    expected = _closed_form_fid(mu1, s1, mu2, s2)
    assert fid == pytest.approx(expected, rel=0.05, abs=0.05)
    # and exactly the formula on the sample statistics
    sample = _closed_form_fid(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid == pytest.approx(sample, rel=1e-6)
    assert fid_from_activations(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        fid_from_activations(a, b[:, :3])


def _mmd2_unbiased(x, y):
    d = x.shape[1]
    k = lambda u, v: (u @ v.T / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_matches_numpy_mmd():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 6))
    y = rng.normal(0.3, 1.2, size=(250, 6))
    kid, std = kid_from_activations(x, y)  # one block
    assert kid == pytest.approx(_mmd2_unbiased(x, y), rel=1e-9)
    assert math.isnan(std)
    kid_b, std_b = kid_from_activations(x, y, max_block_size=100)  # 3 blocks -> finite std
    assert std_b > 0 and abs(kid_b - kid) < 5 * std_b + 0.05
    same, _ = kid_from_activations(x[:150], x[150:])
    assert abs(same) < 0.1 * kid


def test_inception_score_extremes():
    assert inception_score_from_logits(np.zeros((50, 10)), splits=5) == pytest.approx((1.0, 0.0), abs=1e-9)
    c = 7
    logits = 50.0 * np.eye(c)[np.arange(c * 4) % c]
    mean, std = inception_score_from_logits(logits, splits=1)
    assert mean == pytest.approx(c, rel=1e-6) and std == 0.0
    mean4, std4 = inception_score_from_logits(logits, splits=4)  # each split holds all C classes once
    assert mean4 == pytest.approx(c, rel=1e-6) and std4 == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        inception_score_from_logits(logits, splits=100)


def test_inception_extractor_requires_local_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="not downloadable"):
        InceptionV3Extractor(None)
    with pytest.raises(FileNotFoundError) as e:
        InceptionV3Extractor(str(tmp_path / "missing.h5"))
    assert INCEPTION_WEIGHTS_HINT in str(e.value)


def test_inception_extractor_loads_local_h5(tmp_path):
    tf.keras.utils.set_random_seed(1)
    src = tf.keras.applications.InceptionV3(weights=None, include_top=True)
    path = str(tmp_path / "inception_v3_test.h5")
    src.save_weights(path)
    ext = InceptionV3Extractor(path)
    assert isinstance(ext, FeatureExtractor) and ext.has_logits
    images = np.random.default_rng(9).random((2, 40, 48, 3)).astype(np.float32)
    acts, logits = ext.activations_and_logits(images, batch_size=2)
    assert acts.shape == (2, 2048) and logits.shape == (2, 1000)
    # reference: the source model on the same preprocessing
    x = tf.image.resize(images, (299, 299)) * 2.0 - 1.0
    pool = tf.keras.Model(src.input, src.get_layer("avg_pool").output)(x, training=False).numpy()
    probs = src(x, training=False).numpy()
    np.testing.assert_allclose(acts, pool, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probs, rtol=1e-4, atol=1e-6)


def _tiny_classifier(k=3):
    tf.keras.utils.set_random_seed(2)
    inp = tf.keras.layers.Input((16, 16, 3))
    h = tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inp)
    h = tf.keras.layers.GlobalAveragePooling2D(name="gap")(h)
    h = tf.keras.layers.Dense(8, activation="relu", name="penultimate")(h)
    out = tf.keras.layers.Dense(k, activation="softmax", name="probs")(h)
    return tf.keras.Model(inp, out)


def _tiny_unet():
    inp = tf.keras.layers.Input((16, 16, 3))
    e1 = tf.keras.layers.Conv2D(4, 3, padding="same", name="e1")(inp)
    p1 = tf.keras.layers.MaxPooling2D(name="p1")(e1)
    b = tf.keras.layers.Conv2D(6, 3, padding="same", name="bottleneck")(p1)
    u = tf.keras.layers.UpSampling2D(name="up")(b)
    c = tf.keras.layers.Concatenate()([u, e1])
    out = tf.keras.layers.Conv2D(3, 1, activation="softmax", name="seg")(c)
    return tf.keras.Model(inp, out)


def test_keras_layer_extractor_classifier_and_unet():
    rng = np.random.default_rng(10)
    images = rng.random((6, 20, 20, 3)).astype(np.float32)  # resized to 16x16
    clf = _tiny_classifier()
    ext = KerasLayerExtractor(clf)
    assert ext.layer_name == "probs:input" and ext.has_logits
    acts, logits = ext.activations_and_logits(images, batch_size=4)
    x = tf.image.resize(images, (16, 16))
    ref_acts = tf.keras.Model(clf.input, clf.get_layer("penultimate").output)(x).numpy()
    np.testing.assert_allclose(acts, ref_acts, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), clf(x).numpy(), rtol=1e-4, atol=1e-6)
    # a spatial layer is average-pooled
    ext_conv = KerasLayerExtractor(clf, "conv")
    ref_conv = tf.keras.Model(clf.input, clf.get_layer("conv").output)(x).numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(ext_conv.activations(images), ref_conv, rtol=1e-5, atol=1e-6)

    unet = _tiny_unet()
    ext_u = KerasLayerExtractor(unet)
    assert ext_u.layer_name == "bottleneck" and not ext_u.has_logits
    assert ext_u.activations(images[:, :16, :16]).shape == (6, 6)
    with pytest.raises(NotImplementedError):
        ext_u.logits(images)
    with pytest.raises(ValueError, match="no layer"):
        KerasLayerExtractor(unet, "nope")

    res = compute_generative_metrics(ext, images, images[::-1], batch_size=4, is_splits=2)
    assert set(res) >= {"fid", "kid", "kid_std", "inception_score", "inception_score_std"}
    assert res["fid"] == pytest.approx(0.0, abs=1e-5)  # same set, other order
    assert 1.0 <= res["inception_score"] <= 3.0
    res_u = compute_generative_metrics(ext_u, images, images + 0.2, batch_size=4)
    assert "inception_score" not in res_u and res_u["fid"] > 0 and res_u["num_fake"] == 6
