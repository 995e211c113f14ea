"""Fault injection, specs and paths: unknown layout words, bare folders, missing folders, empty
datasets, bad options, list entries and links that leave the dataset folder. Each is refused
with a message naming the spec, file or line (exit 2), before TensorFlow is imported."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synthseg_tf.cli import main
from synthseg_tf.data import SpecError, load, validate
from synthseg_tf.data.layouts import KINDS, guess_spec
from synthseg_tf.errors import EXIT_BAD_DATA

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path)


def write_pairs(root, names=("a", "b", "c"), img_dir="im", mask_dir="ms"):
    rng = np.random.default_rng(0)
    for n in names:
        m = np.zeros((16, 20), np.uint8)
        m[8:] = 1
        save(os.path.join(root, img_dir, f"{n}.png"), rng.integers(0, 255, (16, 20, 3), dtype=np.uint8))
        save(os.path.join(root, mask_dir, f"{n}.png"), m)
    return f"pairs:{root}/{img_dir}:{root}/{mask_dir}"


def cli(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.err


# ------------------------------------------------------------------ spec words
def test_unknown_layout_word_is_rejected_before_tensorflow(tmp_path):
    code = ("import sys; from synthseg_tf.cli import main; "
            f"rc = main(['data', 'validate', 'foo:{tmp_path}']); "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == EXIT_BAD_DATA, p.stderr
    assert f"unknown dataset kind 'foo' in spec 'foo:{tmp_path}'; use one of: {', '.join(KINDS)}" in p.stderr
    assert "Traceback" not in p.stderr


def test_misspelt_kind_and_options_get_suggestions(tmp_path, capsys):
    spec = write_pairs(str(tmp_path))
    rc, err = cli(capsys, "data", "validate", "pair" + spec[5:])
    assert rc == EXIT_BAD_DATA and "(did you mean 'pairs'?)" in err
    rc, err = cli(capsys, "data", "validate", spec + "?snapp=nearest")
    assert rc == EXIT_BAD_DATA and "unknown option 'snapp' (did you mean 'snap'?)" in err
    for bad, said in (("?snap=closest", "snap='closest' must be one of nearest, void, none"),
                      ("?jpeg_masks=maybe", "jpeg_masks='maybe' must be 1 or 0"),
                      ("?max_pixels=lots", "max_pixels='lots' must be a positive number of pixels")):
        with pytest.raises(SpecError, match=said.replace("(", r"\(").replace(")", r"\)")):
            load(spec + bad)


def test_bare_folder_gets_the_spec_to_use(tmp_path, capsys):
    write_pairs(str(tmp_path / "p"), img_dir="images", mask_dir="labels")
    rc, err = cli(capsys, "data", "validate", str(tmp_path / "p"))
    assert rc == EXIT_BAD_DATA
    assert (f"'{tmp_path}/p' is a folder, not a dataset spec; it holds an images/ and a labels/ folder "
            f"(images and masks matched by file name), so use: pairs:{tmp_path}/p/images:{tmp_path}/p/labels") in err
    assert "unknown dataset kind" not in err
    # other layouts
    write_pairs(str(tmp_path / "cv"), img_dir="train", mask_dir="trainannot")
    assert guess_spec(str(tmp_path / "cv"))[0] == f"camvid:{tmp_path}/cv"
    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):  # the same file names in both folders: photos, so class folders, not pairs
        save(str(tmp_path / "cf" / c / "x.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert guess_spec(str(tmp_path / "cf"))[0] == f"classfolders:{tmp_path}/cf"
    write_pairs(str(tmp_path / "odd"), img_dir="rgb_frames", mask_dir="seg_maps")  # unusual names, same stems
    assert guess_spec(str(tmp_path / "odd"))[0] == f"pairs:{tmp_path}/odd/rgb_frames:{tmp_path}/odd/seg_maps"
    with pytest.raises(SpecError, match=r"so use: classfolders:.*/cf\?split=train"):
        load(f"{tmp_path}/cf?split=train")  # options carried over
    save(str(tmp_path / "flat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SpecError, match=r"match no layout \(1 image\(s\) directly inside it; "
                                        r"segmentation needs pairs:"):
        load(str(tmp_path / "flat"))


def test_missing_folder_is_named(tmp_path, capsys):
    spec = write_pairs(str(tmp_path))
    rc, err = cli(capsys, "data", "validate", f"pairs:{tmp_path}/im:{tmp_path}/nope")
    assert rc == EXIT_BAD_DATA and f"masks folder {tmp_path}/nope does not exist" in err
    rc, err = cli(capsys, "data", "validate", f"camvid:{tmp_path}/gone")
    assert rc == EXIT_BAD_DATA and f"CamVid folder {tmp_path}/gone does not exist" in err
    rc, err = cli(capsys, "data", "validate", f"{tmp_path}/gone")
    assert rc == EXIT_BAD_DATA and "is neither a dataset spec nor an existing folder" in err
    rc, err = cli(capsys, "data", "validate", f"pairs:{tmp_path}/im/a.png:{tmp_path}/ms")
    assert rc == EXIT_BAD_DATA and f"images folder {tmp_path}/im/a.png is a file, not a folder" in err
    assert spec


def test_empty_dataset_is_a_clear_error(tmp_path, capsys):
    os.makedirs(tmp_path / "im")
    os.makedirs(tmp_path / "ms")
    (tmp_path / "im" / "notes.txt").write_text("no images here")
    rc, err = cli(capsys, "data", "validate", f"pairs:{tmp_path}/im:{tmp_path}/ms")
    assert rc == EXIT_BAD_DATA
    assert f"empty dataset: no image files (png/jpg/jpeg/bmp/tif/tiff/webp) in {tmp_path}/im" in err
    save(str(tmp_path / "im" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    rc, err = cli(capsys, "data", "validate", f"pairs:{tmp_path}/im:{tmp_path}/ms")
    assert rc == EXIT_BAD_DATA and f"empty dataset: no mask files" in err
    os.makedirs(tmp_path / "cf" / "cat")
    rc, err = cli(capsys, "data", "validate", f"classfolders:{tmp_path}/cf")
    assert rc == EXIT_BAD_DATA and "no images in the class folders" in err


# ------------------------------------------------------------------ paths that leave the dataset
def test_list_file_keeps_its_entries_and_refuses_escapes(tmp_path):
    root = tmp_path / "data"
    spec = write_pairs(str(root), names=("a", "b", "c", "d"))
    lst = tmp_path / "keep.txt"
    lst.write_text("# the subset\na.png\nc\n\nb.png\nb\n")
    ds = load(f"{spec}?list={lst}")
    assert [s.source_id for s in ds.samples] == ["a", "c", "b"] and validate(ds).ok
    for entry, said in (("../secret.png", r"'\.\./secret\.png' leaves the dataset folder"),
                        ("sub/../../x.png", "'sub/../../x.png' leaves the dataset folder"),
                        ("/etc/passwd", r"'/etc/passwd' is an absolute path; list entries are relative"),
                        ("~/x.png", "'~/x.png' is an absolute path")):
        lst.write_text(f"a.png\n{entry}\n")
        with pytest.raises(SpecError, match=rf"{lst}:2: {said}"):
            load(f"{spec}?list={lst}")
    outside = tmp_path / "outside.png"
    save(str(outside), np.zeros((16, 20, 3), np.uint8))
    os.symlink(outside, root / "im" / "sneaky.png")
    lst.write_text("sneaky.png\n")
    with pytest.raises(SpecError, match=rf"{lst}:1: 'sneaky.png' is a symbolic link to {outside}, outside"):
        load(f"{spec}?list={lst}")
    lst.write_text("a\nzz\n")
    ds = load(f"{spec}?list={lst}")
    assert (f"{lst}:2", f"'zz' is not an image of the dataset in {root}/im") in ds.problems
    with pytest.raises(SpecError, match="list file .*/missing.txt does not exist"):
        load(f"{spec}?list={tmp_path}/missing.txt")


def test_symlinks_out_of_the_dataset_are_refused(tmp_path, capsys):
    root = tmp_path / "data"
    spec = write_pairs(str(root))
    elsewhere = tmp_path / "elsewhere"
    save(str(elsewhere / "x.png"), np.zeros((16, 20, 3), np.uint8))
    m = np.zeros((16, 20), np.uint8)
    save(str(elsewhere / "xm.png"), m)
    os.symlink(elsewhere / "x.png", root / "im" / "x.png")
    os.symlink(elsewhere / "xm.png", root / "ms" / "x.png")
    os.symlink(root / "im" / "a.png", root / "im" / "inside.png")  # a link within the folder is fine
    save(str(root / "ms" / "inside.png"), m)
    os.symlink(tmp_path / "deleted.png", root / "im" / "dangling.png")
    ds = load(spec)
    problems = {os.path.basename(p): msg for p, msg in ds.problems}
    assert problems["x.png"].startswith(f"symbolic link to {elsewhere}/")  # image and mask both named
    assert "outside the dataset folder" in problems["x.png"] and "?follow_links=1" in problems["x.png"]
    assert problems["dangling.png"] == f"broken symbolic link (its target {tmp_path}/deleted.png does not exist)"
    assert sorted(s.source_id for s in ds.samples) == ["a", "b", "c", "inside"]
    rc, err = cli(capsys, "data", "validate", spec)
    assert rc == EXIT_BAD_DATA and f"{root}/im/x.png: symbolic link to {elsewhere}/x.png" in err
    allowed = load(spec + "?follow_links=1")
    assert "x" in {s.source_id for s in allowed.samples}


@pytest.mark.parametrize("argv", [
    ["gan", "train", "--data", "foo:bar", "--out", "OUT"],
    ["unet", "train", "--data", "pairz:a:b", "--out", "OUT"],
    ["experiment", "segmentation", "--data", "camvid:nowhere?spllit=val", "--out", "OUT"],
    ["experiment", "segmentation", "--data", "demo-scenes", "--eval", "camvid:x?split=tset", "--out", "OUT"],
])
def test_every_command_rejects_a_bad_spec_before_tensorflow_loads(argv, tmp_path):
    import subprocess
    import sys

    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    code = (f"import sys; from synthseg_tf.cli import main; rc = main({argv!r}); "
            "print('tensorflow' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-1500:]
    assert r.stdout.strip() == "False"  # refused in a second, without loading TensorFlow
    assert "synthseg: error:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
