"""FCN-score of an experiment cell's GAN on that cell's *selection* images (never its training
images, never the evaluation split), with its quality U-Net as the segmenter.

    .venv/bin/python scripts/gan_eval_selection.py runs/camvid_protocol_f0.25/subsets/frac0.25-subset0 \
        camvid:../shared/data/camvid

Writes CELL/gan_eval_selection/{gan_eval.json, gan_eval_grid.png} and prints the headline numbers.
"""
import json
import os
import sys

from synthseg_tf.data import load
from synthseg_tf.generation.evaluate import evaluate_generator


def main(cell: str, spec: str) -> None:
    with open(os.path.join(cell, "subset.json"), encoding="utf-8") as f:
        selection = set(json.load(f)["selection"])
    ds = load(spec)
    sel = ds.select([i for i, s in enumerate(ds.samples) if s.source_id in selection])
    if len(sel) != len(selection):
        raise SystemExit(f"{spec} holds {len(sel)} of the cell's {len(selection)} selection images")
    res = evaluate_generator(os.path.join(cell, "gan"), os.path.join(cell, "quality", "model"), sel,
                             out_dir=os.path.join(cell, "gan_eval_selection"))
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, (dict, list))}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
