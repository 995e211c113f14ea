"""The classification path on real photos: the shared Sign Language Digits folder (2,062 photos
of hands, 10 class folders; skipped where it is absent) read as ``classfolders:``, split as an
experiment splits it, and turned into the class-conditional GAN's (edge map, photo, class) batches."""
import numpy as np
import pytest

from conftest import sign_digits_dir

pytestmark = pytest.mark.integration


def test_sign_digits_reads_validates_and_splits_without_leaks():
    from synthseg_tf.data import load
    from synthseg_tf.data.validate import validate
    from synthseg_tf.training.classification import split_classification

    ds = load(f"classfolders:{sign_digits_dir()}")
    assert ds.task == "classification" and ds.classes.names == [str(d) for d in range(10)]
    assert len(ds) == 2062
    rep = validate(ds)
    assert rep.ok, rep.bad[:3]
    train, val, test = split_classification(ds, (0.7, 0.15, 0.15), split_seed=0)
    ids = [{s.source_id for s in part.samples} for part in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(map(len, ids)) == 2062
    for part, share in ((train, 0.7), (val, 0.15), (test, 0.15)):  # stratified: every class in every split
        counts = np.bincount([s.label for s in part.samples], minlength=10)
        assert counts.min() > 0 and abs(len(part) / 2062 - share) < 0.01
    sub = train.fraction(0.1, seed=0)
    assert 130 <= len(sub) <= 160 and {s.source_id for s in sub.samples} <= ids[0]


@pytest.mark.parametrize("conditioning", ["edges", "color-edges"])
def test_sign_digits_gan_batches_pair_each_photo_with_its_edge_map(conditioning):
    from synthseg_tf.data import load
    from synthseg_tf.data.conditioning import edge_map
    from synthseg_tf.training.gan_data import gan_datasets

    ds = load(f"classfolders:{sign_digits_dir()}")
    gd = gan_datasets(ds, 64, 8, seed=0, conditioning=conditioning, fraction=0.1)
    assert gd.num_labels == 10 and gd.conditioning == conditioning and 100 < gd.train_size < 200
    b = next(iter(gd.train))
    image, mask, label = b["image"].numpy(), b["mask"].numpy(), b["label"].numpy()
    assert image.shape == (8, 64, 64, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert set(np.unique(mask)) <= {0, 1} and label.min() >= 0 and label.max() <= 9
    density = mask.mean(axis=(1, 2))
    assert (density > 0.01).all() and (density < 0.5).all()  # a hand's outline, not empty, not noise
    for i in range(2):  # each (augmented) photo comes with the edge map of that very photo
        again = edge_map(np.round(image[i] * 255).astype(np.uint8), conditioning)
        assert (again == mask[i]).mean() > 0.97
