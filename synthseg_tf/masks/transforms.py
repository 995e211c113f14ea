"""Geometric transforms of label maps (``uint8`` ``HxW`` class ids), numpy + OpenCV only.

Every transform uses nearest-neighbour sampling, so the output only ever holds ids that were
in the input plus, for ``border="void"`` or a constant border class, that fill value.

``border`` (what appears where a transform looks outside the map):

- ``"reflect"``   mirror the map at its edges (no new ids, default);
- ``"replicate"`` repeat the edge pixels;
- ``"void"``      fill with the ignore id (255): those pixels are skipped by losses;
- an ``int``      fill with that class id.
"""
from __future__ import annotations

from typing import Dict, Tuple, Union

import cv2
import numpy as np

from synthseg_tf.data.classes import IGNORE_ID

Border = Union[str, int]
BORDERS = ("reflect", "replicate", "void")
_CV_BORDER = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE}
# INTER_NEAREST in OpenCV samples floor(x * scale) (a half-pixel shift); _EXACT is centred.
NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


def check_border(border: Border, num_classes: int = 255, ignore_id: int = IGNORE_ID) -> Border:
    """Return ``border`` if valid, else raise ``ValueError`` saying what is accepted."""
    if isinstance(border, str):
        if border not in BORDERS:
            raise ValueError(f"border must be one of {BORDERS} or a class id, got {border!r}")
        return border
    if isinstance(border, (bool, np.bool_)) or not isinstance(border, (int, np.integer)):
        raise ValueError(f"border must be one of {BORDERS} or a class id, got {border!r}")
    if not (0 <= int(border) < num_classes or int(border) == ignore_id):
        raise ValueError(f"constant border class {border} is outside 0..{num_classes - 1}")
    return int(border)


def _cv_border(border: Border, ignore_id: int) -> Tuple[int, int]:
    if isinstance(border, str) and border in _CV_BORDER:
        return _CV_BORDER[border], 0
    if border == "void":
        return cv2.BORDER_CONSTANT, int(ignore_id)
    return cv2.BORDER_CONSTANT, int(check_border(border))


def hflip(m: np.ndarray) -> np.ndarray:
    """Mirror left-right (a contiguous copy)."""
    return np.ascontiguousarray(m[:, ::-1])


def resize_nearest(m: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resize to ``size=(H, W)`` with nearest-neighbour sampling (ids are never blended)."""
    h, w = int(size[0]), int(size[1])
    if m.shape[:2] == (h, w):
        return m
    return cv2.resize(m, (w, h), interpolation=NEAREST)


def affine_matrix(shape: Tuple[int, int], scale: float = 1.0, angle: float = 0.0, shear: float = 0.0,
                  translate: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """2x3 forward matrix (source -> output pixel coordinates) about the map centre.

    ``angle`` in degrees (counter-clockwise as displayed), ``shear`` is the x-shear factor,
    ``translate=(tx, ty)`` in pixels.
    """
    h, w = shape[:2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a = np.deg2rad(angle)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    lin = np.array([[c, s], [-s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    centre = np.array([cx, cy])
    offset = centre + np.asarray(translate, dtype=np.float64) - lin @ centre
    return np.hstack([lin, offset[:, None]])


def warp_affine(m: np.ndarray, matrix: np.ndarray, border: Border = "reflect",
                ignore_id: int = IGNORE_ID) -> np.ndarray:
    """Apply a 2x3 forward affine ``matrix`` with nearest-neighbour sampling; output keeps the shape."""
    mode, value = _cv_border(border, ignore_id)
    h, w = m.shape[:2]
    return cv2.warpAffine(m, np.asarray(matrix, dtype=np.float64), (w, h), flags=cv2.INTER_NEAREST,
                          borderMode=mode, borderValue=value)


def random_affine_params(rng: np.random.Generator, shape: Tuple[int, int], scale=(0.9, 1.2),
                         rotation: float = 5.0, translate: float = 0.05, shear: float = 0.05) -> Dict:
    """Draw affine parameters: ``scale`` range, max ``rotation`` degrees, max ``translate``
    (fraction of width/height) and max ``shear`` factor; returns a JSON-able dict."""
    h, w = shape[:2]
    return {
        "scale": float(rng.uniform(scale[0], scale[1])),
        "angle": float(rng.uniform(-rotation, rotation)),
        "shear": float(rng.uniform(-shear, shear)),
        "tx": float(rng.uniform(-translate, translate) * w),
        "ty": float(rng.uniform(-translate, translate) * h),
    }


def apply_affine_params(m: np.ndarray, params: Dict, border: Border = "reflect",
                        ignore_id: int = IGNORE_ID) -> np.ndarray:
    mat = affine_matrix(m.shape, params["scale"], params["angle"], params["shear"], (params["tx"], params["ty"]))
    return warp_affine(m, mat, border, ignore_id)


def random_affine(m: np.ndarray, rng: np.random.Generator, border: Border = "reflect",
                  ignore_id: int = IGNORE_ID, **ranges) -> Tuple[np.ndarray, Dict]:
    """Random scale/rotation/translation/shear (see :func:`random_affine_params`); returns ``(map, params)``."""
    params = random_affine_params(rng, m.shape, **ranges)
    return apply_affine_params(m, params, border, ignore_id), params


_GRID_CACHE: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    g = _GRID_CACHE.get((h, w))
    if g is None:
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        if len(_GRID_CACHE) > 32:
            _GRID_CACHE.clear()
        g = _GRID_CACHE[(h, w)] = (gx, gy)
    return g


def elastic_field(rng: np.random.Generator, shape: Tuple[int, int], alpha: float,
                  sigma: float) -> Tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement ``(dx, dy)`` (float32 ``HxW`` each), RMS magnitude ``alpha`` pixels.

    White noise blurred with a Gaussian of ``sigma`` pixels; the noise is drawn on a grid
    ``~sigma/2`` coarser and blurred there, then bilinearly upsampled (same field statistics,
    far cheaper than a full-resolution blur with a large kernel).
    """
    h, w = shape[:2]
    f = max(1, int(sigma // 2))
    ch, cw = -(-h // f) + 1, -(-w // f) + 1
    s = max(sigma / f, 0.5)
    out = []
    for _ in range(2):
        noise = rng.standard_normal((ch, cw)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), s, borderType=cv2.BORDER_REFLECT_101)
        std = float(noise.std())
        noise *= alpha / std if std > 1e-12 else 0.0
        out.append(cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR))
    return out[0], out[1]


def warp_displacement(m: np.ndarray, dx: np.ndarray, dy: np.ndarray, border: Border = "reflect",
                      ignore_id: int = IGNORE_ID) -> np.ndarray:
    """``out[y, x] = m[y + dy, x + dx]`` with nearest-neighbour sampling."""
    h, w = m.shape[:2]
    gx, gy = _grid(h, w)
    mode, value = _cv_border(border, ignore_id)
    return cv2.remap(m, gx + dx, gy + dy, interpolation=cv2.INTER_NEAREST, borderMode=mode, borderValue=value)


def elastic(m: np.ndarray, rng: np.random.Generator, alpha=(0.01, 0.03), sigma=(0.06, 0.12),
            border: Border = "reflect", ignore_id: int = IGNORE_ID) -> Tuple[np.ndarray, Dict]:
    """Elastic deformation; ``alpha`` (RMS displacement) and ``sigma`` (smoothness) are ranges in
    fractions of ``min(H, W)``. Returns ``(map, params)`` with the drawn values in pixels."""
    n = min(m.shape[:2])
    a = float(rng.uniform(alpha[0], alpha[1]) * n)
    s = float(max(rng.uniform(sigma[0], sigma[1]) * n, 1.0))
    dx, dy = elastic_field(rng, m.shape, a, s)
    return warp_displacement(m, dx, dy, border, ignore_id), {"alpha": a, "sigma": s}
