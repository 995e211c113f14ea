"""``synthseg generate``: label maps -> batched generator inference -> quality filter -> files.

An Apache Beam pipeline. Candidates are numbered ``0, 1, 2, ...``; candidate ``i`` belongs to
shard ``i // samples_per_shard`` and its label map comes from ``sample_at(i)`` (or source map
``i mod M``), so any worker can make it alone and the same seed gives the same output.

The run proceeds in *waves* of at most ``max_shards_per_wave`` shards, which keeps memory
flat however large ``n`` is. A shard is written (TFRecord, PNG pairs, manifest part) under
temporary names and renamed into place; its manifest part is written last and marks it done.
A rerun with the same settings resumes at the first missing shard; one with other settings
refuses. When enough candidates pass the quality filter, the kept set is cut to exactly the
first ``n`` passing candidates and ``manifest.jsonl`` is written.

Output folder (also a TFRecord folder that ``make_dataset`` reads)::

    generation.json  classes.json  dataset.json  manifest.jsonl
    data-SSSSS.tfrecord        images/IIIIIIII.png  masks/IIIIIIII.png
    parts/shard-SSSSS.json     (per-shard manifest: kept and rejected candidates)
"""
from __future__ import annotations

import glob
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np

from synthseg_tf.utils import atomic_write_bytes, atomic_write_text

STATE_FILE = "generation.json"


@dataclass
class GenerationConfig:
    generator: str
    out: str
    n: int
    masks: str = "sample"  # "sample" (sampler on the generator's training maps), "sample:SPEC" or SPEC
    seed: int = 0
    class_balance: Optional[str] = None  # sampler copy-paste balancing, e.g. "rare"
    min_quality: Optional[float] = None
    quality_model: Optional[str] = None  # segmenter SavedModel (model/ of `synthseg unet train`)
    labels: str = "balanced"  # class ids for class-conditional generators: balanced | random | <id>
    samples_per_shard: int = 200
    batch_size: int = 16
    write_png: bool = True
    runner: str = "DirectRunner"
    workers: int = 1
    beam_args: List[str] = field(default_factory=list)
    max_shards_per_wave: int = 8
    max_candidates_factor: float = 20.0

    # Settings that change the output; the others (runner, workers, ...) may differ on resume.
    def identity(self, fingerprint: str) -> Dict:
        keep = ("n", "masks", "seed", "class_balance", "min_quality", "labels", "samples_per_shard")
        d = {k: getattr(self, k) for k in keep}
        d["generator_fingerprint"] = fingerprint
        d["quality_model"] = os.path.abspath(self.quality_model) if self.quality_model else None
        return d


# --------------------------------------------------------------------------- label maps
class MapSource:
    """Candidate index -> (label map at the generator's size, class id or None, provenance).

    Label-map generators use the maps of ``cfg.masks`` as they are or, with ``sample``, new
    maps from :class:`~synthseg_tf.masks.LabelMapSampler`. Class-conditional generators
    trained on classification data (``conditioning`` edges or class) get, for candidate
    ``i``, a class id (balanced by default) and the edge map of a real image of that class
    (transformed by the sampler when sampling), or an empty map.
    """

    def __init__(self, cfg: GenerationConfig, gen_config: Dict, num_classes: int):
        from synthseg_tf.data import load
        from synthseg_tf.masks import LabelMapSampler, resize_nearest

        self.sampling = cfg.masks == "sample" or cfg.masks.startswith("sample:")
        spec = cfg.masks[len("sample:"):] if cfg.masks.startswith("sample:") else cfg.masks
        if cfg.masks == "sample":
            spec = gen_config.get("data")
            if not spec:
                raise ValueError(f"{cfg.generator}: the generator does not record its training data; "
                                 "pass --masks sample:SPEC or --masks SPEC")
        self.conditioning = gen_config.get("conditioning", "labelmap")
        self.size = tuple(gen_config["image_size"])
        self.seed = cfg.seed
        self.labels_mode = cfg.labels
        self.num_labels = gen_config.get("num_labels")
        ds = load(spec)
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
            maps = [self._condition_map(ds, s) for s in ds.samples]
            groups = {}
            for j, s in enumerate(ds.samples):
                groups.setdefault(s.label, []).append(j)
        self.maps, self.groups = maps, groups
        self.source_ids = [s.source_id for s in ds.samples]
        self.samplers = {}
        if self.sampling:
            ops = ("flip", "affine", "elastic", "copypaste", "mix") if self.conditioning == "labelmap" \
                else ("flip", "affine", "elastic")
            for key, idx in groups.items():
                self.samplers[key] = LabelMapSampler([maps[j] for j in idx], num_classes=num_classes,
                                                     seed=cfg.seed, class_balance=cfg.class_balance,
                                                     size=self.size, ops=ops)

    def _condition_map(self, ds, sample):
        import cv2

        from synthseg_tf.data.conditioning import canny_edges

        if self.conditioning == "class":
            return np.zeros(self.size, np.uint8)
        image, _ = ds.read_image(sample)
        image = cv2.resize(image, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return canny_edges(image)

    def label_for(self, i: int) -> Optional[int]:
        if not self.num_labels:
            return None
        if self.labels_mode == "balanced":
            return i % self.num_labels
        if self.labels_mode == "random":
            return int(np.random.default_rng([self.seed, i, 7]).integers(self.num_labels))
        return int(self.labels_mode)

    def get(self, i: int):
        label = self.label_for(i)
        key = None if self.conditioning == "labelmap" else label
        if key not in self.groups:
            raise ValueError(f"class {label} has no images to condition on")
        idx = self.groups[key]
        if self.sampling:
            m, info = self.samplers[key].sample_at(i)
            prov = {"map": "sampled", "sampler": info,
                    "source_ids": [self.source_ids[idx[j]] for j in info["source_maps"]]}
        else:
            j = idx[(i if key is None else i // max(1, self.num_labels)) % len(idx)]
            m, prov = self.maps[j], {"map": "source", "source_ids": [self.source_ids[j]]}
        return m, label, prov


# --------------------------------------------------------------------------- Beam DoFns
def _dofns():
    import apache_beam as beam

    class MakeMaps(beam.DoFn):
        def __init__(self, cfg, gen_config, num_classes):
            self.cfg, self.gen_config, self.num_classes = cfg, gen_config, num_classes

        def setup(self):
            self.source = MapSource(self.cfg, self.gen_config, self.num_classes)

        def process(self, index):
            m, label, prov = self.source.get(index)
            yield {"index": index, "map": m, "label": label, "prov": prov}

    class RenderAndScore(beam.DoFn):
        """Batched generator inference, then the per-sample quality score, then PNG encoding."""

        def __init__(self, cfg: GenerationConfig):
            self.cfg = cfg

        def setup(self):
            import synthseg_tf  # noqa: F401
            from synthseg_tf.generation.renderer import Renderer

            self.renderer = Renderer(self.cfg.generator)
            self.scorer = QualityScorer(self.cfg.quality_model, self.renderer) if self.cfg.quality_model else None

        def process(self, batch):
            from synthseg_tf.data.io import encode_png

            maps = np.stack([b["map"] for b in batch])
            labels = np.array([b["label"] for b in batch]) if batch[0]["label"] is not None else None
            images = self.renderer.render(maps, labels)
            scores = self.scorer.scores(images, maps) if self.scorer else [None] * len(batch)
            for b, img, s in zip(batch, images, scores):
                kept = s is None or self.cfg.min_quality is None or s >= self.cfg.min_quality
                out = {"index": b["index"], "label": b["label"], "prov": b["prov"],
                       "quality": None if s is None else float(s), "kept": bool(kept)}
                if kept:
                    out["image_png"] = encode_png(img)
                    out["mask_png"] = encode_png(b["map"])
                yield out

    class WriteShard(beam.DoFn):
        def __init__(self, cfg: GenerationConfig, fingerprint: str):
            self.cfg, self.fingerprint = cfg, fingerprint

        def process(self, keyed):
            shard, items = keyed
            samples = sorted((it for it in items if it is not None), key=lambda it: it["index"])
            yield write_shard(self.cfg, self.fingerprint, shard, samples)

    return MakeMaps, RenderAndScore, WriteShard


class QualityScorer:
    """Per-sample mIoU of a segmenter's prediction on a generated image vs its conditioning map."""

    def __init__(self, model_dir: str, renderer=None):
        from synthseg_tf.metrics.segmentation import per_sample_miou
        from synthseg_tf.models.unet import load_segmenter

        self._seg = load_segmenter(model_dir)
        self._miou = per_sample_miou
        self.num_classes = renderer.config.get("num_classes") if renderer is not None else None

    def scores(self, images: np.ndarray, maps: np.ndarray) -> List[float]:
        pred = np.asarray(self._seg(images.astype(np.float32) / 255.0))
        k = self.num_classes or int(max(pred.max(), maps[maps != 255].max(initial=0))) + 1
        return [float(v) for v in self._miou(maps, pred, k)]


# --------------------------------------------------------------------------- shard I/O
def shard_file(out: str, shard: int) -> str:
    return os.path.join(out, f"data-{shard:05d}.tfrecord")


def part_file(out: str, shard: int) -> str:
    return os.path.join(out, "parts", f"shard-{shard:05d}.json")


def write_shard(cfg: GenerationConfig, fingerprint: str, shard: int, samples: List[Dict]) -> Dict:
    """Write one shard's kept samples (TFRecord + PNGs) and then its manifest part."""
    import tensorflow as tf

    from synthseg_tf.data.io import decode_png
    from synthseg_tf.data.tfrecord import make_example

    kept = [s for s in samples if s["kept"]]
    rejected = [{"index": s["index"], "quality": s["quality"]} for s in samples if not s["kept"]]
    entries = []
    tmp = shard_file(cfg.out, shard) + ".tmp"
    with tf.io.TFRecordWriter(tmp) as w:
        for s in kept:
            i = s["index"]
            prov = {"generator": fingerprint, "seed": cfg.seed, "index": i, "quality": s["quality"],
                    "label": s["label"], **s["prov"]}
            image, mask = decode_png(s["image_png"]), decode_png(s["mask_png"])
            w.write(make_example(image, mask, label=-1 if s["label"] is None else s["label"],
                                 source_id=f"synthetic/{i:08d}", synthetic=True, provenance=prov))
            entry = {"index": i, "shard": shard, "source_id": f"synthetic/{i:08d}", **prov}
            if cfg.write_png:
                img_path, mask_path = (os.path.join(cfg.out, d, f"{i:08d}.png") for d in ("images", "masks"))
                atomic_write_bytes(img_path, s["image_png"])
                atomic_write_bytes(mask_path, s["mask_png"])
                entry.update(image=os.path.relpath(img_path, cfg.out), mask=os.path.relpath(mask_path, cfg.out))
            entries.append(entry)
    os.replace(tmp, shard_file(cfg.out, shard))
    part = {"shard": shard, "candidates": len(samples), "kept": entries, "rejected": rejected}
    atomic_write_text(part_file(cfg.out, shard), json.dumps(part))
    return {"shard": shard, "kept": len(entries), "candidates": len(samples)}


def read_parts(out: str) -> Dict[int, Dict]:
    parts = {}
    for p in glob.glob(os.path.join(out, "parts", "shard-*.json")):
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        parts[d["shard"]] = d
    return parts


# --------------------------------------------------------------------------- driver
def beam_options(cfg: GenerationConfig):
    """PipelineOptions for the chosen runner; extra ``beam_args`` (e.g. Dataflow's) pass through."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = [f"--runner={cfg.runner}"] + list(cfg.beam_args)
    if cfg.runner == "DirectRunner":
        args += [f"--direct_num_workers={cfg.workers}",
                 "--direct_running_mode=" + ("multi_processing" if cfg.workers > 1 else "in_memory")]
    return PipelineOptions(args)


def _run_wave(cfg: GenerationConfig, gen_config: Dict, num_classes: int, fingerprint: str, shards: List[int]):
    import apache_beam as beam

    MakeMaps, RenderAndScore, WriteShard = _dofns()
    per = cfg.samples_per_shard
    with beam.Pipeline(options=beam_options(cfg)) as p:
        shard_ids = p | "Shards" >> beam.Create(shards)
        samples = (
            shard_ids
            | "Candidates" >> beam.FlatMap(lambda s: range(s * per, (s + 1) * per))
            | "Spread" >> beam.Reshuffle()
            | "LabelMaps" >> beam.ParDo(MakeMaps(cfg, gen_config, num_classes))
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=cfg.batch_size)
            | "RenderScore" >> beam.ParDo(RenderAndScore(cfg))
            | "ByShard" >> beam.Map(lambda s: (s["index"] // per, s))
        )
        markers = shard_ids | "Markers" >> beam.Map(lambda s: (s, None))  # empty shards still get written
        ((samples, markers) | beam.Flatten() | beam.GroupByKey() | beam.ParDo(WriteShard(cfg, fingerprint)))


def _prepare_out(cfg: GenerationConfig, identity: Dict) -> Optional[Dict]:
    """Create or check the output folder; returns the saved state (None for a new run)."""
    state_path = os.path.join(cfg.out, STATE_FILE)
    if os.path.exists(cfg.out) and not os.path.isfile(state_path) and os.listdir(cfg.out):
        raise FileExistsError(f"{cfg.out} exists and is not a synthseg generation folder; choose a new --out")
    if os.path.isfile(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("identity") != identity:
            diff = sorted(k for k in identity if state.get("identity", {}).get(k) != identity[k])
            raise FileExistsError(f"{cfg.out} holds a generation run with other settings ({', '.join(diff)}); "
                                  "use a new --out or the same settings to resume")
        return state
    os.makedirs(os.path.join(cfg.out, "parts"), exist_ok=True)
    return None


def run_generation(cfg: GenerationConfig, log=print) -> Dict:
    """Run (or resume) a generation job; returns the summary written to generation.json."""
    import logging

    import synthseg_tf  # noqa: F401
    from synthseg_tf.generation.renderer import Renderer

    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # worker chatter; errors still surface
    if cfg.n < 1:
        raise ValueError("--n must be at least 1")
    if cfg.min_quality is not None and not cfg.quality_model:
        raise ValueError("--min-quality needs --quality-model (a segmenter SavedModel: the model/ folder of `synthseg unet train`)")
    renderer = Renderer(cfg.generator)  # validates the path early, and gives the fingerprint
    gen_config = dict(renderer.config)
    if not gen_config.get("image_size") or not gen_config.get("num_classes"):
        raise ValueError(f"{cfg.generator}: config.json lacks image_size/num_classes")
    num_classes = int(gen_config["num_classes"])
    identity = cfg.identity(renderer.fingerprint)
    state = _prepare_out(cfg, identity)
    if state and state.get("status") == "complete":
        log(f"{cfg.out} is already complete ({state['kept']} samples); nothing to do")
        return state
    if renderer.classes is not None:
        renderer.classes.save(os.path.join(cfg.out, "classes.json"))
    base = {"identity": identity, "generator": os.path.abspath(cfg.generator), "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(os.path.join(cfg.out, STATE_FILE), json.dumps(base, indent=1))
    del renderer  # workers load their own copy

    per = cfg.samples_per_shard
    max_candidates = int(math.ceil(cfg.n * cfg.max_candidates_factor))
    t0 = time.time()
    while True:
        parts = read_parts(cfg.out)
        done = sorted(parts)
        contiguous = 0
        while contiguous in parts:
            contiguous += 1
        kept = sum(len(parts[s]["kept"]) for s in range(contiguous))
        candidates = sum(parts[s]["candidates"] for s in range(contiguous))
        if kept >= cfg.n:
            break
        if candidates >= max_candidates:
            raise RuntimeError(
                f"only {kept} of {candidates} candidates passed --min-quality {cfg.min_quality}; stopped at "
                f"{max_candidates} candidates. Lower --min-quality or train the generator longer "
                f"(the finished shards in {cfg.out} are kept; a rerun resumes)")
        rate = kept / candidates if candidates else 1.0
        need = (cfg.n - kept) / max(rate, 0.02) * (1.0 if candidates == 0 else 1.1)
        n_shards = min(cfg.max_shards_per_wave, max(1, math.ceil(need / per)))
        todo, s = [], contiguous
        while len(todo) < n_shards:
            if s not in parts:
                todo.append(s)
            s += 1
        log(f"wave: shards {todo[0]}..{todo[-1]} ({len(todo) * per} candidates; {kept}/{cfg.n} kept so far)")
        _run_wave(cfg, gen_config, num_classes, identity["generator_fingerprint"], todo)
    summary = _finish(cfg, parts, contiguous, base, time.time() - t0)
    log(f"wrote {summary['kept']} samples to {cfg.out} ({summary['candidates']} candidates, "
        f"{summary['rejected']} rejected by the quality filter)")
    return summary


def _finish(cfg: GenerationConfig, parts: Dict[int, Dict], contiguous: int, base: Dict, seconds: float) -> Dict:
    """Cut the kept set to exactly the first ``n`` passing candidates and write the manifest."""
    entries = [e for s in range(contiguous) for e in parts[s]["kept"]]
    entries.sort(key=lambda e: e["index"])
    keep = entries[: cfg.n]
    cutoff = keep[-1]["index"]
    for s in sorted(parts):
        extra = [e for e in parts[s]["kept"] if e["index"] > cutoff]
        if s >= contiguous or extra:
            _trim_shard(cfg, parts[s], cutoff)
    lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in keep)
    atomic_write_text(os.path.join(cfg.out, "manifest.jsonl"), lines)
    candidates = sum(len([r for r in parts[s]["rejected"] if r["index"] <= cutoff]) for s in parts) + len(keep)
    meta = {"schema_version": 1, "spec": f"generated:{cfg.out}", "task": "segmentation", "count": len(keep),
            "synthetic": True}
    atomic_write_text(os.path.join(cfg.out, "dataset.json"), json.dumps(meta, indent=1))
    summary = dict(base, status="complete", kept=len(keep), candidates=candidates,
                   rejected=candidates - len(keep), seconds=round(seconds, 1),
                   finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_text(os.path.join(cfg.out, STATE_FILE), json.dumps(summary, indent=1))
    return summary


def _trim_shard(cfg: GenerationConfig, part: Dict, cutoff: int) -> None:
    """Drop samples past ``cutoff`` from a shard (TFRecord, PNGs, manifest part), atomically."""
    import tensorflow as tf

    shard = part["shard"]
    path = shard_file(cfg.out, shard)
    keep_ids = {e["source_id"] for e in part["kept"] if e["index"] <= cutoff}
    if os.path.isfile(path):
        tmp = path + ".tmp"
        with tf.io.TFRecordWriter(tmp) as w:
            for rec in tf.data.TFRecordDataset(path):
                ex = tf.train.Example.FromString(rec.numpy())
                sid = ex.features.feature["source_id"].bytes_list.value[0].decode()
                if sid in keep_ids:
                    w.write(rec.numpy())
        if keep_ids:
            os.replace(tmp, path)
        else:
            os.remove(tmp)
            os.remove(path)
    for e in part["kept"]:
        if e["index"] > cutoff:
            for key in ("image", "mask"):
                if key in e and os.path.exists(os.path.join(cfg.out, e[key])):
                    os.remove(os.path.join(cfg.out, e[key]))
    part = dict(part, kept=[e for e in part["kept"] if e["index"] <= cutoff],
                rejected=[r for r in part["rejected"] if r["index"] <= cutoff], trimmed_after=cutoff)
    if part["kept"] or part["rejected"]:
        atomic_write_text(part_file(cfg.out, shard), json.dumps(part))
    else:
        os.remove(part_file(cfg.out, shard))
