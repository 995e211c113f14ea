"""Custom TFX components of synthseg-tf (import TFX; the ``synthseg_tf`` library never does)."""
import synthseg_tf  # noqa: F401  (its environment settings before TFX loads TensorFlow)
from components.synthetic_generation import SyntheticGeneration, SyntheticGenerationSpec

__all__ = ["SyntheticGeneration", "SyntheticGenerationSpec"]
