"""The benchmark's reference pix2pix step computes what Pix2Pix.train_step computes; run_all's result assembly."""
import json
import os
import sys

import numpy as np
import pytest

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.models.pix2pix import build_pix2pix

BENCH = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
sys.path.insert(0, BENCH)

import reference_pix2pix  # noqa: E402
import run_all  # noqa: E402

LR = 2e-4


def _model(seed=0, upsample="transpose"):
    tf.keras.utils.set_random_seed(seed)  # same weights and the same dropout-generator seeds
    m = build_pix2pix(5, (64, 64), base_filters=16, norm="batch", upsample=upsample)
    m.compile(gan_loss="bce", l1_weight=100.0)
    return m


@pytest.mark.parametrize("upsample", ["transpose", "resize"])  # resize: our step uses the fused convolutions
def test_reference_step_matches_pix2pix_train_step(upsample):
    ours, ref = _model(upsample=upsample), _model(upsample=upsample)
    for a, b in ((ours.generator, ref.generator), (ours.discriminator, ref.discriminator)):
        b.set_weights(a.get_weights())
    before = [w.numpy().copy() for w in ours.generator.weights + ours.discriminator.weights]
    for w, v in zip(before, ref.generator.weights + ref.discriminator.weights):
        np.testing.assert_array_equal(w, v.numpy())

    rng = np.random.default_rng(0)
    batch = {"mask": tf.constant(rng.integers(0, 5, (2, 64, 64)), tf.int32),  # no void pixels
             "image": tf.constant(rng.random((2, 64, 64, 3)), tf.float32)}
    got = tf.function(ours.train_step)(batch)
    want = reference_pix2pix.make_reference_step(ref.generator, ref.discriminator)(batch)
    for k_ours, k_ref in (("g_gan", "g_gan"), ("g_l1", "g_l1"), ("d_loss", "d"), ("g_loss", "g_total")):
        np.testing.assert_allclose(float(got[k_ours]), float(want[k_ref]), rtol=1e-5, atol=1e-5, err_msg=k_ours)

    # Weights after one step. Adam's first step moves each trainable weight by -LR * g / (|g| + eps), up to LR
    # whatever the gradient's scale, so the updates are compared in units of LR. Summation order may differ
    # between the two graphs (oneDNN), giving gradients float32 noise; that noise is invisible where |g| >> eps
    # but moves the few weights whose gradient is near eps = 1e-7 (there g / (|g| + eps) is steep) by a visible
    # fraction of a step (measured: ~0.1 % of the elements, at most ~0.6 % of LR). Hence two bounds: 99 % of each
    # tensor's elements within 1e-3 * LR (2e-7, about 1e-5 relative to the weights' scale 0.02; a systematic
    # difference -- another loss, weighting, learning rate even 1 % off, batch-norm mode -- moves nearly every
    # element by more), and every element within 0.1 * LR. Batch-norm moving statistics and the dropout
    # generators' states (non-trainable) follow the forward pass only: rtol 1e-5.
    moved = []
    for w0, a, b in zip(before, ours.generator.weights + ours.discriminator.weights,
                        ref.generator.weights + ref.discriminator.weights):
        x, y = a.numpy(), b.numpy()
        if not a.trainable:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=a.name)
            continue
        diff = np.abs(x - y)  # = |update_ours - update_ref| (same start)
        assert np.mean(diff > 1e-3 * LR) <= 0.01, (a.name, np.mean(diff > 1e-3 * LR))
        assert diff.max() <= 0.1 * LR, (a.name, diff.max())
        moved.append(np.abs(x - w0).mean())
    assert np.mean(moved) > 0.1 * LR, "the step did not move the weights; the comparison would be vacuous"


def _raw(value, unit="images/s", **extra):
    return {"value": value, "unit": unit, **extra}


def test_assemble_results_ratios_and_targets():
    raw = {
        "matmul_gflops": _raw(100.0, "GFLOP/s", n=4096),
        "gan_train_img_s_256_b1": _raw(3.0), "reference_train_img_s_256_b1": _raw(2.0),
        "gan_train_img_s_128_b8": _raw(6.0), "reference_train_img_s_128_b8": _raw(5.0),
        "gan_train_gflops_256_b1": _raw(30.0, "GFLOP/s"),
        "gen_raw_img_s": _raw(100.0), "gen_beam_img_s": _raw(90.0),
        "gen_beam_img_s_w1_t1": _raw(10.0), "gen_beam_img_s_w2_t1": _raw(16.0),
        "input_img_s": _raw(20.0), "unet_train_img_s": _raw(1.0),
        "rss_gen_1k_mb": _raw(500.0, "MB", samples=1000), "rss_gen_10k_mb": _raw(540.0, "MB", samples=10000),
    }
    out = run_all.assemble(raw, errors={}, machine={"cores": 2}, quick=False, command="x")
    assert out["quick"] is False and out["machine"] == {"cores": 2}
    assert set(run_all.REQUIRED_KEYS) <= set(out["results"])
    r = out["ratios"]
    assert r["gan_vs_reference_256_b1"]["value"] == pytest.approx(1.5) and r["gan_vs_reference_256_b1"]["pass"]
    assert r["gan_vs_reference_128_b8"]["value"] == pytest.approx(1.2) and not r["gan_vs_reference_128_b8"]["pass"]
    assert r["beam_vs_raw"]["value"] == pytest.approx(0.9) and r["beam_vs_raw"]["pass"]
    assert r["beam_w2_vs_w1"]["value"] == pytest.approx(1.6) and not r["beam_w2_vs_w1"]["pass"]
    assert r["input_vs_gan_consumption"]["value"] == pytest.approx(20 / 3) and r["input_vs_gan_consumption"]["pass"]
    assert r["rss_10k_vs_1k"]["value"] == pytest.approx(1.08) and r["rss_10k_vs_1k"]["pass"]
    assert r["rss_10k_vs_1k"]["target"] == "<= 1.1" and r["beam_w2_vs_w1"]["target"] == ">= 1.7"
    assert out["missing"] == []

    # A failed benchmark: its keys are missing, ratios on them are null (neither pass nor fail).
    del raw["gen_beam_img_s_w2_t1"]
    out = run_all.assemble(raw, errors={"gen_beam_w2_t1": "exit 1"}, machine={}, quick=False, command="x")
    assert out["ratios"]["beam_w2_vs_w1"]["value"] is None and out["ratios"]["beam_w2_vs_w1"]["pass"] is None
    assert out["missing"] == ["gen_beam_img_s_w2_t1"] and out["errors"] == {"gen_beam_w2_t1": "exit 1"}
    table = run_all.format_table(out)
    assert "beam_w2_vs_w1" in table and "FAIL" in table and "PASS" in table and "missing" in table

    # --quick measures memory at smaller sample counts; the keys name them and the ratio uses them.
    raw = {k: v for k, v in raw.items() if not k.startswith("rss_")}
    raw.update({"rss_gen_400_mb": _raw(500.0, "MB"), "rss_gen_4k_mb": _raw(600.0, "MB")})
    out = run_all.assemble(raw, errors={}, machine={}, quick=True, command="x")
    rss = out["ratios"]["rss_10k_vs_1k"]
    assert rss["value"] == pytest.approx(1.2) and not rss["pass"]
    assert rss["numerator"] == "rss_gen_4k_mb" and "rss_gen_10k_mb" not in out["missing"]


def test_write_atomic(tmp_path):
    path = tmp_path / "bench-results.json"
    run_all.write_atomic(str(path), {"a": 1})
    run_all.write_atomic(str(path), {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2} and os.listdir(tmp_path) == ["bench-results.json"]


def test_collect_maps_benchmark_lines_to_keys():
    keys = {"generation.raw_batched": "gen_raw_img_s",
            "train_step.unet": ("unet_train_img_s", "images_per_s", "images/s")}
    job = run_all.Job("gen", ["generation.py"], keys=keys)
    lines = [{"benchmark": "generation.raw_batched", "value": 12.5, "unit": "images/s", "cpus": 2, "batch": 16},
             {"benchmark": "train_step.unet", "value": 0.5, "unit": "steps/s", "images_per_s": 4.0},
             {"benchmark": "something.else", "value": 1.0, "unit": "x"}]
    got = run_all.collect(job, lines)
    assert got["gen_raw_img_s"]["value"] == 12.5 and got["gen_raw_img_s"]["batch"] == 16
    assert got["unet_train_img_s"]["value"] == 4.0 and got["unet_train_img_s"]["unit"] == "images/s"
    assert "something.else" not in got
