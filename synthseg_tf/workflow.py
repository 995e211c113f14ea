"""``synthseg demo``: the whole flow on the built-in demo data, offline, in minutes.

demo scenes -> validate -> train pix2pix -> train a real-only U-Net (the quality model) ->
generate new (image, label map) pairs with Beam, keeping those the U-Net can read ->
real vs real+synthetic U-Net experiment -> report. Every step skips work that is already
done, so an interrupted demo resumes where it stopped.
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
        return dict(scenes=96, size=64, gan_steps=60, unet_epochs=2, n_synthetic=48, exp_steps=30, seeds=1,
                    fractions=(0.25,))
    return dict(scenes=240, size=64, gan_steps=600, unet_epochs=8, n_synthetic=240, exp_steps=160, seeds=2,
                fractions=(0.25,))


def run_demo(out: str, quick: bool = False, seed: int = 0, log: Callable = print) -> Dict:
    from synthseg_tf.data import load, validate
    from synthseg_tf.experiments import run_segmentation_experiment
    from synthseg_tf.generation.pipeline import GenerationConfig, run_generation
    from synthseg_tf.report import write_report
    from synthseg_tf.training.gan import train_gan
    from synthseg_tf.training.gan_data import gan_datasets
    from synthseg_tf.training.segmentation import train_unet

    s = demo_settings(quick)
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    spec = f"demo-scenes?n={s['scenes']}&size={s['size']}&seed={seed}"
    size = (s["size"], s["size"])
    timings = {}

    t = _step(log, f"1/6 data: {spec}")
    ds = load(spec)
    rep = validate(ds)
    log(rep.format())
    if rep.bad:
        raise RuntimeError(f"demo data failed validation: {rep.bad[:3]}")
    train, val = ds.train_val()
    timings["data"] = time.time() - t

    gan_dir = os.path.join(out, "gan")
    t = _step(log, f"2/6 pix2pix: {s['gan_steps']} steps at {size[0]}x{size[1]} -> {gan_dir}")
    if _finished(gan_dir):
        log("already trained")
    else:
        gd = gan_datasets(ds, size, batch_size=8, seed=seed)
        train_gan(gd.train, gan_dir, num_classes=ds.num_classes, image_size=size, steps=s["gan_steps"], batch_size=8,
                  class_table=ds.classes, val_ds=gd.val, base_filters=32, seed=seed, resume=os.path.isdir(gan_dir),
                  log_every=max(1, s["gan_steps"] // 6), image_every=max(1, s["gan_steps"] // 3),
                  checkpoint_every=max(1, s["gan_steps"] // 3), extra_config={"data": spec, "conditioning": "labelmap"})
    timings["gan"] = time.time() - t

    seg_dir = os.path.join(out, "unet_real")
    t = _step(log, f"3/6 U-Net on real data (the quality model): {s['unet_epochs']} epochs -> {seg_dir}")
    if not os.path.isfile(os.path.join(seg_dir, "metrics.json")):
        train_unet(train, val, seg_dir, image_size=size, batch_size=8, epochs=s["unet_epochs"], seed=seed, verbose=0)
    with open(os.path.join(seg_dir, "metrics.json"), encoding="utf-8") as f:
        real_miou = json.load(f)["val"]["mean_iou"]
    log(f"val mean IoU {real_miou:.3f}")
    timings["unet"] = time.time() - t

    # Keep a synthetic sample when the segmenter reads it at least half as well as real images.
    min_quality = round(0.5 * real_miou, 3)
    gen_dir = os.path.join(out, "synthetic")
    t = _step(log, f"4/6 generate {s['n_synthetic']} new samples with Beam (rare classes boosted, "
                   f"min quality {min_quality} = half the U-Net's real mIoU) -> {gen_dir}")
    summary = run_generation(GenerationConfig(
        generator=gan_dir, out=gen_dir, n=s["n_synthetic"], masks="sample", seed=seed, class_balance="rare",
        quality_model=os.path.join(seg_dir, "model"), min_quality=min_quality, samples_per_shard=60),
        log=log)
    timings["generate"] = time.time() - t

    exp_dir = os.path.join(out, "experiment")
    t = _step(log, f"5/6 experiment: real vs real+synthetic U-Nets, fractions {s['fractions']}, "
                   f"{s['seeds']} seed(s) -> {exp_dir}")
    run_segmentation_experiment(spec, exp_dir, synthetic=gen_dir, fractions=s["fractions"], seeds=s["seeds"],
                                image_size=size, steps=s["exp_steps"], settings=("real", "real+synthetic"),
                                batch_size=8, log=log)
    timings["experiment"] = time.time() - t

    t = _step(log, "6/6 report")
    html, md = write_report(exp_dir)
    timings["report"] = time.time() - t
    result = {"out": out, "gan": gan_dir, "quality_model": os.path.join(seg_dir, "model"), "synthetic": gen_dir,
              "kept": summary.get("kept"), "experiment": exp_dir, "report_html": html, "report_md": md,
              "seconds": {k: round(v, 1) for k, v in timings.items()}}
    with open(os.path.join(out, "demo.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    log("\nDemo finished. Results:")
    for key in ("gan", "quality_model", "synthetic", "experiment", "report_html", "report_md"):
        log(f"  {key:<14} {result[key]}")
    return result


def _finished(run_dir: str) -> bool:
    p = os.path.join(run_dir, "config.json")
    if not os.path.isfile(p):
        return False
    with open(p, encoding="utf-8") as f:
        return json.load(f).get("status") == "finished"
