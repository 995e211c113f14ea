"""The ``synthseg`` subcommands beyond ``data``: models, generation, experiments, demo."""
from __future__ import annotations


def register(sub, spec_help: str) -> None:
    """Add the model/generation/experiment subcommands to the top-level parser."""
    from synthseg_tf import cli_gan

    cli_gan.register(sub, spec_help)
    try:
        from synthseg_tf import cli_models
    except ImportError:  # pragma: no cover - while the module is being written
        cli_models = None
    if cli_models is not None:
        cli_models.register(sub, spec_help)
