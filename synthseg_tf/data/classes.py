"""The class table: names, display colours and how raw mask values map to class ids.

Every artifact (TFRecords, run directories, generated samples, exported models) carries a
``classes.json`` written from this table, so ids mean the same thing everywhere.

Conventions used throughout the package:
- class ids are contiguous ``0..K-1``;
- ``IGNORE_ID`` (255) marks void/unlabelled pixels: losses and metrics skip them.
"""
from __future__ import annotations

import colorsys
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

IGNORE_ID = 255
CLASS_TABLE_FILE = "classes.json"


def default_colors(n: int) -> List[Tuple[int, int, int]]:
    """``n`` well separated display colours (golden-ratio hue walk), deterministic."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        s = 0.65 if i % 2 else 0.9
        v = 0.95 if i % 3 else 0.7
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


@dataclass
class ClassTable:
    """Names and colours of the ``K`` classes plus the raw-value mapping of the source masks.

    ``source_values[i]`` is the raw mask value (an int for single-channel masks, an ``(r, g, b)``
    tuple for colour-coded masks) that becomes class id ``i``; ``void_values`` become
    ``IGNORE_ID``. Either may be empty when the masks already hold contiguous ids.
    """

    names: List[str]
    colors: List[Tuple[int, int, int]] = field(default_factory=list)
    source_values: List = field(default_factory=list)
    void_values: List = field(default_factory=list)
    ignore_id: int = IGNORE_ID

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        if not self.names:
            raise ValueError("a class table needs at least one class")
        if len(self.names) >= IGNORE_ID:
            raise ValueError(f"at most {IGNORE_ID - 1} classes are supported, got {len(self.names)}")
        if not self.colors:
            self.colors = default_colors(len(self.names))
        self.colors = [tuple(int(c) for c in col) for col in self.colors]
        if len(self.colors) != len(self.names):
            raise ValueError(f"{len(self.names)} class names but {len(self.colors)} colours")
        self.source_values = [_norm_value(v) for v in self.source_values]
        self.void_values = [_norm_value(v) for v in self.void_values]
        if self.source_values and len(self.source_values) != len(self.names):
            raise ValueError(f"{len(self.names)} class names but {len(self.source_values)} source values")

    # ------------------------------------------------------------------ basics
    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def rgb_source(self) -> bool:
        """True when the source masks are colour coded (values are RGB triples)."""
        vals = self.source_values or self.void_values
        return bool(vals) and isinstance(vals[0], tuple)

    def index(self, name: str) -> int:
        return self.names.index(name)

    # ------------------------------------------------------------------ mapping
    def lut(self, size: int = 65536) -> np.ndarray:
        """Lookup table raw value -> class id for single-channel masks.

        Unknown values map to -1 so callers can report them; with no ``source_values`` the
        identity on ``0..K-1`` is used and ``IGNORE_ID`` stays ``IGNORE_ID``.
        """
        if self.rgb_source:
            raise ValueError("this class table maps RGB colours; use map_rgb()")
        table = np.full(size, -1, dtype=np.int32)
        if self.source_values:
            for i, v in enumerate(self.source_values):
                table[v] = i
        else:
            table[: self.num_classes] = np.arange(self.num_classes)
            table[IGNORE_ID] = IGNORE_ID
        for v in self.void_values:
            table[v] = IGNORE_ID
        return table

    def map_values(self, raw: np.ndarray) -> np.ndarray:
        """Raw mask (``HxW`` ints or ``HxWx3`` colours) -> int32 ids; unknown values give -1."""
        if raw.ndim == 3:
            return self.map_rgb(raw)
        lut = self.lut(max(65536, int(raw.max()) + 1) if raw.size else 65536)
        return lut[raw.astype(np.int64)]

    def map_rgb(self, rgb: np.ndarray) -> np.ndarray:
        codes = _rgb_codes(rgb[..., :3])
        out = np.full(codes.shape, -1, dtype=np.int32)
        pairs = [(v, i) for i, v in enumerate(self.source_values)] + [(v, IGNORE_ID) for v in self.void_values]
        if not self.source_values:  # colours of the table itself
            pairs = [(c, i) for i, c in enumerate(self.colors)] + pairs
        keys = np.array([_rgb_code(v) for v, _ in pairs], dtype=np.int64)
        ids = np.array([i for _, i in pairs], dtype=np.int32)
        order = np.argsort(keys)
        keys, ids = keys[order], ids[order]
        pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
        hit = keys[pos] == codes
        out[hit] = ids[pos[hit]]
        return out

    def colorize(self, ids: np.ndarray) -> np.ndarray:
        """Class ids ``HxW`` -> display colours ``HxWx3`` uint8 (ignored pixels black)."""
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = np.array(self.colors, dtype=np.uint8)
        return palette[np.asarray(ids).astype(np.uint8)]

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> Dict:
        return {
            "classes": self.names,
            "colors": [list(c) for c in self.colors],
            "source_values": [list(v) if isinstance(v, tuple) else v for v in self.source_values],
            "void_values": [list(v) if isinstance(v, tuple) else v for v in self.void_values],
            "ignore_id": self.ignore_id,
        }

    @classmethod
    def from_dict(cls, d: Dict) -> "ClassTable":
        names = d.get("classes") or d.get("names")
        if names is None:
            raise ValueError("class table has no 'classes' list")
        void_values = list(d.get("void_values", []))
        if "void_id" in d and d["void_id"] is not None and not d.get("source_values"):
            # CamVid-style file: ids 0..K-1 are the classes, void_id is unlabelled.
            void_values.append(int(d["void_id"]))
        return cls(
            names=names,
            colors=d.get("colors") or [],
            source_values=d.get("source_values") or [],
            void_values=void_values,
            ignore_id=int(d.get("ignore_id", IGNORE_ID)),
        )

    def save(self, path: str) -> str:
        """Write ``classes.json`` (``path`` may be a directory) atomically; returns the file path.

        ``path`` may be remote (``gs://...``, see :mod:`synthseg_tf.storage`)."""
        from synthseg_tf import storage

        if storage.isdir(path):
            path = storage.join(path, CLASS_TABLE_FILE)
        storage.atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str) -> "ClassTable":
        """Read a ``classes.json`` (``path`` may be its folder, and remote: ``gs://...``)."""
        from synthseg_tf import storage

        if storage.is_remote(path):
            try:
                if storage.isdir(path):
                    path = storage.join(path, CLASS_TABLE_FILE)
                return cls.from_dict(json.loads(storage.read_text(path)))
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}: not a readable class table ({e})") from e
        if os.path.isdir(path):
            path = os.path.join(path, CLASS_TABLE_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a readable class table ({e})") from e


def _norm_value(v):
    if isinstance(v, (list, tuple, np.ndarray)):
        if len(v) != 3:
            raise ValueError(f"colour values need 3 components, got {v!r}")
        return tuple(int(x) for x in v)
    return int(v)


def _rgb_code(v: Sequence[int]) -> int:
    return (int(v[0]) << 16) | (int(v[1]) << 8) | int(v[2])


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
