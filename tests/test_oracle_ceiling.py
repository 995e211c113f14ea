"""scripts/oracle_ceiling.py: the diagnostic repeats a real+synthetic run's recipe with the set swapped."""
import importlib.util
import json
import os
from dataclasses import replace

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "demo-classes?size=32"


def _script():
    spec = importlib.util.spec_from_file_location("oracle_ceiling", os.path.join(REPO, "scripts", "oracle_ceiling.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_oracle_images_are_new_and_deterministic():
    from synthseg_tf.data.layouts import load

    oc = _script()
    labels = [3, 3, 0]
    a, b = oc.oracle_images(SPEC, labels), oc.oracle_images(SPEC, labels)
    assert a.shape == (3, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # two draws of one class differ
    assert not np.array_equal(oc.oracle_images(SPEC, labels, start=1)[0], a[0])  # a later try is another image
    ds = load(SPEC)
    for smp in ds.samples:
        if smp.label in (0, 3):
            image = ds.read_image(smp)[0]
            assert not any(np.array_equal(image, x) for x in a), smp.source_id
    with pytest.raises(SystemExit, match="procedural renderer"):
        oc.demo_options("classfolders:/data/x")


class _Renderer:
    config = {"conditioning": "edges"}
    image_size = (32, 32)

    def render(self, maps, labels):
        # the brightness says how many edge pixels the map had: a stand-in the scorer can read
        return np.repeat(np.minimum(maps.sum(axis=(1, 2)), 255).astype(np.uint8)[:, None, None, None],
                         32 * 32 * 3).reshape(len(maps), 32, 32, 3)


class _Scorer:
    def __init__(self):
        self.calls = []

    def scores(self, images, labels):
        self.calls.append(len(labels))
        return [0.0 if lab == 1 else 1.0 for lab in labels]  # class 1 never passes


def test_gan_maps_keep_the_first_candidate_over_its_class_threshold(monkeypatch):
    import synthseg_tf.generation.renderer as renderer

    oc = _script()
    monkeypatch.setattr(renderer, "load_renderer", lambda path: _Renderer())
    scorer = _Scorer()
    images, short = oc.gan_images(SPEC, [0, 1, 2], "GEN", [0.5] * 37, scorer, tries=3)
    assert images.shape == (3, 32, 32, 3)
    assert short == 1  # class 1 exhausted its tries
    assert scorer.calls == [3, 1, 1]  # only the rejected label was drawn again
    images2, short2 = oc.gan_images(SPEC, [0, 1, 2], "GEN", None, None, tries=3)
    assert short2 == 0
    np.testing.assert_array_equal(images[[0, 2]], images2[[0, 2]])


def test_repeats_the_real_synthetic_run_with_only_the_set_swapped(tmp_path):
    from synthseg_tf.data.layouts import load
    from synthseg_tf.training.classification import _synthetic_labels, split_classification, train_classifier

    oc = _script()
    ds = load(SPEC)
    train, val, test = split_classification(ds, (0.7, 0.15, 0.15), 0)
    sub = train.samples[::8]
    data = replace(ds, samples=[replace(s, split="train") for s in sub] + [replace(s, split="val") for s in val.samples]
                   + [replace(s, split="test") for s in test.samples])
    exp = tmp_path / "exp"
    cell = exp / "subsets" / "frac0.25-subset0"
    syn = cell / "synthetic"
    labels = [s.label for s in sub[:12]]
    oc.write_set(str(syn), np.stack([ds.read_image(s)[0][::-1] for s in sub[:12]]), labels, "stand-in")
    (syn / "generation.json").write_text(json.dumps({"identity": {"quality_model": None}, "generator": "none"}))
    common = dict(image_size=(32, 32), batch_size=16, epochs=1, seed=0, export=False, verbose=0,
                  filters=(8, 16), dense_units=(16,))
    records = []
    for setting, kw in (("real", {}), ("real+synthetic", {"synthetic": str(syn), "synthetic_ratio": 0.25})):
        run = exp / "runs" / setting
        out = train_classifier(data, str(run), **common, **kw)
        records.append({"fraction": 0.25, "seed": 0, "setting": setting, "run": os.path.relpath(run, exp),
                        "metrics": {"macro_f1": out["metrics"]["test"]["macro"]["f1"]}})
    (exp / "results.json").write_text(json.dumps({"runs": records}))

    oc.main([str(exp), "--variants", "oracle,repeat"])
    result = json.loads((exp / "oracle" / "oracle.json").read_text())
    row, again = result["runs"]
    assert row["variant"] == "oracle" and row["config_differences"] == []
    # the same set again is the same run: the recipe, images and their order are all the original's
    assert again["variant"] == "repeat" and again["config_differences"] == []
    assert again["macro_f1"] == records[1]["metrics"]["macro_f1"]
    assert json.loads((exp / "oracle" / "repeat-f0.25-seed0" / "metrics.json").read_text())["test"] == \
        json.loads((exp / "runs" / "real+synthetic" / "metrics.json").read_text())["test"]
    config = json.loads((exp / "oracle" / "oracle-f0.25-seed0" / "config.json").read_text())
    original = json.loads((exp / "runs" / "real+synthetic" / "config.json").read_text())
    assert config["synthetic"] != original["synthetic"] and config["synthetic_ratio"] == 0.25
    assert config["bn_momentum"] == original["bn_momentum"]
    # a run from before bn_momentum was recorded is replayed with the 0.99 it used
    older = {k: v for k, v in original.items() if k not in ("bn_momentum", "bn_momentum_rule")}
    assert oc.recipe(older)["bn_momentum"] == 0.99
    assert oc.compare(older, {**older, "bn_momentum": 0.99, "bn_momentum_rule": "fixed"}) == []
    assert oc.compare(older, {**older, "bn_momentum": 0.9}) == ["bn_momentum"]
    assert json.loads((exp / "oracle" / "oracle-f0.25-seed0" / "splits.json").read_text()) == \
        json.loads((exp / "runs" / "real+synthetic" / "splits.json").read_text())
    np.testing.assert_array_equal(_synthetic_labels(str(exp / "oracle" / "oracle-frac0.25-subset0")), labels)
    assert set(result["summary"]) == {"real+synthetic", "oracle", "repeat"}
    # a rerun reuses the finished run and set
    before = os.path.getmtime(exp / "oracle" / "oracle-f0.25-seed0" / "metrics.json")
    oc.main([str(exp), "--variants", "oracle,repeat"])
    assert os.path.getmtime(exp / "oracle" / "oracle-f0.25-seed0" / "metrics.json") == before


def test_grid_has_a_row_per_set_and_the_first_image_of_each_class(tmp_path):
    from synthseg_tf.data.io import read_image

    oc = _script()
    a = np.zeros((3, 4, 4, 3), np.uint8) + np.array([10, 20, 30], np.uint8)[:, None, None, None]
    oc.write_set(str(tmp_path / "a"), a, [5, 0, 0], "a")
    oc.write_set(str(tmp_path / "b"), 255 - a, [0, 5, 5], "b")
    oc.write_grid(str(tmp_path / "g.png"), [str(tmp_path / "a"), str(tmp_path / "b")], [0, 5])
    g = read_image(str(tmp_path / "g.png"))[0]
    assert g.shape == (16, 16, 3)  # 2 rows x 2 classes of 4x4, shown at 2x
    assert g[0, 0, 0] == 20 and g[0, 8, 0] == 10 and g[8, 0, 0] == 245 and g[8, 8, 0] == 235
    with pytest.raises(SystemExit, match="no image of class 7"):
        oc.write_grid(str(tmp_path / "h.png"), [str(tmp_path / "a")], [0, 7])
