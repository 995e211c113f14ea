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
    from synthseg_tf.errors import EXIT_BAD_DATA, ModelLoadError

    if args.keep_checkpoints < 1:
        raise CliError(f"--keep-checkpoints must be >= 1, got {args.keep_checkpoints}", EXIT_BAD_DATA)
    from synthseg_tf.training.gan import make_strategy

    strategy = make_strategy(args.replicas)  # before anything else touches the devices
    import tensorflow as tf

    # The pipelines' shuffle and augmentation seeds combine with TensorFlow's global seed when they
    # are built: set it first, so --seed gives the same data order whatever ran before in the process.
    tf.keras.utils.set_random_seed(args.seed)

    from synthseg_tf.cli import _checked_dataset
    from synthseg_tf.data.layouts import absolute_spec
    from synthseg_tf.training.gan import train_gan
    from synthseg_tf.training.gan_data import gan_datasets

    size = _size(args.image_size)
    ds, _ = _checked_dataset(args.data, args.skip_bad)
    if args.fraction is not None and not 0 < args.fraction <= 1:
        raise CliError(f"--fraction must be in (0, 1], got {args.fraction}")
    if args.monitor < 0:
        raise CliError(f"--monitor must be >= 0, got {args.monitor}")
    try:
        ema = None if str(args.ema_decay).strip().lower() in ("none", "off") else float(args.ema_decay)
    except ValueError:
        raise CliError(f"--ema-decay must be a number in (0, 1) or 'none', got {args.ema_decay!r}") from None
    ema = None if ema == 0 else ema
    try:
        gd = gan_datasets(ds, size, args.batch_size, args.seed, args.conditioning, fraction=args.fraction,
                          subset_seed=args.subset_seed, monitor=args.monitor)
    except ValueError as e:
        raise CliError(str(e)) from None
    steps = args.steps
    if args.epochs:
        steps = args.epochs * max(1, gd.train_size // args.batch_size)
    if not steps:
        raise CliError("give --steps or --epochs")
    n_monitor = len(gd.monitor_source_ids)
    print(f"GAN training samples: {gd.train_size} (training part of {args.data}"
          + (f", fraction {args.fraction} seed {args.subset_seed}" if args.fraction is not None else "")
          + f"); monitoring samples: {n_monitor or 'none'}", file=sys.stderr)
    try:
        res = train_gan(gd.train, args.out, num_classes=gd.classes.num_classes, image_size=size, steps=steps,
                        batch_size=args.batch_size, class_table=gd.classes, val_ds=gd.val, num_labels=gd.num_labels,
                        resume=args.resume, seed=args.seed, log_every=args.log_every, image_every=args.image_every,
                        checkpoint_every=args.checkpoint_every, norm=args.norm, gan_loss=args.gan_loss,
                        l1_weight=args.l1_weight, feature_matching_weight=args.feature_matching,
                        spectral_norm=args.spectral_norm, base_filters=args.base_filters, strategy=strategy,
                        val_steps=max(1, -(-n_monitor // args.batch_size)), upsample=args.upsample,
                        label_conditioning=args.label_conditioning if gd.num_labels else None,
                        diffaugment=args.diffaugment, ema_decay=ema, keep_checkpoints=args.keep_checkpoints,
                        class_loss_model=args.class_loss_model, class_loss_weight=args.class_loss,
                        mismatch_weight=args.mismatch, aux_class_weight=args.aux_class,
                        d_label_conditioning=args.d_label_conditioning if gd.num_labels else None,
                        generator_arch=args.generator_arch, d_scales=args.d_scales, style_dim=args.style_dim,
                        extra_config=dict(data=absolute_spec(args.data), conditioning=gd.conditioning,
                                          label_names=ds.classes.names if gd.num_labels else None,
                                          fraction=args.fraction, subset_seed=args.subset_seed, **gd.provenance()))
    except ModelLoadError:
        raise  # a damaged run folder: exit 2 (synthseg_tf.errors)
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"trained {res.step} steps; generator, checkpoints, samples/ and log.csv in {res.out_dir}")
    print(f"tensorboard --logdir {os.path.join(res.out_dir, 'tensorboard')}")
    return 0


def cmd_gan_export(args) -> int:
    import tempfile

    from synthseg_tf import storage
    from synthseg_tf.export.generator import export_run

    with storage.staged_folder(args.run, upload=False) as run:  # a gs:// run folder: read from a local copy
        if not storage.is_remote(args.out):
            path = export_run(run, args.out, overwrite=args.overwrite)
        else:  # exported locally, then moved into place on the remote storage as a whole
            if storage.exists(args.out) and not args.overwrite:
                raise FileExistsError(f"{args.out} already exists; choose another output or pass --overwrite")
            with tempfile.TemporaryDirectory() as tmp:
                local = export_run(run, os.path.join(tmp, "export"))
                with storage.atomic_directory(args.out, overwrite=args.overwrite, last=("saved_model.pb",)) as rtmp:
                    for d, _, files in os.walk(local):
                        for f in files:
                            rel = os.path.relpath(os.path.join(d, f), local).replace(os.sep, "/")
                            with open(os.path.join(d, f), "rb") as fh:
                                storage.atomic_write_bytes(storage.join(rtmp, rel), fh.read())
            path = args.out
    print(f"exported the generator SavedModel to {path} (signatures: serving_default, serving_png)")
    return 0


def cmd_gan_evaluate(args) -> int:
    from synthseg_tf.generation.evaluate import evaluate_generator

    try:
        res = evaluate_generator(args.generator, args.segmenter, args.data, max_images=args.max_images,
                                 out_dir=args.out)
    except ValueError as e:
        raise CliError(str(e)) from None
    print(f"FCN-score (segmenter mIoU on generated images vs their label maps): {res['fcn_score_miou']:.3f}")
    print(f"segmenter mIoU on the real images (same size):                     {res['real_miou']:.3f}")
    print(f"ratio {res['fcn_to_real_ratio']:.2f}")
    if res["fid_domain_encoder"] is not None:
        print(f"FID {res['fid_domain_encoder']:.2f}, KID {res['kid_domain_encoder']:.4f} (segmenter encoder features)")
    if args.out:
        print(f"details: {os.path.join(args.out, 'gan_eval.json')}, grid: {os.path.join(args.out, 'gan_eval_grid.png')}")
    return 0


# --------------------------------------------------------------------------- generate
def _class_thresholds(path):
    """``--class-min-quality FILE``: a JSON list of per-class thresholds, or an object with a
    ``thresholds`` list (the ``thresholds.json`` of ``synthseg experiment classification
    --min-confidence calibrated``)."""
    if path is None:
        return None
    from synthseg_tf import storage

    try:
        data = json.loads(storage.read_text(path))
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: cannot read per-class thresholds ({e})") from None
    values = data.get("thresholds") if isinstance(data, dict) else data
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise CliError(f"{path}: expected a JSON list of numbers or an object with a 'thresholds' list")
    return [float(v) for v in values]


def cmd_generate(args) -> int:
    from synthseg_tf.generation.pipeline import GenerationConfig, run_generation

    cfg = GenerationConfig(generator=args.generator, out=args.out, n=args.n, masks=args.masks, seed=args.seed,
                           class_balance=args.class_balance, min_quality=args.min_quality,
                           quality_model=args.quality_model, labels=args.labels,
                           samples_per_shard=args.samples_per_shard, batch_size=args.batch_size,
                           inference_batch=args.inference_batch,
                           write_png=not args.no_png, runner=args.runner, workers=args.workers,
                           beam_args=args.beam_args, pixel_filter=args.pixel_filter, hardness=args.hardness,
                           allow_weak_quality_model=args.allow_weak_quality_model,
                           class_min_quality=_class_thresholds(args.class_min_quality),
                           borrow_maps=args.borrow_maps, reference_swap=args.reference_swap)
    from synthseg_tf.errors import is_expected

    try:
        summary = run_generation(cfg, log=lambda m: print(m, file=sys.stderr))
    except (RuntimeError, ValueError) as e:
        if is_expected(e):  # named data/model errors keep their documented exit codes
            raise
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
    t.add_argument("--upsample", choices=("resize", "transpose"), default="resize",
                   help="decoder upsampling: nearest resize + 3x3 conv (no checkerboard, default) or the original "
                        "4x4 transposed conv")
    t.add_argument("--generator-arch", choices=("unet", "spade"), default="unet",
                   help="generator: pix2pix's U-Net (default) or a SPADE (GauGAN) decoder whose every normalisation "
                        "the label map (and class) modulates, per pixel")
    t.add_argument("--label-conditioning", choices=("film", "bottleneck"), default="film",
                   help="class-conditional generators: class FiLM in every decoder block (default) or the class "
                        "embedding at the bottleneck only")
    t.add_argument("--diffaugment", default="color,translation,cutout", metavar="POLICY",
                   help="DiffAugment of the discriminator's (label map, image) pairs: comma-separated subset of "
                        "color,translation,cutout, or 'none' (default color,translation,cutout)")
    t.add_argument("--class-loss", type=float, default=0.0, metavar="W",
                   help="class-conditional generators: also minimise W x the cross-entropy of each generated "
                        "image's class under the frozen classifier --class-loss-model (default 0: off)")
    t.add_argument("--class-loss-model", metavar="DIR",
                   help="a classifier export (synthseg classifier train output) over the same classes, trained on "
                        "the GAN's training images, for --class-loss")
    t.add_argument("--mismatch", type=float, default=0.0, metavar="W",
                   help="class-conditional generators: a matching-aware discriminator, which also learns to call "
                        "each real image fake under a wrong class label, with weight W (default 0: off)")
    t.add_argument("--aux-class", type=float, default=0.0, metavar="W",
                   help="class-conditional GANs with --d-label-conditioning projection: AC-GAN's auxiliary "
                        "classifier, a head on the discriminator's features that learns the classes on the real "
                        "images; the generator also minimises W x its cross-entropy on the generated ones "
                        "(default 0: off)")
    t.add_argument("--d-label-conditioning", choices=("input", "projection"), default="input",
                   help="class-conditional GANs: how the discriminator takes the class label: an embedding tiled "
                        "beside the label map (default) or a projection discriminator (the label's embedding "
                        "dotted with each patch's last features, added to its logit)")
    t.add_argument("--style-dim", type=int, default=0, metavar="N",
                   help="U-Net generators: also condition on a reference image, encoded to N numbers that FiLM the "
                        "decoder, so a rendered image takes a real image's colours, textures and background; each "
                        "training image (flipped and shifted) is its own reference, `synthseg generate` passes a "
                        "real image of each candidate's class (default 0: off)")
    t.add_argument("--d-scales", type=int, default=1, choices=range(1, 5), metavar="N",
                   help="pix2pixHD's multi-scale discriminator: one PatchGAN per scale on the inputs pooled by "
                        "1, 2, ... 2**(N-1), 1 to 4 (default 1: the single PatchGAN)")
    t.add_argument("--ema-decay", default="0.999", metavar="DECAY",
                   help="EMA of the generator weights (the saved generator), with warm-up; 'none' or 0 disables "
                        "(default 0.999)")
    t.add_argument("--fraction", type=float, default=None, metavar="F",
                   help="train on a random fraction F of the training split (train.fraction(F, seed=S), the "
                        "subset an experiment with the same fraction and seed uses)")
    t.add_argument("--subset-seed", type=int, default=0, metavar="S", help="seed of the --fraction subset (default 0)")
    t.add_argument("--monitor", type=int, default=4, metavar="N",
                   help="training-split samples the GAN does not train on, for validation losses and sample grids "
                        "(taken outside the --fraction subset when possible; 0 = none; default 4)")
    t.add_argument("--conditioning", choices=("auto", "labelmap", "edges", "color-edges", "class"), default="auto",
                   help="for classification data: Canny edge maps (default), Canny edges of each colour channel "
                        "(color-edges: keeps outlines between colours of equal brightness) or the class alone")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--image-every", type=int, default=500, help="sample grids and validation every N steps")
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--keep-checkpoints", type=int, default=2, metavar="K",
                   help="keep the last K checkpoints plus the best by the monitoring samples' L1 loss "
                        "(checkpoints/best.json); a 256x256 run's checkpoint is about 360 MB (default 2)")
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
    gen.add_argument("--out", required=True, help="output folder (a rerun resumes or refuses; one run at a time: "
                     "a second run into it stops with exit code 3)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--class-balance", default=None,
                     help="'rare' pastes rare classes more often when sampling maps")
    gen.add_argument("--min-quality", type=float, default=None,
                     help="keep a sample only if its quality score reaches this: the segmenter's mIoU vs its map, "
                          "or for a class-conditional generator the classifier's probability of the intended class")
    gen.add_argument("--quality-model", default=None,
                     help="segmenter SavedModel (the model/ folder of `synthseg unet train`); for a class-conditional "
                          "generator a classifier export")
    gen.add_argument("--class-min-quality", default=None, metavar="FILE",
                     help="class-conditional generator + classifier: per-class thresholds instead of --min-quality "
                          "(a JSON list, one per class, or a thresholds.json written by `synthseg experiment "
                          "classification --min-confidence calibrated`)")
    gen.add_argument("--allow-weak-quality-model", action="store_true",
                     help="only warn (instead of refusing) when the segmenter is not clearly better than always "
                          "predicting the majority class on its run's selection split")
    gen.add_argument("--pixel-filter", type=float, default=None, metavar="MARGIN",
                     help="FreeMask pixel filter (needs --quality-model): void mask pixels whose segmenter loss "
                          "exceeds MARGIN x their class's mean loss on the real training pairs, e.g. 1.25")
    gen.add_argument("--hardness", action="store_true",
                     help="hardness-aware sampling (needs --quality-model): draw base maps in proportion to their "
                          "classes' mean segmenter loss on real data (mixed 50/50 with uniform)")
    gen.add_argument("--labels", default="balanced",
                     help="class ids for class-conditional generators: balanced | random | rare (1/count of the "
                          "class among the generator's training samples) | ID")
    gen.add_argument("--borrow-maps", type=float, default=0.0, metavar="P",
                     help="class-conditional generator on edge maps: condition a candidate of class C, with "
                          "probability P, on an edge map of a training image of another class (pose borrowing; "
                          "pair it with a classifier --quality-model, which judges whether the image shows C)")
    gen.add_argument("--reference-swap", type=float, default=0.0, metavar="P",
                     help="generator trained with a reference image (--style-dim): give a candidate, with "
                          "probability P, another training image of its class as its reference than the one its "
                          "map came from (one image's layout or pose, another's appearance; default 0)")
    gen.add_argument("--samples-per-shard", type=int, default=200)
    gen.add_argument("--batch-size", type=int, default=16,
                     help="batch of the quality model when it computes the real loss statistics of --pixel-filter/"
                          "--hardness; does not change the output (Beam work items are whole shards)")
    gen.add_argument("--inference-batch", type=int, default=16, metavar="K",
                     help="the fixed batch the generator and quality model run on (the last batch of a shard is "
                          "padded), so the same seed gives byte-identical files whatever --workers or runner; "
                          " part of the run's settings (a resume must use the same K; default 16)")
    gen.add_argument("--no-png", action="store_true", help="write TFRecords and the manifest only")
    gen.add_argument("--runner", default="DirectRunner", help="Beam runner (DirectRunner, DataflowRunner, ...)")
    gen.add_argument("--workers", type=int, default=1, help="DirectRunner worker processes")
    gen.add_argument("beam_args", nargs="*", default=[],
                     help="extra Beam options after --, e.g. -- --project P --region R --temp_location gs://...")
    gen.set_defaults(func=cmd_generate)
