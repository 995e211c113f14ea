"""Reading image and mask files into numpy, with the conversions users' data needs.

Photos come back as ``uint8 HxWx3`` RGB whatever their mode (grayscale, palette, RGBA, LA,
16-bit and CMYK inputs are converted, not rejected). Masks come back *raw*: ``HxW`` integer
values (8- or 16-bit, palette indices kept as indices) or ``HxWx3`` colours for
colour-coded masks; the dataset's :class:`~synthseg_tf.data.classes.ClassTable` maps them
to class ids. Every failure raises :class:`DataError` naming the file and the problem:

- a zero-byte file: ``empty file (0 bytes)``;
- a file whose content is no image (text, HTML, a Git LFS pointer, a PDF...) whatever its
  extension: ``not an image (...)`` saying what it holds;
- a truncated or damaged PNG/JPEG/...: ``corrupt or truncated image (...)`` with the format,
  the size and the decoder's message (a PNG without its end chunk counts as truncated even
  when the decoder copes);
- an image over the pixel limit (a decompression-bomb guard): the limit and how to raise it
  (``?max_pixels=N`` in the dataset spec, or the ``SYNTHSEG_MAX_PIXELS`` environment variable;
  default :data:`DEFAULT_MAX_PIXELS`).

Remote paths (``gs://...``, see :mod:`synthseg_tf.storage`) are read into memory once and decoded
from there, with the same checks and messages.
"""
from __future__ import annotations

import io
import os
import re
from typing import Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from synthseg_tf import storage

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
JPEG_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif")

#: Default pixel limit per image (twice Pillow's warning limit, where Pillow itself refuses).
DEFAULT_MAX_PIXELS = 178_956_970
MAX_PIXELS_ENV = "SYNTHSEG_MAX_PIXELS"

_MAGIC = (  # leading bytes -> format name
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"), (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
)
_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"), (b"Rar!", "a RAR archive"), (b"\x00\x00\x00\x0cjP", "a JPEG 2000 file"),
    (b"version https://git-lfs", "a Git LFS pointer, not the file itself (run `git lfs pull`)"),
)


class DataError(ValueError):
    """A problem with one file of a dataset: ``str(e)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def is_jpeg_file(name: str) -> bool:
    return name.lower().endswith(JPEG_EXTENSIONS)


def max_pixels_limit(max_pixels: Optional[int] = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$SYNTHSEG_MAX_PIXELS``, else the default."""
    if max_pixels:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if env:
        try:
            v = int(float(env))
        except ValueError:
            raise ValueError(f"{MAX_PIXELS_ENV}={env!r} is not a number of pixels") from None
        if v > 0:
            return v
    return DEFAULT_MAX_PIXELS


def _format_of(head: bytes) -> Optional[str]:
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def describe_content(path: str, head: Optional[bytes] = None) -> str:
    """What a file that is not a readable image holds, in words (for error messages)."""
    if head is None:
        try:
            if storage.is_remote(path):
                head = storage.read_bytes(path, 256)
            else:
                with open(path, "rb") as f:
                    head = f.read(256)
        except OSError as e:
            return f"unreadable: {e.strerror or e}"
    if not head:
        return "empty file (0 bytes)"
    fmt = _format_of(head)
    if fmt:
        return f"starts like a {fmt} file but its header is damaged or cut short"
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return what
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "HTML/XML text (a web page saved instead of the image?)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and sum(c.isprintable() or c in "\r\n\t" for c in text) >= 0.95 * len(text):
        snippet = " ".join(text.split())[:40]
        return f"a text file: {snippet!r}"
    return "unknown format, first bytes " + head[:8].hex(" ")


def probe(path: str) -> Optional[str]:
    """A problem string when ``path`` is not an image at all (empty, text, unknown format), else None.

    Reads only the header: cheap enough for files that are not otherwise decoded (an image
    without a mask, say), so they are reported as what they are.
    """
    data = None
    try:
        if storage.is_remote(path):  # one read of the whole file (object stores have no cheap seek)
            data = storage.read_bytes(path)
            if not data:
                return "empty file (0 bytes), not an image"
        elif os.path.getsize(path) == 0:
            return "empty file (0 bytes), not an image"
        with Image.open(path if data is None else io.BytesIO(data)):
            return None
    except UnidentifiedImageError:
        return f"not an image ({describe_content(path, None if data is None else data[:256])})"
    except Image.DecompressionBombError:
        return None  # an image; the size limit is reported when it is read
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt or truncated image ({e})"


def _ends_cleanly(path: str, fmt: str) -> bool:
    """A PNG ends with its IEND chunk; a copy cut short does not, even when the pixel data is whole.

    (Pillow itself reports truncated JPEG data; bytes after the end chunk are allowed.)
    """
    if fmt != "PNG":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 12))
            if f.read(12)[4:8] == b"IEND":
                return True
            n = min(size, 65536)  # bytes appended after the end chunk are allowed
            f.seek(size - n)
            tail = f.read(n)
    except OSError:
        return True
    return b"IEND\xaeB`\x82" in tail


def _ends_cleanly_data(data: bytes, fmt: str) -> bool:
    """:func:`_ends_cleanly` for a file read into memory."""
    if fmt != "PNG":
        return True
    if data[-12:][4:8] == b"IEND":
        return True
    return b"IEND\xaeB`\x82" in data[-65536:]


def _read_remote(path: str) -> bytes:
    """A remote file's bytes; failures are :class:`DataError` with the messages local files get."""
    try:
        return storage.read_bytes(path)
    except OSError as e:
        try:
            folder = storage.isdir(path)
        except OSError:
            folder = False
        if folder:
            raise DataError(path, "is a folder, not an image file") from None
        if isinstance(e, FileNotFoundError):
            raise DataError(path, "file not found") from None
        raise DataError(path, f"cannot read the file ({e.strerror or e})") from None


def _bomb_message(path: str, pixels_text: str, limit: int) -> DataError:
    return DataError(path, f"image has {pixels_text} pixels, over the limit of {limit} (a guard against "
                           f"decompression bombs); if the file is trusted, raise the limit with ?max_pixels=N in "
                           f"the dataset spec or the {MAX_PIXELS_ENV} environment variable")


def _open(path: str, max_pixels: Optional[int] = None) -> Image.Image:
    """Open and fully decode ``path``; every failure is a :class:`DataError` naming the problem."""
    limit = max_pixels_limit(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        # Pillow refuses images over twice its limit before we see their size: a limit the user
        # raised past that raises Pillow's too (never lowered; the default needs no change).
        Image.MAX_IMAGE_PIXELS = (limit + 1) // 2
    data = None
    if storage.is_remote(path):  # read once, decode from memory
        data = _read_remote(path)
        size = len(data)
    else:
        try:
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise DataError(path, "file not found") from None
        except OSError as e:
            raise DataError(path, f"cannot read the file ({e.strerror or e})") from None
        if os.path.isdir(path):
            raise DataError(path, "is a folder, not an image file")
    if size == 0:
        raise DataError(path, "empty file (0 bytes), not an image")
    try:
        im = Image.open(path if data is None else io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataError(path, f"not an image ({describe_content(path, None if data is None else data[:256])})"
                        ) from None
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise _bomb_message(path, found.group(1) if found else f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)}",
                            limit) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"corrupt or truncated image ({size} bytes: {e})") from None
    w, h = im.size
    if w * h > limit:
        im.close()
        raise _bomb_message(path, f"{w}x{h} = {w * h}", limit)
    fmt = im.format or "image"
    try:
        im.load()  # forces a full decode: truncated or corrupt files fail here
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        im.close()
        raise DataError(path, f"corrupt or truncated image ({fmt} file of {size} bytes: {e})") from None
    if not (_ends_cleanly(path, fmt) if data is None else _ends_cleanly_data(data, fmt)):
        im.close()
        raise DataError(path, f"corrupt or truncated image ({fmt} file of {size} bytes has no IEND chunk: "
                              "the file was cut short)")
    return im
def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit intensities to 8 bits."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    hi = 65535.0 if a.max(initial=0) > 255 else 255.0
    return np.clip(np.round(a * (255.0 / hi)), 0, 255).astype(np.uint8)


def image_from_pil(im: Image.Image) -> Tuple[np.ndarray, str]:
    """PIL image -> (uint8 HxWx3 RGB, note on the conversion made or '')."""
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8), ""
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        g = _to_uint8(np.asarray(im))
        return np.repeat(g[..., None], 3, axis=2), f"converted {mode} (16/32-bit) to 8-bit RGB"
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        arr = np.asarray(rgba, dtype=np.float32)
        alpha = arr[..., 3:4] / 255.0
        rgb = arr[..., :3] * alpha + 255.0 * (1.0 - alpha)  # composite on white
        return np.round(rgb).astype(np.uint8), f"converted {mode} to RGB (alpha composited on white)"
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8), f"converted {mode} to RGB"
    except (ValueError, OSError) as e:
        raise DataError(getattr(im, "filename", "?") or "?", f"cannot convert a {mode} image to RGB ({e})") from None


def read_image(path: str, max_pixels: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """Read a photo: ``(uint8 HxWx3 RGB, conversion note)``; ``max_pixels`` overrides the size limit."""
    im = _open(path, max_pixels)
    try:
        return image_from_pil(im)
    except DataError as e:
        raise DataError(path, e.problem) from None


def mask_from_pil(im: Image.Image) -> Tuple[np.ndarray, str]:
    """PIL mask -> (raw values ``HxW`` int or ``HxWx3`` uint8 colours, conversion note)."""
    mode = im.mode
    if mode in ("L", "P"):
        return np.asarray(im, dtype=np.uint8), ""
    if mode == "1":
        return np.asarray(im, dtype=np.uint8), ""
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im).astype(np.int64)
        if arr.min(initial=0) < 0:
            raise DataError(getattr(im, "filename", "?"), "mask has negative values")
        return arr.astype(np.int32), ""
    if mode in ("LA", "PA"):
        return np.asarray(im.getchannel(0), dtype=np.uint8), f"dropped alpha of {mode} mask"
    if mode == "F":
        arr = np.asarray(im)
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)) or arr.min(initial=0) < 0:
            raise DataError(getattr(im, "filename", "?"), "floating-point mask holds values that are not "
                                                          "non-negative whole numbers (not a label map)")
        return arr.astype(np.int32), "read floating-point mask as integer ids"
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        note = "dropped alpha of RGBA mask" if mode == "RGBA" else ""
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return rgb[..., 0].copy(), (note + "; " if note else "") + "RGB mask with equal channels read as grayscale"
        return rgb, note
    raise DataError(getattr(im, "filename", "?"), f"unsupported mask mode {mode} (a label map is grayscale, "
                                                  f"palette or RGB; a {mode} file is a photo, not a mask)")


def read_mask_raw(path: str, max_pixels: Optional[int] = None) -> Tuple[np.ndarray, str]:
    """Read a mask without interpreting it: ``(values, conversion note)``."""
    im = _open(path, max_pixels)
    try:
        return mask_from_pil(im)
    except DataError as e:
        raise DataError(path, e.problem) from None


def encode_png(arr: np.ndarray) -> bytes:
    """uint8 ``HxW`` or ``HxWx3`` (RGB) -> PNG bytes (fast, lossless)."""
    import cv2

    a = np.ascontiguousarray(arr)
    if a.ndim == 3:
        a = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes, name: str = "<PNG bytes>") -> np.ndarray:
    """PNG (or any image) bytes -> array; damaged bytes raise :class:`DataError` naming ``name``."""
    if not data:
        raise DataError(name, "empty data (0 bytes), not an image")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataError(name, f"not an image ({describe_content(name, bytes(data[:256]))})") from None
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DataError(name, f"corrupt or truncated image ({im.format} data of {len(data)} bytes: {e})") from None
    return np.asarray(im)


def write_png(path: str, arr: np.ndarray) -> None:
    """Write a PNG atomically (local or remote path, see :func:`synthseg_tf.storage.atomic_write_bytes`)."""
    storage.atomic_write_bytes(path, encode_png(arr))
