"""Cut-mix of two label maps: a band or box of one map replaces the same region of the other.

The region keeps its position (rows stay rows), so in street scenes a vertical band swaps
part of the street left-to-right while the horizon stays at a consistent height.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from synthseg_tf.data.classes import IGNORE_ID

MIX_MODES = ("vertical", "horizontal", "box")


def cutmix(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
           modes: Sequence[str] = MIX_MODES, fraction: Tuple[float, float] = (0.2, 0.5),
           protect_void: bool = False, ignore_id: int = IGNORE_ID) -> Tuple[np.ndarray, Dict]:
    """Return a copy of ``a`` whose region is taken from ``b`` (same shape), plus a JSON-able record.

    ``"vertical"``: a band of columns, ``"horizontal"``: a band of rows, ``"box"``: a rectangle;
    the band width (box side) is ``fraction`` of the width/height. With ``protect_void``, void
    pixels of ``a`` stay void.
    """
    if a.shape != b.shape:
        raise ValueError(f"cutmix needs maps of one shape, got {a.shape} and {b.shape}")
    h, w = a.shape
    mode = str(modes[int(rng.integers(len(modes)))])
    fr = float(rng.uniform(fraction[0], fraction[1]))
    y0, y1, x0, x1 = 0, h, 0, w
    if mode in ("vertical", "box"):
        bw = min(w, max(1, int(round(fr * w))))
        x0 = int(rng.integers(0, w - bw + 1))
        x1 = x0 + bw
    if mode in ("horizontal", "box"):
        bh = min(h, max(1, int(round(fr * h))))
        y0 = int(rng.integers(0, h - bh + 1))
        y1 = y0 + bh
    if mode not in MIX_MODES:
        raise ValueError(f"unknown mix mode {mode!r}; choose from {MIX_MODES}")
    out = a.copy()
    if protect_void:
        region = out[y0:y1, x0:x1]
        keep = region == ignore_id
        region[...] = b[y0:y1, x0:x1]
        region[keep] = ignore_id
    else:
        out[y0:y1, x0:x1] = b[y0:y1, x0:x1]
    return out, {"mode": mode, "region": [y0, y1, x0, x1]}
