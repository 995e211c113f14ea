"""What the GAN is conditioned on when a dataset has no label maps (classification data).

- ``edges``: an OpenCV Canny edge map of a real image of the class (ids: 0 background,
  1 edge), plus the class id: the generator learns the class's look around a real layout.
- ``color-edges``: the same, but the union of the Canny edges of the R, G and B channels, so
  an outline between two colours of equal brightness (which the grey-level map loses) is kept.
- ``class``: the class id alone (an empty map), the plain class-conditional GAN.
"""
from __future__ import annotations

import numpy as np

from synthseg_tf.data.classes import ClassTable

CONDITIONINGS = ("labelmap", "edges", "color-edges", "class")
EDGE_CONDITIONINGS = ("edges", "color-edges")  # an edge map of a real image of the class
EDGE_CLASSES = ClassTable(names=["background", "edge"], colors=[(0, 0, 0), (255, 255, 255)])
EMPTY_CLASSES = ClassTable(names=["empty"], colors=[(0, 0, 0)])


def canny_edges(image: np.ndarray, low: int = 60, high: int = 150, blur: int = 3) -> np.ndarray:
    """uint8 ``HxWx3`` RGB (or float in [0,1]) -> uint8 ``HxW`` edge map with ids {0, 1}."""
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    if blur:
        gray = cv2.GaussianBlur(gray, (blur, blur), 0)
    return (cv2.Canny(gray, low, high) > 0).astype(np.uint8)


def color_canny_edges(image: np.ndarray, low: int = 60, high: int = 150, blur: int = 3) -> np.ndarray:
    """Like :func:`canny_edges`, on each of the R, G and B channels: an edge in any channel is an edge."""
    img = np.asarray(image)
    if img.ndim != 3:
        return canny_edges(img, low, high, blur)
    out = np.zeros(img.shape[:2], np.uint8)
    for c in range(img.shape[-1]):
        out |= canny_edges(img[..., c], low, high, blur)
    return out


def edge_map(image: np.ndarray, conditioning: str) -> np.ndarray:
    """The edge map of ``image`` for an edge ``conditioning`` ("edges" or "color-edges")."""
    if conditioning == "edges":
        return canny_edges(image)
    if conditioning == "color-edges":
        return color_canny_edges(image)
    raise ValueError(f"not an edge conditioning: {conditioning!r} (one of {EDGE_CONDITIONINGS})")


def conditioning_classes(conditioning: str) -> ClassTable:
    if conditioning in EDGE_CONDITIONINGS:
        return EDGE_CLASSES
    if conditioning == "class":
        return EMPTY_CLASSES
    raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")


def with_conditioning_masks(ds, conditioning: str):
    """Add a ``mask`` to each (unbatched, resized) element of a classification ``tf.data`` set."""
    import tensorflow as tf

    def edges(el):
        m = tf.numpy_function(lambda im: edge_map(im, conditioning), [el["image"]], tf.uint8, stateful=False)
        return dict(el, mask=tf.ensure_shape(m, el["image"].shape[:2]))

    def empty(el):
        return dict(el, mask=tf.zeros(tf.shape(el["image"])[:2], tf.uint8))

    if conditioning in EDGE_CONDITIONINGS:
        return ds.map(edges, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if conditioning == "class":
        return ds.map(empty, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    raise ValueError("conditioning must be 'edges', 'color-edges' or 'class' for classification data, got "
                     f"{conditioning!r}")
