"""Does the selection split rank the recipes as the evaluation split does?

    python scripts/selection_bias.py EXPERIMENT_DIR [EXPERIMENT_DIR ...]

Reads the ``results.json`` of classification experiments (``synthseg experiment classification``)
and pairs every run with the ``real`` run of the same fraction and seed: its macro-F1 delta on the
selection split (val; what keep-best, early stopping and ``selected-recipe`` read) beside its
delta on the evaluation split (test, read once per run). Prints one line per paired run, then per
setting the mean deltas on both splits, how often their signs agree, and the selection split's
mean over-statement (selection delta minus evaluation delta).

A recipe whose weights were picked on the selection split more than once (e.g.
``real+synthetic+finetune``: keep-best in the mixed run, then again while fine-tuning) is picked
from more candidates, so its selection figure is the more optimistic one; this shows by how much.
"""
import argparse
import json
import os
import sys
from collections import defaultdict


def paired(folder):
    """``[(setting, fraction, seed, selection delta, evaluation delta)]`` against ``real``, in points."""
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        runs = json.load(f)["runs"]
    real = {(r["fraction"], r["seed"]): r for r in runs if r["setting"] == "real"}
    rows = []
    for r in runs:
        base = real.get((r["fraction"], r["seed"]))
        if r["setting"] == "real" or base is None:
            continue
        if r.get("selection_macro_f1") is None or base.get("selection_macro_f1") is None:
            continue
        sel = 100 * (r["selection_macro_f1"] - base["selection_macro_f1"])
        ev = 100 * (r["metrics"]["macro_f1"] - base["metrics"]["macro_f1"])
        rows.append((r["setting"], r["fraction"], r["seed"], sel, ev))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="experiment output folders (each with results.json)")
    a = p.parse_args(argv)
    by_setting = defaultdict(list)
    for folder in a.folders:
        if not os.path.isfile(os.path.join(folder, "results.json")):
            sys.exit(f"{folder}: no results.json (not a finished or started experiment folder)")
        for setting, frac, seed, sel, ev in paired(folder):
            print(f"{folder}  {setting:28s} f={frac:g} seed {seed}: selection {sel:+5.1f}  evaluation {ev:+5.1f}")
            by_setting[setting].append((sel, ev))
    print()
    for setting, pairs in sorted(by_setting.items()):
        n = len(pairs)
        sel = sum(s for s, _ in pairs) / n
        ev = sum(e for _, e in pairs) / n
        agree = sum((s > 0) == (e > 0) for s, e in pairs)
        print(f"{setting:28s} {n:2d} paired runs: selection {sel:+5.1f}, evaluation {ev:+5.1f} (mean vs real); "
              f"signs agree in {agree}/{n}; selection over-states by {sel - ev:+.1f}")


if __name__ == "__main__":
    main()
