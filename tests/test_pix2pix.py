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


def first_and_last_metric(model, b, tracker, steps: int):
    """Train ``steps`` steps on batch ``b``; ``tracker``'s value after the first step and after the last
    (reset before each step, so each value is that step's alone)."""
    step = tf.function(model.train_step)
    values = []
    for _ in range(steps):
        tracker.reset_state()
        values.append(float(step(b)[tracker.name]))
    return values[0], values[-1]


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


def test_projection_discriminator_adds_the_label_embedding_dotted_with_the_last_features():
    """label_conditioning="projection": logits = unconditional logits + <embed(label), h> per patch,
    the label is not fed in at the input, the verdict depends on the label, and it trains."""
    d = P.build_discriminator(4, 32, base_filters=4, num_labels=3, label_conditioning="projection")
    assert "d_label_embed" not in [l.name for l in d.layers]
    proj = d.get_layer("d_projection")
    proj.embeddings.assign(tf.random.normal(proj.embeddings.shape, seed=1))
    b = batch(num_labels=3)
    inputs = {"mask": tf.cast(b["mask"], tf.int32), "image": b["image"] * 2 - 1, "label": tf.constant([0, 2])}
    feats = P.discriminator_features(d)(inputs)
    h, logits = feats[-2].numpy(), feats[-1].numpy()
    uncond = d.get_layer("logits")(feats[-2]).numpy()
    e = proj.embeddings.numpy()[[0, 2]]
    expect = uncond + np.einsum("bhwc,bc->bhw", h, e)[..., None]
    np.testing.assert_allclose(logits, expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(d(inputs).numpy(), expect, rtol=1e-4, atol=1e-5)
    other = d({**inputs, "label": tf.constant([1, 1])}).numpy()
    assert np.abs(other - logits).max() > 1e-3  # same pair, another class: another verdict
    plain = P.build_discriminator(4, 32, base_filters=4, num_labels=3)
    assert "d_projection" not in [l.name for l in plain.layers] and "d_label_embed" in [l.name for l in plain.layers]
    with pytest.raises(ValueError, match="label_conditioning must be one of"):
        P.build_discriminator(4, 32, base_filters=4, num_labels=3, label_conditioning="concat")
    # a model with it trains end to end: the projection's embeddings get gradients
    m = P.build_pix2pix(4, 32, base_filters=4, num_labels=3, d_label_conditioning="projection")
    m.compile()
    before = m.discriminator.get_layer("d_projection").embeddings.numpy().copy()
    m.train_step({"image": b["image"], "mask": tf.cast(b["mask"], tf.int32), "label": tf.constant([0, 2])})
    after = m.discriminator.get_layer("d_projection").embeddings.numpy()
    assert np.abs(after[[0, 2]] - before[[0, 2]]).max() > 0
    np.testing.assert_array_equal(after[1], before[1])  # a label not in the batch: no gradient


@pytest.mark.parametrize("label_conditioning", ["input", "projection"])
def test_multiscale_discriminator(label_conditioning):
    """pix2pixHD's multi-scale discriminator: scale 0 is the single-scale PatchGAN (same layer names,
    same logits with the same weights); scale 1 judges the 2x-pooled input, so a checkerboard that
    averages to zero over every 2x2 block moves scale 0's logits only; every scale trains."""
    rng = np.random.default_rng(0)
    kw = dict(base_filters=4, num_labels=3, label_conditioning=label_conditioning)
    d = P.build_discriminator(4, (32, 48), num_scales=2, **kw)
    single = P.build_discriminator(4, (32, 48), **kw)
    assert d.output_shape == (None, 4, 6, 2) and single.output_shape == (None, 4, 6, 1)
    for layer in single.layers:  # scale 0 carries the single-scale names: copy its weights over
        layer.set_weights(d.get_layer(layer.name).get_weights())
    inputs = {"mask": tf.constant(rng.integers(0, 4, (2, 32, 48)), tf.int32),
              "image": tf.constant(rng.uniform(-0.5, 0.5, (2, 32, 48, 3)), tf.float32), "label": tf.constant([0, 2])}
    out = d(inputs).numpy()
    np.testing.assert_allclose(out[..., :1], single(inputs).numpy(), rtol=1e-5, atol=1e-6)
    checker = 0.3 * (np.indices((32, 48)).sum(0) % 2 * 2 - 1)[None, :, :, None].astype(np.float32)
    moved = d({**inputs, "image": inputs["image"] + checker}).numpy()
    scale = np.abs(out).max()  # (logits are ~1e-4 at initialisation)
    assert np.abs(moved[..., 0] - out[..., 0]).max() > 0.05 * scale
    assert np.abs(moved[..., 1] - out[..., 1]).max() < 1e-4 * scale
    feats = [o.name for o in P.discriminator_features(d).outputs[:-1]]
    assert sum("d_feat_s1_" in n for n in feats) == sum("d_feat_s1_" not in n for n in feats) - 1  # one stride-2 less
    m = P.build_pix2pix(4, (32, 48), base_filters=4, num_labels=3, d_label_conditioning=label_conditioning,
                        d_scales=2)
    m.compile(feature_matching_weight=1.0)
    before = {v.name: v.numpy().copy() for v in m.discriminator.trainable_variables}
    m.train_step(inputs)
    coarse = [v for v in m.discriminator.trainable_variables if "d_s1_" in v.name]
    assert coarse and all(np.abs(v.numpy() - before[v.name]).max() > 0 for v in coarse if "embeddings" not in v.name)
    for bad in (0, 5, 2.5, True):
        with pytest.raises(ValueError, match="integer from 1 to 4"):
            P.build_discriminator(4, 32, num_scales=bad)
    with pytest.raises(ValueError, match="multiples of 4 and at least 32 pixels"):
        P.build_discriminator(4, (32, 42), num_scales=3)
    with pytest.raises(ValueError, match="scale 1's 5x5 patch grid does not tile the full-resolution 9x9 one"):
        P.check_discriminator_scales(2, 72)  # 72 -> 9x9 logits; 36 -> 5x5 (the strides round up)
    for size in ((64, 96), (128, 160), (256, 256)):  # sizes people use: every scale builds and stacks
        assert P.build_discriminator(4, size, base_filters=2, num_scales=3).output_shape[-1] == 3


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


def test_spade_generator_modulates_every_normalisation_by_the_map_and_the_class():
    """arch="spade": the U-Net's inputs and output; every parameter-free normalisation is scaled
    and shifted by convs of the (pooled) label map + class embedding at its resolution, so both
    change every block's modulation; it trains, clones (EMA) and refuses what it cannot do."""
    assert [P.spade_upsamplings(s) for s in (8, 32, 64, (128, 160), 256, 1024)] == [1, 3, 4, 5, 6, 6]
    g = P.build_generator(4, 32, base_filters=4, norm="instance", num_labels=3, dropout=0.0, arch="spade")
    assert g.input_names == ["mask", "label"] and g.output_shape == (None, 32, 32, 3)
    names = [l.name for l in g.layers]
    assert not any(n.startswith("down") for n in names)  # no encoder
    norms = [l for l in g.layers if l.name.endswith("_norm")]
    # blocks at 1/8, 1/4 and 1/2 of the image; channels change in each: 3 SPADE layers per block
    assert len(norms) == 9 and all(not l.center and not l.scale for l in norms)
    for l in norms:  # each normalisation's output is multiplied by its own gamma, then shifted by beta
        base = l.name[:-len("_norm")]
        assert g.get_layer(f"{base}_scale").input[0] is l.output
        assert g.get_layer(f"{base}_scale").input[1] is g.get_layer(f"{base}_gamma").output
        assert g.get_layer(f"{base}_shift").input[1] is g.get_layer(f"{base}_beta").output
    for l in g.layers:  # SPADE's convs start near the identity modulation: gamma ~ 1, beta ~ 0
        if l.name.endswith("_gamma"):
            np.testing.assert_array_equal(l.bias.numpy(), 1.0)
    probes = tf.keras.Model(g.inputs, [g.get_layer(f"spade{j}_0_gamma").output for j in range(3)])
    rng = np.random.default_rng(0)
    mask = tf.constant(rng.integers(0, 4, (2, 32, 32)), tf.int32)
    label = tf.constant([0, 2])
    ref = [t.numpy() for t in probes({"mask": mask, "label": label})]
    other_map = [t.numpy() for t in probes({"mask": tf.zeros_like(mask), "label": label})]
    other_class = [t.numpy() for t in probes({"mask": mask, "label": tf.constant([1, 1])})]
    for a, b, c in zip(ref, other_map, other_class):  # every block's modulation sees both
        assert np.abs(a - b).max() > 1e-4 and np.abs(a - c).max() > 1e-4
    out = g({"mask": mask, "label": label}).numpy()
    assert np.abs(out).max() <= 1.0 and not np.allclose(out[0], g({"mask": mask, "label": tf.constant([1, 1])})[0])
    assert P.fused_generator(g) is None  # nothing to fuse: rendering and training run it as built
    # trains end to end (with an EMA copy, which clone_model makes)
    tf.keras.utils.set_random_seed(0)
    m = P.build_pix2pix(4, 32, base_filters=4, num_labels=3, arch="spade", ema_decay=0.9)
    m.compile()
    b = batch(num_labels=3)
    before = [w.numpy().copy() for w in m.generator.trainable_weights]
    m.train_step({"image": b["image"], "mask": tf.cast(b["mask"], tf.int32), "label": b["label"]})
    moved = [np.abs(w.numpy() - v).max() > 0 for w, v in zip(m.generator.trainable_weights, before)]
    assert all(moved)
    assert len(m.ema_generator.weights) == len(m.generator.weights)
    unconditional = P.build_generator(4, 16, base_filters=4, arch="spade")
    assert unconditional.input_names == ["mask"] and unconditional.output_shape == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="arch must be one of"):
        P.build_generator(4, 32, arch="gaugan")
    with pytest.raises(ValueError, match="upsamples by nearest resizing"):
        P.build_generator(4, 32, arch="spade", upsample="transpose")
    with pytest.raises(ValueError, match="'bottleneck' is for the U-Net"):
        P.build_generator(4, 32, arch="spade", num_labels=3, label_conditioning="bottleneck")
    with pytest.raises(ValueError, match="too small or odd for a SPADE generator"):
        P.build_generator(4, (6, 9), arch="spade")


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
                                num_labels=cfg.get("num_labels"), spectral_norm=cfg.get("sn", False),
                                ema_decay=cfg.get("ema"), style_dim=cfg.get("style_dim", 0))
            m.compile(tf.keras.optimizers.SGD(0.01), tf.keras.optimizers.SGD(0.01), gan_loss=cfg["loss"],
                      feature_matching_weight=cfg.get("fm", 0.0))
        return m

    def weights(m):
        ema = m.ema_generator.get_weights() if m.ema_generator is not None else []
        return m.generator.get_weights() + m.discriminator.get_weights() + ema

    rng = np.random.default_rng(0)
    B = 4  # global batch: 4 on one replica, 2 + 2 on two
    mask = rng.integers(0, 4, (2 * B, 32, 32)).astype("int32")
    mask[0, :10] = 255
    data = {"image": rng.random((2 * B, 32, 32, 3)).astype("float32"), "mask": mask,
            "label": rng.integers(0, 3, 2 * B).astype("int32")}
    ds = tf.data.Dataset.from_tensor_slices(data).batch(B)
    two_replicas = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process (collective keys)
    report = []
    for cfg in [dict(loss="bce", fm=10.0), dict(loss="lsgan", sn=True, num_labels=3), dict(loss="bce", ema=0.9),
                dict(loss="bce", num_labels=3, style_dim=4)]:  # (each replica's references moved as on one)
        one = make(tf.distribute.get_strategy(), cfg)
        two = make(two_replicas, cfg)
        two.generator.set_weights(one.generator.get_weights())
        two.discriminator.set_weights(one.discriminator.get_weights())
        if cfg.get("ema"):
            two.ema_generator.set_weights(one.ema_generator.get_weights())
        w0 = weights(one)
        for step in range(2):
            h1 = one.fit(ds.skip(step).take(1), verbose=0).history
            h2 = two.fit(ds.skip(step).take(1), verbose=0).history
            report.append(dict(cfg=cfg, step=step, replicas=two.distribute_strategy.num_replicas_in_sync,
                               losses1={k: v[0] for k, v in h1.items()}, losses2={k: v[0] for k, v in h2.items()},
                               max_diff=max(float(np.abs(a - b).max()) for a, b in zip(weights(one), weights(two))),
                               max_update=max(float(np.abs(a - b).max()) for a, b in zip(weights(one), w0)),
                               ema_update=(max(float(np.abs(a - b).max()) for a, b in zip(
                                   one.ema_generator.get_weights(), w0[-len(one.ema_generator.get_weights()):]))
                                   if cfg.get("ema") else None)))
    print("REPORT" + json.dumps(report))
""")


def test_one_and_two_replicas_give_the_same_losses_and_updates():
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", REPLICA_SCRIPT], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("REPORT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT"):])
    assert len(report) == 8
    assert all(r["ema_update"] > 1e-4 for r in report if r["cfg"].get("ema"))  # the EMA copy moved too
    for r in report:
        assert r["replicas"] == 2
        assert set(r["losses1"]) == set(r["losses2"])
        for k, v in r["losses1"].items():
            assert r["losses2"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (r["cfg"], r["step"], k)
        assert r["max_update"] > 1e-3  # the weights really moved ...
        assert r["max_diff"] < 1e-5 * max(1.0, r["max_update"]) + 1e-6, r  # ... identically


# --------------------------------------------------------------------------- quality levers
@pytest.mark.parametrize("upsample", ["resize", "transpose"])
def test_upsample_modes_build_every_decoder_layer(upsample):
    g = P.build_generator(3, 32, base_filters=4, norm="instance", upsample=upsample)
    depth = P.generator_depth(32)
    transposed = [l for l in g.layers if isinstance(l, tf.keras.layers.Conv2DTranspose)]
    resized = [l for l in g.layers if isinstance(l, tf.keras.layers.UpSampling2D)]
    if upsample == "resize":  # every decoder block and the output layer: nearest 2x + 3x3 conv
        assert not transposed and len(resized) == depth
        assert all(l.interpolation == "nearest" for l in resized)
        assert g.get_layer("rgb").kernel_size == (3, 3) and g.get_layer("up0_conv").kernel_size == (3, 3)
    else:
        assert not resized and len(transposed) == depth and g.get_layer("rgb").kernel_size == (4, 4)
    out = g(tf.zeros((1, 32, 32), tf.int32)).numpy()
    assert out.shape == (1, 32, 32, 3) and np.abs(out).max() <= 1.0
    with pytest.raises(ValueError, match="upsample"):
        P.build_generator(3, 32, base_filters=4, upsample="bilinear")


def test_resize_decoder_has_no_checkerboard_at_init():
    """On a constant map the transposed-conv decoder paints a 2-periodic pattern; resize does not."""
    def period2_energy(upsample):
        tf.keras.utils.set_random_seed(3)
        g = P.build_generator(2, 64, base_filters=8, norm="none", upsample=upsample, dropout=0.0)
        img = g(tf.zeros((1, 64, 64), tf.int32)).numpy()[0, 16:48, 16:48].mean(-1)  # away from the borders
        spec = np.abs(np.fft.fft2(img - img.mean()))
        return spec[16, 16] + spec[0, 16] + spec[16, 0], spec.sum()  # Nyquist frequencies vs all

    (t_nyq, t_all), (r_nyq, r_all) = period2_energy("transpose"), period2_energy("resize")
    assert t_nyq / t_all > 5 * (r_nyq / r_all)


def test_parse_diffaugment_policy():
    assert P.parse_diffaugment(None) is None and P.parse_diffaugment("none") is None and P.parse_diffaugment("") is None
    assert P.parse_diffaugment(" Color, cutout ") == "color,cutout"
    assert P.parse_diffaugment(["translation"]) == "translation"
    with pytest.raises(ValueError, match="diffaugment.*'flip'"):
        P.parse_diffaugment("color,flip")
    with pytest.raises(ValueError, match="repeated"):
        P.parse_diffaugment("color,color")


def test_diffaugment_moves_label_map_and_image_together():
    n, s = 4, 16
    rng = np.random.default_rng(0)
    mask = tf.constant(rng.integers(0, 3, (n, s, s)), tf.int32)
    image = tf.constant(rng.uniform(-0.9, 0.9, (n, s, s, 3)), tf.float32)
    draw = P.draw_diffaugment(tf.random.Generator.from_seed(1), "translation", n, s, s)
    dy, dx = draw["shift_y"].numpy(), draw["shift_x"].numpy()
    assert np.abs(dy).max() <= 2 and np.abs(dx).max() <= 2  # 1/8 of 16
    m2, i2 = (t.numpy() for t in P.diffaugment_pair(mask, image, draw, "translation"))
    for b in range(n):
        for y in range(s):
            for x in range(s):
                sy, sx = y + dy[b], x + dx[b]
                if 0 <= sy < s and 0 <= sx < s:  # moved content: same offset in map and image
                    assert m2[b, y, x] == mask[b, sy, sx]
                    np.testing.assert_allclose(i2[b, y, x], image[b, sy, sx])
                else:  # translated in: void map, zero image
                    assert m2[b, y, x] == IGNORE_ID and not i2[b, y, x].any()

    draw = P.draw_diffaugment(tf.random.Generator.from_seed(2), "cutout", n, s, s)
    m3, i3 = (t.numpy() for t in P.diffaugment_pair(mask, image, draw, "cutout"))
    cut = m3 == IGNORE_ID
    assert cut.any() and np.all(i3[cut] == 0) and np.all(i3[~cut] == image.numpy()[~cut])
    assert cut.reshape(n, -1).sum(1).max() <= 8 * 8  # a square of half each side, maybe clipped

    draw = P.draw_diffaugment(tf.random.Generator.from_seed(3), "color", n, s, s)
    m4, i4 = (t.numpy() for t in P.diffaugment_pair(mask, image, draw, "color"))
    np.testing.assert_array_equal(m4, mask.numpy())  # colour ops leave the label map alone
    assert not np.allclose(i4, image.numpy())


def test_diffaugment_is_differentiable_and_reproducible():
    policy = "color,translation,cutout"
    image = tf.Variable(tf.random.uniform((2, 16, 16, 3), -1, 1, seed=0))
    mask = tf.zeros((2, 16, 16), tf.int32)
    draw = P.draw_diffaugment(tf.random.Generator.from_seed(5), policy, 2, 16, 16)
    again = P.draw_diffaugment(tf.random.Generator.from_seed(5), policy, 2, 16, 16)
    for k in draw:
        np.testing.assert_array_equal(draw[k].numpy(), again[k].numpy())
    with tf.GradientTape() as tape:
        _, out = P.diffaugment_pair(mask, image, draw, policy)
        loss = tf.reduce_sum(out ** 2)
    grad = tape.gradient(loss, image)
    assert grad is not None and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0


def test_discriminator_sees_augmented_pairs_only_in_training():
    tf.keras.utils.set_random_seed(0)
    model = P.build_pix2pix(4, 32, base_filters=4, norm="instance", dropout=0.0, diffaugment="translation,cutout",
                            augment_seed=7)
    model.compile()
    b = batch()
    seen = []
    real_call = model._d_features.call

    def spy(inputs, *a, **k):
        seen.append(inputs["mask"])
        return real_call(inputs, *a, **k)

    model._d_features.call = spy
    model.train_step(b)
    model._forward(b, training=False)
    masks = [m.numpy() for m in seen]
    assert len(masks) == 4
    void = [int((m == IGNORE_ID).sum()) for m in masks]
    base = int((b["mask"].numpy() == IGNORE_ID).sum())
    assert void[0] > base and void[1] > base and not np.array_equal(masks[0], masks[1])  # own draw each
    np.testing.assert_array_equal(masks[2], b["mask"].numpy())  # evaluation: un-augmented
    assert P.build_pix2pix(4, 32, base_filters=4, diffaugment="none").augment_rng is None


def test_film_generator_is_class_conditional_at_init_and_after_training():
    tf.keras.utils.set_random_seed(0)
    g = P.build_generator(4, 32, base_filters=8, norm="instance", num_labels=3, dropout=0.0)
    films = [l for l in g.layers if isinstance(l, P.ClassFiLM)]
    depth = P.generator_depth(32)
    assert sorted(l.name for l in films) == sorted(["bottleneck_film"] + [f"up{j}_film" for j in range(depth - 1)])
    assert "bottleneck_label" not in [l.name for l in g.layers]
    mask = tf.constant(batch(n=1)["mask"].numpy().repeat(2, 0), tf.int32)  # the same map twice
    labels = tf.constant([0, 2])
    out = g({"mask": mask, "label": labels}).numpy()
    assert np.abs(out[0] - out[1]).mean() > 1e-3

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(g({"mask": mask, "label": labels}, training=True) ** 2)
    weights = [w for l in films for w in (l.kernel, l.bias)]
    grads = tape.gradient(loss, weights)
    for w, gr in zip(weights, grads):
        assert gr is not None and np.abs(gr.numpy()).max() > 0, w.name

    model = P.Pix2Pix(g, P.build_discriminator(4, 32, base_filters=8, num_labels=3))
    model.compile(gan_loss="lsgan")
    step = tf.function(model.train_step)
    b = batch(n=4, num_labels=3)
    before = [w.numpy().copy() for w in weights]
    for _ in range(3):
        step(b)
    assert all(not np.allclose(a, w.numpy()) for a, w in zip(before, weights))  # every FiLM layer learns
    out = g({"mask": mask, "label": labels}).numpy()
    assert np.abs(out[0] - out[1]).mean() > 1e-3


def test_bottleneck_conditioning_still_available():
    g = P.build_generator(4, 32, base_filters=4, num_labels=3, label_conditioning="bottleneck")
    names = [l.name for l in g.layers]
    assert "bottleneck_label" in names and not any(isinstance(l, P.ClassFiLM) for l in g.layers)
    with pytest.raises(ValueError, match="label_conditioning"):
        P.build_generator(4, 32, base_filters=4, num_labels=3, label_conditioning="concat")


def test_ema_follows_the_generator_with_warmup():
    tf.keras.utils.set_random_seed(0)
    model = P.build_pix2pix(4, 32, base_filters=4, norm="batch", dropout=0.0, ema_decay=0.5)
    model.compile(tf.keras.optimizers.SGD(0.1), tf.keras.optimizers.SGD(0.1))
    assert model.inference_generator is model.ema_generator and not model.ema_generator.trainable_weights
    g_vars = model.generator.trainable_weights
    ema = [v.numpy() for v in g_vars]  # the EMA starts as a copy
    step = tf.function(model.train_step)
    b = batch(n=2)
    for t in (1, 2, 3):
        step(b)
        d = min(0.5, (1 + t) / (P.EMA_WARMUP + t))  # warm-up: 2/11, 3/12, 4/13
        ema = [d * e + (1 - d) * v.numpy() for e, v in zip(ema, g_vars)]
    got = {w.name: w.numpy() for w in model.ema_generator.weights}
    for e, v in zip(ema, g_vars):
        np.testing.assert_allclose(got[v.name], e, rtol=1e-5, atol=1e-6)
    for v in model.generator.non_trainable_weights:  # batch-norm statistics are copied
        np.testing.assert_allclose(got[v.name], v.numpy(), rtol=1e-6)
    assert not np.allclose(got[g_vars[0].name], g_vars[0].numpy())
    with pytest.raises(ValueError, match="ema_decay"):
        P.build_pix2pix(4, 32, base_filters=4, ema_decay=1.0)


def test_resize_output_layer_sees_the_full_resolution_label_map():
    g = P.build_generator(3, 32, base_filters=4, norm="instance", upsample="resize")
    assert g.get_layer("rgb_skip").output_shape == (None, 32, 32, 4 * 2 + 3)  # up features + one-hot
    assert "rgb_skip" not in [l.name for l in P.build_generator(3, 32, base_filters=4, upsample="transpose").layers]


def test_class_loss_scores_the_generated_image_against_its_label():
    """compile(class_model=..., class_loss_weight=w): g_cls is the classifier's cross-entropy of the
    intended label on the generated image, g_total adds w * g_cls, and a train step pushes it down."""
    tf.keras.utils.set_random_seed(0)
    g = P.build_generator(4, 32, base_filters=4, norm="instance", num_labels=3, dropout=0.0)
    model = P.Pix2Pix(g, P.build_discriminator(4, 32, base_filters=4, num_labels=3))
    clf = tf.keras.Sequential([tf.keras.Input((32, 32, 3)), tf.keras.layers.GlobalAveragePooling2D(),
                               tf.keras.layers.Dense(3, activation="softmax")])
    seen = []

    def classify(images):  # the generator's tanh output reaches the classifier in [0, 1]
        seen.append(images)
        return clf(images)

    b = batch(n=4, num_labels=3)
    model.compile(class_model=classify, class_loss_weight=2.0)
    assert [m.name for m in model.metrics][-1] == "g_cls"
    g_total, g_gan, g_l1, g_fm, g_cls, d, d_mis, _, _ = model._forward(b, training=False)
    assert d_mis is None
    fake = g({"mask": tf.cast(b["mask"], tf.int32), "label": b["label"]}, training=False)
    expected = tf.keras.losses.sparse_categorical_crossentropy(b["label"], clf((fake + 1.0) / 2.0))
    np.testing.assert_allclose(g_cls.numpy(), expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(g_total.numpy(), (g_gan + 100.0 * g_l1 + 2.0 * g_cls).numpy(), rtol=1e-5)
    assert g_fm is None and float(tf.reduce_min(seen[-1])) >= 0.0 and float(tf.reduce_max(seen[-1])) <= 1.0

    # only the class loss: the generator's steps lower it; the classifier is not trained
    model.compile(class_model=classify, class_loss_weight=1.0, l1_weight=0.0)
    clf_before = [w.numpy().copy() for w in clf.weights]
    first, last = first_and_last_metric(model, b, model.g_cls_tracker, steps=16)
    assert last < first
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(clf_before, clf.weights))

    with pytest.raises(ValueError, match="needs a class_model"):
        model.compile(class_loss_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        model.compile(class_model=classify, class_loss_weight=-1.0)
    plain = P.build_pix2pix(4, 32, base_filters=4)
    with pytest.raises(ValueError, match="class-conditional"):
        plain.compile(class_model=classify, class_loss_weight=1.0)
    plain.compile(class_model=classify, class_loss_weight=0.0)  # off: no classifier needed or used
    assert plain.class_model is None and "g_cls" not in [m.name for m in plain.metrics]


@pytest.mark.parametrize("gan_loss", P.GAN_LOSSES)
def test_discriminator_negative_loss_is_the_fake_half_of_the_discriminator_loss(gan_loss):
    """d(real, fake) - negative(fake) depends on the real logits only, for every GAN loss."""
    rng = np.random.default_rng(0)
    real = tf.constant(rng.normal(size=(3, 4, 4, 1)), tf.float32)
    _, d = P.gan_loss_functions(gan_loss)
    neg = P.discriminator_negative_loss(gan_loss)
    rests = [(d(real, f) - neg(f)).numpy() for f in (tf.constant(rng.normal(size=(3, 4, 4, 1)) * s, tf.float32)
                                                      for s in (0.5, 3.0))]
    np.testing.assert_allclose(rests[0], rests[1], rtol=1e-5, atol=1e-6)
    assert neg(tf.fill((2, 4, 4, 1), 5.0)).numpy().min() > neg(tf.zeros((2, 4, 4, 1))).numpy().max()


def test_mismatched_labels_are_other_labels_drawn_statelessly():
    label = tf.constant(np.arange(400) % 5, tf.int32)
    seed = tf.constant([7, 3], tf.int64)
    wrong = P.mismatched_labels(label, 5, seed).numpy()
    assert wrong.min() >= 0 and wrong.max() < 5 and not np.any(wrong == label.numpy())
    for c in range(5):  # every other label is drawn for each class
        assert set(wrong[label.numpy() == c]) == set(range(5)) - {c}
    np.testing.assert_array_equal(wrong, P.mismatched_labels(label, 5, seed).numpy())
    assert not np.array_equal(wrong, P.mismatched_labels(label, 5, tf.constant([7, 4], tf.int64)).numpy())


def test_matching_aware_discriminator_calls_real_images_with_wrong_labels_fake():
    """compile(mismatch_weight=w): d adds w * d_mis, d_mis is the negative loss of the real pair under
    another label, and discriminator steps learn to refuse those pairs."""
    tf.keras.utils.set_random_seed(0)
    model = P.build_pix2pix(4, 32, base_filters=4, norm="instance", num_labels=3, dropout=0.0)
    b = batch(n=4, num_labels=3)
    model.compile(mismatch_weight=0.5)
    assert model.num_labels == 3 and [m.name for m in model.metrics][-1] == "d_mis"
    _, _, _, _, g_cls, d, d_mis, g_aux, d_aux = model._forward(b, training=False)
    assert g_cls is None and g_aux is None and d_aux is None
    seed = tf.stack([tf.constant(model.mismatch_seed, tf.int64), tf.cast(model.d_optimizer.iterations, tf.int64)])
    wrong = P.mismatched_labels(b["label"], 3, seed)
    real = b["image"] * 2.0 - 1.0
    mask = tf.cast(b["mask"], tf.int32)
    logits = model.discriminator({"mask": mask, "image": real, "label": wrong}, training=False)
    np.testing.assert_allclose(d_mis.numpy(), P.discriminator_negative_loss("bce")(logits).numpy(), rtol=1e-5)
    fake = model.generator({"mask": mask, "label": b["label"]}, training=False)
    d_plain = P.gan_loss_functions("bce")[1](
        model.discriminator({"mask": mask, "image": real, "label": b["label"]}, training=False),
        model.discriminator({"mask": mask, "image": fake, "label": b["label"]}, training=False))
    np.testing.assert_allclose(d.numpy(), (d_plain + 0.5 * d_mis).numpy(), rtol=1e-5)

    first, last = first_and_last_metric(model, b, model.d_mis_tracker, steps=26)
    assert last < first

    with pytest.raises(ValueError, match=">= 0"):
        model.compile(mismatch_weight=-1.0)
    plain = P.build_pix2pix(4, 32, base_filters=4)
    with pytest.raises(ValueError, match="class-conditional"):
        plain.compile(mismatch_weight=1.0)
    plain.compile(mismatch_weight=0.0)
    assert plain.mismatch_seed is None and "d_mis" not in [m.name for m in plain.metrics]


@pytest.mark.parametrize("d_scales", [1, 2])
def test_a_projection_discriminator_takes_the_matching_aware_loss(d_scales):
    """The label count of a projection discriminator (no label embedding beside its input) is read
    from its projection layers, so the matching-aware loss is not refused for it."""
    model = P.build_pix2pix(4, 32, base_filters=4, norm="instance", num_labels=3, dropout=0.0,
                            d_label_conditioning="projection", d_scales=d_scales)
    assert P.discriminator_num_labels(model.discriminator) == 3
    model.compile(mismatch_weight=0.5)
    assert model.num_labels == 3 and [m.name for m in model.metrics][-1] == "d_mis"
    assert P.discriminator_num_labels(P.build_pix2pix(4, 32, base_filters=4).discriminator) is None


@pytest.mark.parametrize("d_scales", [1, 2])
def test_auxiliary_classifier_learns_the_real_classes_and_scores_the_generated_images(d_scales):
    """compile(aux_class_weight=w) (AC-GAN): a head on the full-resolution PatchGAN's last convolution
    (pooled, before its normalisation); d adds w * CE(head(real), label), g_total w * CE(head(fake),
    label); feature matching does not see the head's input; the discriminator's
    optimiser trains the head (and its gradient reaches the trunk); discriminator steps lower d_aux."""
    tf.keras.utils.set_random_seed(0)
    model = P.build_pix2pix(4, 32, base_filters=4, norm="instance", num_labels=3, dropout=0.0,
                            d_label_conditioning="projection", d_scales=d_scales)
    b = batch(n=6, num_labels=3)
    model.compile(*P.default_optimizers(2e-3), aux_class_weight=0.5)  # 10x pix2pix's rate: a short test
    model.build_optimizers()
    assert [m.name for m in model.metrics][-2:] == ["g_aux", "d_aux"]
    assert P.last_trunk_conv(model.discriminator) == "d3_conv"
    assert model.aux_classifier.input_shape == (None, 4, 4, 32)
    head = model.aux_classifier.trainable_variables
    assert len(head) == 2 and all(any(v is w for w in model.d_trainable_variables) for v in head)

    g_total, g_gan, g_l1, _, _, d, _, g_aux, d_aux = model._forward(b, training=False)
    mask = tf.cast(b["mask"], tf.int32)
    real = b["image"] * 2.0 - 1.0
    feats, _, _ = model._discriminate(mask, real, b["label"], False)  # what feature matching compares
    assert len(feats) == len([l for l in model.discriminator.layers if l.name.startswith(P.FEATURE_PREFIX)])
    fake = model.generator({"mask": mask, "label": b["label"]}, training=False)
    # the head reads the last trunk convolution before its instance norm, averaged over the patches
    trunk = tf.keras.Model(model.discriminator.inputs, model.discriminator.get_layer("d3_conv").output)

    def ce(image):
        conv = trunk({"mask": mask, "image": image, "label": b["label"]})
        dense = model.aux_classifier.get_layer("d_aux_classifier_logits")
        return tf.nn.sparse_softmax_cross_entropy_with_logits(b["label"], dense(tf.reduce_mean(conv, axis=[1, 2])))

    np.testing.assert_allclose(d_aux.numpy(), ce(real).numpy(), rtol=1e-5)
    np.testing.assert_allclose(g_aux.numpy(), ce(fake).numpy(), rtol=1e-5)
    np.testing.assert_allclose(g_total.numpy(), (g_gan + 100.0 * g_l1 + 0.5 * g_aux).numpy(), rtol=1e-5)
    d_plain = P.gan_loss_functions("bce")[1](
        model.discriminator({"mask": mask, "image": real, "label": b["label"]}, training=False),
        model.discriminator({"mask": mask, "image": fake, "label": b["label"]}, training=False))
    np.testing.assert_allclose(d.numpy(), (d_plain + 0.5 * d_aux).numpy(), rtol=1e-5)

    with tf.GradientTape() as tape:  # the head's loss reaches the trunk's first convolution
        loss = tf.reduce_mean(ce(real))
    first = model.discriminator.get_layer("d0_conv").kernel
    assert float(tf.reduce_max(tf.abs(tape.gradient(loss, first)))) > 0

    before = [v.numpy().copy() for v in head]
    first_d, last_d = first_and_last_metric(model, b, model.d_aux_tracker, steps=30)
    assert last_d < 0.8 * first_d
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, head))


def test_auxiliary_classifier_is_refused_where_the_head_would_read_the_label():
    labelled = P.build_pix2pix(4, 32, base_filters=4, num_labels=3)  # the label tiled beside the input
    with pytest.raises(ValueError, match="label_conditioning='projection'"):
        labelled.compile(aux_class_weight=1.0)
    with pytest.raises(ValueError, match="class-conditional generator"):
        P.build_pix2pix(4, 32, base_filters=4).compile(aux_class_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        labelled.compile(aux_class_weight=-1.0)
    labelled.compile(aux_class_weight=0.0)
    assert labelled.aux_classifier is None and "g_aux" not in [m.name for m in labelled.metrics]
    projection = P.build_pix2pix(4, 32, base_filters=4, num_labels=3, d_label_conditioning="projection")
    projection.compile(aux_class_weight=1.0)
    projection.compile(aux_class_weight=0.0)  # compiled again without it: the head stays but is not trained
    assert projection.aux_classifier is not None and "g_aux" not in [m.name for m in projection.metrics]
    assert len(projection.d_trainable_variables) == len(projection.discriminator.trainable_variables)
    b = batch(n=2, num_labels=3)
    assert projection._forward(b, training=False)[-1] is None
    tf.function(projection.train_step)(b)


@pytest.mark.parametrize("num_labels", [None, 3])
def test_reference_image_gives_the_generator_its_appearance(num_labels):
    """style_dim > 0: the generator takes a reference image (a third input, or the second without class
    labels) whose encoded appearance changes its output; a training step uses each image, flipped and
    rolled (statelessly from the seed and the step), as its own reference and trains the encoder; the
    validation step moves it too, by one draw fixed across steps."""
    b = batch(n=4, num_labels=num_labels, seed=1)
    tf.keras.utils.set_random_seed(0)
    model = P.build_pix2pix(4, 32, base_filters=8, num_labels=num_labels, style_dim=6, norm="instance")
    names = ["mask"] + (["label"] if num_labels else []) + ["reference"]
    assert model.generator.input_names == names and model.reference_conditioned
    model.compile()
    model.build_optimizers()
    same = model(b)
    assert np.array_equal(model(dict(b, reference=b["image"])).numpy(), same.numpy())  # default: the image itself
    other = model(dict(b, reference=1.0 - b["image"])).numpy()
    assert np.abs(other - same.numpy()).max() > 1e-4

    moved = model.training_reference(b["image"]).numpy()
    assert np.array_equal(moved, model.training_reference(b["image"]).numpy())  # deterministic per step
    image = b["image"].numpy()
    for m, x in zip(moved, image):  # the same pixels, moved
        assert np.array_equal(np.sort(m.ravel()), np.sort(x.ravel()))
    assert not np.array_equal(moved, image)
    seed = tf.constant([model.reference_seed, 0], tf.int64)
    assert np.array_equal(moved, P.moved_reference(b["image"], seed).numpy())
    held_out = model.evaluation_reference(b["image"]).numpy()  # validation: moved too, by one fixed draw
    for m, x in zip(held_out, image):
        assert np.array_equal(np.sort(m.ravel()), np.sort(x.ravel()))
    assert not np.array_equal(held_out, image)
    used = []
    evaluation_reference = model.evaluation_reference
    model.evaluation_reference = lambda im: used.append(1) or evaluation_reference(im)
    model.test_step(b)
    assert used  # test_step renders from the moved image, not the image itself
    del model.evaluation_reference

    encoder = [v for v in model.generator.trainable_variables if "g_ref_" in v.name]
    assert len(encoder) == 2 * 3 + 2  # at 32 px: 3 convolutions (kernel, bias), then the dense layer
    before = [v.numpy() for v in encoder]
    model.train_step(b)
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, encoder))
    assert not np.array_equal(model.training_reference(b["image"]).numpy(), moved)  # the next step's draw
    assert np.array_equal(model.evaluation_reference(b["image"]).numpy(), held_out)  # the same at every step


def test_reference_image_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="whole number"):
        P.build_generator(4, 32, style_dim=-1)
    with pytest.raises(ValueError, match="whole number"):
        P.build_generator(4, 32, style_dim=True)
    with pytest.raises(ValueError, match="for the U-Net generator"):
        P.build_generator(4, 32, arch="spade", style_dim=4)
    with pytest.raises(ValueError, match="label_conditioning='film'"):
        P.build_generator(4, 32, num_labels=3, label_conditioning="bottleneck", style_dim=4)
    g = P.build_generator(4, 32, base_filters=8, style_dim=4)
    model = P.Pix2Pix(g, P.build_discriminator(4, 32, base_filters=8))
    with pytest.raises(ValueError, match="takes a reference image"):
        model(tf.zeros((1, 32, 32), tf.int32))
    with pytest.raises(ValueError, match="no 'reference' or 'image'"):
        model({"mask": tf.zeros((1, 32, 32), tf.int32)})
