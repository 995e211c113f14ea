"""Generation images/s: raw batched generator inference vs the Beam pipeline (1 and 2 workers).

    python benchmarks/generation.py [--generator RUN_OR_EXPORT] [--n 256] [--workers 1,2] [--skip-raw]

Without --generator, a small untrained generator (128x128, 12 classes) is saved first: the
speed of inference does not depend on the weights' quality.
"""
import argparse
import os
import tempfile
import time

from common import report


def _make_generator(root: str, size: int) -> str:
    import numpy as np

    from synthseg_tf.data import ClassTable
    from synthseg_tf.data.io import write_png
    from synthseg_tf.models.pix2pix import build_generator
    from synthseg_tf.training.gan import save_generator

    run = os.path.join(root, "run")
    rng = np.random.default_rng(0)
    for i in range(32):  # label maps the generation pipeline samples from
        m = np.zeros((size, size), np.uint8)
        m[size // 2:] = 1
        m[rng.integers(0, size - 16):, rng.integers(0, size - 16):][:16, :16] = 2
        write_png(os.path.join(root, "ms", f"{i}.png"), m)
        write_png(os.path.join(root, "im", f"{i}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    gen = build_generator(3, (size, size), base_filters=64, norm="instance")
    save_generator(gen, os.path.join(run, "generator"))
    import json

    spec = f"pairs:{root}/im:{root}/ms"
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"num_classes": 3, "image_size": [size, size], "num_labels": None, "data": spec,
                   "conditioning": "labelmap"}, f)
    ClassTable(names=["a", "b", "c"]).save(os.path.join(run, "classes.json"))
    return run


def parser(description: str, n: int) -> argparse.ArgumentParser:
    """The options of the generation benchmarks (this one and ``generation_phases.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--generator")
    p.add_argument("--n", type=int, default=n)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", default="1,2", help="comma-separated DirectRunner worker counts of the Beam runs")
    return p


def beam_run(generator: str, out: str, n: int, batch_size: int, workers: int):
    """One ``run_generation`` as ``make bench`` times it (8 shards, no log); returns the wall-clock
    time it started at and its duration in seconds."""
    from synthseg_tf.generation.pipeline import GenerationConfig, run_generation

    cfg = GenerationConfig(generator=generator, out=out, n=n, batch_size=batch_size, workers=workers,
                           samples_per_shard=max(16, n // 8))
    wall, t = time.time(), time.perf_counter()
    run_generation(cfg, log=lambda m: None)
    return wall, time.perf_counter() - t


def main():
    p = parser(__doc__, 256)
    p.add_argument("--skip-raw", action="store_true", help="only the Beam runs")
    a = p.parse_args()

    import numpy as np

    from synthseg_tf.generation import Renderer

    with tempfile.TemporaryDirectory() as tmp:
        gen = a.generator or _make_generator(tmp, a.size)
        r = Renderer(gen)
        h, w = r.image_size
        if not a.skip_raw:
            import tensorflow as tf

            rng = np.random.default_rng(0)
            maps = rng.integers(0, r.config["num_classes"], (a.batch_size, h, w)).astype(np.uint8)
            labels = np.zeros(a.batch_size, np.int32) if r.conditional else None
            # the reference: the same weights called as saved (each decoder upsampling and its conv
            # as two ops), the path Renderer took before it rendered through the fused twin
            paths = [("raw_batched", lambda: r.render(maps, labels))]
            if r.kind == "run":  # an export carries only its own (fused) serving graph
                plain = tf.function(lambda m, l=None: r._model([m, l] if l is not None else m, training=False))
                paths.append(("raw_batched_unfused", lambda: plain(
                    tf.constant(maps), None if labels is None else tf.constant(labels)).numpy()))
            for name, fn in paths:
                fn()
                t = time.perf_counter()
                done = 0
                while done < a.n:
                    fn()
                    done += a.batch_size
                report(f"generation.{name}", done / (time.perf_counter() - t), "images/s", size=f"{h}x{w}",
                       batch=a.batch_size, n=done, fused=bool(r.fused) if name == "raw_batched" else False)
        for workers in (int(v) for v in a.workers.split(",") if v.strip()):
            _, seconds = beam_run(gen, os.path.join(tmp, f"out{workers}"), a.n, a.batch_size, workers)
            report(f"generation.beam_{workers}_worker", a.n / seconds, "images/s",
                   size=f"{h}x{w}", batch=a.batch_size, n=a.n, workers=workers,
                   note="includes pipeline start-up, map sampling, PNG+TFRecord writing")


if __name__ == "__main__":
    main()
