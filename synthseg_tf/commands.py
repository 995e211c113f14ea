"""The ``synthseg`` subcommands beyond ``data``: models, generation, experiments, demo."""
from __future__ import annotations


def register(sub, spec_help: str) -> None:
    """Add the model/generation/experiment subcommands to the top-level parser."""
    from synthseg_tf import cli_gan, cli_models

    cli_gan.register(sub, spec_help)
    cli_models.register(sub, spec_help)
