"""The TFX user module (pipeline/module_file.py) without a pipeline: ``preprocessing_fn`` under
tf.Transform's own Beam implementation on in-memory examples, and the Trainer's progress logger."""
import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
if REPO not in sys.path:  # a bare checkout: `pipeline` at the repository root
    sys.path.insert(0, REPO)

import synthseg_tf  # noqa: E402,F401  (environment settings before TensorFlow loads)

pytest.importorskip("tensorflow_transform")

SIZE = 32
VOID = 255


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _module():
    try:
        from synthseg_tf_tfx.pipeline import module_file  # the installed name (what TFX imports)
    except ImportError:  # a bare checkout that was never installed
        from pipeline import module_file
    return module_file


def test_preprocessing_fn_decodes_and_resizes_with_tft_beam(tmp_path):
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam

    from synthseg_tf.data.tfdata import resize_pair

    m = _module()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    mask = np.zeros((48, 40), np.uint8)
    mask[24:, :] = 1
    mask[:8, :8] = 2
    mask[40:, 30:] = VOID
    image2 = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    # The shapes SchemaGen(infer_feature_shape=True) gives the package's tf.Example features: [1].
    raw = [
        {m.IMAGE_KEY: [_png(image)], m.MASK_KEY: [_png(mask)], m.SYNTHETIC_KEY: [0]},
        {m.IMAGE_KEY: [_png(image2)], m.MASK_KEY: [b""], m.SYNTHETIC_KEY: [1]},  # no mask: all void
    ]
    metadata = tft.DatasetMetadata.from_feature_spec({
        m.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
        m.MASK_KEY: tf.io.FixedLenFeature([1], tf.string),
        m.SYNTHETIC_KEY: tf.io.FixedLenFeature([1], tf.int64),
    })

    def preprocessing_fn(inputs):
        return m.preprocessing_fn(inputs, custom_config={"image_size": [SIZE, SIZE], "num_classes": 3})

    with tft_beam.Context(temp_dir=str(tmp_path / "tft"), force_tf_compat_v1=False):
        (out, out_metadata), _ = (raw, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)

    spec = out_metadata.schema
    names = {f.name for f in spec.feature}
    assert names == {m.IMAGE_XF, m.MASK_XF, m.SYNTHETIC_XF}
    feature_spec = tft.tf_metadata.schema_utils.schema_as_feature_spec(spec).feature_spec
    assert feature_spec[m.IMAGE_XF] == tf.io.FixedLenFeature([SIZE, SIZE, 3], tf.float32)
    assert feature_spec[m.MASK_XF] == tf.io.FixedLenFeature([SIZE, SIZE], tf.int64)
    assert feature_spec[m.SYNTHETIC_XF] == tf.io.FixedLenFeature([], tf.int64)

    assert len(out) == 2
    first, second = out
    img = np.asarray(first[m.IMAGE_XF], np.float32).reshape(SIZE, SIZE, 3)
    expected_img, _ = resize_pair(tf.constant(image), None, (SIZE, SIZE))  # the library's own resize
    np.testing.assert_allclose(img, expected_img.numpy(), atol=1e-5)
    assert 0.0 <= img.min() and img.max() <= 1.0

    msk = np.asarray(first[m.MASK_XF], np.int64).reshape(SIZE, SIZE)
    expected_mask = tf.image.resize(mask[..., None], (SIZE, SIZE), method="nearest")[..., 0].numpy()
    np.testing.assert_array_equal(msk, expected_mask.astype(np.int64))
    assert set(np.unique(msk)) == {0, 1, 2, VOID}  # nearest: no interpolated ids

    np.testing.assert_allclose(np.asarray(second[m.IMAGE_XF], np.float32).reshape(SIZE, SIZE, 3),
                               image2.astype(np.float32) / 255.0, atol=1e-6)  # already 32x32: unchanged
    assert np.all(np.asarray(second[m.MASK_XF]).reshape(SIZE, SIZE) == VOID)
    assert int(np.asarray(first[m.SYNTHETIC_XF]).reshape(())) == 0
    assert int(np.asarray(second[m.SYNTHETIC_XF]).reshape(())) == 1


def test_progress_logger_reports_steps_losses_and_throughput():
    import tensorflow as tf

    m = _module()
    lines = []
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x = np.zeros((12, 4), np.float32)
    y = np.ones((12, 1), np.float32)
    logger = m.ProgressLogger(every=2, total_steps=6, epochs=2, batch_size=4, log=lines.append)
    model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), callbacks=[logger], verbose=0)

    steps = [ln for ln in lines if " step " in ln]
    assert [ln.split()[2] for ln in steps] == ["2/6", "4/6", "6/6"]
    assert "(epoch 1/2)" in steps[0] and "(epoch 2/2)" in steps[-1]
    for ln in steps:
        assert ln.startswith("Trainer: step ") and "loss=" in ln and "mae=" in ln and ln.endswith("images/s")
        assert float(ln.split()[-2]) > 0
    epochs = [ln for ln in lines if " epoch " in ln and "done" in ln]
    assert len(epochs) == 2 and "validation loss=" in epochs[0]
    assert lines[0].startswith("Trainer: training 6 steps in 2 epoch(s), batch 4")
