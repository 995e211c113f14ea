"""Dataset specs and layouts: pairs (remapped values, palettes, 16-bit), CamVid, Cityscapes, ISIC, class folders."""
import json
import os

import numpy as np
import pytest

from synthseg_tf.data import IGNORE_ID, ClassTable, SpecError, cityscapes_table, load, parse_spec, validate

from conftest import camvid_dir, save, scene


def test_parse_spec_options():
    assert parse_spec("pairs:a:b?void=255&split=train") == ("pairs", ["a", "b"], {"void": "255", "split": "train"})
    with pytest.raises(SpecError, match="unknown dataset kind"):
        parse_spec("nope:x")


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load(f"camvid:{tmp_path}/absent")


def test_pairs_remaps_sparse_values_to_contiguous_ids(pairs_dir):
    ds = load(f"pairs:{pairs_dir}/images:{pairs_dir}/masks")
    assert len(ds) == 6 and ds.classes.source_values == [0, 128, 255]
    assert ds.classes.names == ["class_0", "class_128", "class_255"]
    img, mask = ds.read(ds.samples[0])
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2} and (mask[-1] == 2).all()  # 255 -> id 2


def test_pairs_void_option_maps_to_ignore(pairs_dir):
    ds = load(f"pairs:{pairs_dir}/images:{pairs_dir}/masks?void=128")
    assert ds.classes.names == ["class_0", "class_255"]
    _, mask = ds.read(ds.samples[0])
    assert IGNORE_ID in np.unique(mask)


def test_pairs_rgb_masks_with_palette(tmp_path):
    rng = np.random.default_rng(2)
    colors = [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    for i in range(3):
        _, m = scene(rng)
        rgb = np.array(colors, dtype=np.uint8)[m]
        save(tmp_path / "im" / f"{i}.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
        save(tmp_path / "ms" / f"{i}.png", rgb)
    pal = tmp_path / "palette.txt"
    pal.write_text("0 0 0 background\n200 10 10 car\n10 200 10 tree\n")
    ds = load(f"pairs:{tmp_path}/im:{tmp_path}/ms?palette={pal}")
    assert ds.classes.names == ["background", "car", "tree"]
    _, mask = ds.read(ds.samples[0])
    assert set(np.unique(mask)) <= {0, 1, 2}
    # Without a palette the colours are found and become classes too.
    auto = load(f"pairs:{tmp_path}/im:{tmp_path}/ms")
    assert auto.num_classes == 3 and auto.classes.rgb_source


def test_pairs_converts_grayscale_rgba_and_16bit(tmp_path):
    rng = np.random.default_rng(3)
    img16 = (rng.integers(0, 65535, (16, 16))).astype(np.uint16)
    save(tmp_path / "im" / "a.png", img16)  # I;16 photo
    save(tmp_path / "im" / "b.png", rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), mode="RGBA")
    save(tmp_path / "im" / "c.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))  # grayscale
    m16 = np.zeros((16, 16), np.uint16)
    m16[8:] = 1000  # sparse 16-bit ids
    for n in "abc":
        save(tmp_path / "ms" / f"{n}.png", m16)
    ds = load(f"pairs:{tmp_path}/im:{tmp_path}/ms")
    assert ds.classes.source_values == [0, 1000]
    rep = validate(ds)
    assert rep.ok, rep.bad
    assert any("16" in k for k in rep.conversions) and any("RGBA" in k for k in rep.conversions)
    for s in ds.samples:
        img, mask = ds.read(s)
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}


def test_pairs_uses_classes_json_and_flags_unknown_values(tmp_path):
    rng = np.random.default_rng(4)
    for i in range(2):
        img, m = scene(rng)
        save(tmp_path / "im" / f"{i}.png", img)
        save(tmp_path / "ms" / f"{i}.png", m)
    m = np.full((24, 32), 7, np.uint8)
    save(tmp_path / "ms" / "2.png", m)
    save(tmp_path / "im" / "2.png", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    ClassTable(names=["a", "b", "c"]).save(str(tmp_path / "ms"))
    ds = load(f"pairs:{tmp_path}/im:{tmp_path}/ms")
    assert ds.classes.names == ["a", "b", "c"]
    rep = validate(ds)
    assert [p for p, _ in rep.bad] == [str(tmp_path / "ms" / "2.png")]
    assert "outside the class table: 7" in rep.bad[0][1]


def test_camvid_layout(tmp_path):
    rng = np.random.default_rng(5)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            img, m = scene(rng, values=(0, 3, 11))
            save(tmp_path / split / f"f{i}.png", img)
            save(tmp_path / f"{split}annot" / f"f{i}.png", m)
    ds = load(f"camvid:{tmp_path}")
    assert ds.num_classes == 11 and ds.splits == ["train", "val"]
    _, mask = ds.read(ds.samples[0])
    assert set(np.unique(mask)) == {0, 3, IGNORE_ID}
    assert len(load(f"camvid:{tmp_path}?split=val")) == 2
    tr, va = ds.train_val()
    assert len(tr) == 3 and len(va) == 2


def test_cityscapes_tables_from_official_labels():
    t19 = cityscapes_table("19")
    assert t19.num_classes == 19 and t19.names[0] == "road" and t19.names[-1] == "bicycle"
    assert t19.source_values[0] == 7  # road's label id
    t30 = cityscapes_table("30")
    assert t30.num_classes == 30 and "parking" in t30.names and "unlabeled" not in t30.names
    lut = t19.lut()
    assert lut[7] == 0 and lut[0] == IGNORE_ID and lut[9] == IGNORE_ID  # 9 = parking: ignored in the 19


def test_cityscapes_layout_fake_tree(tmp_path):
    rng = np.random.default_rng(6)
    for split, city, frames in (("train", "aachen", 2), ("val", "lindau", 1)):
        for f in range(frames):
            key = f"{city}_000000_00001{f}"
            save(tmp_path / "leftImg8bit" / split / city / f"{key}_leftImg8bit.png",
                 rng.integers(0, 255, (16, 32, 3), dtype=np.uint8))
            m = np.full((16, 32), 7, np.uint8)  # road
            m[:4] = 23  # sky
            m[4:6] = 0  # unlabeled
            m[6:8] = 9  # parking (ignored in 19, a class in 30)
            save(tmp_path / "gtFine" / split / city / f"{key}_gtFine_labelIds.png", m)
            save(tmp_path / "gtFine" / split / city / f"{key}_gtFine_color.png", rng.integers(0, 255, (16, 32, 3), dtype=np.uint8))
    save(tmp_path / "leftImg8bit" / "train" / "aachen" / "orphan_000000_000000_leftImg8bit.png",
         np.zeros((16, 32, 3), np.uint8))
    ds = load(f"cityscapes:{tmp_path}")
    assert len(ds) == 3 and ds.splits == ["train", "val"]
    assert any("orphan" in p for p, _ in ds.problems)
    _, mask = ds.read(ds.samples[0])
    t = ds.classes
    assert mask[0, 0] == t.index("sky") and mask[-1, 0] == t.index("road")
    assert mask[5, 0] == IGNORE_ID and mask[7, 0] == IGNORE_ID
    ds30 = load(f"cityscapes:{tmp_path}?classes=30")
    _, m30 = ds30.read(ds30.samples[0])
    assert m30[7, 0] == ds30.classes.index("parking")


def test_isic2016_layout(tmp_path):
    rng = np.random.default_rng(7)
    d = tmp_path / "ISBI2016_ISIC_Part1_Training_Data"
    g = tmp_path / "ISBI2016_ISIC_Part1_Training_GroundTruth"
    for i in range(3):
        save(d / f"ISIC_000000{i}.jpg", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
        m = np.zeros((20, 24), np.uint8)
        m[5:15, 5:15] = 255
        save(g / f"ISIC_000000{i}_Segmentation.png", m)
    ds = load(f"isic2016:{tmp_path}")
    assert len(ds) == 3 and ds.classes.names == ["background", "lesion"] and ds.splits == ["train"]
    _, mask = ds.read(ds.samples[0])
    assert mask[10, 10] == 1 and mask[0, 0] == 0


def test_classfolders(classfolders_dir):
    ds = load(f"classfolders:{classfolders_dir}")
    assert ds.task == "classification" and ds.classes.names == ["cat", "dog", "fox"]
    assert sorted(s.label for s in ds.samples) == [0] * 4 + [1] * 3 + [2] * 2
    rep = validate(ds)
    assert rep.ok and list(rep.label_counts) == [4, 3, 2]


def test_classfolders_with_split_folders(tmp_path):
    rng = np.random.default_rng(8)
    for split in ("train", "val"):
        for c in ("a", "b"):
            save(tmp_path / split / c / "x.png", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
    ds = load(f"classfolders:{tmp_path}")
    assert ds.splits == ["train", "val"] and ds.classes.names == ["a", "b"] and len(ds) == 4


def test_holdout_split_is_stable(pairs_dir):
    ds = load(f"pairs:{pairs_dir}/images:{pairs_dir}/masks")
    tr, va = ds.train_val(0.34)
    tr2, va2 = ds.select(list(reversed(range(len(ds))))).train_val(0.34)
    assert {s.source_id for s in va.samples} == {s.source_id for s in va2.samples}
    assert len(tr) + len(va) == len(ds)


def test_class_table_roundtrip(tmp_path):
    t = ClassTable(names=["x", "y"], source_values=[(1, 2, 3), (4, 5, 6)], void_values=[(0, 0, 0)])
    p = t.save(str(tmp_path))
    t2 = ClassTable.load(p)
    assert t2.to_dict() == t.to_dict()
    rgb = np.array([[[1, 2, 3], [0, 0, 0], [9, 9, 9]]], np.uint8)
    assert t2.map_values(rgb).tolist() == [[0, IGNORE_ID, -1]]


@pytest.mark.integration
def test_camvid_real_data():
    root = camvid_dir()
    ds = load(f"camvid:{root}")
    assert ds.num_classes == 11 and len(ds.subset("train")) == 367 and len(ds.subset("val")) == 101
    rep = validate(ds)
    assert rep.ok, rep.bad[:3]
    freq = rep.pixel_counts / rep.pixel_counts.sum()
    assert freq[ds.classes.index("road")] > 0.2 and freq[ds.classes.index("bicyclist")] < 0.02
