"""``synthseg`` subcommands for models, experiments and reports.

``register(sub, spec_help)`` adds::

    synthseg unet train        --data SPEC [--val SPEC] [--synthetic DIR] --out RUN_DIR ...
    synthseg unet evaluate     --model DIR --data SPEC
    synthseg classifier train  --data classfolders:DIR|demo-classes [--synthetic DIR] --out RUN_DIR ...
    synthseg experiment segmentation   --data SPEC (--synthetic DIR | --generator DIR) --out DIR ...
    synthseg experiment classification --data SPEC (--synthetic DIR | --generator DIR) --out DIR ...
    synthseg report RUN_DIR

TensorFlow is imported only when a command runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

from synthseg_tf.cli import EXIT_OK, CliError


# --------------------------------------------------------------------------- argument types
def _fractions(text: str) -> List[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in (0, 1], got {text!r}") from None
    if not vals or any(not 0 < v <= 1 for v in vals):
        raise argparse.ArgumentTypeError(f"fractions must be in (0, 1], got {text!r}")
    return vals


def _fraction(text: str) -> float:
    vals = _fractions(text)
    if len(vals) != 1:
        raise argparse.ArgumentTypeError(f"expected one fraction, got {text!r}")
    return vals[0]


def _seeds(text: str):
    """``3`` -> 3 seeds (0, 1, 2); ``0,4,7`` -> those seeds."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seeds or a comma list, got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError("no seeds given")
    if "," not in text:
        if vals[0] < 1:
            raise argparse.ArgumentTypeError("the number of seeds must be >= 1")
        return vals[0]
    return vals


def _settings(text: str) -> List[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _size(text: str):
    from synthseg_tf.training.segmentation import parse_image_size

    try:
        return parse_image_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"the ratio must be in [0, 1], got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def _class_weights(text: str):
    if text in ("none", "auto"):
        return None if text == "none" else "auto"
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'auto', 'none' or one weight per class (comma list)") from None


def _user_errors(fn):
    """Show ValueError/TypeError from the library as one-line CLI errors."""
    def run(args):
        try:
            return fn(args)
        except (ValueError, TypeError, RuntimeError) as e:
            from synthseg_tf.data import DataError

            if isinstance(e, DataError):
                raise
            raise CliError(str(e)) from e
    run.__doc__ = fn.__doc__
    return run


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


# --------------------------------------------------------------------------- unet
@_user_errors
def cmd_unet_train(args) -> int:
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.segmentation import is_tfrecord_source, train_unet

    train, val = args.data, args.val
    if val is None:
        if is_tfrecord_source(train):
            raise CliError("--data is a TFRecord folder: give --val as well")
        train, val = load(train).train_val()
    if args.fraction is not None:
        if isinstance(train, str):
            if is_tfrecord_source(train):
                raise CliError("--fraction needs a dataset spec for --data, not a TFRecord folder")
            train = load(train)
        train = train.fraction(args.fraction, seed=args.seed)
    res = train_unet(
        train, val, args.out, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        steps=args.steps, synthetic=args.synthetic, synthetic_ratio=args.synthetic_ratio,
        learning_rate=args.lr, dice_weight=args.dice_weight, ce_weight=args.ce_weight,
        focal_weight=args.focal_weight, class_weights=args.class_weights, seed=args.seed, backbone=args.backbone,
        encoder_weights=args.encoder_weights, augment=not args.no_augment, keep=args.keep,
        verbose=0 if args.quiet else 1, overwrite=args.overwrite)
    v = res["metrics"]["val"]
    print(f"val mean IoU {_pct(v['mean_iou'])}, mean Dice {_pct(v['mean_dice'])}, "
          f"pixel accuracy {_pct(v['pixel_accuracy'])}")
    print(f"run folder: {res['out_dir']}")
    print(f"  model (SavedModel): {res['model_dir']}")
    print(f"  metrics: {os.path.join(res['out_dir'], 'metrics.json')}; history: "
          f"{os.path.join(res['out_dir'], 'history.csv')}")
    return EXIT_OK


@_user_errors
def cmd_unet_evaluate(args) -> int:
    from synthseg_tf.training.segmentation import evaluate_unet, write_json

    res = evaluate_unet(args.model, args.data, image_size=args.image_size, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{res['data']} ({res['samples']} samples, {res['resolution']} resolution) with {res['model']}:")
        print(f"  mean IoU {_pct(res['mean_iou'])}, mean Dice {_pct(res['mean_dice'])}, "
              f"pixel accuracy {_pct(res['pixel_accuracy'])}")
        width = max(len(c) for c in res["per_class"])
        print(f"  {'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'pixels':>10}")
        for c, d in res["per_class"].items():
            print(f"  {c:<{width}}  {_pct(d['iou']):>7}  {_pct(d['dice']):>7}  {d['support']:>10}")
    if args.out:
        write_json(args.out, res)
        print(f"metrics written to {os.path.abspath(args.out)}")
    return EXIT_OK


# --------------------------------------------------------------------------- classifier
@_user_errors
def cmd_classifier_train(args) -> int:
    from synthseg_tf.training.classification import train_classifier

    res = train_classifier(
        args.data, args.out, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        synthetic=args.synthetic, synthetic_ratio=args.synthetic_ratio, seed=args.seed, patience=args.patience,
        fractions=args.split, train_fraction=args.train_fraction, split_seed=args.split_seed,
        learning_rate=args.lr, augment=not args.no_augment, verbose=0 if args.quiet else 1,
        overwrite=args.overwrite)
    t = res["metrics"]["test"]
    print(f"test accuracy {_pct(t['accuracy'])}, macro F1 {_pct(t['macro']['f1'])} ({t['num_samples']} images)")
    print(f"run folder: {res['out_dir']}")
    print(f"  model (SavedModel): {res['model_dir']}")
    print(f"  metrics: {os.path.join(res['out_dir'], 'metrics.json')}")
    return EXIT_OK


# --------------------------------------------------------------------------- experiments
def _generation_options(args) -> Optional[dict]:
    opts = {}
    if args.n is not None:
        opts["n"] = args.n
    if args.min_quality is not None:
        opts["min_quality"] = args.min_quality
    if args.quality_model is not None:
        opts["quality_model"] = args.quality_model
    if args.masks is not None:
        opts["masks"] = args.masks
    return opts or None


def _print_summary(summary: dict) -> None:
    m = summary["primary_metric"]
    base = summary["baseline"]
    labels = {"mean_iou": "mean IoU", "macro_f1": "macro F1"}
    print(f"{labels.get(m, m.replace('_', ' '))} in % (mean ± std over seeds; deltas paired by seed):")
    for r in summary["rows"]:
        st = r["metrics"][m]
        txt = "n/a" if st["mean"] is None else f"{100 * st['mean']:.1f}" + (
            f" ± {100 * st['std']:.1f}" if st["std"] is not None else "")
        d = (r.get(f"delta_vs_{base}") or {}).get("metrics", {}).get(m)
        dtxt = ""
        if d and d["mean"] is not None:
            dtxt = f"   ({'+' if d['mean'] >= 0 else ''}{100 * d['mean']:.1f}" + (
                f" ± {100 * d['std']:.1f}" if d["std"] is not None else "") + f" vs {base})"
        print(f"  fraction {r['fraction']:<5g} {r['setting']:<15} {txt}{dtxt}")


def _finish_experiment(args, summary) -> int:
    _print_summary(summary)
    out = os.path.abspath(args.out)
    print(f"experiment folder: {out}")
    print(f"  results: {os.path.join(out, 'results.json')}; summary: {os.path.join(out, 'summary.json')}")
    if not args.no_report:
        from synthseg_tf.report import write_report

        html_path, md_path = write_report(out)
        print(f"  report: {html_path} (and {md_path})")
    return EXIT_OK


def _experiment_options(args) -> dict:
    """The keyword arguments both ``run_*_experiment`` functions take from the common experiment flags;
    ``--lr`` / ``--no-augment`` become training options only when they differ from the defaults."""
    opts = dict(
        synthetic=args.synthetic, generator=args.generator, fractions=args.fractions, seeds=args.seeds,
        settings=args.settings, image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
        synthetic_ratio=args.synthetic_ratio, generation=_generation_options(args),
        export_models=args.export_models, verbose=0 if args.quiet else 1)
    if args.lr != 1e-3:
        opts["learning_rate"] = args.lr
    if args.no_augment:
        opts["augment"] = False
    return opts


@_user_errors
def cmd_experiment_segmentation(args) -> int:
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    extra = {}
    if args.class_weights is not None:
        extra["class_weights"] = args.class_weights
    if args.backbone != "resnet34":
        extra["backbone"] = args.backbone
    summary = run_segmentation_experiment(args.data, args.out, val=args.val, steps=args.steps,
                                          **_experiment_options(args), **extra)
    return _finish_experiment(args, summary)


@_user_errors
def cmd_experiment_classification(args) -> int:
    from synthseg_tf.experiments.classification import run_classification_experiment

    summary = run_classification_experiment(
        args.data, args.out, patience=args.patience, split_fractions=args.split, split_seed=args.split_seed,
        **_experiment_options(args))
    return _finish_experiment(args, summary)


# --------------------------------------------------------------------------- report
@_user_errors
def cmd_report(args) -> int:
    from synthseg_tf.report import write_report

    html_path, md_path = write_report(args.run_dir, out_dir=args.out)
    print(f"report: {html_path}")
    print(f"markdown: {md_path} (figures beside it)")
    return EXIT_OK


# --------------------------------------------------------------------------- parsers
def _common_training(p, image_size: str, batch_size: int):
    p.add_argument("--image-size", type=_size, default=_size(image_size), metavar="HxW",
                   help=f"training size, N or HxW (default {image_size})")
    p.add_argument("--batch-size", type=_positive_int, default=batch_size, help=f"default {batch_size}")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--no-augment", action="store_true", help="no flips/scale-crop/colour jitter")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")


def _generator_args(p, what: str):
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", metavar="DIR", help=f"folder of generated {what} (synthseg generate output)")
    src.add_argument("--generator", metavar="DIR",
                     help="a generator export: samples are generated into OUT/synthetic first")
    g = p.add_argument_group("generation (with --generator)")
    g.add_argument("--n", type=_positive_int, help="number of samples to generate (default: training set size)")
    g.add_argument("--masks", help="label maps: sample (default), sample:SPEC or SPEC")
    g.add_argument("--min-quality", type=float, help="quality filter threshold (needs --quality-model)")
    g.add_argument("--quality-model", metavar="DIR", help="segmenter SavedModel for the quality filter "
                   "(RUN_DIR/model of `synthseg unet train`)")


def _command_group(sub, name: str, help_text: str):
    """``synthseg NAME SUBCOMMAND``: the ``NAME`` parser's (required) subcommands."""
    group = sub.add_parser(name, help=help_text)
    commands = group.add_subparsers(dest=f"{name}_command", metavar=f"{name.upper()}_COMMAND")
    commands.required = True
    return commands


def register(sub, spec_help: str) -> None:
    """Add the ``unet``, ``classifier``, ``experiment`` and ``report`` subcommands to ``sub``."""
    # ---------------------------------------------------------------- unet
    usub = _command_group(sub, "unet", "train and evaluate the U-Net segmenter")

    t = usub.add_parser("train", help="train a U-Net (optionally with synthetic data) and export it",
                        description="Train a ResNet34 U-Net. Steps per epoch follow the real training set size, so "
                        "runs with and without --synthetic get the same compute budget. Writes RUN_DIR/model "
                        "(SavedModel), metrics.json, history.csv, config.json, classes.json.")
    t.add_argument("--data", required=True, help=spec_help + "; or a TFRecord folder")
    t.add_argument("--val", help="validation data (spec or TFRecord folder); default: --data's own train/val split")
    t.add_argument("--synthetic", metavar="DIR", help="generated samples (TFRecord folder) mixed into training")
    t.add_argument("--synthetic-ratio", type=_ratio, default=0.5,
                   help="fraction of training samples drawn from --synthetic (default 0.5; 1 = synthetic only)")
    sched = t.add_mutually_exclusive_group()
    sched.add_argument("--epochs", type=_positive_int, help="epochs over the real training set (default 10)")
    sched.add_argument("--steps", type=_positive_int, help="total optimizer steps instead of --epochs")
    t.add_argument("--fraction", type=_fraction, help="train on this random fraction of the training split "
                   "(chosen with --seed)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--class-weights", type=_class_weights, default=None,
                   help="'auto' (from class pixel frequencies), 'none' (default) or a comma list")
    t.add_argument("--dice-weight", type=float, default=1.0)
    t.add_argument("--ce-weight", type=float, default=1.0)
    t.add_argument("--focal-weight", type=float, default=0.0)
    t.add_argument("--backbone", default="resnet34")
    t.add_argument("--encoder-weights", default=None,
                   help="None (random), 'imagenet' (needs network) or a local .h5 file")
    t.add_argument("--keep", choices=("best", "last"), default="best",
                   help="keep the best-val-mIoU epoch's weights (default) or the last ones")
    _common_training(t, "128", 8)
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (must not exist)")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_unet_train)

    e = usub.add_parser("evaluate", help="mean IoU, Dice, pixel accuracy of an exported U-Net on a dataset")
    e.add_argument("--model", required=True, metavar="DIR", help="RUN_DIR or RUN_DIR/model")
    e.add_argument("--data", required=True, help=spec_help + "; or a TFRecord folder")
    e.add_argument("--image-size", type=_size, default=None, metavar="HxW",
                   help="resize images and labels to this size first (default: native label resolution)")
    e.add_argument("--batch-size", type=_positive_int, default=8)
    e.add_argument("--json", action="store_true", help="print the full result as JSON")
    e.add_argument("--out", metavar="FILE", help="also write the result as JSON to FILE")
    e.set_defaults(func=cmd_unet_evaluate)

    # ---------------------------------------------------------------- classifier
    csub = _command_group(sub, "classifier", "train the image classifier CNN")
    c = csub.add_parser("train", help="train the CNN with early stopping; report on a held-out test split",
                        description="Stratified train/val/test split (or the layout's own), early stopping on "
                        "validation loss, test-set report. --synthetic images are added to the training split only.")
    c.add_argument("--data", required=True, help="classfolders:DIR or demo-classes")
    c.add_argument("--synthetic", metavar="DIR", help="labelled generated images (TFRecord folder)")
    c.add_argument("--synthetic-ratio", type=_ratio, default=None,
                   help="mix synthetic images at this rate for the real set's steps (default: append them all)")
    c.add_argument("--epochs", type=_positive_int, default=30, help="maximum epochs (default 30)")
    c.add_argument("--patience", type=_positive_int, default=5, help="early-stopping patience (default 5)")
    c.add_argument("--split", type=_fractions, default=(0.7, 0.15, 0.15), metavar="TRAIN,VAL,TEST",
                   help="split fractions (default 0.7,0.15,0.15)")
    c.add_argument("--split-seed", type=int, default=0)
    c.add_argument("--train-fraction", type=_fraction, default=1.0, help="use part of the training split")
    c.add_argument("--seed", type=int, default=0)
    _common_training(c, "64", 32)
    c.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (must not exist)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_classifier_train)

    # ---------------------------------------------------------------- experiments
    esub = _command_group(sub, "experiment", "controlled real vs real+synthetic experiments")

    s = esub.add_parser("segmentation", help="U-Nets on real / real+synthetic / synthetic data over fractions x seeds",
                        description="For each fraction of the real training data and each seed, train U-Nets "
                        "with identical hyper-parameters, seed and step budget on real, real+synthetic and "
                        "synthetic-only data; evaluate on the real validation split. Resumable: finished runs are "
                        "reused. Writes results.json, summary.json and a report.")
    s.add_argument("--data", required=True, help=spec_help)
    s.add_argument("--val", help="validation data; default: --data's own train/val split")
    _generator_args(s, "samples")
    s.add_argument("--fractions", type=_fractions, default=[0.1, 0.25, 1.0], help="default 0.1,0.25,1.0")
    s.add_argument("--seeds", type=_seeds, default=3, help="number of seeds (default 3) or a comma list")
    s.add_argument("--settings", type=_settings, default=["real", "real+synthetic", "synthetic"],
                   help="comma list of real, real+synthetic, synthetic (default: all three)")
    sched = s.add_mutually_exclusive_group()
    sched.add_argument("--epochs", type=_positive_int, help="epochs over the real subset (default 10)")
    sched.add_argument("--steps", type=_positive_int, help="total optimizer steps per run instead of --epochs")
    s.add_argument("--synthetic-ratio", type=_ratio, default=0.5)
    s.add_argument("--class-weights", type=_class_weights, default=None)
    s.add_argument("--backbone", default="resnet34")
    s.add_argument("--export-models", action="store_true", help="export every run's SavedModel (~100 MB each)")
    s.add_argument("--no-report", action="store_true", help="do not write the HTML/Markdown report")
    _common_training(s, "128", 8)
    s.add_argument("--out", required=True, metavar="DIR", help="experiment folder (reused to resume)")
    s.set_defaults(func=cmd_experiment_segmentation)

    k = esub.add_parser("classification", help="classifiers on real vs real+synthetic images over seeds",
                        description="Train the CNN classifier on real and real+synthetic training images with the "
                        "same split, hyper-parameters and seeds; compare test accuracy and macro-F1. Resumable.")
    k.add_argument("--data", required=True, help="classfolders:DIR or demo-classes")
    _generator_args(k, "labelled images")
    k.add_argument("--fractions", type=_fractions, default=[1.0], help="parts of the training split (default 1.0)")
    k.add_argument("--seeds", type=_seeds, default=3, help="number of seeds (default 3) or a comma list")
    k.add_argument("--settings", type=_settings, default=["real", "real+synthetic"],
                   help="comma list of real, real+synthetic, synthetic (default: real,real+synthetic)")
    k.add_argument("--epochs", type=_positive_int, default=30, help="maximum epochs (default 30)")
    k.add_argument("--patience", type=_positive_int, default=5)
    k.add_argument("--split", type=_fractions, default=(0.7, 0.15, 0.15), metavar="TRAIN,VAL,TEST")
    k.add_argument("--split-seed", type=int, default=0)
    k.add_argument("--synthetic-ratio", type=_ratio, default=None,
                   help="mix synthetic images at this rate (default: append them all to the training split)")
    k.add_argument("--export-models", action="store_true")
    k.add_argument("--no-report", action="store_true")
    _common_training(k, "64", 32)
    k.add_argument("--out", required=True, metavar="DIR", help="experiment folder (reused to resume)")
    k.set_defaults(func=cmd_experiment_classification)

    # ---------------------------------------------------------------- report
    r = sub.add_parser("report", help="HTML + Markdown report of an experiment or training run folder")
    r.add_argument("run_dir", metavar="RUN_DIR", help="experiment folder (summary.json) or run folder (metrics.json)")
    r.add_argument("--out", metavar="DIR", help="output folder (default RUN_DIR/report)")
    r.set_defaults(func=cmd_report)


__all__ = ["register"]
