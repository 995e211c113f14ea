"""SavedModel exports with serving signatures (generator; the U-Net and classifier exports live
beside their models in :mod:`synthseg_tf.models`)."""
from synthseg_tf.export.generator import export_generator

__all__ = ["export_generator"]
