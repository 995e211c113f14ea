"""Mask values that are not classes: interpolation blends, stray pixels and JPEG noise.

A label map holds a few values, each covering regions. Masks that were resized with
bilinear/bicubic interpolation, anti-aliased, or saved as JPEG also hold values *between*
the classes along every edge; discovering the classes from the values would turn each of
them into a class (``class_128`` with a handful of pixels). A raw mask value is a **probable
artefact** when, over the whole dataset, any of these holds:

- **tiny share**: it covers less than ``min_share`` of all mask pixels (default
  :data:`DEFAULT_MIN_SHARE` = 0.0001, i.e. 0.01 %; ``?min_share=X`` changes it, ``0`` turns
  this test off);
- **in-between border pixels**: at least :data:`EDGE_SHARE` (90 %) of its pixels lie on a border
  between two *different* other values and lie numerically between them (per channel for
  colour masks): what interpolating between two classes produces. Pixels are compared with
  their 4-neighbours;
- **isolated pixels**: at least 90 % of its pixels have no 4-neighbour of the same value;
- **JPEG noise** (only for JPEG masks, read when ``?jpeg_masks=1``): a more frequent value (or a
  class of the class table) lies within :data:`JPEG_TOLERANCE` of it.

Values of an explicit class table (``classes.json``, ``?palette=``, CamVid, Cityscapes...) and
declared void values are never artefacts.

Snapping (``?snap=nearest``) replaces every artefact pixel by the **majority of its clean
8-neighbours** (pixels holding a class or void value); ties go to the class whose value is
nearest the artefact value. Pixels with no clean neighbour take the result of the next
pass (the fill grows inwards from the clean pixels); a pixel no pass reaches takes the class
nearest by value. ``?snap=void`` makes artefact pixels void (ignored by losses and metrics).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

DEFAULT_MIN_SHARE = 1e-4
EDGE_SHARE = 0.9
JPEG_TOLERANCE = 16
MAX_SNAP_PASSES = 64
FILES_SHOWN = 3


def codes_of(raw: np.ndarray) -> np.ndarray:
    """Raw mask -> int64 codes (gray values as they are, colours as ``r<<16 | g<<8 | b``)."""
    if raw.ndim == 3:
        rgb = raw[..., :3].astype(np.int64)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return raw.astype(np.int64)


def code_of(value) -> int:
    if isinstance(value, (tuple, list)):
        return (int(value[0]) << 16) | (int(value[1]) << 8) | int(value[2])
    return int(value)


def value_of(code: int, rgb: bool):
    """Code -> the value as users write it: an int, or an ``(r, g, b)`` tuple."""
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255) if rgb else int(code)


def gray_to_rgb_code(g: int) -> int:
    return (g << 16) | (g << 8) | g


def _channels(code: np.ndarray, rgb: bool) -> np.ndarray:
    if not rgb:
        return code[..., None]
    return np.stack([(code >> 16) & 255, (code >> 8) & 255, code & 255], axis=-1)


def pixel_flags(raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, in_between_border, isolated)`` for every pixel of a raw mask (4-neighbourhood).

    Only pixels with a differing 4-neighbour can be either, so the neighbourhood test runs on
    those alone (a few percent of a clean label map).
    """
    rgb = raw.ndim == 3
    c = codes_of(raw) if rgb else raw
    p = np.pad(c, 1, mode="edge")  # outside the image counts as the same value
    nbs = (p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:])
    edge = (nbs[0] != c) | (nbs[1] != c) | (nbs[2] != c) | (nbs[3] != c)
    border = np.zeros(c.shape, bool)
    isolated = np.zeros(c.shape, bool)
    ys, xs = np.nonzero(edge)
    if len(ys):
        v = c[ys, xs].astype(np.int64)
        nb = np.stack([p[ys, xs + 1], p[ys + 2, xs + 1], p[ys + 1, xs], p[ys + 1, xs + 2]], axis=1).astype(np.int64)
        d = nb != v[:, None]
        isolated[ys, xs] = d.all(axis=1)
        big = np.int64(1 << 40)
        two = np.where(d, nb, big).min(axis=1) < np.where(d, nb, -big).max(axis=1)  # two different other values
        vch, nch = _channels(v, rgb), _channels(nb, rgb)  # (N, C), (N, 4, C)
        dd = d[..., None]
        lo = np.where(dd, nch, big).min(axis=1)
        hi = np.where(dd, nch, -big).max(axis=1)
        border[ys, xs] = two & np.all((lo <= vch) & (vch <= hi), axis=-1)
    return codes_of(raw), border, isolated


@dataclass
class ValueStats:
    """Per raw value over a set of masks: pixels, in-between border pixels, isolated pixels, files."""

    count: Dict[int, int] = field(default_factory=dict)
    border: Dict[int, int] = field(default_factory=dict)
    isolated: Dict[int, int] = field(default_factory=dict)
    files: Dict[int, List[str]] = field(default_factory=dict)
    jpeg_codes: set = field(default_factory=set)
    rgb: bool = False
    total: int = 0
    unreadable: List[str] = field(default_factory=list)  # "<path>: <problem>" of masks that could not be read

    @staticmethod
    def of_mask(raw: np.ndarray, path: str = "", jpeg: bool = False) -> "ValueStats":
        c, border, isolated = pixel_flags(raw)
        vals, inv, counts = np.unique(c.ravel(), return_inverse=True, return_counts=True)
        inv = inv.ravel()
        b = np.bincount(inv, weights=border.ravel(), minlength=len(vals))
        i = np.bincount(inv, weights=isolated.ravel(), minlength=len(vals))
        st = ValueStats(rgb=raw.ndim == 3, total=int(c.size))
        for v, n, nb, ni in zip(vals.tolist(), counts.tolist(), b.tolist(), i.tolist()):
            st.count[v], st.border[v], st.isolated[v] = int(n), int(nb), int(ni)
            st.files[v] = [path] if path else []
        if jpeg:
            st.jpeg_codes = set(st.count)
        return st

    def _to_rgb(self) -> None:
        if self.rgb:
            return
        for d in (self.count, self.border, self.isolated, self.files):
            items = list(d.items())
            d.clear()
            d.update((gray_to_rgb_code(k), v) for k, v in items)
        self.jpeg_codes = {gray_to_rgb_code(k) for k in self.jpeg_codes}
        self.rgb = True

    def merge(self, other: "ValueStats") -> None:
        if other.rgb and not self.rgb:
            self._to_rgb()
        if self.rgb and not other.rgb:
            other._to_rgb()
        for k, n in other.count.items():
            self.count[k] = self.count.get(k, 0) + n
            self.border[k] = self.border.get(k, 0) + other.border[k]
            self.isolated[k] = self.isolated.get(k, 0) + other.isolated[k]
            fl = self.files.setdefault(k, [])
            fl.extend(other.files[k][: max(0, FILES_SHOWN - len(fl))])
        self.jpeg_codes |= other.jpeg_codes
        self.total += other.total

    @property
    def codes(self) -> List[int]:
        return sorted(self.count)


def _distance(a: int, b: int, rgb: bool) -> int:
    if not rgb:
        return abs(a - b)
    return max(abs(((a >> s) & 255) - ((b >> s) & 255)) for s in (16, 8, 0))


def find_artefacts(stats: ValueStats, min_share: float = DEFAULT_MIN_SHARE, candidates: Optional[Iterable[int]] = None,
                   known: Iterable[int] = (), jpeg: bool = False) -> Dict[int, str]:
    """Probable artefact codes among ``candidates`` (default: every value) -> the reason, in words.

    ``known`` are codes of real classes (an explicit class table); ``jpeg`` turns on the JPEG
    noise test for values seen in JPEG masks.
    """
    known = set(known)
    cands = sorted(set(stats.count) if candidates is None else set(candidates) & set(stats.count))
    total = max(1, stats.total)
    out: Dict[int, str] = {}
    for code in cands:
        n = stats.count[code]
        share = n / total
        if min_share and share < min_share:
            out[code] = (f"{n} pixel(s), {100 * share:.4f}% of all mask pixels (under min_share={min_share:g})")
        elif stats.border[code] >= EDGE_SHARE * n:
            out[code] = (f"{100 * stats.border[code] / n:.0f}% of its {n} pixels lie on borders between two other "
                         "values, in between them (an interpolation blend)")
        elif stats.isolated[code] >= EDGE_SHARE * n:
            out[code] = f"{100 * stats.isolated[code] / n:.0f}% of its {n} pixels are isolated single pixels"
    if jpeg and stats.jpeg_codes:
        pool = set(stats.count) | known
        for code in cands:
            if code in out or code not in stats.jpeg_codes:
                continue
            n = stats.count[code]
            near = [k for k in pool if k != code and (k in known or stats.count.get(k, 0) > n)
                    and _distance(k, code, stats.rgb) <= JPEG_TOLERANCE]
            if near:
                best = max(near, key=lambda k: (k in known, stats.count.get(k, 0)))
                out[code] = (f"JPEG compression noise around {value_of(best, stats.rgb)} "
                             f"(within {JPEG_TOLERANCE} of it, {n} pixel(s))")
    return out


def describe(values: Dict, files: Dict = None, limit: int = 6) -> str:
    """``{value: reason}`` -> one line for messages."""
    parts = []
    for v, why in list(values.items())[:limit]:
        where = ""
        if files and files.get(v):
            where = " in " + ", ".join(files[v][:FILES_SHOWN]) + (" ..." if len(files[v]) >= FILES_SHOWN else "")
        parts.append(f"{v} ({why}{where})")
    more = f" (+{len(values) - limit} more)" if len(values) > limit else ""
    return "; ".join(parts) + more


SHORT_HINT = ("add ?snap=nearest to the spec to map them to the neighbouring class (or ?snap=void, ?min_share=X; "
              "?snap=none keeps them as classes)")
FIX_HINT = ("fix the masks (resize them with nearest-neighbour, save them as PNG) or add to the spec: "
            "?snap=nearest (artefact pixels take the class of their neighbours), ?snap=void (they are ignored), "
            "?min_share=X (the pixel share under which a value is an artefact; 0 turns that test off) or "
            "?snap=none (keep every value as a class)")


def class_values(table, rgb: bool) -> np.ndarray:
    """Code of each class id (for the value-distance tie-break and the fallback)."""
    if table.source_values:
        vals = [code_of(v) if isinstance(v, tuple) or not rgb else gray_to_rgb_code(int(v))
                for v in table.source_values]
    elif rgb:
        vals = [code_of(c) for c in table.colors]
    else:
        vals = list(range(table.num_classes))
    return np.array(vals, dtype=np.int64)


def _dist_to_classes(codes: np.ndarray, cls: np.ndarray, rgb: bool) -> np.ndarray:
    """``(N,) codes`` x ``(K,) class codes`` -> ``(N, K)`` value distances."""
    if not rgb:
        return np.abs(codes[:, None] - cls[None, :])
    a, b = _channels(codes, True)[:, None, :], _channels(cls, True)[None, :, :]
    return np.abs(a - b).max(axis=-1)


def snap(ids: np.ndarray, raw: np.ndarray, fix: np.ndarray, table, mode: str = "nearest",
         void_id: int = 255) -> np.ndarray:
    """Class ids with the ``fix`` pixels (artefacts) replaced; see the module docstring."""
    out = ids.astype(np.int32).copy()
    if mode == "void":
        out[fix] = void_id
        return out
    rgb = raw.ndim == 3
    codes = codes_of(raw)
    cls = class_values(table, rgb)
    k = len(cls)
    todo = fix.copy()
    out[todo] = -1
    h, w = out.shape
    offs = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    for _ in range(MAX_SNAP_PASSES):
        ys, xs = np.nonzero(todo)
        if not len(ys):
            break
        p = np.pad(out, 1, constant_values=-1)
        nb = np.stack([p[ys + 1 + dy, xs + 1 + dx] for dy, dx in offs], axis=1)  # (N, 8)
        valid = nb >= 0
        has = valid.any(axis=1)
        if not has.any():
            break
        ys, xs, nb, valid = ys[has], xs[has], nb[has], valid[has]
        same = (nb[:, :, None] == nb[:, None, :]) & valid[:, None, :]
        votes = same.sum(axis=2).astype(np.float64)  # per neighbour: how many neighbours share its id
        # tie-break: the class nearest by value (void last)
        dist = np.ones(nb.shape)
        if k:
            d = _dist_to_classes(codes[ys, xs], cls, rgb).astype(np.float64)  # (N, K)
            d = d / (d.max() + 1.0)
            is_cls = (nb >= 0) & (nb < k)
            dist = np.where(is_cls, np.take_along_axis(d, np.clip(nb, 0, max(0, k - 1)), axis=1), 1.0)
        score = np.where(valid, votes - 0.5 * dist, -np.inf)
        best = nb[np.arange(len(nb)), score.argmax(axis=1)]
        out[ys, xs] = best
        todo[ys, xs] = False
    if todo.any():  # no clean pixel reachable: the class nearest by value
        ys, xs = np.nonzero(todo)
        out[ys, xs] = (_dist_to_classes(codes[ys, xs], cls, rgb).argmin(axis=1) if k else void_id)
    return out


__all__ = ["DEFAULT_MIN_SHARE", "EDGE_SHARE", "JPEG_TOLERANCE", "ValueStats", "find_artefacts", "pixel_flags",
           "snap", "describe", "FIX_HINT", "SHORT_HINT", "codes_of", "code_of", "value_of"]
