"""pix2pix train steps/s (128x128 batch 8 and 256x256 batch 1) and U-Net train steps/s.

    python benchmarks/train_step.py [--steps 20] [--base-filters 64] [--replicas 1]
                                    [--skip-pix2pix] [--unet-size 128] [--unet-batch 8] [--unet-blocks 1]

Synthetic random batches (the input pipeline has its own benchmark), so this measures the
compiled train step alone: one discriminator and one generator update per step.
"""
import argparse

from common import report


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--base-filters", type=int, default=64)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--skip-unet", action="store_true")
    p.add_argument("--skip-pix2pix", action="store_true")
    p.add_argument("--unet-size", type=int, default=128)
    p.add_argument("--unet-batch", type=int, default=8)
    p.add_argument("--unet-blocks", type=int, default=1,
                   help="U-Net: timed blocks of --steps // 2 steps each; the rate is the median block")
    a = p.parse_args()

    from synthseg_tf.training.gan import make_strategy

    strategy = make_strategy(a.replicas)
    import time

    import numpy as np
    import tensorflow as tf

    from synthseg_tf.models.pix2pix import build_pix2pix

    def batches(b, h, w):
        rng = np.random.default_rng(0)
        el = {"mask": rng.integers(0, a.classes, (b, h, w)).astype(np.int32),
              "image": rng.random((b, h, w, 3)).astype(np.float32)}
        return tf.data.Dataset.from_tensors(el).repeat()

    for (h, w), b in () if a.skip_pix2pix else (((128, 128), 8), ((256, 256), 1)):
        with strategy.scope():
            model = build_pix2pix(a.classes, (h, w), base_filters=a.base_filters, norm="instance")
            model.compile()
        ds = strategy.experimental_distribute_dataset(batches(b, h, w)) if a.replicas > 1 else batches(b, h, w)
        it = iter(ds)

        @tf.function
        def step():
            return strategy.run(model.train_step, args=(next(it),))

        for _ in range(3):
            step()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        rate = a.steps / (time.perf_counter() - t)
        report(f"train_step.pix2pix_{h}x{w}_b{b}", rate, "steps/s", images_per_s=round(rate * b, 2),
               base_filters=a.base_filters, replicas=a.replicas)

    if not a.skip_unet:
        import statistics

        from synthseg_tf.models.unet import build_unet, compile_unet

        s, b = a.unet_size, a.unet_batch
        model = build_unet(a.classes, input_shape=(s, s, 3))
        compile_unet(model, a.classes, metrics=[])
        rng = np.random.default_rng(0)
        x = rng.random((b, s, s, 3)).astype(np.float32)
        y = rng.integers(0, a.classes, (b, s, s)).astype(np.int32)
        model.train_on_batch(x, y)
        n = max(1, a.steps // 2)
        rates = []
        for _ in range(max(1, a.unet_blocks)):
            t = time.perf_counter()
            for _ in range(n):
                model.train_on_batch(x, y)
            rates.append(n / (time.perf_counter() - t))
        rate = statistics.median(rates)
        report(f"train_step.unet_resnet34_{s}x{s}_b{b}", rate, "steps/s", images_per_s=round(rate * b, 2),
               steps=n, blocks=len(rates))


if __name__ == "__main__":
    main()
