"""`synthseg generate`: the Beam pipeline's output, determinism, resume, quality filter, runner options."""
import json
import os
import shutil

import numpy as np
import pytest

from synthseg_tf.generation.pipeline import GenerationConfig, beam_options, run_generation

from conftest import save, scene


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    """A 32x32 pix2pix generator trained for 2 steps on blob scenes (quality is irrelevant here)."""
    from synthseg_tf.data import load, make_dataset
    from synthseg_tf.training.gan import train_gan

    root = tmp_path_factory.mktemp("gen")
    rng = np.random.default_rng(0)
    for i in range(10):
        img, m = scene(rng, h=32, w=32, values=(0, 1, 2))
        save(root / "im" / f"{i}.png", img)
        save(root / "ms" / f"{i}.png", m)
    spec = f"pairs:{root}/im:{root}/ms"
    ds = load(spec)
    train = make_dataset(ds, image_size=32, batch_size=2, augment=True, repeat=True, seed=0, drop_remainder=True)
    run = str(root / "run")
    train_gan(train, run, num_classes=3, image_size=32, steps=2, batch_size=2, class_table=ds.classes,
              base_filters=8, image_every=2, log_every=1, checkpoint_every=2, verbose=False,
              extra_config={"data": spec, "conditioning": "labelmap",
                            "train_source_ids": sorted(s.source_id for s in ds.samples)})
    return run


def _cfg(gen, out, **kw):
    base = dict(generator=gen, out=str(out), n=14, samples_per_shard=5, batch_size=4, seed=3)
    base.update(kw)
    return GenerationConfig(**base)


def _manifest(out):
    with open(os.path.join(out, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_generate_writes_exactly_n_samples(tiny_generator, tmp_path):
    out = tmp_path / "g"
    summary = run_generation(_cfg(tiny_generator, out), log=lambda m: None)
    assert summary["status"] == "complete" and summary["kept"] == 14
    entries = _manifest(out)
    assert [e["index"] for e in entries] == list(range(14))
    assert all(e["generator"] == summary["identity"]["generator_fingerprint"] and e["seed"] == 3 for e in entries)
    assert all(e["map"] == "sampled" and e["source_ids"] for e in entries)
    assert len(os.listdir(out / "images")) == 14 and len(os.listdir(out / "masks")) == 14
    from synthseg_tf.data.tfrecord import iter_examples

    exs = list(iter_examples(str(out)))
    assert len(exs) == 14 and all(e["synthetic"] for e in exs)
    assert exs[0]["image"].shape == (32, 32, 3) and set(np.unique(exs[0]["mask"])) <= {0, 1, 2}
    from synthseg_tf.data import make_dataset

    batch = next(iter(make_dataset(str(out), image_size=32, batch_size=14, shuffle=False)))
    assert batch["image"].shape == (14, 32, 32, 3)


def test_same_seed_same_output_and_refusal(tiny_generator, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_generation(_cfg(tiny_generator, a, n=6), log=lambda m: None)
    run_generation(_cfg(tiny_generator, b, n=6), log=lambda m: None)
    for name in sorted(os.listdir(a / "images")):
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()
        assert (a / "masks" / name).read_bytes() == (b / "masks" / name).read_bytes()
    assert _manifest(a) == _manifest(b)
    with pytest.raises(FileExistsError, match="other settings"):
        run_generation(_cfg(tiny_generator, a, n=6, seed=4), log=lambda m: None)
    os.makedirs(tmp_path / "foreign")
    (tmp_path / "foreign" / "x.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a synthseg generation folder"):
        run_generation(_cfg(tiny_generator, tmp_path / "foreign", n=6), log=lambda m: None)
    assert (tmp_path / "foreign" / "x.txt").read_text() == "user data"


def test_rerun_resumes_without_duplicates(tiny_generator, tmp_path):
    out = tmp_path / "r"
    cfg = _cfg(tiny_generator, out)
    run_generation(cfg, log=lambda m: None)
    reference = _manifest(out)
    logs = []
    run_generation(cfg, log=logs.append)  # finished: nothing to do
    assert any("already complete" in m for m in logs), logs
    # Simulate a run killed after shard 0: later shards, the manifest and completion are gone.
    state = json.loads((out / "generation.json").read_text())
    state["status"] = "running"
    (out / "generation.json").write_text(json.dumps(state))
    for s in (1, 2):
        os.remove(out / "parts" / f"shard-{s:05d}.json")
    os.remove(out / "manifest.jsonl")
    shutil.rmtree(out / "images")
    os.makedirs(out / "images")
    logs = []
    run_generation(cfg, log=logs.append)
    assert any("shards 1..2" in m for m in logs), logs  # only the missing shards were made again
    assert _manifest(out) == reference
    assert len(os.listdir(out / "images")) == 9  # shards 1 and 2 again: 5..9 and 10..13 (the cut at n=14)


def test_quality_filter_keeps_first_n_passing(tiny_generator, tmp_path):
    from synthseg_tf.models.unet import build_unet, export_unet

    seg = str(tmp_path / "seg")
    model = build_unet(3, input_shape=(32, 32, 3))
    export_unet(model, seg, class_names=["a", "b", "c"], image_size=(32, 32))
    scored = tmp_path / "scored"
    run_generation(_cfg(tiny_generator, scored, n=20, quality_model=seg), log=lambda m: None)
    scores = {e["index"]: e["quality"] for e in _manifest(scored)}
    assert all(0.0 <= q <= 1.0 for q in scores.values())
    threshold = float(np.median(list(scores.values())))
    out = tmp_path / "filtered"
    summary = run_generation(_cfg(tiny_generator, out, n=5, quality_model=seg, min_quality=threshold),
                             log=lambda m: None)
    kept = _manifest(out)
    expected = [i for i in sorted(scores) if scores[i] >= threshold][:5]
    assert [e["index"] for e in kept] == expected
    assert summary["rejected"] == expected[-1] + 1 - 5
    assert all(e["quality"] >= threshold for e in kept)


def test_impossible_quality_stops_with_clear_error(tiny_generator, tmp_path):
    from synthseg_tf.models.unet import build_unet, export_unet

    seg = str(tmp_path / "seg")
    export_unet(build_unet(3, input_shape=(32, 32, 3)), seg, class_names=["a", "b", "c"], image_size=(32, 32))
    with pytest.raises(RuntimeError, match="passed --min-quality"):
        run_generation(_cfg(tiny_generator, tmp_path / "x", n=2, quality_model=seg, min_quality=1.01,
                            max_candidates_factor=5), log=lambda m: None)


def test_min_quality_needs_a_model(tiny_generator, tmp_path):
    with pytest.raises(ValueError, match="--quality-model"):
        run_generation(_cfg(tiny_generator, tmp_path / "x", min_quality=0.5), log=lambda m: None)


def test_dataflow_options_pass_through_and_validate(tiny_generator, tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import GoogleCloudOptions, StandardOptions, WorkerOptions
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    # Beam's validator asks GCS about the buckets (soft-delete policy, a default bucket); offline that
    # is minutes of credential and HTTP retries (207 s here), so those two network calls answer "no".
    monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled", lambda self, arg_name: None)
    monkeypatch.setattr(GoogleCloudOptions, "_create_default_gcs_bucket", lambda self: None)
    args = ["--project=my-project", "--region=europe-west4", "--temp_location=gs://bucket/tmp",
            "--staging_location=gs://bucket/staging", "--max_num_workers=20", "--machine_type=n1-standard-8"]
    opts = beam_options(_cfg(tiny_generator, tmp_path / "d", runner="DataflowRunner", beam_args=args))
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gco = opts.view_as(GoogleCloudOptions)
    assert (gco.project, gco.region, gco.temp_location) == ("my-project", "europe-west4", "gs://bucket/tmp")
    assert opts.view_as(WorkerOptions).max_num_workers == 20
    assert PipelineOptionsValidator(opts, DataflowRunner()).validate() == []
    bad = beam_options(_cfg(tiny_generator, tmp_path / "d", runner="DataflowRunner", beam_args=["--project=p"]))
    errors = PipelineOptionsValidator(bad, DataflowRunner()).validate()
    assert any("temp_location" in e or "staging_location" in e for e in errors)


@pytest.mark.slow
def test_two_direct_workers_match_one(tiny_generator, tmp_path):
    """Byte-identical files whatever the worker count and --batch-size (fixed, padded inference batches)."""
    one, two = tmp_path / "one", tmp_path / "two"
    run_generation(_cfg(tiny_generator, one, n=10), log=lambda m: None)
    run_generation(_cfg(tiny_generator, two, n=10, workers=2, batch_size=3), log=lambda m: None)
    assert _manifest(one) == _manifest(two)
    files = sorted(os.path.relpath(os.path.join(r, f), one) for r, _, fs in os.walk(one) for f in fs)
    assert files == sorted(os.path.relpath(os.path.join(r, f), two) for r, _, fs in os.walk(two) for f in fs)
    for name in files:
        if name not in ("generation.json", "dataset.json"):  # start/finish times; the folder's own path
            assert (one / name).read_bytes() == (two / name).read_bytes(), name


_FAST_EXIT_SCRIPT = """
import atexit, sys, types
from synthseg_tf.generation import pipeline as gp
atexit.register(lambda: open(sys.argv[1], "w").write("finalised"))  # registered first, so it runs last
if sys.argv[2] != "driver":
    sys.modules["__main__"].__spec__ = types.SimpleNamespace(name=gp.SDK_WORKER_MAIN)
print("armed" if gp.arm_fast_worker_exit() else "not armed")  # left in the buffer: the exit must flush it
if sys.argv[2] == "fail":
    raise RuntimeError("the harness failed")
"""


@pytest.mark.parametrize("role, rc, finalised, armed", [("worker", 0, False, "armed"), ("fail", 1, True, "armed"),
                                                        ("driver", 0, True, "not armed")])
def test_fast_worker_exit_only_after_a_clean_worker_run(tmp_path, role, rc, finalised, armed):
    """A Beam worker subprocess skips the interpreter's finalisation (os._exit) after a clean run,
    flushing its output first; after an uncaught exception it finalises as usual and keeps its
    failing status; any other process (the driver, an in-process runner) is never armed."""
    import subprocess
    import sys

    marker = tmp_path / "finalised"
    proc = subprocess.run([sys.executable, "-c", _FAST_EXIT_SCRIPT, str(marker), role], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == rc, proc.stderr
    assert proc.stdout.strip() == armed
    assert marker.exists() == finalised
    if role == "fail":
        assert "the harness failed" in proc.stderr


def test_fast_worker_exit_is_not_armed_in_this_process():
    from synthseg_tf.generation.pipeline import arm_fast_worker_exit, in_sdk_worker_process

    assert not in_sdk_worker_process() and not arm_fast_worker_exit()
