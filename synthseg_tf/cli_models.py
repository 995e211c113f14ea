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
import math
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


def _whole_number(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _loss_weight(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
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
            from synthseg_tf.errors import is_expected

            if is_expected(e):  # documented errors keep their exit code (synthseg_tf/errors.py)
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
        encoder_weights=args.encoder_weights, augment=not args.no_augment, keep=args.keep, ema=args.ema,
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

    if args.no_augment and args.augment not in (None, "none"):
        raise CliError(f"--no-augment contradicts --augment {args.augment}")
    if args.synthetic_soft_labels and not (args.synthetic and args.teacher):
        raise CliError("--synthetic-soft-labels needs --synthetic (the images to soften) and --teacher (a classifier "
                       "export trained on the real training images)")
    if args.teacher and not args.synthetic_soft_labels:
        raise CliError("--teacher is only read with --synthetic-soft-labels ALPHA > 0")
    for flag, value in (("--synthetic-bn", args.synthetic_bn), ("--synthetic-batches", args.synthetic_batches)):
        if value not in (None, "shared", "sampled") and not (args.synthetic and args.synthetic_ratio is not None
                                                             and 0 < args.synthetic_ratio < 1):
            raise CliError(f"{flag} {value} needs --synthetic and a --synthetic-ratio between 0 and 1: it "
                           "shapes batches that mix real and synthetic images")
    # options left unset use train_classifier's defaults (one source of truth)
    optional = {"epochs": args.epochs, "patience": args.patience, "learning_rate": args.lr,
                "augment": False if args.no_augment else args.augment, "label_smoothing": args.label_smoothing,
                "lr_schedule": args.lr_schedule, "ema": args.ema, "min_patience_steps": args.min_patience_steps,
                "real_passes": args.real_passes, "synthetic_soft_labels": args.synthetic_soft_labels,
                "teacher": args.teacher, "bn_momentum": args.bn_momentum, "synthetic_bn": args.synthetic_bn,
                "synthetic_batches": args.synthetic_batches}
    res = train_classifier(
        args.data, args.out, image_size=args.image_size, batch_size=args.batch_size,
        synthetic=args.synthetic, synthetic_ratio=args.synthetic_ratio, seed=args.seed,
        fractions=args.split, train_fraction=args.train_fraction, split_seed=args.split_seed,
        verbose=0 if args.quiet else 1, overwrite=args.overwrite,
        **{k: v for k, v in optional.items() if v is not None})
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
    if args.n_per_image is not None:
        opts["n_per_image"] = args.n_per_image
    return opts or None


def _print_summary(summary: dict) -> None:
    m = summary["primary_metric"]
    base = summary["baseline"]
    labels = {"mean_iou": "mean IoU", "macro_f1": "macro F1"}
    print(f"{labels.get(m, m.replace('_', ' '))} in % (mean ± std over seeds; deltas paired by seed):")
    width = max([15] + [len(r["setting"]) for r in summary["rows"]])
    for r in summary["rows"]:
        st = r["metrics"][m]
        txt = "n/a" if st["mean"] is None else f"{100 * st['mean']:.1f}" + (
            f" ± {100 * st['std']:.1f}" if st["std"] is not None else "")
        d = (r.get(f"delta_vs_{base}") or {}).get("metrics", {}).get(m)
        dtxt = ""
        if d and d["mean"] is not None:
            dtxt = f"   ({'+' if d['mean'] >= 0 else ''}{100 * d['mean']:.1f}" + (
                f" ± {100 * d['std']:.1f}" if d["std"] is not None else "") + f" vs {base})"
        budget = r.get("budget", {})
        btxt = ""
        if budget.get("steps_run", {}).get("mean") is not None:
            btxt = f"   [{budget['steps_run']['mean']:.0f} steps"
            if budget.get("train_seconds", {}).get("mean") is not None:
                btxt += f", {budget['train_seconds']['mean']:.0f} s"
            btxt += "]"
        print(f"  fraction {r['fraction']:<5g} {r['setting']:<{width}} {txt}{dtxt}{btxt}")
    _print_verdicts(summary)


def _print_verdicts(summary: dict) -> None:
    """Per class: helps / hurts / no evidence from the seed-paired deltas, and the protocol."""
    for r in summary["rows"]:
        for key, d in r.items():
            if not key.startswith("delta_vs_") or not d:
                continue
            base = key[len("delta_vs_"):]
            groups = {}
            for c, v in d.get("verdicts", {}).items():
                groups.setdefault(v, []).append(c)
            print(f"  verdict, fraction {r['fraction']:g}, {r['setting']} vs {base} ({d['n_pairs']} paired seeds): "
                  f"overall {d.get('verdict', 'n/a')}; " + "; ".join(
                      f"{v}: {', '.join(cs)}" for v, cs in sorted(groups.items())))
    proto = summary.get("protocol")
    if proto:
        print(f"protocol: evaluated on {proto.get('evaluation')}; {proto.get('verdict_rule', '')}")
        for c in proto.get("cells", []):
            print(f"  fraction {c['subset']['fraction']:g}, subset seed {c['subset']['seed']}: "
                  f"{c['subset']['images']} images ({c['fit_images']} fit, {c['selection_images']} selection: "
                  f"{c['selection']}); generator trained on {c.get('generator_trained_on') or 'n/a'}")
    sel = summary.get("selected_recipe")
    if sel:
        print("recipe chosen on the selection images: " + "; ".join(
            f"fraction {c['fraction']:g} seed {c['seed']} -> {c['setting']}" for c in sel["chosen"]))


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
        synthetic_ratio=args.synthetic_ratio, generation=_generation_options(args), gan=_gan_options(args),
        subset_seed=args.subset_seed, export_models=args.export_models, verbose=0 if args.quiet else 1)
    if args.patience is not None:
        opts["patience"] = args.patience
    if args.lr != 1e-3:
        opts["learning_rate"] = args.lr
    if args.no_augment:
        opts["augment"] = False
    return {k: v for k, v in opts.items() if v is not None or k in ("synthetic", "generator", "subset_seed")}


@_user_errors
def cmd_experiment_segmentation(args) -> int:
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    extra = {}
    if args.class_weights is not None:
        extra["class_weights"] = args.class_weights
    if args.backbone != "resnet34":
        extra["backbone"] = args.backbone
    if args.ema is not None:
        extra["ema"] = args.ema
    opts = _experiment_options(args)
    gen = dict(opts.pop("generation", None) or {})
    for key, attr in (("quality_factor", "quality_factor"), ("pixel_filter", "pixel_filter")):
        v = getattr(args, attr)
        if v is not None:
            gen[key] = None if v <= 0 else v
    if args.no_hardness:
        gen["hardness"] = False
    summary = run_segmentation_experiment(args.data, args.out, evaluation=args.eval, selection=args.selection,
                                          selection_carve=args.selection_carve, steps=args.steps,
                                          generation=gen or None, **opts, **extra)
    return _finish_experiment(args, summary)


def _ema_decay(text: str) -> float:
    """``--ema``: a decay strictly between 0 and 1 (``check_ema_decay``)."""
    from synthseg_tf.training.segmentation import check_ema_decay

    try:
        return check_ema_decay(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r} ({e})") from None


def _ema_argument(p, whose: str) -> None:
    """``--ema DECAY`` for the training commands (``train_unet`` / ``train_classifier``'s ``ema``)."""
    p.add_argument("--ema", type=_ema_decay, default=None, metavar="DECAY",
                   help=f"validate, select and keep an exponential moving average of {whose} weights with this "
                        "decay (e.g. 0.99; default: the raw weights)")


def _min_confidence(text: str):
    """``--min-confidence``: a probability, or ``calibrated[:CAP]`` (kept as text)."""
    from synthseg_tf.experiments.classification import calibrated_cap

    try:
        return float(text)
    except ValueError:
        pass
    try:
        calibrated_cap(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text.strip().lower()


@_user_errors
def cmd_experiment_classification(args) -> int:
    from synthseg_tf.experiments.classification import run_classification_experiment

    opts = _experiment_options(args)
    gen = dict(opts.pop("generation", None) or {})
    if args.min_confidence is not None:
        gen["min_confidence"] = args.min_confidence if isinstance(args.min_confidence, str) else \
            (None if args.min_confidence <= 0 else args.min_confidence)
    if args.class_hardness:
        gen["class_hardness"] = True
    if args.borrow_maps:
        gen["borrow_maps"] = args.borrow_maps
    if args.reference_swap:
        if not getattr(args, "gan_style_dim", None):
            raise CliError("--reference-swap needs a GAN trained with a reference image (--gan-style-dim N)")
        gen["reference_swap"] = args.reference_swap
    extra = {"ema": args.ema} if args.ema is not None else {}  # (absent: the identity of earlier folders holds)
    if args.real_passes:
        extra["real_passes"] = True
    if args.synthetic_soft_labels:
        extra["synthetic_soft_labels"] = args.synthetic_soft_labels
    if args.bn_momentum is not None:
        extra["bn_momentum"] = args.bn_momentum
    if args.synthetic_bn not in (None, "shared"):  # (shared, the default: the identity of earlier folders holds)
        extra["synthetic_bn"] = args.synthetic_bn
    if args.synthetic_batches == "fixed":  # likewise
        extra["synthetic_batches"] = "fixed"
    summary = run_classification_experiment(
        args.data, args.out, split_fractions=args.split, split_seed=args.split_seed, generation=gen or None,
        **opts, **extra)
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
def _bn_momentum(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number in (0, 1), got {text!r}")
    return value


def _bn_momentum_argument(p):
    p.add_argument("--bn-momentum", type=_bn_momentum, default=None, metavar="auto|M",
                   help="the classifier's batch-norm momentum (default auto: 0.99 for runs of 1,000 steps or "
                        "more, lower for shorter runs, down to 0.9, so the statistics settle; give 0.99 for the "
                        "behaviour of releases before 2026-12-03)")
    p.add_argument("--synthetic-bn", choices=("shared", "separate", "auxiliary"), default=None,
                   help="batch-norm statistics of mixed batches (with --synthetic-ratio below 1): 'shared' (default), "
                        "'separate' (each batch is its real images then round(ratio x batch) synthetic ones, each "
                        "part normalised by its own statistics; only the real part moves those used at inference) "
                        "or 'auxiliary' (AdvProp: as separate, and the synthetic part also has its own batch-norm "
                        "scales and offsets, left out of the exported classifier)")
    p.add_argument("--synthetic-batches", choices=("sampled", "fixed"), default=None,
                   help="with --synthetic-ratio below 1: 'sampled' (default: each image's source drawn at the "
                        "ratio) or 'fixed' (every batch its real images then round(ratio x batch) synthetic ones; "
                        "what --synthetic-bn separate uses, here with shared statistics)")


def _common_training(p, image_size: str, batch_size: int):
    p.add_argument("--image-size", type=_size, default=_size(image_size), metavar="HxW",
                   help=f"training size, N or HxW (default {image_size})")
    p.add_argument("--batch-size", type=_positive_int, default=batch_size, help=f"default {batch_size}")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--no-augment", action="store_true", help="no flips/scale-crop/colour jitter")
    p.add_argument("--quiet", action="store_true", help="no per-epoch output")


def _generator_args(p, what: str):
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", metavar="DIR", help=f"folder of generated {what} (synthseg generate output); "
                     "refused unless its provenance lies inside each cell's training subset. Default: the "
                     "experiment trains a GAN per subset and generates from it")
    src.add_argument("--generator", metavar="DIR",
                     help="a generator trained on the subset (its train_source_ids are checked); default: trained "
                          "per subset")
    g = p.add_argument_group("per-subset GAN and generation (when neither --synthetic nor --generator is given)")
    g.add_argument("--gan-steps", type=_positive_int, help="pix2pix training steps per subset")
    g.add_argument("--gan-batch-size", type=_positive_int, help="pix2pix batch size")
    g.add_argument("--gan-base-filters", type=_positive_int, help="pix2pix base filters")
    g.add_argument("--gan-diffaugment", metavar="POLICY",
                   help="DiffAugment policy of the pix2pix discriminator's inputs: comma-separated color, "
                        "translation, cutout, or 'none' (default color,translation,cutout)")
    g.add_argument("--gan-l1-weight", type=_loss_weight, metavar="W",
                   help="weight of the generator's L1 reconstruction loss (default 100, pix2pix's); a lower one "
                        "leaves more to the adversarial and feature-matching terms, which blur less")
    g.add_argument("--gan-feature-matching", type=_loss_weight, metavar="W",
                   help="weight of pix2pixHD's discriminator feature-matching loss on the generator (the mean L1 "
                        "between the discriminator's activations on the real and the generated pair); default 0 "
                        "(off)")
    g.add_argument("--gan-class-loss", type=float, metavar="W",
                   help="classification: weight of a class loss on the generator (the cross-entropy of each "
                        "generated image's class under the confidence filter's classifier, trained on the same "
                        "subset); default 0 (off). Measured on demo-classes: not a reliable gain (README)")
    g.add_argument("--gan-mismatch", type=float, metavar="W",
                   help="classification: weight of a matching-aware discriminator's mismatched pairs (each real "
                        "image under a wrong class label, to be called fake); default 0 (off)")
    g.add_argument("--gan-aux-class", type=float, metavar="W",
                   help="classification: AC-GAN's auxiliary classifier on the discriminator (needs "
                        "--gan-d-label-conditioning projection), trained on the real subset images; the generator "
                        "also minimises W x its cross-entropy of the generated images; default 0 (off)")
    g.add_argument("--gan-conditioning", choices=("edges", "color-edges", "class"),
                   help="classification: what the GAN is conditioned on besides the class: Canny edge maps of the "
                        "subset's images (default), the Canny edges of each colour channel, or nothing")
    g.add_argument("--gan-d-label-conditioning", choices=("input", "projection"),
                   help="classification: how the GAN's discriminator takes the class label, 'input' (default: an "
                        "embedding tiled beside the edge map) or 'projection' (a projection discriminator)")
    g.add_argument("--gan-generator-arch", choices=("unet", "spade"),
                   help="the GAN's generator: 'unet' (default, pix2pix) or 'spade' (a SPADE/GauGAN decoder modulated "
                        "by the label or edge map, and the class, at every scale)")
    g.add_argument("--gan-style-dim", type=int, metavar="N",
                   help="the GAN's generator also takes a reference image (a real subset image of the candidate's "
                        "class, the one its map came from), encoded to N numbers that FiLM its decoder; default 0 "
                        "(off)")
    g.add_argument("--gan-d-scales", type=int, choices=range(1, 5), metavar="N",
                   help="the GAN's discriminator scales: 1 (default, one PatchGAN) to 4 (pix2pixHD's multi-scale "
                        "discriminator, one PatchGAN per scale on the inputs pooled by 1, 2, ... 2**(N-1))")
    g.add_argument("--gan-seed", type=int, help="pix2pix seed (default 0): another seed is another GAN draw "
                   "on the same subset, to measure how much a result depends on the generator")
    g.add_argument("--n", type=_positive_int, help="number of samples to generate per subset")
    g.add_argument("--n-per-image", type=float, help="samples to generate per training image (default 6 "
                   "segmentation, 1 classification)")


def _gan_options(args) -> Optional[dict]:
    opts = {}
    for key, attr in (("steps", "gan_steps"), ("batch_size", "gan_batch_size"), ("base_filters", "gan_base_filters"),
                      ("seed", "gan_seed"), ("diffaugment", "gan_diffaugment"),
                      ("class_loss_weight", "gan_class_loss"), ("mismatch_weight", "gan_mismatch"),
                      ("aux_class_weight", "gan_aux_class"),
                      ("d_label_conditioning", "gan_d_label_conditioning"), ("conditioning", "gan_conditioning"),
                      ("generator_arch", "gan_generator_arch"), ("d_scales", "gan_d_scales"),
                      ("style_dim", "gan_style_dim"), ("l1_weight", "gan_l1_weight"),
                      ("feature_matching_weight", "gan_feature_matching")):
        if getattr(args, attr, None) is not None:
            opts[key] = getattr(args, attr)
    for key, default in (("d_label_conditioning", "input"), ("generator_arch", "unet"), ("d_scales", 1),
                         ("style_dim", 0), ("l1_weight", 100.0), ("feature_matching_weight", 0.0)):
        if opts.get(key) == default:  # the default: the experiment's identity stays as before
            del opts[key]
    if "diffaugment" in opts:  # a bad policy fails here, not after the experiment's first runs
        from synthseg_tf.models.pix2pix import parse_diffaugment

        try:
            opts["diffaugment"] = parse_diffaugment(opts["diffaugment"])
        except ValueError as err:
            raise CliError(f"--gan-{err}") from err
    if "style_dim" in opts:  # likewise: a negative size or a SPADE generator fails before any run
        from synthseg_tf.models.pix2pix import check_style_dim

        try:
            check_style_dim(opts["style_dim"], opts.get("generator_arch", "unet"))
        except ValueError as err:
            raise CliError(f"--gan-style-dim: {err}") from err
    return opts or None


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
    _ema_argument(t, "the")
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
    from synthseg_tf.training.classification import CLASSIFIER_DEFAULTS as cls  # no TensorFlow import

    csub = _command_group(sub, "classifier", "train the image classifier CNN")
    c = csub.add_parser("train", help="train the CNN with early stopping; report on a held-out test split",
                        description="Stratified train/val/test split (or the layout's own), early stopping on "
                        "validation loss, test-set report. --synthetic images are added to the training split only.")
    c.add_argument("--data", required=True, help="classfolders:DIR or demo-classes")
    c.add_argument("--synthetic", metavar="DIR", help="labelled generated images (TFRecord folder)")
    c.add_argument("--synthetic-ratio", type=_ratio, default=None,
                   help="mix synthetic images at this rate for the real set's steps (default: append them all)")
    c.add_argument("--real-passes", action="store_true",
                   help="with --synthetic-ratio, make an epoch as many steps as one pass over the real images takes "
                        "at that ratio (default: the real set's steps, so real images are seen 1 - ratio as often)")
    c.add_argument("--epochs", type=_positive_int, default=None, help="maximum epochs (default %s)" % cls["epochs"])
    c.add_argument("--patience", type=_positive_int, default=None,
                   help="early-stopping patience in epochs (default %s), at least --min-patience-steps "
                   "optimiser steps" % cls["patience"])
    c.add_argument("--min-patience-steps", type=_non_negative_int, default=None,
                   help="the patience spans at least this many optimiser steps, so a small training split "
                   "is not stopped after a few dozen steps (default %s)" % cls["min_patience_steps"])
    c.add_argument("--split", type=_fractions, default=(0.7, 0.15, 0.15), metavar="TRAIN,VAL,TEST",
                   help="fractions for a dataset without split folders (default 0.7,0.15,0.15); with train/ "
                   "(+ test/ or val/) folders those are kept and only a missing val/test is carved from train/")
    c.add_argument("--split-seed", type=int, default=0)
    c.add_argument("--train-fraction", type=_fraction, default=1.0, help="use part of the training split")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--augment", choices=("none", "standard", "strong"), default=None,
                   help="training augmentation (default %s); standard = flip, scale-crop, mild colour jitter; "
                   "strong adds rotation, strong colour jitter, blur and noise"
                   % ("standard" if cls["augment"] is True else cls["augment"] or "none"))
    c.add_argument("--label-smoothing", type=float, default=None, help="default %s" % cls["label_smoothing"])
    _bn_momentum_argument(c)
    c.add_argument("--lr-schedule", choices=("constant", "cosine", "plateau"), default=None,
                   help="learning-rate schedule (default %s)" % cls["lr_schedule"])
    _ema_argument(c, "the")
    c.add_argument("--synthetic-soft-labels", type=_ratio, default=None, metavar="ALPHA",
                   help="train on each synthetic image's (1 - ALPHA) x its class + ALPHA x the --teacher's "
                        "probabilities for it (default 0: its class alone)")
    c.add_argument("--teacher", metavar="MODEL_DIR",
                   help="a classifier export trained on the real training images (for --synthetic-soft-labels)")
    _common_training(c, "64", 32)
    c.set_defaults(lr=None)  # unset: train_classifier's default learning rate
    for action in c._actions:
        if action.dest == "lr":
            action.help = "peak learning rate (default %s)" % cls["learning_rate"]
    c.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (must not exist)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=cmd_classifier_train)

    # ---------------------------------------------------------------- experiments
    esub = _command_group(sub, "experiment", "controlled real vs real+synthetic experiments")

    s = esub.add_parser("segmentation", help="U-Nets on real / augmented / copy-paste / synthetic data, honest protocol",
                        description="For each fraction of the training split and each seed: draw the subset, carve "
                        "a selection part from it, train a GAN, a quality U-Net, the synthetic and copy-paste sets "
                        "on the subset's fit images only, then U-Nets in every setting (early stopping on the "
                        "selection images) scored once on the evaluation split (default: the val split), which "
                        "nothing else reads. Prints per-class verdicts. Resumable: finished steps are reused.")
    s.add_argument("--data", required=True, help=spec_help)
    s.add_argument("--eval", help="evaluation data (default: --data's val split), e.g. camvid:DIR?split=test")
    s.add_argument("--selection", help="select on this split instead of carving 20%% of each subset "
                   "(must not be the evaluation data)")
    s.add_argument("--selection-carve", choices=["hash", "blocks"], default="hash",
                   help="how the selection part is carved from each subset: hash (each image by the hash of its "
                        "id; default) or blocks (runs of neighbouring ids, e.g. video frames, so that selection "
                        "images are not a second away from a training frame)")
    _generator_args(s, "samples")
    s.add_argument("--fractions", type=_fractions, default=[0.1, 0.25], help="default 0.1,0.25")
    s.add_argument("--seeds", type=_seeds, default=3, help="number of seeds (default 3) or a comma list")
    s.add_argument("--subset-seed", type=int, default=None,
                   help="draw one subset per fraction with this seed (one GAN per fraction); default: a subset per seed")
    s.add_argument("--settings", type=_settings,
                   default=["real", "real+augment", "real+copypaste", "real+synthetic", "synthetic",
                            "real+pretrain+copypaste"],
                   help="comma list of real, real+augment, real+copypaste, real+synthetic, synthetic, real+pretrain "
                        "(pretrain on the synthetic set, fine-tune on the real images), real+pretrain+mix (the same "
                        "pretraining, fine-tune on real+synthetic), real+pretrain+copypaste (the same pretraining, "
                        "fine-tune on real+copypaste); default: real,real+augment,real+copypaste,real+synthetic,synthetic,"
                        "real+pretrain+copypaste")
    sched = s.add_mutually_exclusive_group()
    sched.add_argument("--epochs", type=_positive_int, help="maximum epochs over the fit images (default 10)")
    sched.add_argument("--steps", type=_positive_int, help="maximum optimizer steps per run instead of --epochs")
    s.add_argument("--patience", type=_positive_int, default=None,
                   help="early stopping: epochs without a better selection mIoU (default: none)")
    s.add_argument("--synthetic-ratio", type=_ratio, default=0.5)
    s.add_argument("--quality-factor", type=float, default=None,
                   help="keep a generated sample when the quality U-Net's mIoU on it reaches this times its "
                        "selection mIoU (default 0.5; 0 disables)")
    s.add_argument("--pixel-filter", type=float, default=None,
                   help="FreeMask pixel filter margin (default 1.25; 0 disables)")
    s.add_argument("--no-hardness", action="store_true", help="no hardness-aware sampling of source maps")
    s.add_argument("--class-weights", type=_class_weights, default=None)
    s.add_argument("--backbone", default="resnet34")
    _ema_argument(s, "each U-Net's")
    s.add_argument("--export-models", action="store_true", help="export every run's SavedModel (~100 MB each)")
    s.add_argument("--no-report", action="store_true", help="do not write the HTML/Markdown report")
    _common_training(s, "128", 8)
    s.add_argument("--out", required=True, metavar="DIR", help="experiment folder (reused to resume)")
    s.set_defaults(func=cmd_experiment_segmentation)

    k = esub.add_parser("classification", help="classifiers on real / augmented / synthetic images, honest protocol",
                        description="Select on the val split, evaluate on the test split (the layout's own folders "
                        "when it has them). Per fraction of the train split, a class-conditional GAN and a "
                        "confidence-filter classifier are trained on that subset only. Resumable.")
    k.add_argument("--data", required=True, help="classfolders:DIR or demo-classes")
    _generator_args(k, "labelled images")
    k.add_argument("--fractions", type=_fractions, default=[1.0], help="parts of the training split (default 1.0)")
    k.add_argument("--seeds", type=_seeds, default=3, help="number of seeds (default 3) or a comma list")
    k.add_argument("--subset-seed", type=int, default=None, help="one subset per fraction drawn with this seed")
    k.add_argument("--settings", type=_settings, default=["real", "real+augment", "real+synthetic"],
                   help="comma list of real, real+augment, real+synthetic, synthetic, real+pretrain "
                        "(pretrain on the synthetic images, fine-tune on the real ones), real+pretrain+mix "
                        "(the same pretraining, fine-tune on real+synthetic), real+synthetic+finetune "
                        "(real+synthetic's weights fine-tuned on the real images at a tenth of the learning rate), "
                        "real+synthetic@RATIO (mixed at "
                        "RATIO, e.g. real+synthetic@0.1,real+synthetic@0.5: selected-recipe then also chooses the "
                        "ratio on val); default: real,real+augment,real+synthetic")
    k.add_argument("--epochs", type=_positive_int, default=80,
                   help="maximum epochs over the training split, the same for every setting (default 80)")
    k.add_argument("--patience", type=_positive_int, default=12,
                   help="early-stopping patience in epochs on val, at least 300 optimiser steps (default 12); "
                        "a patience of --epochs or more trains every run for the whole learning-rate schedule "
                        "and keeps its best epoch on val")
    k.add_argument("--split", type=_fractions, default=(0.7, 0.15, 0.15), metavar="TRAIN,VAL,TEST")
    k.add_argument("--split-seed", type=int, default=0)
    k.add_argument("--synthetic-ratio", type=_ratio, default=None,
                   help="mix synthetic images at this rate (default: append them all to the training split)")
    k.add_argument("--real-passes", action="store_true",
                   help="with a mix ratio, an epoch is one pass over the real images at that ratio, so every "
                        "setting sees each real image equally often per epoch (default: the real set's steps)")
    k.add_argument("--min-confidence", type=_min_confidence, default=None,
                   help="keep a generated image when the subset-trained classifier gives its class at least this "
                        "probability (0 disables); 'calibrated[:CAP]' (the default): per class, at least the median "
                        "probability it gives that class's real val images, at most CAP (default 0.9)")
    k.add_argument("--class-hardness", action="store_true",
                   help="draw the rare classes' candidates also in proportion to how hard each class is for the "
                        "subset-trained classifier on the val images (1 - its median probability of the class, at "
                        "least 0.05), so the synthetic budget goes to the classes the real data leaves weak")
    k.add_argument("--borrow-maps", type=_ratio, default=None, metavar="P",
                   help="condition a share P of the generated images on an edge map of another class's subset "
                        "image (pose borrowing; the confidence filter decides whether the image still shows its "
                        "class; default 0)")
    k.add_argument("--reference-swap", type=_ratio, default=None, metavar="P",
                   help="with --gan-style-dim: give a share P of the generated images another subset image of "
                        "their class as their reference than the one their edge map came from (default 0)")
    _ema_argument(k, "each classifier's")
    _bn_momentum_argument(k)
    k.add_argument("--synthetic-soft-labels", type=_ratio, default=None, metavar="ALPHA",
                   help="train on each synthetic image's (1 - ALPHA) x its class + ALPHA x the probabilities the "
                        "subset-trained confidence-filter classifier gives it (default 0: its class alone)")
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
