"""The ``real+copypaste`` baseline: Simple Copy-Paste on real photos, no GAN.

Experiments compare real-only, real+augment, real+synthetic (GAN) and synthetic-only U-Nets.
The GAN's training maps come from :class:`~synthseg_tf.masks.LabelMapSampler`, whose main new
content is copy-paste of object instances (rare classes boosted with ``class_balance="rare"``).
This module applies the *same* copy-paste to real image pixels with their masks (Ghiasi et al.,
"Simple Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation", CVPR 2021),
so a reviewer can see whether the GAN beats the cheap trick of pasting real objects.

Sample ``i`` is a pure function of ``(sources, settings, seed, i)``; its generator is
``numpy.random.SeedSequence(seed, spawn_key=(i,))`` as in ``LabelMapSampler.sample_at``:

1. a base sample (uniform over the sources), mirrored left-right with probability 1/2;
2. ``pastes=(lo, hi)`` pastes (count uniform in ``lo..hi``). Each picks a class with the
   sampler's weighting (:func:`~synthseg_tf.masks.class_balance_weights` over the sources'
   pixel frequencies, restricted to classes that have a donor component), then a donor sample
   other than the base that has such a component, then one of its components (8-connected,
   ``min_component_area <= area <= max_component_fraction * H * W``: large "stuff" regions
   such as road and sky never qualify). :func:`~synthseg_tf.masks.paste_component` places it
   (scale ``paste_scale``, mirrored with ``paste_flip``, bottom edge kept at its relative
   height with ``keep_vertical``, random column) and writes its class ids; the donor's image
   pixels under the component go to the same place, with hard edges (``feather=0``) or a
   1-2 px alpha ramp inside the component's edge (``feather=1|2``, image only; the mask stays
   hard). Later pastes occlude earlier ones and the base.

Only the samples of ``ds`` (the experiment's training subset) are read, each once, resized to
``image_size`` (image: area when shrinking, bilinear when enlarging; mask: nearest).

Output folder (a TFRecord folder that ``make_dataset`` and ``train_unet(synthetic=...)`` read)::

    copypaste.json   classes.json   dataset.json   manifest.jsonl
    data-SSSSS-of-NNNNN.tfrecord    parts/shard-SSSSS.json

Shard ``s`` holds samples ``s * samples_per_shard ..``; it is written under a temporary name and
renamed, then its manifest part is written and marks it done. ``copypaste.json`` holds the
identity (every setting that changes the output plus the sorted source ids): a rerun with the
same identity rebuilds only missing shards (or returns at once when complete), one with another
identity refuses.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.data.dataset import SEGMENTATION, Dataset
from synthseg_tf.masks.copypaste import Component, extract_components, paste_component
from synthseg_tf.masks.sampler import BALANCE_MODES, class_balance_weights, validate_label_map
from synthseg_tf.masks.transforms import NEAREST, resize_nearest
from synthseg_tf.utils import atomic_write_text

STATE_FILE = "copypaste.json"
MANIFEST_FILE = "manifest.jsonl"
PARTS_DIR = "parts"

ClassBalance = Union[None, str, Mapping[int, float], Sequence[float]]


# ---------------------------------------------------------------------------------- validation
def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _image_size(v) -> Tuple[int, int]:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v, v)
    try:
        h, w = v
        if isinstance(h, bool) or isinstance(w, bool) or int(h) != h or int(w) != w:
            raise TypeError
        h, w = int(h), int(w)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be an int or (height, width), got {v!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {v!r}")
    return h, w


def _pair(name: str, v, lo: float, integer: bool = False) -> Tuple:
    if np.isscalar(v):
        v = (v, v)
    try:
        a, b = v
        if integer and (isinstance(a, bool) or isinstance(b, bool) or int(a) != a or int(b) != b):
            raise TypeError
        a, b = (int(a), int(b)) if integer else (float(a), float(b))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {'whole number' if integer else 'number'} or a (low, high) pair, "
                         f"got {v!r}") from None
    if not (lo <= a <= b) or not np.isfinite(b):
        raise ValueError(f"{name} must satisfy {lo} <= low <= high, got {v!r}")
    return a, b


def _balance_json(class_balance: ClassBalance, num_classes: int):
    """``class_balance`` as a JSON value that round-trips (dicts become a list of K weights)."""
    if class_balance is None:
        return None
    if isinstance(class_balance, str):
        if class_balance not in BALANCE_MODES:
            raise ValueError(f"class_balance must be None, one of {BALANCE_MODES}, a dict or a list of "
                             f"{num_classes} weights; got {class_balance!r}")
        return class_balance
    if isinstance(class_balance, Mapping):
        w = [0.0] * num_classes
        for k, v in class_balance.items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < num_classes:
                raise ValueError(f"class_balance keys must be class ids 0..{num_classes - 1}, got {k!r}")
            w[int(k)] = float(v)
        return w
    w = np.asarray(class_balance, dtype=np.float64).ravel()
    if w.size != num_classes:
        raise ValueError(f"class_balance needs {num_classes} weights (one per class), got {w.size}")
    return [float(x) for x in w]


def normalise_settings(num_classes: int, *, seed: int, class_balance: ClassBalance, pastes, paste_scale,
                       paste_flip: float, keep_vertical: bool, vertical_jitter: float, min_component_area: int,
                       max_component_fraction: float, feather: int, balance_power: float) -> Dict:
    """Validate the sampling settings; returns them as JSON values that round-trip exactly.

    Raises ``ValueError`` naming the option and the problem.
    """
    num_classes = _int("num_classes", num_classes, 1)
    cfg = {"seed": _int("seed", seed, 0), "class_balance": _balance_json(class_balance, num_classes),
           "pastes": list(_pair("pastes", pastes, 0, integer=True)),
           "paste_scale": list(_pair("paste_scale", paste_scale, 1e-3))}
    try:
        paste_flip, vertical_jitter = float(paste_flip), float(vertical_jitter)
        max_component_fraction, balance_power = float(max_component_fraction), float(balance_power)
    except (TypeError, ValueError) as e:
        raise ValueError(f"paste_flip, vertical_jitter, max_component_fraction and balance_power must be "
                         f"numbers ({e})") from None
    if not 0.0 <= paste_flip <= 1.0:
        raise ValueError(f"paste_flip must be a probability in [0, 1], got {paste_flip!r}")
    if not (np.isfinite(vertical_jitter) and vertical_jitter >= 0):
        raise ValueError(f"vertical_jitter must be >= 0, got {vertical_jitter!r}")
    if not 0.0 < max_component_fraction <= 1.0:
        raise ValueError(f"max_component_fraction must be in (0, 1], got {max_component_fraction!r}")
    if not (np.isfinite(balance_power) and balance_power >= 0):
        raise ValueError(f"balance_power must be >= 0, got {balance_power!r}")
    feather = _int("feather", feather, 0)
    if feather > 2:
        raise ValueError(f"feather must be 0 (hard edges), 1 or 2 pixels, got {feather}")
    cfg.update(paste_flip=paste_flip, keep_vertical=bool(keep_vertical), vertical_jitter=vertical_jitter,
               min_component_area=_int("min_component_area", min_component_area, 1),
               max_component_fraction=max_component_fraction, feather=feather, balance_power=balance_power)
    return json.loads(json.dumps(cfg))


# ---------------------------------------------------------------------------------- sources
def load_sources(ds: Dataset, image_size, workers: int = 4) -> Tuple[List[str], List[np.ndarray], List[np.ndarray]]:
    """Read every sample of ``ds`` once, sorted by ``source_id``, resized to ``image_size``.

    Returns ``(source_ids, images uint8 HxWx3, masks uint8 HxW)``. Images are resized with
    area interpolation when shrinking and bilinear when enlarging, masks nearest-neighbour.
    Read problems raise :class:`~synthseg_tf.data.io.DataError` naming the file.
    """
    h, w = _image_size(image_size)
    samples = sorted(ds.samples, key=lambda s: s.source_id)

    def read(s):
        image, mask = ds.read(s)
        if mask is None:
            raise ValueError(f"{s.image}: has no mask (copy-paste needs segmentation data)")
        try:
            mask = validate_label_map(mask, ds.num_classes)
        except ValueError as e:
            raise ValueError(f"{s.mask}: {e}") from None
        if image.shape[:2] != (h, w):
            shrink = image.shape[0] * image.shape[1] > h * w
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return np.ascontiguousarray(image), np.ascontiguousarray(resize_nearest(mask, (h, w)))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(samples)))) as ex:
        pairs = list(ex.map(read, samples))
    return [s.source_id for s in samples], [p[0] for p in pairs], [p[1] for p in pairs]


def sources_fingerprint(source_ids: Sequence[str], images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> str:
    """SHA-256 over the source ids and the resized image and mask bytes."""
    hsh = hashlib.sha256()
    for sid, im, m in zip(source_ids, images, masks):
        hsh.update(sid.encode("utf-8") + b"\0")
        hsh.update(np.asarray(im.shape, np.int64).tobytes() + im.tobytes())
        hsh.update(m.tobytes())
    return hsh.hexdigest()


# ---------------------------------------------------------------------------------- sampler
class CopyPasteSampler:
    """Copy-paste samples built from real ``images`` and their ``masks`` (see module docstring).

    All images share one shape ``H x W``; ``source_ids[j]`` names pair ``j`` in the records.
    ``sample_at(i)`` returns ``(image, mask, record)`` and is deterministic for ``(seed, i)``.
    """

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], source_ids: Sequence[str],
                 num_classes: int, seed: int = 0, class_balance: ClassBalance = "rare",
                 pastes=(1, 3), *, paste_scale=(0.7, 1.3), paste_flip: float = 0.5, keep_vertical: bool = True,
                 vertical_jitter: float = 0.03, min_component_area: int = 8,
                 max_component_fraction: float = 0.1, feather: int = 0, balance_power: float = 1.0,
                 max_tries: int = 8, ignore_id: int = IGNORE_ID):
        cfg = normalise_settings(num_classes, seed=seed, class_balance=class_balance, pastes=pastes,
                                 paste_scale=paste_scale, paste_flip=paste_flip, keep_vertical=keep_vertical,
                                 vertical_jitter=vertical_jitter, min_component_area=min_component_area,
                                 max_component_fraction=max_component_fraction, feather=feather,
                                 balance_power=balance_power)
        self.num_classes = int(num_classes)
        self.ignore_id = int(ignore_id)
        self.seed = cfg["seed"]
        self.class_balance = cfg["class_balance"]
        self.balance_power = cfg["balance_power"]
        self.pastes = tuple(cfg["pastes"])
        self.paste_scale = tuple(cfg["paste_scale"])
        self.paste_flip = cfg["paste_flip"]
        self.keep_vertical = cfg["keep_vertical"]
        self.vertical_jitter = cfg["vertical_jitter"]
        self.min_component_area = cfg["min_component_area"]
        self.max_component_fraction = cfg["max_component_fraction"]
        self.feather = cfg["feather"]
        self.max_tries = _int("max_tries", max_tries, 1)
        if not (len(images) == len(masks) == len(source_ids)) or not images:
            raise ValueError(f"need the same non-zero number of images, masks and source ids, got "
                             f"{len(images)}, {len(masks)}, {len(source_ids)}")

        shape = images[0].shape
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"images must be HxWx3 uint8, got shape {shape} for {source_ids[0]}")
        self.images, self.masks = [], []
        for sid, im, m in zip(source_ids, images, masks):
            if im.shape != shape or im.dtype != np.uint8:
                raise ValueError(f"{sid}: image {im.shape} {im.dtype} differs from {shape} uint8 (resize first)")
            try:
                m = validate_label_map(m, self.num_classes, self.ignore_id)
            except ValueError as e:
                raise ValueError(f"{sid}: {e}") from None
            if m.shape != shape[:2]:
                raise ValueError(f"{sid}: mask {m.shape} differs from its image {shape[:2]}")
            im, m = im.view(), m.view()
            im.flags.writeable = m.flags.writeable = False  # shared with the caller: never written
            self.images.append(im)
            self.masks.append(m)
        self.source_ids = [str(s) for s in source_ids]
        if len(set(self.source_ids)) != len(self.source_ids):
            dup = sorted(s for s, k in Counter(self.source_ids).items() if k > 1)
            raise ValueError(f"source ids must be unique (provenance names them), duplicated: {dup[:5]}")
        self.shape = shape[:2]

        # donors: every eligible component of every source
        h, w = self.shape
        max_area = int(self.max_component_fraction * h * w)
        counts = np.zeros(self.num_classes, np.int64)
        self.components = []
        for j, m in enumerate(self.masks):
            c = np.bincount(m.ravel(), minlength=256)[: self.num_classes]
            counts += c
            self.components.append(extract_components(
                m, self.num_classes, map_index=j, classes=np.flatnonzero(c), min_area=self.min_component_area,
                max_area=max_area, ignore_id=self.ignore_id))
        self.maps_with_class = [np.array([j for j, mc in enumerate(self.components) if c in mc.by_class], np.int64)
                                for c in range(self.num_classes)]
        self.maps_with_any = np.array([j for j, mc in enumerate(self.components) if mc.all], np.int64)
        freq = counts / counts.sum() if counts.sum() > 0 else counts.astype(np.float64)
        self.frequencies = freq
        donor_freq = np.where([len(a) > 0 for a in self.maps_with_class], freq, 0.0)
        self.class_weights = None
        if self.class_balance is not None and donor_freq.sum() > 0:
            cb = self.class_balance if isinstance(self.class_balance, str) else np.asarray(self.class_balance)
            self.class_weights = class_balance_weights(donor_freq, cb, self.balance_power)
        self._cdf = None if self.class_weights is None else np.cumsum(self.class_weights)

    def __len__(self) -> int:
        return len(self.images)

    def rng_for(self, i: int) -> np.random.Generator:
        """The generator of sample ``i``: ``SeedSequence(seed, spawn_key=(i,))``."""
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(int(i),))))

    def _pick(self, rng: np.random.Generator, base: int) -> Optional[Component]:
        n = len(self.images)
        for _ in range(self.max_tries):
            if self._cdf is None:
                cand = self.maps_with_any
                c = None
            else:
                c = int(np.searchsorted(self._cdf, rng.random() * self._cdf[-1], side="right"))
                c = min(c, self.num_classes - 1)
                cand = self.maps_with_class[c]
            if n > 1:
                cand = cand[cand != base]  # donors come from another sample
            if cand.size == 0:
                continue
            mc = self.components[int(cand[int(rng.integers(cand.size))])]
            comps = mc.all if c is None else mc.by_class[c]
            return comps[int(rng.integers(len(comps)))]
        return None

    def _paste_pixels(self, image: np.ndarray, comp: Component, rec: Dict) -> None:
        """Copy the donor pixels of ``comp`` where :func:`paste_component` put its ids (``rec``)."""
        H, W = self.shape
        nh, nw = rec["size"]
        left, top = rec["at"]
        mask = comp.mask
        crop = self.images[comp.map_index][comp.y:comp.y + comp.h, comp.x:comp.x + comp.w]
        if (nh, nw) != mask.shape:  # the same nearest resize paste_component did
            mask = cv2.resize(mask.view(np.uint8), (nw, nh), interpolation=NEAREST).view(bool)
            shrink = nh * nw < comp.h * comp.w
            crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if rec["flipped"]:
            mask, crop = mask[:, ::-1], crop[:, ::-1]
        alpha = None
        if self.feather:
            # distance to the component's edge (inside only), computed before clipping to the frame
            padded = np.pad(mask.view(np.uint8), 1)
            d = cv2.distanceTransform(padded, cv2.DIST_C, 3)[1:-1, 1:-1]  # chessboard: k px inside
            alpha = np.clip(d / (self.feather + 1.0), 0.0, 1.0).astype(np.float32)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + nh, H), min(left + nw, W)
        sl = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        m, src, dst = mask[sl], crop[sl], image[y0:y1, x0:x1]
        if alpha is None:
            dst[m] = src[m]
            return
        a = alpha[sl]
        full = m & (a >= 1.0)
        part = m & (a < 1.0)
        dst[full] = src[full]
        ap = a[part][:, None]
        dst[part] = np.rint(ap * src[part].astype(np.float32) + (1.0 - ap) * dst[part].astype(np.float32)
                            ).astype(np.uint8)

    def sample_at(self, i: int) -> Tuple[np.ndarray, np.ndarray, Dict]:
        """Sample ``i``: ``(image uint8 HxWx3, mask uint8 HxW, JSON-able record)``."""
        i = _int("sample index", i, 0)
        rng = self.rng_for(i)
        base = int(rng.integers(len(self.images)))
        flipped = bool(rng.random() < 0.5)
        image, mask = self.images[base], self.masks[base]
        image = np.ascontiguousarray(image[:, ::-1]) if flipped else image.copy()
        mask = np.ascontiguousarray(mask[:, ::-1]) if flipped else mask.copy()
        k = int(rng.integers(self.pastes[0], self.pastes[1] + 1))
        records, failed = [], 0
        for _ in range(k):
            comp = self._pick(rng, base)
            if comp is None:
                failed += 1
                continue
            rec = paste_component(mask, comp, rng, scale=self.paste_scale, flip_prob=self.paste_flip,
                                  keep_vertical=self.keep_vertical, vertical_jitter=self.vertical_jitter,
                                  ignore_id=self.ignore_id)
            if rec is None:
                failed += 1
                continue
            self._paste_pixels(image, comp, rec)
            rec = {"donor": self.source_ids[rec.pop("map")], **rec}
            records.append(rec)
        donors = list(dict.fromkeys(r["donor"] for r in records))
        record = {
            "method": "copypaste", "seed": self.seed, "index": i, "base": self.source_ids[base],
            "base_flipped": flipped, "donors": donors, "classes_pasted": [r["class"] for r in records],
            "pastes": records, "failed_pastes": failed,
            "source_ids": list(dict.fromkeys([self.source_ids[base]] + donors)),
        }
        return image, mask, record


# ---------------------------------------------------------------------------------- output folder
def _shard_path(out: str, shard: int, shards: int) -> str:
    from synthseg_tf.data.tfrecord import shard_name

    return os.path.join(out, shard_name(shard, shards))


def _part_path(out: str, shard: int) -> str:
    return os.path.join(out, PARTS_DIR, f"shard-{shard:05d}.json")


def _read_state(out: str) -> Optional[Dict]:
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        if os.path.isdir(out) and os.listdir(out):
            raise FileExistsError(f"{out} exists, is not empty and is not a copy-paste set (no {STATE_FILE}); "
                                  "choose a new output folder")
        if os.path.exists(out) and not os.path.isdir(out):
            raise FileExistsError(f"{out} exists and is not a folder")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state.get("identity"), dict):
            raise ValueError("no identity")
    except ValueError as e:
        raise FileExistsError(f"{path} is not a readable copy-paste state file ({e}); "
                              "choose a new output folder") from None
    return state


def _done_shards(out: str, shards: int) -> List[int]:
    return [s for s in range(shards)
            if os.path.isfile(_part_path(out, s)) and os.path.isfile(_shard_path(out, s, shards))]


def _write_shard(out: str, sampler: CopyPasteSampler, shard: int, shards: int, lo: int, hi: int) -> List[Dict]:
    """Write samples ``lo..hi-1`` to shard ``shard`` (temp file + rename), then its manifest part."""
    import tensorflow as tf

    from synthseg_tf.data.tfrecord import make_example

    path = _shard_path(out, shard, shards)
    tmp = os.path.join(out, f".{os.path.basename(path)}.tmp")
    entries = []
    try:
        with tf.io.TFRecordWriter(tmp) as w:
            for i in range(lo, hi):
                image, mask, prov = sampler.sample_at(i)
                sid = f"copypaste/{i:08d}"
                # make_example serialises deterministically: the same (seed, sources, settings) give
                # byte-identical shards
                w.write(make_example(image, mask, label=-1, source_id=sid, synthetic=True, provenance=prov))
                entries.append({"index": i, "shard": shard, "source_id": sid, **prov})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    atomic_write_text(_part_path(out, shard), json.dumps({"shard": shard, "entries": entries}, sort_keys=True))
    return entries


def write_copypaste_set(ds: Dataset, out: str, n: int, image_size, seed: int = 0,
                        class_balance: ClassBalance = "rare", pastes=(1, 3), samples_per_shard: int = 200,
                        log: Callable[[str], None] = print, *, paste_scale=(0.7, 1.3), paste_flip: float = 0.5,
                        keep_vertical: bool = True, vertical_jitter: float = 0.03, min_component_area: int = 8,
                        max_component_fraction: float = 0.1, feather: int = 0, balance_power: float = 1.0,
                        workers: int = 4) -> Dict:
    """Write (or resume) ``n`` copy-paste samples built from ``ds`` as a TFRecord folder ``out``.

    ``ds``: a segmentation :class:`Dataset`, the experiment's training subset (nothing else is
    read). ``image_size``: int or ``(H, W)`` of every output sample. ``class_balance``: which
    class is pasted (``"rare"``, ``"uniform"``, ``None`` for natural frequencies, a dict or a
    list of K weights; see :func:`~synthseg_tf.masks.class_balance_weights`, with
    ``balance_power``). ``pastes``: ``(lo, hi)`` pastes per sample. Keyword-only settings are
    described in the module docstring; ``workers`` threads read the sources.

    Records: ``make_example(image, mask, label=-1, source_id="copypaste/IIIIIIII",
    synthetic=True, provenance=record)``; ``manifest.jsonl`` has one line per sample with
    ``index``, ``shard``, ``source_id``, ``base``, ``donors``, ``classes_pasted``, ``pastes``
    (per paste: donor, class, source bbox, position, size, scale, flip, pixels) and
    ``source_ids`` (base first, then donors). Returns the summary saved in ``copypaste.json``.

    Refuses (``FileExistsError``) a non-empty ``out`` that is not a copy-paste set and a set
    made with another identity (naming the differing settings); a rerun with the same identity
    rebuilds missing shards and returns at once when nothing is missing.
    """
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds must be a synthseg_tf Dataset (the training subset), got {type(ds).__name__}")
    if ds.task != SEGMENTATION:
        raise ValueError(f"{ds.spec}: copy-paste needs a segmentation dataset, this one is {ds.task}")
    if len(ds) == 0:
        raise ValueError(f"{ds.spec}: the dataset has no samples")
    n = _int("n", n, 1)
    per = _int("samples_per_shard", samples_per_shard, 1)
    size = _image_size(image_size)
    source_ids = sorted(s.source_id for s in ds.samples)
    if len(set(source_ids)) != len(source_ids):
        dup = sorted({a for a, b in zip(source_ids, source_ids[1:]) if a == b})
        raise ValueError(f"{ds.spec}: source ids must be unique (provenance names them), duplicated: {dup[:5]}")
    settings = dict(seed=seed, class_balance=class_balance, pastes=pastes, paste_scale=paste_scale,
                    paste_flip=paste_flip, keep_vertical=keep_vertical, vertical_jitter=vertical_jitter,
                    min_component_area=min_component_area, max_component_fraction=max_component_fraction,
                    feather=feather, balance_power=balance_power)
    identity = {"n": n, "image_size": list(size), **normalise_settings(ds.num_classes, **settings),
                "samples_per_shard": per, "classes": list(ds.classes.names), "source_ids": source_ids}
    identity = json.loads(json.dumps(identity))  # exactly what the state file will hold
    out = os.path.abspath(out)
    shards = math.ceil(n / per)

    state = _read_state(out)
    if state is not None and state["identity"] != identity:
        old = state["identity"]
        diff = sorted(k for k in set(identity) | set(old) if old.get(k) != identity.get(k))
        raise FileExistsError(f"{out} holds a copy-paste set with other settings ({', '.join(diff)}); "
                              "use a new output folder or the same settings to resume")
    done = _done_shards(out, shards) if state is not None else []
    complete = (state is not None and state.get("status") == "complete" and len(done) == shards
                and all(os.path.isfile(os.path.join(out, f)) for f in (MANIFEST_FILE, "dataset.json", "classes.json")))
    if complete:
        log(f"{out} is already a complete copy-paste set ({n} samples); nothing to do")
        return state

    t0 = time.time()
    os.makedirs(os.path.join(out, PARTS_DIR), exist_ok=True)
    base = {"identity": identity, "source_spec": ds.spec, "status": "running",
            "started": (state or {}).get("started") or time.strftime("%Y-%m-%dT%H:%M:%S")}
    if state and state.get("sources_sha256"):
        base["sources_sha256"] = state["sources_sha256"]
    atomic_write_text(os.path.join(out, STATE_FILE), json.dumps(base, indent=1))
    ds.classes.save(os.path.join(out, "classes.json"))

    todo = [s for s in range(shards) if s not in set(done)]
    if todo:
        log(f"copy-paste: reading {len(ds)} source samples at {size[0]}x{size[1]}")
        sids, images, masks = load_sources(ds, size, workers=workers)
        fp = sources_fingerprint(sids, images, masks)
        if base.get("sources_sha256", fp) != fp:
            raise FileExistsError(f"{out}: the source images/masks changed since this set was started (same ids, "
                                  "other pixels); use a new output folder")
        base["sources_sha256"] = fp
        atomic_write_text(os.path.join(out, STATE_FILE), json.dumps(base, indent=1))
        sampler = CopyPasteSampler(images, masks, sids, ds.num_classes, **settings)
        for s in todo:
            lo, hi = s * per, min(n, (s + 1) * per)
            _write_shard(out, sampler, s, shards, lo, hi)
            log(f"copy-paste: shard {s + 1}/{shards} written (samples {lo}..{hi - 1})")

    entries: List[Dict] = []
    for s in range(shards):
        with open(_part_path(out, s), encoding="utf-8") as f:
            entries.extend(json.load(f)["entries"])
    entries.sort(key=lambda e: e["index"])
    if [e["index"] for e in entries] != list(range(n)):  # pragma: no cover - a bug if it fires
        raise RuntimeError(f"{out}: the shard manifests do not cover samples 0..{n - 1}; please report")
    atomic_write_text(os.path.join(out, MANIFEST_FILE), "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    names = ds.classes.names
    by_class: Dict[str, int] = {}
    for e in entries:
        for c in e["classes_pasted"]:
            by_class[names[c]] = by_class.get(names[c], 0) + 1
    counts = [min(n, (s + 1) * per) - s * per for s in range(shards)]
    meta = {"schema_version": 1, "spec": f"copypaste:{out}", "task": SEGMENTATION, "count": n, "synthetic": True,
            "method": "copypaste", "source_spec": ds.spec, "shards": counts}
    atomic_write_text(os.path.join(out, "dataset.json"), json.dumps(meta, indent=1))
    summary = dict(base, status="complete", count=n, shards=shards,
                   pastes={"total": sum(len(e["pastes"]) for e in entries),
                           "failed": sum(e["failed_pastes"] for e in entries),
                           "by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1]))},
                   seconds=round(time.time() - t0, 2), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_text(os.path.join(out, STATE_FILE), json.dumps(summary, indent=1))
    log(f"copy-paste: wrote {n} samples to {out} in {summary['seconds']:.1f}s "
        f"({summary['pastes']['total']} pastes, {summary['pastes']['failed']} failed)")
    return summary


__all__ = ["CopyPasteSampler", "normalise_settings", "load_sources", "sources_fingerprint", "write_copypaste_set",
           "STATE_FILE"]
