"""Storage-agnostic I/O (synthseg_tf.storage): dataset specs naming remote paths (gs://, s3://, ...),
and datasets, class tables, TFRecord folders and atomic writes on TensorFlow's in-memory ``ram://``
filesystem, checked against an identical local copy."""
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

from synthseg_tf import storage
from synthseg_tf.data import DataError, SpecError, load, parse_spec
from synthseg_tf.data.layouts import KINDS, absolute_spec, split_args
from synthseg_tf.errors import StorageError

from conftest import save, scene

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ specs (no TensorFlow, no I/O)
@pytest.mark.parametrize("spec,kind,args,opts", [
    ("pairs:gs://b/im:gs://b/ms?void=255", "pairs", ["gs://b/im", "gs://b/ms"], {"void": "255"}),
    ("camvid:gs://bucket/camvid", "camvid", ["gs://bucket/camvid"], {}),
    ("classfolders:s3://x/y", "classfolders", ["s3://x/y"], {}),
    ("cityscapes:gs://b/cityscapes?classes=30", "cityscapes", ["gs://b/cityscapes"], {"classes": "30"}),
    ("isic2016:gs://b/isic/", "isic2016", ["gs://b/isic/"], {}),
    ("pairs:/data/im:gs://b/ms", "pairs", ["/data/im", "gs://b/ms"], {}),
    ("pairs:gs://b/im:rel/ms", "pairs", ["gs://b/im", "rel/ms"], {}),
    ("pairs:ram://t/im:ram://t/ms?classes=gs://b/classes.json&split=train", "pairs",
     ["ram://t/im", "ram://t/ms"], {"classes": "gs://b/classes.json", "split": "train"}),
    ("camvid:hdfs://namenode:8020/data/camvid", "camvid", ["hdfs://namenode:8020/data/camvid"], {}),
    ("pairs:hdfs://nn:8020/im:hdfs://nn:8020/ms", "pairs", ["hdfs://nn:8020/im", "hdfs://nn:8020/ms"], {}),
    ("pairs:gs://my-bucket.v2/a b/im:s3+x://q/ms", "pairs", ["gs://my-bucket.v2/a b/im", "s3+x://q/ms"], {}),
    ("pairs:/local/im:/local/ms", "pairs", ["/local/im", "/local/ms"], {}),
])
def test_parse_spec_keeps_remote_paths_whole(spec, kind, args, opts):
    assert parse_spec(spec) == (kind, args, opts)


def test_split_args_only_rejoins_schemes():
    assert split_args("a:b") == ["a", "b"]
    assert split_args("gs://b/x") == ["gs://b/x"]
    assert split_args("data/gs:b") == ["data/gs", "b"]  # no '//' after it: not a scheme
    assert split_args("Gs://b") == ["Gs", "//b"]  # schemes are lower case
    assert split_args("gs://b/x:12") == ["gs://b/x", "12"]  # a port only right after the host
    assert split_args("") == [""]


def test_spec_errors_name_the_spec_with_remote_paths():
    with pytest.raises(SpecError, match=r"^unknown dataset kind 'foo' in spec 'foo:gs://b/x'; use one of: "):
        parse_spec("foo:gs://b/x")
    with pytest.raises(SpecError, match=r"^pairs:gs://b/im:gs://b/ms\?snapp=1: unknown option 'snapp' "
                                        r"\(did you mean 'snap'\?\)"):
        parse_spec("pairs:gs://b/im:gs://b/ms?snapp=1")
    with pytest.raises(SpecError, match=r"^camvid:gs://: 'gs://' names no bucket or folder"):
        parse_spec("camvid:gs://")
    with pytest.raises(SpecError) as e:
        parse_spec("gs://bucket/camvid")
    msg = str(e.value)
    assert "'gs://bucket/camvid' is a gs:// path, not a dataset spec" in msg
    assert "classfolders:gs://bucket/camvid" in msg and ", ".join(KINDS) in msg
    with pytest.raises(SpecError, match=r"^pairs:gs://b/im: use pairs:IMAGES_DIR:MASKS_DIR"):
        load("pairs:gs://b/im")


def test_absolute_spec_leaves_remote_paths_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = absolute_spec("pairs:gs://b/im:ms?classes=gs://b/c.json&list=l.txt")
    assert spec == f"pairs:gs://b/im:{tmp_path}/ms?classes=gs://b/c.json&list={tmp_path}/l.txt"


def test_remote_spec_refusals_do_not_import_tensorflow():
    code = ("import sys\n"
            "from synthseg_tf.data import SpecError, load\n"
            "for spec in ('gs://b/x', 'foo:gs://b/x', 'camvid:gs://', 'pairs:gs://b/im', "
            "'pairs:gs://b/im:gs://b/ms?bad=1', 'pairs:gs://b/im:gs://b/ms?snap=x'):\n"
            "    try:\n"
            "        load(spec)\n"
            "    except SpecError as e:\n"
            "        print(e)\n"
            "    else:\n"
            "        sys.exit('accepted ' + spec)\n"
            "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(p.stdout.strip().splitlines()) == 6


# ------------------------------------------------------------------ storage helpers
def test_path_helpers():
    assert storage.is_remote("gs://b/x") and storage.is_remote("ram://x") and storage.is_remote("s3+x://q")
    assert not storage.is_remote("/a/b") and not storage.is_remote("a:b") and not storage.is_remote("pairs:gs://b")
    assert not storage.is_remote(None) and not storage.is_remote("")
    assert storage.join("gs://b", "x", "y.png") == "gs://b/x/y.png"
    assert storage.join("gs://b/", "x") == "gs://b/x"
    assert storage.join("/a", "b") == os.path.join("/a", "b")
    assert storage.dirname("gs://b/x/y") == "gs://b/x" and storage.dirname("gs://b/x/") == "gs://b"
    assert storage.dirname("gs://b") == "gs://b" and storage.dirname("/a/b") == "/a"
    assert storage.basename("gs://b/x/") == "x" and storage.basename("gs://b/x/y.png") == "y.png"
    assert storage.relpath("gs://b/x/c/y.png", "gs://b/x") == "c/y.png"
    assert storage.relpath("gs://b/x/c/y.png", "gs://b/x/") == "c/y.png"
    assert storage.abspath("gs://b/x") == "gs://b/x" and storage.abspath("rel") == os.path.abspath("rel")
    with pytest.raises(ValueError):
        storage.relpath("gs://b/x", "s3://b")


def _ram(name=""):
    return f"ram://synthseg-test-{uuid.uuid4().hex[:8]}" + (f"/{name}" if name else "")


def test_ram_filesystem_basics():
    root = _ram()
    storage.makedirs(storage.join(root, "a", "b"))
    storage.atomic_write_bytes(storage.join(root, "a", "b", "f.bin"), b"\x00\x01")
    storage.atomic_write_text(storage.join(root, "a", "t.txt"), "héllo")
    assert storage.isdir(storage.join(root, "a")) and not storage.isdir(storage.join(root, "a", "t.txt"))
    assert storage.isfile(storage.join(root, "a", "t.txt")) and not storage.isfile(storage.join(root, "a"))
    assert storage.exists(storage.join(root, "a", "b", "f.bin")) and not storage.exists(storage.join(root, "zz"))
    assert sorted(storage.listdir(storage.join(root, "a"))) == ["b", "t.txt"]  # no temporary files left
    assert storage.read_text(storage.join(root, "a", "t.txt")) == "héllo"
    assert storage.read_bytes(storage.join(root, "a", "b", "f.bin")) == b"\x00\x01"
    assert storage.read_bytes(storage.join(root, "a", "b", "f.bin"), 1) == b"\x00"
    assert storage.getsize(storage.join(root, "a", "t.txt")) == len("héllo".encode())
    assert storage.glob(storage.join(root, "a", "*.txt")) == [storage.join(root, "a", "t.txt")]
    walked = sorted((d, sorted(s), sorted(f)) for d, s, f in storage.walk(root))
    assert walked == [(root, ["a"], []), (storage.join(root, "a"), ["b"], ["t.txt"]),
                      (storage.join(root, "a", "b"), [], ["f.bin"])]
    with storage.open(storage.join(root, "a", "t.txt"), "r") as f:
        assert f.read() == "héllo"
    with pytest.raises(FileNotFoundError) as e:
        storage.read_bytes(storage.join(root, "missing.png"))
    assert e.value.filename == storage.join(root, "missing.png")
    with pytest.raises(FileNotFoundError):
        storage.listdir(storage.join(root, "nope"))
    with pytest.raises(FileExistsError):
        storage.makedirs(storage.join(root, "a"), exist_ok=False)
    storage.remove(storage.join(root, "a", "t.txt"))
    assert not storage.exists(storage.join(root, "a", "t.txt"))
    storage.rmtree(root)
    assert not storage.exists(root)


@pytest.mark.parametrize("where", ["ram", "local"])
def test_atomic_write_replaces_and_leaves_no_temporary(where, tmp_path):
    folder = _ram("out") if where == "ram" else str(tmp_path / "out")
    path = storage.join(folder, "sub", "x.json")
    storage.atomic_write_text(path, '{"a": 1}')
    storage.atomic_write_text(path, '{"a": 2}')
    storage.atomic_write_bytes(storage.join(folder, "sub", "y.bin"), b"abc")
    assert storage.read_text(path) == '{"a": 2}'
    assert storage.read_bytes(storage.join(folder, "sub", "y.bin")) == b"abc"
    assert sorted(storage.listdir(storage.join(folder, "sub"))) == ["x.json", "y.bin"]


def test_remote_atomic_write_failure_is_a_storage_error_without_leftovers(monkeypatch):
    import tensorflow as tf

    folder = _ram("fail")
    path = storage.join(folder, "x.txt")
    storage.atomic_write_text(path, "old")

    def broken_rename(src, dst, overwrite=False):
        raise tf.errors.PermissionDeniedError(None, None, "denied by the test")

    monkeypatch.setattr(tf.io.gfile, "rename", broken_rename)
    with pytest.raises(StorageError, match=r"^writing ram://.*/x.txt failed: .*denied by the test"):
        storage.atomic_write_text(path, "new")
    monkeypatch.undo()
    assert storage.listdir(folder) == ["x.txt"] and storage.read_text(path) == "old"


# ------------------------------------------------------------------ datasets on ram:// vs a local copy
def _copy_to(local_root, remote_root):
    """Copy a local tree into ``remote_root`` (byte for byte)."""
    for d, _, files in os.walk(local_root):
        rel = os.path.relpath(d, local_root)
        target = remote_root if rel == "." else storage.join(remote_root, *rel.split(os.sep))
        storage.makedirs(target)
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                storage.atomic_write_bytes(storage.join(target, f), fh.read())


def _same_data(local_ds, remote_ds, local_root, remote_root):
    assert len(local_ds) == len(remote_ds) > 0
    assert local_ds.task == remote_ds.task and local_ds.classes.to_dict() == remote_ds.classes.to_dict()
    assert local_ds.splits == remote_ds.splits
    for a, b in zip(local_ds.samples, remote_ds.samples):
        assert b.image.startswith(remote_root + "/")
        assert os.path.relpath(a.image, local_root) == storage.relpath(b.image, remote_root)
        assert (a.source_id, a.split, a.label) == (b.source_id, b.split, b.label)
        ia, ma = local_ds.read(a)
        ib, mb = remote_ds.read(b)
        assert ia.shape == ib.shape and np.array_equal(ia, ib)
        assert (ma is None and mb is None) or np.array_equal(ma, mb)


@pytest.fixture
def pairs_copy(tmp_path):
    """A pairs dataset (0/128/255 masks, `_mask` suffixes) on disk and the same files in ram://."""
    rng = np.random.default_rng(0)
    local = tmp_path / "pairs"
    for i in range(5):
        img, mask = scene(rng, values=(0, 255, 128))
        save(local / "images" / f"img{i}.png", img)
        save(local / "masks" / f"img{i}_mask.png", mask)
    remote = _ram("pairs")
    _copy_to(str(local), remote)
    return str(local), remote


def test_pairs_on_ram_matches_local_copy(pairs_copy):
    local, remote = pairs_copy
    lds = load(f"pairs:{local}/images:{local}/masks?void=255")
    rds = load(f"pairs:{remote}/images:{remote}/masks?void=255")
    assert rds.spec == f"pairs:{remote}/images:{remote}/masks?void=255"
    assert rds.num_classes == 2  # 0 and 128; 255 is void
    _same_data(lds, rds, local + "/images", remote + "/images")
    # mixed local images and remote masks
    mixed = load(f"pairs:{local}/images:{remote}/masks?void=255")
    assert [s.mask for s in mixed.samples] == [s.mask for s in rds.samples]
    # a list file on ram:// and a class table on ram://
    storage.atomic_write_text(storage.join(remote, "keep.txt"), "img1\nimg3.png\n")
    rds.classes.save(storage.join(remote, "table.json"))
    sub = load(f"pairs:{remote}/images:{remote}/masks?list={remote}/keep.txt&classes={remote}/table.json")
    assert [s.source_id for s in sub.samples] == ["img1", "img3"] and sub.num_classes == 2


def test_validate_on_ram_reports_files_by_their_remote_path(pairs_copy):
    from synthseg_tf.data import validate

    local, remote = pairs_copy
    storage.atomic_write_bytes(storage.join(remote, "images", "img1.png"), b"not an image at all")
    png = storage.read_bytes(storage.join(remote, "images", "img2.png"))
    storage.atomic_write_bytes(storage.join(remote, "images", "img2.png"), png[:len(png) // 2])
    storage.atomic_write_bytes(storage.join(remote, "images", "img3.png"), b"")
    rep = validate(load(f"pairs:{remote}/images:{remote}/masks"))
    bad = dict(rep.bad)
    assert bad[f"{remote}/images/img1.png"] == "not an image (a text file: 'not an image at all')"
    assert bad[f"{remote}/images/img2.png"].startswith("corrupt or truncated image (")
    assert bad[f"{remote}/images/img3.png"] == "empty file (0 bytes), not an image"
    assert rep.checked == 5 and len(rep.good_indices) == 2
    from synthseg_tf.data import read_image

    with pytest.raises(DataError, match=r"^ram://.*/images/gone.png: file not found$"):
        read_image(f"{remote}/images/gone.png")
    with pytest.raises(DataError, match=r"^ram://.*/images: is a folder, not an image file$"):
        read_image(f"{remote}/images")


def test_pixel_limit_applies_to_remote_files(pairs_copy):
    from synthseg_tf.data import read_image

    _, remote = pairs_copy
    with pytest.raises(DataError, match=r"^ram://.*/img0.png: image has 32x24 = 768 pixels, over the limit of 100"):
        read_image(f"{remote}/images/img0.png", max_pixels=100)


def test_camvid_on_ram_matches_local_copy(tmp_path):
    rng = np.random.default_rng(5)
    local = tmp_path / "camvid"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            img, m = scene(rng, values=(0, 3, 11))
            save(local / split / f"f{i}.png", img)
            save(local / f"{split}annot" / f"f{i}.png", m)
    remote = _ram("camvid")
    _copy_to(str(local), remote)
    lds, rds = load(f"camvid:{local}"), load(f"camvid:{remote}/")
    assert rds.num_classes == 11 and rds.splits == ["train", "val"]
    _same_data(lds, rds, str(local), remote)
    assert len(load(f"camvid:{remote}?split=val")) == 2


def test_classfolders_on_ram_matches_local_copy(tmp_path):
    rng = np.random.default_rng(1)
    local = tmp_path / "cf"
    for split in ("train", "val"):
        for c, n in (("cat", 3), ("dog", 2)):
            for i in range(n):
                save(local / split / c / f"{c}{i}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    remote = _ram("cf")
    _copy_to(str(local), remote)
    lds, rds = load(f"classfolders:{local}"), load(f"classfolders:{remote}")
    assert rds.classes.names == ["cat", "dog"] and len(rds) == 10
    assert rds.samples[0].source_id == "train/cat/cat0"
    _same_data(lds, rds, str(local), remote)


def test_cityscapes_and_missing_remote_folders(tmp_path):
    pytest.importorskip("cityscapesscripts")
    rng = np.random.default_rng(2)
    local = tmp_path / "cs"
    for city in ("aachen", "bochum"):
        img, _ = scene(rng)
        save(local / "leftImg8bit" / "train" / city / f"{city}_000000_000019_leftImg8bit.png", img)
        save(local / "gtFine" / "train" / city / f"{city}_000000_000019_gtFine_labelIds.png",
             np.full((24, 32), 7, np.uint8))
    remote = _ram("cs")
    _copy_to(str(local), remote)
    _same_data(load(f"cityscapes:{local}"), load(f"cityscapes:{remote}"), str(local), remote)
    with pytest.raises(SpecError, match=r"^camvid:ram://nowhere/x: CamVid folder ram://nowhere/x does not exist$"):
        load("camvid:ram://nowhere/x")
    storage.atomic_write_bytes(f"{remote}/a.png", b"x")
    with pytest.raises(SpecError, match=r"^pairs:ram://.*: images folder ram://.*/cs/a.png is a file, not a folder$"):
        load(f"pairs:{remote}/a.png:{remote}")


def test_make_dataset_reads_a_ram_spec(pairs_copy):
    from synthseg_tf.data import make_dataset

    local, remote = pairs_copy
    kw = dict(image_size=(16, 16), batch_size=5, shuffle=False)
    lb = next(iter(make_dataset(f"pairs:{local}/images:{local}/masks?void=255", **kw)))
    rb = next(iter(make_dataset(f"pairs:{remote}/images:{remote}/masks?void=255", **kw)))
    assert rb["image"].shape == (5, 16, 16, 3) and rb["mask"].shape == (5, 16, 16)
    assert np.array_equal(lb["image"].numpy(), rb["image"].numpy())
    assert np.array_equal(lb["mask"].numpy(), rb["mask"].numpy())


def test_tfrecords_on_ram(pairs_copy, tmp_path):
    from synthseg_tf.data import make_dataset, write_tfrecords
    from synthseg_tf.data.tfrecord import iter_examples, read_class_table, read_metadata, tfrecord_files

    local, remote = pairs_copy
    ds = load(f"pairs:{remote}/images:{remote}/masks?void=255")
    out = _ram("records")
    meta = write_tfrecords(ds, out, shards=2)
    local_meta = write_tfrecords(load(f"pairs:{local}/images:{local}/masks?void=255"), str(tmp_path / "rec"),
                                 shards=2)
    assert meta["count"] == local_meta["count"] == 5 and meta["shards"] == [3, 2]
    assert sorted(storage.listdir(out)) == ["classes.json", "data-00000-of-00002.tfrecord",
                                            "data-00001-of-00002.tfrecord", "dataset.json"]
    assert not [n for n in storage.listdir(storage.dirname(out)) if ".tmp-" in n]  # temporary folder gone
    assert read_metadata(out)["count"] == 5 and read_class_table(out).to_dict() == ds.classes.to_dict()
    assert tfrecord_files(out) == [f"{out}/data-00000-of-00002.tfrecord", f"{out}/data-00001-of-00002.tfrecord"]
    remote_ex = sorted(iter_examples(out), key=lambda e: e["source_id"])
    local_ex = sorted(iter_examples(str(tmp_path / "rec")), key=lambda e: e["source_id"])
    for a, b in zip(local_ex, remote_ex):
        assert a["source_id"] == b["source_id"]
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    batch = next(iter(make_dataset(out, image_size=(16, 16), batch_size=5, shuffle=False)))
    assert batch["image"].shape == (5, 16, 16, 3)
    assert next(iter(make_dataset(f"tfrecord:{out}", image_size=(16, 16), batch_size=5, shuffle=False))
                )["mask"].shape == (5, 16, 16)
    # refused without overwrite; with it, one shard replaces two and the old ones are gone
    with pytest.raises(FileExistsError, match="already exists"):
        write_tfrecords(ds, out, shards=1)
    assert write_tfrecords(ds, out, shards=1, overwrite=True)["shards"] == [5]
    assert sorted(storage.listdir(out)) == ["classes.json", "data-00000-of-00001.tfrecord", "dataset.json"]
    # a failed write leaves the folder as it was and no temporary folder
    bad = load(f"pairs:{remote}/images:{remote}/masks?void=255")
    storage.atomic_write_bytes(storage.join(remote, "images", "img4.png"), b"")
    with pytest.raises(DataError, match="empty file"):
        write_tfrecords(bad, out, shards=2, overwrite=True)
    assert sorted(storage.listdir(out)) == ["classes.json", "data-00000-of-00001.tfrecord", "dataset.json"]
    assert not [n for n in storage.listdir(storage.dirname(out)) if ".tmp-" in n]


# ------------------------------------------------------------------ exports read from ram://
def test_segmenter_export_loads_from_ram(tmp_path):
    import tensorflow as tf

    from synthseg_tf.errors import ModelLoadError
    from synthseg_tf.models.loading import ModelNotFound
    from synthseg_tf.models.unet import export_unet, load_segmenter

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((None, None, 3))
    model = tf.keras.Model(inp, tf.keras.layers.Conv2D(3, 1, activation="softmax")(inp))
    local = export_unet(model, str(tmp_path / "seg"), ["background", "car", "tree"], image_size=16)
    remote = _ram("seg")
    _copy_to(local, remote)
    images = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    seg = load_segmenter(remote)
    assert seg.class_table.names == ["background", "car", "tree"] and seg.image_size == (16, 16)
    assert np.array_equal(np.asarray(seg(images)), np.asarray(load_segmenter(local)(images)))
    with pytest.raises(ModelNotFound, match=r"^ram://.*/nowhere: segmenter export not found"):
        load_segmenter(_ram("nowhere"))
    other = _ram("photos")
    storage.atomic_write_bytes(storage.join(other, "a.png"), b"x")
    with pytest.raises(ModelLoadError, match=r"^ram://.*/photos: not a segmenter export: .*; it holds a.png$"):
        load_segmenter(other)
