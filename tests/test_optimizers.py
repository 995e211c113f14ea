"""FusedAdam computes Keras Adam's update (dense: the fused kernel; sparse: Keras' own path) and
shares its checkpoints."""
import numpy as np
import pytest

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.models.optimizers import FusedAdam
from synthseg_tf.models.pix2pix import default_optimizers

SHAPES = [(3, 3, 4, 8), (8,), (257,)]


def _init():
    rng = np.random.default_rng(0)
    return [rng.normal(size=s).astype(np.float32) for s in SHAPES]


def _grads(step):
    rng = np.random.default_rng(100 + step)
    return [tf.constant(rng.normal(scale=10.0 ** rng.integers(-6, 2), size=s).astype(np.float32)) for s in SHAPES]


def _train(opt_cls, steps=12, strategy=None, **kw):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        variables = [tf.Variable(x) for x in _init()]
        opt = opt_cls(learning_rate=1e-2, beta_1=0.5, **kw)

    @tf.function
    def step(grads):
        strategy.run(lambda g: opt.apply_gradients(zip(g, variables)), args=(grads,))

    for t in range(steps):
        step(_grads(t))
    return variables, opt


def _numpy_adam(steps, lr=1e-2, b1=0.5, b2=0.999, eps=1e-7):
    """Adam's dense update in float32 with ``1 - b`` formed from float32 ``b`` (the kernel's rounding)."""
    f = np.float32
    one = f(1)
    b1, b2, lr, eps = f(b1), f(b2), f(lr), f(eps)
    xs, ms, vs = _init(), [np.zeros(s, f) for s in SHAPES], [np.zeros(s, f) for s in SHAPES]
    for t in range(steps):
        alpha = lr * np.sqrt(one - b2 ** f(t + 1)) / (one - b1 ** f(t + 1))
        for x, m, v, g in zip(xs, ms, vs, _grads(t)):
            g = g.numpy()
            m += (g - m) * (one - b1)
            v += (g * g - v) * (one - b2)
            x -= m * alpha / (np.sqrt(v) + eps)
    return xs, ms, vs


@pytest.mark.parametrize("kw", [{}, {"epsilon": 1e-3}])
def test_dense_update_is_adam(kw):
    got_vars, got = _train(FusedAdam, **kw)
    xs, ms, vs = _numpy_adam(12, **({"eps": kw["epsilon"]} if kw else {}))
    for a, b in zip(got_vars + got._momentums + got._velocities, xs + ms + vs):
        np.testing.assert_allclose(a.numpy(), b, rtol=2e-6, atol=1e-7)
    # Keras' Adam: the same update up to its double-precision 1 - beta_2 (1.3e-5 relative on v's rate)
    want_vars, want = _train(tf.keras.optimizers.Adam, **kw)
    assert int(got.iterations.numpy()) == int(want.iterations.numpy()) == 12
    for a, b in zip(got_vars + got._momentums + got._velocities, want_vars + want._momentums + want._velocities):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=3e-5, atol=1e-6)
    moved = max(np.abs(v.numpy() - x).max() for v, x in zip(got_vars, _init()))
    assert moved > 1e-2, "the updates did not move the variables; the comparison would be vacuous"


def test_amsgrad_and_sparse_gradients_keep_the_keras_path():
    _, want = _train(tf.keras.optimizers.Adam, amsgrad=True)
    got_vars, got = _train(FusedAdam, amsgrad=True)
    for a, b in zip(got._velocity_hats, want._velocity_hats):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=3e-5, atol=1e-6)

    def sparse(opt_cls):
        table = tf.Variable(np.arange(12, dtype=np.float32).reshape(6, 2))
        opt = opt_cls(learning_rate=0.1)
        for ids in ([0, 2], [2, 5], [1]):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.gather(table, ids) ** 2)
            grad = tape.gradient(loss, table)
            assert isinstance(grad, tf.IndexedSlices)
            opt.apply_gradients([(grad, table)])
        return table.numpy()

    np.testing.assert_allclose(sparse(FusedAdam), sparse(tf.keras.optimizers.Adam), rtol=1e-6)


def test_checkpoints_interchange_with_keras_adam(tmp_path):
    variables, adam = _train(tf.keras.optimizers.Adam, steps=3)
    path = tf.train.Checkpoint(v=variables, opt=adam).write(str(tmp_path / "ckpt"))
    fresh = [tf.Variable(np.zeros(s, np.float32)) for s in SHAPES]
    fused = FusedAdam(learning_rate=1e-2, beta_1=0.5)
    fused.build(fresh)
    tf.train.Checkpoint(v=fresh, opt=fused).read(path).assert_existing_objects_matched()
    assert int(fused.iterations.numpy()) == 3
    for a, b in zip(fused._momentums + fused._velocities + fresh, adam._momentums + adam._velocities + variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mirrored_strategy_update():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    want_vars, _ = _train(tf.keras.optimizers.Adam)
    got_vars, _ = _train(FusedAdam, strategy=strategy)
    for a, b in zip(got_vars, want_vars):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=3e-5, atol=1e-6)


def test_pix2pix_defaults_are_fused():
    g, d = default_optimizers()
    assert isinstance(g, FusedAdam) and isinstance(d, FusedAdam)
    assert (g.name, d.name) == ("g_adam", "d_adam")
    assert float(g.learning_rate.numpy()) == pytest.approx(2e-4) and float(g.beta_1) == 0.5
