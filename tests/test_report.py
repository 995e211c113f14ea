"""Reports: self-contained HTML, Markdown + PNGs, honest findings, sample grids (no training needed)."""
import argparse
import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import synthseg_tf  # noqa: F401
from test_training_seg import CLASSES, write_scenes, write_synthetic


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _seg_run(out, fraction, seed, setting, miou, per_class, epochs=3):
    """A run record as results.json holds it, plus the run folder's history.csv."""
    from synthseg_tf.experiments.segmentation import run_name
    from synthseg_tf.training.segmentation import write_history_csv

    name = run_name(fraction, seed, setting)
    os.makedirs(os.path.join(out, "runs", name))
    rng = np.random.default_rng(seed)
    write_history_csv(os.path.join(out, "runs", name, "history.csv"),
                      {"loss": list(np.linspace(1.5, 0.5, epochs) + rng.random(epochs) * 0.1),
                       "val_mean_iou": list(np.linspace(0.1, miou, epochs))})
    return {"fraction": fraction, "seed": seed, "setting": setting, "run": f"runs/{name}",
            "train_samples": 0 if setting == "synthetic" else int(20 * fraction), "synthetic_samples": 8,
            "metrics": {"mean_iou": miou, "mean_dice": miou + 0.1, "pixel_accuracy": miou + 0.3},
            "per_class": {"iou": dict(zip(CLASSES, per_class)), "dice": dict(zip(CLASSES, per_class))}}


@pytest.fixture
def seg_experiment_dir(tmp_path):
    """An experiment folder: at fraction 1 synthetic data is worse in every seed; at 0.5 the
    difference is within the seed-to-seed spread."""
    from synthseg_tf.experiments.segmentation import _seg_summary, write_results

    spec = write_scenes(str(tmp_path / "real"))
    out = str(tmp_path / "exp")
    write_synthetic(os.path.join(out, "synthetic"))
    runs = []
    for s in range(3):
        noise = [0.05, -0.06, 0.01][s]
        runs += [_seg_run(out, 0.5, s, "real", 0.40 + noise, [0.8, 0.3, 0.1 + noise]),
                 _seg_run(out, 0.5, s, "real+synthetic", 0.41 - noise, [0.8, 0.35, 0.1]),
                 _seg_run(out, 0.5, s, "synthetic", 0.30 + noise, [0.7, 0.2, None]),
                 _seg_run(out, 1.0, s, "real", 0.60 + noise / 5, [0.9, 0.5, 0.4]),
                 _seg_run(out, 1.0, s, "real+synthetic", 0.55 + noise / 5, [0.9, 0.45, 0.3]),
                 _seg_run(out, 1.0, s, "synthetic", 0.30 + noise / 5, [0.7, 0.2, 0.0])]
    identity = {"task": "segmentation", "data": spec, "synthetic": os.path.join(out, "synthetic"),
                "image_size": [32, 32], "batch_size": 4, "steps": 2, "epochs": None, "synthetic_ratio": 0.5}
    _write_json(os.path.join(out, "experiment.json"), {"identity": identity})
    write_results(out, "segmentation", identity, runs, _seg_summary(identity, runs, CLASSES))
    return out


def _data_uris(html):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_segmentation_experiment_report(seg_experiment_dir):
    from synthseg_tf.report import write_report

    html_path, md_path = write_report(seg_experiment_dir)
    assert html_path == os.path.join(seg_experiment_dir, "report", "report.html")
    html = open(html_path, encoding="utf-8").read()
    md = open(md_path, encoding="utf-8").read()

    # self-contained: every image is an embedded, decodable PNG; nothing is loaded from files
    uris = _data_uris(html)
    assert len(uris) >= 5
    assert len(re.findall(r"<img ", html)) == len(uris)
    for u in uris:
        Image.open(io.BytesIO(base64.b64decode(u))).verify()
    # tables: mean ± std per setting and fraction, deltas, per-class rows
    assert html.count("<table") >= 4
    assert "mean IoU by setting and fraction" in html
    assert "40.0 ± 5.6" in html  # real, fraction 0.5: mean 0.40, sample std of (0.05, -0.06, 0.01)
    for c in CLASSES:
        assert f"<td>{c}</td>" in html
    assert "real+synthetic - real" in html

    # Markdown: the same tables, and PNG files beside it for every figure
    assert "| fraction | real images | real (%) | real+synthetic (%) | synthetic (%) |" in md
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert {"metric_vs_fraction.png", "per_class_delta_frac0.5.png", "per_class_delta_frac1.png",
            "curves_frac0.5.png", "samples.png"} <= set(pngs)
    for name in pngs:
        with open(os.path.join(os.path.dirname(md_path), name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(pngs) == len(uris)

    # honest findings: worse in every seed is said plainly; within-noise is not sold as a gain
    assert "real+synthetic mean IoU 55.0 ± 1.1% vs real 60.0 ± 1.1%; difference -5.0 ± 0.0 points" in md
    assert "lower in all 3 seeds: adding synthetic data did not help here" in md
    assert "lower in all 3 seeds: synthetic data alone does not match real data here" in md
    assert "smaller than the seed-to-seed spread: no clear difference" in md
    assert "not a significance test" in md
    # the sample grid found the real photos of the source maps
    assert "The real column shows the photo whose label map the sample was made from" in md


def test_report_without_samples_or_histories(seg_experiment_dir):
    import shutil

    from synthseg_tf.report import write_report

    shutil.rmtree(os.path.join(seg_experiment_dir, "synthetic"))
    shutil.rmtree(os.path.join(seg_experiment_dir, "runs"))
    html_path, md_path = write_report(seg_experiment_dir, out_dir=os.path.join(seg_experiment_dir, "r2"))
    md = open(md_path).read()
    assert "samples.png" not in md and "Training curves" not in md
    assert "mean IoU by setting and fraction" in md


def test_single_seed_is_reported_as_such(tmp_path):
    from synthseg_tf.experiments.segmentation import _seg_summary, write_results
    from synthseg_tf.report import write_report

    out = str(tmp_path / "exp")
    runs = [_seg_run(out, 1.0, 0, "real", 0.5, [0.5, 0.5, 0.5]),
            _seg_run(out, 1.0, 0, "real+synthetic", 0.6, [0.6, 0.6, 0.6])]
    ident = {"task": "segmentation", "data": "pairs:/nowhere:/nowhere"}
    write_results(out, "segmentation", ident, runs, _seg_summary(ident, runs, CLASSES))
    _, md_path = write_report(out)
    md = open(md_path).read()
    assert "a single seed, so this difference cannot be told apart from run-to-run variation" in md
    assert "60.0 (n=1)" in md


def test_classification_experiment_report(tmp_path):
    from synthseg_tf.experiments.classification import _cls_summary
    from synthseg_tf.experiments.segmentation import write_results
    from synthseg_tf.report import write_report

    names = ["cat", "dog"]
    out = str(tmp_path / "cexp")
    runs = []
    for s in range(2):
        for setting, acc in (("real", 0.70 + 0.01 * s), ("real+synthetic", 0.80 + 0.01 * s)):
            runs.append({"fraction": 1.0, "seed": s, "setting": setting, "run": f"runs/{setting}{s}",
                         "train_samples": 30, "synthetic_samples": 10,
                         "metrics": {"accuracy": acc, "macro_f1": acc - 0.05, "weighted_f1": acc - 0.02},
                         "per_class": {"f1": {"cat": acc, "dog": acc - 0.1}, "recall": {"cat": acc, "dog": acc}}})
    ident = {"task": "classification", "data": "classfolders:/x", "epochs": 5, "patience": 2}
    write_results(out, "classification", ident, runs, _cls_summary(ident, runs, names))
    html_path, md_path = write_report(out)
    md = open(md_path).read()
    assert "macro F1 by setting and fraction" in md and "Per-class F1" in md
    assert "higher in both seeds (few seeds: weak evidence)" in md
    assert "+10.0 ± 0.0" in md


def test_single_run_report_and_cli(tmp_path, capsys):
    from synthseg_tf import cli_models
    from synthseg_tf.metrics import ConfusionMatrix
    from synthseg_tf.training.segmentation import write_history_csv

    run = tmp_path / "run"
    os.makedirs(run)
    cm = ConfusionMatrix(3).update(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]))
    _write_json(str(run / "metrics.json"), {"val": cm.as_dict(CLASSES), "weights": "best", "best_epoch": 2})
    _write_json(str(run / "config.json"), {"task": "segmentation", "train": "pairs:a:b", "train_samples": 10,
                                           "val": "pairs:c:d", "val_samples": 2, "epochs": 2, "steps_per_epoch": 3,
                                           "batch_size": 4, "image_size": [32, 32], "backbone": "resnet34",
                                           "seed": 0})
    write_history_csv(str(run / "history.csv"), {"loss": [1.0, 0.8], "val_mean_iou": [0.3, 0.5]})

    p = argparse.ArgumentParser(prog="synthseg")
    sub = p.add_subparsers()
    cli_models.register(sub, "spec")
    args = p.parse_args(["report", str(run)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    html_path = os.path.join(str(run), "report", "report.html")
    assert f"report: {html_path}" in text
    html = open(html_path).read()
    assert "Validation metrics" in html and "75.0" in html  # pixel accuracy 3/4
    assert len(_data_uris(html)) == 1  # the training curves

    empty = tmp_path / "empty"
    os.makedirs(empty)
    args = p.parse_args(["report", str(empty)])
    with pytest.raises(FileNotFoundError, match="neither summary.json"):
        args.func(args)


def test_classifier_run_without_a_test_report_shows_its_selection_split(tmp_path):
    """An experiment's filter classifier never scores the test split: its report shows val."""
    from synthseg_tf.metrics import classification_report
    from synthseg_tf.report import write_report

    run = tmp_path / "quality"
    os.makedirs(run)
    val = classification_report([0, 1, 1, 0], [0, 1, 0, 0], ["cat", "dog"])
    _write_json(str(run / "metrics.json"), {"val": val, "best_epoch": 1})
    _write_json(str(run / "config.json"), {"task": "classification", "data": "classfolders:/x", "seed": 0})
    html_path, md_path = write_report(str(run))
    md = open(md_path).read()
    assert "Validation (selection) metrics" in md and "Test metrics" not in md
    assert "4 val images" in md and "75.0" in md  # accuracy 3/4
