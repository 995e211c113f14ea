"""The ``synthseg`` subcommands beyond ``data``: models, generation, experiments, demo."""
from __future__ import annotations


def register(sub, spec_help: str) -> None:
    """Add the model/generation/experiment subcommands to the top-level parser."""
    return None
