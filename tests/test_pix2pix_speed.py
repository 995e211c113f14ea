"""The fast training path of Pix2Pix (fused upsample-conv generator twin) computes the plain path's maths."""
import numpy as np
import pytest
import tensorflow as tf

from synthseg_tf.models import pix2pix as p2p
from synthseg_tf.models.pix2pix import FusedUpsampleConv, build_pix2pix, fused_generator

SIZE, BATCH, CLASSES = 32, 4, 5


def _batch(seed=0, labels=None):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, CLASSES, (BATCH, SIZE, SIZE)).astype(np.int32)
    mask[0, :3] = 255  # some void pixels
    data = {"image": tf.constant(rng.random((BATCH, SIZE, SIZE, 3), dtype=np.float32)), "mask": tf.constant(mask)}
    if labels:
        data["label"] = tf.constant(rng.integers(0, labels, (BATCH,)).astype(np.int32))
    return data


def _model(fused, **kw):
    tf.keras.utils.set_random_seed(1)
    m = build_pix2pix(CLASSES, SIZE, base_filters=8, **kw)
    if not fused:
        m = p2p.Pix2Pix(m.generator, m.discriminator, fused_upsample=False,
                        diffaugment=m.diffaugment, ema_decay=m.ema_decay,
                        augment_seed=getattr(m, "augment_seed", None))
    # SGD: updated weights = weights - lr * gradients, so they compare the gradients themselves (Adam's
    # first step, lr * g / (|g| + eps), turns float noise in gradients that should be 0 into +-lr).
    m.compile(tf.keras.optimizers.SGD(1.0), tf.keras.optimizers.SGD(1.0))
    return m


@pytest.fixture
def fuse_everything(monkeypatch):
    """Fuse every pair, even tiny ones (the default skips small inputs as not worth it)."""
    monkeypatch.setattr(p2p, "FUSE_MIN_PIXELS", 1)


@pytest.mark.parametrize("min_pixels", [1, None])
def test_fused_generator_same_output_and_variables(monkeypatch, min_pixels):
    if min_pixels is not None:
        monkeypatch.setattr(p2p, "FUSE_MIN_PIXELS", min_pixels)
    tf.keras.utils.set_random_seed(0)
    g = p2p.build_generator(CLASSES, SIZE, base_filters=8, norm="batch")
    twin = fused_generator(g)
    assert twin is not None
    assert [id(v) for v in twin.variables] == [id(v) for v in g.variables]  # shared, not copied
    fused = [l for l in twin.layers if isinstance(l, FusedUpsampleConv)]
    assert len(fused) == len([l for l in g.layers if isinstance(l, tf.keras.layers.UpSampling2D)]) - 1  # not rgb
    mask = _batch()["mask"]
    np.testing.assert_allclose(twin(mask, training=False).numpy(), g(mask, training=False).numpy(), atol=1e-5)


def test_no_twin_for_transposed_convolutions():
    g = p2p.build_generator(CLASSES, SIZE, base_filters=8, upsample="transpose")
    assert fused_generator(g) is None


@pytest.mark.parametrize("kw", [dict(norm="batch"),
                                dict(norm="instance", num_labels=3, diffaugment="color,translation",
                                     ema_decay=0.9)])
def test_fast_train_step_matches_plain(fuse_everything, kw):
    fast, plain = _model(True, **kw), _model(False, **kw)
    assert fast._train_generator is not None and plain._train_generator is None
    assert len(fast.weights) == len(plain.weights)
    assert set(fast._trackable_children()) == set(plain._trackable_children())  # twin not in checkpoints
    for a, b in zip(fast.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    initial = [v.numpy() for v in plain.generator.weights + plain.discriminator.weights]
    if plain.ema_generator is not None:
        initial += [v.numpy() for v in plain.ema_generator.weights]
    data = _batch(labels=kw.get("num_labels"))
    logs_fast = tf.function(fast.train_step)(data)
    logs_plain = tf.function(plain.train_step)(data)
    assert set(logs_fast) == set(logs_plain) == {"g_loss", "g_gan", "g_l1", "d_loss"}
    for k in logs_plain:
        np.testing.assert_allclose(float(logs_fast[k]), float(logs_plain[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    # updated weights (and batch-norm statistics, EMA copies): equal to float32 rounding
    fast_w = fast.generator.weights + fast.discriminator.weights
    plain_w = plain.generator.weights + plain.discriminator.weights
    if fast.ema_generator is not None:
        fast_w, plain_w = fast_w + fast.ema_generator.weights, plain_w + plain.ema_generator.weights
    moved = 0.0
    for v_fast, v_plain, v0 in zip(fast_w, plain_w, initial):
        np.testing.assert_allclose(v_fast.numpy(), v_plain.numpy(), rtol=1e-4, atol=1e-5, err_msg=v_fast.name)
        if v_fast.dtype.is_floating:
            moved = max(moved, float(np.max(np.abs(v_plain.numpy() - v0))))
    assert moved > 1e-3  # the step did move the weights
