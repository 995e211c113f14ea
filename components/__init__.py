"""Custom TFX components of synthseg-tf (import TFX; the ``synthseg_tf`` library never does).

Installed as ``synthseg_tf_tfx.components`` (setup.py), the name TFX records for the executors.
"""
import synthseg_tf  # noqa: F401  (its environment settings before TFX loads TensorFlow)
from .synthetic_generation import SyntheticGeneration, SyntheticGenerationSpec

__all__ = ["SyntheticGeneration", "SyntheticGenerationSpec"]
