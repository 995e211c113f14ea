"""Built-in procedural datasets, so every model and the demo run offline.

Two datasets, both deterministic for a seed and drawn with numpy + OpenCV only (no TensorFlow):

``demo-scenes``  street-like perspective scenes with exact label maps
    (:data:`SCENE_CLASSES`: sky, building, road, sidewalk, vegetation, car, person, pole, sign).
    :func:`render_scene` draws one; :func:`write_demo_scenes` writes the ``pairs`` layout::

        OUT/images/scene_00000.png   RGB image
        OUT/masks/scene_00000.png    8-bit single-channel class ids 0..K-1
        OUT/classes.json             SCENE_CLASSES
        OUT/split.json               {"train": [stems], "val": [stems], ...} -- a suggestion only;
                                     the ``pairs`` loader ignores it and splits on its own.

``demo-classes``  37 imbalanced classes of 64x64 images (about 1,100 in total), each class a
    combination of shape, colour, fill texture and background type, with position, scale,
    rotation, colour and noise variation and a few deliberately confusable class pairs.
    :func:`render_class_image` draws one; :func:`write_demo_classes` writes the
    ``classfolders`` layout ``OUT/<class_name>/<class_name>_0000.png`` plus ``OUT/classes.json``.
    :data:`CLASSIFICATION_CLASSES` is sorted alphabetically, so the class-folder loader's ids
    (sorted folder names) are the same as the ids used here.

Every sample uses its own generator seeded from ``(dataset, seed, index)`` through
``numpy.random.SeedSequence``: a sample does not depend on which others were drawn before it.
Geometry is expressed relative to the image size, so any ``(H, W)`` works.
"""
from __future__ import annotations

import colorsys
import json
import os
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from synthseg_tf.data.classes import ClassTable
from synthseg_tf.utils import atomic_directory

__all__ = [
    "SCENE_CLASSES", "SCENE_CLASS_NAMES", "render_scene", "render_scenes", "write_demo_scenes",
    "CLASSIFICATION_CLASSES", "CLASSIFICATION_TABLE", "NUM_CLASSIFICATION_CLASSES", "demo_class_counts",
    "render_class_image", "write_demo_classes",
]

# --------------------------------------------------------------------------------------------
# class tables

SCENE_CLASS_NAMES = ("sky", "building", "road", "sidewalk", "vegetation", "car", "person", "pole", "sign")
SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, CAR, PERSON, POLE, SIGN = range(len(SCENE_CLASS_NAMES))
# Cityscapes-like display colours.
_SCENE_COLORS = [(70, 130, 180), (70, 70, 70), (128, 64, 128), (244, 35, 232), (107, 142, 35),
                 (0, 0, 142), (220, 20, 60), (153, 153, 153), (220, 220, 0)]
SCENE_CLASSES = ClassTable(names=list(SCENE_CLASS_NAMES), colors=_SCENE_COLORS)

_SCENE_TAG = 0x5C3E7E  # separate random streams for the two datasets
_CLASS_TAG = 0xC1A55E
_COUNT_TAG = 0xC0C0


def _rng(*keys: int) -> np.random.Generator:
    ks = []
    for k in keys:
        k = int(k)
        if k < 0:
            raise ValueError(f"seeds and indices must be non-negative integers, got {k}")
        ks.append(k)
    return np.random.default_rng(np.random.SeedSequence(ks))


class _FastRNG:
    """A ``numpy.random.Generator`` whose scalar draws come from a pre-drawn pool.

    The scene renderer makes a few hundred scalar draws per image; serving them from a list is
    several times cheaper than a Generator call each. Array draws go to the Generator.
    """

    __slots__ = ("g", "_pool", "_i")

    def __init__(self, g: np.random.Generator):
        self.g = g
        self._pool = g.random(512).tolist()
        self._i = 0

    def _next(self) -> float:
        i = self._i
        if i >= 512:
            self._pool = self.g.random(512).tolist()
            i = 0
        self._i = i + 1
        return self._pool[i]

    def random(self, size=None, dtype=np.float64):
        return self._next() if size is None else self.g.random(size, dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None):
        return low + (high - low) * self._next() if size is None else self.g.uniform(low, high, size)

    def integers(self, low, high=None, size=None):
        if size is not None:
            return self.g.integers(low, high, size)
        if high is None:
            low, high = 0, low
        return min(high - 1, low + int((high - low) * self._next()))

    def choice(self, a, p=None):
        items = range(a) if isinstance(a, (int, np.integer)) else a
        u = self._next()
        if p is None:
            return items[min(len(items) - 1, int(u * len(items)))]
        acc = 0.0
        for item, pi in zip(items, p):
            acc += pi
            if u < acc:
                return item
        return items[-1]

    def poisson(self, lam):
        return int(self.g.poisson(lam))


def _check_size(size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(s) for s in size)
    if h < 16 or w < 16:
        raise ValueError(f"image size must be at least 16x16, got {h}x{w}")
    return h, w


# --------------------------------------------------------------------------------------------
# street scenes
#
# A pinhole camera looks down a straight street. World coordinates: x across the street (road
# centre 0), z up (metres above ground), D depth along the street (metres). The bottom image
# row sees the ground at depth D0; ``t = D0 / D`` is the perspective scale (1 at the bottom
# row, 0 at the horizon) and ``S`` the pixels per metre at t == 1.

_BUILDING_COLORS = np.array([(178, 160, 130), (150, 146, 140), (160, 95, 75), (200, 190, 170), (120, 105, 95),
                             (190, 175, 120), (135, 140, 150), (175, 130, 100), (105, 110, 115), (215, 205, 195)],
                            np.float32)
_CAR_COLORS = np.array([(230, 230, 232), (25, 25, 28), (170, 172, 178), (100, 102, 108), (160, 30, 30),
                        (35, 60, 140), (30, 80, 55), (200, 170, 40), (120, 80, 50), (90, 30, 40)], np.float32)
_CAR_P = np.array([.2, .17, .18, .14, .08, .08, .05, .03, .03, .04])
_CLOTHES = np.array([(40, 40, 45), (30, 40, 90), (150, 30, 35), (200, 200, 200), (60, 90, 60),
                     (120, 100, 70), (90, 60, 120), (210, 150, 40), (80, 80, 85)], np.float32)
_SKIN = np.array([(225, 190, 160), (200, 150, 115), (150, 100, 70), (95, 65, 45)], np.float32)
# per-class texture noise amplitude (grey levels)
_TEX_AMP = np.array([2.5, 7.0, 7.0, 6.0, 14.0, 4.0, 5.0, 4.0, 3.0], np.float32)


class _Scene:
    def __init__(self, rng: np.random.Generator, H: int, W: int):
        self.rng, self.H, self.W = rng, H, W
        self.y_h = H * rng.uniform(0.36, 0.5)          # horizon row
        self.x_v = W * rng.uniform(0.4, 0.6)           # vanishing point column
        self.S = W * rng.uniform(0.085, 0.12)          # px per metre at the bottom row
        self.D0 = rng.uniform(7.0, 10.0)               # depth seen by the bottom row
        self.hc = (H - self.y_h) / self.S              # camera height that makes the geometry consistent
        self.R = rng.uniform(3.5, 6.5)                 # half road width
        self.SW = rng.uniform(2.0, 4.5)                # sidewalk width
        self.x_cam = rng.uniform(-0.45, 0.45) * self.R
        self.height_scale = rng.uniform(0.4, 1.0)      # downtown vs low-rise street
        self.img = np.empty((H, W, 3), np.float32)
        self.mask = np.empty((H, W), np.uint8)
        self.shadow_map: Optional[np.ndarray] = None

    # -- projection and drawing helpers (image and mask always drawn together)
    def proj(self, pts) -> np.ndarray:
        """World points ``(x, z, D)`` -> ``(n, 2)`` pixel coordinates."""
        k = self.S * self.D0
        xv, yh, xc, hc = self.x_v, self.y_h, self.x_cam, self.hc
        return np.array([(xv + (x - xc) * k / d, yh + (hc - z) * k / d) for x, z, d in pts], np.float64)

    def fill(self, px: np.ndarray, color, cls: int) -> None:
        p = np.rint(px * 16.0).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.img, [p], (float(color[0]), float(color[1]), float(color[2])), cv2.LINE_8, 4)
        cv2.fillPoly(self.mask, [p], int(cls), cv2.LINE_8, 4)

    def face(self, pts, color, cls: int) -> None:
        self.fill(self.proj(pts), color, cls)

    def shadow(self, pts) -> None:
        """Mark a ground polygon as shadowed (applied to road/sidewalk pixels at the end)."""
        if self.shadow_map is None:
            self.shadow_map = np.zeros((self.H, self.W), np.uint8)
        p = np.rint(self.proj(pts) * 16.0).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(self.shadow_map, [p], 1, cv2.LINE_8, 4)

    def box(self, x0, x1, z0, z1, dn, df, color, cls, side_shade=0.78, top_shade=1.08, top_color=None) -> None:
        """The camera-facing faces of an axis-aligned box (side, top, near)."""
        color = np.asarray(color, np.float32)
        if x1 < self.x_cam or x0 > self.x_cam:
            xs = x1 if x1 < self.x_cam else x0
            self.face([(xs, z0, dn), (xs, z0, df), (xs, z1, df), (xs, z1, dn)], color * side_shade, cls)
        if z1 < self.hc:
            self.face([(x0, z1, dn), (x1, z1, dn), (x1, z1, df), (x0, z1, df)],
                      color * top_shade if top_color is None else top_color, cls)
        self.face([(x0, z0, dn), (x1, z0, dn), (x1, z1, dn), (x0, z1, dn)], color, cls)

    def vbar(self, x, w, z0, z1, d, color, cls) -> None:
        """A thin vertical bar at least one pixel wide (poles, trunks, legs)."""
        p = self.proj([(x - w / 2, z0, d), (x + w / 2, z1, d)])
        (xa, yb), (xb, ya) = p
        if xb - xa < 1.0:
            c = (xa + xb) / 2
            xa, xb = c - 0.5, c + 0.5
        self.fill(np.array([(xa, ya), (xb, ya), (xb, yb), (xa, yb)]), color, cls)

    def disc(self, x, z, d, r_m, color, cls) -> None:
        (cx, cy), = self.proj([(x, z, d)])
        r = max(r_m * self.S * self.D0 / d, 0.5)
        c, rr = (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 16))
        cv2.circle(self.img, c, rr, tuple(float(v) for v in color), -1, cv2.LINE_8, 4)
        cv2.circle(self.mask, c, rr, int(cls), -1, cv2.LINE_8, 4)


def _smooth_noise(rng, h, w, cell, H, W) -> np.ndarray:
    """Value noise in [-0.5, 0.5): a coarse random grid of ``cell``-pixel cells, bilinearly upsampled."""
    g = rng.random((max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)), dtype=np.float32)
    return cv2.resize(g, (W, H), interpolation=cv2.INTER_LINEAR) - 0.5


def _jitter(rng, color, amount=18.0) -> np.ndarray:
    f = rng.uniform(0.85, 1.15)
    return np.array([min(255.0, max(0.0, float(v) * f + rng.uniform(-amount, amount))) for v in color], np.float32)


def _draw_sky(sc: _Scene) -> None:
    rng, H, W = sc.rng, sc.H, sc.W
    kind = rng.choice(3, p=[0.6, 0.25, 0.15])
    if kind == 0:    # clear blue
        top = np.array([rng.uniform(40, 90), rng.uniform(100, 140), rng.uniform(180, 235)])
        hor = np.array([rng.uniform(170, 210), rng.uniform(195, 225), rng.uniform(225, 250)])
    elif kind == 1:  # overcast
        v = rng.uniform(150, 210)
        top = np.array([v - 10, v - 5, v + 5])
        hor = np.array([v + 25, v + 25, v + 28])
    else:            # dusk
        top = np.array([rng.uniform(60, 110), rng.uniform(80, 110), rng.uniform(140, 190)])
        hor = np.array([rng.uniform(230, 255), rng.uniform(160, 200), rng.uniform(110, 150)])
    hs = min(H, int(np.ceil(sc.y_h)) + 2)  # rows below this are covered by the ground
    g = np.clip((np.arange(hs, dtype=np.float32) + 0.5) / max(sc.y_h, 1.0), 0, 1) ** 0.8
    sky = (top[None, :] * (1 - g[:, None]) + hor[None, :] * g[:, None]).astype(np.float32)
    cover = rng.uniform(0.0, 0.6) if kind != 1 else rng.uniform(0.0, 0.3)
    if cover > 0.05:
        n = _smooth_noise(rng, H, W, max(H, W) / rng.uniform(4, 9), H, W)[:hs] \
            + _smooth_noise(rng, H, W, max(H, W) / 16, H, W)[:hs] * 0.4
        cloud = np.clip((n + (cover - 0.45)) * 4.0, 0, 1) * 0.85
        white = np.array([245, 245, 248], np.float32) * (0.85 if kind == 1 else 1.0)
        sc.img[:hs] = sky[:, None, :] + (white - sky[:, None, :]) * cloud[..., None]
    else:
        sc.img[:hs] = sky[:, None, :]
    if hs < H:
        sc.img[hs:] = hor.astype(np.float32)
    sc.mask[:] = SKY
    sc.haze = hor.astype(np.float32)


def _draw_skyline(sc: _Scene) -> None:
    """Far-away buildings (and a few trees) sitting on the horizon."""
    rng = sc.rng
    n = rng.integers(6, 16)
    xs = sc.x_v + sc.W * rng.uniform(-0.3, 0.3, n)
    ws = sc.W * rng.uniform(0.02, 0.1, n)
    hs = sc.H * rng.uniform(0.01, 0.09, n)
    base = sc.y_h + 1.0
    for i in np.argsort(-hs):  # tall ones first, small ones in front
        veg = rng.random() < 0.2
        if veg:
            col = np.array([70, 95, 60], np.float32) * 0.5 + sc.haze * 0.5
            cls = VEGETATION
        else:
            col = _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))] * 0.45 + sc.haze * 0.55
            cls = BUILDING
        x0, x1, y0 = xs[i] - ws[i] / 2, xs[i] + ws[i] / 2, base - hs[i]
        sc.fill(np.array([(x0, y0), (x1, y0), (x1, base), (x0, base)]), col, cls)


def _draw_ground(sc: _Scene) -> None:
    rng, H, W = sc.rng, sc.H, sc.W
    r0 = int(np.floor(sc.y_h - 0.5)) + 1  # first row whose centre is below the horizon
    if r0 >= H:
        return
    ys = np.arange(r0, H, dtype=np.float32) + 0.5
    t = ((ys - sc.y_h) / (H - sc.y_h))[:, None]
    D = sc.D0 / t
    xs = np.arange(W, dtype=np.float32)[None, :] + 0.5
    xw = (xs - sc.x_v) / (sc.S * t) + sc.x_cam
    axw = np.abs(xw)
    road = axw < sc.R
    sc.mask[r0:] = np.where(road, ROAD, SIDEWALK).astype(np.uint8)

    road_col = np.float32(rng.uniform(70, 120)) + rng.uniform(-6, 6, 3).astype(np.float32)
    if rng.random() < 0.6:
        side_col = np.float32(rng.uniform(125, 175)) + rng.uniform(-8, 8, 3).astype(np.float32)
    else:  # red/beige pavers
        side_col = _jitter(rng, (165, 130, 110), 12)
    paint = np.array((235, 235, 230) if rng.random() < 0.75 else (225, 190, 60), np.float32) * rng.uniform(0.7, 1.0)
    # 0 road, 1 sidewalk, 2 paint, 3 kerb
    pal = np.stack([road_col, side_col, paint, side_col * 1.12 + 10]).astype(np.float32)
    kind = (~road).astype(np.uint8)

    # lane markings, periodic in depth
    n_lanes = int(rng.choice([2, 2, 3, 4]))
    lane_w = 2 * sc.R / n_lanes
    rel = (xw + sc.R) / lane_w
    k = np.rint(rel)
    dash_len = rng.uniform(3.0, 6.0)
    dash = ((D / (2 * dash_len) + rng.random()) % 1.0) < 0.5
    centre = (k >= 1) & (k <= n_lanes - 1) & (np.abs(rel - k) * lane_w < 0.08) & road
    if n_lanes % 2 == 0 and rng.random() < 0.35:  # solid centre line
        dash = dash | (k == n_lanes // 2)
    marks = centre & dash
    if rng.random() < 0.6:
        marks |= np.abs(axw - (sc.R - 0.35)) < 0.06
    kind[marks] = 2
    kind[(axw >= sc.R) & (axw < sc.R + 0.25)] = 3
    img = pal[kind]
    # brightness factor: wear/stains, pavement grout, building shadow
    fac = 1.0 + 0.18 * _smooth_noise(rng, H - r0, W, W / 10, H - r0, W)
    tile = rng.uniform(1.0, 2.0)
    grout = (kind == 1) & (t > 0.25) & ((((D / tile) % 1.0) < 0.07) | (((axw / tile) % 1.0) < 0.07))
    fac[grout] *= 0.82
    if rng.random() < 0.5:
        edge = sc.R + sc.SW - rng.uniform(1.5, 9.0)
        fac[(xw * sc.shadow_side) > edge] *= rng.uniform(0.55, 0.75)
    img *= fac[..., None]
    sc.img[r0:] = img


def _draw_facades(sc: _Scene, sgn: int) -> None:
    """Buildings (and hedges/park trees) along one side, on the plane x = sgn * (R + SW)."""
    rng, H, W = sc.rng, sc.H, sc.W
    xo = sgn * (sc.R + sc.SW)
    n = 20
    widths = rng.uniform(7.0, 26.0, n)
    start = sc.D0 * rng.uniform(0.3, 1.0)
    bounds = start + np.concatenate([[0.0], np.cumsum(widths)])
    heights = rng.uniform(7.0, 30.0, n) * np.where(rng.random(n) < 0.15, 1.7, 1.0) * sc.height_scale
    veg = rng.random(n) < 0.18
    heights = np.where(veg, rng.uniform(3.0, 9.0, n), heights)
    shade = sc.side_light[sgn]
    cols = _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS), size=n)] * rng.uniform(0.8, 1.15, (n, 1)) \
        + rng.uniform(-15, 15, (n, 3))
    vcols = np.array([60, 95, 45], np.float32) * rng.uniform(0.6, 1.25, (n, 1)) + rng.uniform(-12, 12, (n, 3))
    cols = np.where(veg[:, None], vcols, cols).astype(np.float32) * shade
    n_cols = np.maximum(1, np.round(widths / rng.uniform(2.5, 4.0, n)))
    floor_h = rng.uniform(2.8, 3.6, n)
    glass = np.array([50, 58, 70], np.float32) * rng.uniform(0.6, 1.4, (n, 1)) + rng.uniform(-10, 10, (n, 3))
    haze_d = rng.uniform(120, 400)

    # front faces of buildings that rise above their nearer neighbour (seen past its roof)
    depth_m = 14.0
    for i in range(n - 1, 0, -1):
        if not veg[i] and heights[i] > heights[i - 1] + 0.5 and bounds[i] < 120:
            a = 1 - np.exp(-bounds[i] / haze_d)
            col = (cols[i] * 0.72) * (1 - a) + sc.haze * a
            sc.face([(xo, 0.0, bounds[i]), (xo + sgn * depth_m, 0.0, bounds[i]),
                     (xo + sgn * depth_m, heights[i], bounds[i]), (xo, heights[i], bounds[i])], col, BUILDING)

    bounds, widths, heights = (a.astype(np.float32) for a in (bounds, widths, heights))
    n_cols, floor_h = n_cols.astype(np.float32), floor_h.astype(np.float32)
    xs = np.arange(W, dtype=np.float32) + 0.5
    denom = np.float32((xo - sc.x_cam) * sc.S)
    tx = (xs - sc.x_v) / denom
    valid = tx > 1e-3
    txs = np.where(valid, tx, 1.0)
    Dx = sc.D0 / txs
    seg = np.searchsorted(bounds, Dx) - 1
    valid &= (seg >= 0) & (seg < n) & (Dx < 300)
    seg = np.clip(seg, 0, n - 1)
    if not valid.any():
        return
    y_base = sc.y_h + (H - sc.y_h) * txs
    top = y_base - heights[seg] * sc.S * txs
    # ragged tops for hedges and park trees
    rough = _smooth_noise(rng, 1, W, max(2.0, W / 40), 1, W)[0] * 2.5 + rng.uniform(-0.6, 0.6, W)
    top = np.where(veg[seg], top - rough * sc.S * txs, top)
    ys = np.arange(H, dtype=np.float32)[:, None] + 0.5
    region = valid[None, :] & (ys >= top[None, :]) & (ys < y_base[None, :])
    rr, cc = np.nonzero(region)
    if rr.size == 0:
        return
    # per-pixel work only on the facade pixels (flat arrays)
    sg = seg[cc]
    t_p = txs[cc]
    u = (Dx[cc] - bounds[sg]) / widths[sg]
    vm = (y_base[cc] - (rr + 0.5)) / (sc.S * t_p)  # metres above ground
    isveg = veg[sg]
    bld = ~isveg
    nc = n_cols[sg]
    un = u * nc
    fu = un - np.floor(un)
    fh = floor_h[sg]
    vn = vm / fh
    fv = vn - np.floor(vn)
    hgt = heights[sg]
    win = bld & (fu > 0.22) & (fu < 0.75) & (fv > 0.32) & (fv < 0.8) & (vm > 3.2) & (vm < hgt - 0.8)
    cell = un.astype(np.int64) * 73856093 ^ vn.astype(np.int64) * 19349663 ^ sg * 83492791
    lit = (cell & 1023) < 123
    shop = bld & (vm > 0.3) & (vm < 2.6) & ((un * 0.5 - np.floor(un * 0.5)) > 0.1)
    cornice = bld & (vm > hgt - 0.5)
    # palette per segment: 0 wall, 1 glass, 2 lit window, 3 shop glass, 4 cornice
    pal = np.empty((n, 5, 3), np.float32)
    pal[:, 0] = cols
    pal[:, 1] = glass
    pal[:, 2] = (215, 200, 150)
    pal[:, 3] = glass * 0.8
    pal[:, 4] = cols * 0.75
    kind = np.where(win, np.where(lit, 2, 1), np.where(shop, 3, np.where(cornice, 4, 0)))
    a = (1 - np.exp(-(bounds[:-1] + widths / 2) / haze_d)).astype(np.float32)[:, None, None]  # haze with distance
    pal = pal * (1 - a) + sc.haze * a
    flat = rr * W + cc
    sc.img.reshape(-1, 3)[flat] = pal[sg, kind]
    sc.mask.reshape(-1)[flat] = np.where(isveg, VEGETATION, BUILDING).astype(np.uint8)


def _add_cars(sc: _Scene, objs: list) -> None:
    rng = sc.rng
    n_lanes_vis = max(2, int(round(2 * sc.R / 3.2)))
    lane_w = 2 * sc.R / n_lanes_vis
    n = int(rng.choice([0, 1, 2, 3, 4, 5, 6], p=[0.08, 0.17, 0.22, 0.2, 0.15, 0.1, 0.08]))
    placed: List[Tuple[float, float]] = []
    for _ in range(n):
        lane = rng.integers(n_lanes_vis)
        x = -sc.R + lane_w * (lane + 0.5) + rng.uniform(-0.4, 0.4)
        d = sc.D0 * np.exp(rng.uniform(np.log(0.75), np.log(9.0)))
        if any(abs(x - px) < 2.0 and abs(d - pd) < 7.0 for px, pd in placed):
            continue
        placed.append((x, d))
        objs.append((d, "car", (x, d)))
    for sgn in (-1, 1):  # parked cars along the kerb
        if rng.random() < 0.45:
            d = sc.D0 * rng.uniform(0.7, 2.5)
            for _ in range(rng.integers(1, 5)):
                objs.append((d, "car", (sgn * (sc.R - 1.1), d)))
                d += rng.uniform(5.0, 9.0)


def _draw_car(sc: _Scene, x: float, d: float) -> None:
    rng = sc.rng
    col = _jitter(rng, _CAR_COLORS[rng.choice(len(_CAR_COLORS), p=_CAR_P)], 10)
    van = rng.random() < 0.15
    w = rng.uniform(1.7, 2.0) * (1.08 if van else 1.0)
    length = rng.uniform(4.0, 4.8) * (1.15 if van else 1.0)
    x0, x1 = x - w / 2, x + w / 2
    df = d + length
    dark = np.array([22, 22, 24], np.float32)
    glass = np.array([45, 52, 62], np.float32) * rng.uniform(0.7, 1.3)
    # shadow on the ground (image only: the ground keeps its label)
    sc.shadow([(x0 - 0.2, 0.0, d - 0.3), (x1 + 0.2, 0.0, d - 0.3), (x1 + 0.2, 0.0, df), (x0 - 0.2, 0.0, df)])
    small = w * sc.S * sc.D0 / d < 8.0  # a few pixels wide: fewer details
    # wheels
    if small:
        sc.face([(x0 + 0.05, 0.0, d + 0.4), (x1 - 0.05, 0.0, d + 0.4), (x1 - 0.05, 0.4, d + 0.4),
                 (x0 + 0.05, 0.4, d + 0.4)], dark, CAR)
    else:
        for wx in (x0 + 0.05, x1 - 0.35):
            sc.face([(wx, 0.0, d + 0.4), (wx + 0.3, 0.0, d + 0.4), (wx + 0.3, 0.5, d + 0.4), (wx, 0.5, d + 0.4)],
                    dark, CAR)
        if x1 < sc.x_cam or x0 > sc.x_cam:
            xs = x1 if x1 < sc.x_cam else x0
            for wd in (d + 0.6, df - 1.3):
                sc.face([(xs, 0.0, wd), (xs, 0.0, wd + 0.7), (xs, 0.6, wd + 0.7), (xs, 0.6, wd)], dark, CAR)
    if van:
        zt = rng.uniform(2.0, 2.6)
        sc.box(x0, x1, 0.3, zt, d, df, col, CAR)
        sc.face([(x0 + 0.15, zt * 0.62, d), (x1 - 0.15, zt * 0.62, d), (x1 - 0.15, zt * 0.9, d),
                 (x0 + 0.15, zt * 0.9, d)], glass, CAR)
        zl = 0.8
    else:
        zb = rng.uniform(0.85, 1.0)
        sc.box(x0, x1, 0.3, zb, d, df, col, CAR)
        inset = 0.13
        cd0, cd1 = d + rng.uniform(0.8, 1.3), df - rng.uniform(0.8, 1.4)
        zr = zb + rng.uniform(0.45, 0.6)
        sc.box(x0 + inset, x1 - inset, zb, zr, cd0, cd1, glass, CAR, side_shade=0.9, top_color=col * 1.05)
        zl = zb - 0.25
    if small:
        return
    light = (200, 30, 30) if x > 0 or rng.random() < 0.3 else (235, 230, 200)
    for lx in (x0 + 0.08, x1 - 0.38):
        sc.face([(lx, zl, d), (lx + 0.3, zl, d), (lx + 0.3, zl + 0.15, d), (lx, zl + 0.15, d)], light, CAR)
    sc.face([(x - 0.25, 0.45, d), (x + 0.25, 0.45, d), (x + 0.25, 0.58, d), (x - 0.25, 0.58, d)],
            (225, 225, 225), CAR)  # plate


def _draw_person(sc: _Scene, x: float, d: float) -> None:
    rng = sc.rng
    h = rng.uniform(1.55, 1.9)
    shirt = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 15)
    pants = _jitter(rng, _CLOTHES[rng.integers(3)], 10)
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 8)
    step = rng.uniform(-0.12, 0.12)
    if h * sc.S * sc.D0 / d < 10.0:  # tiny: one body quad and a head
        sc.face([(x - 0.2, 0.0, d), (x + 0.2, 0.0, d), (x + 0.2, 0.83 * h, d), (x - 0.2, 0.83 * h, d)], shirt, PERSON)
        sc.disc(x, 0.9 * h, d, 0.11, skin, PERSON)
        return
    sc.vbar(x - 0.1 + step, 0.15, 0.0, 0.49 * h, d, pants, PERSON)
    sc.vbar(x + 0.1 - step, 0.15, 0.0, 0.49 * h, d, pants, PERSON)
    sc.face([(x - 0.22, 0.47 * h, d), (x + 0.22, 0.47 * h, d), (x + 0.2, 0.83 * h, d), (x - 0.2, 0.83 * h, d)],
            shirt, PERSON)
    sc.vbar(x - 0.25, 0.09, 0.5 * h, 0.8 * h, d, shirt * 0.85, PERSON)
    sc.vbar(x + 0.25, 0.09, 0.5 * h, 0.8 * h, d, shirt * 0.85, PERSON)
    sc.disc(x, 0.9 * h, d, 0.11, skin, PERSON)
    if rng.random() < 0.5:  # hair / hat
        sc.disc(x, 0.93 * h, d, 0.09, _jitter(rng, (40, 30, 25), 20), PERSON)


def _draw_pole(sc: _Scene, x: float, d: float, sgn: int, kind: int) -> None:
    rng = sc.rng
    grey = _jitter(rng, (120, 120, 125), 20)
    if kind == 0:  # street lamp
        hp = rng.uniform(6.0, 9.0)
        sc.vbar(x, 0.16, 0.0, hp, d, grey, POLE)
        arm = -sgn * rng.uniform(1.0, 2.2)
        xa, xb = min(x, x + arm), max(x, x + arm)
        sc.face([(xa, hp - 0.12, d), (xb, hp - 0.12, d), (xb, hp, d), (xa, hp, d)], grey, POLE)
        sc.face([(x + arm - 0.3, hp - 0.22, d), (x + arm + 0.3, hp - 0.22, d), (x + arm + 0.3, hp - 0.05, d),
                 (x + arm - 0.3, hp - 0.05, d)], grey * 0.8, POLE)
        if rng.random() < 0.4:
            _draw_sign(sc, x - sgn * 0.1, rng.uniform(2.4, 3.4), d)
    else:          # sign post
        hp = rng.uniform(2.6, 3.8)
        sc.vbar(x, 0.1, 0.0, hp, d, grey, POLE)
        _draw_sign(sc, x, hp - 0.35, d)
        if rng.random() < 0.3:
            _draw_sign(sc, x, hp - 1.1, d)


def _draw_sign(sc: _Scene, x: float, z: float, d: float) -> None:
    rng = sc.rng
    kind = rng.integers(4)
    s = rng.uniform(0.55, 0.8)
    if kind == 0:    # round: red ring, white or blue inside
        sc.disc(x, z, d, s / 2, _jitter(rng, (200, 30, 35), 10), SIGN)
        sc.disc(x, z, d, s / 2 * 0.72, (235, 235, 235) if rng.random() < 0.6 else (40, 80, 170), SIGN)
    elif kind == 1:  # triangle
        sc.face([(x - s / 2, z - s * 0.4, d), (x + s / 2, z - s * 0.4, d), (x, z + s * 0.5, d)],
                _jitter(rng, (200, 30, 35), 10), SIGN)
        sc.face([(x - s * 0.3, z - s * 0.28, d), (x + s * 0.3, z - s * 0.28, d), (x, z + s * 0.27, d)],
                (240, 240, 235), SIGN)
    elif kind == 2:  # rectangular blue / green information sign
        col = _jitter(rng, (30, 80, 170) if rng.random() < 0.6 else (30, 120, 60), 12)
        w = s * rng.uniform(0.9, 1.6)
        sc.face([(x - w / 2, z - s / 2, d), (x + w / 2, z - s / 2, d), (x + w / 2, z + s / 2, d),
                 (x - w / 2, z + s / 2, d)], col, SIGN)
        sc.face([(x - w * 0.3, z - s * 0.1, d), (x + w * 0.3, z - s * 0.1, d), (x + w * 0.3, z + s * 0.1, d),
                 (x - w * 0.3, z + s * 0.1, d)], (230, 230, 230), SIGN)
    else:            # traffic light
        sc.face([(x - 0.18, z - 0.45, d), (x + 0.18, z - 0.45, d), (x + 0.18, z + 0.45, d),
                 (x - 0.18, z + 0.45, d)], (30, 32, 30), SIGN)
        on = rng.integers(3)
        for i, c in enumerate([(230, 40, 30), (240, 190, 40), (50, 220, 90)]):
            sc.disc(x, z + 0.28 - 0.28 * i, d, 0.1, c if i == on else np.array(c) * 0.25, SIGN)


def _draw_tree(sc: _Scene, x: float, d: float) -> None:
    rng = sc.rng
    trunk_h = rng.uniform(2.0, 3.5)
    r = rng.uniform(1.3, 2.8)
    sc.vbar(x, rng.uniform(0.2, 0.4), 0.0, trunk_h + r * 0.3, d, _jitter(rng, (85, 65, 45), 12), VEGETATION)
    base = _jitter(rng, (65, 105, 45), 15)
    for _ in range(rng.integers(3, 7) if r * sc.S * sc.D0 / d > 6 else 2):
        ox, oz = rng.uniform(-0.6, 0.6) * r, rng.uniform(-0.3, 0.6) * r
        sc.disc(x + ox, trunk_h + r * 0.8 + oz, d - 0.01, r * rng.uniform(0.45, 0.8), base * rng.uniform(0.7, 1.2),
                VEGETATION)


def _add_street_furniture(sc: _Scene, objs: list) -> None:
    rng = sc.rng
    # poles and signs near the kerb
    for sgn in (-1, 1):
        for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
            d = sc.D0 * np.exp(rng.uniform(np.log(1.1), np.log(8.0)))
            objs.append((d, "pole", (sgn * (sc.R + rng.uniform(0.3, 0.7)), d, sgn, int(rng.random() < 0.45))))
    # trees on the outer half of the sidewalk
    for sgn in (-1, 1):
        if rng.random() < 0.55:
            d = sc.D0 * rng.uniform(0.8, 2.0)
            spacing = rng.uniform(7.0, 14.0)
            for _ in range(rng.integers(1, 6)):
                objs.append((d, "tree", (sgn * (sc.R + sc.SW * rng.uniform(0.55, 0.8)), d)))
                d += spacing * rng.uniform(0.8, 1.2)
    # people: in about 30% of the scenes
    if rng.random() < 0.3:
        for _ in range(1 + rng.poisson(0.8)):
            sgn = rng.choice([-1, 1])
            d = sc.D0 * np.exp(rng.uniform(np.log(0.8), np.log(5.0)))
            on_road = rng.random() < 0.1
            x = rng.uniform(-sc.R + 0.5, sc.R - 0.5) if on_road else sgn * (sc.R + rng.uniform(0.5, max(0.6, sc.SW - 0.4)))
            objs.append((d, "person", (x, d)))


def render_scene(seed: int, index: int, size: Tuple[int, int] = (128, 128)) -> Tuple[np.ndarray, np.ndarray]:
    """One street scene: ``(image uint8 HxWx3 RGB, mask uint8 HxW of SCENE_CLASSES ids)``.

    Deterministic in ``(seed, index, size)`` and independent of any other call.
    """
    H, W = _check_size(size)
    rng = _FastRNG(_rng(_SCENE_TAG, seed, index))
    sc = _Scene(rng, H, W)
    sun = rng.choice([-1, 1])
    sc.shadow_side = -sun
    lit = rng.uniform(0.95, 1.1)
    dim = rng.uniform(0.6, 0.85)
    sc.side_light = {sun: lit, -sun: dim}

    _draw_sky(sc)
    _draw_skyline(sc)
    _draw_ground(sc)
    _draw_facades(sc, -1)
    _draw_facades(sc, 1)

    objs: list = []
    _add_cars(sc, objs)
    _add_street_furniture(sc, objs)
    objs.sort(key=lambda o: -o[0])  # far to near: nearer objects occlude
    for _, kind, args in objs:
        if kind == "car":
            _draw_car(sc, *args)
        elif kind == "pole":
            _draw_pole(sc, *args)
        elif kind == "tree":
            _draw_tree(sc, *args)
        else:
            _draw_person(sc, *args)

    img, mask = sc.img, sc.mask
    # texture: per-class noise, leafy vegetation, car shadows, a little colour noise
    fine = rng.random((H, W), dtype=np.float32) - 0.5
    mid = _smooth_noise(rng, H, W, max(2.0, W / 32), H, W)
    tex = _TEX_AMP[mask] * (fine * 1.6 + mid * 1.2)
    mul = np.ones((H, W), np.float32)
    veg = mask == VEGETATION
    if veg.any():
        leaf = _smooth_noise(rng, H, W, max(1.5, W / 48), H, W)
        mul += 0.9 * leaf * veg
    if sc.shadow_map is not None:  # car shadows darken only the ground they fall on
        mul[(sc.shadow_map == 1) & ((mask == ROAD) | (mask == SIDEWALK))] *= 0.5
    img *= mul[..., None]
    img += tex[..., None]
    cn = rng.random((max(2, H // 16 + 1), max(2, W // 16 + 1), 3), dtype=np.float32)
    cn = (cn - np.float32(0.5)) * rng.uniform(0, 10, 3).astype(np.float32)
    img += cv2.resize(cn, (W, H), interpolation=cv2.INTER_LINEAR)
    # global lighting: exposure, colour temperature, contrast
    temp = rng.uniform(-0.1, 0.1)
    c = rng.uniform(0.85, 1.15)
    img *= np.array([1 + temp, 1.0, 1 - temp], np.float32) * np.float32(rng.uniform(0.7, 1.15) * c)
    img += np.float32(128.0 * (1 - c) + 0.5)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 0.8))
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), mask


def render_scenes(seed: int, indices: Sequence[int], size: Tuple[int, int] = (128, 128)) -> Tuple[np.ndarray, np.ndarray]:
    """Several scenes stacked: ``(images NxHxWx3, masks NxHxW)``."""
    pairs = [render_scene(seed, int(i), size) for i in indices]
    H, W = _check_size(size)
    if not pairs:
        return np.zeros((0, H, W, 3), np.uint8), np.zeros((0, H, W), np.uint8)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# --------------------------------------------------------------------------------------------
# classification set

# name -> (shape, hue in degrees or colour word, texture, background)
_CONCEPTS: Dict[str, Tuple[str, str, str, str]] = {
    "red_disc": ("disc", "red", "plain", "light"),
    "orange_disc": ("disc", "orange", "plain", "light"),
    "blue_disc_dotted": ("disc", "blue", "dots", "dark"),
    "yellow_disc_checked": ("disc", "yellow", "checker", "noisy"),
    "brown_disc": ("disc", "brown", "plain", "grid"),
    "green_ring": ("ring", "green", "plain", "noisy"),
    "purple_ring": ("ring", "purple", "plain", "light"),
    "yellow_ring": ("ring", "yellow", "plain", "dark"),
    "red_square": ("square", "red", "plain", "gradient"),
    "blue_square": ("square", "blue", "plain", "light"),
    "blue_square_striped": ("square", "blue", "stripes", "light"),
    "teal_square_checked": ("square", "teal", "checker", "dark"),
    "gray_square": ("square", "gray", "plain", "grid"),
    "green_triangle": ("triangle", "green", "plain", "light"),
    "lime_triangle": ("triangle", "lime", "plain", "light"),
    "orange_triangle_striped": ("triangle", "orange", "stripes", "noisy"),
    "yellow_star": ("star", "yellow", "plain", "dark"),
    "pink_star": ("star", "pink", "plain", "light"),
    "red_star_dotted": ("star", "red", "dots", "gradient"),
    "gray_cross": ("cross", "gray", "plain", "noisy"),
    "blue_cross": ("cross", "blue", "plain", "light"),
    "green_cross_checked": ("cross", "green", "checker", "dark"),
    "purple_hexagon": ("hexagon", "purple", "plain", "gradient"),
    "pink_hexagon": ("hexagon", "pink", "plain", "gradient"),
    "brown_hexagon_dotted": ("hexagon", "brown", "dots", "light"),
    "yellow_bar": ("bar", "yellow", "plain", "light"),
    "teal_bar_striped": ("bar", "teal", "stripes", "dark"),
    "red_bar": ("bar", "red", "plain", "noisy"),
    "orange_crescent": ("crescent", "orange", "plain", "dark"),
    "blue_crescent": ("crescent", "blue", "plain", "light"),
    "gray_crescent_dotted": ("crescent", "gray", "dots", "gradient"),
    "green_diamond": ("diamond", "green", "plain", "noisy"),
    "teal_diamond": ("diamond", "teal", "plain", "noisy"),
    "pink_diamond_checked": ("diamond", "pink", "checker", "light"),
    "brown_arrow": ("arrow", "brown", "plain", "light"),
    "purple_arrow_striped": ("arrow", "purple", "stripes", "dark"),
    "red_arrow": ("arrow", "red", "plain", "grid"),
}
CLASSIFICATION_CLASSES: List[str] = sorted(_CONCEPTS)
NUM_CLASSIFICATION_CLASSES = len(CLASSIFICATION_CLASSES)
CLASSIFICATION_TABLE = ClassTable(names=list(CLASSIFICATION_CLASSES))
assert NUM_CLASSIFICATION_CLASSES == 37

# hue (degrees), saturation range, value range
_HUES = {
    "red": (0, (0.65, 0.95), (0.6, 0.95)), "orange": (26, (0.7, 0.95), (0.75, 1.0)),
    "yellow": (52, (0.65, 0.95), (0.8, 1.0)), "lime": (88, (0.6, 0.9), (0.65, 0.95)),
    "green": (125, (0.55, 0.9), (0.45, 0.8)), "teal": (172, (0.55, 0.9), (0.5, 0.85)),
    "blue": (222, (0.6, 0.95), (0.55, 0.95)), "purple": (278, (0.45, 0.8), (0.45, 0.8)),
    "pink": (322, (0.35, 0.7), (0.8, 1.0)), "brown": (24, (0.5, 0.75), (0.3, 0.5)),
    "gray": (0, (0.0, 0.08), (0.35, 0.75)),
}


def demo_class_counts(seed: int = 0) -> np.ndarray:
    """Images per class (``int64[37]``), 1,100 in total and imbalanced: 6 rare classes with 10-24
    images, 7 frequent ones with over 40, the rest 25-40. Deterministic for ``seed``."""
    rng = _rng(_COUNT_TAG, seed)
    k = NUM_CLASSIFICATION_CLASSES
    counts = np.empty(k, np.int64)
    order = rng.permutation(k)
    rare, big, mid = order[:6], order[6:13], order[13:]
    counts[rare] = rng.integers(10, 25, rare.size)
    counts[big] = rng.integers(41, 56, big.size)
    counts[mid] = rng.integers(25, 31, mid.size)
    # bring the total to exactly 1,100, moving only the middle (25..40) and frequent (41..70) classes
    lo = np.zeros(k, np.int64)
    hi = np.zeros(k, np.int64)
    lo[mid], hi[mid] = 25, 40
    lo[big], hi[big] = 41, 70
    diff = 1100 - int(counts.sum())
    while diff:
        step = 1 if diff > 0 else -1
        ok = np.nonzero((counts + step >= lo) & (counts + step <= hi) & (hi > 0))[0]
        i = ok[rng.integers(ok.size)]
        counts[i] += step
        diff -= step
    return counts


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def _shape_points(shape: str, rng) -> np.ndarray:
    """Outline in unit coordinates (radius ~1) for polygon shapes."""
    if shape == "square":
        a = rng.uniform(0.75, 1.0)
        return np.array([(-1, -a), (1, -a), (1, a), (-1, a)], np.float64) * 0.85
    if shape == "triangle":
        ang = np.deg2rad([90, 210, 330]) + rng.uniform(-0.15, 0.15, 3)
        return np.stack([np.cos(ang), np.sin(ang)], 1)
    if shape == "star":
        n = 5
        ang = np.arange(2 * n) * np.pi / n
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)
    if shape == "cross":
        a = rng.uniform(0.25, 0.38)
        return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                         (-1, -a), (-a, -a)], np.float64)
    if shape == "hexagon":
        ang = np.arange(6) * np.pi / 3
        return np.stack([np.cos(ang), np.sin(ang)], 1)
    if shape == "bar":
        a = rng.uniform(0.22, 0.35)
        return np.array([(-1, -a), (1, -a), (1, a), (-1, a)], np.float64)
    if shape == "diamond":
        a = rng.uniform(0.55, 0.75)
        return np.array([(0, -1), (a, 0), (0, 1), (-a, 0)], np.float64)
    if shape == "arrow":
        a, b = rng.uniform(0.16, 0.26), rng.uniform(0.45, 0.6)
        return np.array([(-1, -a), (0.1, -a), (0.1, -b), (1, 0), (0.1, b), (0.1, a), (-1, a)], np.float64)
    raise ValueError(shape)


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((h_deg % 360) / 360.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))),
                    np.float32) * 255


def _shape_mask(shape: str, rng, h: int, w: int, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    c = (int(round(cx * 16)), int(round(cy * 16)))
    if shape == "disc":
        cv2.ellipse(m, c, (int(r * 16), int(r * rng.uniform(0.8, 1.0) * 16)), np.rad2deg(rot), 0, 360, 1, -1,
                    cv2.LINE_8, 4)
    elif shape == "ring":
        cv2.circle(m, c, int(r * 16), 1, -1, cv2.LINE_8, 4)
        cv2.circle(m, c, int(r * rng.uniform(0.5, 0.68) * 16), 0, -1, cv2.LINE_8, 4)
    elif shape == "crescent":
        cv2.circle(m, c, int(r * 16), 1, -1, cv2.LINE_8, 4)
        off = r * rng.uniform(0.4, 0.6)
        c2 = (int(round((cx + off * np.cos(rot)) * 16)), int(round((cy + off * np.sin(rot)) * 16)))
        cv2.circle(m, c2, int(r * rng.uniform(0.8, 0.95) * 16), 0, -1, cv2.LINE_8, 4)
    else:
        p = _shape_points(shape, rng)
        cr, sr = np.cos(rot), np.sin(rot)
        q = np.stack([p[:, 0] * cr - p[:, 1] * sr, p[:, 0] * sr + p[:, 1] * cr], 1) * r + (cx, cy)
        cv2.fillPoly(m, [np.round(q * 16).astype(np.int32).reshape(-1, 1, 2)], 1, cv2.LINE_8, 4)
    return m.astype(bool)


def _background(kind: str, rng, h: int, w: int) -> np.ndarray:
    yy, xx = _grid(h, w)
    hue = rng.uniform(0, 360)
    if kind == "light":
        bg = np.broadcast_to(_hsv(hue, rng.uniform(0, 0.2), rng.uniform(0.78, 0.97)), (h, w, 3)).copy()
    elif kind == "dark":
        bg = np.broadcast_to(_hsv(hue, rng.uniform(0, 0.5), rng.uniform(0.08, 0.3)), (h, w, 3)).copy()
    elif kind == "noisy":
        base = _hsv(hue, rng.uniform(0.1, 0.5), rng.uniform(0.35, 0.7))
        n = _smooth_noise(rng, h, w, max(2.0, w / 10), h, w)
        bg = base[None, None, :] * (1 + 0.8 * n[..., None]) + (rng.random((h, w, 1), dtype=np.float32) - 0.5) * 50
    elif kind == "gradient":
        a = _hsv(hue, rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.95))
        b = _hsv(hue + rng.uniform(60, 180), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.95))
        ang = rng.uniform(0, 2 * np.pi)
        g = ((xx - w / 2) * np.cos(ang) + (yy - h / 2) * np.sin(ang)) / max(h, w) + 0.5
        g = np.clip(g, 0, 1)[..., None]
        bg = a * (1 - g) + b * g
    else:  # grid paper
        base = _hsv(hue, rng.uniform(0, 0.15), rng.uniform(0.75, 0.95))
        line = _hsv(rng.uniform(0, 360), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.6))
        period = w * rng.uniform(0.1, 0.18)
        off = rng.uniform(0, period, 2)
        on = (((xx + off[0]) % period) < 1.2) | (((yy + off[1]) % period) < 1.2)
        bg = np.where(on[..., None], line, base)
    return bg.astype(np.float32)


def _texture(kind: str, rng, h: int, w: int, color: np.ndarray) -> np.ndarray:
    if kind == "plain":
        shade = 1 + 0.12 * _smooth_noise(rng, h, w, max(2.0, w / 6), h, w)
        return color[None, None, :] * shade[..., None]
    yy, xx = _grid(h, w)
    ang = rng.uniform(0, np.pi)
    u = xx * np.cos(ang) + yy * np.sin(ang)
    v = -xx * np.sin(ang) + yy * np.cos(ang)
    period = w * rng.uniform(0.09, 0.15)
    other = color * rng.uniform(0.25, 0.45) if rng.random() < 0.6 else np.full(3, 240, np.float32)
    if kind == "stripes":
        on = (u / period) % 1.0 < 0.5
    elif kind == "dots":
        fu, fv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        on = fu * fu + fv * fv < 0.09
    else:  # checker
        on = ((np.floor(u / period) + np.floor(v / period)) % 2) == 0
    return np.where(on[..., None], other, color).astype(np.float32)


def render_class_image(seed: int, class_id: int, index: int, size: Tuple[int, int] = (64, 64)) -> np.ndarray:
    """One image (``uint8 HxWx3`` RGB) of class ``CLASSIFICATION_CLASSES[class_id]``, deterministic in
    ``(seed, class_id, index, size)``."""
    return render_class_image_and_mask(seed, class_id, index, size)[0]


def render_class_image_and_mask(seed: int, class_id: int, index: int,
                                size: Tuple[int, int] = (64, 64)) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`render_class_image` and the object's mask (``bool HxW``, before the photometric
    variation): what the image shows of its class's shape, for diagnostics of edge maps."""
    if not 0 <= int(class_id) < NUM_CLASSIFICATION_CLASSES:
        raise ValueError(f"class_id must be in 0..{NUM_CLASSIFICATION_CLASSES - 1}, got {class_id}")
    h, w = _check_size(size)
    rng = _rng(_CLASS_TAG, seed, class_id, index)
    shape, colour, tex, bgk = _CONCEPTS[CLASSIFICATION_CLASSES[int(class_id)]]
    img = _background(bgk, rng, h, w)
    s = min(h, w)
    # distractors: small shapes of random colour behind the object
    for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
        dshape = rng.choice(["disc", "square", "triangle", "bar", "diamond"])
        m = _shape_mask(dshape, rng, h, w, rng.uniform(0, w), rng.uniform(0, h), s * rng.uniform(0.06, 0.14),
                        rng.uniform(0, 2 * np.pi))
        img[m] = _hsv(rng.uniform(0, 360), rng.uniform(0, 0.9), rng.uniform(0.2, 1.0))
    hue, sr, vr = _HUES[colour]
    col = _hsv(hue + rng.uniform(-12, 12), rng.uniform(*sr), rng.uniform(*vr))
    r = s * rng.uniform(0.24, 0.4)
    cx = w / 2 + rng.uniform(-0.17, 0.17) * w
    cy = h / 2 + rng.uniform(-0.17, 0.17) * h
    m = _shape_mask(shape, rng, h, w, cx, cy, r, rng.uniform(0, 2 * np.pi))
    fill = _texture(tex, rng, h, w, col)
    if rng.random() < 0.5:  # soft drop shadow
        sh = np.roll(m, (int(s * 0.04), int(s * 0.04)), axis=(0, 1)) & ~m
        img[sh] *= 0.6
    img[m] = fill[m]
    # photometric variation
    img = img * rng.uniform(0.8, 1.15) + rng.uniform(-15, 15, 3).astype(np.float32)
    img += (rng.random((h, w, 1), dtype=np.float32) - 0.5) * rng.uniform(8, 30)
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), m


# --------------------------------------------------------------------------------------------
# writers

def _prepare_out(out_dir: str, overwrite: bool) -> bool:
    """Check ``out_dir``; returns the ``overwrite`` flag to pass to ``atomic_directory``."""
    out_dir = os.path.abspath(out_dir)
    if not os.path.exists(out_dir):
        return overwrite
    if not os.path.isdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if os.listdir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; choose another folder, remove it, "
                              "or pass overwrite=True (--overwrite) to replace it")
    return True  # empty folder, or overwrite requested: replace it


def _write_png(path: str, arr: np.ndarray) -> None:
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, arr):
        raise OSError(f"could not write {path}")


def write_demo_scenes(out_dir: str, n: int = 200, size: Tuple[int, int] = (128, 128), seed: int = 0,
                      val_fraction: float = 0.2, overwrite: bool = False) -> str:
    """Write ``n`` scenes in the ``pairs`` layout (``images/``, ``masks/``, ``classes.json``,
    ``split.json``) atomically; returns ``out_dir``. ``split.json`` suggests a validation split of
    ``val_fraction`` (every k-th stem); loaders are free to split differently."""
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    H, W = _check_size(size)
    flag = _prepare_out(out_dir, overwrite)
    stems = [f"scene_{i:05d}" for i in range(n)]
    n_val = int(round(n * float(val_fraction)))
    val_idx = set(np.linspace(0, n - 1, n_val).round().astype(int).tolist()) if n_val else set()
    with atomic_directory(out_dir, overwrite=flag) as tmp:
        os.makedirs(os.path.join(tmp, "images"))
        os.makedirs(os.path.join(tmp, "masks"))
        for i, stem in enumerate(stems):
            img, mask = render_scene(seed, i, (H, W))
            _write_png(os.path.join(tmp, "images", stem + ".png"), img)
            _write_png(os.path.join(tmp, "masks", stem + ".png"), mask)
        SCENE_CLASSES.save(os.path.join(tmp, "classes.json"))
        split = {"train": [s for i, s in enumerate(stems) if i not in val_idx],
                 "val": [s for i, s in enumerate(stems) if i in val_idx],
                 "val_fraction": float(val_fraction), "seed": int(seed), "size": [H, W], "generator": "demo-scenes"}
        with open(os.path.join(tmp, "split.json"), "w", encoding="utf-8") as f:
            json.dump(split, f, indent=1)
    return os.path.abspath(out_dir)


def write_demo_classes(out_dir: str, seed: int = 0, size: Tuple[int, int] = (64, 64),
                       overwrite: bool = False, counts: Optional[Sequence[int]] = None) -> str:
    """Write the classification set in the ``classfolders`` layout
    (``out_dir/<class>/<class>_0000.png`` plus ``classes.json``) atomically; returns ``out_dir``.
    ``counts`` (per class) defaults to :func:`demo_class_counts`."""
    h, w = _check_size(size)
    counts = demo_class_counts(seed) if counts is None else np.asarray(counts, np.int64)
    if counts.shape != (NUM_CLASSIFICATION_CLASSES,):
        raise ValueError(f"counts must have {NUM_CLASSIFICATION_CLASSES} entries")
    flag = _prepare_out(out_dir, overwrite)
    with atomic_directory(out_dir, overwrite=flag) as tmp:
        for cid, name in enumerate(CLASSIFICATION_CLASSES):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            for i in range(int(counts[cid])):
                _write_png(os.path.join(d, f"{name}_{i:04d}.png"), render_class_image(seed, cid, i, (h, w)))
        CLASSIFICATION_TABLE.save(os.path.join(tmp, "classes.json"))
    return os.path.abspath(out_dir)
