"""Issue 7 exploration: real+pretrain with another fine-tuning learning rate.

Reuses the pretraining runs of a finished CamVid protocol experiment (``scripts/camvid_protocol.sh``
with real+pretrain) and fine-tunes each seed on the same fit images with ``--lr`` instead of the
default 1e-3; same budget, early stopping on the same selection images, scored once on CamVid val.

    .venv/bin/python scripts/camvid_finetune_lr.py runs/camvid_protocol_f0.25 runs/ft_lowlr 1e-4
"""
import json
import os
import sys

from synthseg_tf.data.layouts import load
from synthseg_tf.experiments import protocol as P
from synthseg_tf.training.segmentation import train_unet


def main(exp: str, out: str, lr: float, camvid: str = "../shared/data/camvid", fraction: float = 0.25) -> None:
    ds = load(f"camvid:{camvid}")
    train, eval_ds, _ = P.split_for_protocol(ds, None)
    with open(os.path.join(exp, "experiment.json")) as f:
        carve = json.load(f)["identity"].get("selection_carve", "hash")
    fit, sel = P.carve(train.fraction(fraction, seed=0), P.SELECTION_FRACTION, carve)
    cell_dir = os.path.join(exp, "subsets", f"frac{fraction:g}-subset0")
    with open(os.path.join(cell_dir, "subset.json")) as f:
        cell = json.load(f)
    if sorted(P.source_ids(fit)) != sorted(cell["fit"]) or sorted(P.source_ids(sel)) != sorted(cell["selection"]):
        raise P.ProtocolError(f"{cell_dir}: the subset differs from the one this script draws")
    for s in (0, 1, 2):
        run = os.path.join(out, f"seed{s}")
        if not os.path.isfile(os.path.join(run, "metrics.json")):
            train_unet(fit, sel, run, image_size=(96, 128), batch_size=8, steps=400, patience=8, seed=s,
                       evaluate=eval_ds, export=False, overwrite=True, verbose=0, learning_rate=lr,
                       init_weights=os.path.join(cell_dir, f"pretrain-seed{s}", "weights.h5"))
        with open(os.path.join(run, "metrics.json")) as f:
            m = json.load(f)
        with open(os.path.join(exp, "runs", f"frac{fraction:g}-seed{s}-real", "metrics.json")) as f:
            real = json.load(f)
        print(f"seed {s}: selection {100 * m['val']['mean_iou']:.1f} %, val {100 * m['eval']['mean_iou']:.1f} % "
              f"(real {100 * real['eval']['mean_iou']:.1f} %, delta {100 * (m['eval']['mean_iou'] - real['eval']['mean_iou']):+.1f}), "
              f"{m['steps_run']} steps", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
