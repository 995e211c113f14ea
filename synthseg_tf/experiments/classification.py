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

from synthseg_tf.experiments.common import (
    check_experiment,
    check_grid,
    generate_synthetic,
    grid_identity,
    grid_summary,
    read_json,
    record_head,
    run_grid,
    run_name,
    synthetic_only_name,
    synthetic_path,
)

CLASSIFICATION_SETTINGS = ("real", "real+synthetic", "synthetic")
METRICS = ["accuracy", "macro_f1", "weighted_f1"]


def _cls_record(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str) -> Dict:
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    config = read_json(os.path.join(run_dir, "config.json"))
    test = metrics["test"]
    return {
        **record_head(run_dir, out_dir, fraction, seed, setting, config["splits"]["train"], config),
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
    fractions, seeds, settings, needs_syn = check_grid(fractions, seeds, settings, CLASSIFICATION_SETTINGS,
                                                       synthetic, generator)
    ds = load(data)
    if ds.task != "classification":
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; class folders (classfolders:DIR) are needed")
    train, val, test = split_classification(ds, split_fractions, split_seed)

    syn_path = synthetic_path(out_dir, synthetic, generator, needs_syn)
    identity = grid_identity(
        {"task": "classification", "data": ds.spec, "samples": len(ds),
         "splits": {"train": len(train), "val": len(val), "test": len(test)},
         "split_fractions": list(split_fractions), "split_seed": int(split_seed)},
        syn_path, generator, generation,
        {"image_size": list(parse_image_size(image_size)), "batch_size": int(batch_size), "epochs": int(epochs),
         "patience": int(patience), "synthetic_ratio": synthetic_ratio},
        train_options)
    state = check_experiment(out_dir, identity, {"fractions": fractions, "seeds": seeds, "settings": settings})
    if generator is not None and needs_syn:
        opts = dict(generation or {})
        opts.setdefault("labels", "balanced")
        generate_synthetic(generator, syn_path, len(train), opts, log)

    def cell(f: float, s: int):
        def run_dir_of(setting: str) -> str:
            if setting == "synthetic":  # depends on the fraction only through the steps per epoch
                n_train = len(split_classification(ds, split_fractions, split_seed, f, s)[0])
                spe = max(1, math.ceil(n_train / batch_size))
                return os.path.join(out_dir, "runs", synthetic_only_name(s, f"{spe}steps"))
            return os.path.join(out_dir, "runs", run_name(f, s, setting))

        def train_run(setting: str, run_dir: str) -> None:
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

        return run_dir_of, "", train_run

    return run_grid(out_dir, "classification", state, (fractions, seeds, settings), cell, _cls_record,
                    _cls_summary, ds.classes.names, log)


def _cls_summary(identity: Dict, runs: List[Dict], class_names: Sequence[str]) -> Dict:
    return grid_summary("classification", identity, runs, class_names, CLASSIFICATION_SETTINGS, METRICS,
                        "macro_f1", ["f1", "recall"], "the real test split (the same images for every run)")


__all__ = ["run_classification_experiment", "CLASSIFICATION_SETTINGS"]
