"""GAN training (issue 10): a NaN/Inf loss or non-finite weights stop training with the step, the
losses and the last good checkpoint named and nothing non-finite saved; checkpoints are written
atomically (a failed or killed save never replaces the previous one); the last K plus the best are
kept; a real SIGKILL mid-training resumes at the same step to the same weights."""
import csv
import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import synthseg_tf  # noqa: F401  (environment settings before TensorFlow loads)
import tensorflow as tf

from synthseg_tf.errors import EXIT_DIVERGED, StorageError, TrainingDiverged
from synthseg_tf.training import gan
from test_gan_training import REPO, SIZE, K, B, blob_data, camvid_tree

TINY = dict(base_filters=8, log_every=1, image_every=100, checkpoint_every=2, verbose=False, diffaugment=None)


def ckpt_files(run):
    """{step: sorted file names} of the checkpoints on disk (anything named ckpt-*)."""
    out = {}
    for f in os.listdir(os.path.join(run, "checkpoints")):
        if f.startswith("ckpt-"):
            out.setdefault(int(f[5:].split(".")[0].split("_")[0]), []).append(f)
    return out


def listed_steps(run):
    state = tf.train.get_checkpoint_state(os.path.join(run, "checkpoints"))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []


def log_steps(run):
    with open(os.path.join(run, "log.csv"), newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def poisoned_dataset(bad_batch, value):
    """Unshuffled batches of 4; batch number ``bad_batch`` (1-based = the step that reads it) has
    ``value`` (NaN/Inf) in its images."""
    data = blob_data(n=6 * B)
    data["image"][(bad_batch - 1) * B:bad_batch * B, 3, 3] = value
    return tf.data.Dataset.from_tensor_slices(data).repeat().batch(B)


def checkpoint_tensors(prefix, skip=("save_counter", "iterator", "_CHECKPOINTABLE_OBJECT_GRAPH")):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if not any(s in k for s in skip)}


# --------------------------------------------------------------------------- divergence
def test_nan_loss_at_a_checkpoint_step_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged) as e:  # NaN in the 4th batch: step 4, a checkpoint step
        gan.train_gan(poisoned_dataset(4, np.nan), run, K, SIZE, steps=6, batch_size=B, **TINY)
    msg = str(e.value)
    assert f"{run}: training diverged at step 4/6: non-finite training loss (" in msg
    assert "g_l1=nan" in msg and f"the last good checkpoint {run}/checkpoints/ckpt-2 (step 2) is kept" in msg
    assert e.value.step == 4
    assert listed_steps(run) == [2] and set(ckpt_files(run)) == {2}  # no NaN ckpt-4 on disk
    assert all(np.isfinite(v).all() for v in checkpoint_tensors(os.path.join(run, "checkpoints", "ckpt-2")).values()
               if np.issubdtype(np.asarray(v).dtype, np.floating))
    assert log_steps(run) == [1, 2, 3, 4]  # the diverging step is logged, once
    with open(os.path.join(run, "config.json")) as f:
        cfg = json.load(f)
    assert (cfg["status"], cfg["diverged_at_step"], cfg["last_good_checkpoint"]) == ("diverged", 4, "ckpt-2")
    assert not os.path.exists(os.path.join(run, "generator"))


def test_inf_weights_are_never_checkpointed_and_the_cli_exits_4(tmp_path, monkeypatch, capsys):
    """Losses still finite, but a weight became Inf during step 2: the step-2 checkpoint is refused."""
    from synthseg_tf.cli import main

    make = gan._make_train_function

    def poisoning(model, strategy, iterator, n):
        fn, calls = make(model, strategy, iterator, n), []

        def step():
            fn()
            calls.append(1)
            if len(calls) == 2:
                v = model.discriminator.trainable_variables[0]
                v.assign(tf.fill(v.shape, np.inf))
        return step

    monkeypatch.setattr(gan, "_make_train_function", poisoning)
    root, run = camvid_tree(tmp_path / "camvid", counts=(("train", 6),)), str(tmp_path / "run")
    rc = main(["gan", "train", "--data", f"camvid:{root}", "--out", run, "--image-size", str(SIZE), "--steps", "4",
               "--batch-size", "2", "--base-filters", "8", "--monitor", "0", "--diffaugment", "none",
               "--log-every", "1", "--image-every", "100", "--checkpoint-every", "1"])
    err = capsys.readouterr().err
    assert rc == EXIT_DIVERGED and "Traceback" not in err
    assert (f"training diverged at step 2/4: non-finite weights before saving the checkpoint" in err
            and f"{run}/checkpoints/ckpt-1 (step 1) is kept" in err), err
    assert listed_steps(run) == [1] and set(ckpt_files(run)) == {1}


# --------------------------------------------------------------------------- atomic checkpoints
def _keeper(tmp_path, keep=2):
    v = tf.Variable(0.0)
    return v, gan.CheckpointKeeper(tf.train.Checkpoint(v=v), str(tmp_path / "checkpoints"), keep)


def test_a_failing_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    v, keeper = _keeper(tmp_path)
    v.assign(1.0)
    keeper.save(1)
    write = tf.train.Checkpoint.write

    def disk_full(self, prefix, *a, **kw):  # the data is half written when the disk fills up
        path = write(self, prefix, *a, **kw)
        for f in glob.glob(prefix + ".data-*"):
            with open(f, "r+b") as fh:
                fh.truncate(2)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tf.train.Checkpoint, "write", disk_full)
    v.assign(2.0)
    d = str(tmp_path / "checkpoints")
    with pytest.raises(StorageError, match=rf"{d}/ckpt-2: writing the step 2 checkpoint failed \(.*No space left.*\); "
                                           rf"the previous checkpoint {d}/ckpt-1 is kept"):
        keeper.save(2)
    monkeypatch.undo()
    assert sorted(os.listdir(d)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]  # no partial file
    assert tf.train.latest_checkpoint(d).endswith("ckpt-1")
    v2, again = _keeper(tmp_path)
    tf.train.Checkpoint(v=v2).restore(again.latest_checkpoint).assert_consumed()
    assert v2.numpy() == 1.0


def test_killed_between_renames_then_reopened_resumes_from_the_previous_checkpoint(tmp_path, monkeypatch):
    v, keeper = _keeper(tmp_path)
    keeper.save(1)
    real_move = gan._move_checkpoint

    def killed(src, dst):  # the data file is renamed into place, then the process dies
        for f in glob.glob(src + ".data-*"):
            os.replace(f, dst + f[len(src):])
        raise KeyboardInterrupt  # a kill: no cleanup runs

    monkeypatch.setattr(gan, "_move_checkpoint", killed)
    v.assign(5.0)
    with pytest.raises(KeyboardInterrupt):
        keeper.save(2)
    d = str(tmp_path / "checkpoints")
    assert "ckpt-2.data-00000-of-00001" in os.listdir(d) and tf.train.latest_checkpoint(d).endswith("ckpt-1")
    monkeypatch.setattr(gan, "_move_checkpoint", real_move)
    v2, reopened = _keeper(tmp_path)  # what a --resume does first
    assert reopened.latest_step == 1
    assert sorted(os.listdir(d)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]  # leftovers gone
    reopened.save(2)
    assert tf.train.latest_checkpoint(d).endswith("ckpt-2") and reopened.steps == [1, 2]


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    v, keeper = _keeper(tmp_path)
    for step in (1, 2):
        v.assign(float(step))
        keeper.save(step)
    data = os.path.join(str(tmp_path), "checkpoints", "ckpt-2.data-00000-of-00001")
    with open(data, "r+b") as f:  # a disk error after the write: the bytes are wrong, the size is not
        f.seek(0)
        f.write(b"\xff" * 4)
    v.assign(-1.0)
    warnings = []
    _, reopened = _keeper(tmp_path)
    reopened.checkpoint = tf.train.Checkpoint(v=v)
    assert reopened.restore(log=warnings.append).endswith("ckpt-1") and v.numpy() == 1.0
    assert len(warnings) == 1 and "ckpt-2 is damaged" in warnings[0] and "Checksum does not match" in warnings[0]
    assert reopened.steps == [1] and set(ckpt_files(str(tmp_path))) == {1}  # the damaged one is not kept
    reopened.save(2)
    reopened.save(3)
    assert reopened.steps == [2, 3]
    for step in (2, 3):
        for f in glob.glob(os.path.join(str(tmp_path), "checkpoints", f"ckpt-{step}.data-*")):
            os.truncate(f, 1)
    with pytest.raises(gan.ModelLoadError,
                       match=r"no checkpoint reads back whole \(left in place\): .*ckpt-3: .*ckpt-2: "):
        reopened.restore()
    assert reopened.steps == [2, 3] and set(ckpt_files(str(tmp_path))) == {2, 3}  # nothing deleted


# --------------------------------------------------------------------------- how many are kept
def test_keeps_the_last_k_plus_the_best_across_reopening(tmp_path):
    v, keeper = _keeper(tmp_path, keep=2)
    scores = {2: 5.0, 4: 1.0, 6: 3.0, 8: None, 10: 4.0}  # 8: no validation at that step
    for step, score in scores.items():
        keeper.save(step, score)
    d = str(tmp_path / "checkpoints")
    assert keeper.steps == [4, 8, 10] and set(ckpt_files(str(tmp_path))) == {4, 8, 10}
    with open(os.path.join(d, "best.json")) as f:
        assert json.load(f) == {"monitor": "val_g_l1", "step": 4, "value": 1.0, "checkpoint": "ckpt-4"}
    _, reopened = _keeper(tmp_path, keep=1)  # a resume with --keep-checkpoints 1: last one + best
    assert reopened.steps == [4, 10] and set(ckpt_files(str(tmp_path))) == {4, 10}
    reopened.save(12, 0.5)  # a new best replaces the old one
    assert reopened.steps == [12] and set(ckpt_files(str(tmp_path))) == {12}
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
        gan.train_gan(None, str(tmp_path / "x"), K, SIZE, steps=1, batch_size=B, keep_checkpoints=0)


def test_cli_keep_checkpoints_must_be_positive(tmp_path, capsys):
    from synthseg_tf.cli import main

    assert main(["gan", "train", "--data", f"camvid:{tmp_path}", "--out", str(tmp_path / "run"), "--steps", "1",
                 "--keep-checkpoints", "0"]) == 2
    assert "--keep-checkpoints must be >= 1, got 0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


# --------------------------------------------------------------------------- a real SIGKILL
KILL_SCRIPT = r"""
import os, sys, time
from synthseg_tf.training import gan
block = int(os.environ["BLOCK_AFTER_STEP"])
log = gan._log
def _log(csv_log, writer, step, *a, **k):  # hold the run after logging step `block`, so the kill lands mid-run
    log(csv_log, writer, step, *a, **k)
    if step >= block:
        time.sleep(3600)
gan._log = _log
from synthseg_tf.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_mid_training_then_resume_continues_exactly(tmp_path, capsys):
    from synthseg_tf.cli import main

    root = camvid_tree(tmp_path / "camvid", counts=(("train", 10), ("val", 2)))  # 8 to train on, 2 to monitor
    steps, every, block = 12, 3, 5

    def args(out, *extra):
        return ["gan", "train", "--data", f"camvid:{root}", "--out", out, "--image-size", str(SIZE), "--steps",
                str(steps), "--batch-size", "2", "--base-filters", "8", "--monitor", "2", "--log-every", "1",
                "--image-every", str(every), "--checkpoint-every", str(every), "--keep-checkpoints", "1", *extra]

    run, straight = str(tmp_path / "run"), str(tmp_path / "straight")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "BLOCK_AFTER_STEP": str(block)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args(run)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert main(args(straight)) == 0  # the same command, never interrupted, meanwhile in this process
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(os.path.join(run, "log.csv")) and block in log_steps(run):
                break
            time.sleep(0.05)
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)  # mid-run: ckpt-3 written, steps 4 and 5 done and logged
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    assert listed_steps(run) == [every] and log_steps(run) == [1, 2, 3, 4, 5]
    capsys.readouterr()

    assert main(args(run, "--resume")) == 0
    assert f"resumed {run} at step {every}" in capsys.readouterr().out
    assert log_steps(run) == list(range(1, steps + 1))  # continuous: nothing lost, nothing twice
    with open(os.path.join(run, "config.json")) as f:
        cfg = json.load(f)
    assert (cfg["status"], cfg["steps_done"]) == ("finished", steps)
    a = checkpoint_tensors(os.path.join(run, "checkpoints", f"ckpt-{steps}"))
    b = checkpoint_tensors(os.path.join(straight, "checkpoints", f"ckpt-{steps}"))
    assert a.keys() == b.keys() and any("iter" in k for k in a)  # the optimizers' iterations included
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # --keep-checkpoints 1: the last one plus the best by the monitoring samples' loss
    with open(os.path.join(run, "checkpoints", "best.json")) as f:
        best = json.load(f)
    with open(os.path.join(run, "log.csv"), newline="") as f:
        val = {int(r["step"]): float(r["val_g_l1"]) for r in csv.DictReader(f) if r.get("val_g_l1")}
    assert sorted(val) == [3, 6, 9, 12] and best["value"] == pytest.approx(min(val.values()), rel=1e-5)
    assert set(listed_steps(run)) == {steps, best["step"]} == set(ckpt_files(run))


def test_a_lost_or_empty_checkpoint_state_file_deletes_nothing(tmp_path):
    """The small ``checkpoint`` state file missing (a copy that filtered it out) or empty: reopening
    finds the complete checkpoints on disk instead of deleting them as unlisted."""
    v, keeper = _keeper(tmp_path, keep=3)
    for step in (1, 2, 3):
        keeper.save(step)
    ckdir = keeper.dir
    before = sorted(os.listdir(ckdir))
    os.remove(os.path.join(ckdir, "checkpoint"))
    _, reopened = _keeper(tmp_path, keep=3)
    assert reopened.steps == [1, 2, 3] and reopened.latest_step == 3
    assert {n for n in before if n.startswith("ckpt-")} <= set(os.listdir(ckdir))
    with open(os.path.join(ckdir, "checkpoint"), "w") as f:
        f.write("\n")  # what an empty keeper writes: not a valid state for TensorFlow
    _, reopened = _keeper(tmp_path, keep=3)
    assert reopened.steps == [1, 2, 3]
