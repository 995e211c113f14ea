"""U-Net segmenter: build, void-aware loss, training, encoder weights, export/serving."""
import base64
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from synthseg_tf._env import import_segmentation_models
from synthseg_tf.data.classes import IGNORE_ID, ClassTable
from synthseg_tf.models.unet import (
    PixelAccuracy,
    SegmentationLoss,
    build_unet,
    class_weights_from_frequencies,
    compile_unet,
    encoder_layers,
    export_unet,
    load_encoder_weights,
    load_segmenter,
    to_unet_inputs,
    unet_core,
)

K = 12
SIZE = 64
NAMES = [f"class_{i}" for i in range(K)]


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return build_unet(K, input_shape=(SIZE, SIZE, 3))


def _random_probs(shape, seed=0):
    logits = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return tf.nn.softmax(logits).numpy()


def _labels(b=2, h=16, w=16, seed=0, void_rows=4):
    y = np.random.default_rng(seed).integers(0, K, size=(b, h, w)).astype(np.uint8)
    y[:, :void_rows] = IGNORE_ID
    return y


# ---------------------------------------------------------------------------- model
def test_build_output_and_preprocessing(model):
    x = np.random.default_rng(0).random((2, SIZE, SIZE, 3), dtype=np.float32)
    probs = model(x, training=False).numpy()
    assert probs.shape == (2, SIZE, SIZE, K)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    # resnet34's sm preprocessing is the identity on [0,255]: the model only rescales [0,1] -> [0,255]
    sm = import_segmentation_models()
    probe = np.full((1, 2, 2, 3), 200.0, np.float32)
    np.testing.assert_array_equal(sm.get_preprocessing("resnet34")(probe.copy()), probe)
    pre = model.get_layer("to_backbone_range")
    assert isinstance(pre, tf.keras.layers.Rescaling) and pre.scale == 255.0
    assert unet_core(model).name == "unet_core"
    names = {layer.name for layer in encoder_layers(model)}
    assert "conv0" in names and not any(n.startswith("decoder_") for n in names)


def test_build_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="multiples of 32"):
        build_unet(K, input_shape=(50, 64, 3))
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        build_unet(K, encoder_weights=missing)


def test_adapter_keeps_void():
    batch = {"image": tf.zeros((1, 4, 4, 3)), "mask": tf.fill((1, 4, 4), tf.constant(IGNORE_ID, tf.uint8))}
    x, y = to_unet_inputs(batch)
    assert x.dtype == tf.float32 and y.dtype == tf.int32 and int(y[0, 0, 0]) == IGNORE_ID
    with pytest.raises(KeyError, match="mask"):
        to_unet_inputs({"image": batch["image"]})


# ---------------------------------------------------------------------------- loss
@pytest.mark.parametrize("terms", [dict(), dict(ce_weight=1.0, focal_weight=1.0)])
def test_loss_ignores_void_pixels(terms):
    loss = SegmentationLoss(K, **terms)
    y = _labels()
    p = _random_probs((2, 16, 16, K), seed=1)
    q = p.copy()
    q[:, :4] = _random_probs((2, 4, 16, K), seed=2)  # change predictions only where void
    per_example = loss.call(y, p).numpy()
    assert per_example.shape == (2,)
    np.testing.assert_allclose(per_example, loss.call(y, q).numpy(), rtol=1e-6)
    # changing predictions at labelled pixels does change it
    r = p.copy()
    r[:, 8:] = _random_probs((2, 8, 16, K), seed=3)
    assert not np.allclose(per_example, loss.call(y, r).numpy())


def test_loss_all_void_is_finite_and_perfect_is_zero():
    loss = SegmentationLoss(K, ce_weight=0.5, focal_weight=0.5, class_weights=np.linspace(0.5, 2, K))
    void = np.full((2, 8, 8), IGNORE_ID, np.uint8)
    value = float(loss(void, _random_probs((2, 8, 8, K))))
    assert np.isfinite(value) and value == pytest.approx(0.0, abs=1e-6)

    y = _labels(void_rows=2)
    perfect = tf.one_hot(np.where(y == IGNORE_ID, 0, y), K).numpy()
    assert float(SegmentationLoss(K)(y, perfect)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(y, perfect)) == pytest.approx(0.0, abs=1e-4)
    assert float(SegmentationLoss(K)(y, _random_probs((2, 16, 16, K)))) > 0.5


def test_loss_validation_and_config():
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationLoss(K, class_weights=[1.0] * (K - 1))
    with pytest.raises(ValueError, match="not all zero"):
        SegmentationLoss(K, dice_weight=0.0)
    loss = SegmentationLoss(K, ce_weight=0.3, class_weights=[1.0] * K)
    clone = SegmentationLoss.from_config(loss.get_config())
    assert clone.ce_weight == 0.3 and clone.class_weights == [1.0] * K


def test_class_weights_from_frequencies():
    f = [100.0, 25.0, 400.0, 0.0]
    w = class_weights_from_frequencies(f, mode="median")
    np.testing.assert_allclose(w, [1.0, 4.0, 0.25, 4.0])
    ws = class_weights_from_frequencies(f)
    np.testing.assert_allclose(ws, [1.0, 2.0, 0.5, 2.0])
    with pytest.raises(ValueError, match="mode"):
        class_weights_from_frequencies(f, mode="bogus")


def test_pixel_accuracy_skips_void():
    y = np.array([[[0, 1, IGNORE_ID, IGNORE_ID]]], np.uint8)
    p = tf.one_hot([[[0, 0, 1, 1]]], 2).numpy()
    m = PixelAccuracy()
    m.update_state(y, p)
    assert float(m.result()) == pytest.approx(0.5)


def test_loss_under_mirrored_strategy():
    """Per-example losses let Keras scale by the global batch inside a distribution strategy."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        tiny = tf.keras.Sequential(
            [tf.keras.Input((8, 8, 3)), tf.keras.layers.Conv2D(K, 1, activation="softmax")]
        )
        compile_unet(tiny, K, loss=SegmentationLoss(K, ce_weight=1.0), metrics=[PixelAccuracy()])
    ds = tf.data.Dataset.from_tensors(
        {"image": tf.random.uniform((4, 8, 8, 3)), "mask": tf.constant(_labels(4, 8, 8, void_rows=2))}
    ).map(to_unet_inputs)
    hist = tiny.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


# ---------------------------------------------------------------------------- training
def test_training_lowers_loss(model):
    rng = np.random.default_rng(0)
    x = rng.random((2, SIZE, SIZE, 3), dtype=np.float32) * 0.2
    y = np.zeros((2, SIZE, SIZE), np.uint8)
    y[:, :, 32:] = 3
    x[:, :, 32:, 0] += 0.7  # a learnable split: red right half is class 3
    y[:, :4] = IGNORE_ID
    compile_unet(model, K, learning_rate=1e-3, loss=SegmentationLoss(K, ce_weight=1.0), metrics=[PixelAccuracy()])
    hist = model.fit(x, y, batch_size=2, epochs=5, verbose=0)
    losses = hist.history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------- encoder weights
def test_encoder_weights_from_local_file(model, tmp_path):
    path = str(tmp_path / "encoder.h5")
    model.save_weights(path)  # a full U-Net file: the decoder part must be ignored
    other = build_unet(K, input_shape=(SIZE, SIZE, 3), encoder_weights=path)
    for name in ("conv0", "stage3_unit2_conv1", "bn_data"):
        for a, b in zip(unet_core(model).get_layer(name).get_weights(), unet_core(other).get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    a = unet_core(model).get_layer("final_conv").get_weights()[0]
    b = unet_core(other).get_layer("final_conv").get_weights()[0]
    assert not np.array_equal(a, b)  # decoder/head untouched

    # a file whose layer names match but shapes do not is refused, naming the weight
    bad = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.Conv2D(4, 3, name="conv0")])
    bad_path = str(tmp_path / "bad.h5")
    bad.save_weights(bad_path)
    with pytest.raises(ValueError, match="conv0"):
        load_encoder_weights(other, bad_path)


# ---------------------------------------------------------------------------- export
def _png_b64(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_FRESH = textwrap.dedent(
    """
    import base64, json, sys
    import numpy as np
    import tensorflow as tf
    export_dir, npy, req = sys.argv[1:4]
    loaded = tf.saved_model.load(export_dir)
    images = np.load(npy)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    with open(req) as f:
        instances = json.load(f)["instances"]
    raw = [base64.b64decode(inst["b64"]) for inst in instances]  # what TF Serving REST does
    out_b = loaded.signatures["serving_bytes"](image_bytes=tf.constant(raw))
    print(json.dumps({
        "keys": sorted(out),
        "ids_dtype": out["label_ids"].dtype.name,
        "probs_shape": out["probabilities"].shape.as_list(),
        "ids": out["label_ids"].numpy().tolist(),
        "ids_bytes": out_b["label_ids"].numpy().tolist(),
    }))
    """
)


def test_export_and_serve_in_fresh_process(model, tmp_path):
    export_dir = tmp_path / "segmenter"
    path = export_unet(model, str(export_dir), NAMES, image_size=(SIZE, SIZE))
    assert {"classes.json", "config.json", "saved_model.pb", "variables"} <= set(os.listdir(path))
    assert ClassTable.load(path).names == NAMES
    cfg = json.loads((export_dir / "config.json").read_text())
    assert cfg["image_size"] == [SIZE, SIZE] and cfg["num_classes"] == K
    with pytest.raises(FileExistsError, match="overwrite"):
        export_unet(model, str(export_dir), NAMES, image_size=SIZE)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".segmenter.tmp")]

    # images of a size different from the training size, to exercise the resizing
    images = (np.random.default_rng(1).random((2, 48, 80, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "request.json").write_text(json.dumps({"instances": [{"b64": _png_b64(im)} for im in images]}))

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, path, str(tmp_path / "images.npy"), str(tmp_path / "request.json")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["keys"] == ["label_ids", "probabilities"]
    assert res["ids_dtype"] == "uint8" and res["probs_shape"] == [2, 48, 80, K]
    ids = np.array(res["ids"])
    assert ids.shape == (2, 48, 80)
    np.testing.assert_array_equal(ids, np.array(res["ids_bytes"]))

    # the Python loader (float [0,1] input) agrees with the serving signature
    segment = load_segmenter(path)
    np.testing.assert_array_equal(segment(images), ids)
    assert (segment(images.astype(np.float32) / 255.0) == ids).mean() > 0.99
    # at the training size the export matches the Keras model's argmax
    x = np.random.default_rng(2).random((1, SIZE, SIZE, 3), dtype=np.float32)
    expected = np.argmax(model(x, training=False).numpy(), -1)
    assert (segment(x) == expected).mean() > 0.999
    assert segment(x[0]).shape == (SIZE, SIZE)

    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, env=env, timeout=300)
    assert show.returncode == 0, show.stderr[-3000:]
    for word in ("serving_default", "serving_bytes", "label_ids", "probabilities", "image_bytes"):
        assert word in show.stdout


def test_export_has_encoder_features_for_fid(model, tmp_path):
    """The export's feature function is the U-Net bottleneck, pooled: an offline FID/KID space."""
    from synthseg_tf.metrics.generative import compute_generative_metrics
    from synthseg_tf.models.unet import encoder_feature_model, export_unet, load_segmenter

    export_unet(model, str(tmp_path / "seg"), class_names=[f"c{i}" for i in range(12)], image_size=(64, 64))
    seg = load_segmenter(str(tmp_path / "seg"))
    x = np.random.default_rng(0).random((6, 64, 64, 3)).astype(np.float32)
    acts = seg.activations(x, batch_size=4)
    ref = encoder_feature_model(model)(x, training=False).numpy()
    assert acts.shape == ref.shape == (6, 512)
    np.testing.assert_allclose(acts, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    res = compute_generative_metrics(seg, x[:3], x[3:], batch_size=3)
    assert res["fid"] >= 0 and np.isfinite(res["kid"])
