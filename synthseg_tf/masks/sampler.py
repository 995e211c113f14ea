"""New label maps from training label maps: the input side of mask-to-photo generation.

A GAN renders label maps into photos, so re-rendering the training masks adds little; this
module builds *new* valid maps from them by geometric transforms (flip, affine, elastic),
copy-paste of connected components (optionally boosting rare classes) and cut-mix.

Sample ``i`` is a pure function of ``(maps, config, seed, i)``: its random generator comes
from ``numpy.random.SeedSequence(seed, spawn_key=(i,))``, so distributed workers can each
produce their own indices with :meth:`LabelMapSampler.sample_at` and get exactly what a
single process would.
"""
from __future__ import annotations

import hashlib
import json
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.masks.copypaste import Component, MapComponents, extract_components, paste_component
from synthseg_tf.masks.mixing import MIX_MODES, cutmix
from synthseg_tf.masks.transforms import (
    apply_affine_params,
    check_border,
    elastic,
    hflip,
    random_affine_params,
    resize_nearest,
)

OPS = ("mix", "flip", "affine", "elastic", "copypaste")
DEFAULT_PROBABILITIES = {"mix": 0.25, "flip": 0.5, "affine": 0.5, "elastic": 0.3, "copypaste": 0.8}
BALANCE_MODES = ("rare", "uniform")

ClassBalance = Union[None, str, Mapping[int, float], Sequence[float], np.ndarray]


# ---------------------------------------------------------------------------------- validation
def _check_num_classes(num_classes, ignore_id) -> Tuple[int, int]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if isinstance(ignore_id, bool) or not isinstance(ignore_id, (int, np.integer)) or not 0 <= ignore_id <= 255:
        raise ValueError(f"ignore_id must be an int in 0..255, got {ignore_id!r}")
    if ignore_id < num_classes:
        raise ValueError(f"ignore_id {ignore_id} collides with class ids 0..{num_classes - 1}")
    return int(num_classes), int(ignore_id)


def _check_map(m, num_classes: int, ignore_id: int, index=None) -> Tuple[np.ndarray, np.ndarray]:
    """Validated ``uint8`` ``HxW`` view/copy of ``m`` and its 256-bin id histogram."""
    where = f"map {index}" if index is not None else "label map"
    if not isinstance(m, np.ndarray):
        try:
            m = np.asarray(m)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise ValueError(f"{where}: not convertible to an array ({e})") from e
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D HxW label map of class ids, got shape {m.shape}")
    if m.dtype == bool or not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{where}: expected integer class ids (uint8), got dtype {m.dtype}")
    if m.size == 0:
        raise ValueError(f"{where}: empty label map of shape {m.shape}")
    if m.dtype != np.uint8:
        bad = (m < 0) | ((m >= num_classes) & (m != ignore_id))
        if bad.any():
            vals = np.unique(m[bad])
            raise ValueError(f"{where}: id {vals[0]} is not a class id 0..{num_classes - 1} nor the ignore id "
                             f"{ignore_id} (bad ids: {vals[:10].tolist()})")
        m = m.astype(np.uint8)
    m = np.ascontiguousarray(m)
    counts = np.bincount(m.ravel(), minlength=256)
    bad = np.flatnonzero(counts[num_classes:]) + num_classes
    bad = bad[bad != ignore_id]
    if bad.size:
        raise ValueError(f"{where}: id {bad[0]} is not a class id 0..{num_classes - 1} nor the ignore id "
                         f"{ignore_id} ({counts[bad[0]]} pixels; bad ids: {bad[:10].tolist()})")
    return m, counts


def validate_label_map(m, num_classes: int, ignore_id: int = IGNORE_ID, index: Optional[int] = None) -> np.ndarray:
    """Check one label map and return it as a contiguous ``uint8`` ``HxW`` array.

    Integer dtypes are accepted when their values fit; a trailing channel of 1 is dropped.
    Raises ``ValueError`` (naming ``map {index}`` and the offending value) on a wrong ndim or
    dtype, or on ids that are neither ``0..num_classes-1`` nor ``ignore_id``.
    """
    num_classes, ignore_id = _check_num_classes(num_classes, ignore_id)
    return _check_map(m, num_classes, ignore_id, index)[0]


def _iter_maps(maps):
    if isinstance(maps, np.ndarray):
        if maps.ndim == 2:
            raise ValueError("maps must be a sequence of HxW label maps (or an NxHxW array), got one 2-D array")
        if maps.ndim not in (3, 4):
            raise ValueError(f"maps must be a sequence of HxW label maps (or an NxHxW array), got shape {maps.shape}")
    return list(maps)


def class_pixel_counts(maps, num_classes: int, ignore_id: int = IGNORE_ID) -> np.ndarray:
    """Pixels of each class ``0..K-1`` over ``maps`` (int64 array of length ``K``; void excluded)."""
    num_classes, ignore_id = _check_num_classes(num_classes, ignore_id)
    total = np.zeros(num_classes, dtype=np.int64)
    for i, m in enumerate(_iter_maps(maps)):
        total += _check_map(m, num_classes, ignore_id, i)[1][:num_classes]
    return total


def class_pixel_frequencies(maps, num_classes: int, ignore_id: int = IGNORE_ID) -> np.ndarray:
    """Fraction of labelled (non-void) pixels of each class over ``maps``; sums to 1 (0s if all void)."""
    counts = class_pixel_counts(maps, num_classes, ignore_id).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def class_balance_weights(frequencies, class_balance: ClassBalance, power: float = 1.0) -> Optional[np.ndarray]:
    """Probabilities of choosing each class for a paste, or ``None`` for natural (unbalanced) pasting.

    ``"rare"``: proportional to ``frequency ** -power`` (rare classes pasted most);
    ``"uniform"``: equal for every present class; a ``{class_id: weight}`` dict or a length-``K``
    array: those relative weights. Classes absent from the maps (frequency 0) get weight 0.
    """
    f = np.asarray(frequencies, dtype=np.float64)
    k = f.size
    present = f > 0
    if class_balance is None:
        return None
    if isinstance(class_balance, str):
        if class_balance == "rare":
            if not np.isfinite(power) or power < 0:
                raise ValueError(f"balance_power must be >= 0, got {power}")
            w = np.zeros(k)
            w[present] = f[present] ** (-float(power))
        elif class_balance == "uniform":
            w = present.astype(np.float64)
        else:
            raise ValueError(f"class_balance must be None, one of {BALANCE_MODES}, a dict or an array of "
                             f"{k} weights; got {class_balance!r}")
    elif isinstance(class_balance, Mapping):
        w = np.zeros(k)
        for key, v in class_balance.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < k:
                raise ValueError(f"class_balance keys must be class ids 0..{k - 1}, got {key!r}")
            w[int(key)] = float(v)
    else:
        w = np.asarray(class_balance, dtype=np.float64)
        if w.shape != (k,):
            raise ValueError(f"class_balance array needs {k} weights (one per class), got shape {w.shape}")
        w = w.copy()
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"class_balance weights must be finite and >= 0, got {w.tolist()}")
    w[~present] = 0.0
    if w.sum() <= 0:
        raise ValueError("class_balance gives zero weight to every class present in the maps")
    return w / w.sum()


def _range(name: str, v, lo: float = -np.inf, integer: bool = False) -> Tuple:
    if np.isscalar(v):
        v = (v, v)
    try:
        a, b = v
        a, b = (int(a), int(b)) if integer else (float(a), float(b))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {v!r}") from e
    if not (lo <= a <= b) or not np.isfinite(b):
        raise ValueError(f"{name} must satisfy {lo} <= low <= high, got {v!r}")
    return a, b


def _nonneg(name: str, v) -> float:
    v = float(v)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


# ---------------------------------------------------------------------------------- sampler
class LabelMapSampler:
    """Yields new valid label maps built from ``maps`` (each ``uint8`` ``HxW``, ids ``0..K-1``, 255 void).

    Per sample, each op in ``ops`` fires with its probability (``probabilities`` overrides
    :data:`DEFAULT_PROBABILITIES`), in the order given; with ``min_ops`` at least that many
    fire (extra ones drawn at random), so an output is never just a copy of a training map.

    - ``"mix"``: cut-mix with another map (band/box, ``mix_modes``, ``mix_fraction``);
    - ``"flip"``: left-right mirror;
    - ``"affine"``: ``scale`` range, ``rotation`` max degrees, ``translate`` max fraction,
      ``shear`` max factor; nearest-neighbour, ``border`` fill (see :mod:`.transforms`);
    - ``"elastic"``: smooth displacement, ``elastic_alpha``/``elastic_sigma`` fractions of min(H, W);
    - ``"copypaste"``: ``paste_count`` components from any map, scaled by ``paste_scale``,
      mirrored with ``paste_flip``, kept at their relative height with ``keep_vertical``;
      which class is pasted follows ``class_balance`` (see :func:`class_balance_weights`;
      ``None`` picks a random map then a random component of it). Components have
      ``min_component_area <= area <= max_component_fraction * H * W``.

    ``size=(H, W)`` resizes every map (nearest) so maps of different sizes can be mixed and all
    outputs share one shape; without it outputs have the base map's shape and other maps are
    rescaled to it where needed. Void (``ignore_id``) is never created except by ``border="void"``;
    ``preserve_void=True`` also keeps existing void pixels void under pastes and mixes.

    ``map_weights`` (one non-negative weight per map, e.g. from
    :func:`synthseg_tf.generation.filtering.hardness_weights`) draws the base map of a sample
    with probability proportional to its weight instead of uniformly (``base_order="random"``
    only; mix partners and paste donors stay uniform). ``None`` (default) is the uniform draw.

    ``sample_at(i)`` is deterministic per ``(seed, i)``; ``sample()``/iteration/``take`` walk
    ``i = 0, 1, 2, ...``. Each call returns ``(map, info)``, ``info`` being a JSON-able record of
    the source maps and the ops with their drawn parameters.
    """

    def __init__(self, maps, num_classes: int, seed: int = 0, class_balance: ClassBalance = None,
                 ops: Sequence[str] = OPS, probabilities: Optional[Mapping[str, float]] = None, *,
                 ignore_id: int = IGNORE_ID, size: Optional[Tuple[int, int]] = None, min_ops: int = 1,
                 base_order: str = "random", border="reflect",
                 scale=(0.9, 1.2), rotation: float = 5.0, translate: float = 0.05, shear: float = 0.05,
                 elastic_alpha=(0.01, 0.03), elastic_sigma=(0.06, 0.12),
                 paste_count=(1, 3), paste_scale=(0.8, 1.2), paste_flip: float = 0.5,
                 keep_vertical: bool = True, vertical_jitter: float = 0.03,
                 min_component_area: int = 8, max_component_fraction: float = 0.1,
                 exclude_border_components: bool = False, balance_power: float = 1.0,
                 mix_modes: Sequence[str] = MIX_MODES, mix_fraction=(0.2, 0.5),
                 preserve_void: bool = False, max_tries: int = 8, map_weights=None):
        self.num_classes, self.ignore_id = _check_num_classes(num_classes, ignore_id)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)

        # ---- ops and probabilities
        if isinstance(ops, str):
            ops = (ops,)
        ops = tuple(ops)
        unknown = [o for o in ops if o not in OPS]
        if unknown or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be distinct names from {OPS}, got {ops!r}")
        probs = dict(DEFAULT_PROBABILITIES)
        for k, v in dict(probabilities or {}).items():
            if k not in OPS:
                raise ValueError(f"probabilities: unknown op {k!r}; ops are {OPS}")
            v = float(v)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"probabilities[{k!r}] must be in [0, 1], got {v}")
            probs[k] = v
        self.ops = ops
        self.probabilities = {o: probs[o] for o in ops}
        if isinstance(min_ops, bool) or not isinstance(min_ops, (int, np.integer)) or min_ops < 0:
            raise ValueError(f"min_ops must be an int >= 0, got {min_ops!r}")
        self.min_ops = int(min_ops)
        if base_order not in ("random", "cycle"):
            raise ValueError(f"base_order must be 'random' or 'cycle', got {base_order!r}")
        self.base_order = base_order

        # ---- op parameters
        self.border = check_border(border, self.num_classes, self.ignore_id)
        self.scale = _range("scale", scale, lo=1e-3)
        self.rotation = _nonneg("rotation", rotation)
        self.translate = _nonneg("translate", translate)
        self.shear = _nonneg("shear", shear)
        self.elastic_alpha = _range("elastic_alpha", elastic_alpha, lo=0.0)
        self.elastic_sigma = _range("elastic_sigma", elastic_sigma, lo=1e-6)
        self.paste_count = _range("paste_count", paste_count, lo=0, integer=True)
        self.paste_scale = _range("paste_scale", paste_scale, lo=1e-3)
        self.paste_flip = _nonneg("paste_flip", paste_flip)
        self.keep_vertical = bool(keep_vertical)
        self.vertical_jitter = _nonneg("vertical_jitter", vertical_jitter)
        self.min_component_area = max(1, int(min_component_area))
        self.max_component_fraction = _nonneg("max_component_fraction", max_component_fraction)
        self.exclude_border_components = bool(exclude_border_components)
        mix_modes = (mix_modes,) if isinstance(mix_modes, str) else tuple(mix_modes)
        if not mix_modes or any(m not in MIX_MODES for m in mix_modes):
            raise ValueError(f"mix_modes must be a non-empty subset of {MIX_MODES}, got {mix_modes!r}")
        self.mix_modes = mix_modes
        self.mix_fraction = _range("mix_fraction", mix_fraction, lo=0.0)
        self.preserve_void = bool(preserve_void)
        self.max_tries = max(1, int(max_tries))
        if size is not None:
            try:
                size = (int(size[0]), int(size[1]))
            except (TypeError, ValueError, IndexError) as e:
                raise ValueError(f"size must be (H, W), got {size!r}") from e
            if min(size) < 1:
                raise ValueError(f"size must be positive, got {size}")
        self.size = size

        # ---- maps: validate, resize, count
        maps = _iter_maps(maps)
        if not maps:
            raise ValueError("maps is empty: need at least one label map")
        self._maps: List[np.ndarray] = []
        counts = np.zeros((len(maps), self.num_classes), dtype=np.int64)
        for i, m in enumerate(maps):
            m, c = _check_map(m, self.num_classes, self.ignore_id, i)
            if size is not None and m.shape != size:
                m = resize_nearest(m, size)
                c = np.bincount(m.ravel(), minlength=256)
            m = m.view()
            m.flags.writeable = False  # inputs are shared, not copied: never write into them
            self._maps.append(m)
            counts[i] = c[: self.num_classes]
        self.map_class_counts = counts
        tot = counts.sum(axis=0).astype(np.float64)
        self.frequencies = tot / tot.sum() if tot.sum() > 0 else tot
        self._maps_with_class = [np.flatnonzero(counts[:, c]) for c in range(self.num_classes)]
        self.balance_power = _nonneg("balance_power", balance_power)
        self.class_balance = class_balance
        self.class_weights = class_balance_weights(self.frequencies, class_balance, self.balance_power)
        self._class_cdf = None if self.class_weights is None else np.cumsum(self.class_weights)
        self._components: Dict[int, MapComponents] = {}
        self._fingerprint: Optional[str] = None
        self.position = 0

        # ---- base-map weights
        self.map_weights: Optional[np.ndarray] = None
        self._map_cdf = None
        if map_weights is not None:
            if self.base_order != "random":
                raise ValueError("map_weights needs base_order='random' (they weight the random base-map draw)")
            try:
                mw = np.asarray(map_weights, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError) as e:
                raise ValueError(f"map_weights must be {len(maps)} numbers, got {map_weights!r}") from e
            if mw.shape != (len(maps),):
                raise ValueError(f"map_weights needs one weight per map ({len(maps)}), got {mw.size}")
            if not np.all(np.isfinite(mw)) or np.any(mw < 0) or mw.sum() <= 0:
                raise ValueError("map_weights must be finite, >= 0 and not all zero")
            self.map_weights = mw / mw.sum()
            self._map_cdf = np.cumsum(self.map_weights)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        """Number of source maps."""
        return len(self._maps)

    @property
    def maps(self) -> List[np.ndarray]:
        """The (validated, resized) source maps, read-only."""
        return list(self._maps)

    def config(self) -> Dict:
        """JSON-able settings that, with the maps and seed, determine every sample."""
        cb = self.class_balance
        if isinstance(cb, Mapping):
            cb = {int(k): float(v) for k, v in cb.items()}
        elif cb is not None and not isinstance(cb, str):
            cb = [float(x) for x in np.asarray(cb).ravel()]
        return {
            "num_classes": self.num_classes, "ignore_id": self.ignore_id, "seed": self.seed,
            "class_balance": cb, "balance_power": self.balance_power, "ops": list(self.ops),
            "probabilities": self.probabilities, "min_ops": self.min_ops, "base_order": self.base_order,
            "size": list(self.size) if self.size else None, "border": self.border,
            "scale": list(self.scale), "rotation": self.rotation, "translate": self.translate, "shear": self.shear,
            "elastic_alpha": list(self.elastic_alpha), "elastic_sigma": list(self.elastic_sigma),
            "paste_count": list(self.paste_count), "paste_scale": list(self.paste_scale),
            "paste_flip": self.paste_flip, "keep_vertical": self.keep_vertical,
            "vertical_jitter": self.vertical_jitter, "min_component_area": self.min_component_area,
            "max_component_fraction": self.max_component_fraction,
            "exclude_border_components": self.exclude_border_components,
            "mix_modes": list(self.mix_modes), "mix_fraction": list(self.mix_fraction),
            "preserve_void": self.preserve_void, "max_tries": self.max_tries,
            "num_maps": len(self._maps), "maps_sha256": self.fingerprint(),
            "map_weights": None if self.map_weights is None else [float(v) for v in self.map_weights],
        }

    def fingerprint(self) -> str:
        """SHA-256 over the shapes and bytes of the source maps (computed once)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for m in self._maps:
                h.update(np.asarray(m.shape, dtype=np.int64).tobytes())
                h.update(m.tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def components(self, index: int) -> MapComponents:
        """Pasteable components of map ``index`` (computed on first use, then cached)."""
        comps = self._components.get(index)
        if comps is None:
            m = self._maps[index]
            classes = np.flatnonzero(self.map_class_counts[index])
            comps = extract_components(
                m, self.num_classes, map_index=index, classes=classes, min_area=self.min_component_area,
                max_area=int(self.max_component_fraction * m.size), exclude_border=self.exclude_border_components,
                ignore_id=self.ignore_id)
            self._components[index] = comps
        return comps

    def precompute(self) -> "LabelMapSampler":
        """Fill the component cache for every map (e.g. once per worker before generating)."""
        for i in range(len(self._maps)):
            self.components(i)
        return self

    # ------------------------------------------------------------------ sampling
    def rng_for(self, i: int) -> np.random.Generator:
        """The generator of sample ``i``: ``SeedSequence(seed, spawn_key=(i,))``."""
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(int(i),))))

    def sample_at(self, i: int, index: Optional[int] = None) -> Tuple[np.ndarray, Dict]:
        """Sample number ``i`` (deterministic for ``(seed, i)``, whatever was sampled before).

        ``index`` forces the base map; by default it is drawn (``base_order="random"``) or
        ``i % len(maps)`` (``"cycle"``).
        """
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
            raise ValueError(f"sample index must be a non-negative int, got {i!r}")
        rng = self.rng_for(i)
        n = len(self._maps)
        if self._map_cdf is None:
            drawn = int(rng.integers(n))
        else:  # weighted: inverse CDF of one uniform draw (zero-weight maps are never hit)
            drawn = min(int(np.searchsorted(self._map_cdf, rng.random() * self._map_cdf[-1], side="right")), n - 1)
        if index is None:
            base = drawn if self.base_order == "random" else int(i) % n
        else:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
                raise ValueError(f"index must be a map index 0..{n - 1}, got {index!r}")
            base = int(index)

        fire = [rng.random() < self.probabilities[o] for o in self.ops]
        missing = self.min_ops - sum(fire)
        if missing > 0:
            idle = [k for k, f in enumerate(fire) if not f and self.probabilities[self.ops[k]] > 0]
            if idle:
                for k in rng.permutation(len(idle))[:missing]:
                    fire[idle[int(k)]] = True

        out = np.array(self._maps[base])  # writable copy
        sources = {base}
        records = []
        for op, f in zip(self.ops, fire):
            if not f:
                continue
            out, rec = getattr(self, "_op_" + op)(out, rng, base, sources)
            rec = {"op": op, **rec}
            records.append(rec)

        self._check_output(out, i)
        info = {"sample": int(i), "seed": self.seed, "base_map": base, "source_maps": sorted(int(s) for s in sources),
                "ops": records, "shape": [int(out.shape[0]), int(out.shape[1])]}
        return out, info

    def sample(self, index: Optional[int] = None) -> Tuple[np.ndarray, Dict]:
        """The next sample of the stream: ``sample_at(position)``, then ``position += 1``."""
        i = self.position
        self.position += 1
        return self.sample_at(i, index)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, Dict]]:
        """Endless stream continuing from ``position`` (use ``itertools.islice`` or :meth:`take`)."""
        while True:
            yield self.sample()

    def take(self, n: int, start: Optional[int] = None) -> List[Tuple[np.ndarray, Dict]]:
        """``n`` samples: the next ``n`` of the stream, or ``sample_at(start .. start+n-1)`` when
        ``start`` is given (the stream position is then left alone)."""
        if start is None:
            return [self.sample() for _ in range(int(n))]
        return [self.sample_at(int(start) + k) for k in range(int(n))]

    def reset(self, position: int = 0) -> None:
        """Restart the stream at ``position``."""
        self.position = int(position)

    # ------------------------------------------------------------------ ops
    def _op_flip(self, out, rng, base, sources):
        return hflip(out), {}

    def _op_affine(self, out, rng, base, sources):
        params = random_affine_params(rng, out.shape, scale=self.scale, rotation=self.rotation,
                                      translate=self.translate, shear=self.shear)
        return apply_affine_params(out, params, self.border, self.ignore_id), params

    def _op_elastic(self, out, rng, base, sources):
        return elastic(out, rng, self.elastic_alpha, self.elastic_sigma, self.border, self.ignore_id)

    def _op_mix(self, out, rng, base, sources):
        n = len(self._maps)
        if n > 1:
            j = int(rng.integers(n - 1))
            j += j >= base
            other = self._maps[j]
        else:
            j, other = base, hflip(self._maps[base])
        if other.shape != out.shape:
            other = resize_nearest(other, out.shape)
        sources.add(j)
        mixed, rec = cutmix(out, other, rng, self.mix_modes, self.mix_fraction,
                            protect_void=self.preserve_void, ignore_id=self.ignore_id)
        return mixed, {"map": j, **rec}

    def _pick_component(self, rng) -> Tuple[Optional[Component], int]:
        n = len(self._maps)
        for t in range(self.max_tries):
            if self._class_cdf is None:
                comps = self.components(int(rng.integers(n))).all
            else:
                c = int(np.searchsorted(self._class_cdf, rng.random() * self._class_cdf[-1], side="right"))
                c = min(c, self.num_classes - 1)
                cand = self._maps_with_class[c]
                if cand.size == 0:
                    continue
                comps = self.components(int(cand[int(rng.integers(cand.size))])).by_class.get(c)
            if comps:
                return comps[int(rng.integers(len(comps)))], t + 1
        return None, self.max_tries

    def _op_copypaste(self, out, rng, base, sources):
        k = int(rng.integers(self.paste_count[0], self.paste_count[1] + 1))
        pastes, failed = [], 0
        for _ in range(k):
            comp, _tries = self._pick_component(rng)
            if comp is None:
                failed += 1
                continue
            rec = paste_component(out, comp, rng, scale=self.paste_scale, flip_prob=self.paste_flip,
                                  keep_vertical=self.keep_vertical, vertical_jitter=self.vertical_jitter,
                                  protect_void=self.preserve_void, ignore_id=self.ignore_id)
            if rec is None:
                failed += 1
                continue
            sources.add(comp.map_index)
            pastes.append(rec)
        return out, {"pastes": pastes, "failed": failed}

    def _check_output(self, out: np.ndarray, i: int) -> None:
        counts = np.bincount(out.ravel(), minlength=256)
        bad = np.flatnonzero(counts[self.num_classes:]) + self.num_classes
        bad = bad[bad != self.ignore_id]
        if bad.size or out.dtype != np.uint8 or out.ndim != 2:  # pragma: no cover - a bug if it fires
            raise RuntimeError(f"sample {i}: produced invalid ids {bad.tolist()} (dtype {out.dtype}); please report")


def info_to_json(info: Dict) -> str:
    """Compact JSON of a sample's ``info`` (provenance record)."""
    return json.dumps(info, separators=(",", ":"), sort_keys=True)
