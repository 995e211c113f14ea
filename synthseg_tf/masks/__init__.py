"""New label maps from training label maps (numpy + OpenCV; no TensorFlow import).

Quick start::

    from synthseg_tf.masks import LabelMapSampler
    sampler = LabelMapSampler(train_masks, num_classes=12, seed=0, class_balance="rare", size=(256, 256))
    new_map, info = sampler.sample_at(17)      # deterministic for (seed, 17): safe on any worker
    for new_map, info in sampler.take(100): ...

Class ids are ``0..K-1`` and ``IGNORE_ID`` (255) marks void pixels, as in
:mod:`synthseg_tf.data.classes`.
"""
from synthseg_tf.masks.copypaste import Component, MapComponents, extract_components, paste_component
from synthseg_tf.masks.mixing import MIX_MODES, cutmix
from synthseg_tf.masks.sampler import (
    DEFAULT_PROBABILITIES,
    OPS,
    LabelMapSampler,
    class_balance_weights,
    class_pixel_counts,
    class_pixel_frequencies,
    info_to_json,
    validate_label_map,
)
from synthseg_tf.masks.transforms import (
    BORDERS,
    affine_matrix,
    elastic,
    elastic_field,
    hflip,
    random_affine,
    resize_nearest,
    warp_affine,
    warp_displacement,
)

__all__ = [
    "LabelMapSampler", "class_pixel_counts", "class_pixel_frequencies", "class_balance_weights",
    "validate_label_map", "info_to_json", "OPS", "DEFAULT_PROBABILITIES",
    "hflip", "affine_matrix", "warp_affine", "random_affine", "elastic", "elastic_field", "warp_displacement",
    "resize_nearest", "BORDERS", "Component", "MapComponents", "extract_components", "paste_component",
    "cutmix", "MIX_MODES",
]
