"""Connected components of label maps and pasting them into other maps.

A :class:`Component` is one 8-connected region of a single class, kept as a tight boolean crop
plus where it sat in its source map, so it can be pasted elsewhere (scaled, mirrored) with
pasted pixels occluding what was under them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.masks.transforms import NEAREST


@dataclass(frozen=True)
class Component:
    """One connected region of class ``class_id`` in map ``map_index``.

    ``x, y, w, h`` is the bounding box in the source map of shape ``src_shape=(H, W)``;
    ``mask`` is the ``h x w`` boolean crop (True on the component's pixels).
    """

    map_index: int
    class_id: int
    x: int
    y: int
    w: int
    h: int
    area: int
    src_shape: Tuple[int, int]
    mask: np.ndarray = field(repr=False, compare=False)


@dataclass
class MapComponents:
    """The pasteable components of one map: ``by_class[c]`` and all of them in ``all``."""

    by_class: Dict[int, List[Component]]
    all: List[Component]


def extract_components(m: np.ndarray, num_classes: int, *, map_index: int = -1,
                       classes: Optional[Sequence[int]] = None, min_area: int = 8,
                       max_area: Optional[int] = None, exclude_border: bool = False,
                       connectivity: int = 8, ignore_id: int = IGNORE_ID) -> MapComponents:
    """Connected components of every class in ``m`` (void never counts).

    Keeps components with ``min_area <= area <= max_area`` (``max_area=None``: no upper bound);
    ``exclude_border`` drops components touching the left, right or top edge (objects cut off
    by the frame; the bottom edge is allowed since street objects often stand on it).
    """
    h, w = m.shape
    if classes is None:
        counts = np.bincount(m.ravel(), minlength=256)
        classes = [c for c in np.flatnonzero(counts[:num_classes])]
    by_class: Dict[int, List[Component]] = {}
    everything: List[Component] = []
    for c in classes:
        c = int(c)
        if c == ignore_id:
            continue
        binary = (m == c).view(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity, ltype=cv2.CV_32S)
        comps = []
        for k in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[k])
            if area < min_area or (max_area is not None and area > max_area):
                continue
            if exclude_border and (x == 0 or y == 0 or x + bw == w):
                continue
            crop = labels[y:y + bh, x:x + bw] == k
            comps.append(Component(map_index, c, x, y, bw, bh, area, (h, w), crop))
        if comps:
            by_class[c] = comps
            everything.extend(comps)
    return MapComponents(by_class, everything)


def paste_component(dst: np.ndarray, comp: Component, rng: np.random.Generator, *,
                    scale: Tuple[float, float] = (0.8, 1.2), flip_prob: float = 0.5,
                    keep_vertical: bool = True, vertical_jitter: float = 0.03,
                    protect_void: bool = False, ignore_id: int = IGNORE_ID) -> Optional[Dict]:
    """Paste ``comp`` into ``dst`` in place; pasted pixels overwrite (occlude) what was there.

    The crop is resized by ``H_dst / H_src`` times a factor drawn from ``scale`` and mirrored
    with probability ``flip_prob``. With ``keep_vertical`` its bottom edge keeps the same
    relative height as in the source (objects stay on the ground), jittered by up to
    ``vertical_jitter * H``; otherwise the row is uniform. The column is uniform. With
    ``protect_void`` void pixels of ``dst`` stay void. Returns a JSON-able record, or ``None``
    when nothing of the component landed inside ``dst``.
    """
    H, W = dst.shape
    s = float(rng.uniform(scale[0], scale[1]))
    f = s * H / comp.src_shape[0]
    flipped = bool(rng.random() < flip_prob)
    nh, nw = max(1, int(round(comp.h * f))), max(1, int(round(comp.w * f)))
    mask = comp.mask
    if (nh, nw) != mask.shape:
        mask = cv2.resize(mask.view(np.uint8), (nw, nh), interpolation=NEAREST).view(bool)
    if flipped:
        mask = mask[:, ::-1]
    if keep_vertical:
        bottom = (comp.y + comp.h) / comp.src_shape[0] * H
        bottom += rng.uniform(-vertical_jitter, vertical_jitter) * H
        top = int(round(bottom)) - nh
        top = min(max(top, -(nh // 2)), H - (nh + 1) // 2)  # at least half of it inside
    else:
        top = int(rng.integers(0, max(H - nh, 0) + 1))
    left = int(rng.integers(min(0, W - nw), max(W - nw, 0) + 1))
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + nh, H), min(left + nw, W)
    if y1 <= y0 or x1 <= x0:
        return None
    m = mask[y0 - top:y1 - top, x0 - left:x1 - left]
    region = dst[y0:y1, x0:x1]
    if protect_void:
        m = m & (region != ignore_id)
    n = int(np.count_nonzero(m))
    if n == 0:
        return None
    region[m] = comp.class_id
    return {"map": int(comp.map_index), "class": int(comp.class_id),
            "src_bbox": [comp.x, comp.y, comp.w, comp.h], "at": [left, top], "size": [nh, nw],
            "scale": s, "flipped": flipped, "pixels": n}
