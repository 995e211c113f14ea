"""Classification experiment: the CNN classifier trained on real vs real+synthetic images.

For every fraction ``f`` of the real training split and every seed ``s`` (settings
``real``, ``real+synthetic`` and optionally ``synthetic``), :func:`train_classifier` runs with
identical hyper-parameters and seed; the train/val/test split is the same for every run
(``split_seed``), so all runs are scored on the same real test images. Synthetic images are
added to the training split only (all of them, or mixed at ``synthetic_ratio``). Early
stopping (``patience``) makes the number of epochs data-dependent; ``config.json`` of each run
records how many were run. Synthetic-only runs depend on the fraction only through the steps
per epoch, so fractions with the same steps share one run.

Output folder: as :mod:`synthseg_tf.experiments.segmentation` (``experiment.json``,
``runs/``, ``results.json``, ``summary.json``); the metrics are test accuracy, macro-F1 and
weighted-F1, and per-class F1 (with per-class deltas vs real-only, paired by seed).
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Union

from synthseg_tf.experiments.segmentation import (
    BASELINE,
    DELTA_NOTE,
    NOT_IDENTITY,
    RESULTS_FILE,
    STD_NOTE,
    SUMMARY_FILE,
    _clear_session,
    check_experiment,
    generate_synthetic,
    normalize_fractions,
    normalize_seeds,
    normalize_settings,
    read_json,
    run_name,
    summarize,
    synthetic_only_name,
    write_results,
)

CLASSIFICATION_SETTINGS = ("real", "real+synthetic", "synthetic")
METRICS = ["accuracy", "macro_f1", "weighted_f1"]


def _cls_record(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str) -> Dict:
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    config = read_json(os.path.join(run_dir, "config.json"))
    test = metrics["test"]
    return {
        "fraction": fraction, "seed": seed, "setting": setting,
        "run": os.path.relpath(run_dir, out_dir),
        "train_samples": config["splits"]["train"] if setting != "synthetic" else 0,
        "real_subset_samples": config["splits"]["train"],
        "synthetic_samples": config.get("synthetic_samples", 0) if setting != "real" else 0,
        "test_samples": test.get("num_samples"),
        "epochs_run": metrics.get("epochs_run"),
        "best_epoch": metrics.get("best_epoch"),
        "metrics": {"accuracy": test["accuracy"], "macro_f1": test["macro"]["f1"],
                    "weighted_f1": test["weighted"]["f1"]},
        "per_class": {"f1": {c: v["f1"] for c, v in test["per_class"].items()},
                      "recall": {c: v["recall"] for c, v in test["per_class"].items()}},
    }


def run_classification_experiment(
    data,
    out_dir: str,
    synthetic: Optional[str] = None,
    generator: Optional[str] = None,
    fractions: Sequence[float] = (1.0,),
    seeds: Union[int, Sequence[int]] = (0, 1, 2),
    settings: Sequence[str] = ("real", "real+synthetic"),
    image_size=(64, 64),
    batch_size: int = 32,
    epochs: int = 30,
    patience: int = 5,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    split_seed: int = 0,
    synthetic_ratio: Optional[float] = None,
    generation: Optional[Dict] = None,
    export_models: bool = False,
    verbose: int = 0,
    log: Callable = print,
    **train_options,
) -> Dict:
    """Run (or resume) the classifier grid; returns the summary (also written to ``summary.json``).

    ``data``: ``classfolders:DIR`` / ``demo-classes`` (or a classification Dataset).
    ``synthetic``: a TFRecord folder of labelled generated images, or ``generator``: a
    class-conditional generator export run into ``OUT/synthetic`` first (``generation``: extra
    GenerationConfig fields; ``n`` defaults to the training split size). ``fractions``: parts
    of the training split (``train_fraction``). ``train_options`` go to
    :func:`~synthseg_tf.training.classification.train_classifier` (filters, dropout,
    learning_rate, augment, ...).
    """
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.classification import split_classification, train_classifier
    from synthseg_tf.training.segmentation import parse_image_size

    out_dir = os.path.abspath(os.fspath(out_dir))
    fractions = normalize_fractions(fractions)
    seeds = normalize_seeds(seeds)
    settings = normalize_settings(settings, CLASSIFICATION_SETTINGS)
    needs_syn = any(s != "real" for s in settings)
    if synthetic is not None and generator is not None:
        raise ValueError("give synthetic (a folder of generated samples) or generator, not both")
    if needs_syn and synthetic is None and generator is None:
        raise ValueError(f"settings {settings} need synthetic data: pass synthetic=DIR or generator=DIR")
    ds = load(data)
    if ds.task != "classification":
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; class folders (classfolders:DIR) are needed")
    train, val, test = split_classification(ds, split_fractions, split_seed)

    syn_path = os.path.abspath(synthetic) if synthetic is not None else None
    if generator is not None and needs_syn:
        syn_path = os.path.join(out_dir, "synthetic")
    train_options = dict(train_options)
    identity = {
        "task": "classification", "data": ds.spec, "samples": len(ds),
        "splits": {"train": len(train), "val": len(val), "test": len(test)},
        "split_fractions": list(split_fractions), "split_seed": int(split_seed),
        "synthetic": syn_path, "generator": os.path.abspath(generator) if generator else None,
        "generation": generation or None,
        "image_size": list(parse_image_size(image_size)), "batch_size": int(batch_size), "epochs": int(epochs),
        "patience": int(patience), "synthetic_ratio": synthetic_ratio,
        "train_options": {k: v for k, v in sorted(train_options.items()) if k not in NOT_IDENTITY},
    }
    state = check_experiment(out_dir, identity, {"fractions": fractions, "seeds": seeds, "settings": settings})
    if generator is not None and needs_syn:
        opts = dict(generation or {})
        opts.setdefault("labels", "balanced")
        generate_synthetic(generator, syn_path, len(train), opts, log)

    def run_dir_of(f: float, s: int, setting: str) -> str:
        if setting == "synthetic":  # depends on the fraction only through the steps per epoch
            n_train = len(split_classification(ds, split_fractions, split_seed, f, s)[0])
            spe = max(1, math.ceil(n_train / batch_size))
            return os.path.join(out_dir, "runs", synthetic_only_name(s, f"{spe}steps"))
        return os.path.join(out_dir, "runs", run_name(f, s, setting))

    def update_results() -> Dict:
        """Collect every finished run of the (merged) grid and rewrite results.json / summary.json."""
        runs: List[Dict] = []
        for f in state["fractions"]:
            for s in state["seeds"]:
                for setting in state["settings"]:
                    rd = run_dir_of(f, s, setting)
                    if os.path.isfile(os.path.join(rd, "metrics.json")):
                        runs.append(_cls_record(rd, out_dir, f, s, setting))
        summary = _cls_summary(state["identity"], runs, ds.classes.names)
        write_results(out_dir, "classification", state["identity"], runs, summary)
        return summary

    total = len(fractions) * len(seeds) * len(settings)
    done = 0
    for f in fractions:
        for s in seeds:
            for setting in settings:
                done += 1
                run_dir = run_dir_of(f, s, setting)
                if os.path.isfile(os.path.join(run_dir, "metrics.json")):
                    log(f"[{done}/{total}] {setting}, fraction {f:g}, seed {s}: finished earlier, reusing {run_dir}")
                    continue
                log(f"[{done}/{total}] {setting}, fraction {f:g}, seed {s}")
                if setting == "synthetic":
                    ratio = 1.0
                else:
                    ratio = synthetic_ratio if setting == "real+synthetic" else None
                train_classifier(
                    ds, run_dir, image_size=image_size, batch_size=batch_size, epochs=epochs,
                    synthetic=syn_path if setting != "real" else None, synthetic_ratio=ratio, seed=s,
                    patience=patience, fractions=split_fractions, train_fraction=f, split_seed=split_seed,
                    export=export_models, overwrite=True, verbose=verbose,
                    extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting}},
                    **train_options)
                _clear_session()
                update_results()
    summary = update_results()
    log(f"results: {os.path.join(out_dir, RESULTS_FILE)}; summary: {os.path.join(out_dir, SUMMARY_FILE)}")
    return summary


def _cls_summary(identity: Dict, runs: List[Dict], class_names: Sequence[str]) -> Dict:
    fractions = sorted({r["fraction"] for r in runs})
    settings = [s for s in CLASSIFICATION_SETTINGS if any(r["setting"] == s for r in runs)]
    return {
        "task": "classification",
        "experiment": identity,
        "class_names": list(class_names),
        "fractions": fractions,
        "seeds": sorted({r["seed"] for r in runs}),
        "settings": settings,
        "baseline": BASELINE,
        "metric_names": METRICS,
        "primary_metric": "macro_f1",
        "per_class_metrics": ["f1", "recall"],
        "evaluated_on": "the real test split (the same images for every run)",
        "std": STD_NOTE,
        "delta": DELTA_NOTE,
        "rows": summarize(runs, METRICS, ["f1", "recall"], class_names, fractions, settings),
    }


__all__ = ["run_classification_experiment", "CLASSIFICATION_SETTINGS"]
