"""Where a Beam generation run's time goes: start-up, one shard after another, teardown.

    OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \\
        python benchmarks/generation_phases.py [--generator RUN_OR_EXPORT] [--n 2000] [--workers 1,2]

For each worker count, one ``run_generation`` (the ``gen_beam_img_s_w*_t1`` setting of
``make bench``) and, read from the files it wrote, when each shard landed (seconds since the
run started, per worker order), the start-up (first shard minus one steady shard), the
steady seconds per shard and the teardown (last shard to ``generation.json``). This is what
explains ``gen_beam_img_s_w2_t1 / gen_beam_img_s_w1_t1`` below 2x.

``--startup`` first times, in this process and before any Beam run, the parts of a worker's
start-up: importing Apache Beam, building the generator and reading its weights
(``load_renderer``), and the first and second render of one inference batch (their difference
is the tracing).
"""
import glob
import os
import tempfile

from common import report
from generation import _make_generator, beam_run, parser


def shard_times(out: str, t0: float):
    """Seconds from ``t0`` at which each shard's manifest part was written, sorted."""
    return sorted(os.path.getmtime(p) - t0 for p in glob.glob(os.path.join(out, "parts", "shard-*.json")))


def phases(times, end: float, workers: int):
    """``(start_up, per_shard, teardown)`` from the sorted shard times of ``workers`` workers
    that each made the same number of shards one after another."""
    rounds = [times[i:i + workers] for i in range(0, len(times), workers)]
    firsts = [max(r) for r in rounds]
    steady = (firsts[-1] - firsts[0]) / max(1, len(firsts) - 1)
    return firsts[0] - steady, steady, end - times[-1]


def startup_parts(generator: str, batch_size: int) -> dict:
    """Seconds to import Beam, load the generator, and render a first and a second batch."""
    import time

    import numpy as np

    out = {}
    t = time.perf_counter()
    import apache_beam  # noqa: F401

    out["import_beam_s"] = time.perf_counter() - t
    from synthseg_tf.generation.renderer import load_renderer

    t = time.perf_counter()
    r = load_renderer(generator)
    out["load_generator_s"] = time.perf_counter() - t
    h, w = r.image_size
    maps = np.zeros((batch_size, h, w), np.uint8)
    labels = np.zeros(batch_size, np.int32) if r.conditional else None
    for name in ("first_render_s", "second_render_s"):
        t = time.perf_counter()
        r.render(maps, labels)
        out[name] = time.perf_counter() - t
    return {k: round(v, 2) for k, v in out.items()}


def main():
    p = parser(__doc__, 2000)
    p.add_argument("--startup", action="store_true", help="first time the parts of a worker's start-up")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gen = a.generator or _make_generator(tmp, a.size)
        if a.startup:
            parts = startup_parts(gen, a.batch_size)
            report("generation_phases.startup", round(sum(parts.values()), 2), "s", **parts)
        for workers in (int(v) for v in a.workers.split(",") if v.strip()):
            out = os.path.join(tmp, f"out{workers}")
            t0, end = beam_run(gen, out, a.n, a.batch_size, workers)
            times = shard_times(out, t0)
            start, per, tail = phases(times, end, workers)
            print(f"workers={workers}: shards landed at " + ", ".join(f"{t:.1f}" for t in times) + " s", flush=True)
            report(f"generation_phases.{workers}_worker", a.n / end, "images/s", seconds=round(end, 1),
                   start_up_s=round(start, 1), per_shard_s=round(per, 1), teardown_s=round(tail, 1),
                   shards=len(times), workers=workers)


if __name__ == "__main__":
    main()
