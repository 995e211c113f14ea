"""Run every benchmark and write one JSON report, ``bench-results.json`` (``make bench`` / ``make bench-quick``).

    python benchmarks/run_all.py [--quick] [--out bench-results.json] [--only NAME,...]

Each benchmark runs as its own subprocess (fresh TensorFlow, its own thread settings and
environment; ``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS`` and ``OMP_NUM_THREADS`` are
removed from the environment except where a benchmark sets them), reports JSON lines through
``common.report`` and this script maps them to the keys of the report (:data:`REQUIRED_KEYS`).
The report holds the machine (CPU model, cores, TensorFlow version, load average), the date,
the command, every result (value, unit, note and the benchmark's parameters), the derived
ratios with the targets of issue 8 (:data:`RATIOS`) and pass/fail, and the errors of failed
benchmarks (their keys are listed under ``missing``). It is written atomically (temp file +
rename) and printed as a table.

Train throughput is the median of 3 timed blocks after warm-up. ``--quick`` (under 5 minutes on
2 idle cores) takes fewer steps, smaller generation runs and memory runs at 400 and 4,000
samples instead of 1,000 and 10,000 (the keys name the sample counts: ``rss_gen_400_mb``,
``rss_gen_4k_mb``). The scripts stay runnable alone (``python benchmarks/<script>.py --help``).

Internal: ``run_all.py --task matmul --n N --reps R`` is the matmul benchmark's subprocess.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(REPO, "bench-results.json")
THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
ONE_THREAD = {v: "1" for v in THREAD_VARS}

REQUIRED_KEYS = (
    "matmul_gflops", "gan_train_img_s_256_b1", "gan_train_img_s_128_b8", "reference_train_img_s_256_b1",
    "reference_train_img_s_128_b8", "gan_train_gflops_256_b1", "gen_raw_img_s", "gen_beam_img_s",
    "gen_beam_img_s_w1_t1", "gen_beam_img_s_w2_t1", "input_img_s", "unet_train_img_s", "rss_gen_1k_mb",
    "rss_gen_10k_mb")

# (ratio key, numerator key, denominator key, comparison, target) -- the targets of issue 8.
RATIOS = (
    ("gan_vs_reference_256_b1", "gan_train_img_s_256_b1", "reference_train_img_s_256_b1", ">=", 1.5),
    ("gan_vs_reference_128_b8", "gan_train_img_s_128_b8", "reference_train_img_s_128_b8", ">=", 1.3),
    ("beam_vs_raw", "gen_beam_img_s", "gen_raw_img_s", ">=", 0.85),
    ("beam_w2_vs_w1", "gen_beam_img_s_w2_t1", "gen_beam_img_s_w1_t1", ">=", 1.7),
    ("input_vs_gan_consumption", "input_img_s", "gan_train_img_s_256_b1", ">=", 5.0),
    ("rss_10k_vs_1k", "rss_gen_10k_mb", "rss_gen_1k_mb", "<=", 1.1),
)

NOTES = {
    "matmul_gflops": "TF float32 matmul n x n, best of 10 (machine reference)",
    "gan_train_img_s_256_b1": "our Pix2Pix.train_step (fit's train function), 256x256 b1, median of 3 blocks",
    "gan_train_img_s_128_b8": "our Pix2Pix.train_step (fit's train function), 128x128 b8, median of 3 blocks",
    "reference_train_img_s_256_b1": "TF-tutorial step on the same models, 256x256 b1",
    "reference_train_img_s_128_b8": "TF-tutorial step on the same models, 128x128 b8",
    "gan_train_gflops_256_b1": "achieved: 3 x 2 x conv/dense MACs (G + 2 D) / step time",
    "gan_train_gflops_128_b8": "achieved: 3 x 2 x conv/dense MACs (G + 2 D) / step time",
    "gen_raw_img_s": "Renderer.render batches, 128x128 untrained generator (fused-upsampling twin)",
    "gen_raw_unfused_img_s": "the same batches through the generator as saved (upsampling + conv as two ops)",
    "gen_beam_img_s": "run_generation end to end (start-up, map sampling, PNG+TFRecord), workers=1",
    "gen_beam_img_s_w1_t1": "run_generation, workers=1, 1 TF/OMP thread",
    "gen_beam_img_s_w2_t1": "run_generation, workers=2, 1 TF/OMP thread each",
    "input_img_s": "make_dataset, image files, augment, 256x256 b8",
    "input_img_s_tfrecord": "make_dataset, TFRecords, augment, 256x256 b8",
    "input_img_s_tfrecord_cached": "make_dataset, TFRecords cached, augment, 256x256 b8",
    "unet_train_img_s": "U-Net (ResNet34) train_on_batch, 256x256 b8, median of 3 blocks",
}

KeySpec = Union[str, Tuple[str, str, str]]  # result key, or (result key, record field, unit)


@dataclass
class Job:
    """One benchmark subprocess: ``argv`` (a script in benchmarks/ and its arguments) and how its lines map to keys.

    ``keys``: benchmark name (``report``'s first argument) -> result key, or ``(key, field, unit)``
    to take the value from another field of the line (e.g. ``images_per_s``).
    """
    name: str
    argv: List[str]
    keys: Dict[str, KeySpec] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    timeout: float = 3600.0


def _label(n: int) -> str:
    """generation_memory.py's name for a sample count: 1000 -> 1k, 400 -> 400."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def plan(quick: bool) -> List[Job]:
    """The benchmarks of a full or a ``--quick`` run."""
    if quick:
        mm, mm_reps = 2048, 10
        gan = {(256, 1): (1, 2), (128, 8): (1, 1)}  # (size, batch) -> (warm-up steps, steps per block)
        gen_n, rss = 512, (400, 4000)
        input_args = ["--steps", "10", "--sources", "files"]
        unet_steps = 2  # train_step.py times --steps // 2 per block
        timeout = 600.0
    else:
        mm, mm_reps = 4096, 10
        gan = {(256, 1): (2, 5), (128, 8): (2, 3)}
        gen_n, rss = 2000, (1000, 10000)
        input_args = ["--steps", "40"]
        unet_steps = 6
        timeout = 3600.0
    jobs = [Job("matmul", ["run_all.py", "--task", "matmul", "--n", str(mm), "--reps", str(mm_reps)],
                keys={"matmul_gflops": "matmul_gflops"}, timeout=timeout)]
    for (size, batch), (warmup, steps) in gan.items():
        tag = f"{size}_b{batch}"
        jobs.append(Job(f"pix2pix_{tag}", ["reference_pix2pix.py", "--size", str(size), "--batch", str(batch),
                                          "--warmup", str(warmup), "--steps", str(steps), "--blocks", "3"],
                        keys={k: k for k in (f"gan_train_img_s_{tag}", f"reference_train_img_s_{tag}",
                                             f"gan_train_gflops_{tag}")}, timeout=timeout))
    gen = ["generation.py", "--n", str(gen_n)]
    jobs += [
        Job("gen_raw_beam", gen + ["--workers", "1"], timeout=timeout,
            keys={"generation.raw_batched": "gen_raw_img_s", "generation.raw_batched_unfused": "gen_raw_unfused_img_s",
                  "generation.beam_1_worker": "gen_beam_img_s"}),
        Job("gen_beam_w1_t1", gen + ["--workers", "1", "--skip-raw"], env=ONE_THREAD, timeout=timeout,
            keys={"generation.beam_1_worker": "gen_beam_img_s_w1_t1"}),
        Job("gen_beam_w2_t1", gen + ["--workers", "2", "--skip-raw"], env=ONE_THREAD, timeout=timeout,
            keys={"generation.beam_2_worker": "gen_beam_img_s_w2_t1"}),
        Job("input", ["input_pipeline.py", "--image-size", "256", "--batch-size", "8"] + input_args, timeout=timeout,
            keys={"input_pipeline.files": "input_img_s", "input_pipeline.tfrecord": "input_img_s_tfrecord",
                  "input_pipeline.tfrecord_cached": "input_img_s_tfrecord_cached"}),
        Job("unet", ["train_step.py", "--skip-pix2pix", "--unet-size", "256", "--unet-batch", "8",
                     "--steps", str(unet_steps), "--unet-blocks", "3"], timeout=timeout,
            keys={"train_step.unet_resnet34_256x256_b8": ("unet_train_img_s", "images_per_s", "images/s")}),
        Job("rss", ["generation_memory.py", "--sizes", ",".join(map(str, rss))], timeout=timeout,
            keys={f"rss_gen_{_label(n)}_mb": f"rss_gen_{_label(n)}_mb" for n in rss}),
    ]
    return jobs


def rss_keys(quick: bool) -> Tuple[str, str]:
    """(large, small) rss result keys of a run: the 10k/1k ratio is computed from them."""
    small, large = [j for j in plan(quick) if j.name == "rss"][0].keys.values()
    return large, small


def required_keys(quick: bool) -> List[str]:
    large, small = rss_keys(quick)
    return [k for k in REQUIRED_KEYS if not k.startswith("rss_")] + [small, large]


# --------------------------------------------------------------------------- results
def collect(job: Job, lines: List[dict]) -> Dict[str, dict]:
    """The results of ``job`` from its JSON lines: ``{key: {"value", "unit", ...the line's other fields}}``."""
    out = {}
    for rec in lines:
        spec = job.keys.get(rec.get("benchmark"))
        if spec is None:
            continue
        key, fld, unit = (spec, "value", rec.get("unit")) if isinstance(spec, str) else spec
        extra = {k: v for k, v in rec.items() if k not in ("benchmark", "value", "unit", "cpus", "machine", fld)}
        out[key] = {"value": rec[fld], "unit": unit, "benchmark": rec["benchmark"], **extra}
    return out


def _ratio(num: Optional[dict], den: Optional[dict]) -> Optional[float]:
    if not num or not den or num.get("value") is None or not den.get("value"):
        return None
    return float(num["value"]) / float(den["value"])


def assemble(results: Dict[str, dict], errors: Dict[str, str], machine: dict, quick: bool, command: str,
             jobs: Optional[Dict[str, dict]] = None) -> dict:
    """The report: results with notes, the ratios with their targets and pass/fail, what is missing."""
    def note(k, v):
        if k in NOTES:
            return NOTES[k]
        if k.startswith("rss_gen_"):
            return "peak RSS of run_generation (32x32 generator, 200 samples/shard)"
        return v.get("note", "")

    results = {k: {**v, **({"benchmark_note": v["note"]} if v.get("note") and k in NOTES else {}), "note": note(k, v)}
               for k, v in results.items()}
    large, small = rss_keys(quick)
    ratios = {}
    for name, num, den, op, target in RATIOS:
        if name == "rss_10k_vs_1k":
            num, den = large, small
        value = _ratio(results.get(num), results.get(den))
        ok = None if value is None else (value >= target if op == ">=" else value <= target)
        ratios[name] = {"value": value, "target": f"{op} {target:g}",
                        "pass": ok, "numerator": num, "denominator": den}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(quick), "command": command, "machine": machine, "results": results, "ratios": ratios,
        "missing": [k for k in required_keys(quick) if k not in results], "errors": dict(errors),
        "jobs": jobs or {},
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def format_table(report: dict) -> str:
    """The report as a text table: key, value, unit, target, pass, note."""
    rows = [("key", "value", "unit", "target", "pass", "note")]
    for k, r in report["results"].items():
        n = r.get("n", r.get("samples"))
        note = r.get("note", "") + (f" [n={n}]" if n is not None else "")
        rows.append((k, _fmt(r.get("value")), r.get("unit") or "", "", "", note))
    for k, r in report["ratios"].items():
        verdict = {True: "PASS", False: "FAIL", None: "-"}[r["pass"]]
        rows.append((k, _fmt(r["value"]), "x", r["target"], verdict, f"{r['numerator']} / {r['denominator']}"))
    for k in report.get("missing", []):
        rows.append((k, "-", "", "", "", "missing (benchmark failed or skipped)"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(lines)


def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        tf_version = version("tensorflow")
    except Exception:  # pragma: no cover  (e.g. tensorflow-cpu)
        tf_version = None
    info = {"cpu_model": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": tf_version}
    if hasattr(os, "sched_getaffinity"):
        info["cores_usable"] = len(os.sched_getaffinity(0))
    return info


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def write_atomic(path: str, obj) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench-results.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _children_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_job(job: Job) -> Tuple[Dict[str, dict], Optional[str], float]:
    """Run one benchmark subprocess; ``(results, error or None, seconds)``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(job.env)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env["SYNTHSEG_BENCH_OUT"] = out = os.path.join(tmp, "lines.jsonl")
        cmd = [sys.executable, os.path.join(HERE, job.argv[0])] + job.argv[1:]
        t = time.perf_counter()
        error = None
        try:
            proc = subprocess.run(cmd, env=env, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=job.timeout)
            if proc.returncode != 0:
                tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
                error = f"exit {proc.returncode}: {tail}"
        except subprocess.TimeoutExpired:
            error = f"timed out after {job.timeout:.0f} s"
        secs = time.perf_counter() - t
        lines = []
        if os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f if line.strip()]
    results = collect(job, lines)
    if error is None and not results:
        error = "no result lines"
    return results, error, secs


# --------------------------------------------------------------------------- matmul task
def matmul_gflops(n: int, reps: int) -> Tuple[float, float]:
    """``(GFLOP/s, best seconds)`` of a float32 ``n x n`` matmul, best of ``reps``."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))  # the sum (n^2) makes the result cheap to fetch
    f().numpy()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f().numpy()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9, best


def matmul_task(n: int, reps: int) -> None:
    """Best-of-``reps`` GFLOP/s of a float32 ``n x n`` matmul (one line ``matmul_gflops``)."""
    from common import report

    gflops, best = matmul_gflops(n, reps)
    report("matmul_gflops", gflops, "GFLOP/s", n=n, reps=reps, best_s=round(best, 4),
           note=f"TF float32 matmul {n}x{n}, best of {reps}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps and smaller runs (under 5 minutes)")
    p.add_argument("--out", default=DEFAULT_OUT, help="the JSON report (default: bench-results.json at the repo root)")
    p.add_argument("--only", help="comma-separated job names to run (default: all); see --list")
    p.add_argument("--list", action="store_true", help="list the jobs and exit")
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=4096, help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=10, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.task == "matmul":
        return matmul_task(a.n, a.reps)
    if a.task:
        p.error(f"unknown task {a.task}")

    jobs = plan(a.quick)
    if a.list:
        for j in jobs:
            print(f"{j.name:16s} {shlex.join(j.argv)}" + (f"  env {j.env}" if j.env else ""))
        return 0
    if a.only:
        names = {v.strip() for v in a.only.split(",")}
        unknown = names - {j.name for j in jobs}
        if unknown:
            p.error(f"unknown job(s) {sorted(unknown)}; --list shows them")
        jobs = [j for j in jobs if j.name in names]

    command = shlex.join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(REPO) else
                          sys.executable] + sys.argv)
    machine = machine_info()
    machine["loadavg_start"] = _loadavg()
    results, errors, job_info = {}, {}, {}
    t0 = time.perf_counter()
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.name}: {shlex.join(job.argv)}" + (f" (env {job.env})" if job.env else ""),
              flush=True)
        cpu = _children_cpu_s()
        got, error, secs = run_job(job)
        results.update(got)
        job_info[job.name] = {"argv": job.argv, "env": job.env, "seconds": round(secs, 1),
                              "cpu_seconds": round(_children_cpu_s() - cpu, 1)}
        summary = ", ".join(f"{k}={_fmt(v['value'])}" for k, v in got.items())
        print(f"      {secs:.0f} s  {summary}", flush=True)
        if error:
            errors[job.name] = error
            print(f"      FAILED: {error}", flush=True)
    machine["loadavg_end"] = _loadavg()
    report = assemble(results, errors, machine, a.quick, command, jobs=job_info)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["cpu_seconds"] = round(sum(j["cpu_seconds"] for j in job_info.values()), 1)
    write_atomic(a.out, report)
    print()
    print(format_table(report))
    print(f"\n{len(results)} results, {sum(r['pass'] is True for r in report['ratios'].values())}/{len(RATIOS)} "
          f"targets met, {len(errors)} failed job(s); {report['seconds']:.0f} s wall, "
          f"{report['cpu_seconds']:.0f} s CPU; written to {a.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
