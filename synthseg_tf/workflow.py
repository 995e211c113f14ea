"""``synthseg demo``: the whole flow on the built-in demo data, offline, in minutes, under the
honest protocol of :mod:`synthseg_tf.experiments.protocol`.

demo scenes -> validate -> ``run_segmentation_experiment``: a subset of the training split;
pix2pix, a quality U-Net, the FreeMask-filtered synthetic set (Beam) and the copy-paste set built
from that subset's fit images only; U-Nets in every setting selected on the subset's selection
images and scored on the val split, which nothing else reads -> report. Every step reuses what
is already done, so an interrupted demo resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict


def _step(log: Callable, title: str):
    log(f"\n== {title}")
    return time.time()


def demo_settings(quick: bool) -> Dict:
    """Sizes chosen so the demo takes a few minutes on 2 CPU cores (``quick``: about one)."""
    if quick:
        return dict(scenes=96, size=64, gan_steps=60, n_per_image=1.5, max_steps=30, patience=None, seeds=1,
                    fractions=(0.5,), settings=("real", "real+copypaste", "real+synthetic"),
                    # a 30-step quality U-Net is no better than chance: the smoke run skips the filters
                    filters={"quality_factor": None, "pixel_filter": None, "hardness": False})
    return dict(scenes=240, size=64, gan_steps=600, n_per_image=4, max_steps=200, patience=4, seeds=2,
                fractions=(0.5,), settings=("real", "real+augment", "real+copypaste", "real+synthetic", "synthetic",
                                            "real+pretrain", "real+pretrain+copypaste"),
                filters={})


def run_demo(out: str, quick: bool = False, seed: int = 0, log: Callable = print) -> Dict:
    from synthseg_tf.data import load, validate
    from synthseg_tf.experiments import run_segmentation_experiment
    from synthseg_tf.report import write_report

    s = demo_settings(quick)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    spec = f"demo-scenes?n={s['scenes']}&size={s['size']}&seed={seed}"
    timings = {}

    t = _step(log, f"1/3 data: {spec}")
    ds = load(spec)
    rep = validate(ds)
    log(rep.format())
    if rep.bad:
        raise RuntimeError(f"demo data failed validation: {rep.bad[:3]}")
    timings["data"] = time.time() - t

    exp_dir = os.path.join(out, "experiment")
    t = _step(log, f"2/3 experiment (honest protocol): fraction(s) {s['fractions']} of the training split; per "
                   f"subset pix2pix ({s['gan_steps']} steps), quality U-Net, Beam generation with the FreeMask "
                   f"filter, copy-paste set; U-Nets {', '.join(s['settings'])} x {s['seeds']} seed(s) -> {exp_dir}")
    summary = run_segmentation_experiment(
        spec, exp_dir, fractions=s["fractions"], seeds=s["seeds"], subset_seed=seed, settings=s["settings"],
        image_size=s["size"], batch_size=8, steps=s["max_steps"], patience=s["patience"],
        gan={"steps": s["gan_steps"], "batch_size": 8, "base_filters": 32, "seed": seed},
        generation=dict({"n_per_image": s["n_per_image"], "samples_per_shard": 60}, **s["filters"]),
        copypaste={"n_per_image": s["n_per_image"]}, log=log)
    timings["experiment"] = time.time() - t

    t = _step(log, "3/3 report")
    html, md = write_report(exp_dir)
    timings["report"] = time.time() - t
    cell = os.path.join(exp_dir, "subsets", f"frac{s['fractions'][0]:g}-subset{seed}")
    syn_state = os.path.join(cell, "synthetic", "generation.json")
    kept = None
    if os.path.isfile(syn_state):
        with open(syn_state, encoding="utf-8") as f:
            kept = json.load(f).get("kept")
    result = {"out": out, "gan": os.path.join(cell, "gan"), "quality_model": os.path.join(cell, "quality", "model"),
              "synthetic": os.path.join(cell, "synthetic"), "copypaste": os.path.join(cell, "copypaste"),
              "kept": kept, "experiment": exp_dir, "report_html": html, "report_md": md,
              "protocol": summary.get("protocol"), "seconds": {k: round(v, 1) for k, v in timings.items()}}
    with open(os.path.join(out, "demo.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    log("\nDemo finished. Results:")
    for key in ("gan", "quality_model", "synthetic", "copypaste", "experiment", "report_html", "report_md"):
        log(f"  {key:<14} {result[key]}")
    return result
