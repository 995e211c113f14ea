"""The ``synthseg`` command line: one entry point, subcommands, ``--help`` on each.

Heavy imports (TensorFlow, Beam) happen inside the command that needs them, so ``--help``
and ``data validate`` answer quickly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from synthseg_tf import __version__
from synthseg_tf.errors import EXIT_BAD_DATA, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, exit_code, is_expected  # noqa: F401


class CliError(Exception):
    """An error to show the user as one line, without a traceback."""

    def __init__(self, msg: str, code: int = EXIT_ERROR):
        super().__init__(msg)
        self.code = code


# --------------------------------------------------------------------------- data
def _say(text: str, stream=None) -> None:
    """Print a line whatever the file names hold (undecodable bytes, a non-UTF-8 terminal)."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream)
    except UnicodeEncodeError:
        enc = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(enc, "backslashreplace").decode(enc, "replace"), file=stream)


def cmd_data_validate(args) -> int:
    from synthseg_tf.data.layouts import load, parse_spec
    from synthseg_tf.data.validate import validate

    parse_spec(args.spec)  # a bad spec (or a bare folder: the spec to use is suggested) fails here, before any I/O
    ds = load(args.spec)
    rep = validate(ds)
    if args.json:
        _say(json.dumps(rep.to_dict(), indent=1, ensure_ascii=False))
    else:
        _say(rep.format())
    for path, problem in rep.bad:
        _say(f"{path}: {problem}", sys.stderr)
    if rep.bad:
        if ds.artefacts and not ds.options.fixes_artefacts:
            _say(rep.artefact_summary(), sys.stderr)
        _say(f"{len(rep.bad)} problem(s) found in {ds.spec}", sys.stderr)
        return EXIT_BAD_DATA
    return EXIT_OK


def cmd_data_make_demo(args) -> int:
    from synthseg_tf.data import demo
    from synthseg_tf.data.layouts import _parse_size

    made = []
    if args.what in ("scenes", "both"):
        out = os.path.join(args.out, "scenes") if args.what == "both" else args.out
        demo.write_demo_scenes(out, n=args.n, size=_parse_size(args.size), seed=args.seed, overwrite=args.overwrite)
        made.append(f"scenes (pairs layout): pairs:{out}/images:{out}/masks")
    if args.what in ("classes", "both"):
        out = os.path.join(args.out, "classes") if args.what == "both" else args.out
        demo.write_demo_classes(out, seed=args.seed, overwrite=args.overwrite)
        made.append(f"classes (classfolders layout): classfolders:{out}")
    for m in made:
        print("wrote", m)
    return EXIT_OK


def _checked_dataset(spec: str, skip_bad: bool):
    """Load and validate ``spec``; bad files abort unless ``skip_bad`` (then they are reported)."""
    from synthseg_tf.data import load, validate

    ds = load(spec)
    rep = validate(ds)
    if rep.bad:
        for path, problem in rep.bad:
            print(f"{path}: {problem}", file=sys.stderr)
        if not skip_bad:
            raise CliError(f"{len(rep.bad)} bad file(s) in {spec}; fix them or pass --skip-bad", EXIT_BAD_DATA)
        print(f"skipping {len(rep.bad)} bad file(s)", file=sys.stderr)
        ds = rep.good_dataset()
    return ds, rep


def cmd_data_to_tfrecord(args) -> int:
    from synthseg_tf.data.tfrecord import write_tfrecords

    ds, rep = _checked_dataset(args.spec, args.skip_bad)
    meta = write_tfrecords(ds, args.out, shards=args.shards, skip_bad=args.skip_bad, overwrite=args.overwrite)
    meta["skipped"] = meta["skipped"] + [{"path": p, "problem": m} for p, m in rep.bad]
    print(f"wrote {meta['count']} examples in {len(meta['shards'])} shard(s) to {args.out}"
          + (f" ({len(meta['skipped'])} skipped)" if meta["skipped"] else ""))
    return EXIT_OK


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synthseg", description="Synthetic training data for segmentation and "
                                "classification: datasets, pix2pix GAN, generation, evaluation.")
    p.add_argument("--version", action="version", version=f"synthseg-tf {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    spec_help = ("dataset spec: pairs:IMAGES:MASKS | camvid:DIR | cityscapes:DIR[?classes=30] | isic2016:DIR | "
                 "classfolders:DIR | demo-scenes | demo-classes (options after '?', e.g. ?split=train)")

    data = sub.add_parser("data", help="read, check and convert datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    dsub.required = True

    v = dsub.add_parser("validate", help="read every sample; report bad files (exit 2) and class frequencies",
                        description="Read every sample once and name each problem: unreadable, truncated or empty "
                        "files, files that are not images, missing partners, duplicate stems, size mismatches, "
                        "mask values outside the class table, and mask values that look like interpolation or "
                        "JPEG artefacts (fix with ?snap=nearest, ?snap=void, ?min_share=X or keep them with "
                        "?snap=none). Exit 0 when clean, 2 when anything is wrong.")
    v.add_argument("spec", help=spec_help)
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_data_validate)

    m = dsub.add_parser("make-demo", help="write the built-in procedural datasets to disk")
    m.add_argument("out", help="output folder (must not exist)")
    m.add_argument("--what", choices=("scenes", "classes", "both"), default="both")
    m.add_argument("--n", type=int, default=300, help="number of street scenes")
    m.add_argument("--size", default="128", help="scene size N or HxW (default 128)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--overwrite", action="store_true")
    m.set_defaults(func=cmd_data_make_demo)

    t = dsub.add_parser("to-tfrecord", help="write a dataset as sharded TFRecords (tf.Example schema)")
    t.add_argument("spec", help=spec_help)
    t.add_argument("out", help="output folder (must not exist unless --overwrite)")
    t.add_argument("--shards", type=int, default=4)
    t.add_argument("--skip-bad", action="store_true", help="skip bad files instead of failing (they are listed)")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_data_to_tfrecord)

    from synthseg_tf import commands

    commands.register(sub, spec_help)
    from synthseg_tf import cli_pipeline  # `synthseg pipeline run|compile` (imports TFX only when run)

    cli_pipeline.register(sub, spec_help)
    return p


SPEC_ARGS = ("spec", "data", "val", "eval", "selection")
TFRECORD_MARKERS = ("dataset.json", "generation.json", "manifest.jsonl", "data", "tfrecords")


def _check_specs_early(args) -> None:
    """Parse every dataset spec argument before a command imports TensorFlow, so a typo fails in
    a second. TFRecord sources (a folder, ``*.tfrecord*``, a glob, ``tfrecord:PATH``), which some
    commands accept in place of a spec, are left to the command."""
    from synthseg_tf.data.layouts import parse_spec

    for name in SPEC_ARGS:
        value = getattr(args, name, None)
        if not isinstance(value, str) or not value:
            continue
        if value.startswith(("tfrecord:", "gs://")) or "*" in value or value.endswith((".tfrecord", ".tfrecord.gz")):
            continue
        if os.path.isdir(value) and any(f.endswith((".tfrecord", ".tfrecord.gz", ".gz")) or f in TFRECORD_MARKERS
                                        for f in os.listdir(value)):
            continue
        parse_spec(value)


# Commands that write a folder with local-file APIs (checkpoints, Keras SavedModels, reports): a
# remote --out (gs://...) is worked on as a local copy and uploaded (storage.staged_folder).
STAGED_OUT = ("cmd_gan_train", "cmd_unet_train", "cmd_classifier_train", "cmd_gan_evaluate",
              "cmd_experiment_segmentation", "cmd_experiment_classification", "cmd_report")


def _run_staged(args) -> int:
    from synthseg_tf import storage

    out = getattr(args, "out", None)
    if args.func.__name__ not in STAGED_OUT or not isinstance(out, str) or not storage.is_remote(out):
        return int(args.func(args) or 0)
    with storage.staged_folder(out, log=lambda m: print(m, file=sys.stderr)) as local:
        args.out = local
        rc = int(args.func(args) or 0)
    print(f"results uploaded to {out}", file=sys.stderr)
    return rc


def main(argv: Optional[List[str]] = None) -> int:
    from synthseg_tf._env import quiet

    quiet()  # the command line's output is its own; the library itself hides nothing (synthseg_tf/_env.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_specs_early(args)
        return _run_staged(args)
    except CliError as e:
        print(f"synthseg: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:  # pragma: no cover
        print("interrupted; a rerun resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # the documented failures (synthseg_tf.errors) as one line; anything else is a bug
        if not is_expected(e):
            raise
        print(f"synthseg: error: {e}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":  # pragma: no cover
    # Run through the package module so CliError raised by subcommands is this module's class.
    from synthseg_tf.cli import main as _main

    sys.exit(_main())
