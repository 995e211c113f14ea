"""How much of an object's outline the GAN's edge maps keep, on freshly rendered demo-classes images.

    python scripts/edge_recall.py [--per-class 20] [--size 64] [--seed 0]

A diagnostic for the ``edges`` and ``color-edges`` conditionings (README, demo-classes step 30).
It renders ``--per-class`` new images of every class (indices 0.. of ``--seed``; these are
procedural renders, not the dataset's files, so no split is read), takes each object's outline
(its mask minus the mask eroded by one pixel) and counts the outline pixels that have an edge
pixel within one pixel. Printed per conditioning: the mean outline recall, the share of images
whose recall is under 0.5 (the outline mostly lost) and the mean edge density (edge pixels per
pixel, background texture included).
"""
import argparse
import sys
from typing import Dict, List

import numpy as np


def outline_recall(per_class: int = 20, size: int = 64, seed: int = 0,
                   conditionings=("edges", "color-edges")) -> Dict[str, Dict[str, float]]:
    import cv2

    from synthseg_tf.data.conditioning import edge_map
    from synthseg_tf.data.demo import NUM_CLASSIFICATION_CLASSES, render_class_image_and_mask

    k = np.ones((3, 3), np.uint8)
    recall: Dict[str, List[float]] = {c: [] for c in conditionings}
    density: Dict[str, List[float]] = {c: [] for c in conditionings}
    for cid in range(NUM_CLASSIFICATION_CLASSES):
        for i in range(per_class):
            img, mask = render_class_image_and_mask(seed, cid, i, (size, size))
            m = mask.astype(np.uint8)
            outline = (m - cv2.erode(m, k)) > 0
            if not outline.any():
                continue
            for c in conditionings:
                e = edge_map(img, c)
                recall[c].append(float((cv2.dilate(e, k) > 0)[outline].mean()))
                density[c].append(float(e.mean()))
    return {c: {"images": len(recall[c]), "mean_outline_recall": float(np.mean(recall[c])),
                "share_recall_below_0.5": float(np.mean(np.asarray(recall[c]) < 0.5)),
                "edge_density": float(np.mean(density[c]))} for c in conditionings}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for c, r in outline_recall(a.per_class, a.size, a.seed).items():
        print(f"{c:12s} {r['images']} images: outline recall {100 * r['mean_outline_recall']:.1f} %, "
              f"images with recall < 0.5: {100 * r['share_recall_below_0.5']:.1f} %, "
              f"edge density {r['edge_density']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
