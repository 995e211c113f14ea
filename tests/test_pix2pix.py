"""pix2pix model: shapes, conditioning, void handling, losses, learning, and replica-count invariance."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.models import pix2pix as P

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def batch(n=2, size=32, k=4, num_labels=None, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, k, (n, size, size)).astype(np.uint8)
    mask[0, : size // 4] = IGNORE_ID
    out = {"image": tf.constant(rng.random((n, size, size, 3)), tf.float32), "mask": tf.constant(mask)}
    if num_labels:
        out["label"] = tf.constant(rng.integers(0, num_labels, n), tf.int32)
    return out


@pytest.mark.parametrize("size,depth,bottleneck", [(64, 6, (1, 1)), ((128, 160), 5, (4, 5)), (256, 8, (1, 1)),
                                                    (512, 8, (2, 2)), (32, 5, (1, 1))])
def test_generator_depth_adapts_to_size(size, depth, bottleneck):
    assert P.generator_depth(size) == depth
    h, w = (size, size) if isinstance(size, int) else size
    assert (h // 2**depth, w // 2**depth) == bottleneck


@pytest.mark.parametrize("size", [64, (128, 160)])
def test_generator_output_shape_and_range(size):
    g = P.build_generator(5, size, base_filters=4, norm="instance")
    h, w = (size, size) if isinstance(size, int) else size
    mask = np.random.default_rng(0).integers(0, 5, (2, h, w)).astype(np.int32)
    out = g(mask, training=False).numpy()
    assert out.shape == (2, h, w, 3)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert g.inputs[0].dtype == tf.int32  # the model takes class ids, not one-hot maps


def test_generator_256_builds_with_pix2pix_layout():
    g = P.build_generator(3, 256, base_filters=2, norm="batch")
    assert g.output_shape == (None, 256, 256, 3)
    assert len([l for l in g.layers if l.name.startswith("down") and l.name.endswith("_conv")]) == 8
    # dropout in the first 3 decoder blocks, as in pix2pix
    assert sorted(l.name for l in g.layers if isinstance(l, P.GeneratorDropout)) == [
        "up0_dropout", "up1_dropout", "up2_dropout"]


@pytest.mark.parametrize("size", [100, (96, 100), (64, 66)])
def test_unsupported_sizes_raise_clear_error(size):
    with pytest.raises(ValueError, match="divisible by"):
        P.build_generator(3, size, base_filters=4)


def test_explicit_depth_must_divide_size():
    with pytest.raises(ValueError, match=r"2\*\*4 = 16"):
        P.generator_depth((64, 72), depth=4)
    assert P.generator_depth((64, 72), depth=3) == 3


def test_void_pixels_are_all_zero_one_hot():
    onehot = P.OneHotMask(3)(tf.constant([[0, 2, IGNORE_ID]], tf.uint8)).numpy()
    np.testing.assert_array_equal(onehot[0], [[1, 0, 0], [0, 0, 1], [0, 0, 0]])


def test_discriminator_patch_map_and_features():
    d = P.build_discriminator(4, 32, base_filters=4)
    b = batch()
    inputs = {"mask": tf.cast(b["mask"], tf.int32), "image": b["image"] * 2 - 1}
    assert d(inputs).shape == (2, 4, 4, 1)
    feats = P.discriminator_features(d)(inputs)
    assert len(feats) == P.discriminator_downsamplings(32) + 2  # hidden activations + logits
    np.testing.assert_allclose(feats[-1].numpy(), d(inputs).numpy(), rtol=1e-5, atol=1e-6)
    assert P.build_discriminator(4, 256, base_filters=2).output_shape == (None, 32, 32, 1)  # 70x70 PatchGAN
    assert P.build_discriminator(4, (128, 160), base_filters=2).output_shape == (None, 16, 20, 1)


def test_spectral_norm_discriminator():
    d = P.build_discriminator(4, 32, base_filters=4, norm="none", spectral_norm=True)
    import tensorflow_addons as tfa

    assert any(isinstance(l, tfa.layers.SpectralNormalization) for l in d.layers)
    b = batch()
    assert d({"mask": b["mask"], "image": b["image"]}, training=True).shape == (2, 4, 4, 1)


def test_class_conditional_generator_uses_label():
    g = P.build_generator(4, 32, base_filters=4, norm="instance", num_labels=3, dropout=0.0)
    assert g.input_names == ["mask", "label"]
    mask = tf.zeros((2, 32, 32), tf.int32)
    out = g({"mask": mask, "label": tf.constant([0, 2])}).numpy()
    assert out.shape == (2, 32, 32, 3)
    assert not np.allclose(out[0], out[1])  # same mask, different class -> different image
    m = P.Pix2Pix(g, P.build_discriminator(4, 32, base_filters=4, num_labels=3))
    with pytest.raises(ValueError, match="label"):
        m({"mask": mask})


def test_masked_l1_ignores_void():
    real = tf.zeros((2, 4, 4, 3))
    fake = tf.ones((2, 4, 4, 3)) * 0.5
    mask = np.zeros((2, 4, 4), np.int32)
    mask[0, :2] = IGNORE_ID
    fake = fake.numpy()
    fake[0, :2] = 100.0  # huge error, but on void pixels only
    l1 = P.masked_l1_per_example(real, tf.constant(fake), tf.constant(mask)).numpy()
    np.testing.assert_allclose(l1, [0.5, 0.5])
    all_void = P.masked_l1_per_example(real, tf.constant(fake), tf.fill((2, 4, 4), IGNORE_ID)).numpy()
    np.testing.assert_allclose(all_void, [0.0, 0.0])


def test_gan_losses_per_example_values():
    fake = tf.constant([[[[0.0]], [[2.0]]], [[[1.0]], [[1.0]]]])  # [2, 2, 1, 1]
    real = tf.ones_like(fake)
    g, d = P.gan_loss_functions("bce")
    np.testing.assert_allclose(g(fake).numpy(), [np.mean(np.log1p(np.exp([-0.0, -2.0]))), np.log1p(np.exp(-1.0))],
                               rtol=1e-5)
    g, d = P.gan_loss_functions("lsgan")
    np.testing.assert_allclose(g(fake).numpy(), [np.mean([0.5, 0.5]), 0.0], atol=1e-6)
    np.testing.assert_allclose(d(real, fake).numpy(), [np.mean([0.0, 2.0]), 0.5], atol=1e-6)
    g, d = P.gan_loss_functions("hinge")
    np.testing.assert_allclose(g(fake).numpy(), [-1.0, -1.0])
    np.testing.assert_allclose(d(real, fake).numpy(), [np.mean([1.0, 3.0]), 2.0])
    with pytest.raises(ValueError, match="gan_loss"):
        P.gan_loss_functions("wgan")


def test_training_steps_reduce_l1_on_a_fixed_batch():
    tf.keras.utils.set_random_seed(0)
    model = P.build_pix2pix(4, 32, base_filters=8, norm="instance", dropout=0.0)
    model.compile(*P.default_optimizers(learning_rate=2e-3), gan_loss="lsgan")
    b = batch(n=4)
    palette = np.random.default_rng(1).random((256, 3)).astype(np.float32)
    b["image"] = tf.constant(palette[b["mask"].numpy()])  # a learnable target: one colour per class
    step = tf.function(model.train_step)
    first = float(step(b)["g_l1"])
    for m in model.metrics:
        m.reset_state()
    for _ in range(25):
        last = step(b)
        for m in model.metrics:
            m.reset_state()
    assert float(last["g_l1"]) < 0.7 * first
    assert set(last) == {"g_loss", "g_gan", "g_l1", "d_loss"}
    assert np.isfinite(float(last["d_loss"]))


def test_fit_and_evaluate_report_losses():
    model = P.build_pix2pix(4, 32, base_filters=4, norm="batch", num_labels=2)
    model.compile(gan_loss="hinge", feature_matching_weight=10.0)
    ds = tf.data.Dataset.from_tensors(batch(num_labels=2)).repeat(2)
    hist = model.fit(ds, epochs=1, verbose=0).history
    assert set(hist) == {"g_loss", "g_gan", "g_l1", "d_loss", "g_fm"}
    ev = model.evaluate(ds, verbose=0, return_dict=True)
    assert ev["g_fm"] > 0 and np.isfinite(ev["g_loss"])
    assert model(batch(num_labels=2)).shape == (2, 32, 32, 3)


# One process can split its CPU only before TensorFlow initialises devices, so the replica
# comparison runs in a fresh interpreter.
REPLICA_SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import synthseg_tf
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from synthseg_tf.models import pix2pix as P

    def make(strategy, cfg):
        # norm="instance": batch norm would normalise with per-replica batch statistics, which
        # legitimately differ between 1 and 2 replicas; instance norm is per example.
        # dropout=0: each replica draws its own dropout noise, so streams cannot match.
        # SGD, not Adam: Adam's first step is ~lr*sign(grad) and would hide a gradient-scale bug.
        with strategy.scope():
            tf.keras.utils.set_random_seed(1)
            m = P.build_pix2pix(4, 32, base_filters=8, norm="instance", dropout=0.0,
                                num_labels=cfg.get("num_labels"), spectral_norm=cfg.get("sn", False))
            m.compile(tf.keras.optimizers.SGD(0.01), tf.keras.optimizers.SGD(0.01), gan_loss=cfg["loss"],
                      feature_matching_weight=cfg.get("fm", 0.0))
        return m

    def weights(m):
        return m.generator.get_weights() + m.discriminator.get_weights()

    rng = np.random.default_rng(0)
    B = 4  # global batch: 4 on one replica, 2 + 2 on two
    mask = rng.integers(0, 4, (2 * B, 32, 32)).astype("int32")
    mask[0, :10] = 255
    data = {"image": rng.random((2 * B, 32, 32, 3)).astype("float32"), "mask": mask,
            "label": rng.integers(0, 3, 2 * B).astype("int32")}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(B)
    two_replicas = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process (collective keys)
    report = []
    for cfg in [dict(loss="bce", fm=10.0), dict(loss="lsgan", sn=True, num_labels=3)]:
        one = make(tf.distribute.get_strategy(), cfg)
        two = make(two_replicas, cfg)
        two.generator.set_weights(one.generator.get_weights())
        two.discriminator.set_weights(one.discriminator.get_weights())
        w0 = weights(one)
        for step in range(2):
            h1 = one.fit(ds.skip(step).take(1), verbose=0).history
            h2 = two.fit(ds.skip(step).take(1), verbose=0).history
            report.append(dict(cfg=cfg, step=step, replicas=two.distribute_strategy.num_replicas_in_sync,
                               losses1={k: v[0] for k, v in h1.items()}, losses2={k: v[0] for k, v in h2.items()},
                               max_diff=max(float(np.abs(a - b).max()) for a, b in zip(weights(one), weights(two))),
                               max_update=max(float(np.abs(a - b).max()) for a, b in zip(weights(one), w0))))
    print("REPORT" + json.dumps(report))
""")


def test_one_and_two_replicas_give_the_same_losses_and_updates():
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT"):])
    assert len(report) == 4
    for r in report:
        assert r["replicas"] == 2
        assert set(r["losses1"]) == set(r["losses2"])
        for k, v in r["losses1"].items():
            assert r["losses2"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (r["cfg"], r["step"], k)
        assert r["max_update"] > 1e-3  # the weights really moved ...
        assert r["max_diff"] < 1e-5 * max(1.0, r["max_update"]) + 1e-6, r  # ... identically
