"""Segmentation experiment: real-only vs real+synthetic vs synthetic-only U-Nets.

For every fraction ``f`` of the real training split and every seed ``s``:

- ``real``: train on ``train.fraction(f, seed=s)`` (the *real subset*);
- ``real+synthetic``: the same real subset, with synthetic samples mixed in at
  ``synthetic_ratio``;
- ``synthetic``: synthetic samples only;

all three with identical hyper-parameters, the same seed ``s`` (same initial weights, same
input-pipeline seeds) and the same number of optimizer steps (the real subset's epoch length,
see :mod:`synthseg_tf.training.segmentation`), and all evaluated on the same full real
validation split at native resolution. The real subset depends on the seed, so the spread over
seeds covers both the initialisation and which real images were drawn.

Output folder::

    OUT/experiment.json     the settings (a rerun with other settings is refused)
    OUT/runs/frac{f}-seed{s}-{setting}/   one train_unet run directory each
    OUT/results.json        every finished run's metrics
    OUT/summary.json        per (fraction, setting): mean ± std over seeds of each metric,
                            per-class IoU mean ± std, and deltas vs real-only paired by seed
    OUT/synthetic/          generated samples, when a generator (not a folder) is given

Statistics: ``std`` is the sample standard deviation over seeds (``ddof=1``), ``null`` with a
single seed. A delta is ``setting - real`` for the same fraction and seed, then mean ± std
over the seeds where both runs exist. These are descriptive numbers, not significance tests.

A synthetic-only run sees no real training image, so it depends on the fraction only through
its step budget: fractions with the same budget (always the case with ``steps=``) share one run
(``runs/synthetic-seed{s}-budget{E}x{S}``) instead of training identical models again.

Runs whose ``metrics.json`` exists are reused, so an interrupted experiment resumes where it
stopped, and more seeds, fractions or settings can be added later with the same settings
(``results.json`` and ``summary.json`` then cover every finished run of the folder).
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

BASELINE = "real"
SEGMENTATION_SETTINGS = ("real", "real+synthetic", "synthetic")
EXPERIMENT_FILE = "experiment.json"
NOT_IDENTITY = ("verbose", "run_eagerly", "cache")  # options that do not change results
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"
STD_NOTE = "sample standard deviation over seeds (ddof=1); null with a single seed"
DELTA_NOTE = ("paired by seed: (setting - real) for the same fraction and seed, then mean ± std over the seeds "
              "where both runs exist; descriptive, not a significance test")


# ============================================================================ shared helpers
def normalize_seeds(seeds: Union[int, Sequence[int]]) -> List[int]:
    """``3`` -> ``[0, 1, 2]``; a sequence is kept (duplicates removed, order kept)."""
    if isinstance(seeds, (int, np.integer)):
        if int(seeds) < 1:
            raise ValueError(f"the number of seeds must be >= 1, got {seeds}")
        return list(range(int(seeds)))
    out = []
    for s in seeds:
        if int(s) not in out:
            out.append(int(s))
    if not out:
        raise ValueError("give at least one seed")
    return out


def normalize_fractions(fractions: Iterable[float]) -> List[float]:
    out = []
    for f in fractions:
        f = float(f)
        if not 0.0 < f <= 1.0:
            raise ValueError(f"fractions must be in (0, 1], got {f}")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError("give at least one fraction")
    return out


def normalize_settings(settings: Iterable[str], allowed: Sequence[str]) -> List[str]:
    out = []
    for s in settings:
        s = str(s).strip().lower().replace(" ", "")
        if s not in allowed:
            raise ValueError(f"unknown setting {s!r}; use {', '.join(allowed)}")
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("give at least one setting")
    return out


def run_name(fraction: float, seed: int, setting: str) -> str:
    return f"frac{fraction:g}-seed{seed}-{setting.replace('+', '_')}"


def synthetic_only_name(seed: int, budget: str) -> str:
    """Synthetic-only runs depend on the fraction only through the budget, so fractions with the
    same budget share one run (``budget``: e.g. ``"3x12"`` epochs x steps)."""
    return f"synthetic-seed{seed}-budget{budget}"


def stats(values: Sequence[Optional[float]]) -> Dict:
    """``{"mean", "std", "n", "values"}`` over the non-null values (std: ddof=1, null when n < 2)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(vals)
    return {
        "mean": float(np.mean(vals)) if n else None,
        "std": float(np.std(vals, ddof=1)) if n >= 2 else None,
        "n": n,
        "values": vals,
    }


def summarize(runs: List[Dict], metric_names: Sequence[str], per_class_metrics: Sequence[str],
              class_names: Sequence[str], fractions: Sequence[float], settings: Sequence[str],
              baseline: str = BASELINE) -> List[Dict]:
    """Rows of mean ± std per (fraction, setting) and paired deltas vs ``baseline``.

    Each run is ``{"fraction", "seed", "setting", "metrics": {name: v}, "per_class": {metric: {class: v}}}``.
    The delta of the first per-class metric is reported per class (``delta_vs_<baseline>["per_class"]``).
    """
    by_key = {(r["fraction"], r["setting"], r["seed"]): r for r in runs}
    rows = []
    for f in fractions:
        for setting in settings:
            rs = sorted((r for r in runs if r["fraction"] == f and r["setting"] == setting), key=lambda r: r["seed"])
            if not rs:
                continue
            row = {
                "fraction": f,
                "setting": setting,
                "n_runs": len(rs),
                "seeds": [r["seed"] for r in rs],
                "train_samples": stats([r.get("train_samples") for r in rs])["mean"],
                "synthetic_samples": rs[0].get("synthetic_samples", 0),
                "metrics": {m: stats([r["metrics"].get(m) for r in rs]) for m in metric_names},
                "per_class": {pm: {c: stats([r["per_class"][pm].get(c) for r in rs]) for c in class_names}
                              for pm in per_class_metrics},
                f"delta_vs_{baseline}": None,
            }
            if setting != baseline:
                pairs = [(r, by_key[(f, baseline, r["seed"])]) for r in rs if (f, baseline, r["seed"]) in by_key]
                if pairs:
                    delta = {"n_pairs": len(pairs)}
                    delta["metrics"] = {m: stats([_diff(a["metrics"].get(m), b["metrics"].get(m)) for a, b in pairs])
                                        for m in metric_names}
                    pm = per_class_metrics[0]
                    delta["per_class_metric"] = pm
                    delta["per_class"] = {c: stats([_diff(a["per_class"][pm].get(c), b["per_class"][pm].get(c))
                                                    for a, b in pairs]) for c in class_names}
                    row[f"delta_vs_{baseline}"] = delta
            rows.append(row)
    return rows


def _diff(a, b):
    return None if a is None or b is None else float(a) - float(b)


def read_json(path: str) -> Dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def check_experiment(out_dir: str, identity: Dict, extra: Dict) -> Dict:
    """Create ``experiment.json`` or check that an existing one has the same ``identity``.

    ``extra`` (fractions, seeds, settings) may grow between runs; it is merged.
    """
    from synthseg_tf.training.segmentation import _json_default, write_json

    identity = json.loads(json.dumps(identity, default=_json_default))  # tuples -> lists, as stored
    path = os.path.join(out_dir, EXPERIMENT_FILE)
    if os.path.isfile(path):
        old = read_json(path)
        old_id = old.get("identity", {})
        if old_id != identity:
            diff = sorted(k for k in set(old_id) | set(identity) if old_id.get(k) != identity.get(k))
            raise FileExistsError(
                f"{out_dir} holds an experiment with other settings ({', '.join(diff)}); use a new output folder, "
                "or the same settings to resume")
        for k, v in extra.items():
            merged = list(old.get(k, []))
            merged += [x for x in v if x not in merged]
            extra[k] = merged
    elif os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not an experiment folder; choose a new output folder")
    os.makedirs(out_dir, exist_ok=True)
    state = {"identity": identity, **extra}
    write_json(path, state)
    return state


def generate_synthetic(generator: str, out: str, n: int, options: Optional[Dict], log: Callable) -> str:
    """Run (or resume) ``synthseg generate`` into ``out``; returns ``out``."""
    from synthseg_tf.generation import GenerationConfig, run_generation

    opts = dict(options or {})
    opts.setdefault("n", int(n))
    log(f"generating {opts['n']} synthetic samples with {generator} into {out}")
    run_generation(GenerationConfig(generator=generator, out=out, **opts), log=log)
    return out


def _clear_session():
    import tensorflow as tf

    tf.keras.backend.clear_session()


def write_results(out_dir: str, task: str, identity: Dict, runs: List[Dict], summary: Dict) -> None:
    from synthseg_tf.training.segmentation import write_json

    runs = sorted(runs, key=lambda r: (r["fraction"], r["seed"], r["setting"]))
    write_json(os.path.join(out_dir, RESULTS_FILE), {"task": task, "experiment": identity, "runs": runs})
    write_json(os.path.join(out_dir, SUMMARY_FILE), summary)


# ============================================================================ segmentation
def _seg_record(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str) -> Dict:
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    config = read_json(os.path.join(run_dir, "config.json"))
    val = metrics["val"]
    return {
        "fraction": fraction, "seed": seed, "setting": setting,
        "run": os.path.relpath(run_dir, out_dir),
        "train_samples": config.get("train_samples") if setting != "synthetic" else 0,
        "real_subset_samples": config.get("train_samples"),
        "synthetic_samples": config.get("synthetic_samples", 0) if setting != "real" else 0,
        "total_steps": config.get("total_steps"),
        "best_epoch": metrics.get("best_epoch"),
        "metrics": {"mean_iou": val.get("mean_iou"), "mean_dice": val.get("mean_dice"),
                    "pixel_accuracy": val.get("pixel_accuracy")},
        "per_class": {"iou": {c: v.get("iou") for c, v in val["per_class"].items()},
                      "dice": {c: v.get("dice") for c, v in val["per_class"].items()}},
    }


def run_segmentation_experiment(
    data,
    out_dir: str,
    synthetic: Optional[str] = None,
    generator: Optional[str] = None,
    fractions: Sequence[float] = (0.1, 0.25, 1.0),
    seeds: Union[int, Sequence[int]] = (0, 1, 2),
    image_size=(128, 128),
    epochs: Optional[int] = None,
    steps: Optional[int] = None,
    settings: Sequence[str] = SEGMENTATION_SETTINGS,
    batch_size: int = 8,
    synthetic_ratio: float = 0.5,
    val=None,
    generation: Optional[Dict] = None,
    export_models: bool = False,
    verbose: int = 0,
    log: Callable = print,
    **train_options,
) -> Dict:
    """Run (or resume) the fraction x seed x setting grid; returns the summary (also in ``summary.json``).

    ``data``: a segmentation Dataset or spec; its ``train_val()`` split is used unless ``val``
    is given (then all of ``data`` trains). ``synthetic``: a TFRecord folder of generated
    samples; or ``generator``: a generator export, run through
    :func:`synthseg_tf.generation.run_generation` into ``OUT/synthetic`` first
    (``generation``: extra :class:`GenerationConfig` fields, e.g. ``{"n": 500,
    "min_quality": 0.3, "quality_model": ...}``; ``n`` defaults to the real training set size).
    ``seeds``: a list, or a count (``3`` = seeds 0, 1, 2). ``train_options`` go to
    :func:`~synthseg_tf.training.segmentation.train_unet` for every run (learning_rate,
    loss weights, class_weights, backbone, augment, ...). Per-run models are exported only
    with ``export_models`` (a ResNet34 U-Net is ~100 MB).
    """
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.segmentation import resolve_source, schedule, train_unet

    out_dir = os.path.abspath(os.fspath(out_dir))
    fractions = normalize_fractions(fractions)
    seeds = normalize_seeds(seeds)
    settings = normalize_settings(settings, SEGMENTATION_SETTINGS)
    needs_syn = any(s != "real" for s in settings)
    if synthetic is not None and generator is not None:
        raise ValueError("give synthetic (a folder of generated samples) or generator, not both")
    if needs_syn and synthetic is None and generator is None:
        raise ValueError(f"settings {settings} need synthetic data: pass synthetic=DIR or generator=DIR")

    ds = load(data)
    if ds.task != "segmentation":
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; a segmentation dataset is needed")
    if val is None:
        train, val_ds = ds.train_val()
        val_src, _, n_val, val_desc = resolve_source(val_ds, "segmentation", "val")
    else:
        train = ds
        val_src, _, n_val, val_desc = resolve_source(val, "segmentation", "val")

    syn_path = os.path.abspath(synthetic) if synthetic is not None else None
    if generator is not None and needs_syn:
        syn_path = os.path.join(out_dir, "synthetic")
    train_options = dict(train_options)
    identity = {
        "task": "segmentation", "data": ds.spec, "val": val_desc if val is not None else "train_val() split",
        "train_samples": len(train), "val_samples": n_val,
        "synthetic": syn_path, "generator": os.path.abspath(generator) if generator else None,
        "generation": generation or None,
        "image_size": list(_size(image_size)), "batch_size": int(batch_size), "epochs": epochs, "steps": steps,
        "synthetic_ratio": float(synthetic_ratio),
        "train_options": {k: v for k, v in sorted(train_options.items()) if k not in NOT_IDENTITY},
    }
    state = check_experiment(out_dir, identity, {"fractions": fractions, "seeds": seeds, "settings": settings})
    if generator is not None and needs_syn:
        generate_synthetic(generator, syn_path, len(train), generation, log)

    def run_dir_of(f: float, s: int, setting: str, n_subset: int) -> str:
        if setting == "synthetic":  # independent of the real subset except through its budget
            n_ep, spe = schedule(n_subset, batch_size, epochs, steps)
            return os.path.join(out_dir, "runs", synthetic_only_name(s, f"{n_ep}x{spe}"))
        return os.path.join(out_dir, "runs", run_name(f, s, setting))

    def update_results() -> Dict:
        """Collect every finished run of the (merged) grid and rewrite results.json / summary.json."""
        runs = []
        for f in state["fractions"]:
            for s in state["seeds"]:
                n_subset = len(train.fraction(f, seed=s))
                for setting in state["settings"]:
                    rd = run_dir_of(f, s, setting, n_subset)
                    if os.path.isfile(os.path.join(rd, "metrics.json")):
                        runs.append(_seg_record(rd, out_dir, f, s, setting))
        summary = _seg_summary(state["identity"], runs, ds.classes.names)
        write_results(out_dir, "segmentation", state["identity"], runs, summary)
        return summary

    total = len(fractions) * len(seeds) * len(settings)
    done = 0
    for f in fractions:
        for s in seeds:
            subset = train.fraction(f, seed=s)
            for setting in settings:
                done += 1
                run_dir = run_dir_of(f, s, setting, len(subset))
                if os.path.isfile(os.path.join(run_dir, "metrics.json")):
                    log(f"[{done}/{total}] {setting}, fraction {f:g}, seed {s}: finished earlier, reusing {run_dir}")
                    continue
                log(f"[{done}/{total}] {setting}, fraction {f:g} ({len(subset)} real images), seed {s}")
                train_unet(
                    subset, val_src, run_dir, image_size=image_size, batch_size=batch_size, epochs=epochs,
                    steps=steps, synthetic=syn_path if setting != "real" else None,
                    synthetic_ratio=1.0 if setting == "synthetic" else synthetic_ratio, seed=s,
                    export=export_models, overwrite=True, verbose=verbose,
                    extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting,
                                                 "real_subset": [x.source_id for x in subset.samples]}},
                    **train_options)
                _clear_session()
                update_results()
    summary = update_results()
    log(f"results: {os.path.join(out_dir, RESULTS_FILE)}; summary: {os.path.join(out_dir, SUMMARY_FILE)}")
    return summary


def _size(image_size) -> Tuple[int, int]:
    from synthseg_tf.training.segmentation import parse_image_size

    return parse_image_size(image_size)


def _seg_summary(identity: Dict, runs: List[Dict], class_names: Sequence[str]) -> Dict:
    fractions = sorted({r["fraction"] for r in runs})
    settings = [s for s in SEGMENTATION_SETTINGS if any(r["setting"] == s for r in runs)]
    return {
        "task": "segmentation",
        "experiment": identity,
        "class_names": list(class_names),
        "fractions": fractions,
        "seeds": sorted({r["seed"] for r in runs}),
        "settings": settings,
        "baseline": BASELINE,
        "metric_names": ["mean_iou", "mean_dice", "pixel_accuracy"],
        "primary_metric": "mean_iou",
        "per_class_metrics": ["iou", "dice"],
        "evaluated_on": "the real validation split, native resolution, void pixels skipped",
        "std": STD_NOTE,
        "delta": DELTA_NOTE,
        "rows": summarize(runs, ["mean_iou", "mean_dice", "pixel_accuracy"], ["iou", "dice"], class_names,
                          fractions, settings),
    }


__all__ = ["run_segmentation_experiment", "summarize", "stats", "SEGMENTATION_SETTINGS"]
