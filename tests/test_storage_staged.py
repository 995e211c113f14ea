"""Folders written with local-file APIs (training runs, exports) on remote storage: the CLI works on a
local copy of a ``gs://`` output and uploads it (``storage.staged_folder``); tested on TF's ram://."""
import os

import numpy as np
import pytest

from synthseg_tf import storage

from test_generation import tiny_generator  # noqa: F401  (module-scoped fixture)


def _ram(name):
    return f"ram://staged-{os.getpid()}-{name}"


def test_staged_folder_downloads_uploads_and_deletes():
    url = _ram("run")
    with storage.staged_folder(url) as local:
        assert os.path.isdir(local) and os.listdir(local) == []
        os.makedirs(os.path.join(local, "ckpt"))
        for rel, data in (("ckpt/a.bin", b"1"), ("ckpt/old.bin", b"x"), ("config.json", b"{}")):
            with open(os.path.join(local, rel), "wb") as f:
                f.write(data)
    assert not os.path.exists(local)  # the local copy is removed
    assert storage.read_bytes(storage.join(url, "ckpt", "a.bin")) == b"1"
    assert storage.read_text(storage.join(url, "config.json")) == "{}"

    with pytest.raises(KeyboardInterrupt):  # an interrupted session still keeps what it wrote
        with storage.staged_folder(url) as local:
            assert open(os.path.join(local, "ckpt", "a.bin"), "rb").read() == b"1"  # resumed from the remote copy
            os.remove(os.path.join(local, "ckpt", "old.bin"))
            with open(os.path.join(local, "ckpt", "b.bin"), "wb") as f:
                f.write(b"2")
            raise KeyboardInterrupt
    assert storage.read_bytes(storage.join(url, "ckpt", "b.bin")) == b"2"
    assert not storage.exists(storage.join(url, "ckpt", "old.bin"))
    assert sorted(n.rstrip("/") for n in storage.listdir(url)) == ["ckpt", "config.json"]


def test_staged_input_folder_must_exist_and_is_not_uploaded():
    with pytest.raises(FileNotFoundError):
        with storage.staged_folder(_ram("missing"), upload=False):
            pass
    url = _ram("input")
    storage.atomic_write_bytes(storage.join(url, "x.txt"), b"x")
    with storage.staged_folder(url, upload=False) as local:
        with open(os.path.join(local, "y.txt"), "wb") as f:
            f.write(b"y")
    assert not storage.exists(storage.join(url, "y.txt"))


def test_cli_gan_export_from_and_to_remote_storage(tiny_generator, capsys):  # noqa: F811
    """`synthseg gan export` reads a run folder on remote storage and writes the SavedModel there;
    the generation renderer loads it from there and renders."""
    from synthseg_tf.cli import main
    from synthseg_tf.generation.renderer import Renderer

    run = _ram("ganrun")
    for d, _, files in os.walk(tiny_generator):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), tiny_generator).replace(os.sep, "/")
            with open(os.path.join(d, f), "rb") as fh:
                storage.atomic_write_bytes(storage.join(run, rel), fh.read())
    out = _ram("export")
    assert main(["gan", "export", run, out]) == 0
    assert storage.isfile(storage.join(out, "saved_model.pb"))
    assert main(["gan", "export", run, out]) != 0  # refuses to overwrite
    assert "already exists" in capsys.readouterr().err
    r = Renderer(out)
    img = r.render(np.zeros((1, 32, 32), np.uint8))
    assert img.shape == (1, 32, 32, 3) and img.dtype == np.uint8
