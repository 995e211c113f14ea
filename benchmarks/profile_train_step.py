"""Where a pix2pix train step's time goes: a TensorFlow profiler trace, summarised per op type.

    python benchmarks/profile_train_step.py [--size 256] [--batch 1] [--steps 5] [--which ours,reference]
                                            [--logdir DIR] [--top 15]

For each step (``ours``: ``Pix2Pix``'s ``fit`` train function; ``reference``: the TF-tutorial step
of ``reference_pix2pix.py``, on the same models), after warm-up, ``--steps`` steps run under
``tf.profiler.experimental`` (the trace TensorBoard's profile plugin opens: ``--logdir``, default a
temporary folder). The trace's host events are then read back (``*.xplane.pb``) and summed per
TensorFlow op type, per step: milliseconds, share of the traced op time, and for the
convolutions (forward, gradient w.r.t. input, w.r.t. filter) the achieved GFLOP/s against
``matmul_gflops`` measured in the same process. That is what separates a step from the machine's
matmul peak: how much time is in convolutions at all, and how fast each kind runs.

Op time is summed over all threads (2 intra-op threads can each run an op), so per-step op
milliseconds can exceed wall milliseconds; shares are what matter. Prints one JSON line per
step kind (``profile.train_step_<which>``) after the tables.
"""
import argparse
import collections
import glob
import os
import tempfile
import time

from common import report

# op types -> the group they are reported under
GROUPS = {
    "Conv2D": "conv forward", "_FusedConv2D": "conv forward", "_MklConv2D": "conv forward",
    "_MklNativeConv2D": "conv forward", "_MklFusedConv2D": "conv forward", "_MklNativeFusedConv2D": "conv forward",
    "Conv2DBackpropInput": "conv grad input", "_MklConv2DBackpropInput": "conv grad input",
    "_MklNativeConv2DBackpropInput": "conv grad input",
    "Conv2DBackpropFilter": "conv grad filter", "_MklConv2DBackpropFilter": "conv grad filter",
    "_MklNativeConv2DBackpropFilter": "conv grad filter",
    "_MklConv2DBackpropFilterWithBias": "conv grad filter",
    "_MklNativeConv2DBackpropFilterWithBias": "conv grad filter",
    "FusedBatchNormV3": "batch norm", "FusedBatchNormGradV3": "batch norm", "_MklFusedBatchNormV3": "batch norm",
    "_MklFusedBatchNormGradV3": "batch norm", "_MklNativeFusedBatchNormV3": "batch norm",
    "_MklNativeFusedBatchNormGradV3": "batch norm",
    "ResourceApplyAdam": "optimizer (Adam)", "ReadVariableOp": "variable reads",
}
CONV_GROUPS = ("conv forward", "conv grad input", "conv grad filter")


def op_type(name: str, display_name: str):
    """The TensorFlow op type of a host trace event (``path/to/op:Type``; ``Adam:Type`` for the
    element-wise ops of a Keras Adam update), or None for the executor's and runtime's own events
    (``ExecutorState::Process``, ...)."""
    if "::" in name or ":" not in name or name.startswith("__inference"):
        return None  # (and the function call that wraps the whole step)
    kind = (display_name or name.rsplit(":", 1)[1]).strip()
    if kind.startswith("__inference"):
        return None
    if kind in GROUPS:
        return kind
    path = name.rsplit(":", 1)[0].lower()
    if "adam" in path.split("/")[0] or "/adam/" in path:  # the Keras Adam's element-wise update ops
        return "Adam:" + kind
    return kind


def read_op_times(logdir: str):
    """``{op type: total microseconds}`` over the host events of the newest trace under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"{logdir}: the profiler wrote no *.xplane.pb")
    space = xplane_pb2.XSpace()
    with open(paths[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            if line.name.startswith("tf_data"):
                continue  # the input pipeline's threads
            for ev in line.events:
                md = plane.event_metadata[ev.metadata_id]
                kind = op_type(md.name, md.display_name)
                if kind is not None:
                    totals[kind] += ev.duration_ps / 1e6
    return totals


def conv_flops(generator, discriminator, batch: int):
    """Forward conv FLOPs of one step (G once, D twice); each gradient kind costs the same again."""
    from reference_pix2pix import forward_macs

    return 2 * (forward_macs(generator) + 2 * forward_macs(discriminator)) * batch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--base-filters", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--which", default="ours,reference")
    p.add_argument("--logdir")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()

    import tensorflow as tf

    from reference_pix2pix import make_reference_step, standard_model
    from run_all import matmul_gflops

    model, ds = standard_model(a.size, a.batch, a.classes, a.base_filters)
    runners = {}
    for which in (w.strip() for w in a.which.split(",") if w.strip()):
        if which == "ours":
            fn, it = model.make_train_function(), iter(ds)
            runners["ours"] = (lambda fn=fn, it=it: fn(it))
        elif which == "reference":
            fn, it = make_reference_step(model.generator, model.discriminator), iter(ds)
            runners["reference"] = (lambda fn=fn, it=it: fn(next(it)))
        else:
            raise SystemExit(f"--which: ours or reference, got {which!r}")
    peak, _ = matmul_gflops(2048, 5)
    fwd = conv_flops(model.generator, model.discriminator, a.batch)
    # ours runs the decoder's resize-convolutions as transposed convolutions: fewer FLOPs there
    gen = model._train_generator if getattr(model, "_train_generator", None) is not None else model.generator
    fwd_ours = conv_flops(gen, model.discriminator, a.batch)
    root = a.logdir or tempfile.mkdtemp(prefix="synthseg-profile-")
    print(f"matmul peak (2048^2, this process): {peak:.0f} GFLOP/s; trace under {root}", flush=True)

    def sync(out):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)

    for name, fn in runners.items():
        for _ in range(a.warmup):
            sync(fn())
        logdir = os.path.join(root, name)
        tf.profiler.experimental.start(logdir)
        t = time.perf_counter()
        for _ in range(a.steps):
            out = fn()
        sync(out)
        wall_ms = (time.perf_counter() - t) / a.steps * 1e3
        tf.profiler.experimental.stop()
        per_step = {k: v / 1e3 / a.steps for k, v in read_op_times(logdir).items()}  # ms per step
        total = sum(per_step.values()) or 1.0
        groups = collections.Counter()
        for k, v in per_step.items():
            groups["optimizer (Adam)" if k.startswith("Adam:") else GROUPS.get(k, "other ops")] += v
        flops = fwd_ours if name == "ours" else fwd
        print(f"\n{name}: {wall_ms:.0f} ms per step (wall, while tracing), {total:.0f} ms of op time per step")
        print(f"  {'group':20s} {'ms/step':>9s} {'share':>6s}  achieved GFLOP/s (share of matmul peak)")
        for g, v in groups.most_common():
            rate = f"{flops / (v / 1e3) / 1e9:7.0f} ({flops / (v / 1e3) / 1e9 / peak:.0%})" if g in CONV_GROUPS else ""
            print(f"  {g:20s} {v:9.1f} {v / total:6.1%}  {rate}")
        print(f"  top op types: " + ", ".join(f"{k} {v:.1f} ms" for k, v in
                                               sorted(per_step.items(), key=lambda kv: -kv[1])[:a.top]))
        report(f"profile.train_step_{name}", wall_ms, "ms/step", size=a.size, batch=a.batch,
               op_ms_per_step=round(total, 1), matmul_gflops=round(peak, 1),
               groups_ms={g: round(v, 1) for g, v in groups.items()},
               conv_gflop_per_kind=round(flops / 1e9, 2), trace=os.path.join(root, name))


if __name__ == "__main__":
    main()
