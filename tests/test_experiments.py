"""Experiments: the fraction x seed x setting grid, results/summary statistics, resume, CLI."""
import argparse
import json
import os

import numpy as np
import pytest

import synthseg_tf  # noqa: F401
from test_training_cls import SMALL, write_classfolders, write_synthetic_classes
from test_training_seg import CLASSES, write_scenes, write_synthetic

# A small backbone, eager execution and 2 steps keep each U-Net run to a few seconds.
FAST = dict(image_size=32, batch_size=4, steps=2, backbone="resnet18", run_eagerly=True)


@pytest.fixture(scope="module")
def seg_experiment(tmp_path_factory):
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    root = tmp_path_factory.mktemp("segexp")
    spec = write_scenes(str(root / "real"))
    syn = write_synthetic(str(root / "synthetic"))
    out = str(root / "exp")
    logs = []
    summary = run_segmentation_experiment(spec, out, synthetic=syn, fractions=(0.5, 1.0), seeds=(0,),
                                          log=logs.append, **FAST)
    return {"spec": spec, "synthetic": syn, "out": out, "summary": summary, "logs": logs}


def _load(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def test_results_and_summary_structure(seg_experiment):
    out = seg_experiment["out"]
    results = _load(out, "results.json")
    summary = _load(out, "summary.json")
    assert summary == json.loads(json.dumps(seg_experiment["summary"]))
    runs = results["runs"]
    assert {(r["fraction"], r["setting"]) for r in runs} == {(f, s) for f in (0.5, 1.0)
                                                             for s in ("real", "real+synthetic", "synthetic")}
    for r in runs:
        assert set(r["metrics"]) == {"mean_iou", "mean_dice", "pixel_accuracy"}
        assert set(r["per_class"]["iou"]) == set(CLASSES)
        assert os.path.isfile(os.path.join(out, r["run"], "metrics.json"))
        assert not os.path.exists(os.path.join(out, r["run"], "model"))  # per-run export is opt-in
    # identical budget for every setting of a fraction; the real subset is shared
    for f in (0.5, 1.0):
        rs = [r for r in runs if r["fraction"] == f]
        assert len({r["total_steps"] for r in rs}) == 1
        cfgs = [_load(out, os.path.join(r["run"], "config.json")) for r in rs if r["setting"] != "synthetic"]
        assert cfgs[0]["experiment"]["real_subset"] == cfgs[1]["experiment"]["real_subset"]
        assert cfgs[0]["seed"] == cfgs[1]["seed"] == 0
    # with steps= the synthetic-only run does not depend on the fraction: trained once, shared
    syn_runs = {r["run"] for r in runs if r["setting"] == "synthetic"}
    assert len(syn_runs) == 1
    assert len(os.listdir(os.path.join(out, "runs"))) == 5
    assert summary["class_names"] == CLASSES and summary["baseline"] == "real"
    assert summary["settings"] == ["real", "real+synthetic", "synthetic"] and summary["fractions"] == [0.5, 1.0]
    assert len(summary["rows"]) == 6


def test_resume_extend_and_statistics(seg_experiment, monkeypatch):
    import synthseg_tf.training.segmentation as seg
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    out, spec, syn = seg_experiment["out"], seg_experiment["spec"], seg_experiment["synthetic"]
    trained = []
    real_train = seg.train_unet

    def counting(*a, **k):
        trained.append(a[2])
        return real_train(*a, **k)

    monkeypatch.setattr(seg, "train_unet", counting)
    # add a second seed for fraction 0.5 (real and real+synthetic only): two new runs, the rest kept
    summary = run_segmentation_experiment(spec, out, synthetic=syn, fractions=(0.5,), seeds=(1,),
                                          settings=("real", "real+synthetic"), log=lambda m: None, **FAST)
    assert len(trained) == 2
    results = _load(out, "results.json")
    assert len(results["runs"]) == 8  # 6 earlier + 2 new; results cover every finished run

    # the summary's statistics are the mean and sample std of the per-run values
    runs = results["runs"]
    for row in summary["rows"]:
        rs = [r for r in runs if r["fraction"] == row["fraction"] and r["setting"] == row["setting"]]
        vals = [r["metrics"]["mean_iou"] for r in rs]
        st = row["metrics"]["mean_iou"]
        assert st["n"] == len(vals) and st["mean"] == pytest.approx(np.mean(vals))
        assert st["std"] == (pytest.approx(np.std(vals, ddof=1)) if len(vals) > 1 else None)
        for c in CLASSES:
            cv = [r["per_class"]["iou"][c] for r in rs if r["per_class"]["iou"][c] is not None]
            if cv:
                assert row["per_class"]["iou"][c]["mean"] == pytest.approx(np.mean(cv))
        delta = row["delta_vs_real"]
        if row["setting"] == "real":
            assert delta is None
            continue
        base = {r["seed"]: r for r in runs if r["fraction"] == row["fraction"] and r["setting"] == "real"}
        diffs = [r["metrics"]["mean_iou"] - base[r["seed"]]["metrics"]["mean_iou"] for r in rs if r["seed"] in base]
        assert delta["metrics"]["mean_iou"]["mean"] == pytest.approx(np.mean(diffs))
        assert delta["n_pairs"] == len(diffs)
        for c in CLASSES:
            cd = [r["per_class"]["iou"][c] - base[r["seed"]]["per_class"]["iou"][c] for r in rs
                  if r["seed"] in base and r["per_class"]["iou"][c] is not None
                  and base[r["seed"]]["per_class"]["iou"][c] is not None]
            if cd:
                assert delta["per_class"][c]["mean"] == pytest.approx(np.mean(cd))
    row = next(r for r in summary["rows"] if r["fraction"] == 0.5 and r["setting"] == "real+synthetic")
    assert row["n_runs"] == 2 and row["metrics"]["mean_iou"]["std"] is not None
    assert row["delta_vs_real"]["metrics"]["mean_iou"]["n"] == 2

    # rerunning the whole grid trains nothing
    trained.clear()
    run_segmentation_experiment(spec, out, synthetic=syn, fractions=(0.5, 1.0), seeds=(0,), log=lambda m: None,
                                **FAST)
    assert trained == []
    assert len(_load(out, "results.json")["runs"]) == 8


def test_other_settings_are_refused(seg_experiment):
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    with pytest.raises(FileExistsError, match="other settings"):
        run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"],
                                    synthetic=seg_experiment["synthetic"], **dict(FAST, image_size=64))
    with pytest.raises(ValueError, match="need synthetic data"):
        run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"] + "_x", **FAST)
    with pytest.raises(ValueError, match="unknown setting"):
        run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"] + "_y",
                                    synthetic=seg_experiment["synthetic"], settings=("fake",), **FAST)


def test_summarize_numbers():
    from synthseg_tf.experiments.segmentation import summarize

    def run(setting, seed, miou, a):
        return {"fraction": 0.5, "seed": seed, "setting": setting, "metrics": {"mean_iou": miou},
                "per_class": {"iou": {"a": a, "b": None}}}

    runs = [run("real", 0, 0.40, 0.5), run("real", 1, 0.50, 0.7), run("real", 2, 0.60, 0.9),
            run("real+synthetic", 0, 0.45, 0.4), run("real+synthetic", 1, 0.52, 0.8)]  # seed 2 missing
    rows = summarize(runs, ["mean_iou"], ["iou"], ["a", "b"], [0.5], ["real", "real+synthetic"])
    real, mixed = rows
    assert real["metrics"]["mean_iou"]["mean"] == pytest.approx(0.5)
    assert real["metrics"]["mean_iou"]["std"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert real["per_class"]["iou"]["b"] == {"mean": None, "std": None, "n": 0, "values": []}
    d = mixed["delta_vs_real"]
    assert d["n_pairs"] == 2
    assert d["metrics"]["mean_iou"]["values"] == pytest.approx([0.05, 0.02])
    assert d["metrics"]["mean_iou"]["std"] == pytest.approx(np.std([0.05, 0.02], ddof=1))
    assert d["per_class"]["a"]["values"] == pytest.approx([-0.1, 0.1])
    assert d["per_class"]["b"]["n"] == 0


def test_classification_experiment(tmp_path):
    from synthseg_tf.experiments.classification import run_classification_experiment

    spec = write_classfolders(str(tmp_path / "cf"))
    syn = write_synthetic_classes(str(tmp_path / "syn"))
    out = str(tmp_path / "exp")
    summary = run_classification_experiment(spec, out, synthetic=syn, seeds=2, image_size=32, batch_size=8, epochs=1,
                                            split_fractions=(0.6, 0.2, 0.2), log=lambda m: None, run_eagerly=True,
                                            **SMALL)
    results = _load(out, "results.json")
    assert len(results["runs"]) == 4 and summary["primary_metric"] == "macro_f1"
    for r in results["runs"]:
        assert set(r["metrics"]) == {"accuracy", "macro_f1", "weighted_f1"} and r["test_samples"] == 6
        assert set(r["per_class"]["f1"]) == {"blue", "green", "red"}
    row = next(r for r in summary["rows"] if r["setting"] == "real+synthetic")
    acc = [r["metrics"]["accuracy"] for r in results["runs"] if r["setting"] == "real+synthetic"]
    assert row["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert row["delta_vs_real"]["n_pairs"] == 2 and set(row["delta_vs_real"]["per_class"]) == {"blue", "green", "red"}


def test_cli_experiment_segmentation_resumes_and_reports(seg_experiment, capsys, monkeypatch):
    import synthseg_tf.experiments.segmentation as exp
    from synthseg_tf import cli_models

    p = argparse.ArgumentParser(prog="synthseg")
    sub = p.add_subparsers()
    cli_models.register(sub, "spec")
    calls = []
    orig = exp.run_segmentation_experiment

    def spy(*a, **k):
        calls.append(k)
        return orig(*a, run_eagerly=True, **k)  # (eager only matters if something had to train)

    monkeypatch.setattr(exp, "run_segmentation_experiment", spy)
    # same settings as the fixture's experiment: every run is reused, then the report is written
    args = p.parse_args(["experiment", "segmentation", "--data", seg_experiment["spec"], "--synthetic",
                         seg_experiment["synthetic"], "--fractions", "0.5,1", "--seeds", "1", "--image-size", "32",
                         "--batch-size", "4", "--steps", "2", "--backbone", "resnet18", "--out", seg_experiment["out"]])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert calls and calls[0]["seeds"] == 1 and calls[0]["fractions"] == [0.5, 1.0]
    assert "reusing" in text and "experiment folder:" in text and "report:" in text
    assert "training U-Net" not in text
    assert os.path.isfile(os.path.join(seg_experiment["out"], "report", "report.html"))
