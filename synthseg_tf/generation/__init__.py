"""Rendering label maps into photos at scale: the generator handle and the Beam pipeline."""
from synthseg_tf.generation.renderer import Renderer, directory_fingerprint

__all__ = ["Renderer", "directory_fingerprint", "GenerationConfig", "run_generation", "manifest_source_ids"]


def __getattr__(name):  # Beam is imported only when generation actually runs
    if name in ("GenerationConfig", "run_generation", "manifest_source_ids"):
        from synthseg_tf.generation import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
