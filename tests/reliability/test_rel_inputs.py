"""Fault injection, input files: damaged, empty, mislabelled, oversized, oddly encoded or named
files are each named with their problem (``DataError``; ``synthseg data validate`` exits 2), and
unusual but valid encodings are converted instead of rejected."""
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from synthseg_tf.cli import main
from synthseg_tf.data import ClassTable, DataError, SpecError, load, validate
from synthseg_tf.data.io import decode_png, read_image, read_mask_raw
from synthseg_tf.errors import EXIT_BAD_DATA, EXIT_OK

from conftest import save, scene  # tests/conftest.py: the suite's file writers


def pairs(root, n=3, seed=0, h=24, w=32):
    """A clean pairs dataset under ``root`` (im/, ms/) -> its spec."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, m = scene(rng, h=h, w=w)
        save(root / "im" / f"ok{i}.png", img)
        save(root / "ms" / f"ok{i}.png", m)
    return f"pairs:{root}/im:{root}/ms"


def problems_of(spec):
    rep = validate(load(spec))
    return {os.path.basename(p): m for p, m in rep.bad}, rep


def png_bytes(arr, fmt="PNG", **kw):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, fmt, **kw)
    return b.getvalue()


# ------------------------------------------------------------------ not images
def test_text_file_named_png_without_mask_is_not_an_image(tmp_path, capsys):
    spec = pairs(tmp_path)
    (tmp_path / "im" / "zz.png").write_text("just some notes, saved with the wrong name\n")
    problems, _ = problems_of(spec)
    assert problems["zz.png"].startswith("not an image (a text file: 'just some notes")
    assert "no mask" not in problems["zz.png"]
    assert main(["data", "validate", spec]) == EXIT_BAD_DATA
    assert f"{tmp_path}/im/zz.png: not an image (a text file" in capsys.readouterr().err


def test_non_image_bytes_with_a_partner_are_named(tmp_path):
    spec = pairs(tmp_path)
    _, m = scene(np.random.default_rng(1))
    (tmp_path / "im" / "page.png").write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")
    save(tmp_path / "ms" / "page.png", m)
    (tmp_path / "im" / "lfs.jpg").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    save(tmp_path / "ms" / "lfs.png", m)
    (tmp_path / "im" / "blob.png").write_bytes(bytes(range(200, 256)) * 3)
    save(tmp_path / "ms" / "blob.png", m)
    problems, rep = problems_of(spec)
    assert problems["page.png"] == "not an image (HTML/XML text (a web page saved instead of the image?))"
    assert "Git LFS pointer" in problems["lfs.jpg"]
    assert problems["blob.png"].startswith("not an image (unknown format, first bytes c8 c9")
    assert len(rep.good_indices) == 3


def test_zero_byte_image_and_mask(tmp_path):
    spec = pairs(tmp_path)
    img, m = scene(np.random.default_rng(2))
    (tmp_path / "im" / "empty.png").write_bytes(b"")
    save(tmp_path / "ms" / "empty.png", m)
    save(tmp_path / "im" / "nomask.png", img)
    (tmp_path / "ms" / "nomask.png").write_bytes(b"")
    problems, _ = problems_of(spec)
    assert problems["empty.png"] == "empty file (0 bytes), not an image"
    assert problems["nomask.png"] == "empty file (0 bytes), not an image"
    with pytest.raises(DataError, match=r"empty\.png: empty file \(0 bytes\)"):
        read_image(str(tmp_path / "im" / "empty.png"))


def test_truncated_png_and_jpeg_are_named(tmp_path):
    spec = pairs(tmp_path)
    rng = np.random.default_rng(3)
    img, m = scene(rng, h=48, w=64)
    png, jpg = png_bytes(img), png_bytes(img, "JPEG", quality=90)
    (tmp_path / "im" / "half.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "im" / "noend.png").write_bytes(png[:-12])  # pixel data complete, IEND chunk cut off
    (tmp_path / "im" / "half.jpg").write_bytes(jpg[: len(jpg) // 2])
    (tmp_path / "im" / "head.jpg").write_bytes(jpg[:40])
    for stem in ("half", "noend", "head"):
        save(tmp_path / "ms" / f"{stem}.png", m)
    save(tmp_path / "ms" / "half_mask.png", m)  # the .jpg 'half' is a twin of half.png: give it no mask clash
    problems, _ = problems_of(spec)
    assert problems["noend.png"].startswith("corrupt or truncated image (PNG file of")
    assert "has no IEND chunk" in problems["noend.png"]
    assert "two images share the stem 'half'" in problems["half.png"]
    # decoding paths name the file too
    with pytest.raises(DataError, match=r"half\.png: corrupt or truncated image \(PNG file of \d+ bytes: "
                                        r"image file is truncated"):
        read_image(str(tmp_path / "im" / "half.png"))
    with pytest.raises(DataError, match=r"half\.jpg: corrupt or truncated image \(JPEG file of \d+ bytes"):
        read_image(str(tmp_path / "im" / "half.jpg"))
    with pytest.raises(DataError, match=r"head\.jpg: corrupt or truncated image"):
        read_image(str(tmp_path / "im" / "head.jpg"))
    with pytest.raises(DataError, match=r"shard-7/00012\.png: corrupt or truncated image \(PNG data"):
        decode_png(png[: len(png) // 2], name="shard-7/00012.png")
    with pytest.raises(DataError, match=r"<PNG bytes>: not an image \(a text file"):
        decode_png(b"not a png at all")


# ------------------------------------------------------------------ conversions
def test_unusual_photo_modes_are_converted_not_rejected(tmp_path):
    rng = np.random.default_rng(4)
    h, w = 16, 20
    rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    im_dir, ms_dir = tmp_path / "im", tmp_path / "ms"
    os.makedirs(im_dir)
    Image.fromarray((rng.integers(0, 65535, (h, w))).astype(np.uint16)).save(im_dir / "g16.png")  # I;16
    Image.fromarray(np.dstack([rgb, np.full((h, w), 128, np.uint8)]), "RGBA").save(im_dir / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(im_dir / "pal.png")
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(im_dir / "la.png")
    Image.fromarray(rgb).convert("CMYK").save(im_dir / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("1").save(im_dir / "bw.png")
    m = np.zeros((h, w), np.uint8)
    m[h // 2:] = 1
    for stem in ("g16", "rgba", "pal", "la", "cmyk", "bw"):
        save(ms_dir / f"{stem}.png", m)
    ds = load(f"pairs:{im_dir}:{ms_dir}")
    rep = validate(ds)
    assert rep.ok, rep.bad
    for s in ds.samples:
        img, mask = ds.read(s)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8, s.image
    notes = " | ".join(rep.conversions)
    for mode in ("I;16", "RGBA", "LA", "CMYK", "P", "1"):
        assert mode in notes, (mode, notes)
    cmyk, _ = read_image(str(im_dir / "cmyk.jpg"))
    assert np.abs(cmyk.astype(int) - rgb).mean() < 12  # the colours survive the round trip


def test_16bit_and_palette_masks_read_as_label_ids(tmp_path):
    rng = np.random.default_rng(5)
    h, w = 20, 24
    ids = np.zeros((h, w), np.uint8)
    ids[5:15, 4:12], ids[12:, 14:] = 1, 2
    pal = Image.fromarray(ids, "P")
    pal.putpalette([0, 0, 0, 250, 0, 0, 0, 250, 0] + [0] * (256 * 3 - 9))  # the colours are not the ids
    save(tmp_path / "im" / "p.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    os.makedirs(tmp_path / "ms")
    pal.save(tmp_path / "ms" / "p.png")
    raw, _ = read_mask_raw(str(tmp_path / "ms" / "p.png"))
    assert raw.dtype == np.uint8 and np.array_equal(raw, ids)  # palette index = label id
    m16 = (ids.astype(np.uint16) * 1000)
    save(tmp_path / "im16" / "a.png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    save(tmp_path / "ms16" / "a.png", m16)
    raw16, _ = read_mask_raw(str(tmp_path / "ms16" / "a.png"))
    assert np.array_equal(raw16, m16.astype(np.int32))
    ds = load(f"pairs:{tmp_path}/im16:{tmp_path}/ms16")
    assert ds.classes.source_values == [0, 1000, 2000]
    _, mask = ds.read(ds.samples[0])
    assert np.array_equal(mask, ids)


# ------------------------------------------------------------------ decompression bombs
def _png_header_only(w, h):
    """A PNG that declares ``w x h`` pixels (a decompression bomb's header) with a token IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_pixel_limit_is_enforced_and_configurable(tmp_path, monkeypatch, capsys):
    spec = pairs(tmp_path, h=40, w=50)  # 2000 pixels each
    monkeypatch.delenv("SYNTHSEG_MAX_PIXELS", raising=False)
    with pytest.raises(SpecError, match=r"no readable masks .*ok\d\.png: image has 50x40 = 2000 pixels, "
                                        r"over the limit"):
        load(spec + "?max_pixels=1500")  # the class table cannot be discovered: the first mask's problem is named
    ClassTable(names=["a", "b", "c"]).save(str(tmp_path / "ms"))
    problems, rep = problems_of(spec + "?max_pixels=1500")
    assert len(rep.bad) == 6  # every image and every mask
    msg = problems["ok0.png"]
    assert "image has 50x40 = 2000 pixels, over the limit of 1500" in msg
    assert "?max_pixels=N" in msg and "SYNTHSEG_MAX_PIXELS" in msg
    assert validate(load(spec + "?max_pixels=2000")).ok
    monkeypatch.setenv("SYNTHSEG_MAX_PIXELS", "1999")
    assert not validate(load(spec)).ok
    assert main(["data", "validate", spec]) == EXIT_BAD_DATA
    assert "over the limit of 1999" in capsys.readouterr().err
    assert validate(load(spec + "?max_pixels=1e4")).ok  # the spec option wins over the environment


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's warning; the error is ours
def test_a_real_bomb_header_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHSEG_MAX_PIXELS", raising=False)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10 gigapixels in 100 bytes
    with pytest.raises(DataError, match=r"bomb\.png: image has 10000000000 pixels, over the limit of 178956970"):
        read_image(str(bomb))
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(15_000, 15_000))  # 225 Mpx
    with pytest.raises(DataError, match=r"big\.png: image has 225000000 pixels, over the limit of 178956970"):
        read_image(str(big))
    with pytest.raises(DataError, match=r"big\.png: image has 225000000 pixels, over the limit of 200000000 "):
        read_image(str(big), max_pixels=200_000_000)
    with pytest.raises(SpecError, match=r"max_pixels='-3' must be a positive number of pixels"):
        load(f"pairs:{tmp_path}:{tmp_path}?max_pixels=-3")


# ------------------------------------------------------------------ pairing faults
def test_size_mismatch_and_missing_partners(tmp_path, capsys):
    spec = pairs(tmp_path)
    img, m = scene(np.random.default_rng(6))
    save(tmp_path / "im" / "size.png", img)
    save(tmp_path / "ms" / "size.png", np.zeros((10, 12), np.uint8))
    save(tmp_path / "im" / "lonely.png", img)
    save(tmp_path / "ms" / "orphan.png", m)
    problems, rep = problems_of(spec)
    assert problems["size.png"] == f"mask size 12x10 differs from image size 32x24 ({tmp_path}/im/size.png)"
    assert problems["lonely.png"].startswith("image has no mask")
    assert problems["orphan.png"] == "mask has no image"
    assert len(rep.good_indices) == 3
    assert main(["data", "validate", spec]) == EXIT_BAD_DATA
    err = capsys.readouterr().err
    assert "3 problem(s) found" in err and f"{tmp_path}/ms/size.png: mask size 12x10" in err


def test_duplicate_stems_are_ambiguous(tmp_path):
    spec = pairs(tmp_path)
    img, m = scene(np.random.default_rng(7))
    save(tmp_path / "im" / "a.png", img)
    save(tmp_path / "im" / "a.jpg", img)
    save(tmp_path / "ms" / "a.png", m)
    save(tmp_path / "im" / "b.png", img)
    save(tmp_path / "ms" / "b.png", m)
    save(tmp_path / "ms" / "b_mask.png", m)
    ds = load(spec)
    problems = {os.path.basename(p): msg for p, msg in ds.problems}
    assert "two images share the stem 'a' (also a.png)" in problems["a.jpg"]
    assert "two images share the stem 'a' (also a.jpg)" in problems["a.png"]
    assert "the mask a.png belongs to is ambiguous" in problems["a.png"]
    assert "a.png" not in {os.path.basename(s.image) for s in ds.samples}  # neither twin is guessed
    assert not any(m.startswith("mask has no image") and p.endswith("ms/a.png") for p, m in ds.problems)
    assert [s.mask for s in ds.samples if s.source_id == "b"] == [str(tmp_path / "ms" / "b.png")]


def test_non_ascii_file_names_work(tmp_path, capsys):
    rng = np.random.default_rng(8)
    names = ["café_ü", "日本語の画像", "Ελληνικά παράδειγμα", "emoji_🚗"]
    for n in names:
        img, m = scene(rng)
        save(tmp_path / "bilder" / f"{n}.jpg", img)
        save(tmp_path / "masken" / f"{n}.png", m)
    spec = f"pairs:{tmp_path}/bilder:{tmp_path}/masken"
    ds = load(spec)
    assert sorted(s.source_id for s in ds.samples) == sorted(names)
    assert validate(ds).ok
    assert main(["data", "validate", spec, "--json"]) == EXIT_OK
    assert "日本語の画像" not in capsys.readouterr().err
    # a name that is not valid UTF-8 (a Latin-1 file system entry) is read and printed, not a crash
    raw_dir = os.fsencode(str(tmp_path / "bilder"))
    img, _ = scene(rng)
    with open(os.path.join(raw_dir, b"caf\xe9.png"), "wb") as f:
        f.write(png_bytes(img))
    assert main(["data", "validate", spec]) == EXIT_BAD_DATA
    err = capsys.readouterr().err
    assert "image has no mask" in err and "caf" in err
