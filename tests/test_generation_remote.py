"""`synthseg generate` into storage the workers share with the driver only through Beam's
FileSystems (issue 9): a registered non-local scheme, DirectRunner worker *processes*."""
import json
import os

import pytest

from synthseg_tf.generation import outfs
from synthseg_tf.generation.pipeline import GenerationConfig, read_manifest, run_generation

from test_generation import _cfg, tiny_generator  # noqa: F401  (the module-scoped fixture)

PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")


@pytest.fixture
def sharedfs(tmp_path, monkeypatch):
    root = tmp_path / "remote-store"
    root.mkdir()
    monkeypatch.setenv("SYNTHSEG_SHAREDFS_ROOT", str(root))
    monkeypatch.setenv("PYTHONPATH", PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(PLUGINS)
    # registers the scheme in the driver, as --beam_plugins does on workers; imported once per process
    # (a second import would register a second class for the same scheme, which Beam refuses)
    __import__("sharedfs_plugin")
    monkeypatch.chdir(tmp_path)
    yield root


def _store_files(root, out_url):
    base = os.path.join(root, "store", *out_url[len("sharedfs://"):].split("/"))
    return sorted(os.path.relpath(os.path.join(r, f), base) for r, _, fs in os.walk(base) for f in fs)


@pytest.mark.slow
def test_generation_on_worker_processes_into_a_non_local_filesystem(tiny_generator, sharedfs, tmp_path):  # noqa: F811
    """Two DirectRunner worker processes write into sharedfs://, the driver assembles the
    manifest from it; the result equals a local run byte for byte, nothing lands on local disk
    under the URL, and a rerun is served from what is there."""
    local = tmp_path / "local"
    run_generation(_cfg(tiny_generator, local, n=12), log=lambda m: None)

    url = "sharedfs://bucket/gen/out"
    cfg = _cfg(tiny_generator, url, n=12, workers=2, beam_args=["--beam_plugins=sharedfs_plugin"])
    logs = []
    summary = run_generation(cfg, log=logs.append)
    assert summary["status"] == "complete" and summary["kept"] == 12 and summary["pipelines"] == 1, summary
    assert not (tmp_path / "sharedfs:").exists()  # no local-file API was used on the URL

    files = _store_files(sharedfs, url)
    want = sorted(os.path.relpath(os.path.join(r, f), local) for r, _, fs in os.walk(local) for f in fs)
    assert files == want
    for name in want:
        if name not in ("generation.json", "dataset.json"):
            assert outfs.read_bytes(outfs.join(url, name)) == (local / name).read_bytes(), name
    assert [e["index"] for e in read_manifest(url)] == list(range(12))

    # the worker processes (not the driver) created the shard files through the plugin
    ops = {int(p): open(os.path.join(sharedfs, ".ops", p)).read().split() for p in os.listdir(sharedfs / ".ops")}
    workers = {pid: o for pid, o in ops.items() if pid != os.getpid()}
    assert workers and sum(o.count("create") for o in workers.values()) >= 3 * 2, ops.keys()

    again = run_generation(cfg, log=logs.append)
    assert again["kept"] == 12 and any("already complete" in m for m in logs)


def test_outfs_tfrecord_framing_is_what_tensorflow_reads_and_writes(tmp_path):
    import tensorflow as tf

    recs = [b"", b"a", os.urandom(1000)]
    ours = tmp_path / "ours.tfrecord"
    ours.write_bytes(outfs.tfrecord_bytes(recs))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == recs
    theirs = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for r in recs:
            w.write(r)
    assert theirs.read_bytes() == ours.read_bytes()
    assert outfs.read_tfrecords(theirs.read_bytes()) == recs
    damaged = bytearray(theirs.read_bytes())
    damaged[-3] ^= 1
    with pytest.raises(ValueError, match="damaged TFRecord file"):
        outfs.read_tfrecords(bytes(damaged), "x.tfrecord")


def test_outfs_on_a_registered_scheme(sharedfs):
    url = "sharedfs://b/f"
    outfs.write_text(outfs.join(url, "a.json"), json.dumps({"x": 1}))
    outfs.write_bytes(outfs.join(url, "sub", "b.bin"), b"123")
    assert outfs.listdir(url) == ["a.json", "sub"] and outfs.isdir(url) and not outfs.isdir(url + "x")
    assert outfs.read_bytes(outfs.join(url, "sub", "b.bin")) == b"123"
    assert outfs.optional_text(outfs.join(url, "missing")) is None
    with outfs.text_writer(outfs.join(url, "m.jsonl")) as f:
        f.write("line\n")
    with pytest.raises(RuntimeError):
        with outfs.text_writer(outfs.join(url, "broken.jsonl")) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert not outfs.exists(outfs.join(url, "broken.jsonl"))
    assert outfs.read_text(outfs.join(url, "m.jsonl")) == "line\n"
    assert [n for n in outfs.listdir(url) if n.startswith(".tmp-")] == []
    assert outfs.remove([outfs.join(url, "a.json"), outfs.join(url, "nope")]) == 1
    from synthseg_tf.data.io import DataError

    with pytest.raises(DataError, match="escapes"):
        outfs.safe_join(url, "../x.png", "manifest")
