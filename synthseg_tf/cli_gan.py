"""``synthseg gan train|export`` and ``synthseg generate``."""
from __future__ import annotations

import json
import os
import sys

from synthseg_tf.cli import CliError


def _size(s: str):
    from synthseg_tf.data.layouts import _parse_size

    return _parse_size(s)


# --------------------------------------------------------------------------- gan train
def cmd_gan_train(args) -> int:
    from synthseg_tf.training.gan import make_strategy

    strategy = make_strategy(args.replicas)  # before anything else touches the devices
    import tensorflow as tf  # noqa: F401

    from synthseg_tf.cli import _checked_dataset
    from synthseg_tf.data.layouts import absolute_spec
    from synthseg_tf.training.gan import train_gan
    from synthseg_tf.training.gan_data import gan_datasets

    size = _size(args.image_size)
    ds, _ = _checked_dataset(args.data, args.skip_bad)
    try:
        gd = gan_datasets(ds, size, args.batch_size, args.seed, args.conditioning)
    except ValueError as e:
        raise CliError(str(e)) from None
    steps = args.steps
    if args.epochs:
        steps = args.epochs * max(1, gd.train_size // args.batch_size)
    if not steps:
        raise CliError("give --steps or --epochs")
    res = train_gan(gd.train, args.out, num_classes=gd.classes.num_classes, image_size=size, steps=steps,
                    batch_size=args.batch_size, class_table=gd.classes, val_ds=gd.val, num_labels=gd.num_labels,
                    resume=args.resume, seed=args.seed, log_every=args.log_every, image_every=args.image_every,
                    checkpoint_every=args.checkpoint_every, norm=args.norm, gan_loss=args.gan_loss,
                    l1_weight=args.l1_weight, feature_matching_weight=args.feature_matching,
                    spectral_norm=args.spectral_norm, base_filters=args.base_filters, strategy=strategy,
                    extra_config=dict(data=absolute_spec(args.data), conditioning=gd.conditioning,
                                      label_names=ds.classes.names if gd.num_labels else None))
    print(f"trained {res.step} steps; generator, checkpoints, samples/ and log.csv in {res.out_dir}")
    print(f"tensorboard --logdir {os.path.join(res.out_dir, 'tensorboard')}")
    return 0


def cmd_gan_export(args) -> int:
    from synthseg_tf.export.generator import export_run

    path = export_run(args.run, args.out, overwrite=args.overwrite)
    print(f"exported the generator SavedModel to {path} (signatures: serving_default, serving_png)")
    return 0


def cmd_gan_evaluate(args) -> int:
    from synthseg_tf.generation.evaluate import evaluate_generator

    res = evaluate_generator(args.generator, args.segmenter, args.data, max_images=args.max_images,
                             out_dir=args.out)
    print(f"FCN-score (segmenter mIoU on generated images vs their label maps): {res['fcn_score_miou']:.3f}")
    print(f"segmenter mIoU on the real images (same size):                     {res['real_miou']:.3f}")
    print(f"ratio {res['fcn_to_real_ratio']:.2f}")
    if res["fid_domain_encoder"] is not None:
        print(f"FID {res['fid_domain_encoder']:.2f}, KID {res['kid_domain_encoder']:.4f} (segmenter encoder features)")
    if args.out:
        print(f"details: {os.path.join(args.out, 'gan_eval.json')}, grid: {os.path.join(args.out, 'gan_eval_grid.png')}")
    return 0


# --------------------------------------------------------------------------- generate
def cmd_generate(args) -> int:
    from synthseg_tf.generation.pipeline import GenerationConfig, run_generation

    cfg = GenerationConfig(generator=args.generator, out=args.out, n=args.n, masks=args.masks, seed=args.seed,
                           class_balance=args.class_balance, min_quality=args.min_quality,
                           quality_model=args.quality_model, labels=args.labels,
                           samples_per_shard=args.samples_per_shard, batch_size=args.batch_size,
                           write_png=not args.no_png, runner=args.runner, workers=args.workers,
                           beam_args=args.beam_args)
    try:
        summary = run_generation(cfg, log=lambda m: print(m, file=sys.stderr))
    except RuntimeError as e:
        raise CliError(str(e)) from None
    print(json.dumps({k: summary[k] for k in ("kept", "candidates", "rejected") if k in summary}))
    print(f"samples: {os.path.join(args.out, 'manifest.jsonl')} (TFRecords, images/ and masks/ in {args.out})")
    return 0


def register(sub, spec_help: str) -> None:
    gan = sub.add_parser("gan", help="train and export the pix2pix generator")
    gsub = gan.add_subparsers(dest="gan_command", metavar="GAN_COMMAND")
    gsub.required = True
    t = gsub.add_parser("train", help="train pix2pix (label map -> photo) under MirroredStrategy")
    t.add_argument("--data", required=True, help=spec_help)
    t.add_argument("--out", required=True, help="run folder (checkpoints, samples, log.csv, generator/)")
    t.add_argument("--image-size", default="256", help="N or HxW, each a multiple of 2**depth (default 256)")
    t.add_argument("--batch-size", type=int, default=8, help="global batch size (split over replicas)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="total training steps")
    g.add_argument("--epochs", type=int, help="epochs over the training split")
    t.add_argument("--replicas", type=int, default=1,
                   help="MirroredStrategy replicas; without GPUs the CPU is split into this many devices")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--norm", choices=("instance", "batch"), default="instance")
    t.add_argument("--gan-loss", choices=("bce", "lsgan", "hinge"), default="bce")
    t.add_argument("--l1-weight", type=float, default=100.0)
    t.add_argument("--feature-matching", type=float, default=0.0, help="discriminator feature-matching weight")
    t.add_argument("--spectral-norm", action="store_true", help="spectral normalisation in the discriminator")
    t.add_argument("--base-filters", type=int, default=64)
    t.add_argument("--conditioning", choices=("auto", "labelmap", "edges", "class"), default="auto",
                   help="for classification data: Canny edge maps (default) or the class alone")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--image-every", type=int, default=500, help="sample grids and validation every N steps")
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--skip-bad", action="store_true", help="skip unreadable samples instead of failing")
    t.set_defaults(func=cmd_gan_train)

    e = gsub.add_parser("export", help="export a run's generator as a SavedModel with serving signatures")
    e.add_argument("run", help="a `synthseg gan train` run folder")
    e.add_argument("out", help="export folder")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_gan_export)

    v = gsub.add_parser("evaluate", help="FCN-score of a generator: a real-trained segmenter on generated images")
    v.add_argument("--generator", required=True, help="a `gan train` run folder or an exported SavedModel")
    v.add_argument("--segmenter", required=True, help="segmenter SavedModel trained on real data (unet train's model/)")
    v.add_argument("--data", required=True, help="held-out label maps and photos, e.g. camvid:DIR?split=val")
    v.add_argument("--max-images", type=int, default=None)
    v.add_argument("--out", default=None, help="folder for gan_eval.json and a comparison grid PNG")
    v.set_defaults(func=cmd_gan_evaluate)

    gen = sub.add_parser("generate", help="render new (image, label map) pairs with Apache Beam")
    gen.add_argument("--generator", required=True, help="a `gan train` run folder or an exported SavedModel")
    gen.add_argument("--masks", default="sample",
                     help="'sample': new maps from the generator's training maps; 'sample:SPEC': new maps from "
                          "SPEC; SPEC: SPEC's own maps (default sample)")
    gen.add_argument("--n", type=int, required=True, help="number of samples to keep")
    gen.add_argument("--out", required=True, help="output folder (a rerun resumes or refuses)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--class-balance", default=None,
                     help="'rare' pastes rare classes more often when sampling maps")
    gen.add_argument("--min-quality", type=float, default=None,
                     help="keep a sample only if the quality model's mIoU vs its map reaches this")
    gen.add_argument("--quality-model", default=None, help="segmenter SavedModel: the model/ folder of `synthseg unet train`")
    gen.add_argument("--labels", default="balanced",
                     help="class ids for class-conditional generators: balanced | random | ID")
    gen.add_argument("--samples-per-shard", type=int, default=200)
    gen.add_argument("--batch-size", type=int, default=16, help="generator inference batch size")
    gen.add_argument("--no-png", action="store_true", help="write TFRecords and the manifest only")
    gen.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, DataflowRunner, ...)")
    gen.add_argument("--workers", type=int, default=1, help="DirectRunner worker processes")
    gen.add_argument("beam_args", nargs="*", default=[],
                     help="extra Beam options after --, e.g. -- --project P --region R --temp_location gs://...")
    gen.set_defaults(func=cmd_generate)
