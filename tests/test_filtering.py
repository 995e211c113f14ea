"""synthseg_tf.generation.filtering: quality-model sanity check, real loss statistics, FreeMask filters."""
import json
import os

import numpy as np
import pytest

from synthseg_tf.generation.filtering import (
    check_quality_model,
    hardness_weights,
    majority_class_miou,
    map_hardness,
    pixel_losses,
    quality_model_kind,
    real_loss_stats,
    required_miou,
    void_hard_pixels,
)

from conftest import save

# The "known" segmenter: a 1x1 convolution from RGB in [0,1] to 3 logits (4 * channel), then
# softmax, so a pixel's probabilities depend on its colour alone and can be computed by hand.
GAIN = 4.0


def known_probabilities(images_uint8):
    x = images_uint8.astype(np.float64) / 255.0 * GAIN
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def export_known_segmenter(path, image_size=(32, 32)):
    """Export the 1x1-conv segmenter (3 classes a, b, c) as a synthseg segmenter SavedModel."""
    import tensorflow as tf

    from synthseg_tf.models.unet import export_unet

    inp = tf.keras.Input((None, None, 3), name="images")
    conv = tf.keras.layers.Conv2D(3, 1, name="logits")
    model = tf.keras.Model(inp, tf.keras.layers.Softmax(name="probs")(conv(inp)), name="known")
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) * GAIN, np.zeros(3, np.float32)])
    return export_unet(model, str(path), class_names=["a", "b", "c"], image_size=image_size)


@pytest.fixture(scope="module")
def known_segmenter(tmp_path_factory):
    return export_known_segmenter(tmp_path_factory.mktemp("known") / "run" / "model")


# ------------------------------------------------------------------------ quality-model sanity
def _write_metrics(run_dir, cm):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump({"val": {"confusion_matrix": np.asarray(cm).tolist(), "mean_iou": None}}, f)


def test_majority_baseline_and_refusal_of_a_weak_quality_model(tmp_path):
    support = np.array([60, 30, 10])
    majority = np.zeros((3, 3), np.int64)
    majority[:, 0] = support  # always predicts class 0
    assert majority_class_miou(majority) == (0, pytest.approx(0.6 / 3))
    assert required_miou(0.2) == pytest.approx(0.3) and required_miou(0.02) == pytest.approx(0.07)

    weak = tmp_path / "weak"
    _write_metrics(weak, majority)
    with pytest.raises(ValueError, match=r"mIoU 0\.2000 .* 0\.2000 for the majority class.* 0\.3000") as e:
        check_quality_model(str(weak / "model"))
    assert "--allow-weak-quality-model" in str(e.value)
    logs = []
    res = check_quality_model(str(weak / "model"), allow_weak=True, log=logs.append)
    assert res["passed"] is False and res["majority_class"] == 0 and len(logs) == 1 and "warning" in logs[0]

    good = tmp_path / "good"
    cm = np.array([[55, 5, 0], [5, 25, 0], [0, 2, 8]])  # IoUs 55/65, 25/37, 8/10 -> mean ~0.770
    _write_metrics(good, cm)
    res = check_quality_model(str(good / "model"))
    assert res["passed"] and res["mean_iou"] == pytest.approx((55 / 65 + 25 / 37 + 8 / 10) / 3)

    # Just under the bar is refused: class 0 is perfect and the rest is predicted as class 0.
    under = np.array([[60, 0, 0], [28, 2, 0], [10, 0, 0]])  # mIoU (60/98 + 2/30 + 0) / 3 = 0.226 < 0.3
    _write_metrics(tmp_path / "under", under)
    with pytest.raises(ValueError, match="not clearly better"):
        check_quality_model(str(tmp_path / "under" / "model"))

    logs = []
    assert check_quality_model(str(tmp_path / "nometrics" / "model"), log=logs.append) is None
    assert "could not be checked" in logs[0] and "metrics.json" in logs[0]


def test_quality_model_kind(known_segmenter, tmp_path):
    assert quality_model_kind(known_segmenter) == "segmenter"
    os.makedirs(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "something.else"}))
    with pytest.raises(ValueError, match="something.else"):
        quality_model_kind(str(tmp_path / "other"))
    with pytest.raises(FileNotFoundError):
        quality_model_kind(str(tmp_path / "missing"))


# ------------------------------------------------------------------------ losses and voiding
def test_pixel_losses_and_voiding_exactly_above_the_margin():
    probs = np.array([[[[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]]])  # 1x1x4x3
    maps = np.array([[[0, 0, 1, 255]]], np.uint8)
    loss = pixel_losses(probs, maps)
    assert np.allclose(loss[0, 0, :3], [-np.log(0.9), -np.log(0.2), -np.log(0.3)]) and np.isnan(loss[0, 0, 3])

    rng = np.random.default_rng(0)
    maps = rng.integers(0, 3, (3, 8, 8)).astype(np.uint8)
    maps[0, :2] = 255
    losses = rng.uniform(0, 3, maps.shape)
    mean = [1.0, 0.5, None]  # class 2 has no real statistics: never voided
    out, frac = void_hard_pixels(maps, losses, mean, margin=1.25)
    limit = np.array([1.25, 0.625, np.inf])
    expected = maps.copy()
    for c in (0, 1):
        expected[(maps == c) & (losses > limit[c])] = 255
    assert np.array_equal(out, expected) and (out != maps).any() and (out[maps == 2] == 2).all()
    for b in range(3):
        labelled = maps[b] != 255
        assert frac[b] == pytest.approx(((out[b] == 255) & labelled).sum() / labelled.sum())
    # A pixel exactly at the limit stays; just above goes.
    one, f = void_hard_pixels(np.zeros((1, 1, 2), np.uint8), np.array([[[1.25, 1.2500001]]]), [1.0], 1.25)
    assert one.tolist() == [[[0, 255]]] and f == [0.5]
    with pytest.raises(ValueError, match="positive"):
        void_hard_pixels(maps, losses, mean, margin=0)


def test_real_loss_stats_on_a_hand_made_case(known_segmenter, tmp_path):
    from synthseg_tf.data import load

    red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    img0 = np.zeros((32, 32, 3), np.uint8)
    img0[:, :16], img0[:, 16:] = red, green
    m0 = np.zeros((32, 32), np.uint8)
    m0[:, 16:] = 1  # both halves labelled with the class their colour predicts
    img1 = np.zeros((32, 32, 3), np.uint8)
    img1[:8], img1[8:] = blue, red
    m1 = np.full((32, 32), 1, np.uint8)
    m1[:8] = 2  # the red bottom is labelled b: the segmenter is wrong there
    m1[-4:] = 3  # void (the mask value 3 is declared void below)
    for i, (img, m) in enumerate(((img0, m0), (img1, m1))):
        save(tmp_path / "im" / f"s{i}.png", img)
        save(tmp_path / "ms" / f"s{i}.png", m)
    ds = load(f"pairs:{tmp_path}/im:{tmp_path}/ms?void=3")
    assert ds.num_classes == 3
    stats = real_loss_stats(known_segmenter, ds, (32, 32), batch_size=1)

    p = {name: known_probabilities(np.array([[c]], np.uint8))[0, 0] for name, c in
         (("red", red), ("green", green), ("blue", blue))}
    l_a = -np.log(p["red"][0])  # every class-a pixel is red
    l_b = (512 * -np.log(p["green"][1]) + 640 * -np.log(p["red"][1])) / (512 + 640)  # img0 right, img1 rows 8..27
    l_c = -np.log(p["blue"][2])
    assert stats["class_pixels"] == [512, 512 + 640, 256]
    assert np.allclose(stats["class_mean_loss"], [l_a, l_b, l_c], rtol=1e-4)
    h0 = (512 * l_a + 512 * l_b) / 1024
    h1 = (640 * l_b + 256 * l_c) / 896
    assert stats["map_hardness"]["s0"] == pytest.approx(h0, rel=1e-4)
    assert stats["map_hardness"]["s1"] == pytest.approx(h1, rel=1e-4)
    assert map_hardness(m1, stats["class_mean_loss"]) == pytest.approx(h1, rel=1e-6)  # void and value 3 skipped
    assert stats["source_ids"] == ["s0", "s1"] and stats["image_size"] == [32, 32]
    json.dumps(stats)


def test_hardness_weights_mix_with_uniform():
    w = hardness_weights([3.0, 1.0, 0.0, None])
    assert np.allclose(w, 0.5 * np.array([0.75, 0.25, 0, 0]) + 0.5 / 4) and w.sum() == pytest.approx(1)
    assert np.allclose(hardness_weights([0.0, 0.0]), [0.5, 0.5])
    assert np.allclose(hardness_weights([2.0, 1.0], uniform_mix=1.0), [0.5, 0.5])
    with pytest.raises(ValueError):
        hardness_weights([1.0, -1.0])


def test_calibrated_confidence_thresholds_follow_the_real_images_of_each_class():
    from synthseg_tf.experiments.classification import calibrated_cap
    from synthseg_tf.generation.filtering import calibrated_confidence_thresholds

    # 4 classes; class 0's real images get 0.95/0.97/0.99 (median above the cap), class 1's 0.2/0.3
    # (a class the classifier confuses), class 2's 0.01 (below chance), class 3 has no real image
    rows, labels = [], []
    for c, own in ((0, (0.95, 0.97, 0.99)), (1, (0.2, 0.3)), (2, (0.01,))):
        for p in own:
            r = np.full(4, (1.0 - p) / 3)
            r[c] = p
            rows.append(r)
            labels.append(c)
    rec = calibrated_confidence_thresholds(np.array(rows), labels, 4, cap=0.9)
    assert rec["thresholds"] == pytest.approx([0.9, 0.25, 0.25, 0.9])  # capped, median, floor 1/4, no images
    assert rec["median"][:3] == pytest.approx([0.97, 0.25, 0.01]) and rec["median"][3] is None
    assert rec["count"] == [3, 2, 1, 0] and "median" in rec["rule"]
    assert calibrated_confidence_thresholds(np.array(rows), labels, 4, cap=0.1)["thresholds"] == \
        pytest.approx([0.1, 0.1, 0.1, 0.1])  # the floor never exceeds the cap
    with pytest.raises(ValueError, match=r"probabilities must be \[N, 4\]"):
        calibrated_confidence_thresholds(np.array(rows)[:, :3], labels, 4)
    with pytest.raises(ValueError, match="cap must be in"):
        calibrated_confidence_thresholds(np.array(rows), labels, 4, cap=0.0)
    # the experiment's spelling
    assert calibrated_cap(0.5) is None and calibrated_cap("calibrated") == 0.9
    assert calibrated_cap("Calibrated:0.8") == 0.8
    for bad in ("calibrated:2", "calibrated:x", "strict", "0.5"):
        with pytest.raises(ValueError):
            calibrated_cap(bad)
