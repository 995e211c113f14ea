"""Where a Beam generation run's time goes: start-up, one shard after another, teardown.

    OMP_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \\
        python benchmarks/generation_phases.py [--generator RUN_OR_EXPORT] [--n 2000] [--workers 1,2]

For each worker count, one ``run_generation`` (the ``gen_beam_img_s_w*_t1`` setting of
``make bench``) and, read from the files it wrote, when each shard landed (seconds since the
run started, per worker order), the start-up (first shard minus one steady shard), the
steady seconds per shard and the teardown (last shard to ``generation.json``). This is what
explains ``gen_beam_img_s_w2_t1 / gen_beam_img_s_w1_t1`` below 2x.
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


def main():
    a = parser(__doc__, 2000).parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gen = a.generator or _make_generator(tmp, a.size)
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
