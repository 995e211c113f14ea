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

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from synthseg_tf.experiments.common import (  # noqa: F401  (also this module's public names, as before)
    BASELINE,
    DELTA_NOTE,
    EXPERIMENT_FILE,
    NOT_IDENTITY,
    RESULTS_FILE,
    STD_NOTE,
    SUMMARY_FILE,
    check_experiment,
    check_grid,
    generate_synthetic,
    grid_identity,
    grid_summary,
    normalize_fractions,
    normalize_seeds,
    normalize_settings,
    read_json,
    record_head,
    run_grid,
    run_name,
    stats,
    summarize,
    synthetic_only_name,
    synthetic_path,
    write_results,
)

SEGMENTATION_SETTINGS = ("real", "real+synthetic", "synthetic")


# ============================================================================ segmentation
def _seg_record(run_dir: str, out_dir: str, fraction: float, seed: int, setting: str) -> Dict:
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    config = read_json(os.path.join(run_dir, "config.json"))
    val = metrics["val"]
    return {
        **record_head(run_dir, out_dir, fraction, seed, setting, config.get("train_samples"), config),
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
    fractions, seeds, settings, needs_syn = check_grid(fractions, seeds, settings, SEGMENTATION_SETTINGS,
                                                       synthetic, generator)

    ds = load(data)
    if ds.task != "segmentation":
        raise ValueError(f"{ds.spec} is a {ds.task} dataset; a segmentation dataset is needed")
    if val is None:
        train, val_ds = ds.train_val()
        val_src, _, n_val, val_desc = resolve_source(val_ds, "segmentation", "val")
    else:
        train = ds
        val_src, _, n_val, val_desc = resolve_source(val, "segmentation", "val")

    syn_path = synthetic_path(out_dir, synthetic, generator, needs_syn)
    identity = grid_identity(
        {"task": "segmentation", "data": ds.spec, "val": val_desc if val is not None else "train_val() split",
         "train_samples": len(train), "val_samples": n_val},
        syn_path, generator, generation,
        {"image_size": list(_size(image_size)), "batch_size": int(batch_size), "epochs": epochs, "steps": steps,
         "synthetic_ratio": float(synthetic_ratio)},
        train_options)
    state = check_experiment(out_dir, identity, {"fractions": fractions, "seeds": seeds, "settings": settings})
    if generator is not None and needs_syn:
        generate_synthetic(generator, syn_path, len(train), generation, log)

    def cell(f: float, s: int):
        subset = train.fraction(f, seed=s)

        def run_dir_of(setting: str) -> str:
            if setting == "synthetic":  # independent of the real subset except through its budget
                n_ep, spe = schedule(len(subset), batch_size, epochs, steps)
                return os.path.join(out_dir, "runs", synthetic_only_name(s, f"{n_ep}x{spe}"))
            return os.path.join(out_dir, "runs", run_name(f, s, setting))

        def train_run(setting: str, run_dir: str) -> None:
            train_unet(
                subset, val_src, run_dir, image_size=image_size, batch_size=batch_size, epochs=epochs,
                steps=steps, synthetic=syn_path if setting != "real" else None,
                synthetic_ratio=1.0 if setting == "synthetic" else synthetic_ratio, seed=s,
                export=export_models, overwrite=True, verbose=verbose,
                extra_config={"experiment": {"fraction": f, "seed": s, "setting": setting,
                                             "real_subset": [x.source_id for x in subset.samples]}},
                **train_options)

        return run_dir_of, f" ({len(subset)} real images)", train_run

    return run_grid(out_dir, "segmentation", state, (fractions, seeds, settings), cell, _seg_record,
                    _seg_summary, ds.classes.names, log)


def _size(image_size) -> Tuple[int, int]:
    from synthseg_tf.training.segmentation import parse_image_size

    return parse_image_size(image_size)


def _seg_summary(identity: Dict, runs: List[Dict], class_names: Sequence[str]) -> Dict:
    return grid_summary("segmentation", identity, runs, class_names, SEGMENTATION_SETTINGS,
                        ["mean_iou", "mean_dice", "pixel_accuracy"], "mean_iou", ["iou", "dice"],
                        "the real validation split, native resolution, void pixels skipped")


__all__ = ["run_segmentation_experiment", "summarize", "stats", "SEGMENTATION_SETTINGS"]
