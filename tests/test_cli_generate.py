"""`synthseg generate` / `synthseg gan evaluate`: leak-free map sources, FreeMask filtering, the classifier
filter for class-conditional generators, the FCN-score; through the API and the CLI (in-process)."""
import json
import os

import numpy as np
import pytest

from synthseg_tf.cli import main
from synthseg_tf.data import ClassTable
from synthseg_tf.generation.pipeline import GenerationConfig, MapSource, manifest_source_ids, plan_map_source

from conftest import save, scene
from test_filtering import export_known_segmenter

TRAIN = [f"t{i}" for i in range(6)]
VAL = [f"v{i}" for i in range(4)]
GAN_IDS = ["t0", "t1", "t2", "t3"]  # the generator trained on a subset of the train split


def _save_generator(run, config, num_classes=3, num_labels=None, table=None, style_dim=0):
    import tensorflow as tf

    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    tf.keras.utils.set_random_seed(0)
    gen = build_generator(num_classes, (32, 32), base_filters=8, norm="instance", num_labels=num_labels,
                          style_dim=style_dim)
    save_generator(gen, str(run / "generator"))
    (run / "config.json").write_text(json.dumps({"num_classes": num_classes, "image_size": [32, 32],
                                                 "num_labels": num_labels, "style_dim": style_dim, **config}))
    (table or ClassTable(names=["a", "b", "c"])).save(str(run / "classes.json"))
    return str(run)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A CamVid-layout set with train/val splits (3 classes, 32x32) and two untrained generators on it:
    one recording train_source_ids (a subset of train), one from before that record existed."""
    root = tmp_path_factory.mktemp("world")
    data = root / "camvid"
    rng = np.random.default_rng(0)
    for split, names in (("train", TRAIN), ("val", VAL)):
        for name in names:
            img, m = scene(rng, h=32, w=32, values=(0, 1, 2))
            save(data / split / f"{name}.png", img)
            save(data / f"{split}annot" / f"{name}.png", m)
    ClassTable(names=["a", "b", "c"]).save(str(data / "classes.json"))
    spec = f"camvid:{data}"
    gen = _save_generator(root / "gen", {"data": spec, "conditioning": "labelmap", "train_source_ids": GAN_IDS})
    old = _save_generator(root / "old", {"data": spec, "conditioning": "labelmap"})
    seg = export_known_segmenter(root / "segrun" / "model")
    support = np.array([500, 300, 200])
    weak = np.zeros((3, 3), np.int64)
    weak[:, 0] = support  # the majority-class predictor: mIoU 0.5/3
    (root / "segrun" / "metrics.json").write_text(json.dumps({"val": {"confusion_matrix": weak.tolist()}}))
    return {"root": root, "spec": spec, "gen": gen, "old": old, "seg": seg}


def _gen_config(gen):
    with open(os.path.join(gen, "config.json")) as f:
        return json.load(f)


def _manifest(out):
    with open(os.path.join(out, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------ leak-free map sources
def test_sampled_maps_come_only_from_the_generator_training_samples(world, tmp_path):
    cfg = GenerationConfig(generator=world["gen"], out=str(tmp_path / "x"), n=1, seed=1)
    gc = _gen_config(world["gen"])
    logs = []
    plan = plan_map_source(cfg, gc, log=logs.append)
    assert plan["how"] == "train_source_ids" and sorted(plan["source_ids"]) == GAN_IDS and not logs
    src = MapSource(cfg, gc, 3, plan)
    donors = 0
    for i in range(80):
        m, label, prov = src.get(i)
        assert label is None and m.shape == (32, 32)
        assert set(prov["source_ids"]) <= set(GAN_IDS), prov["source_ids"]
        info = prov["sampler"]
        assert len(prov["source_ids"]) == len(info["source_maps"])
        for op in info["ops"]:  # every cut-mix partner and copy-paste donor is recorded
            used = [op["map"]] if op["op"] == "mix" else [p["map"] for p in op.get("pastes", [])]
            for j in used:
                assert src.source_ids[j] in prov["source_ids"]
                donors += src.source_ids[j] != src.source_ids[info["base_map"]]
    assert donors > 0  # some samples really were built from several maps

    # A generator without train_source_ids: only the train split, with a warning.
    logs = []
    plan = plan_map_source(GenerationConfig(generator=world["old"], out="x", n=1), _gen_config(world["old"]),
                           log=logs.append)
    assert plan["how"] == "train_split" and sorted(plan["source_ids"]) == TRAIN
    assert len(logs) == 1 and "train_source_ids" in logs[0] and "train split" in logs[0]
    old_src = MapSource(GenerationConfig(generator=world["old"], out="x", n=1), _gen_config(world["old"]), 3, plan)
    seen = {s for i in range(80) for s in old_src.get(i)[2]["source_ids"]}
    assert seen <= set(TRAIN) and not seen & set(VAL)

    # An explicit SPEC is used exactly as named (here: every split).
    spec_cfg = GenerationConfig(generator=world["gen"], out="x", n=1, masks="sample:" + world["spec"])
    plan = plan_map_source(spec_cfg, gc)
    assert plan["how"] == "spec" and plan["source_ids"] is None
    assert sorted(MapSource(spec_cfg, gc, 3, plan).source_ids) == sorted(TRAIN + VAL)


def test_missing_or_ambiguous_training_ids_are_explained(world, tmp_path):
    gc = dict(_gen_config(world["gen"]), train_source_ids=["nope1", "nope2"])
    with pytest.raises(ValueError, match="none of its 2 training source ids"):
        plan_map_source(GenerationConfig(generator=world["gen"], out="x", n=1), gc)
    gc = dict(_gen_config(world["gen"]), train_source_ids=["t0", "gone"])
    logs = []
    plan = plan_map_source(GenerationConfig(generator=world["gen"], out="x", n=1), gc, log=logs.append)
    assert plan["source_ids"] == ["t0"] and "1 of the generator's 2" in logs[0]


# ------------------------------------------------------------------------ CLI: quality check, FreeMask
def test_cli_generate_quality_check_pixel_filter_and_hardness(world, tmp_path, capsys):
    from synthseg_tf.data import load
    from synthseg_tf.data.io import read_image, read_mask_raw
    from synthseg_tf.generation.filtering import (
        hardness_weights,
        map_hardness,
        pixel_losses,
        real_loss_stats,
        void_hard_pixels,
    )
    from synthseg_tf.models.unet import load_segmenter

    out = tmp_path / "g"
    args = ["generate", "--generator", world["gen"], "--out", str(out), "--n", "6", "--samples-per-shard", "4",
            "--batch-size", "3", "--seed", "2", "--quality-model", world["seg"], "--pixel-filter", "0.9",
            "--hardness"]
    assert main(args) == 1  # the quality model is no better than the majority class
    err = capsys.readouterr().err
    assert "not clearly better than always predicting class 0" in err and "--allow-weak-quality-model" in err
    assert not out.exists()

    assert main(args + ["--allow-weak-quality-model"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[0]) == {"kept": 6, "candidates": 6, "rejected": 0}
    assert "kept because of --allow-weak-quality-model" in captured.err
    entries = _manifest(out)
    assert [e["index"] for e in entries] == list(range(6))
    assert manifest_source_ids(str(out)) <= set(GAN_IDS)
    state = json.loads((out / "generation.json").read_text())
    assert state["identity"]["pixel_filter"] == 0.9 and state["identity"]["hardness"] is True
    assert state["identity"]["map_sources"]["how"] == "train_source_ids"
    assert state["quality_check"]["passed"] is False
    assert state["quality_provenance"] is None  # an export that records no source ids: an experiment refuses it

    # loss_stats.json: the segmenter's losses on exactly the generator's real training pairs.
    stats = json.loads((out / "loss_stats.json").read_text())
    assert stats["source_ids"] == GAN_IDS
    ds = load(world["spec"])
    ds = ds.select([i for i, s in enumerate(ds.samples) if s.source_id in GAN_IDS])
    seg = load_segmenter(world["seg"])
    assert np.allclose(stats["class_mean_loss"], real_loss_stats(seg, ds, (32, 32))["class_mean_loss"])

    # The same maps again: base maps drawn with the hardness weights, then pixels voided where loss > 0.9 x mean
    # (a margin under 1 so that this untrained world's near-uniform losses still void some pixels).
    gc = _gen_config(world["gen"])
    cfg = GenerationConfig(generator=world["gen"], out=str(out), n=6, seed=2)
    plan = dict(plan_map_source(cfg, gc), class_mean_loss=stats["class_mean_loss"])
    src = MapSource(cfg, gc, 3, plan)
    expected_w = hardness_weights([map_hardness(m, stats["class_mean_loss"]) for m in src.maps])
    assert np.allclose(src.map_weights, expected_w) and not np.allclose(expected_w, expected_w[0])
    voided_any = 0
    for e in entries:
        original = src.get(e["index"])[0]
        image = read_image(os.path.join(out, e["image"]))[0]
        stored = read_mask_raw(os.path.join(out, e["mask"]))[0]
        probs = seg.predict(image[None].astype(np.float32) / 255.0)["probabilities"]
        want, frac = void_hard_pixels(original[None], pixel_losses(probs, original[None]),
                                      stats["class_mean_loss"], 0.9)
        assert np.array_equal(stored, want[0])
        assert e["voided_fraction"] == pytest.approx(frac[0])
        voided_any += int((stored == 255).any())
    assert voided_any > 0  # the filter did something on these images

    # Resume finds it complete; other filter settings are refused.
    assert main(args + ["--allow-weak-quality-model"]) == 0
    assert "already complete" in capsys.readouterr().err
    other = [a if a != "0.9" else "1.5" for a in args] + ["--allow-weak-quality-model"]
    assert main(other) == 3  # output conflict (synthseg_tf.errors.EXIT_CONFLICT)
    assert "other settings (pixel_filter)" in capsys.readouterr().err
    assert main(["generate", "--generator", world["gen"], "--out", str(tmp_path / "y"), "--n", "2",
                 "--pixel-filter", "1.25"]) == 1
    assert "--pixel-filter needs --quality-model" in capsys.readouterr().err


# ------------------------------------------------------------------------ class-conditional: classifier filter
@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    """Class folders with 4/2/1 images, an untrained class-conditional generator and classifier."""
    from synthseg_tf.data.conditioning import EDGE_CLASSES, EMPTY_CLASSES
    from synthseg_tf.models.classifier import build_classifier, export_classifier

    root = tmp_path_factory.mktemp("cond")
    rng = np.random.default_rng(1)
    ids = []
    for c, n in (("cat", 4), ("dog", 2), ("fox", 1)):
        for i in range(n):
            save(root / "cf" / c / f"{c}{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
            ids.append(f"{c}/{c}{i}")
    gen = _save_generator(root / "gen", {"data": f"classfolders:{root / 'cf'}", "conditioning": "class",
                                         "train_source_ids": sorted(ids)},
                          num_classes=1, num_labels=3, table=EMPTY_CLASSES)
    egen = _save_generator(root / "egen", {"data": f"classfolders:{root / 'cf'}", "conditioning": "edges",
                                           "train_source_ids": sorted(ids)},
                           num_classes=2, num_labels=3, table=EDGE_CLASSES)
    rgen = _save_generator(root / "rgen", {"data": f"classfolders:{root / 'cf'}", "conditioning": "edges",
                                           "train_source_ids": sorted(ids)},
                           num_classes=2, num_labels=3, table=EDGE_CLASSES, style_dim=4)
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    clf = build_classifier(3, (32, 32, 3), filters=(4,), dense_units=(8,), dropout=0.0)
    export_classifier(clf, str(root / "clf"), ["cat", "dog", "fox"], (32, 32))
    return {"gen": gen, "egen": egen, "rgen": rgen, "clf": str(root / "clf"), "cf": root / "cf"}


def test_reference_images_are_the_candidates_own_class_training_images(conditional, tmp_path):
    """A generator trained with a reference image renders each candidate with one: the training image
    its edge map came from or, for a borrowed map, an image of the candidate's own class. It is
    recorded (reference_id, among the source_ids) and is the one the stored image was rendered with."""
    from synthseg_tf.data.io import read_image, read_mask_raw
    from synthseg_tf.generation.renderer import load_renderer

    gc = _gen_config(conditional["rgen"])
    members = {0: {f"cat/cat{i}" for i in range(4)}, 1: {"dog/dog0", "dog/dog1"}, 2: {"fox/fox0"}}
    cfg = GenerationConfig(generator=conditional["rgen"], out="x", n=1, labels="rare", seed=3, borrow_maps=0.5)
    src = MapSource(cfg, gc, 2, plan_map_source(cfg, gc))
    borrowed = 0
    for i in range(60):
        m, label, prov = src.get(i)
        ref = prov["reference_id"]
        assert ref in members[label] and ref in prov["source_ids"]
        if "borrowed_from" in prov:
            borrowed += 1
            assert prov["source_ids"][:-1] and set(prov["source_ids"][:-1]) <= members[prov["borrowed_from"]]
        else:
            assert prov["source_ids"] == [ref] == [prov["source_ids"][0]]  # the image the map was drawn from
        want = read_image(str(conditional["cf"] / f"{ref}.png"))[0]
        assert np.array_equal(src.reference(prov), want)
    assert borrowed > 5

    out = tmp_path / "r"
    assert main(["generate", "--generator", conditional["rgen"], "--out", str(out), "--n", "12",
                 "--samples-per-shard", "6", "--labels", "rare", "--seed", "3", "--borrow-maps", "0.5"]) == 0
    entries = _manifest(str(out))
    r = load_renderer(conditional["rgen"])
    for e in entries:
        assert e["reference_id"] in members[e["label"]] and e["reference_id"] in e["source_ids"]
        edges = read_mask_raw(os.path.join(out, e["mask"]))[0]
        ref = read_image(str(conditional["cf"] / f"{e['reference_id']}.png"))[0]
        rendered = r.render(edges[None], np.array([e["label"]]), ref[None])[0].astype(int)
        assert np.abs(read_image(os.path.join(out, e["image"]))[0].astype(int) - rendered).max() <= 1  # (batch of 1)


def test_reference_swap_gives_another_image_of_the_class(conditional, tmp_path):
    """--reference-swap P: with probability P a candidate's reference is another training image of its
    own class than the one its edge map came from (a class with one image keeps its own); recorded
    (reference_swapped, reference_id among the source_ids), in the identity, refused where it cannot apply."""
    from synthseg_tf.generation.pipeline import run_generation

    gc = _gen_config(conditional["rgen"])
    members = {0: {f"cat/cat{i}" for i in range(4)}, 1: {"dog/dog0", "dog/dog1"}, 2: {"fox/fox0"}}
    cfg = GenerationConfig(generator=conditional["rgen"], out="x", n=1, labels="rare", seed=3, reference_swap=0.5)
    src = MapSource(cfg, gc, 2, plan_map_source(cfg, gc))
    plain = MapSource(GenerationConfig(generator=conditional["rgen"], out="x", n=1, labels="rare", seed=3), gc, 2,
                      plan_map_source(cfg, gc))
    swapped, kept, multi = 0, 0, 0
    for i in range(200):
        m, label, prov = src.get(i)
        m0, label0, prov0 = plain.get(i)
        assert label == label0 and np.array_equal(m, m0)  # the map and class do not change, only the reference
        ref, map_id = prov["reference_id"], prov0["reference_id"]
        assert ref in members[label] and ref in prov["source_ids"] and map_id in prov["source_ids"]
        if len(members[label]) > 1:
            multi += 1
        if prov.get("reference_swapped"):
            swapped += 1
            assert ref != map_id and prov["source_ids"] == [map_id, ref]
        else:
            kept += 1
            assert ref == map_id and prov == prov0
        again = src.get(i)  # deterministic per candidate
        assert np.array_equal(again[0], m) and again[2] == prov
    assert 0.35 * multi <= swapped <= 0.65 * multi and kept > 0

    out = tmp_path / "s"
    assert main(["generate", "--generator", conditional["rgen"], "--out", str(out), "--n", "12",
                 "--samples-per-shard", "6", "--labels", "rare", "--seed", "3", "--reference-swap", "0.5"]) == 0
    with open(os.path.join(out, "generation.json")) as f:
        assert json.load(f)["identity"]["reference_swap"] == 0.5
    entries = _manifest(str(out))
    assert any(e.get("reference_swapped") for e in entries)
    assert all(e["reference_id"] in members[e["label"]] and e["reference_id"] in e["source_ids"] for e in entries)
    for bad, gen in ((0.5, conditional["egen"]), (1.5, conditional["rgen"])):
        with pytest.raises(ValueError, match="reference-swap"):
            run_generation(GenerationConfig(generator=gen, out=str(tmp_path / "bad"), n=2, labels="rare",
                                            reference_swap=bad), log=lambda m: None)
    assert not os.path.exists(tmp_path / "bad")


def test_borrowed_edge_maps_come_from_other_classes(conditional, tmp_path, capsys):
    """--borrow-maps P: with probability P a candidate of class c is conditioned on an edge map of another
    class's training image, drawn in proportion to the other classes' image counts; recorded per sample."""
    from synthseg_tf.generation.pipeline import run_generation

    gc = _gen_config(conditional["egen"])
    members = {0: {f"cat/cat{i}" for i in range(4)}, 1: {"dog/dog0", "dog/dog1"}, 2: {"fox/fox0"}}
    cfg = GenerationConfig(generator=conditional["egen"], out="x", n=1, labels="rare", seed=3, borrow_maps=0.5)
    src = MapSource(cfg, gc, 2, plan_map_source(cfg, gc))
    draws = {c: [] for c in range(3)}
    for i in range(3000):
        label = src.label_for(i)
        draws[label].append(src.map_class_for(i, label))
    assert np.mean([d != c for c in draws for d in draws[c]]) == pytest.approx(0.5, abs=0.03)
    fox_donors = [d for d in draws[2] if d != 2]  # fox borrows from cat (4 images) and dog (2)
    assert np.mean(np.array(fox_donors) == 0) == pytest.approx(2 / 3, abs=0.05)
    for i in range(60):  # the map and its provenance follow the donor; the label stays
        m, label, prov = src.get(i)
        donor = prov.get("borrowed_from", label)
        assert donor == src.map_class_for(i, label) and label == src.label_for(i)
        assert set(prov["source_ids"]) <= members[donor] and m.shape == (32, 32)
        if "borrowed_from" in prov:
            assert donor != label
    again = MapSource(cfg, gc, 2, plan_map_source(cfg, gc))
    assert all(np.array_equal(src.get(i)[0], again.get(i)[0]) for i in range(20))  # deterministic per index
    never = MapSource(GenerationConfig(generator=conditional["egen"], out="x", n=1, labels="rare", seed=3), gc, 2)
    assert all(never.map_class_for(i, c) == c for i in range(200) for c in range(3))

    out = str(tmp_path / "b")
    assert main(["generate", "--generator", conditional["egen"], "--out", out, "--n", "40", "--samples-per-shard",
                 "20", "--labels", "rare", "--seed", "3", "--borrow-maps", "0.5"]) == 0
    entries = _manifest(out)
    borrowed = [e for e in entries if "borrowed_from" in e]
    assert 8 <= len(borrowed) <= 32 and all(e["borrowed_from"] != e["label"] for e in borrowed)
    assert all(set(e["source_ids"]) <= members[e.get("borrowed_from", e["label"])] for e in entries)
    with open(os.path.join(out, "generation.json")) as f:
        assert json.load(f)["identity"]["borrow_maps"] == 0.5
    capsys.readouterr()
    with pytest.raises(ValueError, match="conditioned on edge maps"):  # nothing to lend without edge maps
        run_generation(GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "c"), n=2, borrow_maps=0.5),
                       log=lambda m: None)
    with pytest.raises(ValueError, match=r"probability in \[0, 1\]"):
        run_generation(GenerationConfig(generator=conditional["egen"], out=str(tmp_path / "d"), n=2,
                                        borrow_maps=1.5), log=lambda m: None)


def test_rare_labels_follow_inverse_class_counts(conditional):
    cfg = GenerationConfig(generator=conditional["gen"], out="x", n=1, labels="rare", seed=3)
    src = MapSource(cfg, _gen_config(conditional["gen"]), 1)
    labels = np.array([src.label_for(i) for i in range(3000)])
    want = np.array([1 / 4, 1 / 2, 1.0]) / 1.75
    assert np.allclose(np.bincount(labels, minlength=3) / 3000, want, atol=0.03)
    assert [src.label_for(i) for i in range(20)] == labels[:20].tolist()  # deterministic per index


def test_class_weights_scale_the_rare_draws(conditional, tmp_path):
    from synthseg_tf.generation.pipeline import rare_label_weights, run_generation

    assert np.allclose(rare_label_weights({0: 4, 1: 2, 2: 1}, 3, [1.0, 0.0, 0.5]), [1 / 3, 0.0, 2 / 3])
    with pytest.raises(ValueError, match="3 finite numbers"):
        rare_label_weights({0: 4, 1: 2, 2: 1}, 3, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="weight 0"):
        rare_label_weights({0: 4, 1: 2}, 3, [0.0, 0.0, 1.0])  # class 2 has no samples

    cfg = GenerationConfig(generator=conditional["gen"], out="x", n=1, labels="rare", seed=3,
                           class_weights=[2.0, 0.0, 1.0])
    src = MapSource(cfg, _gen_config(conditional["gen"]), 1)
    labels = np.array([src.label_for(i) for i in range(3000)])
    want = np.array([2 / 4, 0.0, 1.0]) / 1.5
    assert np.allclose(np.bincount(labels, minlength=3) / 3000, want, atol=0.03)

    out = str(tmp_path / "w")
    summary = run_generation(GenerationConfig(generator=conditional["gen"], out=out, n=12, samples_per_shard=6,
                                              batch_size=4, labels="rare", seed=3, class_weights=[0.0, 1.0, 0.0]),
                             log=lambda m: None)
    assert summary["kept"] == 12 and {e["label"] for e in _manifest(out)} == {1}
    with pytest.raises(ValueError, match="labels='rare'"):
        run_generation(GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "b"), n=2,
                                        labels="balanced", class_weights=[1.0, 1.0, 1.0]), log=lambda m: None)


def test_classifier_confidence_filter_keeps_first_n_passing(conditional, world, tmp_path):
    from synthseg_tf.generation.pipeline import run_generation
    from synthseg_tf.generation.renderer import Renderer
    from synthseg_tf.models.classifier import load_classifier

    gc = _gen_config(conditional["gen"])
    cfg = GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "c"), n=4, samples_per_shard=6,
                           batch_size=4, labels="rare", seed=3, quality_model=conditional["clf"])
    src = MapSource(cfg, gc, 1, plan_map_source(cfg, gc))
    renderer, clf = Renderer(conditional["gen"]), load_classifier(conditional["clf"])
    scores, labels = {}, {}
    for i in range(24):
        m, label, _ = src.get(i)
        image = renderer.render(m[None], np.array([label]))
        scores[i], labels[i] = float(clf.predict_proba(image.astype(np.float32) / 255.0)[0, label]), label
    distinct = sorted(set(round(s, 6) for s in scores.values()))
    assert len(distinct) >= 2
    # a threshold that at least 4 of these 24 candidates pass and at least one fails
    ranked = sorted(scores.values(), reverse=True)
    threshold = (ranked[3] + ranked[-1]) / 2 if ranked[3] > ranked[-1] else ranked[3]
    cfg.min_quality = threshold
    summary = run_generation(cfg, log=lambda m: None)
    kept = _manifest(cfg.out)
    want = [i for i in range(24) if scores[i] >= threshold][:4]
    assert [e["index"] for e in kept] == want and summary["kept"] == 4
    for e in kept:
        assert e["label"] == labels[e["index"]] and e["quality"] == pytest.approx(scores[e["index"]], abs=1e-5)
    assert manifest_source_ids(cfg.out) <= set(gc["train_source_ids"])

    # per-class thresholds (the calibrated filter): each candidate meets its own class's threshold
    top = max(set(labels.values()), key=lambda c: sum(1 for i in range(6) if labels[i] == c))
    per_class = [1.0 if c == top else 0.0 for c in range(3)]  # nothing of `top` passes (p < 1), the rest all do
    cfg2 = GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "pc"), n=4, samples_per_shard=6,
                            batch_size=4, labels="rare", seed=3, quality_model=conditional["clf"],
                            class_min_quality=per_class)
    run_generation(cfg2, log=lambda m: None)
    want = [i for i in range(24) if scores[i] >= per_class[labels[i]]][:4]
    assert [e["index"] for e in _manifest(cfg2.out)] == want
    assert any(labels[i] == top for i in range(want[-1])) and all(labels[i] != top for i in want)
    with open(os.path.join(cfg2.out, "generation.json")) as f:
        assert json.load(f)["identity"]["class_min_quality"] == per_class
    # the same from the command line, with a thresholds.json as the experiment writes it
    (tmp_path / "thr.json").write_text(json.dumps({"thresholds": per_class, "cap": 0.9}))
    assert main(["generate", "--generator", conditional["gen"], "--out", str(tmp_path / "pc_cli"), "--n", "4",
                 "--samples-per-shard", "6", "--batch-size", "4", "--labels", "rare", "--seed", "3",
                 "--quality-model", conditional["clf"], "--class-min-quality", str(tmp_path / "thr.json")]) == 0
    assert [e["index"] for e in _manifest(str(tmp_path / "pc_cli"))] == want
    (tmp_path / "bad.json").write_text(json.dumps({"thresholds": "high"}))
    assert main(["generate", "--generator", conditional["gen"], "--out", str(tmp_path / "pc_bad"), "--n", "1",
                 "--quality-model", conditional["clf"], "--class-min-quality", str(tmp_path / "bad.json")]) != 0
    assert not os.path.exists(tmp_path / "pc_bad")
    with pytest.raises(ValueError, match="need 3 values in"):
        run_generation(GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "d"), n=1,
                                        quality_model=conditional["clf"], class_min_quality=[0.5, 0.5]),
                       log=lambda m: None)

    with pytest.raises(ValueError, match="--pixel-filter needs a label-map generator"):
        run_generation(GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "d"), n=1,
                                        quality_model=conditional["clf"], pixel_filter=1.2), log=lambda m: None)
    with pytest.raises(ValueError, match="must be a classifier export"):
        run_generation(GenerationConfig(generator=conditional["gen"], out=str(tmp_path / "d"), n=1,
                                        quality_model=world["seg"]), log=lambda m: None)
    assert not os.path.exists(tmp_path / "d")


# ------------------------------------------------------------------------ FCN-score
@pytest.fixture(scope="module")
def real_segmenter(world):
    from synthseg_tf.training.segmentation import train_unet

    out = world["root"] / "unet"
    res = train_unet(world["spec"], None, str(out), image_size=(32, 32), batch_size=4, steps=1,
                     backbone="resnet18", verbose=0, seed=0)
    return res["model_dir"]


def test_evaluate_generator_matches_a_recomputation(world, real_segmenter, tmp_path):
    import cv2

    from synthseg_tf.data import load
    from synthseg_tf.generation.evaluate import evaluate_generator
    from synthseg_tf.generation.renderer import Renderer
    from synthseg_tf.metrics.segmentation import ConfusionMatrix
    from synthseg_tf.models.unet import load_segmenter

    val = world["spec"] + "?split=val"
    res = evaluate_generator(world["gen"], real_segmenter, val, batch_size=3, out_dir=str(tmp_path / "ev"))
    ds, r, seg = load(val), Renderer(world["gen"]), load_segmenter(real_segmenter)
    cm_real, cm_fake = ConfusionMatrix(3), ConfusionMatrix(3)
    for s in ds.samples:
        image, mask = ds.read(s)
        image = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (32, 32), interpolation=cv2.INTER_NEAREST)
        cm_real.update(mask[None], seg(image[None]))
        cm_fake.update(mask[None], seg(r.render(mask[None])))
    assert res["images"] == len(VAL) and res["image_size"] == [32, 32]
    assert res["fcn_score_miou"] == pytest.approx(cm_fake.mean_iou(), abs=1e-6)
    assert res["real_miou"] == pytest.approx(cm_real.mean_iou(), abs=1e-6)
    assert res["fcn_to_real_ratio"] == pytest.approx(res["fcn_score_miou"] / res["real_miou"])
    assert set(res["per_class_iou"]) == {"a", "b", "c"}
    assert res["fid_domain_encoder"] is not None and np.isfinite(res["fid_domain_encoder"])
    saved = json.loads((tmp_path / "ev" / "gan_eval.json").read_text())
    assert saved["fcn_score_miou"] == res["fcn_score_miou"]
    grid = read_png_shape(tmp_path / "ev" / "gan_eval_grid.png")
    assert grid[1] == 3 * 32 + 2 * 4  # label map | real | generated


def read_png_shape(path):
    from synthseg_tf.data.io import read_image

    return read_image(str(path))[0].shape


def test_cli_gan_evaluate(world, real_segmenter, conditional, tmp_path, capsys):
    out = tmp_path / "cli"
    val = world["spec"] + "?split=val"
    assert main(["gan", "evaluate", "--generator", world["gen"], "--segmenter", real_segmenter, "--data", val,
                 "--max-images", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "FCN-score" in printed and "gan_eval.json" in printed
    saved = json.loads((out / "gan_eval.json").read_text())
    assert saved["images"] == 2 and saved["data"] == val and os.path.isfile(out / "gan_eval_grid.png")
    assert main(["gan", "evaluate", "--generator", conditional["gen"], "--segmenter", real_segmenter,
                 "--data", val]) == 1
    assert "class counts differ" in capsys.readouterr().err
