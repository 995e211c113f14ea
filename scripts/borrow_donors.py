"""Could an edge-map classifier choose which classes lend their edge maps to which (pose borrowing)?

    python scripts/borrow_donors.py EXPERIMENT_DIR

**A diagnostic of demo-classes runs; it reads an experiment folder made with ``--borrow-maps``**
(``synthseg experiment classification --data demo-classes ... --borrow-maps P``) and prints:

1. For the cell's synthetic set: how many kept images were conditioned on another class's edge
   map (``borrowed_from`` in the manifest) and how many of those donors had the target class's
   outline, texture and background type (demo-classes' class definitions: the only donors whose
   maps are right for the class). The generator follows the map's outline, so a kept image whose
   donor has another outline is a wrong-shape image under the class's label.
2. Whether the donors could be chosen from the data instead: a small CNN trained on the edge maps
   of the subset (the ``real`` run's train split) and scored on the val split's. ``confusion[c][d]``
   is the mean probability it gives class ``c`` on class ``d``'s val edge maps; donor weights are
   the confusions of at least ``DONOR_FLOOR`` off the diagonal. It prints the held-out accuracy and
   the share of donor weight on classes with the same outline (uniform donors: 7.1 % on demo-classes).

Reads only the subset and val images (the test split never); writes nothing.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

DONOR_FLOOR = 0.05  # a donor class needs at least this mean probability under the edge classifier


def _edge_batch(maps: Sequence[np.ndarray]) -> np.ndarray:
    """0/1 edge maps -> float ``[N, H, W, 3]``, each line thickened to 3 pixels (one-pixel lines are
    hard for a small CNN to follow after its first pooling)."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    thick = np.stack([cv2.dilate(np.asarray(m, np.uint8), kernel) for m in maps]).astype(np.float32)
    return np.repeat(thick[..., None], 3, axis=-1)


def edge_confusion(train_maps: Sequence[np.ndarray], train_labels: Sequence[int],
                   val_maps: Sequence[np.ndarray], val_labels: Sequence[int], num_classes: int,
                   seed: int = 0, epochs: int = 100, batch_size: int = 32) -> Dict:
    """Train a CNN on edge maps (``HxW`` arrays of 0/1) and score it on held-out edge maps.

    Returns ``{"confusion": C x C list (row c: mean probability of class c on each class's
    held-out maps; a class without held-out maps has a column of None), "count": held-out maps per
    class, "val_accuracy", "epochs"}``. Training: random horizontal flips and translations of up to
    1/8 of the size, cosine learning rate, no batch norm, the epoch with the lowest held-out loss kept.
    Seeded by ``seed``; TensorFlow's multi-threaded kernels still move the figures a little between
    runs (held-out accuracy 14.0 to 17.5 % in four runs on demo-classes at 25 %)."""
    import tensorflow as tf

    from synthseg_tf.models.classifier import build_classifier, compile_classifier

    x, y = _edge_batch(train_maps), np.asarray(train_labels, np.int64)
    xv, yv = _edge_batch(val_maps), np.asarray(val_labels, np.int64)
    if len(x) == 0 or len(xv) == 0:
        raise ValueError("edge_confusion needs training and held-out edge maps")
    k = int(num_classes)
    if y.min() < 0 or y.max() >= k or yv.min() < 0 or yv.max() >= k:
        raise ValueError(f"edge_confusion: labels must be class ids 0..{k - 1}")
    h, w = x.shape[1:3]
    tf.keras.utils.set_random_seed(int(seed))
    model = build_classifier(k, (h, w, 3), filters=(16, 32, 64, 128), dense_units=(128,), dropout=0.3,
                             batch_norm=False, pooling="gap")  # (no batch-norm statistics to lag on a few steps)
    steps = int(np.ceil(len(x) / batch_size)) * int(epochs)
    compile_classifier(model, tf.keras.optimizers.schedules.CosineDecay(2e-3, steps, alpha=0.01),
                       label_smoothing=0.1)
    shift_h, shift_w = max(1, h // 8), max(1, w // 8)

    def augment(img, label):
        img = tf.image.random_flip_left_right(img)
        img = tf.image.pad_to_bounding_box(img, shift_h, shift_w, h + 2 * shift_h, w + 2 * shift_w)
        img = tf.image.random_crop(img, (h, w, 3))
        return img, tf.one_hot(label, k)

    train = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=int(seed))
             .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size))
    held = tf.data.Dataset.from_tensor_slices((xv, tf.one_hot(yv, k))).batch(batch_size)
    best = tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(epochs), restore_best_weights=True)
    model.fit(train, validation_data=held, epochs=int(epochs), callbacks=[best], verbose=0)
    prob = model.predict(xv, batch_size=batch_size, verbose=0)
    count = np.bincount(yv, minlength=k)
    confusion = [[float(prob[yv == d, c].mean()) if count[d] else None for d in range(k)] for c in range(k)]
    acc = float((prob.argmax(-1) == yv).mean())
    return {"confusion": confusion, "count": count.tolist(), "val_accuracy": acc, "epochs": int(epochs)}


def donor_weights(confusion: Sequence[Sequence[Optional[float]]], floor: float = DONOR_FLOOR) -> List[List[float]]:
    """Row ``c``: the weight of each class ``d`` as a donor of edge maps for ``c``: ``confusion[c][d]``
    when it is at least ``floor``, else 0; always 0 for ``d == c`` and for classes without held-out
    maps. A row of zeros means ``c`` borrows from no class (its candidates keep their own maps)."""
    a = np.asarray([[np.nan if v is None else float(v) for v in row] for row in confusion], np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"confusion must be a square C x C matrix, got shape {a.shape}")
    w = np.where(np.isfinite(a) & (a >= float(floor)), a, 0.0)
    np.fill_diagonal(w, 0.0)
    return w.tolist()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment", help="a `synthseg experiment classification --borrow-maps P` folder (demo-classes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import cv2

    from synthseg_tf.data import load
    from synthseg_tf.data.conditioning import edge_map
    from synthseg_tf.data.demo import _CONCEPTS

    exp = json.load(open(os.path.join(args.experiment, "experiment.json")))
    spec = exp["identity"]["data"]
    cond = exp["identity"]["gan"].get("conditioning", "edges")  # the GAN's edge maps
    ds = load(spec)
    names = ds.classes.names
    by_id = {s.source_id: s for s in ds.samples}
    concept = [_CONCEPTS[n] for n in names]  # (shape, colour, texture, background) per class id
    cells = sorted(os.listdir(os.path.join(args.experiment, "subsets")))
    runs = os.path.join(args.experiment, "runs")
    for cell in cells:
        frac = cell.split("-")[0]
        syn = os.path.join(args.experiment, "subsets", cell, "synthetic")
        kept = [json.loads(line) for line in open(os.path.join(syn, "manifest.jsonl"))]
        pairs = [(concept[e["label"]], concept[e["borrowed_from"]]) for e in kept if "borrowed_from" in e]
        same = [a for a, b in pairs if a[0] == b[0]]
        alike = [a for a, b in pairs if a[0] == b[0] and a[2:] == b[2:]]  # all but the colour
        print(f"{cell}: {len(kept)} kept images, {len(pairs)} on another class's edge map; of those, "
              f"{len(same)} with the class's outline, {len(alike)} with its outline, texture and background")
        real = next(r for r in sorted(os.listdir(runs)) if r.startswith(frac + "-") and r.endswith("-real"))
        splits = json.load(open(os.path.join(runs, real, "splits.json")))
        size = tuple(json.load(open(os.path.join(runs, real, "config.json")))["image_size"])

        def edges(ids):
            maps, labels = [], []
            for i in ids:
                image, _ = ds.read_image(by_id[i])
                maps.append(edge_map(cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA), cond))
                labels.append(by_id[i].label)
            return maps, labels

        rec = edge_confusion(*edges(splits["train"]), *edges(splits["val"]), len(names), seed=args.seed)
        w = np.asarray(donor_weights(rec["confusion"]))
        shape = np.array([[a[0] == b[0] for b in concept] for a in concept])
        np.fill_diagonal(shape, False)
        uniform = shape.sum() / (len(names) * (len(names) - 1))
        lenders = int((w.sum(axis=1) > 0).sum())
        print(f"  edge-map classifier: {rec['val_accuracy']:.1%} held-out accuracy; {lenders} of {len(names)} "
              f"classes get donors; {w[shape].sum() / max(w.sum(), 1e-12):.1%} of the donor weight is on "
              f"classes with the same outline (uniform donors: {uniform:.1%})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
