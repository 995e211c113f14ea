"""The grid bookkeeping both experiments share (:mod:`synthseg_tf.experiments.segmentation`,
:mod:`synthseg_tf.experiments.classification`).

Argument checks, run names, ``experiment.json`` (create, or check and merge on resume),
generating the synthetic set, running the fraction x seed x setting grid while reusing finished
runs, ``results.json`` / ``summary.json`` and the mean ± std and paired-delta statistics.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

BASELINE = "real"
EXPERIMENT_FILE = "experiment.json"
NOT_IDENTITY = ("verbose", "run_eagerly", "cache")  # options that do not change results
RESULTS_FILE = "results.json"
SUMMARY_FILE = "summary.json"
STD_NOTE = "sample standard deviation over seeds (ddof=1); null with a single seed"
DELTA_NOTE = ("paired by seed: (setting - real) for the same fraction and seed, then mean ± std over the seeds "
              "where both runs exist; descriptive, not a significance test")


# ============================================================================ arguments
def _unique(values: Iterable, convert: Callable, what: str) -> List:
    """``convert`` (which checks) every value, drop repeats (order kept); at least one is needed."""
    out = []
    for v in values:
        v = convert(v)
        if v not in out:
            out.append(v)
    if not out:
        raise ValueError(f"give at least one {what}")
    return out


def normalize_seeds(seeds: Union[int, Sequence[int]]) -> List[int]:
    """``3`` -> ``[0, 1, 2]``; a sequence is kept (duplicates removed, order kept)."""
    if isinstance(seeds, (int, np.integer)):
        if int(seeds) < 1:
            raise ValueError(f"the number of seeds must be >= 1, got {seeds}")
        return list(range(int(seeds)))
    return _unique(seeds, int, "seed")


def _fraction(f) -> float:
    f = float(f)
    if not 0.0 < f <= 1.0:
        raise ValueError(f"fractions must be in (0, 1], got {f}")
    return f


def normalize_fractions(fractions: Iterable[float]) -> List[float]:
    return _unique(fractions, _fraction, "fraction")


RATIO_MARK = "@"


def split_setting(setting: str) -> Tuple[str, Optional[float]]:
    """``"real+synthetic@0.1"`` -> ``("real+synthetic", 0.1)``; a plain setting -> ``(setting, None)``."""
    base, mark, ratio = setting.partition(RATIO_MARK)
    return (base, float(ratio)) if mark else (base, None)


def normalize_settings(settings: Iterable[str], allowed: Sequence[str],
                       with_ratio: Sequence[str] = ()) -> List[str]:
    """Validate settings against ``allowed``. Those in ``with_ratio`` may also be written
    ``SETTING@RATIO`` (a synthetic ratio in (0, 1) for that run only), kept as ``SETTING@{ratio:g}``."""
    def setting(s) -> str:
        s = str(s).strip().lower().replace(" ", "")
        base, mark, ratio = s.partition(RATIO_MARK)
        if mark and base in with_ratio:
            try:
                r = float(ratio)
            except ValueError:
                r = float("nan")
            if not 0.0 < r < 1.0:
                raise ValueError(f"setting {s!r}: the synthetic ratio after {RATIO_MARK!r} must be a number in "
                                 f"(0, 1), got {ratio!r}")
            return f"{base}{RATIO_MARK}{r:g}"
        if s not in allowed:
            extra = f", or {' / '.join(f'{b}{RATIO_MARK}RATIO' for b in with_ratio)}" if with_ratio else ""
            raise ValueError(f"unknown setting {s!r}; use {', '.join(allowed)}{extra}")
        return s

    return _unique(settings, setting, "setting")


def with_ratio_variants(settings: Sequence[str], present: Iterable[str]) -> Tuple[str, ...]:
    """``settings`` with every ``SETTING@RATIO`` of ``present`` placed after its ``SETTING``, by ratio."""
    variants = sorted({s for s in present if RATIO_MARK in s}, key=split_setting)
    out: List[str] = []
    for s in settings:
        out.append(s)
        out += [v for v in variants if split_setting(v)[0] == s]
    return tuple(out)


# ============================================================================ names, files
def run_name(fraction: float, seed: int, setting: str) -> str:
    return f"frac{fraction:g}-seed{seed}-{setting.replace('+', '_')}"


def read_json(path: str) -> Dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def gan_finished(run_dir: str) -> bool:
    """A ``train_gan`` run folder whose ``config.json`` says it finished."""
    p = os.path.join(run_dir, "config.json")
    return os.path.isfile(p) and read_json(p).get("status") == "finished"


def generation_complete(folder: str) -> bool:
    """A ``synthseg generate`` folder whose ``generation.json`` says it is complete."""
    p = os.path.join(folder, "generation.json")
    return os.path.isfile(p) and read_json(p).get("status") == "complete"


def finished(run_dir: str) -> bool:
    """A run folder with ``metrics.json`` is a finished run (it is written last, atomically)."""
    return os.path.isfile(os.path.join(run_dir, "metrics.json"))


def record_head(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str, real_samples,
                config: Dict) -> Dict:
    """The fields every ``results.json`` run record starts with (``real_samples``: the real subset's size)."""
    return {
        "fraction": fraction, "seed": seed, "setting": setting,
        "run": os.path.relpath(run_dir, out_dir),
        "train_samples": real_samples if setting != "synthetic" else 0,
        "real_subset_samples": real_samples,
        "synthetic_samples": config.get("synthetic_samples", 0) if setting != "real" else 0,
    }


SELECTED = "selected-recipe"
# The ways of using the synthetic set that selected-recipe chooses among (both experiments;
# segmentation adds real+pretrain+copypaste, its SEG_RECIPES).
RECIPES = ("real+synthetic", "real+pretrain", "real+pretrain+mix")
# Settings that start from a model trained on the synthetic set alone (pretraining_run).
PRETRAINED_SETTINGS = ("real+pretrain", "real+pretrain+mix", "real+pretrain+copypaste")


def keeps_pretraining_weights(setting: str, settings: Sequence[str]) -> bool:
    """Whether the ``synthetic`` run saves its weights: a pretrained setting of the grid reuses them."""
    return setting == "synthetic" and bool(set(PRETRAINED_SETTINGS) & set(settings))


def selected_rule(selection: str, recipes: Sequence[str] = RECIPES) -> str:
    return (f"{SELECTED}: per fraction and seed, whichever of {' / '.join(recipes)} (the ways of using the "
            f"synthetic set; those that ran, at least two) has the higher {selection}; its evaluation figures are "
            "reported. Only the selection split chooses, so the row is what a user following the tool's "
            "recommendation gets")


def select_recipe(runs: List[Dict], recipes: Sequence[str], key: str) -> List[Dict]:
    """One :data:`SELECTED` record per (fraction, seed) where at least two of ``recipes`` ran and
    recorded their selection figure ``key``: a copy of the one with the highest figure (ties: the
    first in ``recipes``), with ``chosen`` naming it and ``candidates`` listing those compared.
    The evaluation figures are never read."""
    by: Dict = {}
    for r in runs:
        if r["setting"] in recipes and r.get(key) is not None:
            by.setdefault((r["fraction"], r["seed"]), {})[r["setting"]] = r
    out = []
    for _, rec in sorted(by.items()):
        if len(rec) < 2:
            continue
        ran = [k for k in recipes if k in rec]
        best = max(ran, key=lambda k: (rec[k][key], -ran.index(k)))
        out.append(dict(rec[best], setting=SELECTED, chosen=best, candidates=ran))
    return out


def pretraining_run(candidates: Sequence[str], synthetic: str, fit_ids: Sequence[str],
                    train: Callable[[str], None], ratio: Optional[float] = 1.0) -> Tuple[str, Dict, Dict]:
    """``(run, config, metrics)`` of the run a two-stage setting starts from (``real+pretrain``:
    the ``synthetic`` run): the first of ``candidates`` that kept its weights (``metrics.json`` and
    ``weights.h5``), else ``train(last)``. Refused (:class:`~synthseg_tf.experiments.protocol.ProtocolError`)
    unless it was trained on ``synthetic`` at ``ratio`` (1.0: the synthetic images alone) and
    recorded exactly ``fit_ids`` as its real images."""
    from synthseg_tf.experiments.protocol import ProtocolError

    for run in candidates:
        if os.path.isfile(os.path.join(run, "metrics.json")) and os.path.isfile(os.path.join(run, "weights.h5")):
            break
    else:
        train(run)
    config = read_json(os.path.join(run, "config.json"))
    ex = config.get("experiment") or {}
    used = ex.get("fit") or ex.get("real_subset")
    if not str(config.get("synthetic") or "").endswith(os.path.abspath(synthetic)) \
            or sorted(used or []) != sorted(fit_ids) or config.get("synthetic_ratio") != ratio:
        what = ("pretraining", "synthetic set alone") if ratio == 1.0 else (
            "first-stage", "synthetic set " + ("appended" if ratio is None else f"at ratio {ratio:g}"))
        raise ProtocolError(f"{what[0]} run {run} was not trained on this cell's {what[1]} and its "
                            "real images; remove it or use a new output folder")
    return run, config, read_json(os.path.join(run, "metrics.json"))


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


def _clear_session():
    import tensorflow as tf

    tf.keras.backend.clear_session()


def write_results(out_dir: str, task: str, identity: Dict, runs: List[Dict], summary: Dict) -> None:
    from synthseg_tf.training.segmentation import write_json

    runs = sorted(runs, key=lambda r: (r["fraction"], r["seed"], r["setting"]))
    write_json(os.path.join(out_dir, RESULTS_FILE), {"task": task, "experiment": identity, "runs": runs})
    write_json(os.path.join(out_dir, SUMMARY_FILE), summary)


# ============================================================================ the grid
def run_grid(out_dir: str, task: str, state: Dict, grid: Tuple[Sequence[float], Sequence[int], Sequence[str]],
             cell: Callable, record: Callable, summary_of: Callable, class_names: Sequence[str],
             log: Callable) -> Dict:
    """Train every run of ``grid`` (fractions, seeds, settings) that is not finished yet, rewriting
    ``results.json`` / ``summary.json`` after each; returns the final summary.

    ``cell(fraction, seed)`` -> ``(run_dir_of, detail, train)``: ``run_dir_of(setting)`` is the
    run folder, ``detail`` goes after the fraction in the progress line and
    ``train(setting, run_dir)`` trains one run. ``record(run_dir, out_dir, fraction, seed,
    setting)`` reads a finished run; ``summary_of(identity, runs, class_names)`` summarizes them.
    The results cover every finished run of ``state``'s (merged) grid, not only ``grid``.
    """

    def update_results() -> Dict:
        """Collect every finished run of the (merged) grid and rewrite results.json / summary.json."""
        runs: List[Dict] = []
        for f in state["fractions"]:
            for s in state["seeds"]:
                run_dir_of = cell(f, s)[0]
                for setting in state["settings"]:
                    rd = run_dir_of(setting)
                    if finished(rd):
                        runs.append(record(rd, out_dir, f, s, setting))
        summary = summary_of(state["identity"], runs, class_names)
        write_results(out_dir, task, state["identity"], runs, summary)
        return summary

    fractions, seeds, settings = grid
    total = len(fractions) * len(seeds) * len(settings)
    done = 0
    for f in fractions:
        for s in seeds:
            run_dir_of, detail, train = cell(f, s)
            for setting in settings:
                done += 1
                run_dir = run_dir_of(setting)
                if finished(run_dir):
                    log(f"[{done}/{total}] {setting}, fraction {f:g}, seed {s}: finished earlier, reusing {run_dir}")
                    continue
                log(f"[{done}/{total}] {setting}, fraction {f:g}{detail}, seed {s}")
                train(setting, run_dir)
                _clear_session()
                update_results()
    summary = update_results()
    log(f"results: {os.path.join(out_dir, RESULTS_FILE)}; summary: {os.path.join(out_dir, SUMMARY_FILE)}")
    return summary


# ============================================================================ statistics
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
              baseline: str = BASELINE, extra_baselines: Optional[Dict[str, Sequence[str]]] = None,
              primary_metric: Optional[str] = None) -> List[Dict]:
    """Rows of mean ± std per (fraction, setting) and paired deltas vs ``baseline``.

    Each run is ``{"fraction", "seed", "setting", "metrics": {name: v}, "per_class": {metric: {class: v}}}``.
    The delta of the first per-class metric is reported per class (``delta_vs_<baseline>["per_class"]``),
    each delta carries a verdict (overall, on the first metric, and per class; see
    :func:`synthseg_tf.experiments.protocol.verdict`). ``extra_baselines`` maps a setting to more
    settings it is compared with (``delta_vs_<other>`` entries, same format).
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
            for key in ("steps_run", "epochs_run", "train_seconds"):
                if any(r.get(key) is not None for r in rs):
                    row.setdefault("budget", {})[key] = stats([r.get(key) for r in rs])
            others = [baseline] + [b for b in (extra_baselines or {}).get(setting, ()) if b != baseline]
            for base in others:
                if setting == base:
                    continue
                pairs = [(r, by_key[(f, base, r["seed"])]) for r in rs if (f, base, r["seed"]) in by_key]
                if pairs:
                    row[f"delta_vs_{base}"] = _paired_delta(pairs, metric_names, per_class_metrics[0], class_names,
                                                              primary_metric or metric_names[0])
            rows.append(row)
    return rows


def _paired_delta(pairs, metric_names: Sequence[str], pm: str, class_names: Sequence[str], primary: str) -> Dict:
    from synthseg_tf.experiments.protocol import verdict

    delta = {"n_pairs": len(pairs)}
    delta["metrics"] = {m: stats([_diff(a["metrics"].get(m), b["metrics"].get(m)) for a, b in pairs])
                        for m in metric_names}
    delta["per_class_metric"] = pm
    delta["per_class"] = {c: stats([_diff(a["per_class"][pm].get(c), b["per_class"][pm].get(c))
                                    for a, b in pairs]) for c in class_names}
    delta["verdict"] = verdict(delta["metrics"][primary]["values"])
    delta["verdicts"] = {c: verdict(d["values"]) for c, d in delta["per_class"].items()}
    return delta


def _verdict_rule() -> str:
    from synthseg_tf.experiments.protocol import VERDICT_RULE

    return VERDICT_RULE


def _diff(a, b):
    return None if a is None or b is None else float(a) - float(b)


def grid_summary(task: str, identity: Dict, runs: List[Dict], class_names: Sequence[str],
                 all_settings: Sequence[str], metric_names: Sequence[str], primary_metric: str,
                 per_class_metrics: Sequence[str], evaluated_on: str,
                 extra_baselines: Optional[Dict[str, Sequence[str]]] = None) -> Dict:
    """``summary.json``: what was run and compared, and the :func:`summarize` rows."""
    fractions = sorted({r["fraction"] for r in runs})
    settings = [s for s in all_settings if any(r["setting"] == s for r in runs)]
    return {
        "task": task,
        "experiment": identity,
        "class_names": list(class_names),
        "fractions": fractions,
        "seeds": sorted({r["seed"] for r in runs}),
        "settings": settings,
        "baseline": BASELINE,
        "metric_names": list(metric_names),
        "primary_metric": primary_metric,
        "per_class_metrics": list(per_class_metrics),
        "evaluated_on": evaluated_on,
        "std": STD_NOTE,
        "delta": DELTA_NOTE,
        "verdict_rule": _verdict_rule(),
        "rows": summarize(runs, metric_names, per_class_metrics, class_names, fractions, settings,
                          extra_baselines=extra_baselines, primary_metric=primary_metric),
    }
