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


@pytest.mark.parametrize("from_records,augment", [(False, True), (True, True), (False, "strong")])
def test_pipeline_shapes_and_alignment(colour_coded, tmp_path, from_records, augment):
    src = colour_coded
    if from_records:
        write_tfrecords(colour_coded, str(tmp_path / "rec"), shards=2)
        src = str(tmp_path / "rec")
    ds = make_dataset(src, image_size=(32, 32), batch_size=4, augment=augment, seed=1)
    batch = next(iter(ds))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == tf.float32
    assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == tf.uint8
    img, mask = batch["image"].numpy(), batch["mask"].numpy()
    # nearest neighbour: no invented ids; only "strong" (rotation) may add void from outside the frame
    assert set(np.unique(mask)) <= ({0, 1, 2, 255} if augment == "strong" else {0, 1, 2})
    # Away from borders (bilinear blur, jitter), the brightest channel still equals the mask id.
    inner = mask != 255
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


def _raw_elements(colour_coded, n=16, with_mask=True):
    from synthseg_tf.data.tfdata import read_files

    raw = read_files(colour_coded)
    if not with_mask:
        raw = raw.map(lambda el: {"image": el["image"], "label": el["label"]})
    return raw.repeat().take(n)


def _prepared(raw, augment, seed, size=(24, 28)):
    from synthseg_tf.data.tfdata import prepare

    return list(prepare(raw, size, augment=augment, seed=seed).as_numpy_iterator())


def test_strong_augmentation_is_seeded_valid_and_stronger(colour_coded):
    raw = _raw_elements(colour_coded)
    a, b, c = _prepared(raw, "strong", 7), _prepared(raw, "strong", 7), _prepared(raw, "strong", 8)
    std = _prepared(raw, "standard", 7)
    for el in a:
        assert el["image"].shape == (24, 28, 3) and el["image"].dtype == np.float32
        assert el["mask"].shape == (24, 28) and el["mask"].dtype == np.uint8
        assert 0.0 <= el["image"].min() and el["image"].max() <= 1.0
    for x, y in zip(a, b):  # the seed fixes the stream (parallel map included)
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["mask"], y["mask"])
    assert any(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))
    masks = np.stack([el["mask"] for el in a])
    assert set(np.unique(masks)) <= {0, 1, 2, 255}
    assert (masks == 255).any()  # rotated-in corners are void, never a class id
    assert not (np.stack([el["mask"] for el in std]) == 255).any()  # standard never rotates
    # "strong" is a different, wider transform than "standard" for the same seed
    assert all(not np.array_equal(x["image"], y["image"]) for x, y in zip(a, std))
    spread = lambda els: np.std([el["image"].mean() for el in els])  # noqa: E731  (brightness variety)
    assert spread(a) > spread(std)


def test_strong_augmentation_without_mask(colour_coded):
    raw = _raw_elements(colour_coded, n=4, with_mask=False)
    a, b = _prepared(raw, "strong", 1), _prepared(raw, "strong", 1)
    assert all("mask" not in el and el["image"].shape == (24, 28, 3) for el in a)
    assert all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, b))


def test_augment_option_is_checked(colour_coded):
    from synthseg_tf.data.tfdata import augment_level

    assert [augment_level(v) for v in (False, None, True, "standard", "STRONG", "none")] == \
        ["none", "none", "standard", "standard", "strong", "none"]
    with pytest.raises(ValueError, match="augment must be"):
        make_dataset(colour_coded, image_size=16, augment="heavy")


def test_stacked_batches_put_each_sources_rows_in_order():
    import tensorflow as tf

    from synthseg_tf.data.tfdata import stacked_batches

    a = tf.data.Dataset.range(100).map(lambda i: {"image": tf.fill([2], tf.cast(i, tf.float32)), "label": i,
                                                   "mask": i})
    b = tf.data.Dataset.range(1000, 1100).map(lambda i: {"image": tf.fill([2], tf.cast(i, tf.float32)), "label": i})
    batches = list(stacked_batches([a, b], [3, 1]).take(2).as_numpy_iterator())
    assert set(batches[0]) == {"image", "label"}  # the entries both have
    assert batches[0]["label"].tolist() == [0, 1, 2, 1000] and batches[1]["label"].tolist() == [3, 4, 5, 1001]
    assert batches[0]["image"].shape == (4, 2)
    assert len(list(stacked_batches([a.take(7), b], [3, 1]).as_numpy_iterator())) == 2  # only whole batches
    for datasets, rows in (([a, b], [3]), ([a, b], [3, 0]), ([], [])):
        with pytest.raises(ValueError):
            stacked_batches(datasets, rows)
