"""Run every benchmark and collect the JSON lines in benchmarks/results.jsonl (``make bench``)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results.jsonl")

if __name__ == "__main__":
    env = dict(os.environ, SYNTHSEG_BENCH_OUT=OUT)
    if os.path.exists(OUT):
        os.remove(OUT)
    rc = 0
    for script in ("input_pipeline.py", "train_step.py", "generation.py"):
        print(f"== {script}", flush=True)
        rc |= subprocess.call([sys.executable, os.path.join(HERE, script)], env=env, cwd=HERE)
    print(f"results: {OUT}")
    sys.exit(rc)
