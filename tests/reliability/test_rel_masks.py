"""Fault injection, masks that are not clean label maps: stray pixels, interpolation blends and
JPEG noise never become classes silently; ``validate`` names the values and files and offers
the fix (``?snap=nearest|void``, ``?min_share=X``, ``?snap=none``), and the fix gives clean ids.
Values outside a class table that are not artefacts stay an error."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from synthseg_tf.cli import main
from synthseg_tf.data import IGNORE_ID, ClassTable, SpecError, load, validate
from synthseg_tf.data.artefacts import ValueStats, find_artefacts
from synthseg_tf.errors import EXIT_BAD_DATA, EXIT_OK


def save(path, arr, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def two_class(h=40, w=48, fg=255, bg=0):
    m = np.full((h, w), bg, np.uint8)
    m[10:30, 6:30] = fg
    return m


def write(root, masks, ext="png", **kw):
    rng = np.random.default_rng(0)
    for i, m in enumerate(masks):
        save(root / "im" / f"{i:02d}.png", rng.integers(0, 255, (*m.shape[:2], 3), dtype=np.uint8))
        save(root / "ms" / f"{i:02d}.{ext}", m, **kw)
    return f"pairs:{root}/im:{root}/ms"


def bilinear(m, size):
    return np.asarray(Image.fromarray(m).resize(size, Image.BILINEAR))


# ------------------------------------------------------------------ a stray pixel
def test_stray_pixel_does_not_become_a_class(tmp_path, capsys):
    masks = [two_class() for _ in range(30)]
    masks[4][2, 40] = 128  # one pixel of 128 in 30 x 1920 pixels of 0/255
    spec = write(tmp_path, masks)
    ds = load(spec)
    assert ds.classes.names == ["class_0", "class_255"]  # no class_128
    assert list(ds.artefacts) == [128] and "1 pixel(s)" in ds.artefacts[128]
    assert ds.artefact_files[128] == [str(tmp_path / "ms" / "04.png")]
    rep = validate(ds)
    assert [(os.path.basename(p), m.split(";")[0]) for p, m in rep.bad] == [
        ("04.png", "mask values outside the class table: 128")]
    assert "?snap=nearest" in rep.bad[0][1] and "min_share" in rep.bad[0][1]
    assert "1 mask value(s) look like interpolation artefacts and were not made classes: 128" in rep.format()
    assert main(["data", "validate", spec]) == EXIT_BAD_DATA
    err = capsys.readouterr().err
    assert f"{tmp_path}/ms/04.png: mask values outside the class table: 128" in err and "?snap=nearest" in err


def test_snap_nearest_void_and_none(tmp_path, capsys):
    masks = [two_class() for _ in range(30)]
    masks[4][2, 40] = 128  # inside the background
    masks[5][20, 29] = 128  # on the right edge of the foreground block
    spec = write(tmp_path, masks)
    ds = load(spec + "?snap=nearest")
    rep = validate(ds)
    assert rep.ok and ds.classes.names == ["class_0", "class_255"]
    assert sum(rep.conversions.values()) == 2 and "snapped" in next(iter(rep.conversions))
    assert ds.read(ds.samples[4])[1][2, 40] == 0  # all its neighbours are background
    assert ds.read(ds.samples[5])[1][20, 29] == 1  # 5 of its 8 neighbours are foreground
    assert main(["data", "validate", spec + "?snap=nearest"]) == EXIT_OK
    assert "snapped (?snap=nearest)" in capsys.readouterr().out
    dv = load(spec + "?snap=void")
    assert dv.read(dv.samples[4])[1][2, 40] == IGNORE_ID and validate(dv).ok
    keep = load(spec + "?snap=none")  # the user says every value is a class
    assert keep.classes.names == ["class_0", "class_128", "class_255"] and validate(keep).ok


def test_min_share_sets_the_threshold(tmp_path):
    masks = [two_class() for _ in range(10)]
    masks[0][0:2, 40:48] = 77  # a 16-pixel blob: 0.08% of 19200 pixels, not isolated, not a border blend
    spec = write(tmp_path, masks)
    assert "class_77" in load(spec).classes.names  # above the default share (0.01%): a class
    ds = load(spec + "?min_share=0.001")  # 0.1%: 77 is an artefact, snapped (min_share implies snap=nearest)
    assert ds.classes.names == ["class_0", "class_255"] and ds.options.snap == "nearest"
    assert "under min_share=0.001" in ds.artefacts[77]
    _, m = ds.read(ds.samples[0])
    assert (m[0:2, 40:48] == 0).all()
    assert load(spec + "?min_share=0.1%").artefacts.keys() == {77}  # percent form
    with pytest.raises(SpecError, match=r"min_share='2' must be a share of pixels in \[0, 1\)"):
        load(spec + "?min_share=2")


def test_interpolated_masks_are_flagged_and_snapped(tmp_path):
    base = two_class(40, 48)
    base[:, 40:] = 100
    masks = [bilinear(base, (61, 53)) for _ in range(4)]  # resized with bilinear interpolation
    spec = write(tmp_path, masks)
    ds = load(spec)
    assert ds.classes.names == ["class_0", "class_100", "class_255"]
    assert ds.artefacts and all("interpolation blend" in why or "pixel(s)" in why for why in ds.artefacts.values())
    rep = validate(ds)
    assert len(rep.bad) == 4 and all("probable artefacts" in m for _, m in rep.bad)
    snapped = load(spec + "?snap=nearest")
    rep = validate(snapped)
    assert rep.ok
    raw = masks[0]
    _, ids = snapped.read(snapped.samples[0])
    clean = np.isin(raw, [0, 100, 255])
    lut = {0: 0, 100: 1, 255: 2}
    assert all(ids[y, x] == lut[raw[y, x]] for y, x in zip(*np.nonzero(clean)))  # clean pixels untouched
    for y, x in zip(*np.nonzero(~clean)):  # each snapped pixel took a class of its neighbourhood
        hood = raw[max(0, y - 2):y + 3, max(0, x - 2):x + 3]
        assert ids[y, x] in {lut[v] for v in np.unique(hood) if v in lut}


def test_colour_masks_with_blended_edges(tmp_path):
    red, green = np.array([200, 0, 0], np.uint8), np.array([0, 200, 0], np.uint8)
    m = np.zeros((32, 40, 3), np.uint8)
    m[:] = red
    m[:, 20:] = green
    m[:, 20] = (red.astype(int) + green) // 2  # an anti-aliased seam (100, 100, 0)
    spec = write(tmp_path, [m.copy() for _ in range(3)])
    ds = load(spec)
    assert ds.classes.source_values == [(0, 200, 0), (200, 0, 0)]
    assert list(ds.artefacts) == [(100, 100, 0)]
    sn = load(spec + "?snap=nearest")
    _, ids = sn.read(sn.samples[0])
    assert set(np.unique(ids[:, 20])) <= {0, 1}


# ------------------------------------------------------------------ class tables
def test_explicit_table_values_outside_it(tmp_path):
    """With a classes.json, an unknown value covering a region is a real error even with snap;
    an anti-aliased edge is named as probable artefacts and snap fixes it."""
    masks = [two_class() for _ in range(4)]
    aa = bilinear(two_class(), (60, 50))  # resized with interpolation: values between 0 and 255 on the edges
    masks.append(aa)
    wrong = two_class()
    wrong[30:, :] = 7  # a whole band of an unknown class
    masks.append(wrong)
    spec = write(tmp_path, masks)
    (tmp_path / "ms" / "classes.json").write_text(json.dumps(
        {"classes": ["bg", "fg"], "source_values": [0, 255]}))
    rep = validate(load(spec))
    problems = {os.path.basename(p): m for p, m in rep.bad}
    assert set(problems) == {"04.png", "05.png"}
    assert "in this mask they look like artefacts" in problems["04.png"] and "?snap=nearest" in problems["04.png"]
    assert problems["05.png"] == "mask values outside the class table: 7"
    rep = validate(load(spec + "?snap=nearest"))
    problems = {os.path.basename(p): m for p, m in rep.bad}
    assert set(problems) == {"05.png"} and problems["05.png"].startswith("mask values outside the class table: 7")


def test_mask_ids_outside_the_camvid_table(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for i in range(2):
            m = rng.integers(0, 11, (20, 24)).astype(np.uint8)
            if split == "val" and i == 1:
                m[5:15, 5:15] = 40  # CamVid has ids 0..10 and void 11
            save(tmp_path / split / f"{i}.png", rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
            save(tmp_path / f"{split}annot" / f"{i}.png", m)
    assert main(["data", "validate", f"camvid:{tmp_path}"]) == EXIT_BAD_DATA
    assert f"{tmp_path}/valannot/1.png: mask values outside the class table: 40" in capsys.readouterr().err


# ------------------------------------------------------------------ JPEG masks
def test_jpeg_masks_are_refused_unless_opted_in(tmp_path):
    masks = []
    for i in range(6):
        m = np.zeros((64, 64), np.uint8)
        m[10:40, 5:50] = 255
        m[45:, :] = 128
        masks.append(m)
    spec = write(tmp_path, masks, ext="jpg", quality=85)
    with pytest.raises(SpecError, match=r"every mask in .*/ms is a JPEG file: JPEG mask refused: lossy compression"):
        load(spec)
    ds = load(spec + "?jpeg_masks=1")
    assert ds.classes.source_values == [0, 128, 255]  # the noise values are not classes
    rep = validate(ds)
    assert rep.ok, rep.bad[:2]
    share = rep.pixel_counts / rep.pixel_counts.sum()
    assert abs(share[2] - 30 * 45 / 4096) < 0.01 and abs(share[1] - 19 * 64 / 4096) < 0.03


def test_one_jpeg_mask_among_pngs_is_named(tmp_path):
    masks = [two_class() for _ in range(3)]
    spec = write(tmp_path, masks)
    save(tmp_path / "im" / "j.png", np.zeros((40, 48, 3), np.uint8))
    save(tmp_path / "ms" / "j.jpeg", two_class(), quality=90)
    rep = validate(load(spec))
    assert [os.path.basename(p) for p, _ in rep.bad] == ["j.jpeg"]
    assert rep.bad[0][1].startswith("JPEG mask refused: lossy compression adds values that are no class")
    assert "?jpeg_masks=1" in rep.bad[0][1]
    assert validate(load(spec + "?jpeg_masks=1")).ok


# ------------------------------------------------------------------ the detector itself
def test_detector_keeps_noisy_but_real_classes():
    """Random label maps (every pixel a class, no regions) are not mistaken for artefacts, nor
    are small compact regions; thin in-between lines and lone pixels are."""
    rng = np.random.default_rng(2)
    st = ValueStats.of_mask(rng.integers(0, 12, (64, 64)).astype(np.uint8))
    assert find_artefacts(st) == {}
    m = np.zeros((50, 50), np.uint8)
    m[25:, :] = 200
    m[24, :] = 90  # a one-pixel seam between 0 and 200
    m[5:8, 5:8] = 30  # a 3x3 region: real
    m[10, 40] = 60  # a lone pixel
    found = find_artefacts(ValueStats.of_mask(m), min_share=0)
    assert set(found) == {90, 60}
    assert "borders between two other values" in found[90] and "isolated" in found[60]
