"""Peak memory of `synthseg generate`: 1,000 vs 10,000 samples (issue 10: "memory stays flat").

    python benchmarks/generation_memory.py [--sizes 1000,10000] [--size 32] [--per 200]

A small untrained generator (``--size`` pixels, 3 classes) is saved first; after a warm-up run,
each size runs into a fresh folder while a thread samples this process's resident set size
every 20 ms. Prints one JSON line per size (``rss_gen_1k_mb``, ``rss_gen_10k_mb``, ...) and the
ratio of the largest to the smallest (flat: <= 1.10). The runs are waves of at most 8 shards, so
a 10k run is many waves of the same size as a 1k run's.
"""
import argparse
import gc
import os
import tempfile
import threading
import time

from common import report


class PeakRSS:
    def __enter__(self):
        self.peak, self._stop = 0.0, False
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page / 2 ** 20)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()


def _make_generator(root: str, size: int) -> str:
    import json

    import numpy as np

    from synthseg_tf.data import ClassTable
    from synthseg_tf.data.io import write_png
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    rng = np.random.default_rng(0)
    for i in range(16):
        m = np.zeros((size, size), np.uint8)
        m[size // 2:] = 1
        y, x = rng.integers(0, size - size // 4, 2)
        m[y:y + size // 4, x:x + size // 4] = 2
        write_png(os.path.join(root, "ms", f"{i}.png"), m)
        write_png(os.path.join(root, "im", f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    run = os.path.join(root, "run")
    save_generator(build_generator(3, (size, size), base_filters=8, norm="instance"), os.path.join(run, "generator"))
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"num_classes": 3, "image_size": [size, size], "num_labels": None,
                   "data": f"pairs:{root}/im:{root}/ms", "conditioning": "labelmap"}, f)
    ClassTable(names=["a", "b", "c"]).save(os.path.join(run, "classes.json"))
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--per", type=int, default=200, help="samples per shard")
    a = p.parse_args()

    from synthseg_tf.generation.pipeline import GenerationConfig, run_generation

    sizes = [int(s) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        gen = _make_generator(tmp, a.size)

        def run(n, name):
            cfg = GenerationConfig(generator=gen, out=os.path.join(tmp, name), n=n, samples_per_shard=a.per, seed=0)
            gc.collect()
            t = time.perf_counter()
            with PeakRSS() as m:
                run_generation(cfg, log=lambda msg: None)
            return m.peak, time.perf_counter() - t

        run(min(sizes) // 4 or 1, "warmup")
        peaks = {}
        for n in sizes:
            peak, secs = run(n, f"n{n}")
            peaks[n] = peak
            label = f"{n // 1000}k" if n % 1000 == 0 else str(n)
            report(f"rss_gen_{label}_mb", peak, "MB", samples=n, seconds=round(secs, 1), size=a.size,
                   samples_per_shard=a.per)
        report("rss_gen_ratio", max(peaks.values()) / peaks[min(peaks)], "x", note="peak RSS largest/smallest run; "
               "flat means <= 1.10")


if __name__ == "__main__":
    main()
