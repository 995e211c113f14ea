"""Experiments under the honest protocol: per-subset GAN, quality model, synthetic and copy-paste sets,
every setting trained on the fit images only, scored on an evaluation split nothing else read;
provenance refusals, resume, statistics, verdicts and the CLI."""
import argparse
import json
import os
import shutil

import numpy as np
import pytest

import synthseg_tf  # noqa: F401
from synthseg_tf.cli import CliError
from test_training_cls import SMALL, Stop, cli_spy, write_classfolders
from test_training_seg import CLASSES, write_scenes

# A small backbone, eager execution and 2 steps keep each U-Net run to a few seconds.
FAST = dict(image_size=32, batch_size=4, steps=2, backbone="resnet18", run_eagerly=True)
TINY = dict(gan={"steps": 2, "batch_size": 4, "base_filters": 8},
            generation={"n": 6, "samples_per_shard": 4, "batch_size": 4, "quality_factor": 0.01,
                        "allow_weak_quality_model": True},
            copypaste={"n": 6})
ALL = ("real", "real+augment", "real+copypaste", "real+synthetic", "synthetic")


def _load(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def assert_same_kernels(a, b):
    """Two ``weights.h5`` files hold the same, non-empty set of convolution/dense kernels."""
    import h5py

    def kernels(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if name.endswith("kernel:0") else None)
        return out

    ka, kb = kernels(a), kernels(b)
    assert ka and ka.keys() == kb.keys() and all(np.array_equal(ka[k], kb[k]) for k in ka)


def _manifest_ids(folder):
    ids = set()
    with open(os.path.join(folder, "manifest.jsonl")) as f:
        for line in f:
            if line.strip():
                ids.update(json.loads(line)["source_ids"])
    return ids


@pytest.fixture(scope="module")
def seg_experiment(tmp_path_factory):
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    root = tmp_path_factory.mktemp("segexp")
    spec = write_scenes(str(root / "real"), n=16)
    out = str(root / "exp")
    logs = []
    summary = run_segmentation_experiment(spec, out, fractions=(1.0,), seeds=(0,), settings=ALL, patience=2,
                                          log=logs.append, **TINY, **FAST)
    return {"spec": spec, "out": out, "summary": summary, "logs": logs, "root": root}


def test_every_artifact_stays_inside_the_fit_images(seg_experiment):
    """The protocol test: nothing the experiment used touched an image outside the fit part of the
    subset, and the evaluation images were read by nothing but the final scoring."""
    from synthseg_tf.data import load

    out = seg_experiment["out"]
    cell = os.path.join(out, "subsets", "frac1-subset0")
    sub = _load(cell, "subset.json")
    fit, sel = set(sub["fit"]), set(sub["selection"])
    assert fit and sel and not fit & sel
    _, ev = load(seg_experiment["spec"]).train_val()
    eval_ids = {s.source_id for s in ev.samples}
    assert eval_ids and not eval_ids & (fit | sel)

    assert set(_load(cell, "gan", "config.json")["train_source_ids"]) == fit
    syn_ids, cp_ids = _manifest_ids(os.path.join(cell, "synthetic")), _manifest_ids(os.path.join(cell, "copypaste"))
    assert syn_ids and syn_ids <= fit
    assert cp_ids and cp_ids <= fit
    q = _load(cell, "quality", "config.json")
    assert set(q["experiment"]["fit"]) == fit and q["train_samples"] == len(fit) and q["val_samples"] == len(sel)
    # the filter's own record of what it saw, in the run, the export and the synthetic set it filtered
    assert q["source_ids"] == {"train": sorted(fit), "selection": sorted(sel)}
    qx = _load(cell, "quality", "model", "config.json")
    assert (set(qx["train_source_ids"]), set(qx["selection_source_ids"])) == (fit, sel)
    gen_state = _load(cell, "synthetic", "generation.json")
    assert gen_state["identity"]["quality_model"].endswith(os.path.join("quality", "model"))
    assert gen_state["quality_provenance"] == {"train": sorted(fit), "selection": sorted(sel)}

    results = _load(out, "results.json")
    assert {r["setting"] for r in results["runs"]} == set(ALL)
    for r in results["runs"]:
        cfg = _load(out, r["run"], "config.json")
        assert set(cfg["experiment"]["real_subset"]) == fit
        assert cfg["train_samples"] == len(fit) and cfg["val_samples"] == len(sel)
        assert cfg["evaluate_samples"] == len(ev)
        assert cfg["augment"] == ("strong" if r["setting"] == "real+augment" else True)
        m = _load(out, r["run"], "metrics.json")
        # the reported figure is the evaluation split's, not the selection split's
        assert r["metrics"]["mean_iou"] == m["eval"]["mean_iou"]
        assert r["selection_mean_iou"] == m["val"]["mean_iou"]
        assert r["steps_run"] is not None and r["train_seconds"] is not None
    syn_cfg = _load(out, "runs", "frac1-seed0-real_synthetic", "config.json")
    assert syn_cfg["synthetic"].endswith(os.path.join("frac1-subset0", "synthetic"))
    cp_cfg = _load(out, "runs", "frac1-seed0-real_copypaste", "config.json")
    assert cp_cfg["synthetic"].endswith(os.path.join("frac1-subset0", "copypaste"))


def test_summary_has_deltas_verdicts_and_protocol(seg_experiment):
    summary = seg_experiment["summary"]
    assert summary == _load(seg_experiment["out"], "summary.json")
    assert summary["settings"] == list(ALL) and summary["baseline"] == "real"
    rows = {r["setting"]: r for r in summary["rows"]}
    syn = rows["real+synthetic"]
    for base in ("real", "real+augment", "real+copypaste"):
        d = syn[f"delta_vs_{base}"]
        assert d["n_pairs"] == 1 and d["verdict"] == "no evidence"  # one seed is never evidence
        assert set(d["verdicts"]) == set(CLASSES)
    assert rows["real"]["delta_vs_real"] is None
    proto = summary["protocol"]
    assert "nothing else reads" in proto["rule"] and "helps" in proto["verdict_rule"]
    (c,) = proto["cells"]
    assert c["fit_images"] + c["selection_images"] == c["subset"]["images"]
    assert c["generator_trained_on"].endswith(os.path.join("frac1-subset0", "gan"))


def test_resume_trains_nothing_and_other_settings_refuse(seg_experiment, monkeypatch):
    import synthseg_tf.training.gan as gan
    import synthseg_tf.training.segmentation as seg
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    trained = []
    monkeypatch.setattr(seg, "train_unet", lambda *a, **k: trained.append(a[2]))
    monkeypatch.setattr(gan, "train_gan", lambda *a, **k: trained.append(a[1]))
    run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"], fractions=(1.0,), seeds=(0,),
                                settings=ALL, patience=2, log=lambda m: None, **TINY, **FAST)
    assert trained == []
    with pytest.raises(FileExistsError, match="other settings"):
        run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"], fractions=(1.0,), seeds=(0,),
                                    settings=ALL, patience=3, log=lambda m: None, **TINY, **FAST)
    with pytest.raises(ValueError, match="unknown setting"):
        run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"] + "_y", settings=("fake",), **FAST)


def test_blocks_selection_carve_is_used_recorded_and_part_of_the_identity(seg_experiment, tmp_path):
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.data.dataset import Dataset, Sample
    from synthseg_tf.experiments import protocol as P
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    out = str(tmp_path / "blocks")
    run_segmentation_experiment(seg_experiment["spec"], out, fractions=(1.0,), seeds=(0,), settings=("real",),
                                selection_carve="blocks", log=lambda m: None, **TINY, **FAST)
    sub = _load(out, "subsets", "frac1-subset0", "subset.json")
    assert "blocks of neighbouring source ids" in sub["selection_rule"]
    ids = sub["fit"] + sub["selection"]
    whole = Dataset(spec="ids", task="segmentation", classes=ClassTable(names=["a", "b"]),
                    samples=[Sample(image=i, mask=i, source_id=i) for i in ids])
    assert P.source_ids(P.carve_selection_blocks(whole)[1]) == sub["selection"]
    assert _load(out, "experiment.json")["identity"]["selection_carve"] == "blocks"
    assert _load(out, "runs", "frac1-seed0-real", "config.json")["val_samples"] == len(sub["selection"])
    # an experiment carved by hash is not resumed with blocks, nor the other way round
    with pytest.raises(FileExistsError, match="other settings"):
        run_segmentation_experiment(seg_experiment["spec"], seg_experiment["out"], fractions=(1.0,), seeds=(0,),
                                    settings=ALL, patience=2, selection_carve="blocks", log=lambda m: None,
                                    **TINY, **FAST)
    with pytest.raises(ValueError, match="explicit selection split"):
        run_segmentation_experiment(seg_experiment["spec"], out + "_x", selection=seg_experiment["spec"],
                                    selection_carve="blocks", **FAST)


def test_synthetic_or_generator_from_outside_the_subset_is_refused(seg_experiment, tmp_path):
    from synthseg_tf.data import load
    from synthseg_tf.experiments.protocol import ProtocolError
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    cell = os.path.join(seg_experiment["out"], "subsets", "frac1-subset0")
    _, ev = load(seg_experiment["spec"]).train_val()
    leaked = ev.samples[0].source_id

    # a synthetic set one of whose samples was built from an evaluation label map
    syn = str(tmp_path / "leaky_synthetic")
    shutil.copytree(os.path.join(cell, "synthetic"), syn)
    lines = open(os.path.join(syn, "manifest.jsonl")).read().splitlines()
    first = json.loads(lines[0])
    first["source_ids"] = first["source_ids"] + [leaked]
    lines[0] = json.dumps(first)
    open(os.path.join(syn, "manifest.jsonl"), "w").write("\n".join(lines) + "\n")
    with pytest.raises(ProtocolError, match=f"outside the experiment's training subset.*{leaked}"):
        run_segmentation_experiment(seg_experiment["spec"], str(tmp_path / "e1"), synthetic=syn, fractions=(1.0,),
                                    seeds=(0,), settings=("real+synthetic",), log=lambda m: None, **FAST)

    # a generator trained on more images than the subset (here: one evaluation image)
    gen = str(tmp_path / "leaky_gan")
    shutil.copytree(os.path.join(cell, "gan"), gen)
    cfg = _load(gen, "config.json")
    cfg["train_source_ids"] = cfg["train_source_ids"] + [leaked]
    with open(os.path.join(gen, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ProtocolError, match="generator"):
        run_segmentation_experiment(seg_experiment["spec"], str(tmp_path / "e2"), generator=gen, fractions=(1.0,),
                                    seeds=(0,), settings=("real+synthetic",), log=lambda m: None, **FAST)

    # a set filtered by a quality model that trained on, or was selected on, an evaluation image,
    # or that records nothing about what it saw
    def filtered_by(name, edit):
        d = str(tmp_path / name)
        shutil.copytree(os.path.join(cell, "synthetic"), d)
        state = _load(d, "generation.json")
        edit(state)
        with open(os.path.join(d, "generation.json"), "w") as f:
            json.dump(state, f)
        return d

    for name, edit, match in [
            ("q_train", lambda s: s["quality_provenance"]["train"].append(leaked),
             f"quality model .* outside the experiment's training subset.*{leaked}"),
            ("q_sel", lambda s: s["quality_provenance"]["selection"].append(leaked),
             f"selected .* outside the experiment's selection split: {leaked}"),
            ("q_none", lambda s: s.update(quality_provenance=None, identity=dict(
                s["identity"], quality_model=str(tmp_path / "old_export"))), "records no source ids")]:
        with pytest.raises(ProtocolError, match=match):
            run_segmentation_experiment(seg_experiment["spec"], str(tmp_path / ("e_" + name)),
                                        synthetic=filtered_by(name, edit), fractions=(1.0,), seeds=(0,),
                                        settings=("real+synthetic",), log=lambda m: None, **FAST)

    # the subset's own synthetic set is accepted as --synthetic
    summary = run_segmentation_experiment(seg_experiment["spec"], str(tmp_path / "e3"),
                                          synthetic=os.path.join(cell, "synthetic"), fractions=(1.0,), seeds=(0,),
                                          settings=("real+synthetic",), log=lambda m: None, **FAST)
    assert summary["rows"][0]["setting"] == "real+synthetic"


def test_class_hardness_factors():
    from synthseg_tf.experiments.classification import class_hardness

    assert class_hardness([0.2, 0.99, None, 0.5]) == pytest.approx([0.8, 0.05, (0.8 + 0.05 + 0.5) / 3, 0.5])
    assert class_hardness([None, None]) == [1.0, 1.0]


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
    assert d["verdict"] == "helps" and d["verdicts"] == {"a": "no evidence", "b": "no evidence"}


def test_classification_experiment_follows_the_protocol(tmp_path):
    from synthseg_tf.experiments.classification import run_classification_experiment

    spec = write_classfolders(str(tmp_path / "cf"))
    out = str(tmp_path / "exp")
    summary = run_classification_experiment(
        spec, out, seeds=2, subset_seed=0,
        settings=("real", "real+augment", "real+synthetic", "real+pretrain", "Real+Synthetic@0.50",
                  "real+synthetic+finetune"),
        image_size=32,
        batch_size=8, epochs=1, patience=1, split_fractions=(0.6, 0.2, 0.2), log=lambda m: None, run_eagerly=True,
        gan={"steps": 2, "batch_size": 4, "base_filters": 8, "class_loss_weight": 0.1},
        generation={"n": 6, "samples_per_shard": 6, "batch_size": 6, "min_confidence": "calibrated:1e-6",
                    "class_hardness": True, "borrow_maps": 0.5}, synthetic_soft_labels=0.5, **SMALL)
    results = _load(out, "results.json")
    assert len(results["runs"]) == 12 and summary["primary_metric"] == "macro_f1"
    cell = os.path.join(out, "subsets", "frac1-subset0")
    fit = set(_load(cell, "subset.json")["fit"])
    assert set(_load(cell, "gan", "config.json")["train_source_ids"]) == fit
    # the GAN's class loss scores its images with the cell's filter classifier: the subset's, selected on val
    gan_cfg = _load(cell, "gan", "config.json")
    assert (gan_cfg["class_loss_weight"], gan_cfg["class_loss_model"]) == (0.1, os.path.join(cell, "quality", "model"))
    assert set(_load(cell, "quality", "splits.json")["train"]) == fit
    assert _manifest_ids(os.path.join(cell, "synthetic")) <= fit
    # the calibrated filter: per-class thresholds from the quality classifier on the val split only
    thr = _load(cell, "quality", "thresholds.json")
    val_ids = set(_load(out, "runs", "frac1-seed0-real", "splits.json")["val"])
    assert sum(thr["count"]) == len(val_ids) and thr["thresholds"] == [1e-6] * 3 and thr["cap"] == 1e-6
    gen_id = _load(cell, "synthetic", "generation.json")["identity"]
    assert gen_id["class_min_quality"] == thr["thresholds"] and gen_id["quality_model"].startswith(cell)
    # the filter recorded what it saw (checked when the set is used), and never scored the test split
    assert _load(cell, "synthetic", "generation.json")["quality_provenance"] == {"train": sorted(fit),
                                                                                "selection": sorted(val_ids)}
    assert "test" not in _load(cell, "quality", "metrics.json")
    # --class-hardness: the rare draws scaled by 1 - the val median of each class (val only, like the thresholds)
    from synthseg_tf.experiments.classification import class_hardness

    assert gen_id["class_weights"] == pytest.approx(class_hardness(thr["median"]))
    assert gen_id["borrow_maps"] == 0.5  # pose borrowing: donors are subset images too (checked above)
    for r in results["runs"]:
        assert set(r["metrics"]) == {"accuracy", "macro_f1", "weighted_f1", "rare_macro_f1"} and r["test_samples"] == 6
        cfg = _load(out, r["run"], "config.json")
        splits = _load(out, r["run"], "splits.json")
        assert set(splits["train"]) == fit and not set(splits["test"]) & (fit | set(splits["val"]))
        assert cfg["augment"] == ("strong" if r["setting"] == "real+augment" else True)
        # real+synthetic@R mixes the same synthetic set at R; plain real+synthetic appends it (no ratio given)
        assert cfg["synthetic_ratio"] == {"real+synthetic@0.5": 0.5, "real+synthetic": None}.get(r["setting"],
                                                                                                  cfg["synthetic_ratio"])
        if r["setting"] == "real+synthetic@0.5":
            assert r["run"] == os.path.join("runs", "frac1-seed%d-real_synthetic@0.5" % r["seed"])
            assert cfg["synthetic"].endswith(os.path.join("frac1-subset0", "synthetic"))
    row = next(r for r in summary["rows"] if r["setting"] == "real+synthetic")
    acc = [r["metrics"]["accuracy"] for r in results["runs"] if r["setting"] == "real+synthetic"]
    assert row["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert row["delta_vs_real"]["n_pairs"] == 2 and set(row["delta_vs_real"]["per_class"]) == {"blue", "green", "red"}
    for r in results["runs"]:  # the optimiser steps of each run: epochs x its own steps per epoch
        assert r["steps_run"] == r["epochs_run"] * _load(out, r["run"], "config.json")["steps_per_epoch"] > 0
    assert row["budget"]["steps_run"]["n"] == 2
    assert "delta_vs_real+augment" in row and summary["rare_classes"]["names"] == ["blue", "green", "red"]
    # real+pretrain: a classifier trained on the cell's synthetic images alone, then the subset from its weights
    for seed in (0, 1):
        pre = os.path.join(cell, f"pretrain-seed{seed}")
        pre_cfg = _load(pre, "config.json")
        assert os.path.isfile(os.path.join(pre, "weights.h5")) and pre_cfg["synthetic_ratio"] == 1.0
        assert "test" not in _load(pre, "metrics.json")  # a step, not a reported run
        assert pre_cfg["synthetic"].endswith(os.path.join("frac1-subset0", "synthetic"))
        cfg = _load(out, "runs", f"frac1-seed{seed}-real_pretrain", "config.json")
        assert cfg["init_weights"] == os.path.join(pre, "weights.h5") and cfg["synthetic"] is None
        assert cfg["experiment"]["pretraining"]["run"] == pre and cfg["augment"] is True
    # soft labels: every run that reads synthetic images learns from the cell's own filter classifier
    teacher = os.path.join(cell, "quality", "model")  # trained on the subset alone, selected on val
    for r in results["runs"]:
        soft = _load(out, r["run"], "config.json")["synthetic_soft_labels"]
        if r["setting"] in ("real", "real+augment", "real+pretrain", "real+synthetic+finetune"):  # no synthetic image
            assert soft is None
        else:
            assert soft["alpha"] == 0.5 and soft["teacher"] == teacher
    for seed in (0, 1):
        assert _load(cell, f"pretrain-seed{seed}", "config.json")["synthetic_soft_labels"]["teacher"] == teacher
    assert _load(out, "experiment.json")["identity"]["train_options"]["synthetic_soft_labels"] == 0.5
    # the batch-norm rule is part of the identity even when left at its default (older folders used 0.99)
    assert _load(out, "experiment.json")["identity"]["train_options"]["bn_momentum"] == "auto"
    # real+synthetic+finetune: the real+synthetic run of the same seed kept its weights; the real
    # images alone then fine-tune them at a tenth of the real recipe's learning rate
    from synthseg_tf.experiments.common import pretraining_run
    from synthseg_tf.experiments.protocol import ProtocolError

    for seed in (0, 1):
        mixed = os.path.join(out, "runs", f"frac1-seed{seed}-real_synthetic")
        assert os.path.isfile(os.path.join(mixed, "weights.h5"))
        real_cfg = _load(out, "runs", f"frac1-seed{seed}-real", "config.json")
        cfg = _load(out, "runs", f"frac1-seed{seed}-real_synthetic_finetune", "config.json")
        assert cfg["init_weights"] == os.path.join(mixed, "weights.h5") and cfg["synthetic"] is None
        assert cfg["learning_rate"] == pytest.approx(0.1 * real_cfg["learning_rate"]) and cfg["augment"] is True
        assert cfg["experiment"]["fine_tuned_from"]["run"] == mixed and set(cfg["experiment"]["real_subset"]) == fit
    assert not any(n.startswith("mix-seed") for n in os.listdir(cell))  # reused, not retrained
    syn = _load(out, "runs", "frac1-seed0-real_synthetic", "config.json")["synthetic"]
    with pytest.raises(ProtocolError, match="first-stage run .* at ratio 0.3"):  # another recipe is refused
        pretraining_run([os.path.join(out, "runs", "frac1-seed0-real_synthetic")], syn, sorted(fit),
                        lambda run: None, ratio=0.3)
    ft_row = next(r for r in summary["rows"] if r["setting"] == "real+synthetic+finetune")
    assert ft_row["delta_vs_real"]["n_pairs"] == 2 and "delta_vs_real+synthetic" in ft_row
    pre_row = next(r for r in summary["rows"] if r["setting"] == "real+pretrain")
    assert pre_row["delta_vs_real"]["n_pairs"] == 2 and "delta_vs_real+synthetic" in pre_row
    # the recipe a user is told to use is chosen on val macro F1, never on the test split
    sel = {(r["seed"], r["setting"]): r["selection_macro_f1"] for r in results["runs"]}
    for c in summary["selected_recipe"]["chosen"]:
        assert sel[(c["seed"], c["setting"])] == max(
            sel[(c["seed"], k)] for k in ("real+synthetic", "real+synthetic@0.5", "real+pretrain",
                                          "real+synthetic+finetune"))
    assert any(r["setting"] == "selected-recipe" for r in summary["rows"])
    (proto,) = summary["protocol"]["cells"]  # one subset (subset_seed=0) for both seeds: one cell
    assert proto["subset"]["images"] == len(fit) and os.path.join(cell, "gan") in proto["generator_trained_on"]


def test_classifier_init_weights_load_exactly_and_a_mismatch_names_the_file(tmp_path):
    from synthseg_tf.training.classification import train_classifier

    spec = write_classfolders(str(tmp_path / "cf"))
    kw = dict(image_size=32, batch_size=8, epochs=1, patience=1, fractions=(0.6, 0.2, 0.2), export=False,
              verbose=0, run_eagerly=True, **SMALL)
    first = train_classifier(spec, str(tmp_path / "a"), save_weights=True, **kw)
    w = os.path.join(first["out_dir"], "weights.h5")
    second = train_classifier(spec, str(tmp_path / "b"), save_weights=True, init_weights=w, learning_rate=0.0,
                              **dict(kw, lr_schedule="constant"))
    assert second["config"]["init_weights"] == w
    assert_same_kernels(w, os.path.join(second["out_dir"], "weights.h5"))
    with pytest.raises(ValueError, match=r"other image_size"):
        train_classifier(spec, str(tmp_path / "c"), init_weights=w, **dict(kw, image_size=48))


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
        return orig(*a, run_eagerly=True, **dict(k, gan=TINY["gan"], generation=TINY["generation"],
                                                  copypaste=TINY["copypaste"]))

    monkeypatch.setattr(exp, "run_segmentation_experiment", spy)
    args = p.parse_args(["experiment", "segmentation", "--data", seg_experiment["spec"], "--fractions", "1",
                         "--seeds", "0,", "--patience", "2", "--image-size", "32", "--batch-size", "4", "--steps",
                         "2", "--backbone", "resnet18", "--settings", ",".join(ALL), "--out", seg_experiment["out"]])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert calls and calls[0]["seeds"] == [0] and calls[0]["fractions"] == [1.0] and calls[0]["evaluation"] is None
    assert "reusing" in text and "experiment folder:" in text and "report:" in text
    assert "verdict, fraction 1, real+synthetic vs real+augment" in text and "protocol: evaluated on" in text
    assert "training U-Net" not in text
    assert os.path.isfile(os.path.join(seg_experiment["out"], "report", "report.html"))
    # without --settings: the baselines, the GAN settings and the recipe measured to help
    args = p.parse_args(["experiment", "segmentation", "--data", "x", "--out", "y"])
    assert args.settings == list(exp.DEFAULT_SETTINGS) and "real+pretrain+copypaste" in args.settings


def test_real_plus_pretrain_fine_tunes_from_a_synthetic_only_run_inside_the_subset(seg_experiment, tmp_path):
    """``real+pretrain`` (opt-in) pretrains on the cell's synthetic set, then fine-tunes on the fit
    images from those weights (``real+pretrain+mix``: on the fit images plus the synthetic set;
    ``real+pretrain+copypaste``: plus the copy-paste set); the pretraining run is checked against
    the cell like every artifact."""
    from synthseg_tf.experiments.protocol import ProtocolError
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    out = str(tmp_path / "exp")
    shutil.copytree(seg_experiment["out"], out)
    logs = []
    summary = run_segmentation_experiment(seg_experiment["spec"], out, fractions=(1.0,), seeds=(0,),
                                          settings=("real", "real+pretrain", "real+pretrain+mix",
                                                    "real+pretrain+copypaste"), patience=2,
                                          log=logs.append, **TINY, **FAST)
    cell = os.path.join(out, "subsets", "frac1-subset0")
    fit = set(_load(cell, "subset.json")["fit"])
    pre = os.path.join(cell, "pretrain-seed0")  # the earlier synthetic run kept no weights: a pretraining run
    assert os.path.isfile(os.path.join(pre, "weights.h5"))
    pre_cfg = _load(pre, "config.json")
    assert pre_cfg["synthetic_ratio"] == 1.0 and pre_cfg["synthetic"].endswith(os.path.join("frac1-subset0", "synthetic"))
    assert set(pre_cfg["experiment"]["fit"]) == fit
    cfg = _load(out, "runs", "frac1-seed0-real_pretrain", "config.json")
    assert cfg["init_weights"] == os.path.join(pre, "weights.h5") and cfg["synthetic"] is None
    assert set(cfg["experiment"]["real_subset"]) == fit
    assert cfg["experiment"]["pretraining"]["steps_run"] is not None
    mix = _load(out, "runs", "frac1-seed0-real_pretrain_mix", "config.json")  # the same pretraining, mixed fine-tune
    assert mix["init_weights"] == cfg["init_weights"] and mix["synthetic"] == pre_cfg["synthetic"]
    assert mix["synthetic_ratio"] == 0.5 and mix["augment"] == cfg["augment"]
    assert set(mix["experiment"]["real_subset"]) == fit
    cp = _load(out, "runs", "frac1-seed0-real_pretrain_copypaste", "config.json")  # ... a copy-paste fine-tune
    assert cp["init_weights"] == cfg["init_weights"] and cp["synthetic"].endswith(os.path.join("frac1-subset0", "copypaste"))
    assert cp["synthetic_ratio"] == 0.5 and cp["augment"] == cfg["augment"]
    assert sum("pretraining a U-Net" in m for m in logs) == 1  # trained once, reused by the three recipes
    rows = {r["setting"]: r for r in summary["rows"]}
    assert {"delta_vs_real", "delta_vs_real+synthetic", "delta_vs_real+pretrain"} <= set(rows["real+pretrain+mix"])
    assert {"delta_vs_real", "delta_vs_real+copypaste", "delta_vs_real+pretrain"} <= set(rows["real+pretrain+copypaste"])
    assert rows["real+pretrain"]["delta_vs_real"]["n_pairs"] == 1
    assert "delta_vs_real+synthetic" in rows["real+pretrain"]
    assert any("pretraining a U-Net" in m for m in logs)
    # the recipe a user is told to use is chosen on the selection images, never on the evaluation split
    (chosen,) = summary["selected_recipe"]["chosen"]
    picked = rows[chosen["setting"]]
    assert rows["selected-recipe"]["metrics"] == picked["metrics"]
    sel_of = {r["setting"]: r["selection_mean_iou"] for r in _load(out, "results.json")["runs"]}
    assert all(sel_of[chosen["setting"]] >= sel_of[k]
               for k in ("real+synthetic", "real+pretrain", "real+pretrain+mix", "real+pretrain+copypaste"))

    # a pretraining run made on other images is refused, not silently reused
    shutil.rmtree(os.path.join(out, "runs", "frac1-seed0-real_pretrain"))
    c = _load(pre, "config.json")
    c["experiment"]["fit"] = sorted(fit)[:-1]
    with open(os.path.join(pre, "config.json"), "w") as f:
        json.dump(c, f)
    with pytest.raises(ProtocolError, match="pretraining run"):
        run_segmentation_experiment(seg_experiment["spec"], out, fractions=(1.0,), seeds=(0,),
                                    settings=("real+pretrain",), patience=2, log=lambda m: None, **TINY, **FAST)


def test_init_weights_start_training_from_a_run_and_mismatches_name_the_file(tmp_path):
    from synthseg_tf.training.segmentation import train_unet

    spec = write_scenes(str(tmp_path / "real"), n=8)
    first = train_unet(spec, None, str(tmp_path / "a"), export=False, save_weights=True, verbose=0,
                       **dict(FAST, steps=1))
    w = os.path.join(first["out_dir"], "weights.h5")
    assert os.path.isfile(w) and not os.path.exists(os.path.join(first["out_dir"], "model"))
    # learning rate 0: the fine-tuned run's convolution kernels are exactly the loaded ones
    second = train_unet(spec, None, str(tmp_path / "b"), export=False, save_weights=True, verbose=0,
                        init_weights=first["out_dir"], learning_rate=0.0, **dict(FAST, steps=1))
    assert second["config"]["init_weights"] == first["out_dir"]
    assert_same_kernels(w, os.path.join(second["out_dir"], "weights.h5"))
    with pytest.raises(ValueError, match=r"other backbone \(resnet18 vs resnet34\)"):  # its config.json says so
        train_unet(spec, None, str(tmp_path / "c"), export=False, verbose=0, init_weights=w,
                   **dict(FAST, steps=1, backbone="resnet34"))
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(w, lone / "weights.h5")  # weights without their run's config: the load itself must refuse
    with pytest.raises(ValueError, match="does not fit this U-Net"):
        train_unet(spec, None, str(tmp_path / "c2"), export=False, verbose=0, init_weights=str(lone),
                   **dict(FAST, steps=1, backbone="resnet34"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_unet(spec, None, str(tmp_path / "d"), export=False, verbose=0,
                   init_weights=str(tmp_path / "missing.h5"), **dict(FAST, steps=1))


def test_selected_recipe_reads_only_the_selection_figures():
    from synthseg_tf.experiments.segmentation import selected_recipe_runs

    def rec(setting, seed, sel, ev):
        return {"fraction": 0.25, "seed": seed, "setting": setting, "selection_mean_iou": sel,
                "metrics": {"mean_iou": ev}}

    runs = [rec("real", 0, 0.9, 0.9), rec("real+synthetic", 0, 0.40, 0.10), rec("real+pretrain", 0, 0.30, 0.99),
            rec("real+synthetic", 1, 0.30, 0.50), rec("real+pretrain", 1, 0.30, 0.60),  # tie: the first recipe
            rec("real+pretrain", 2, 0.50, 0.50),  # seed 2 has one recipe only: no choice is made
            rec("real+synthetic", 3, 0.30, 0.50), rec("real+pretrain", 3, 0.35, 0.10),
            rec("real+pretrain+mix", 3, 0.40, 0.20)]  # three recipes: the best selection figure wins
    got = selected_recipe_runs(runs)
    assert [(r["seed"], r["chosen"], r["metrics"]["mean_iou"]) for r in got] == [
        (0, "real+synthetic", 0.10), (1, "real+synthetic", 0.50), (3, "real+pretrain+mix", 0.20)]
    assert got[-1]["candidates"] == ["real+synthetic", "real+pretrain", "real+pretrain+mix"]
    assert all(r["setting"] == "selected-recipe" for r in got)


def test_ratio_settings_are_validated_and_the_ratio_is_chosen_on_val():
    from synthseg_tf.experiments.classification import CLASSIFICATION_SETTINGS, RATIO_SETTINGS, _cls_summary
    from synthseg_tf.experiments.common import normalize_settings

    assert normalize_settings(["real", " real+synthetic@.10", "real+synthetic@0.1", "real+synthetic@0.5"],
                              CLASSIFICATION_SETTINGS, RATIO_SETTINGS) == [
        "real", "real+synthetic@0.1", "real+synthetic@0.5"]  # the same ratio written twice is one setting
    for bad in ("real+synthetic@0", "real+synthetic@1", "real+synthetic@x", "real@0.5", "synthetic@0.5"):
        with pytest.raises(ValueError, match="ratio|unknown setting"):
            normalize_settings([bad], CLASSIFICATION_SETTINGS, RATIO_SETTINGS)
    with pytest.raises(ValueError, match="unknown setting"):  # the segmentation experiment takes no ratio
        normalize_settings(["real+synthetic@0.5"], CLASSIFICATION_SETTINGS)

    def rec(setting, seed, sel, ev):
        return {"fraction": 0.25, "seed": seed, "setting": setting, "selection_macro_f1": sel,
                "metrics": {m: ev for m in ("accuracy", "macro_f1", "weighted_f1", "rare_macro_f1")},
                "per_class": {"f1": {"a": ev, "b": ev}, "recall": {"a": ev, "b": ev}}}

    runs = [rec("real", 0, 0.9, 0.5), rec("real+synthetic", 0, 0.4, 0.6), rec("real+synthetic@0.5", 0, 0.6, 0.3),
            rec("real+synthetic@0.1", 0, 0.5, 0.9),
            rec("real", 1, 0.9, 0.5), rec("real+synthetic", 1, 0.7, 0.6), rec("real+synthetic@0.5", 1, 0.6, 0.3),
            rec("real+synthetic@0.1", 1, 0.5, 0.9)]
    summary = _cls_summary({}, runs, ["a", "b"])
    assert summary["settings"] == ["real", "real+synthetic", "real+synthetic@0.1", "real+synthetic@0.5",
                                   "selected-recipe"]
    # val (selection_macro_f1) picks @0.5 in seed 0 and the plain recipe in seed 1; test figures never choose
    assert [(c["seed"], c["setting"]) for c in summary["selected_recipe"]["chosen"]] == [
        (0, "real+synthetic@0.5"), (1, "real+synthetic")]
    rows = {r["setting"]: r for r in summary["rows"]}
    assert rows["selected-recipe"]["metrics"]["macro_f1"]["values"] == pytest.approx([0.3, 0.6])
    assert rows["real+synthetic@0.1"]["delta_vs_real"]["metrics"]["macro_f1"]["mean"] == pytest.approx(0.4)
    assert rows["real+synthetic@0.1"]["delta_vs_real+synthetic"]["metrics"]["macro_f1"]["mean"] == pytest.approx(0.3)


def test_cli_experiment_classification_passes_ratio_settings_and_real_passes(monkeypatch):
    import synthseg_tf.experiments.classification as exp

    p, calls = cli_spy(monkeypatch, exp, "run_classification_experiment")
    base = ["experiment", "classification", "--data", "demo-classes", "--synthetic-ratio", "0.25",
            "--settings", "real,real+synthetic,real+synthetic@0.1", "--out", "x"]
    for extra, passes, soft, bn in (([], None, None, None), (["--real-passes"], True, None, None),
                                    (["--synthetic-soft-labels", "0.5"], None, 0.5, None),
                                    (["--synthetic-bn", "shared"], None, None, None),
                                    (["--synthetic-bn", "separate"], None, None, "separate"),
                                    (["--synthetic-bn", "auxiliary"], None, None, "auxiliary"),
                                    (["--synthetic-batches", "fixed"], None, None, None)):
        args = p.parse_args(base + extra)
        with pytest.raises(Stop):
            args.func(args)
        k = calls[-1]
        # absent unless asked for, so the identity of earlier experiment folders still matches
        assert k.get("real_passes") is passes and k["synthetic_ratio"] == 0.25
        assert k.get("synthetic_soft_labels") == soft and k.get("synthetic_bn") == bn
        assert k.get("synthetic_batches") == ("fixed" if "--synthetic-batches" in extra else None)
        assert list(k["settings"]) == ["real", "real+synthetic", "real+synthetic@0.1"]
        assert k.get("gan") is None  # the GAN's defaults, so earlier folders' identities still match
    args = p.parse_args(base + ["--gan-seed", "3", "--gan-steps", "9"])  # another GAN draw on the same subset
    with pytest.raises(Stop):
        args.func(args)
    assert calls[-1]["gan"] == {"seed": 3, "steps": 9}


def test_cli_experiment_gan_quality_options(monkeypatch, capsys):
    """--gan-diffaugment (canonical, 'none' = off), --gan-class-loss, --gan-mismatch, --gan-aux-class
    and the other --gan-* options reach the GAN options and --borrow-maps, --reference-swap the generation options; a
    bad policy fails before any run; a segmentation experiment refuses the class-conditional options,
    and a classification experiment the auxiliary classifier without a projection discriminator."""
    import synthseg_tf.experiments.classification as exp
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment

    run_classification_experiment = exp.run_classification_experiment
    p, calls = cli_spy(monkeypatch, exp, "run_classification_experiment")
    base = ["experiment", "classification", "--data", "demo-classes", "--out", "x"]
    for extra, gan in ((["--gan-diffaugment", "Translation, cutout"], {"diffaugment": "translation,cutout"}),
                       (["--gan-diffaugment", "none", "--gan-class-loss", "0.5", "--gan-mismatch", "1"],
                        {"diffaugment": None, "class_loss_weight": 0.5, "mismatch_weight": 1.0}),
                       (["--gan-d-label-conditioning", "projection"], {"d_label_conditioning": "projection"}),
                       (["--gan-d-label-conditioning", "input", "--gan-seed", "1"], {"seed": 1}),
                       (["--gan-conditioning", "color-edges"], {"conditioning": "color-edges"}),
                       (["--gan-generator-arch", "spade"], {"generator_arch": "spade"}),
                       (["--gan-generator-arch", "unet", "--gan-seed", "2"], {"seed": 2}),
                       (["--gan-d-scales", "2"], {"d_scales": 2}), (["--gan-d-scales", "1"], None),
                       (["--gan-style-dim", "16"], {"style_dim": 16}), (["--gan-style-dim", "0"], None),
                       (["--gan-l1-weight", "10", "--gan-feature-matching", "10"],
                        {"l1_weight": 10.0, "feature_matching_weight": 10.0}),
                       (["--gan-l1-weight", "100", "--gan-feature-matching", "0"], None),
                       (["--gan-aux-class", "1", "--gan-d-label-conditioning", "projection"],
                        {"aux_class_weight": 1.0, "d_label_conditioning": "projection"})):
        args = p.parse_args(base + extra)
        with pytest.raises(Stop):
            args.func(args)
        assert calls[-1].get("gan") == gan
    args = p.parse_args(base + ["--borrow-maps", "0.5"])
    with pytest.raises(Stop):
        args.func(args)
    assert calls[-1]["generation"] == {"borrow_maps": 0.5}
    for bad in (["--borrow-maps", "2"], ["--gan-l1-weight", "-1"], ["--gan-feature-matching", "nan"]):
        with pytest.raises(SystemExit):
            p.parse_args(base + bad)
    args = p.parse_args(base + ["--gan-style-dim", "8", "--reference-swap", "1"])
    with pytest.raises(Stop):
        args.func(args)
    assert calls[-1]["generation"] == {"reference_swap": 1.0} and calls[-1]["gan"] == {"style_dim": 8}
    args = p.parse_args(base + ["--gan-diffaugment", "colour"])
    n = len(calls)
    with pytest.raises(CliError, match="--gan-diffaugment: unknown op"):
        args.func(args)
    for bad, match in ((["--gan-style-dim", "-1"], "whole number"),
                       (["--gan-style-dim", "8", "--gan-generator-arch", "spade"], "U-Net generator")):
        args = p.parse_args(base + bad)
        with pytest.raises(CliError, match=f"--gan-style-dim: .*{match}"):
            args.func(args)
    args = p.parse_args(base + ["--reference-swap", "0.5"])  # no reference image to swap
    with pytest.raises(CliError, match="--reference-swap needs .*--gan-style-dim"):
        args.func(args)
    assert len(calls) == n
    with pytest.raises(ValueError, match="class loss is for classification"):
        run_segmentation_experiment("demo", "x", gan={"class_loss_weight": 1.0})
    with pytest.raises(ValueError, match="matching-aware discriminator is for classification"):
        run_segmentation_experiment("demo", "x", gan={"mismatch_weight": 1.0})
    with pytest.raises(ValueError, match="d_label_conditioning is for classification"):
        run_segmentation_experiment("demo", "x", gan={"d_label_conditioning": "projection"})
    with pytest.raises(ValueError, match="conditioned on the label maps"):
        run_segmentation_experiment("demo", "x", gan={"conditioning": "color-edges"})
    with pytest.raises(ValueError, match="auxiliary classifier is for classification"):
        run_segmentation_experiment("demo", "x", gan={"aux_class_weight": 1.0})
    with pytest.raises(ValueError, match="needs d_label_conditioning 'projection'"):
        run_classification_experiment("demo-classes", "x", gan={"aux_class_weight": 1.0})
