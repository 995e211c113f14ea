"""TFRecord round trip and the tf.data pipeline: shapes, joint augmentation, determinism."""
import numpy as np
import pytest
import tensorflow as tf

from synthseg_tf.data import load, make_dataset, write_tfrecords
from synthseg_tf.data.tfrecord import iter_examples, read_metadata

from conftest import save


@pytest.fixture
def colour_coded(tmp_path):
    """Images whose colour encodes the class: any augmentation must keep them aligned."""
    rng = np.random.default_rng(0)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    for i in range(8):
        m = np.zeros((40, 48), np.uint8)
        m[:, rng.integers(8, 40):] = 1
        m[rng.integers(5, 30):, :rng.integers(5, 20)] = 2
        save(tmp_path / "im" / f"{i}.png", colours[m])
        save(tmp_path / "ms" / f"{i}.png", m)
    return load(f"pairs:{tmp_path}/im:{tmp_path}/ms")


def test_tfrecord_roundtrip(colour_coded, tmp_path):
    meta = write_tfrecords(colour_coded, str(tmp_path / "rec"), shards=3)
    assert meta["count"] == 8 and meta["shards"] == [3, 3, 2]
    assert read_metadata(str(tmp_path / "rec"))["task"] == "segmentation"
    exs = sorted(iter_examples(str(tmp_path / "rec")), key=lambda e: e["source_id"])
    img, mask = colour_coded.read(colour_coded.samples[0])
    assert np.array_equal(exs[0]["image"], img) and np.array_equal(exs[0]["mask"], mask)
    assert exs[0]["synthetic"] is False and exs[0]["label"] == -1


@pytest.mark.parametrize("from_records", [False, True])
def test_pipeline_shapes_and_alignment(colour_coded, tmp_path, from_records):
    src = colour_coded
    if from_records:
        write_tfrecords(colour_coded, str(tmp_path / "rec"), shards=2)
        src = str(tmp_path / "rec")
    ds = make_dataset(src, image_size=(32, 32), batch_size=4, augment=True, seed=1)
    batch = next(iter(ds))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == tf.float32
    assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == tf.uint8
    img, mask = batch["image"].numpy(), batch["mask"].numpy()
    assert set(np.unique(mask)) <= {0, 1, 2}  # nearest neighbour: no invented ids
    # Away from borders (bilinear blur, jitter), the brightest channel still equals the mask id.
    inner = np.ones_like(mask, bool)
    for k in range(3):
        m = mask == k
        er = tf.nn.erosion2d(tf.constant(m[..., None], tf.float32), tf.zeros((3, 3, 1)), [1] * 4, "SAME",
                             "NHWC", [1] * 4).numpy()[..., 0] > 0
        inner &= ~(m & ~er)
    agree = (img.argmax(-1) == mask)[inner].mean()
    assert agree > 0.97


def test_pipeline_deterministic_for_seed(colour_coded):
    def first(seed):
        return next(iter(make_dataset(colour_coded, image_size=24, batch_size=8, augment=True, seed=seed)))

    a, b, c = first(3), first(3), first(4)
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    assert not np.array_equal(a["image"].numpy(), c["image"].numpy())


def test_classification_pipeline(classfolders_dir):
    ds = make_dataset(f"classfolders:{classfolders_dir}", image_size=16, batch_size=9, shuffle=False)
    batch = next(iter(ds))
    assert "mask" not in batch and batch["image"].shape == (9, 16, 16, 3)
    assert batch["label"].numpy().tolist() == [0] * 4 + [1] * 3 + [2] * 2
