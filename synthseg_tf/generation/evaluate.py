"""How good is a generator? The pix2pix "FCN-score" and distribution distances.

A segmenter trained on *real* images labels both the real images of a held-out set and the
images the generator renders from those same label maps. The FCN-score is the mean IoU of
the latter against their conditioning maps; next to the segmenter's mean IoU on the real
images it says how much of the scene a model can still read in the synthetic photos. FID and
KID compare real and generated images in the segmenter's encoder feature space (an offline
domain encoder: no InceptionV3 weights are needed).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np


def _resized_pairs(ds, size, max_images: Optional[int]):
    import cv2

    samples = ds.samples[:max_images] if max_images else ds.samples
    images, maps = [], []
    for s in samples:
        image, mask = ds.read(s)
        images.append(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA))
        maps.append(cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST))
    return np.stack(images), np.stack(maps)


def comparison_grid(maps, real, fake, classes, n: int = 6) -> np.ndarray:
    """Rows of label map (colourised) | real | generated for ``n`` samples spread over the set."""
    rows = []
    picks = np.unique(np.linspace(0, len(maps) - 1, min(n, len(maps))).round().astype(int))
    for m, r, f in ((maps[i], real[i], fake[i]) for i in picks):
        gap = np.full((m.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([classes.colorize(m), gap, r, gap, f], axis=1))
    sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([x for row in rows for x in (row, sep)][:-1], axis=0)


def evaluate_generator(generator: str, segmenter: str, data: str, max_images: Optional[int] = None,
                       batch_size: int = 16, out_dir: Optional[str] = None) -> Dict:
    """FCN-score, the segmenter's real-image mIoU at the same size, their ratio, FID and KID."""
    from synthseg_tf.data import load
    from synthseg_tf.data.io import write_png
    from synthseg_tf.generation.renderer import Renderer
    from synthseg_tf.metrics.generative import compute_generative_metrics
    from synthseg_tf.metrics.segmentation import ConfusionMatrix
    from synthseg_tf.models.unet import load_segmenter
    from synthseg_tf.utils import atomic_write_text

    r = Renderer(generator)
    if r.reference_conditioned:  # (each image's own photo as its reference would hand it the answer)
        raise ValueError(f"{generator} takes a reference image (style_dim > 0); the FCN-score is not defined "
                         "for it yet: it would need references other than the evaluated images themselves")
    seg = load_segmenter(segmenter)
    ds = load(data)
    if ds.num_classes != r.config.get("num_classes") or ds.num_classes != seg.num_classes:
        raise ValueError(f"class counts differ: data {ds.num_classes}, generator {r.config.get('num_classes')}, "
                         f"segmenter {seg.num_classes}")
    if r.conditional:
        raise ValueError("the FCN-score needs a label-map generator, not a class-conditional one")
    real, maps = _resized_pairs(ds, r.image_size, max_images)
    fake = np.concatenate([r.render(maps[i:i + batch_size]) for i in range(0, len(maps), batch_size)])
    k = ds.num_classes
    cm_real, cm_fake = ConfusionMatrix(k), ConfusionMatrix(k)
    for i in range(0, len(maps), batch_size):
        cm_real.update(maps[i:i + batch_size], seg(real[i:i + batch_size]))
        cm_fake.update(maps[i:i + batch_size], seg(fake[i:i + batch_size]))
    names = ds.classes.names
    try:
        gen_metrics = compute_generative_metrics(seg, real.astype(np.float32) / 255.0,
                                                 fake.astype(np.float32) / 255.0, batch_size=batch_size)
    except ValueError as e:  # an export without the feature signature
        gen_metrics = {"fid": None, "kid": None, "note": str(e)}
    result = {
        "data": ds.spec, "generator": os.path.abspath(generator), "segmenter": os.path.abspath(segmenter),
        "images": int(len(maps)), "image_size": list(r.image_size),
        "fcn_score_miou": cm_fake.mean_iou(), "real_miou": cm_real.mean_iou(),
        "fcn_to_real_ratio": cm_fake.mean_iou() / max(cm_real.mean_iou(), 1e-9),
        "fcn_score_pixel_accuracy": cm_fake.pixel_accuracy(), "real_pixel_accuracy": cm_real.pixel_accuracy(),
        "per_class_iou": {n: {"generated": g, "real": rr} for n, g, rr in
                          zip(names, _clean(cm_fake.iou_per_class()), _clean(cm_real.iou_per_class()))},
        "fid_domain_encoder": gen_metrics["fid"], "kid_domain_encoder": gen_metrics["kid"],
        "feature_space": gen_metrics.get("note") or "pooled encoder bottleneck of the segmenter (not "
                         "InceptionV3: not comparable to published FID values)",
    }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        atomic_write_text(os.path.join(out_dir, "gan_eval.json"), json.dumps(result, indent=1))
        write_png(os.path.join(out_dir, "gan_eval_grid.png"), comparison_grid(maps, real, fake, ds.classes))
    return result


def _clean(values):
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in values]
