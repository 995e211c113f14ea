"""What the confidence filter's own classifier says about the synthetic images it kept.

    .venv/bin/python scripts/filter_agreement.py runs/cls_f0.25/subsets/frac0.25-subset0 [SYNTHETIC_DIR]

For a classification experiment cell (``quality/model``: the subset-trained filter classifier;
``synthetic/``: the kept images and their ``manifest.jsonl``, or SYNTHETIC_DIR), prints per
intended class: how many images were kept, its calibrated threshold, how many the same classifier
ranks first as another class, and which classes those are. The ``calibrated`` filter keeps an
image when the probability of its intended class reaches the class's threshold; with a low
threshold that can hold while another class gets most of the probability.
"""
import collections
import json
import os
import sys

import numpy as np


def main(cell: str, synthetic: str = "") -> None:
    from synthseg_tf.data.io import read_image
    from synthseg_tf.generation.pipeline import MANIFEST_FILE
    from synthseg_tf.models.classifier import load_classifier

    synthetic = synthetic or os.path.join(cell, "synthetic")
    clf = load_classifier(os.path.join(cell, "quality", "model"))
    names = list(clf.class_names)
    thresholds = None
    path = os.path.join(cell, "quality", "thresholds.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            thresholds = json.load(f).get("thresholds")
    with open(os.path.join(synthetic, MANIFEST_FILE), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise SystemExit(f"{synthetic}/{MANIFEST_FILE} lists no kept images")
    labels = np.array([int(r["label"]) for r in rows])
    probs = np.concatenate([
        clf.predict_proba(np.stack([read_image(os.path.join(synthetic, r["image"]))[0]
                                    for r in rows[i:i + 64]]).astype(np.float32) / 255.0)
        for i in range(0, len(rows), 64)])
    top = probs.argmax(1)
    other = top != labels
    print(f"{len(rows)} kept images; the filter classifier ranks {int(other.sum())} "
          f"({100 * other.mean():.1f} %) first as another class")
    print(f"{'intended class':26s} {'kept':>5s} {'threshold':>9s} {'top-1 other':>11s}  ranked first instead")
    for c in sorted(set(labels.tolist())):
        sel = labels == c
        wrong = collections.Counter(top[sel & other].tolist()).most_common(3)
        t = "" if thresholds is None else f"{thresholds[c]:.2f}"
        print(f"{names[c]:26s} {int(sel.sum()):5d} {t:>9s} {int((sel & other).sum()):11d}  "
              + ", ".join(f"{names[k]} ({n})" for k, n in wrong))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
