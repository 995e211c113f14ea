"""``synthseg generate``: label maps -> batched generator inference -> quality filter -> files.

One Apache Beam pipeline per run. Candidates are numbered ``0, 1, 2, ...``; candidate ``i``
belongs to shard ``i // samples_per_shard`` and its label map comes from ``sample_at(i)`` (or
source map ``i mod M``), so any worker can make it alone and the same seed gives the same output.
The pipeline's elements are shard ids: a worker makes a whole shard (label maps, generator,
quality filter, PNG encoding, pipelined on two threads: :class:`ShardMaker`) and writes it
straight into the output storage (:func:`write_shard`), so no image bytes cross a shuffle and
memory stays flat however large ``n`` is. The output may be local or any storage Beam's
``FileSystems`` knows (``gs://``; :mod:`~synthseg_tf.generation.outfs`): the driver reads the
workers' results back from there, so runners whose workers share no disk with it (Dataflow)
work.

Byte-identical output: the generator (and the quality model) always run on fixed-size batches
of ``inference_batch`` consecutive candidates of one shard, each candidate at a fixed position,
the last batch of a shard padded with empty maps. So a sample's pixels never depend on the
runner, the number of workers or how the work overlapped, only on the settings in the run's
identity. PNGs and ``tf.train.Example`` records are serialised deterministically.

How many shards the pipeline makes: exactly enough for ``n`` without a quality filter; with
one, enough for ``n`` at the pass rate of the first candidates (a pilot batch in the driver)
plus a margin. Should the filter keep fewer than that, another pipeline makes the missing
shards (logged; rare). Each file of a shard is written under a temporary name and renamed into
place; its manifest part is written last and marks the shard done. A rerun with the same
settings resumes at the first missing shard; one with other settings refuses. The kept set is
then cut to exactly the first ``n`` passing candidates and ``manifest.jsonl`` is written.

Failure behaviour: one run at a time holds the folder's lock (``.synthseg.lock``: owner pid and
host; :func:`~synthseg_tf.utils.output_lock`), so a second run into the same folder stops with
:class:`~synthseg_tf.errors.OutputLocked` and a SIGKILLed run's lock is taken over by the next.
A run killed at any point resumes to the same bytes: temporary files (``.tmp-*``, ``*.tmp``)
and the files of unfinished shards are swept, never counted. A failed write (disk full, ...)
raises :class:`~synthseg_tf.errors.StorageError` naming the file, keeping nothing partial.
Every candidate index ``0..last`` is accounted for: kept (``manifest.jsonl``) or rejected by
the quality filter (``rejected.jsonl``), each exactly once. Paths read back from manifests and
parts are refused when they leave the output folder (:func:`read_manifest`).

Leak-free sources: with ``--masks sample`` the maps (and copy-paste donors) come only from the
samples the generator trained on (its config's ``train_source_ids``; the train split of its
``data`` for older generators). Every manifest entry lists the ``source_ids`` it was built
from; :func:`manifest_source_ids` gathers them for provenance checks.

Output folder (also a TFRecord folder that ``make_dataset`` reads)::

    generation.json  classes.json  dataset.json  manifest.jsonl  rejected.jsonl
    loss_stats.json            (with --pixel-filter / --hardness: the segmenter's real per-class losses)
    data-SSSSS.tfrecord        images/IIIIIIII.png  masks/IIIIIIII.png
    parts/shard-SSSSS.json     (per-shard manifest: kept and rejected candidates)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from synthseg_tf.generation import outfs
from synthseg_tf.utils import (LOCK_FILE, atomic_write_bytes, atomic_writer, is_temp_name, output_lock,
                               raise_storage_error)

STATE_FILE = "generation.json"
MANIFEST_FILE = "manifest.jsonl"
REJECTED_FILE = "rejected.jsonl"
_SAMPLE_FILE = re.compile(r"^\d{8}\.png$")
_SHARD_FILE = re.compile(r"^data-(\d{5})\.tfrecord$")


LABEL_MODES = ("balanced", "random", "rare")


@dataclass
class GenerationConfig:
    """Settings of one ``synthseg generate`` job.

    ``masks``: ``"sample"`` samples new maps from the maps the generator was trained on (its
    config's ``data`` restricted to ``train_source_ids``; for older generators without that
    record, the train split of ``data``, with a warning); ``"sample:SPEC"`` samples from
    exactly SPEC's maps; ``SPEC`` uses SPEC's maps as they are.

    ``quality_model``: a segmenter export (label-map generators; score = per-sample mIoU of its
    prediction vs the conditioning map) or a classifier export (class-conditional generators;
    score = its probability of the intended class). A sample is kept when ``score >=
    min_quality``. A segmenter must be clearly better than the majority class on its run's
    selection split (:func:`~synthseg_tf.generation.filtering.check_quality_model`) unless
    ``allow_weak_quality_model``.

    ``pixel_filter`` (a margin, e.g. 1.25; needs a segmenter ``quality_model``): FreeMask's
    pixel filter. The segmenter's mean per-class cross-entropy on the generator's real training
    pairs is saved as ``loss_stats.json``; pixels of a generated image whose loss exceeds
    ``margin`` x their class's mean become void (255) in the stored mask (the image is
    unchanged; the quality score uses the unfiltered map). ``hardness`` (needs a segmenter and
    sampled maps): base maps are drawn with probability ``0.5 * hardness / sum + 0.5 / M`` (see
    :func:`~synthseg_tf.generation.filtering.hardness_weights`), the hardness of a map being
    the pixel-weighted mean of those class losses over its pixels.

    ``class_min_quality`` (class-conditional generators with a classifier ``quality_model``): one
    threshold per class id, used instead of ``min_quality`` for the candidates of that class (a
    filter calibrated per class, e.g. the confidence the classifier gives real held-out images of
    the class; see :func:`~synthseg_tf.generation.filtering.calibrated_confidence_thresholds`).

    ``labels`` (class-conditional generators): ``balanced`` (``i mod C``), ``random``
    (uniform), ``rare`` (probability proportional to ``1 / count`` of the class among the
    generator's training samples) or one class id; deterministic per candidate index.
    ``class_weights`` (with ``rare``): one factor per class id on those probabilities, e.g. how
    hard each class is for a real-trained classifier on the selection split, so the synthetic
    budget goes where the real data falls short (a factor 0 draws no candidate of that class).

    ``borrow_maps`` (class-conditional generators on edge maps): the
    probability that candidate ``i`` of class ``c`` is conditioned on a (transformed) edge map of a
    training image of **another** class, drawn in proportion to the other classes' image counts,
    instead of one of class ``c``'s own (pose borrowing: a rare class gets the poses and shapes of
    frequent ones). The generator renders class ``c`` on it and the quality filter decides whether
    the result still looks like ``c``, so use it with a classifier ``quality_model``. Deterministic
    per candidate; the manifest records the donor class (``borrowed_from``).

    ``reference_swap`` (generators trained with a reference image, ``style_dim`` > 0): the
    probability that candidate ``i`` takes as its reference **another** training image of its own
    class than the one its map was made from (for a label-map generator: another training image),
    so the image combines one image's layout or pose with another's appearance (background,
    colours) instead of re-rendering one real image. Deterministic per candidate; the manifest
    records ``reference_swapped``.

    ``inference_batch``: the generator and the quality model always run on batches of exactly
    this many consecutive candidates of a shard (the last one padded with empty maps), each at a
    fixed position, so a sample's bytes do not depend on ``workers``, the runner or how
    map making, inference and encoding overlapped. It is part of the identity: a resume must keep it.
    """

    generator: str
    out: str
    n: int
    masks: str = "sample"  # "sample" (sampler on the generator's training maps), "sample:SPEC" or SPEC
    seed: int = 0
    class_balance: Optional[str] = None  # sampler copy-paste balancing, e.g. "rare"
    min_quality: Optional[float] = None
    quality_model: Optional[str] = None  # segmenter export (model/ of `synthseg unet train`) or classifier export
    labels: str = "balanced"  # class ids for class-conditional generators: balanced | random | rare | <id>
    samples_per_shard: int = 200
    batch_size: int = 16  # batch of the quality model's loss statistics (--pixel-filter/--hardness)
    inference_batch: int = 16  # the fixed generator/quality-model batch (padded); part of the identity
    write_png: bool = True
    runner: str = "DirectRunner"
    workers: int = 1
    beam_args: List[str] = field(default_factory=list)
    max_shards_per_wave: Optional[int] = None  # cap on shards per Beam pipeline (None: all in one)
    max_candidates_factor: float = 20.0
    pixel_filter: Optional[float] = None  # FreeMask pixel filter margin (e.g. 1.25); needs a segmenter
    hardness: bool = False  # hardness-aware base-map sampling; needs a segmenter
    allow_weak_quality_model: bool = False  # only warn when the segmenter is no better than the majority class
    class_min_quality: Optional[List[float]] = None  # per-class thresholds (class-conditional + classifier)
    class_weights: Optional[List[float]] = None  # per-class factors on labels="rare"'s draw probabilities
    borrow_maps: float = 0.0  # edge-conditioned class generators: P(a candidate's map comes from another class)
    reference_swap: float = 0.0  # reference-image generators: P(the reference is another image than the map's)

    # Settings that change the output; the others (runner, workers, ...) may differ on resume.
    def identity(self, fingerprint: str, map_sources: Optional[Dict] = None) -> Dict:
        keep = ("n", "masks", "seed", "class_balance", "min_quality", "labels", "samples_per_shard",
                "pixel_filter", "hardness", "inference_batch")
        d = {k: getattr(self, k) for k in keep}
        if self.class_min_quality is not None:  # (absent otherwise: older outputs keep their identity)
            d["class_min_quality"] = [float(v) for v in self.class_min_quality]
        if self.class_weights is not None:  # (likewise)
            d["class_weights"] = [float(v) for v in self.class_weights]
        if self.borrow_maps:  # (likewise)
            d["borrow_maps"] = float(self.borrow_maps)
        if self.reference_swap:  # (likewise)
            d["reference_swap"] = float(self.reference_swap)
        d["generator_fingerprint"] = fingerprint
        d["quality_model"] = os.path.abspath(self.quality_model) if self.quality_model else None
        d["map_sources"] = map_sources
        return d


# --------------------------------------------------------------------------- label maps
def select_source_ids(ds, source_ids: Iterable[str], where: str):
    """The samples of ``ds`` whose ``source_id`` is in ``source_ids`` (in ``ds`` order).

    ``ValueError`` when a wanted id names several samples (ambiguous) or none is found; ids
    missing from ``ds`` are returned as the second value so the caller can warn.
    """
    wanted = set(source_ids)
    seen: Dict[str, int] = {}
    keep = []
    for i, s in enumerate(ds.samples):
        if s.source_id in wanted:
            if s.source_id in seen:
                raise ValueError(f"{where}: source id {s.source_id!r} names several samples of {ds.spec}; "
                                 "cannot tell which one the generator trained on")
            seen[s.source_id] = i
            keep.append(i)
    if not keep:
        raise ValueError(f"{where}: none of its {len(wanted)} training source ids is in {ds.spec} "
                         "(moved or renamed data?); pass --masks sample:SPEC or --masks SPEC")
    return ds.select(keep), sorted(wanted - set(seen))


def generator_training_data(gen_config: Dict, generator: str, log: Callable = print):
    """``(dataset, how)``: the samples the generator was trained on.

    Its config's ``data`` restricted to ``train_source_ids`` (``how="train_source_ids"``); for a
    generator that predates that record, the train split of ``data`` (``Dataset.train_val()[0]``,
    which follows the layout's own splits; ``how="train_split"``) with a logged warning.
    """
    from synthseg_tf.data import load

    spec = gen_config.get("data")
    if not spec:
        raise ValueError(f"{generator}: the generator does not record its training data (config.json 'data'); "
                         "pass --masks sample:SPEC or --masks SPEC")
    ds = load(spec)
    ids = gen_config.get("train_source_ids")
    if ids is not None:
        ds, missing = select_source_ids(ds, ids, generator)
        if missing:
            log(f"warning: {len(missing)} of the generator's {len(ids)} training source ids are not in {spec} "
                f"(e.g. {', '.join(missing[:3])}); using the {len(ds)} found")
        return ds, "train_source_ids"
    ds = ds.train_val()[0]
    log(f"warning: {generator} does not record train_source_ids (trained by an older version); using only the "
        f"train split of {spec} ({len(ds)} samples) so no validation map leaks into the synthetic set")
    return ds, "train_split"


def plan_map_source(cfg: GenerationConfig, gen_config: Dict, log: Callable = print) -> Dict:
    """Which samples feed the label maps: ``{"spec", "how", "source_ids"}`` (``source_ids`` None: all of
    ``spec``). Decided once by the driver; every worker's :class:`MapSource` follows it."""
    from synthseg_tf.data import load

    if cfg.masks == "sample":
        ds, how = generator_training_data(gen_config, cfg.generator, log)
        return {"spec": gen_config["data"], "how": how, "source_ids": [s.source_id for s in ds.samples]}
    spec = cfg.masks[len("sample:"):] if cfg.masks.startswith("sample:") else cfg.masks
    load(spec)  # fail early on a bad spec
    return {"spec": spec, "how": "spec", "source_ids": None}


def _sha(ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:16]


def rare_label_weights(counts: Dict[int, int], num_labels: int,
                       class_weights: Optional[Sequence[float]] = None) -> List[float]:
    """Class-id probabilities proportional to ``1 / count`` (classes without samples: 0), times
    ``class_weights[c]`` when given (e.g. how hard each class is for a real-trained model)."""
    w = np.array([1.0 / counts[c] if counts.get(c) else 0.0 for c in range(num_labels)])
    if class_weights is not None:
        f = np.asarray(class_weights, dtype=np.float64).reshape(-1)
        if len(f) != num_labels or not np.all(np.isfinite(f)) or np.any(f < 0):
            raise ValueError(f"class_weights must be {num_labels} finite numbers >= 0 (one per class id), "
                             f"got {list(class_weights)[:8]}{'...' if len(f) > 8 else ''}")
        w = w * f
    if w.sum() <= 0:
        raise ValueError("--labels rare: no class has training samples" if class_weights is None else
                         "--labels rare with class_weights: every class with training samples has weight 0")
    return (w / w.sum()).tolist()


class MapSource:
    """Candidate index -> (label map at the generator's size, class id or None, provenance).

    Label-map generators use the maps of ``cfg.masks`` as they are or, with ``sample``, new
    maps from :class:`~synthseg_tf.masks.LabelMapSampler`. Class-conditional generators
    trained on classification data (``conditioning`` edges or class) get, for candidate
    ``i``, a class id (``cfg.labels``) and the edge map of a real image of that class
    (transformed by the sampler when sampling), or an empty map.

    ``plan`` (from :func:`plan_map_source`, plus optional ``label_weights`` for ``labels="rare"``
    and ``class_mean_loss`` for ``hardness``) fixes the source samples; without it the plan is
    made here. Provenance ``source_ids`` lists every source map a candidate was built from:
    the base map, a cut-mix partner and every copy-paste donor.

    For a generator trained with a reference image (``style_dim`` > 0), each candidate also gets
    one (:meth:`reference`): the real image whose label map its map was made from, or, when the map
    was borrowed from another class or with probability ``reference_swap``, another image of the
    candidate's own class (any other image for a label-map generator) drawn from its index.
    Its ``source_id`` is the provenance's ``reference_id`` and is among its ``source_ids``.
    """

    def __init__(self, cfg: GenerationConfig, gen_config: Dict, num_classes: int, plan: Optional[Dict] = None):
        from synthseg_tf.data import load
        from synthseg_tf.masks import LabelMapSampler, resize_nearest

        plan = dict(plan) if plan is not None else plan_map_source(cfg, gen_config, log=lambda m: None)
        self.sampling = cfg.masks == "sample" or cfg.masks.startswith("sample:")
        spec = plan["spec"]
        self.conditioning = gen_config.get("conditioning", "labelmap")
        self.size = tuple(gen_config["image_size"])
        self.seed = cfg.seed
        self.labels_mode = cfg.labels
        self.num_labels = gen_config.get("num_labels")
        ds = load(spec)
        if plan.get("source_ids") is not None:
            ds, _ = select_source_ids(ds, plan["source_ids"], cfg.generator)
        self.images = None  # the real images at the generator's size, for a generator with a reference input
        if gen_config.get("style_dim"):
            self.images = [self._read_image(ds, s) for s in ds.samples]
        if self.conditioning == "labelmap":
            if ds.task != "segmentation":
                raise ValueError(f"--masks {spec}: needs a segmentation dataset with label maps")
            if ds.num_classes != num_classes:
                raise ValueError(f"--masks {spec} has {ds.num_classes} classes but the generator was trained on "
                                 f"{num_classes}")
            maps = [resize_nearest(ds.read_mask(s)[0], self.size) for s in ds.samples]
            groups = {None: list(range(len(maps)))}
        else:
            if ds.task != "classification" or ds.num_classes != self.num_labels:
                raise ValueError(f"--masks {spec}: the generator is conditioned on {self.num_labels} image "
                                 "classes; pass its classification dataset")
            maps = [self._condition_map(ds, s, None if self.images is None else self.images[j])
                    for j, s in enumerate(ds.samples)]
            groups = {}
            for j, s in enumerate(ds.samples):
                groups.setdefault(s.label, []).append(j)
        self.maps, self.groups = maps, groups
        self.source_ids = [s.source_id for s in ds.samples]
        self._index_of = {sid: j for j, sid in enumerate(self.source_ids)}
        self.borrow = float(cfg.borrow_maps or 0.0)
        self.reference_swap = float(cfg.reference_swap or 0.0)
        from synthseg_tf.data.conditioning import EDGE_CONDITIONINGS

        if self.borrow and self.conditioning not in EDGE_CONDITIONINGS:
            raise ValueError("--borrow-maps needs a class-conditional generator conditioned on edge maps "
                             f"(this one is conditioned on {self.conditioning!r})")
        lw = plan.get("label_weights")
        self._label_cdf = None if lw is None else np.cumsum(np.asarray(lw, dtype=np.float64))
        if self.labels_mode == "rare" and self.num_labels and self._label_cdf is None:
            counts = {k: len(v) for k, v in groups.items()}
            self._label_cdf = np.cumsum(rare_label_weights(counts, int(self.num_labels), cfg.class_weights))
        self.map_weights = None
        if plan.get("class_mean_loss") is not None:
            from synthseg_tf.generation.filtering import hardness_weights, map_hardness

            self.map_weights = hardness_weights([map_hardness(m, plan["class_mean_loss"]) for m in maps])
        self.samplers = {}
        if self.sampling:
            ops = ("flip", "affine", "elastic", "copypaste", "mix") if self.conditioning == "labelmap" \
                else ("flip", "affine", "elastic")
            for key, idx in groups.items():
                w = None if self.map_weights is None else self.map_weights[idx]
                self.samplers[key] = LabelMapSampler([maps[j] for j in idx], num_classes=num_classes,
                                                     seed=cfg.seed, class_balance=cfg.class_balance,
                                                     size=self.size, ops=ops, map_weights=w)

    def _read_image(self, ds, sample) -> np.ndarray:
        import cv2

        image, _ = ds.read_image(sample)
        return cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)

    def _condition_map(self, ds, sample, image=None):
        from synthseg_tf.data.conditioning import edge_map

        if self.conditioning == "class":
            return np.zeros(self.size, np.uint8)
        return edge_map(self._read_image(ds, sample) if image is None else image, self.conditioning)

    def reference(self, prov: Dict) -> Optional[np.ndarray]:
        """The reference image (uint8 ``[H,W,3]``) of a candidate from its provenance (``None`` for a
        generator without a reference input)."""
        if self.images is None:
            return None
        return self.images[self._index_of[prov["reference_id"]]]

    def label_for(self, i: int) -> Optional[int]:
        if not self.num_labels:
            return None
        if self.labels_mode == "balanced":
            return i % self.num_labels
        if self.labels_mode == "random":
            return int(np.random.default_rng([self.seed, i, 7]).integers(self.num_labels))
        if self.labels_mode == "rare":
            u = np.random.default_rng([self.seed, i, 11]).random() * self._label_cdf[-1]
            return min(int(np.searchsorted(self._label_cdf, u, side="right")), int(self.num_labels) - 1)
        return int(self.labels_mode)

    def map_class_for(self, i: int, label: int) -> int:
        """The class whose training images lend candidate ``i`` (of class ``label``) its edge map:
        ``label`` itself, or with probability ``borrow_maps`` another class, drawn in proportion to
        its number of images."""
        if not self.borrow:
            return label
        rng = np.random.default_rng([self.seed, i, 13])
        if rng.random() >= self.borrow:
            return label
        others = sorted(k for k in self.groups if k != label)
        if not others:
            return label
        w = np.asarray([len(self.groups[k]) for k in others], dtype=np.float64)
        return int(others[min(int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right")),
                              len(others) - 1)])

    def get(self, i: int):
        label = self.label_for(i)
        key = None if self.conditioning == "labelmap" else label
        if key not in self.groups:
            raise ValueError(f"class {label} has no images to condition on")
        if key is not None:
            key = self.map_class_for(i, key)
        idx = self.groups[key]
        if self.sampling:
            m, info = self.samplers[key].sample_at(i)
            prov = {"map": "sampled", "sampler": info,
                    "source_ids": [self.source_ids[idx[j]] for j in info["source_maps"]]}
        else:
            j = idx[(i if key is None else i // max(1, self.num_labels)) % len(idx)]
            m, prov = self.maps[j], {"map": "source", "source_ids": [self.source_ids[j]]}
        if key is not None and key != label:
            prov["borrowed_from"] = int(key)
        if self.images is not None:
            if key is not None and key != label:  # a borrowed map: the appearance of an image of the own class
                own = self.groups[label]
                ref = own[int(np.random.default_rng([self.seed, i, 17]).integers(len(own)))]
            else:
                ref = idx[info["base_map"]] if self.sampling else j
                own = self.groups[key]
                rng = np.random.default_rng([self.seed, i, 19]) if self.reference_swap and len(own) > 1 else None
                if rng is not None and rng.random() < self.reference_swap:
                    k = int(rng.integers(len(own) - 1))  # any image of the group but the map's own
                    ref = own[k + (k >= own.index(ref))]
                    prov["reference_swapped"] = True
            prov["reference_id"] = self.source_ids[ref]
            if prov["reference_id"] not in prov["source_ids"]:
                prov["source_ids"] = prov["source_ids"] + [prov["reference_id"]]
        return m, label, prov


# --------------------------------------------------------------------------- Beam work
# One copy per worker process of the heavy objects a shard needs (the source maps, a quality
# model), reused by every shard the worker makes and, in-process, by the driver's pilot batch
# (the generator: renderer.load_renderer).
_CACHE: Dict[str, object] = {}


def _cached(key: str, make: Callable):
    if key not in _CACHE:
        for k in [k for k in _CACHE if k.split("|", 1)[0] == key.split("|", 1)[0]]:
            del _CACHE[k]  # one entry per kind: a new run's objects replace the previous run's
        _CACHE[key] = make()
    return _CACHE[key]


# A Beam SDK worker subprocess runs this module as __main__ (the DirectRunner's multi_processing
# workers: ``python -m apache_beam.runners.worker.sdk_worker_main``; Dataflow's harness too).
SDK_WORKER_MAIN = "apache_beam.runners.worker.sdk_worker_main"
_EXIT = {"armed": False, "failed": False}


def in_sdk_worker_process() -> bool:
    """True in a Beam SDK worker subprocess; False in the driver and in an in-process runner."""
    return getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None) == SDK_WORKER_MAIN


def arm_fast_worker_exit() -> bool:
    """In a Beam SDK worker subprocess, end the process with ``os._exit(0)`` once its harness has
    returned normally, skipping the interpreter's finalisation of TensorFlow (2.5 of the 2.7 s
    between a two-worker run's last element and the pipeline's end, measured). The runner joins
    each worker process before the run returns, so this is the teardown of every fanned-out run.

    Safe because every file a shard writes is renamed into place, and the runner was told the
    bundle finished, before the harness returns. Not armed in the driver or an in-process runner
    (the user's process keeps its own exit), and not used after an uncaught exception: the process
    then finalises as usual and keeps its failing exit status. Returns whether it is armed."""
    if _EXIT["armed"]:
        return True
    if not in_sdk_worker_process():
        return False
    import atexit

    previous_hook = sys.excepthook

    def hook(*exc_info):
        _EXIT["failed"] = True
        previous_hook(*exc_info)

    def fast_exit():
        if _EXIT["failed"]:
            return
        import logging

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(0)

    sys.excepthook = hook
    atexit.register(fast_exit)  # last registered, so it runs first of the exit handlers
    _EXIT["armed"] = True
    return True


def inference_batches(indices: List[int], per: int, k: int) -> List[tuple]:
    """Group candidate indices into fixed inference batches: ``[(first, [(position, index), ...])]``.

    Batch ``b`` of shard ``s`` covers indices ``s*per + b*k ... + k - 1`` (cut at the shard's
    end) and index ``i`` sits at position ``(i - s*per) % k``. Both depend only on ``i``, ``per``
    and ``k``, never on how the indices were grouped into work items."""
    groups: Dict[int, List[tuple]] = {}
    for i in indices:
        first = (i // per) * per + ((i % per) // k) * k
        groups.setdefault(first, []).append((i - first, i))
    return sorted(groups.items())


def _pad_batch(items: List[Dict], positions: List[int], k: int):
    """``(maps [k,H,W], labels [k] or None, references [k,H,W,3] or None)`` with each item at its
    position, empty maps (and black references) elsewhere."""
    shape = items[0]["map"].shape
    maps = np.zeros((k,) + tuple(shape), np.uint8)
    labels = None if items[0]["label"] is None else np.zeros(k, np.int64)
    refs = None if items[0].get("reference") is None else np.zeros((k,) + tuple(shape) + (3,), np.uint8)
    for pos, it in zip(positions, items):
        maps[pos] = it["map"]
        if labels is not None:
            labels[pos] = it["label"]
        if refs is not None:
            refs[pos] = it["reference"]
    return maps, labels, refs


class ShardMaker:
    """Makes the candidates of a shard: label maps -> generator -> quality score (and FreeMask pixel
    filter) -> PNG bytes, on fixed inference batches (:func:`inference_batches`).

    The work is pipelined on two threads: while TensorFlow renders batch ``b`` (it releases the
    GIL), a helper thread builds the label maps of batch ``b + 1`` and PNG-encodes batch
    ``b - 1``, so map sampling and encoding hide behind inference. The output does not depend on
    the overlap: every candidate's map comes from its own index, every batch is rendered alone.
    """

    def __init__(self, cfg: GenerationConfig, gen_config: Dict, num_classes: int, plan: Optional[Dict] = None):
        self.cfg, self.gen_config, self.num_classes, self.plan = cfg, gen_config, num_classes, plan or {}
        self.source = self.renderer = self.scorer = None

    def load(self) -> "ShardMaker":
        import synthseg_tf  # noqa: F401
        from synthseg_tf.generation.renderer import load_renderer

        cfg = self.cfg
        key = "maps|" + hashlib.sha256(json.dumps(
            [asdict(cfg), self.gen_config, self.num_classes, self.plan], sort_keys=True,
            default=str).encode()).hexdigest()
        self.source = _cached(key, lambda: MapSource(cfg, self.gen_config, self.num_classes, self.plan))
        gen = outfs.absolute(cfg.generator)
        self.renderer = load_renderer(gen)
        if cfg.quality_model:
            q = outfs.absolute(cfg.quality_model)
            self.scorer = _cached(f"scorer|{q}|{gen}", lambda: make_scorer(cfg.quality_model, self.renderer))
        return self

    def _maps(self, indices: List[int]) -> List[Dict]:
        out = []
        for index in indices:
            m, label, prov = self.source.get(index)
            out.append({"index": index, "map": m, "label": label, "prov": prov,
                        "reference": self.source.reference(prov)})
        return out

    def _render(self, batch: List[Dict], positions: List[int]) -> List[Dict]:
        """Render and score one fixed inference batch; kept samples carry their image/mask arrays."""
        cfg, k = self.cfg, self.cfg.inference_batch
        pmaps, plabels, prefs = _pad_batch(batch, positions, k)
        # (references only to a generator that takes them: render's older two-argument call stays valid)
        images = self.renderer.render(pmaps, plabels) if prefs is None else self.renderer.render(pmaps, plabels, prefs)
        masks, voided = pmaps, None
        if self.scorer is None:
            scores = [None] * k
        elif self.scorer.kind == "classifier":
            scores = self.scorer.scores(images, plabels)
        else:
            scores, probs = self.scorer.scores_and_probabilities(images, pmaps)
            if cfg.pixel_filter is not None:
                from synthseg_tf.generation.filtering import pixel_losses, void_hard_pixels

                masks, voided = void_hard_pixels(pmaps, pixel_losses(probs, pmaps),
                                                 self.plan.get("pixel_class_mean_loss"), cfg.pixel_filter)
        outs = []
        for b, j in zip(batch, positions):
            s = scores[j]
            threshold = cfg.min_quality if cfg.class_min_quality is None or b["label"] is None \
                else cfg.class_min_quality[int(b["label"])]
            kept = s is None or threshold is None or s >= threshold
            prov = b["prov"] if voided is None else dict(b["prov"], voided_fraction=voided[j])
            out = {"index": b["index"], "label": b["label"], "prov": prov,
                   "quality": None if s is None else float(s), "kept": bool(kept)}
            if kept:
                out["image"], out["mask"] = images[j], masks[j]
            outs.append(out)
        return outs

    @staticmethod
    def _encode(outs: List[Dict]) -> List[Dict]:
        from synthseg_tf.data.io import encode_png

        for out in outs:
            if out["kept"]:
                image, mask = out.pop("image"), out.pop("mask")
                out["image_png"], out["mask_png"] = encode_png(image), encode_png(mask)
                out["size"] = [int(image.shape[0]), int(image.shape[1])]
        return outs

    def batches(self, indices: List[int]) -> List[Dict]:
        """The samples (kept with their PNG bytes, or rejected) of ``indices``, in index order."""
        from concurrent.futures import ThreadPoolExecutor

        groups = inference_batches(sorted(indices), self.cfg.samples_per_shard, self.cfg.inference_batch)
        if not groups:
            return []
        done = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthseg-maps") as pool:
            nxt = pool.submit(self._maps, [i for _, i in groups[0][1]])
            encoding = []
            for g, (_, members) in enumerate(groups):
                batch = nxt.result()
                if g + 1 < len(groups):
                    nxt = pool.submit(self._maps, [i for _, i in groups[g + 1][1]])
                outs = self._render(batch, [pos for pos, _ in members])
                encoding.append(pool.submit(self._encode, outs))
            for f in encoding:
                done.extend(f.result())
        return done

    def shard(self, shard: int) -> List[Dict]:
        per = self.cfg.samples_per_shard
        return self.batches(list(range(shard * per, (shard + 1) * per)))


def _dofn():
    import apache_beam as beam

    class MakeShard(beam.DoFn):
        """A shard id -> its candidates made (:class:`ShardMaker`) and written (:func:`write_shard`)
        straight to the output storage; yields the shard's summary. No shuffle carries image bytes."""

        def __init__(self, cfg: GenerationConfig, gen_config: Dict, num_classes: int, plan: Optional[Dict],
                     fingerprint: str):
            self.cfg, self.gen_config, self.num_classes = cfg, gen_config, num_classes
            self.plan, self.fingerprint = plan, fingerprint

        def setup(self):
            arm_fast_worker_exit()
            self.maker = ShardMaker(self.cfg, self.gen_config, self.num_classes, self.plan).load()

        def process(self, shard):
            yield write_shard(self.cfg, self.fingerprint, shard, self.maker.shard(shard))

    return MakeShard


class QualityScorer:
    """Per-sample mIoU of a segmenter's prediction on a generated image vs its conditioning map."""

    kind = "segmenter"

    def __init__(self, model_dir: str, renderer=None):
        from synthseg_tf.metrics.segmentation import per_sample_miou
        from synthseg_tf.models.unet import load_segmenter

        self._seg = load_segmenter(model_dir)
        self._miou = per_sample_miou
        self.num_classes = renderer.config.get("num_classes") if renderer is not None else None

    def scores_and_probabilities(self, images: np.ndarray, maps: np.ndarray):
        """``(mIoU per sample, probabilities float32 [B,H,W,K])`` for uint8 images ``[B,H,W,3]``."""
        out = self._seg.predict(images.astype(np.float32) / 255.0)
        pred = np.asarray(out["label_ids"])
        k = self.num_classes or int(max(pred.max(), maps[maps != 255].max(initial=0))) + 1
        return [float(v) for v in self._miou(maps, pred, k)], out["probabilities"]

    def scores(self, images: np.ndarray, maps: np.ndarray) -> List[float]:
        return self.scores_and_probabilities(images, maps)[0]


class ClassifierScorer:
    """Per-sample probability a classifier gives the class a class-conditional generator was asked for."""

    kind = "classifier"

    def __init__(self, model_dir: str, renderer=None):
        from synthseg_tf.models.classifier import load_classifier

        self._clf = load_classifier(model_dir)

    def scores(self, images: np.ndarray, labels) -> List[float]:
        probs = self._clf.predict_proba(images.astype(np.float32) / 255.0)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        return [float(p) for p in probs[np.arange(len(labels)), labels]]


def make_scorer(model_dir: str, renderer=None):
    """:class:`QualityScorer` for a segmenter export, :class:`ClassifierScorer` for a classifier export."""
    from synthseg_tf.generation.filtering import quality_model_kind

    kind = quality_model_kind(model_dir)
    return (ClassifierScorer if kind == "classifier" else QualityScorer)(model_dir, renderer)


# --------------------------------------------------------------------------- shard I/O
def shard_file(out: str, shard: int) -> str:
    return outfs.join(out, f"data-{shard:05d}.tfrecord")


def part_file(out: str, shard: int) -> str:
    return outfs.join(out, "parts", f"shard-{shard:05d}.json")


def synthetic_example(image_png: bytes, mask_png: bytes, size, label: int, source_id: str,
                      provenance: Dict) -> bytes:
    """One generated sample as the TFRecord schema's ``tf.train.Example`` (the PNG bytes as
    encoded, no re-encoding), serialised deterministically (map fields in key order), so the
    same sample always gives the same record bytes."""
    import tensorflow as tf

    def b(v: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    feats = {
        "image/encoded": b(image_png),
        "image/height": i(size[0]),
        "image/width": i(size[1]),
        "mask/encoded": b(mask_png),
        "label": i(label),
        "source_id": b(source_id.encode("utf-8")),
        "synthetic": i(1),
        "provenance": b(json.dumps(provenance, sort_keys=True).encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)


def _write_file(path: str, data: bytes) -> None:
    """An output file, atomically (local: temp + rename; remote: :mod:`outfs`); any write failure as
    a StorageError naming ``path``."""
    try:
        if outfs.is_remote(path):
            outfs.write_bytes(path, data)
        else:
            atomic_write_bytes(path, data)
    except OSError as e:
        raise_storage_error(path, e)


def write_shard(cfg: GenerationConfig, fingerprint: str, shard: int, samples: List[Dict]) -> Dict:
    """Write one shard's kept samples (PNG pairs, then the TFRecord) and then its manifest part,
    each file atomically, through :mod:`outfs` (local disk or any Beam filesystem: a worker that
    shares no disk with the driver writes straight into the output storage).

    The part, written last, is the shard's commit marker: files of a shard without a part do not
    count and are swept on resume. All or nothing: on any failure the shard's files written so
    far are removed and a write failure is raised as :class:`~synthseg_tf.errors.StorageError`
    naming the file; the shard is made again on resume.
    """
    kept = [s for s in samples if s["kept"]]
    rejected = [{"index": s["index"], "quality": s["quality"]} for s in samples if not s["kept"]]
    entries: List[Dict] = []
    records: List[bytes] = []
    final = shard_file(cfg.out, shard)
    written: List[str] = []
    current = final
    try:
        for s in kept:
            i = s["index"]
            prov = {"generator": fingerprint, "seed": cfg.seed, "index": i, "quality": s["quality"],
                    "label": s["label"], **s["prov"]}
            records.append(synthetic_example(s["image_png"], s["mask_png"], s["size"],
                                             -1 if s["label"] is None else s["label"], f"synthetic/{i:08d}", prov))
            entry = {"index": i, "shard": shard, "source_id": f"synthetic/{i:08d}", **prov}
            if cfg.write_png:
                img_path, mask_path = (outfs.join(cfg.out, d, f"{i:08d}.png") for d in ("images", "masks"))
                for path, data in ((img_path, s["image_png"]), (mask_path, s["mask_png"])):
                    current = path
                    _write_file(path, data)
                    written.append(path)
                entry.update(image=f"images/{i:08d}.png", mask=f"masks/{i:08d}.png")
            entries.append(entry)
        current = final
        if records:
            _write_file(final, outfs.tfrecord_bytes(records))
            written.append(final)
        elif outfs.exists(final):  # left by an earlier, interrupted attempt
            outfs.remove([final])
        part = {"shard": shard, "candidates": len(samples), "kept": entries, "rejected": rejected}
        current = part_file(cfg.out, shard)
        _write_file(current, json.dumps(part, sort_keys=True).encode("utf-8"))
    except BaseException as e:
        try:
            outfs.remove(written)
        except Exception:  # noqa: BLE001 - the original failure matters more
            pass
        if isinstance(e, OSError):
            raise_storage_error(current, e)
        raise
    return {"shard": shard, "kept": len(entries), "candidates": len(samples)}


def _bad_part(path: str, problem: str):
    from synthseg_tf.data.io import DataError

    return DataError(path, f"{problem}; this shard's record of its samples is damaged: delete {path} and run "
                     "again to make the shard again")


def load_part(out: str, path: str, per: Optional[int] = None) -> Dict:
    """A shard's manifest part, checked: ``DataError`` naming the file when it is not valid JSON,
    names another shard, lists an index outside the shard (with ``per``) or twice, or a path that
    leaves ``out`` (``../``, absolute, a symlink pointing outside)."""
    try:
        d = json.loads(outfs.read_text(path))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad_part(path, f"not valid JSON ({e})") from None
    m = re.search(r"shard-(\d+)\.json$", path)
    if not isinstance(d, dict) or not isinstance(d.get("shard"), int) or not isinstance(d.get("kept"), list) \
            or not isinstance(d.get("rejected"), list) or not isinstance(d.get("candidates"), int):
        raise _bad_part(path, "not a shard part (needs shard, candidates, kept, rejected)")
    if m and int(m.group(1)) != d["shard"]:
        raise _bad_part(path, f"says it is shard {d['shard']}")
    seen = set()
    for e in d["kept"] + d["rejected"]:
        i = e.get("index") if isinstance(e, dict) else None
        if not isinstance(i, int):
            raise _bad_part(path, f"entry without an integer index: {str(e)[:80]}")
        if per is not None and not d["shard"] * per <= i < (d["shard"] + 1) * per:
            raise _bad_part(path, f"index {i} is not in shard {d['shard']} ({per} candidates per shard)")
        if i in seen:
            raise _bad_part(path, f"index {i} is listed twice")
        seen.add(i)
    for e in d["kept"]:
        for key in ("image", "mask"):
            if key in e:
                outfs.safe_join(out, e[key], path)
    return d


def _part_paths(out: str) -> List[str]:
    return outfs.files(outfs.join(out, "parts"), r"^shard-\d+\.json$")


def read_parts(out: str, per: Optional[int] = None) -> Dict[int, Dict]:
    """Every shard part of ``out``, checked by :func:`load_part`."""
    parts = {}
    for p in _part_paths(out):
        d = load_part(out, p, per)
        parts[d["shard"]] = d
    return parts


def _part_summaries(out: str, per: int) -> Dict[int, tuple]:
    """``{shard: (kept, candidates)}`` of the finished shards (each part checked; not kept in memory)."""
    out_parts = {}
    for p in _part_paths(out):
        d = load_part(out, p, per)
        out_parts[d["shard"]] = (len(d["kept"]), d["candidates"])
    return out_parts


def read_manifest(out_dir: str) -> List[Dict]:
    """The entries of a finished generation folder's ``manifest.jsonl``, checked.

    ``DataError`` naming the manifest, the line and the problem for a line that is not JSON, an
    index or source id listed twice, or an ``image``/``mask`` path that escapes ``out_dir``
    (``../``, absolute, a symlink pointing outside); ``FileNotFoundError`` without a manifest."""
    from synthseg_tf.data.io import DataError

    path = outfs.join(out_dir, MANIFEST_FILE)
    text = outfs.optional_text(path)
    if text is None:
        raise FileNotFoundError(f"{out_dir}: no {MANIFEST_FILE} (not a finished `synthseg generate` folder)")
    entries, seen_i, seen_id = [], set(), set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            e = json.loads(line)
        except ValueError as exc:
            raise DataError(where, f"not valid JSON ({exc})") from None
        if not isinstance(e, dict) or not isinstance(e.get("index"), int):
            raise DataError(where, "entry without an integer index")
        if e["index"] in seen_i or e.get("source_id") in seen_id:
            raise DataError(where, f"sample {e['index']} ({e.get('source_id')}) is listed twice")
        seen_i.add(e["index"])
        seen_id.add(e.get("source_id"))
        for key in ("image", "mask"):
            if key in e:
                outfs.safe_join(out_dir, e[key], where)
        entries.append(e)
    return entries


def manifest_source_ids(out_dir: str, include_loss_stats: bool = True) -> set:
    """Every real ``source_id`` the kept samples of a finished generation folder were built from.

    The union of the manifest entries' ``source_ids`` (base map, cut-mix partner and every
    copy-paste donor of each sample) and, with ``include_loss_stats`` (default), the ids of the
    real pairs ``loss_stats.json`` was computed on (they shaped the pixel filter / hardness).
    ``FileNotFoundError`` without ``manifest.jsonl``; ``ValueError`` for an entry without
    ``source_ids`` (written by an older version: its provenance cannot be checked).
    """
    from synthseg_tf.generation.filtering import LOSS_STATS_FILE

    path = outfs.join(out_dir, MANIFEST_FILE)
    text = outfs.optional_text(path)
    if text is None:
        raise FileNotFoundError(f"{out_dir}: no manifest.jsonl (not a finished `synthseg generate` folder)")
    ids: set = set()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        entry = json.loads(line)
        if not isinstance(entry.get("source_ids"), list):
            raise ValueError(f"{path} line {n}: no source_ids (written by an older version?); its provenance "
                             "cannot be checked: generate the set again")
        ids.update(entry["source_ids"])
    stats = _read_loss_stats(outfs.join(out_dir, LOSS_STATS_FILE)) if include_loss_stats else None
    if stats:
        ids.update(stats.get("source_ids") or [])
    return ids


def _read_loss_stats(path: str) -> Optional[Dict]:
    """``loss_stats.json`` of an output folder (any storage), checked; None when absent."""
    from synthseg_tf.generation.filtering import load_loss_stats

    if not outfs.is_remote(path):
        return load_loss_stats(path) if os.path.isfile(path) else None
    text = outfs.optional_text(path)
    if text is None:
        return None
    try:
        stats = json.loads(text)
        stats["class_mean_loss"], stats["map_hardness"]  # noqa: B018  (required keys)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a loss statistics file ({e.__class__.__name__}: {e})") from e
    return stats


# --------------------------------------------------------------------------- driver
def beam_options(cfg: GenerationConfig):
    """PipelineOptions for the chosen runner; extra ``beam_args`` (e.g. Dataflow's) pass through."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [f"--runner={cfg.runner}"] + list(cfg.beam_args)
    if cfg.runner == "DirectRunner":
        args += [f"--direct_num_workers={cfg.workers}",
                 "--direct_running_mode=" + ("multi_processing" if cfg.workers > 1 else "in_memory")]
    return PipelineOptions(args)


def _run_pipeline(cfg: GenerationConfig, gen_config: Dict, num_classes: int, fingerprint: str, shards: List[int],
                  plan: Optional[Dict] = None, pipeline_factory: Optional[Callable] = None) -> None:
    """One Beam pipeline making ``shards``: each shard id goes to a worker that makes and writes the
    whole shard (:class:`ShardMaker`, :func:`write_shard`) into the output storage. Image bytes never
    cross a shuffle; the driver learns the result from the shards' parts in the output storage.

    ``pipeline_factory``: makes the ``beam.Pipeline`` (e.g. TFX's ``_make_beam_pipeline``); default:
    a pipeline with :func:`beam_options`."""
    import apache_beam as beam

    MakeShard = _dofn()
    p = pipeline_factory() if pipeline_factory is not None else beam.Pipeline(options=beam_options(cfg))
    with p:
        (p
         | "Shards" >> beam.Create(shards)
         | "Spread" >> beam.Reshuffle()
         | "MakeAndWrite" >> beam.ParDo(MakeShard(cfg, gen_config, num_classes, plan, fingerprint)))


def _storage_error_in(exc: BaseException):
    """The :class:`StorageError` a Beam worker raised, from the runner's wrapping exception: the
    original (in-process runners chain it) or rebuilt from the worker's traceback text."""
    from synthseg_tf.errors import StorageError

    seen, e, found = set(), exc, None
    while e is not None and id(e) not in seen:
        if isinstance(e, StorageError):
            found = e  # the deepest one is the original (Beam re-raises a copy with the step's name)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    if found is not None:
        return found
    m = re.search(r"StorageError: (?:\[Errno (\d+)\] )?(.+?)(?: \[while running [^\]]*\])?$", str(exc), re.M)
    if m:
        err = StorageError(m.group(2).strip())
        err.errno = int(m.group(1) or 5)
        return err
    return None


# what a run writes before its state file (a run stopped while preparing must be able to resume)
PREPARING_FILES = ("parts", "classes.json", "loss_stats.json")


def _ours(name: str) -> bool:
    """Files a generation run makes in its folder (so a folder holding only these is not foreign)."""
    return (name == LOCK_FILE or name.startswith(LOCK_FILE + ".") or is_temp_name(name)
            or name in PREPARING_FILES)


def _check_not_foreign(cfg: GenerationConfig) -> None:
    if not outfs.is_remote(cfg.out) and os.path.isfile(cfg.out):
        raise FileExistsError(f"{cfg.out} is a file, not a folder; choose a new --out")
    names = outfs.listdir(cfg.out)
    if names and STATE_FILE not in names and any(not _ours(n) for n in names):
        raise FileExistsError(f"{cfg.out} exists and is not a synthseg generation folder; choose a new --out")


def read_generation_state(out_dir: str, hint: str = "") -> Optional[Dict]:
    """The ``generation.json`` of a ``synthseg generate`` folder (any storage); None when absent,
    :class:`~synthseg_tf.data.io.DataError` naming the file (and ``hint``) when it is not valid JSON."""
    path = outfs.join(out_dir, STATE_FILE)
    text = outfs.optional_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        from synthseg_tf.data.io import DataError

        raise DataError(path, f"not valid JSON ({e}){hint}") from None


def _prepare_out(cfg: GenerationConfig, identity: Dict) -> Optional[Dict]:
    """Create or check the output folder; returns the saved state (None for a new run)."""
    _check_not_foreign(cfg)
    state = read_generation_state(cfg.out, "; the run's settings cannot be checked: use a new --out")
    if state is not None:
        saved = state.get("identity") or {}
        if saved != identity and state.get("status") == "complete" and "inference_batch" not in saved \
                and dict(saved, inference_batch=identity.get("inference_batch")) == identity:
            return state  # finished by a version without fixed inference batches: complete is complete
        if saved != identity:
            diff = sorted(k for k in identity if state.get("identity", {}).get(k) != identity[k])
            if diff == ["inference_batch"] and "inference_batch" not in saved:
                raise FileExistsError(f"{cfg.out} holds an unfinished generation run made by an older synthseg-tf "
                                      "(no fixed inference batches), whose bytes this version cannot continue; "
                                      "use a new --out")
            raise FileExistsError(f"{cfg.out} holds a generation run with other settings ({', '.join(diff)}); "
                                  "use a new --out or the same settings to resume")
        return state
    # left by a run stopped while preparing: its settings are unknown
    outfs.remove([outfs.join(cfg.out, name) for name in PREPARING_FILES[1:]])
    try:
        outfs.makedirs(outfs.join(cfg.out, "parts"))
    except OSError as e:
        raise_storage_error(outfs.join(cfg.out, "parts"), e, "creating")
    return None


def _check_options(cfg: GenerationConfig, renderer) -> Optional[str]:
    """Validate option combinations against the generator; returns the quality model kind (or None)."""
    from synthseg_tf.generation.filtering import quality_model_kind

    if cfg.labels not in LABEL_MODES and not str(cfg.labels).isdigit():
        raise ValueError(f"--labels must be one of {', '.join(LABEL_MODES)} or a class id, got {cfg.labels!r}")
    if str(cfg.labels).isdigit() and renderer.conditional and int(cfg.labels) >= int(renderer.num_labels or 0):
        raise ValueError(f"--labels {cfg.labels}: the generator knows class ids 0..{int(renderer.num_labels) - 1}")
    if cfg.class_min_quality is not None:
        t = np.asarray(cfg.class_min_quality, dtype=np.float64)
        if not renderer.conditional:
            raise ValueError("per-class quality thresholds need a class-conditional generator; "
                             f"{cfg.generator} renders label maps")
        if t.ndim != 1 or len(t) != int(renderer.num_labels) or not np.all(np.isfinite(t)) \
                or t.min() < 0.0 or t.max() > 1.0:
            raise ValueError(f"per-class quality thresholds: need {int(renderer.num_labels)} values in [0, 1] (one "
                             f"per class of the generator), got {list(cfg.class_min_quality)[:10]}")
        if not cfg.quality_model:
            raise ValueError("per-class quality thresholds need --quality-model (a classifier export)")
    if cfg.class_weights is not None:
        if cfg.labels != "rare" or not renderer.conditional:
            raise ValueError("class_weights scale the class draws of --labels rare: they need a class-conditional "
                             f"generator and labels='rare' (got labels={cfg.labels!r})")
        rare_label_weights({c: 1 for c in range(int(renderer.num_labels))}, int(renderer.num_labels),
                           cfg.class_weights)  # the values' checks, before any work
    for flag, p in (("--borrow-maps", cfg.borrow_maps), ("--reference-swap", cfg.reference_swap)):
        if not (isinstance(p, (int, float)) and np.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"{flag} must be a probability in [0, 1], got {p!r}")
    borrow, swap = cfg.borrow_maps, cfg.reference_swap
    if swap and not renderer.reference_conditioned:
        raise ValueError("--reference-swap gives candidates another image as their reference: it needs a generator "
                         f"trained with a reference image (style_dim > 0); {cfg.generator} takes none")
    from synthseg_tf.data.conditioning import EDGE_CONDITIONINGS

    if borrow and (not renderer.conditional or renderer.config.get("conditioning") not in EDGE_CONDITIONINGS):
        raise ValueError("--borrow-maps lends edge maps between classes: it needs a class-conditional generator "
                         f"conditioned on edge maps ({cfg.generator} is conditioned on "
                         f"{renderer.config.get('conditioning', 'labelmap')!r})")
    if cfg.min_quality is not None and not cfg.quality_model:
        raise ValueError("--min-quality needs --quality-model (a segmenter SavedModel: the model/ folder of "
                         "`synthseg unet train`; or a classifier export for a class-conditional generator)")
    for name, on in (("--pixel-filter", cfg.pixel_filter is not None), ("--hardness", cfg.hardness)):
        if on and not cfg.quality_model:
            raise ValueError(f"{name} needs --quality-model (a segmenter SavedModel: the model/ folder of "
                             "`synthseg unet train`)")
        if on and renderer.conditional:
            raise ValueError(f"{name} needs a label-map generator; {cfg.generator} is class-conditional")
    if cfg.pixel_filter is not None and not (np.isfinite(cfg.pixel_filter) and cfg.pixel_filter > 0):
        raise ValueError(f"--pixel-filter must be a positive margin (e.g. 1.25), got {cfg.pixel_filter}")
    if cfg.hardness and not (cfg.masks == "sample" or cfg.masks.startswith("sample:")):
        raise ValueError("--hardness weights the sampler's base maps: it needs --masks sample or sample:SPEC")
    if not cfg.quality_model:
        return None
    kind = quality_model_kind(cfg.quality_model)
    from synthseg_tf import storage

    qcfg = json.loads(storage.read_text(storage.join(cfg.quality_model, "config.json")))
    if renderer.conditional:
        if kind != "classifier":
            raise ValueError(f"--quality-model {cfg.quality_model}: {cfg.generator} is class-conditional, so the "
                             "quality model must be a classifier export (`synthseg classifier train`), not a segmenter")
        if qcfg.get("num_classes") != renderer.num_labels:
            raise ValueError(f"--quality-model {cfg.quality_model} has {qcfg.get('num_classes')} classes but the "
                             f"generator is conditioned on {renderer.num_labels}")
    else:
        if kind != "segmenter":
            raise ValueError(f"--quality-model {cfg.quality_model}: a label-map generator needs a segmenter export "
                             "(the model/ folder of `synthseg unet train`), not a classifier")
        if qcfg.get("num_classes") != renderer.config.get("num_classes"):
            raise ValueError(f"--quality-model {cfg.quality_model} has {qcfg.get('num_classes')} classes but the "
                             f"generator has {renderer.config.get('num_classes')}")
    return kind


def _loss_stats(cfg: GenerationConfig, gen_config: Dict, log: Callable) -> Dict:
    """``loss_stats.json`` of the output folder: computed once on the generator's training pairs, reused on resume."""
    from synthseg_tf.generation.filtering import LOSS_STATS_FILE, real_loss_stats

    path = outfs.join(cfg.out, LOSS_STATS_FILE)
    stats = _read_loss_stats(path)
    if stats is not None:
        return stats
    if not gen_config.get("data"):
        raise ValueError(f"--pixel-filter/--hardness: {cfg.generator} does not record its training data (config.json "
                         "'data'), so the real per-class losses cannot be computed")
    ds, how = generator_training_data(gen_config, cfg.generator, log)
    if ds.task != "segmentation":
        raise ValueError(f"{gen_config.get('data')}: loss statistics need the generator's label-map training data")
    log(f"loss statistics of {cfg.quality_model} on the generator's {len(ds)} real training pairs ({how})")
    stats = real_loss_stats(cfg.quality_model, ds, tuple(gen_config["image_size"]), batch_size=cfg.batch_size)
    stats["selection"] = how
    _write_file(path, json.dumps(stats, indent=1, sort_keys=True).encode("utf-8"))
    return stats


def run_generation(cfg: GenerationConfig, log=print, pipeline_factory: Optional[Callable] = None) -> Dict:
    """Run (or resume) a generation job; returns the summary written to generation.json.

    ``cfg.out`` may be a local folder or any path Beam's ``FileSystems`` knows (``gs://...``, or a
    scheme a ``--beam_plugins`` module registers): the workers write straight into it and the
    driver reads it back through the same API, so it works on runners whose workers share no disk
    with the driver (Dataflow). ``pipeline_factory`` makes the Beam pipeline (TFX components pass
    their own); by default one is built from ``cfg.runner``, ``cfg.workers`` and ``cfg.beam_args``.

    Holds the output folder's lock (:func:`~synthseg_tf.utils.output_lock`) while it writes:
    :class:`~synthseg_tf.errors.OutputLocked` when another live run holds it. A failed write
    raises :class:`~synthseg_tf.errors.StorageError` naming the file."""
    import logging

    import synthseg_tf  # noqa: F401
    from synthseg_tf.generation.filtering import check_quality_model
    from synthseg_tf.generation.renderer import describe_generator

    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # worker chatter; errors still surface
    if cfg.n < 1:
        raise ValueError("--n must be at least 1")
    if cfg.inference_batch < 1 or cfg.samples_per_shard < 1 or cfg.batch_size < 1:
        raise ValueError("--inference-batch, --samples-per-shard and --batch-size must be at least 1")
    # config, class table, fingerprint: from the files (the workers load the model itself)
    renderer = describe_generator(cfg.generator)
    gen_config = dict(renderer.config)
    if not gen_config.get("image_size") or not gen_config.get("num_classes"):
        raise ValueError(f"{cfg.generator}: config.json lacks image_size/num_classes")
    num_classes = int(gen_config["num_classes"])
    kind = _check_options(cfg, renderer)
    quality_check = None
    if kind == "segmenter":
        quality_check = check_quality_model(cfg.quality_model, cfg.allow_weak_quality_model, log)
    plan = plan_map_source(cfg, gen_config, log)
    map_sources = {"spec": plan["spec"], "how": plan["how"],
                   "count": None if plan["source_ids"] is None else len(plan["source_ids"]),
                   "source_ids_sha256": None if plan["source_ids"] is None else _sha(plan["source_ids"])}
    identity = cfg.identity(renderer.fingerprint, map_sources)
    _check_not_foreign(cfg)  # before the lock file is made in it
    with output_lock(cfg.out, purpose=f"synthseg generate --n {cfg.n}", log=log):
        try:
            return _generate(cfg, log, renderer, gen_config, num_classes, plan, identity, quality_check,
                             pipeline_factory)
        except Exception as e:  # a Beam worker's write failure, unwrapped from the runner's error
            err = _storage_error_in(e)
            if err is None or err is e:
                raise
            raise err from e


def _filter_desc(cfg: GenerationConfig) -> str:
    if cfg.class_min_quality is not None:
        t = cfg.class_min_quality
        return f"the per-class thresholds ({min(t):.2f}..{max(t):.2f})"
    return f"--min-quality {cfg.min_quality}"


def _pilot_rate(cfg: GenerationConfig, gen_config: Dict, num_classes: int, plan: Dict, log: Callable) -> float:
    """The quality filter's pass rate on the first candidates (at most two inference batches of
    shard 0), made in the driver to size the one pipeline; the shard is made again by a worker."""
    maker = ShardMaker(cfg, gen_config, num_classes, plan).load()
    samples = maker.batches(list(range(min(cfg.samples_per_shard, 2 * cfg.inference_batch))))
    rate = sum(s["kept"] for s in samples) / len(samples)
    log(f"quality filter: {rate:.0%} of the first {len(samples)} candidates pass {_filter_desc(cfg)}")
    return rate


def _generate(cfg: GenerationConfig, log: Callable, renderer, gen_config: Dict, num_classes: int, plan: Dict,
              identity: Dict, quality_check, pipeline_factory: Optional[Callable] = None) -> Dict:
    """run_generation's work, under the output lock."""
    _CACHE.clear()  # maps and quality model: loaded once per run, never across runs
    state = _prepare_out(cfg, identity)
    if state and state.get("status") == "complete":
        log(f"{cfg.out} is already complete ({state['kept']} samples); nothing to do")
        return state
    if renderer.conditional and cfg.labels == "rare":
        train_ds, _ = (generator_training_data(gen_config, cfg.generator, lambda m: None) if gen_config.get("data")
                       else (None, None))
        counts: Dict[int, int] = {}
        for smp in (train_ds.samples if train_ds is not None else []):
            counts[smp.label] = counts.get(smp.label, 0) + 1
        if counts:  # else MapSource counts the classes of the maps it uses
            plan["label_weights"] = rare_label_weights(counts, int(renderer.num_labels), cfg.class_weights)
    if cfg.pixel_filter is not None or cfg.hardness:
        stats = _loss_stats(cfg, gen_config, log)
        if cfg.hardness:
            plan["class_mean_loss"] = stats["class_mean_loss"]
        if cfg.pixel_filter is not None:
            plan["pixel_class_mean_loss"] = stats["class_mean_loss"]
    if renderer.classes is not None:
        _write_file(outfs.join(cfg.out, "classes.json"),
                    json.dumps(renderer.classes.to_dict(), indent=1).encode("utf-8"))
    from synthseg_tf.generation.filtering import quality_model_provenance

    base = {"identity": identity, "generator": outfs.absolute(cfg.generator), "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quality_check": quality_check,
            # what the quality model saw, so an experiment can check it against its subset
            "quality_provenance": quality_model_provenance(cfg.quality_model) if cfg.quality_model else None,
            "label_weights": plan.get("label_weights")}
    _write_file(outfs.join(cfg.out, STATE_FILE), json.dumps(base, indent=1).encode("utf-8"))
    del renderer
    n_temp = outfs.remove_temp_files([cfg.out] + [outfs.join(cfg.out, d) for d in ("images", "masks", "parts")])
    if n_temp:
        log(f"removed {n_temp} temporary file(s) left by an interrupted run")

    per = cfg.samples_per_shard
    max_candidates = int(math.ceil(cfg.n * cfg.max_candidates_factor))
    filtered = cfg.quality_model is not None and (cfg.min_quality is not None or cfg.class_min_quality is not None)
    t0 = time.time()
    pilot = None
    pipelines = 0
    while True:
        parts = _part_summaries(cfg.out, per)
        contiguous = 0
        while contiguous in parts:
            contiguous += 1
        kept = sum(parts[s][0] for s in range(contiguous))
        candidates = sum(parts[s][1] for s in range(contiguous))
        if kept >= cfg.n:
            break
        if candidates >= max_candidates:
            raise RuntimeError(
                f"only {kept} of {candidates} candidates passed {_filter_desc(cfg)}; stopped at "
                f"{max_candidates} candidates. Lower --min-quality or train the generator longer "
                f"(the finished shards in {cfg.out} are kept; a rerun resumes)")
        if candidates:
            rate, margin = kept / candidates, (1.1 if filtered else 1.0)
        elif filtered:
            if pilot is None:
                pilot = _pilot_rate(cfg, gen_config, num_classes, plan, log)
            rate, margin = pilot, 1.25
        else:
            rate, margin = 1.0, 1.0
        need = (cfg.n - kept) / max(rate, 0.02) * margin
        n_shards = max(1, math.ceil(need / per), )
        n_shards = min(n_shards, max(1, math.ceil((max_candidates - candidates) / per)))
        if cfg.max_shards_per_wave:
            n_shards = min(n_shards, cfg.max_shards_per_wave)
        todo, s = [], contiguous
        while len(todo) < n_shards:
            if s not in parts:
                todo.append(s)
            s += 1
        what = "" if pipelines == 0 else " (the quality filter kept fewer than estimated: another pass)"
        log(f"generating shards {todo[0]}..{todo[-1]} ({len(todo) * per} candidates; {kept}/{cfg.n} kept so "
            f"far){what}")
        _run_pipeline(cfg, gen_config, num_classes, identity["generator_fingerprint"], todo, plan, pipeline_factory)
        pipelines += 1
    summary = _finish(cfg, contiguous, dict(base, pipelines=pipelines), time.time() - t0, log)
    log(f"wrote {summary['kept']} samples to {cfg.out} ({summary['candidates']} candidates, "
        f"{summary['rejected']} rejected by the quality filter)")
    return summary


@contextlib.contextmanager
def _text_out(path: str):
    """A text file written atomically on any storage (local: :func:`~synthseg_tf.utils.atomic_writer`)."""
    if outfs.is_remote(path):
        with outfs.text_writer(path) as f:
            yield f
    else:
        with atomic_writer(path, "w") as f:
            yield f


def _finish(cfg: GenerationConfig, contiguous: int, base: Dict, seconds: float, log: Callable = print) -> Dict:
    """Cut the kept set to exactly the first ``n`` passing candidates, write ``manifest.jsonl`` and
    ``rejected.jsonl`` (streamed shard by shard: memory does not grow with ``n``), check that
    every candidate ``0..last`` is accounted for exactly once, and sweep what is not in the set."""
    per = cfg.samples_per_shard
    kept_files, n_kept, cutoff = set(), 0, -1
    with _text_out(outfs.join(cfg.out, MANIFEST_FILE)) as f:
        for s in range(contiguous):
            part = load_part(cfg.out, part_file(cfg.out, s), per)
            for e in sorted(part["kept"], key=lambda e: e["index"]):
                f.write(json.dumps(e, sort_keys=True) + "\n")
                kept_files.update(e[k].rsplit("/", 1)[-1] for k in ("image", "mask") if k in e)
                n_kept, cutoff = n_kept + 1, e["index"]
                if n_kept == cfg.n:
                    break
            if n_kept == cfg.n:
                break
    last_shard = cutoff // per
    for p in _part_paths(cfg.out):
        part = load_part(cfg.out, p, per)
        if part["shard"] >= last_shard and any(e["index"] > cutoff for e in part["kept"] + part["rejected"]):
            _trim_shard(cfg, part, cutoff)
    rejected = 0
    with _text_out(outfs.join(cfg.out, REJECTED_FILE)) as f:
        for s in range(last_shard + 1):
            path = part_file(cfg.out, s)
            part = load_part(cfg.out, path, per)
            got = sorted(e["index"] for e in part["kept"] + part["rejected"])
            want = list(range(s * per, min((s + 1) * per, cutoff + 1)))
            if got != want:
                missing = sorted(set(want) - set(got))
                raise RuntimeError(f"{path}: candidates {missing[:5]} of shard {s} are neither kept nor rejected "
                                   "(a damaged part?); delete it and run again to make the shard again")
            for r in sorted(part["rejected"], key=lambda r: r["index"]):
                f.write(json.dumps({"index": r["index"], "quality": r["quality"], "shard": s,
                                    "status": "rejected"}, sort_keys=True) + "\n")
                rejected += 1
    _sweep(cfg, kept_files, log)
    meta = {"schema_version": 1, "spec": f"generated:{cfg.out}", "task": "segmentation", "count": n_kept,
            "synthetic": True}
    _write_file(outfs.join(cfg.out, "dataset.json"), json.dumps(meta, indent=1).encode("utf-8"))
    summary = dict(base, status="complete", kept=n_kept, candidates=cutoff + 1, rejected=rejected,
                   last_index=cutoff, seconds=round(seconds, 1), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    _write_file(outfs.join(cfg.out, STATE_FILE), json.dumps(summary, indent=1).encode("utf-8"))
    return summary


def _sweep(cfg: GenerationConfig, kept_files: set, log: Callable) -> None:
    """Remove what is not part of the finished set: temporary files, PNGs and TFRecords of
    candidates past the cut or of shards an interrupted run did not finish."""
    out = cfg.out
    removed = outfs.remove_temp_files([out] + [outfs.join(out, d) for d in ("images", "masks", "parts")])
    victims = []
    for d in ("images", "masks"):
        folder = outfs.join(out, d)
        victims += [outfs.join(folder, n) for n in outfs.listdir(folder)
                    if _SAMPLE_FILE.match(n) and n not in kept_files]
    parts = {outfs.basename(p) for p in _part_paths(out)}
    for name in outfs.listdir(out):
        m = _SHARD_FILE.match(name)
        if m and f"shard-{int(m.group(1)):05d}.json" not in parts:
            victims.append(outfs.join(out, name))
    removed += outfs.remove(victims)
    if removed:
        log(f"removed {removed} file(s) of unfinished shards or candidates past the cut")


def _trim_shard(cfg: GenerationConfig, part: Dict, cutoff: int) -> None:
    """Drop samples past ``cutoff`` from a shard (TFRecord, PNGs, manifest part), atomically.
    Idempotent, so a run killed while trimming trims again on resume."""
    import tensorflow as tf

    shard = part["shard"]
    path = shard_file(cfg.out, shard)
    where = part_file(cfg.out, shard)
    keep_ids = {e["source_id"] for e in part["kept"] if e["index"] <= cutoff}
    if outfs.exists(path):
        try:
            records = outfs.read_tfrecords(outfs.read_bytes(path), path)
        except OSError as e:
            raise_storage_error(path, e, "reading")
        keep = []
        for rec in records:
            ex = tf.train.Example.FromString(rec)
            if ex.features.feature["source_id"].bytes_list.value[0].decode() in keep_ids:
                keep.append(rec)
        if keep:
            _write_file(path, outfs.tfrecord_bytes(keep))
        else:
            outfs.remove([path])
    victims = [outfs.safe_join(cfg.out, e[key], where) for e in part["kept"] if e["index"] > cutoff
               for key in ("image", "mask") if key in e]
    outfs.remove(victims)
    part = dict(part, kept=[e for e in part["kept"] if e["index"] <= cutoff],
                rejected=[r for r in part["rejected"] if r["index"] <= cutoff], trimmed_after=cutoff)
    if part["kept"] or part["rejected"]:
        _write_file(where, json.dumps(part, sort_keys=True).encode("utf-8"))
    else:
        outfs.remove([where])
