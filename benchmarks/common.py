"""Helpers shared by the benchmarks: data location, timing, one-line results."""
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import synthseg_tf  # noqa: E402,F401  (environment settings first)

CAMVID = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data", "camvid"))


def default_spec() -> str:
    """CamVid when this machine has it, else the built-in demo scenes."""
    return f"camvid:{CAMVID}" if os.path.isdir(os.path.join(CAMVID, "train")) else "demo-scenes"


def report(name: str, value: float, unit: str, **extra) -> dict:
    """Print one comparable result line (JSON) and return it."""
    rec = {"benchmark": name, "value": round(float(value), 3), "unit": unit, "cpus": os.cpu_count(),
           "machine": platform.machine(), **extra}
    print(json.dumps(rec), flush=True)
    out = os.environ.get("SYNTHSEG_BENCH_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    return rec


def throughput(iterator, items_per_step, warmup: int, steps: int) -> float:
    """Items/s over ``steps`` calls of ``next(iterator)`` after ``warmup`` calls."""
    for _ in range(warmup):
        next(iterator)
    t = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return items_per_step * steps / (time.perf_counter() - t)
