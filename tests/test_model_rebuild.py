"""Keras SavedModels rebuilt from their own config (models/loading.rebuild_keras_model): the fast
path of load_keras_model must give the saved weights and function exactly, and must step aside
(None) for what it cannot rebuild, leaving the full loader and its errors in charge."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


def _inputs(model, rng):
    mask = rng.integers(0, 3, (2, 32, 32)).astype(np.int32)
    return [mask, np.array([0, 3], np.int32)] if len(model.inputs) > 1 else mask


@pytest.mark.parametrize("norm,num_labels,conditioning,arch", [("instance", None, None, "unet"),
                                                              ("batch", 5, "film", "unet"),
                                                              ("instance", 5, None, "spade")])
def test_rebuilt_generator_equals_the_full_load(tmp_path, monkeypatch, norm, num_labels, conditioning, arch):
    from synthseg_tf.models.loading import load_keras_model, rebuild_keras_model
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    gen = build_generator(3, (32, 32), base_filters=8, norm=norm, num_labels=num_labels,
                          label_conditioning=conditioning, arch=arch)
    rng = np.random.default_rng(0)
    for v in gen.variables:  # weights and batch-norm statistics unlike any initial value
        v.assign(rng.normal(0.0, 0.1, v.shape).astype(v.dtype.as_numpy_dtype))
    path = str(tmp_path / "generator")
    save_generator(gen, path)

    rebuilt = rebuild_keras_model(path)
    assert rebuilt is not None
    full = tf.keras.models.load_model(path, compile=False)
    assert [v.name for v in rebuilt.variables] == [v.name for v in full.variables]
    for a, b, c in zip(rebuilt.variables, full.variables, gen.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(a.numpy(), c.numpy())
    x = _inputs(gen, rng)
    want = gen(x, training=False).numpy()
    np.testing.assert_array_equal(rebuilt(x, training=False).numpy(), want)
    np.testing.assert_array_equal(full(x, training=False).numpy(), want)

    def no_full_load(*a, **k):
        raise AssertionError("the full SavedModel loader ran")

    monkeypatch.setattr(tf.keras.models, "load_model", no_full_load)
    loaded = load_keras_model(path)  # the fast path alone
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), want)


def test_subclassed_model_falls_back_to_the_full_loader(tmp_path):
    from synthseg_tf.models.loading import load_keras_model, rebuild_keras_model

    class Doubler(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tf.keras.layers.Dense(2)

        def call(self, x):
            return 2.0 * self.dense(x)

    m = Doubler()
    x = np.ones((1, 3), np.float32)
    want = m(x).numpy()
    path = str(tmp_path / "sub")
    m.save(path, save_format="tf")
    assert rebuild_keras_model(path) is None
    np.testing.assert_allclose(load_keras_model(path)(x).numpy(), want, rtol=1e-6)


def test_lambda_layer_is_not_rebuilt_from_its_bytecode(tmp_path):
    """Safe mode refuses a Lambda's Python bytecode: the rebuild steps aside and the full loader
    revives the layer from its traced graph instead (no Python code of the file runs)."""
    from synthseg_tf.models.loading import load_keras_model, rebuild_keras_model

    inp = tf.keras.Input((3,))
    model = tf.keras.Model(inp, tf.keras.layers.Lambda(lambda t: t * 3.0)(inp))
    path = str(tmp_path / "lam")
    model.save(path, save_format="tf")
    assert rebuild_keras_model(path) is None
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_allclose(load_keras_model(path)(x).numpy(), 3.0 * x)


def test_missing_or_extra_weights_are_not_rebuilt(tmp_path):
    """A config that does not match the saved variables (here: one more layer than was saved) is
    not silently half-restored: the rebuild steps aside."""
    from synthseg_tf.models.loading import rebuild_keras_model

    inp = tf.keras.Input((3,))
    small = tf.keras.Model(inp, tf.keras.layers.Dense(2, name="a")(inp))
    path = str(tmp_path / "m")
    small.save(path, save_format="tf")
    assert rebuild_keras_model(path) is not None

    bigger = tf.keras.Model(inp, tf.keras.layers.Dense(2, name="b")(tf.keras.layers.Dense(2, name="a")(inp)))
    other = str(tmp_path / "other")
    bigger.save(other, save_format="tf")
    import shutil

    shutil.rmtree(str(tmp_path / "m" / "variables"))
    shutil.copytree(str(tmp_path / "other" / "variables"), str(tmp_path / "m" / "variables"))
    assert rebuild_keras_model(path) is None  # saved values left over (layer b): refused
