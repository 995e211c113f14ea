"""The real+copypaste baseline set: exact pixel pasting, determinism, provenance, resume/refusal, reading."""
import dataclasses
import glob
import json
import os

import cv2
import numpy as np
import pytest

import synthseg_tf  # noqa: F401
from synthseg_tf.generation.copypaste import STATE_FILE, CopyPasteSampler, write_copypaste_set

SIZE = (48, 64)  # non-square: catches H/W mix-ups
N, PER = 20, 8   # 3 shards: 8, 8, 4


@pytest.fixture(scope="module")
def ds():
    from synthseg_tf.data.layouts import load

    return load("demo-scenes?n=24&size=64")


@pytest.fixture(scope="module")
def written(ds, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cp") / "set")
    summary = write_copypaste_set(ds, out, N, SIZE, seed=3, samples_per_shard=PER, log=lambda m: None)
    return out, summary


def folder_bytes(out):
    files = sorted(glob.glob(os.path.join(out, "*.tfrecord"))) + [os.path.join(out, "manifest.jsonl")]
    return {os.path.basename(f): open(f, "rb").read() for f in files}


# ---------------------------------------------------------------------------- exact pasting (no TF)
def hand_made(n=6, h=32, w=40, seed=0):
    """Noise photos (every pixel distinct) with one disc of class 1 in the left half and one
    L-shape of class 2 in the right half, so each class's bbox holds only its component."""
    rng = np.random.default_rng(seed)
    images, masks = [], []
    yy, xx = np.mgrid[:h, :w]
    for _ in range(n):
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        m = np.zeros((h, w), np.uint8)
        cy, cx, r = rng.integers(8, h - 8), rng.integers(6, w // 2 - 6), rng.integers(3, 6)
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        y0, x0 = rng.integers(2, h - 12), rng.integers(w // 2 + 1, w - 10)
        m[y0:y0 + 9, x0:x0 + 3] = 2
        m[y0 + 6:y0 + 9, x0:x0 + 8] = 2
        m[-2:, :] = 255  # void rows
        masks.append(m)
    return images, masks, [f"src{j}" for j in range(n)]


def expected_sample(images, masks, ids, rec):
    """Rebuild a scale-1 sample from its record by plain translation of the donor pixels."""
    j = ids.index(rec["base"])
    img, m = images[j].copy(), masks[j].copy()
    if rec["base_flipped"]:
        img, m = img[:, ::-1].copy(), m[:, ::-1].copy()
    H, W = m.shape
    for p in rec["pastes"]:
        d = ids.index(p["donor"])
        x, y, w, h = p["src_bbox"]
        assert p["size"] == [h, w]  # scale 1: no resampling
        comp = masks[d][y:y + h, x:x + w] == p["class"]
        pix = images[d][y:y + h, x:x + w]
        if p["flipped"]:
            comp, pix = comp[:, ::-1], pix[:, ::-1]
        left, top = p["at"]
        for dy, dx in zip(*np.nonzero(comp)):
            yy, xx = top + dy, left + dx
            if 0 <= yy < H and 0 <= xx < W:
                img[yy, xx] = pix[dy, dx]
                m[yy, xx] = p["class"]
    return img, m


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_pasted_pixels_are_the_donors_pixels(flip):
    images, masks, ids = hand_made()
    s = CopyPasteSampler(images, masks, ids, num_classes=3, seed=5, pastes=(1, 3), paste_scale=1.0,
                         paste_flip=flip, keep_vertical=False)
    n_pasted = 0
    for i in range(12):
        img, m, rec = s.sample_at(i)
        assert img.shape == (32, 40, 3) and m.shape == (32, 40) and img.dtype == m.dtype == np.uint8
        assert rec["base"] not in rec["donors"]  # donors come from another sample
        assert rec["source_ids"][0] == rec["base"] and set(rec["donors"]) <= set(rec["source_ids"]) <= set(ids)
        assert all(p["flipped"] == bool(flip) for p in rec["pastes"])
        want_img, want_m = expected_sample(images, masks, ids, rec)
        np.testing.assert_array_equal(m, want_m)
        np.testing.assert_array_equal(img, want_img)  # inside pastes: donor pixels; elsewhere: the base
        n_pasted += sum(p["pixels"] for p in rec["pastes"])
        assert set(np.unique(m).tolist()) <= {0, 1, 2, 255}
    assert n_pasted > 100
    # same (seed, i) -> the same sample whatever was sampled before; the inputs are never written
    again = CopyPasteSampler(images, masks, ids, num_classes=3, seed=5, pastes=(1, 3), paste_scale=1.0,
                             paste_flip=flip, keep_vertical=False).sample_at(7)
    np.testing.assert_array_equal(again[0], s.sample_at(7)[0])
    assert again[2] == s.sample_at(7)[2]
    np.testing.assert_array_equal(images[0], hand_made()[0][0])


def test_feathered_edges_blend_only_the_rim():
    images, masks, ids = hand_made(seed=1)
    kw = dict(num_classes=3, seed=2, pastes=(1, 1), paste_scale=1.0, keep_vertical=False)
    hard = CopyPasteSampler(images, masks, ids, feather=0, **kw)
    soft = CopyPasteSampler(images, masks, ids, feather=2, **kw)
    rims = 0
    for i in range(8):
        hi, hm, hrec = hard.sample_at(i)
        si, sm, srec = soft.sample_at(i)
        assert hrec == srec
        np.testing.assert_array_equal(sm, hm)  # masks keep hard edges
        base, _ = expected_sample(images, masks, ids, dict(hrec, pastes=[]))
        pasted = (hi != base).any(-1)
        inner = cv2.erode(pasted.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2,
                          borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        np.testing.assert_array_equal(si[inner], hi[inner])  # >= 3 px inside: the donor's pixels
        np.testing.assert_array_equal(si[~pasted], hi[~pasted])  # nothing changes outside the paste
        lo, up = np.minimum(base, hi).astype(int), np.maximum(base, hi).astype(int)
        assert np.all(si >= lo - 1) and np.all(si <= up + 1)  # a blend of base and donor
        rims += int(((si != hi).any(-1) & pasted & ~inner).sum())
    assert rims > 20


def test_rare_balance_pastes_rare_classes_more():
    images, masks, ids = hand_made(n=8)
    for m in masks:  # class 2 becomes a 3x3 square: 3-9x rarer than the class-1 disc
        m[m == 2] = 0
        m[2:5, 30:33] = 2
    counts = {}
    for cb in ("rare", None):
        s = CopyPasteSampler(images, masks, ids, num_classes=3, seed=0, class_balance=cb, pastes=(2, 2),
                             min_component_area=4)
        c = np.zeros(3, int)
        for i in range(60):
            for p in s.sample_at(i)[2]["pastes"]:
                c[p["class"]] += 1
        counts[cb] = c
    assert counts["rare"][2] > counts["rare"][1]
    assert counts["rare"][2] > counts[None][2]


def test_bad_settings_are_refused(ds, tmp_path):
    images, masks, ids = hand_made()
    with pytest.raises(ValueError, match="pastes"):
        CopyPasteSampler(images, masks, ids, num_classes=3, pastes=(3, 1))
    with pytest.raises(ValueError, match="feather"):
        CopyPasteSampler(images, masks, ids, num_classes=3, feather=3)
    with pytest.raises(ValueError, match="class_balance"):
        CopyPasteSampler(images, masks, ids, num_classes=3, class_balance="rarest")
    with pytest.raises(ValueError, match="src0: label map: id 9 "):
        CopyPasteSampler(images, [m + 7 * (m == 2) for m in masks], ids, num_classes=3)
    with pytest.raises(ValueError, match="unique"):
        CopyPasteSampler(images, masks, ["a"] * len(ids), num_classes=3)
    out = str(tmp_path / "x")
    with pytest.raises(ValueError, match="segmentation"):
        write_copypaste_set(dataclasses.replace(ds, task="classification"), out, 4, SIZE)
    with pytest.raises(ValueError, match="image_size"):
        write_copypaste_set(ds, out, 4, (0, 64))
    with pytest.raises(ValueError, match="n must be"):
        write_copypaste_set(ds, out, 0, SIZE)
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------- the TFRecord folder
def test_folder_contents_and_provenance(ds, written):
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.data.tfrecord import iter_examples, read_metadata

    out, summary = written
    assert summary["status"] == "complete" and summary["count"] == N and summary["shards"] == 3
    assert sorted(os.listdir(out)) == ["classes.json", "copypaste.json", "data-00000-of-00003.tfrecord",
                                       "data-00001-of-00003.tfrecord", "data-00002-of-00003.tfrecord",
                                       "dataset.json", "manifest.jsonl", "parts"]
    meta = read_metadata(out)
    assert meta["count"] == N and meta["task"] == "segmentation" and meta["synthetic"] is True
    assert meta["shards"] == [8, 8, 4]
    assert ClassTable.load(out).names == ds.classes.names
    ds_ids = {s.source_id for s in ds.samples}
    with open(os.path.join(out, "manifest.jsonl")) as f:
        manifest = [json.loads(line) for line in f]
    assert [e["index"] for e in manifest] == list(range(N))
    examples = list(iter_examples(out))
    assert len(examples) == N
    k = ds.num_classes
    pasted = 0
    for ex in examples:
        i = int(ex["source_id"].split("/")[1])
        e = manifest[i]
        assert ex["source_id"] == f"copypaste/{i:08d}" == e["source_id"]
        assert ex["synthetic"] and ex["label"] == -1
        assert ex["image"].shape == (*SIZE, 3) and ex["mask"].shape == SIZE
        ids = np.unique(ex["mask"])
        assert np.all((ids < k) | (ids == 255)), ids
        prov = ex["provenance"]
        assert prov == {key: v for key, v in e.items() if key not in ("shard", "source_id")}
        assert set(prov["source_ids"]) <= ds_ids and prov["base"] == prov["source_ids"][0]
        assert set(prov["donors"]) == set(prov["source_ids"][1:]) and prov["base"] not in prov["donors"]
        assert prov["classes_pasted"] == [p["class"] for p in prov["pastes"]]
        assert 1 <= len(prov["pastes"]) + prov["failed_pastes"] <= 3
        for p in prov["pastes"]:
            assert 0 <= p["class"] < k and p["pixels"] > 0
        pasted += len(prov["pastes"])
    assert pasted >= N and summary["pastes"]["total"] == pasted
    state = json.load(open(os.path.join(out, STATE_FILE)))
    assert state["identity"]["source_ids"] == sorted(ds_ids) and state["identity"]["seed"] == 3


def test_same_seed_same_bytes_other_seed_differs(ds, written, tmp_path):
    out, _ = written
    a = str(tmp_path / "a")
    # same identity from a differently ordered dataset: sources are sorted by id
    shuffled = dataclasses.replace(ds, samples=list(reversed(ds.samples)))
    write_copypaste_set(shuffled, a, N, SIZE, seed=3, samples_per_shard=PER, log=lambda m: None)
    assert folder_bytes(a) == folder_bytes(out)
    b = str(tmp_path / "b")
    write_copypaste_set(ds, b, N, SIZE, seed=4, samples_per_shard=PER, log=lambda m: None)
    assert folder_bytes(b)["data-00000-of-00003.tfrecord"] != folder_bytes(out)["data-00000-of-00003.tfrecord"]


def test_rerun_resume_and_refusal(ds, written, tmp_path):
    import shutil

    ref, _ = written
    out = str(tmp_path / "set")
    shutil.copytree(ref, out)
    msgs = []
    write_copypaste_set(ds, out, N, SIZE, seed=3, samples_per_shard=PER, log=msgs.append)
    assert len(msgs) == 1 and "nothing to do" in msgs[0]
    # a deleted shard is rebuilt, byte for byte
    os.remove(os.path.join(out, "data-00001-of-00003.tfrecord"))
    msgs = []
    summary = write_copypaste_set(ds, out, N, SIZE, seed=3, samples_per_shard=PER, log=msgs.append)
    assert summary["status"] == "complete"
    assert sum("shard" in m for m in msgs) == 1 and "shard 2/3" in " ".join(msgs)
    assert folder_bytes(out) == folder_bytes(ref)

    # an interrupted run resumes where it stopped and ends with the same bytes
    class Stop(Exception):
        pass

    def stop_after_first_shard(m):
        if "shard 1/3 written" in m:
            raise Stop

    part = str(tmp_path / "part")
    with pytest.raises(Stop):
        write_copypaste_set(ds, part, N, SIZE, seed=3, samples_per_shard=PER, log=stop_after_first_shard)
    assert json.load(open(os.path.join(part, STATE_FILE)))["status"] == "running"
    msgs = []
    write_copypaste_set(ds, part, N, SIZE, seed=3, samples_per_shard=PER, log=msgs.append)
    assert "shard 1/3" not in " ".join(msgs) and "shard 3/3" in " ".join(msgs)
    assert folder_bytes(part) == folder_bytes(ref)

    # other settings or another training subset: refused, naming what differs
    with pytest.raises(FileExistsError, match=r"seed"):
        write_copypaste_set(ds, out, N, SIZE, seed=4, samples_per_shard=PER, log=lambda m: None)
    with pytest.raises(FileExistsError, match=r"pastes"):
        write_copypaste_set(ds, out, N, SIZE, seed=3, pastes=(2, 2), samples_per_shard=PER, log=lambda m: None)
    with pytest.raises(FileExistsError, match=r"source_ids"):
        write_copypaste_set(ds.select(range(12)), out, N, SIZE, seed=3, samples_per_shard=PER, log=lambda m: None)
    assert folder_bytes(out) == folder_bytes(ref)
    # a non-empty folder that is not a copy-paste set
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a copy-paste set"):
        write_copypaste_set(ds, str(other), N, SIZE, log=lambda m: None)
    assert os.listdir(other) == ["notes.txt"]


def test_training_reads_it(ds, written):
    """make_dataset and the U-Net training input pipeline (train_unet's synthetic path) read the set."""
    from synthseg_tf.data.tfdata import make_dataset
    from synthseg_tf.training.segmentation import check_same_classes, resolve_source, training_pipeline

    out, _ = written
    batch = next(iter(make_dataset(out, image_size=SIZE, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, *SIZE, 3) and batch["mask"].shape == (4, *SIZE)
    assert int(batch["synthetic"].numpy().min()) == 1
    src, table, n, _ = resolve_source(out, "segmentation", "synthetic")
    assert n == N
    check_same_classes(ds.classes, table, "train", "synthetic")
    images, masks = next(iter(training_pipeline(ds, len(ds), src, n, 1.0, SIZE, 4, True, 0, False, False)))
    assert images.shape == (4, *SIZE, 3) and masks.shape[:3] == (4, *SIZE)


def test_changed_source_pixels_are_refused_on_resume(tmp_path):
    """Same source ids but other pixels: resuming would mix two different sets, so it refuses."""
    from PIL import Image

    from synthseg_tf.data.layouts import load

    images, masks, ids = hand_made(n=4)
    root = tmp_path / "real"
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for im, m, sid in zip(images, masks, ids):
        Image.fromarray(im).save(root / "images" / f"{sid}.png")
        Image.fromarray(m).save(root / "masks" / f"{sid}.png")
    (root / "masks" / "classes.json").write_text(json.dumps({"classes": ["bg", "disc", "ell"]}))
    ds = load(f"pairs:{root}/images:{root}/masks")
    out = str(tmp_path / "set")
    write_copypaste_set(ds, out, 4, (32, 40), samples_per_shard=2, log=lambda m: None)
    os.remove(os.path.join(out, "data-00001-of-00002.tfrecord"))
    Image.fromarray(255 - images[1]).save(root / "images" / "src1.png")
    with pytest.raises(FileExistsError, match="changed"):
        write_copypaste_set(ds, out, 4, (32, 40), samples_per_shard=2, log=lambda m: None)
