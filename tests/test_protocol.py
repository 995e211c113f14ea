"""The honest-evaluation protocol: fit/selection carving, provenance checks, verdicts, eval splits."""
import json
import os

import pytest

from synthseg_tf.data.dataset import Dataset, Sample
from synthseg_tf.data.classes import ClassTable
from synthseg_tf.experiments import protocol as P


def _ds(n, split=None, prefix="s"):
    samples = [Sample(image=f"{prefix}{i}.png", mask=f"{prefix}{i}_m.png", source_id=f"{prefix}{i}", split=split)
               for i in range(n)]
    return Dataset(spec="test", task="segmentation", samples=samples, classes=ClassTable(names=["a", "b"]))


def test_carve_selection_is_a_deterministic_partition():
    ds = _ds(50)
    fit, sel = P.carve_selection(ds, 0.2)
    ids_fit, ids_sel = set(P.source_ids(fit)), set(P.source_ids(sel))
    assert ids_fit.isdisjoint(ids_sel) and ids_fit | ids_sel == set(P.source_ids(ds))
    assert 4 <= len(sel) <= 18  # about 20 %
    # order-independent: the same ids whatever the listing order
    rev = ds.select(list(range(len(ds)))[::-1])
    assert set(P.source_ids(P.carve_selection(rev, 0.2)[1])) == ids_sel
    # a sample's side does not change when other samples join (hash of its own id)
    more = _ds(80)
    sel_more = set(P.source_ids(P.carve_selection(more, 0.2)[1]))
    assert ids_sel == {i for i in sel_more if int(i[1:]) < 50}


def test_carve_selection_small_sets():
    fit, sel = P.carve_selection(_ds(2), 0.2)
    assert len(fit) == 1 and len(sel) == 1
    with pytest.raises(ValueError, match="cannot be split"):
        P.carve_selection(_ds(1), 0.2)
    with pytest.raises(ValueError, match="selection fraction"):
        P.carve_selection(_ds(5), 1.5)


def _frames(seqs):
    samples = [Sample(image=f"{q}_{f:06d}.png", mask=f"{q}_{f:06d}_m.png", source_id=f"{q}_{f:06d}")
               for q, n in seqs for f in range(0, 30 * n, 30)]
    return Dataset(spec="video", task="segmentation", samples=samples, classes=ClassTable(names=["a", "b"]))


def test_natural_key_orders_numbered_frames():
    ids = ["seq_10", "seq_9", "seq_100", "a_2", "seq_09b"]
    assert sorted(ids, key=P.natural_key) == ["a_2", "seq_9", "seq_09b", "seq_10", "seq_100"]
    assert P.natural_key("x\u00b2y") == ((1, 0, "x\u00b2y"),)  # only ASCII digits count as numbers
    assert sorted(["b", "", "a"], key=P.natural_key) == ["", "a", "b"]


def test_blocks_carve_keeps_selection_frames_away_from_fit_frames():
    ds = _frames([("0001TP", 40), ("0016E5", 60)])  # 100 frames, 30 apart, as CamVid's labelled frames
    index = {s.source_id: i for i, s in enumerate(sorted(ds.samples, key=lambda s: P.natural_key(s.source_id)))}

    def gaps(fit, sel):  # for each selection frame, how many frames (in order) to the nearest fit frame
        f = sorted(index[i] for i in P.source_ids(fit))
        return [min(abs(index[i] - j) for j in f) for i in P.source_ids(sel)]

    fit, sel = P.carve_selection_blocks(ds, 0.2)
    ids_fit, ids_sel = set(P.source_ids(fit)), set(P.source_ids(sel))
    assert ids_fit.isdisjoint(ids_sel) and ids_fit | ids_sel == set(P.source_ids(ds))
    assert len(sel) == 20  # 20 %, 4 whole blocks of ceil(sqrt(20)) = 5
    g_blocks = gaps(fit, sel)
    g_hash = gaps(*P.carve_selection(ds, 0.2))
    assert sum(g_blocks) / len(g_blocks) > 1.5 * sum(g_hash) / len(g_hash)
    assert max(g_blocks) >= 3 and max(g_hash) <= 2
    # deterministic and independent of listing order
    rev = ds.select(list(range(len(ds)))[::-1])
    assert set(P.source_ids(P.carve_selection_blocks(rev, 0.2)[1])) == ids_sel
    assert set(P.source_ids(P.carve(ds, 0.2, "blocks")[1])) == ids_sel
    # small subsets still leave both parts non-empty
    f2, s2 = P.carve_selection_blocks(_frames([("x", 2)]), 0.9)
    assert len(f2) == 1 and len(s2) == 1
    f3, s3 = P.carve_selection_blocks(_frames([("x", 3)]), 0.2)  # one image wanted: blocks of 1
    assert len(f3) == 2 and len(s3) == 1
    f4, s4 = P.carve_selection_blocks(_frames([("x", 92)]), 0.2)  # 18 wanted, blocks of 5: at most one over
    assert 18 <= len(s4) <= 22 and len(s4) % 5 == 0
    with pytest.raises(ValueError, match="selection carve"):
        P.carve(ds, 0.2, "random")


def test_check_within_names_the_outside_images():
    P.check_within({"a", "b"}, {"a", "b", "c"}, "set X")
    with pytest.raises(P.ProtocolError, match=r"set X was built from 1 image.*outside.*val/0001"):
        P.check_within({"a", "val/0001"}, {"a", "b"}, "set X")
    with pytest.raises(P.ProtocolError, match="records no source ids"):
        P.check_within(set(), {"a"}, "set Y")


def test_provenance_readers(tmp_path):
    gen = tmp_path / "gan"
    gen.mkdir()
    (gen / "config.json").write_text(json.dumps({"train_source_ids": ["a", "b"]}))
    assert P.generator_source_ids(str(gen)) == {"a", "b"}
    syn = tmp_path / "syn"
    syn.mkdir()
    (syn / "manifest.jsonl").write_text(json.dumps({"source_ids": ["a"]}) + "\n" + json.dumps({"source_ids": ["c", "b"]}) + "\n")
    assert P.synthetic_source_ids(str(syn)) == {"a", "b", "c"}
    with pytest.raises(P.ProtocolError, match="no manifest"):
        P.synthetic_source_ids(str(tmp_path))
    with pytest.raises(P.ProtocolError, match="no config.json"):
        P.generator_source_ids(str(syn))


@pytest.mark.parametrize("values,expected", [
    ([0.02, 0.01, 0.03], "helps"),
    ([-0.02, -0.01], "hurts"),
    ([0.05, -0.01, 0.02], "no evidence"),
    ([0.001, 0.002, 0.001], "no evidence"),  # consistent but below the minimum effect
    ([0.2], "no evidence"),  # one seed is no evidence
    ([], "no evidence"),
])
def test_verdict(values, expected):
    assert P.verdict(values) == expected


def test_split_for_protocol_keeps_evaluation_out_of_training():
    samples = _ds(6, "train").samples + _ds(3, "val", prefix="v").samples + _ds(2, "test", prefix="t").samples
    ds = Dataset(spec="x", task="segmentation", samples=samples, classes=ClassTable(names=["a", "b"]))
    train, ev, desc = P.split_for_protocol(ds)
    assert {s.split for s in train.samples} == {"train"} and {s.split for s in ev.samples} == {"val"}
    assert "val split" in desc
    test = ds.subset("test")
    train2, ev2, _ = P.split_for_protocol(ds, test)
    assert {s.split for s in train2.samples} == {"train"} and P.source_ids(ev2) == P.source_ids(test)
    with pytest.raises(P.ProtocolError, match="shares 6 images"):
        P.split_for_protocol(ds, ds.subset("train"))


def test_summary_verdicts_from_paired_deltas():
    from synthseg_tf.experiments.common import summarize

    def run(setting, seed, miou, a):
        return {"fraction": 0.5, "seed": seed, "setting": setting, "metrics": {"mean_iou": miou},
                "per_class": {"iou": {"a": a}}, "steps_run": 10 + seed}

    runs = [run("real", 0, 0.40, 0.5), run("real", 1, 0.50, 0.7), run("real+augment", 0, 0.45, 0.5),
            run("real+augment", 1, 0.52, 0.6), run("real+synthetic", 0, 0.47, 0.4),
            run("real+synthetic", 1, 0.55, 0.8)]
    rows = summarize(runs, ["mean_iou"], ["iou"], ["a"], [0.5], ["real", "real+augment", "real+synthetic"],
                     extra_baselines={"real+synthetic": ("real+augment",)})
    syn = rows[2]
    assert syn["delta_vs_real"]["verdict"] == "helps"
    assert syn["delta_vs_real"]["verdicts"] == {"a": "no evidence"}  # -0.1, +0.1
    assert syn["delta_vs_real+augment"]["metrics"]["mean_iou"]["values"] == pytest.approx([0.02, 0.03])
    assert syn["delta_vs_real+augment"]["verdict"] == "helps"
    assert syn["budget"]["steps_run"]["values"] == [10, 11]
    assert "delta_vs_real+augment" not in rows[1]


def test_quality_provenance_of_a_synthetic_set(tmp_path):
    """The model that filtered a synthetic set: trained on allowed ids, selected on selection ids."""
    syn = tmp_path / "syn"
    syn.mkdir()
    (syn / "manifest.jsonl").write_text(json.dumps({"source_ids": ["a"]}) + "\n")
    export = tmp_path / "quality_model"
    export.mkdir()

    def state(prov, model=str(export)):
        (syn / "generation.json").write_text(json.dumps({"identity": {"quality_model": model},
                                                         "quality_provenance": prov}))

    # made without a quality model: nothing to check
    (syn / "generation.json").write_text(json.dumps({"identity": {"quality_model": None}}))
    assert P.check_quality_provenance(str(syn), {"a", "b"}, {"s"}) is None
    state({"train": ["a", "b"], "selection": ["s"]})
    assert P.checked(str(syn), "synthetic set", {"a", "b"}, {"s"}) == str(syn)
    state({"train": ["a", "x"], "selection": ["s"]})
    with pytest.raises(P.ProtocolError, match=r"quality model .* outside the experiment's training subset.*: x"):
        P.checked(str(syn), "synthetic set", {"a", "b"}, {"s"})
    state({"train": ["a"], "selection": ["s", "eval1"]})
    with pytest.raises(P.ProtocolError, match="selected .* outside the experiment's selection split: eval1"):
        P.checked(str(syn), "synthetic set", {"a", "b"}, {"s"})
    # without a recorded provenance the export's config.json is read; an older export records nothing
    state(None)
    (export / "config.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(P.ProtocolError, match="records no source ids"):
        P.check_quality_provenance(str(syn), {"a"}, {"s"})
    (export / "config.json").write_text(json.dumps({"train_source_ids": ["a"], "selection_source_ids": ["s"]}))
    assert P.check_quality_provenance(str(syn), {"a"}, {"s"}) == {"train": ["a"], "selection": ["s"]}
    # trained from TFRecords: its images cannot be listed
    (export / "config.json").write_text(json.dumps({"train_source_ids": None, "selection_source_ids": ["s"]}))
    with pytest.raises(P.ProtocolError, match="records no source ids"):
        P.check_quality_provenance(str(syn), {"a"}, {"s"})


def test_a_run_without_evaluation_figures_is_not_reported(tmp_path):
    """A run that only scored its selection split (an older version) must not pass those off as evaluation."""
    from synthseg_tf.experiments.segmentation import _seg_record

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train_samples": 4}))
    (run / "metrics.json").write_text(json.dumps({"val": {"mean_iou": 0.9, "per_class": {}}}))
    with pytest.raises(P.ProtocolError, match="no evaluation figures"):
        _seg_record(str(run), str(tmp_path), 1.0, 0, "real")
