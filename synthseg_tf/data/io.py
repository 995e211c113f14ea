"""Reading image and mask files into numpy, with the conversions users' data needs.

Photos come back as ``uint8 HxWx3`` RGB whatever their mode (grayscale, palette, RGBA,
16-bit and CMYK inputs are converted, not rejected). Masks come back *raw*: ``HxW`` integer
values (8- or 16-bit, palette indices kept as indices) or ``HxWx3`` colours for
colour-coded masks; the dataset's :class:`~synthseg_tf.data.classes.ClassTable` maps them
to class ids. Every failure raises :class:`DataError` naming the file and the problem.
"""
from __future__ import annotations

import io
import os
from typing import Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A problem with one file of a dataset: ``str(e)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def _open(path: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()  # forces a full decode: truncated or corrupt files fail here
        return im
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except UnidentifiedImageError:
        raise DataError(path, "not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"corrupt or truncated image ({e})") from None


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
    return np.asarray(im.convert("RGB"), dtype=np.uint8), ("" if mode == "RGB" else f"converted {mode} to RGB")


def read_image(path: str) -> Tuple[np.ndarray, str]:
    """Read a photo: ``(uint8 HxWx3 RGB, conversion note)``."""
    return image_from_pil(_open(path))


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
    if mode == "LA":
        return np.asarray(im.getchannel(0), dtype=np.uint8), f"dropped alpha of {mode} mask"
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        note = "dropped alpha of RGBA mask" if mode == "RGBA" else ""
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            return rgb[..., 0].copy(), (note + "; " if note else "") + "RGB mask with equal channels read as grayscale"
        return rgb, note
    raise DataError(getattr(im, "filename", "?"), f"unsupported mask mode {mode}")


def read_mask_raw(path: str) -> Tuple[np.ndarray, str]:
    """Read a mask without interpreting it: ``(values, conversion note)``."""
    im = _open(path)
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


def decode_png(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im)


def write_png(path: str, arr: np.ndarray) -> None:
    """Write a PNG atomically."""
    from synthseg_tf.utils import atomic_write_bytes

    atomic_write_bytes(path, encode_png(arr))
