"""What would the classification recipe gain from synthetic images that were exactly right?

    python scripts/oracle_ceiling.py EXPERIMENT_DIR [--variants oracle,gan-maps] [--seeds 0,1,2]

**A diagnostic that breaks the protocol on purpose; its figures are never a result about
synthetic data.** It reads a finished ``synthseg experiment classification`` folder on the
built-in ``demo-classes`` data and, for each seed whose ``real+synthetic`` run is there, repeats
that run with its synthetic set swapped for one of these (same number of images, same class of
each image as the cell's synthetic set):

``oracle``    new images from the procedural renderer that made ``demo-classes`` (sample indices
              the dataset never drew, so none is in any split). This is what the recipe would
              gain from a perfect generator that also invents new poses: the ceiling.
``repeat``    the cell's own synthetic set, unchanged: a check that the repeat is the same run
              (on one machine it should give the experiment's figure to the digit).
``gan-maps``  the cell's own generator rendering the conditioning (edge) maps of those new images,
              with their classes, kept by the cell's own per-class confidence thresholds (the
              experiment's filter: up to ``--tries`` candidates per kept image). New poses the
              subset does not hold, drawn by the generator: against ``oracle`` it shows what the
              rendering loses; against the experiment's ``real+synthetic`` run, what new label
              maps would add.

Everything else is the ``real+synthetic`` run's own recipe, read from its ``config.json`` (the
same training, selection and test images from its ``splits.json``, options, ratio, seed); the new
run's ``config.json`` is compared with it and any other difference is printed. Each run scores
the test split once and is paired with the ``real`` run of its seed.

Writes ``EXPERIMENT_DIR/oracle/<variant>-f<F>-seed<S>/`` (runs; a finished run is reused),
``EXPERIMENT_DIR/oracle/<variant>-frac<F>-subset<K>/`` (the image sets, TFRecords, one per cell) and
``EXPERIMENT_DIR/oracle/oracle.json`` (the table printed).
"""
import argparse
import json
import os
import sys

import numpy as np

ORACLE_FIRST_INDEX = 1_000_000  # demo-classes draws indices 0..count-1 per class; these are new
VARIANTS = ("oracle", "gan-maps", "repeat")
# config.json key -> train_classifier argument (the options a run records)
RECIPE_KEYS = {
    "image_size": "image_size", "batch_size": "batch_size", "max_epochs": "epochs", "seed": "seed",
    "patience": "patience", "min_patience_steps": "min_patience_steps", "synthetic_ratio": "synthetic_ratio",
    "learning_rate": "learning_rate", "augment": "augment", "filters": "filters", "dense_units": "dense_units",
    "dropout": "dropout", "batch_norm": "batch_norm", "pooling": "pooling", "label_smoothing": "label_smoothing",
    "weight_decay": "weight_decay", "lr_schedule": "lr_schedule", "monitor": "monitor", "weight_ema": "ema",
    "real_passes": "real_passes", "bn_momentum": "bn_momentum",
}
LEGACY_BN_MOMENTUM = 0.99  # what runs whose config.json predates the bn_momentum key used
# what may differ between the original run's config.json and the repeat's
EXPECTED_DIFFERENCES = {"synthetic", "environment", "experiment", "synthetic_samples", "diagnostic"}


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_dirs(folder):
    """``{(fraction, seed, setting): run folder}`` of the runs ``results.json`` lists."""
    results = _read(os.path.join(folder, "results.json"))
    out = {}
    for r in results["runs"]:
        out[(float(r["fraction"]), int(r["seed"]), r["setting"])] = (r, os.path.join(folder, r["run"]))
    return out


def recipe(config):
    """The ``train_classifier`` keyword arguments a run's ``config.json`` records."""
    kw = {arg: config[key] for key, arg in RECIPE_KEYS.items() if key in config}
    kw["image_size"] = tuple(kw["image_size"])
    kw.setdefault("bn_momentum", LEGACY_BN_MOMENTUM)  # a run from before "auto": the momentum it used
    soft = config.get("synthetic_soft_labels")
    if soft:
        kw.update(synthetic_soft_labels=float(soft["alpha"]), teacher=soft["teacher"])
    return kw


def run_data(config, splits):
    """The run's dataset with its exact train / val / test images (``splits.json``) as layout splits."""
    from dataclasses import replace

    from synthseg_tf.data.layouts import load

    ds = load(config["data"])
    by_id = {s.source_id: s for s in ds.samples}
    samples = []
    for split in ("train", "val", "test"):
        missing = [i for i in splits[split] if i not in by_id]
        if missing:
            sys.exit(f"{config['data']}: the run's {split} image {missing[0]} is not in the dataset")
        samples += [replace(by_id[i], split=split) for i in splits[split]]
    return replace(ds, samples=samples)


def demo_options(spec):
    """``(seed, (H, W))`` of a ``demo-classes`` spec; exits for any other data."""
    from synthseg_tf.data.layouts import _parse_size, parse_spec

    kind, _, opts = parse_spec(spec)
    if kind != "demo-classes":
        sys.exit(f"{spec}: the oracle needs the procedural renderer of demo-classes; this is {kind} data")
    return int(opts.get("seed", 0)), _parse_size(opts.get("size", "64"))


def oracle_images(spec, labels, start=0):
    """One new demo-classes image per label, ``start`` counting the draws of each class already made."""
    from synthseg_tf.data.demo import render_class_image

    seed, size = demo_options(spec)
    taken = {}
    images = []
    for lab in labels:
        lab = int(lab)
        j = taken.get(lab, start)
        taken[lab] = j + 1
        images.append(render_class_image(seed, lab, ORACLE_FIRST_INDEX + j, size))
    return np.stack(images)


def gan_images(spec, labels, generator, thresholds, scorer, tries):
    """Per label, the generator's rendering of new demo-classes images' edge maps, the first of up to
    ``tries`` candidates whose confidence reaches the class threshold (the last one otherwise);
    returns ``(images, number of labels that exhausted their tries)``."""
    from synthseg_tf.data.conditioning import EDGE_CONDITIONINGS, edge_map
    from synthseg_tf.generation.renderer import load_renderer

    r = load_renderer(generator)
    cond = r.config.get("conditioning", "edges")
    if cond not in EDGE_CONDITIONINGS + ("class",):
        sys.exit(f"{generator}: conditioning {cond!r}; the oracle maps are edge maps (or none)")
    labels = np.asarray(labels, np.int32)
    out = np.zeros((len(labels),) + tuple(r.image_size) + (3,), np.uint8)
    pending = np.arange(len(labels))
    for attempt in range(tries):
        lab = labels[pending]
        real = oracle_images(spec, lab, start=attempt * len(labels))
        maps = (np.stack([edge_map(im, cond) for im in real]) if cond in EDGE_CONDITIONINGS
                else np.zeros(real.shape[:3], np.uint8))
        rendered = np.concatenate([r.render(maps[i:i + 64], lab[i:i + 64]) for i in range(0, len(lab), 64)])
        out[pending] = rendered
        if scorer is None:
            return out, 0
        conf = np.asarray(scorer.scores(rendered, lab))
        pending = pending[conf < np.asarray(thresholds)[lab]]
        if not len(pending):
            break
    return out, len(pending)


def write_set(folder, images, labels, what):
    """A TFRecord folder of labelled images (what ``train_classifier(synthetic=...)`` reads)."""
    import tensorflow as tf

    from synthseg_tf.data.tfrecord import DATASET_FILE, make_example, shard_name
    from synthseg_tf.utils import atomic_directory

    with atomic_directory(folder) as tmp:
        with tf.io.TFRecordWriter(os.path.join(tmp, shard_name(0, 1))) as w:
            for i, (im, lab) in enumerate(zip(images, labels)):
                w.write(make_example(im, None, label=int(lab), source_id=f"{what}-{i:06d}", synthetic=True,
                                     provenance={"diagnostic": what}))
        with open(os.path.join(tmp, DATASET_FILE), "w", encoding="utf-8") as f:
            json.dump({"count": len(labels), "shards": [len(labels)], "task": "classification",
                       "diagnostic": what}, f)
    return folder


def write_grid(path, folders, classes):
    """A PNG with one row per TFRecord folder: the first image of each class in ``classes``."""
    from synthseg_tf.data.io import write_png
    from synthseg_tf.data.tfrecord import iter_examples

    rows = []
    for folder in folders:
        first = {}
        for ex in iter_examples(folder):
            first.setdefault(ex["label"], ex["image"])
        missing = [c for c in classes if c not in first]
        if missing:
            sys.exit(f"{folder}: no image of class {missing[0]} for the grid")
        rows.append(np.concatenate([first[c] for c in classes], axis=1))
    grid = np.concatenate(rows, axis=0)
    write_png(path, np.repeat(np.repeat(grid, 2, axis=0), 2, axis=1))


def compare(original, repeat):
    """The config.json keys whose values differ beyond the swapped synthetic set."""
    keys = (set(original) | set(repeat)) - EXPECTED_DIFFERENCES - {"bn_momentum_rule"}
    original = {"bn_momentum": LEGACY_BN_MOMENTUM, **original}  # (an older run: the momentum it used)
    return sorted(k for k in keys if original.get(k) != repeat.get(k))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="a synthseg experiment classification folder on demo-classes")
    p.add_argument("--variants", default="oracle,gan-maps", help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: every seed with both runs)")
    p.add_argument("--tries", type=int, default=4, help="gan-maps: candidates per kept image")
    p.add_argument("--grid", default=None, help="also write a PNG (2x): rows oracle, gan-maps and the cell's "
                   "own set (those that exist), the first image of classes 0, 5, 10, ... of the first cell")
    a = p.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        sys.exit(f"unknown variant {bad[0]!r}; choose from {', '.join(VARIANTS)}")
    folder = os.path.abspath(a.experiment)
    if not os.path.isfile(os.path.join(folder, "results.json")):
        sys.exit(f"{folder}: no results.json (not a started classification experiment folder)")
    runs = run_dirs(folder)
    wanted = None if a.seeds is None else {int(s) for s in a.seeds.split(",")}
    pairs = sorted((f, s) for (f, s, setting) in runs if setting == "real+synthetic"
                   and (f, s, "real") in runs and (wanted is None or s in wanted))
    if not pairs:
        sys.exit(f"{folder}: no seed has both a real and a real+synthetic run")

    from synthseg_tf.training.classification import _synthetic_labels, train_classifier

    out_root = os.path.join(folder, "oracle")
    os.makedirs(out_root, exist_ok=True)
    rows = []
    for f, s in pairs:
        real_rec, _ = runs[(f, s, "real")]
        syn_rec, syn_run = runs[(f, s, "real+synthetic")]
        config = _read(os.path.join(syn_run, "config.json"))
        splits = _read(os.path.join(syn_run, "splits.json"))
        syn_path = config["synthetic"].split("tfrecord:", 1)[-1]
        labels = _synthetic_labels(syn_path)
        cell = os.path.basename(os.path.dirname(syn_path.rstrip("/")))
        for variant in variants:
            set_dir = syn_path if variant == "repeat" else os.path.join(out_root, f"{variant}-{cell}")
            note = ""
            if not os.path.isfile(os.path.join(set_dir, "dataset.json")):
                if variant == "oracle":
                    images = oracle_images(config["data"], labels)
                else:
                    record = os.path.join(syn_path, "generation.json")
                    if not os.path.isfile(record):
                        sys.exit(f"{syn_path}: no generation.json, so no generator to render the gan-maps set with")
                    gen_record = _read(record)
                    gen_config = dict(gen_record["identity"], generator=gen_record["generator"])
                    scorer = None
                    if gen_config.get("quality_model") and gen_config.get("class_min_quality"):
                        from synthseg_tf.generation.pipeline import make_scorer

                        scorer = make_scorer(gen_config["quality_model"])
                    images, short = gan_images(config["data"], labels, gen_config["generator"],
                                               gen_config.get("class_min_quality"), scorer, a.tries)
                    note = f" ({short} of {len(labels)} below their class threshold after {a.tries} tries)"
                write_set(set_dir, images, labels, variant)
                print(f"{variant}: {len(labels)} images{note} -> {set_dir}", flush=True)
            run = os.path.join(out_root, f"{variant}-f{f:g}-seed{s}")
            if not os.path.isfile(os.path.join(run, "metrics.json")):
                train_classifier(run_data(config, splits), run, synthetic=set_dir, export=False, overwrite=True,
                                 verbose=0, extra_config={"diagnostic": {"variant": variant, "repeats": syn_run}},
                                 **recipe(config))
            diff = compare(config, _read(os.path.join(run, "config.json")))
            if diff:
                print(f"warning: {run} differs from {syn_run} in {', '.join(diff)}", flush=True)
            m = _read(os.path.join(run, "metrics.json"))["test"]
            real_f1 = real_rec["metrics"]["macro_f1"]
            rows.append({"fraction": f, "seed": s, "variant": variant, "macro_f1": m["macro"]["f1"],
                         "accuracy": m["accuracy"], "real_macro_f1": real_f1,
                         "real_synthetic_macro_f1": syn_rec["metrics"]["macro_f1"], "run": run,
                         "config_differences": diff})
            print(f"f={f:g} seed {s} {variant:9s}: macro F1 {100 * m['macro']['f1']:.1f} "
                  f"(real {100 * real_f1:.1f}, real+synthetic {100 * syn_rec['metrics']['macro_f1']:.1f}): "
                  f"{100 * (m['macro']['f1'] - real_f1):+.1f} vs real", flush=True)
    print()
    summary = {}
    for variant in ["real+synthetic"] + variants:
        key = "real_synthetic_macro_f1" if variant == "real+synthetic" else "macro_f1"
        sel = [r for r in rows if r["variant"] == (variants[0] if variant == "real+synthetic" else variant)]
        deltas = [100 * (r[key] - r["real_macro_f1"]) for r in sel]
        summary[variant] = {"deltas_vs_real": [round(d, 2) for d in deltas],
                            "mean_delta_vs_real": round(float(np.mean(deltas)), 2)}
        print(f"{variant:15s} vs real, per seed: " + " / ".join(f"{d:+.1f}" for d in deltas)
              + f"  (mean {np.mean(deltas):+.1f})")
    if a.grid:
        f, s = pairs[0]
        config = _read(os.path.join(runs[(f, s, "real+synthetic")][1], "config.json"))
        syn = config["synthetic"].split("tfrecord:", 1)[-1]
        cell = os.path.basename(os.path.dirname(syn.rstrip("/")))
        sets = [os.path.join(out_root, f"{v}-{cell}") for v in ("oracle", "gan-maps")] + [syn]
        k = len(config["class_names"])
        write_grid(a.grid, [d for d in sets if os.path.isdir(d)], list(range(0, k, 5)))
        print(f"grid -> {a.grid}")
    with open(os.path.join(out_root, "oracle.json"), "w", encoding="utf-8") as fh:
        json.dump({"experiment": folder, "runs": rows, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
