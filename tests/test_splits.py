"""Honest splits: a layout's test (or other non-train) split never reaches train or val."""
import json
import os

import numpy as np
import pytest

from synthseg_tf.data import Dataset, Sample, SpecError, load

from conftest import save

CLASSES = ["a", "b", "c"]


def _ids(part):
    return {s.source_id for s in part.samples}


def _seg_dataset(splits):
    """A segmentation Dataset (files never read) with ``splits = {name: count}``."""
    from synthseg_tf.data.classes import ClassTable

    samples = [Sample(image=f"{sp}/{i}.png", mask=f"{sp}annot/{i}.png", source_id=f"{sp}/{i}", split=sp)
               for sp, n in splits.items() for i in range(n)]
    return Dataset(spec="fake", task="segmentation", samples=samples, classes=ClassTable(names=["x", "y"]))


def test_train_val_uses_train_and_val_splits():
    tr, va = _seg_dataset({"train": 6, "val": 3, "test": 4}).train_val()
    assert {s.split for s in tr.samples} == {"train"} and len(tr) == 6
    assert {s.split for s in va.samples} == {"val"} and len(va) == 3


def test_train_val_carves_val_from_train_only():
    """ISIC 2016 style: train + test. Val is a holdout of train; test is in neither part."""
    ds = _seg_dataset({"train": 40, "test": 30})
    tr, va = ds.train_val(0.25)
    assert {s.split for s in tr.samples + va.samples} == {"train"}
    assert len(tr) + len(va) == 40 and len(va) > 0 and not _ids(tr) & _ids(va)
    # the same hash rule as without split labels, applied to the train samples
    unlabelled = Dataset(spec="u", task="segmentation", classes=ds.classes,
                         samples=[Sample(image=s.image, mask=s.mask, source_id=s.source_id)
                                  for s in ds.samples if s.split == "train"])
    assert _ids(unlabelled.train_val(0.25)[1]) == _ids(va)


def test_train_val_without_labels_or_with_one_chosen_split():
    ds = _seg_dataset({})
    ds.samples = [Sample(image=f"{i}.png", mask=f"{i}m.png", source_id=str(i)) for i in range(30)]
    tr, va = ds.train_val(0.3)
    assert len(tr) + len(va) == 30 and len(va) > 0
    only_val = _seg_dataset({"val": 30})  # e.g. a spec restricted with split=val: the caller chose it
    tr, va = only_val.train_val(0.3)
    assert len(tr) + len(va) == 30


def test_train_val_refuses_to_pool_evaluation_splits():
    with pytest.raises(ValueError, match="no 'train' split"):
        _seg_dataset({"val": 5, "test": 5}).train_val()
    with pytest.raises(ValueError, match="too few"):
        _seg_dataset({"train": 1, "test": 5}).train_val()


def test_isic_train_test_layout_keeps_test_out(tmp_path):
    rng = np.random.default_rng(0)
    for part, n in (("Training", 12), ("Test", 5)):
        for i in range(n):
            save(tmp_path / f"ISBI2016_ISIC_Part1_{part}_Data" / f"ISIC_{part}{i}.jpg",
                 rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
            save(tmp_path / f"ISBI2016_ISIC_Part1_{part}_GroundTruth" / f"ISIC_{part}{i}_Segmentation.png",
                 np.zeros((8, 8), np.uint8))
    ds = load(f"isic2016:{tmp_path}")
    assert ds.splits == ["test", "train"]
    tr, va = ds.train_val(0.3)
    assert len(tr) + len(va) == 12 and len(va) > 0
    assert not any("Test" in s.source_id for s in tr.samples + va.samples)


# --------------------------------------------------------------------------- class folders
def _class_tree(root, layout, seed=0):
    """``layout = {split or None: per_class_count}``; files named after their split."""
    rng = np.random.default_rng(seed)
    for split, n in layout.items():
        for c in CLASSES:
            d = root / split / c if split else root / c
            for i in range(n):
                save(d / f"{split or 'all'}_{c}{i}.png", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
    return f"classfolders:{root}"


def test_classfolders_train_and_test_are_splits(tmp_path):
    ds = load(_class_tree(tmp_path, {"train": 3, "test": 2}))
    assert ds.splits == ["test", "train"] and ds.classes.names == CLASSES and len(ds) == 15
    assert all(s.source_id.startswith(f"{s.split}/") for s in ds.samples)


def test_classfolders_mixing_split_and_other_folders_is_refused(tmp_path):
    _class_tree(tmp_path, {"train": 1, "test": 1})
    save(tmp_path / "extra" / "x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(SpecError, match="mixes split folders.*extra"):
        load(f"classfolders:{tmp_path}")


def test_split_classification_train_test_folders(tmp_path):
    """The regression: a train/ + test/ dataset must be scored on its own test/ folder."""
    from synthseg_tf.training.classification import split_classification, split_sources

    ds = load(_class_tree(tmp_path, {"train": 10, "test": 4}))
    assert split_sources(ds) == {"train": "layout", "val": "carved_from_train", "test": "layout"}
    tr, va, te = split_classification(ds, (0.7, 0.15, 0.15), split_seed=0)
    test_folder = {s.source_id for s in ds.samples if s.split == "test"}
    assert _ids(te) == test_folder and all(os.path.basename(s.image).startswith("test_") for s in te.samples)
    assert not (_ids(tr) | _ids(va)) & test_folder
    assert {s.split for s in tr.samples + va.samples} == {"train"} and len(tr) + len(va) == 30
    # val: stratified 0.15 / 0.85 of each class's 10 train images -> 2 per class
    assert np.bincount([s.label for s in va.samples]).tolist() == [2, 2, 2]
    assert not _ids(tr) & _ids(va)
    # split_seed changes which train images are val, never the test set
    tr2, va2, te2 = split_classification(ds, (0.7, 0.15, 0.15), split_seed=1)
    assert _ids(te2) == test_folder and _ids(va2) != _ids(va)
    # train_fraction keeps part of train only
    tr3, va3, te3 = split_classification(ds, (0.7, 0.15, 0.15), split_seed=0, train_fraction=0.5, seed=3)
    assert _ids(tr3) < _ids(tr) and _ids(va3) == _ids(va) and _ids(te3) == test_folder


def test_split_classification_train_val_folders_and_train_only(tmp_path):
    from synthseg_tf.training.classification import split_classification, split_sources

    ds = load(_class_tree(tmp_path / "tv", {"train": 10, "val": 2}))
    assert split_sources(ds)["test"] == "carved_from_train"
    tr, va, te = split_classification(ds)
    assert {s.split for s in va.samples} == {"val"} and len(va) == 6
    assert {s.split for s in tr.samples + te.samples} == {"train"} and len(tr) + len(te) == 30
    assert not _ids(tr) & _ids(te) and len(te) > 0

    only = load(_class_tree(tmp_path / "t", {"train": 20}))
    assert split_sources(only) == {k: "carved_from_train" if k != "train" else "layout"
                                   for k in ("train", "val", "test")}
    tr, va, te = split_classification(only, (0.6, 0.2, 0.2))
    assert (len(tr), len(va), len(te)) == (36, 12, 12)

    no_train = load(_class_tree(tmp_path / "nt", {"val": 2, "test": 2}))
    with pytest.raises(ValueError, match="no 'train' split"):
        split_classification(no_train)


def test_train_classifier_records_split_source(tmp_path):
    from synthseg_tf.training.classification import train_classifier

    spec = _class_tree(tmp_path / "data", {"train": 6, "test": 2})
    out = tmp_path / "run"
    res = train_classifier(spec, str(out), image_size=16, batch_size=8, epochs=1, filters=(8,), dense_units=(8,),
                           export=False, verbose=0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["split_source"] == {"train": "layout", "val": "carved_from_train", "test": "layout"}
    splits = json.loads((out / "splits.json").read_text())
    assert sorted(splits["test"]) == sorted(f"test/{c}/test_{c}{i}" for c in CLASSES for i in range(2))
    assert not any(sid.startswith("test/") for sid in splits["train"] + splits["val"])
    assert res["metrics"]["test"]["num_samples"] == 6
