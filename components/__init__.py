"""Custom TFX components of synthseg-tf (import TFX; the ``synthseg_tf`` library never does)."""
from components.synthetic_generation import SyntheticGeneration, SyntheticGenerationSpec

__all__ = ["SyntheticGeneration", "SyntheticGenerationSpec"]
