"""The ``synthseg`` subcommands beyond ``data``: models, generation, experiments, demo."""
from __future__ import annotations


def register(sub, spec_help: str) -> None:
    """Add the model/generation/experiment subcommands to the top-level parser."""
    from synthseg_tf import cli_gan, cli_models

    cli_gan.register(sub, spec_help)
    cli_models.register(sub, spec_help)

    d = sub.add_parser("demo", help="the whole flow on the built-in demo data (offline, a few minutes)")
    d.add_argument("--out", default="runs/demo", help="output folder (rerun to resume)")
    d.add_argument("--quick", action="store_true", help="smallest settings (about a minute; for smoke tests)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from synthseg_tf.workflow import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0
