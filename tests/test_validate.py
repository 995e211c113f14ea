"""`synthseg data validate`: every kind of bad file is caught, named, and gives exit 2."""
import os
import shutil

import numpy as np
import pytest

from synthseg_tf.cli import main
from synthseg_tf.data import load, validate

from conftest import camvid_dir, save, scene


@pytest.fixture
def broken_pairs(tmp_path):
    rng = np.random.default_rng(0)
    im, ms = tmp_path / "im", tmp_path / "ms"
    for i in range(4):
        img, m = scene(rng)
        save(im / f"ok{i}.png", img)
        save(ms / f"ok{i}.png", m)
    img, m = scene(rng)
    save(im / "trunc.png", img)
    save(ms / "trunc.png", m)
    data = (im / "trunc.png").read_bytes()
    (im / "trunc.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    (im / "garbage.png").write_bytes(b"this is not an image at all")
    save(ms / "garbage.png", m)
    save(im / "lonely.png", img)  # image without mask
    save(ms / "orphan.png", m)  # mask without image
    save(im / "size.png", img)
    save(ms / "size.png", np.zeros((10, 10), np.uint8))  # size mismatch
    return tmp_path


def test_validate_names_every_bad_file(broken_pairs):
    ds = load(f"pairs:{broken_pairs}/im:{broken_pairs}/ms")
    rep = validate(ds)
    problems = {os.path.basename(p): m for p, m in rep.bad}
    assert "truncated" in problems["trunc.png"]
    assert "not an image (a text file" in problems["garbage.png"]
    assert "no mask" in problems["lonely.png"]
    assert "no image" in problems["orphan.png"]
    assert "differs from image size" in problems["size.png"]
    assert len(rep.good_indices) == 4
    assert len(rep.good_dataset()) == 4


def test_cli_exit_codes(broken_pairs, capsys):
    rc = main(["data", "validate", f"pairs:{broken_pairs}/im:{broken_pairs}/ms"])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{broken_pairs}/im/trunc.png: corrupt or truncated image" in err


def test_cli_to_tfrecord_refuses_bad_then_skips(broken_pairs, tmp_path, capsys):
    spec = f"pairs:{broken_pairs}/im:{broken_pairs}/ms"
    out = tmp_path / "rec"
    assert main(["data", "to-tfrecord", spec, str(out)]) == 2
    assert not out.exists()  # nothing half-written
    assert main(["data", "to-tfrecord", spec, str(out), "--skip-bad", "--shards", "2"]) == 0
    assert sorted(os.listdir(out)) == ["classes.json", "data-00000-of-00002.tfrecord",
                                       "data-00001-of-00002.tfrecord", "dataset.json"]
    assert main(["data", "to-tfrecord", spec, str(out), "--skip-bad"]) == 3  # refuses to overwrite (output conflict)
    assert "already exists" in capsys.readouterr().err


def test_validate_class_folder_problems(tmp_path):
    rng = np.random.default_rng(1)
    save(tmp_path / "a" / "x.png", rng.integers(0, 255, (12, 12, 3), dtype=np.uint8))
    (tmp_path / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    os.makedirs(tmp_path / "empty")
    rep = validate(load(f"classfolders:{tmp_path}"))
    names = {os.path.basename(p) for p, _ in rep.bad}
    assert names == {"bad.jpg", "empty"}


@pytest.mark.integration
def test_camvid_copy_with_truncated_png(tmp_path, capsys):
    src = camvid_dir()
    dst = tmp_path / "camvid"
    shutil.copytree(src, dst)
    victim = dst / "val" / sorted(os.listdir(dst / "val"))[3]
    os.chmod(victim, 0o644)
    data = victim.read_bytes()
    victim.write_bytes(data[:-len(data) // 3])
    assert main(["data", "validate", f"camvid:{dst}"]) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "1 problem(s) found" in err
    assert main(["data", "validate", f"camvid:{src}"]) == 0
    out = capsys.readouterr().out
    assert "pedestrian" in out and "468 good" in out
