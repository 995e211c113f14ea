"""Our ``Pix2Pix.train_step`` vs a plain TensorFlow-tutorial pix2pix train step, same models.

    python benchmarks/reference_pix2pix.py [--size 256] [--batch 1] [--steps 5] [--blocks 3] [--warmup 2]
                                           [--which both|ours|reference] [--upsample resize]

The reference (:func:`make_reference_step`) is the train step of the TensorFlow pix2pix
tutorial (https://www.tensorflow.org/tutorials/generative/pix2pix): one ``tf.function``, a pair
of ``GradientTape`` s, the generator once, the discriminator on the real and on the generated
pair, ``BinaryCrossentropy(from_logits=True)`` for the GAN terms, generator loss
``gan + 100 * L1``, two ``Adam(2e-4, beta_1=0.5)``. It runs on the very generator and
discriminator Keras models :func:`~synthseg_tf.models.pix2pix.build_pix2pix` returns (the
standard pix2pix setting: 64 base filters, batch norm, dropout 0.5, no DiffAugment, no EMA;
the decoder is the package's default, ``resize``: nearest 2x upsampling + 3x3 conv, no
checkerboard; ``--upsample transpose`` is the original 4x4 transposed-convolution decoder), so
the two steps differ only in the training-step code (ours computes each resize-convolution as
one equivalent stride-2 transposed convolution: the same maths, 2.25x fewer multiply-adds). Batches are the package's format: ``mask`` int32
``[B,H,W]`` (one-hot encoded inside the models) and ``image`` float ``[B,H,W,3]`` in ``[0,1]``
(mapped to ``[-1,1]`` in the step, as ``Pix2Pix`` does).

Ours runs as ``fit()`` runs it (``model.make_train_function()`` over an iterator); the
reference is called with the batch from an iterator over the same dataset, as in the tutorial.
Both run in this process on the same models, interleaved block by block (``--blocks`` blocks of
``--steps`` steps after ``--warmup`` steps each), so background load hits both alike; the rate
is the median block. Prints JSON lines ``gan_train_img_s_<S>_b<B>``,
``reference_train_img_s_<S>_b<B>`` and ``gan_train_gflops_<S>_b<B>`` (achieved GFLOP/s of our
step, FLOPs from :func:`train_step_flops`).
"""
import argparse
import statistics
import time

from common import report


def make_reference_step(generator, discriminator, l1_weight: float = 100.0, learning_rate: float = 2e-4,
                        beta_1: float = 0.5):
    """The TF-tutorial pix2pix train step on ``generator``/``discriminator``: ``step(batch) -> losses``.

    Returns a ``tf.function`` taking the package's batch dict and returning
    ``{"g_total", "g_gan", "g_l1", "d"}`` (batch means). Its optimizers are ``step.g_optimizer``
    and ``step.d_optimizer``.
    """
    import tensorflow as tf

    loss_object = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    generator_optimizer = tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1)
    discriminator_optimizer = tf.keras.optimizers.Adam(learning_rate, beta_1=beta_1)

    def generator_loss(disc_generated_output, gen_output, target):
        gan_loss = loss_object(tf.ones_like(disc_generated_output), disc_generated_output)
        l1_loss = tf.reduce_mean(tf.abs(target - gen_output))
        return gan_loss + l1_weight * l1_loss, gan_loss, l1_loss

    def discriminator_loss(disc_real_output, disc_generated_output):
        real_loss = loss_object(tf.ones_like(disc_real_output), disc_real_output)
        generated_loss = loss_object(tf.zeros_like(disc_generated_output), disc_generated_output)
        return real_loss + generated_loss

    @tf.function
    def train_step(batch):
        mask = tf.cast(batch["mask"], tf.int32)  # class ids; the models one-hot encode them
        target = tf.cast(batch["image"], tf.float32) * 2.0 - 1.0  # [0,1] -> [-1,1], the tanh range
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            gen_output = generator(mask, training=True)
            disc_real_output = discriminator({"mask": mask, "image": target}, training=True)
            disc_generated_output = discriminator({"mask": mask, "image": gen_output}, training=True)
            gen_total_loss, gen_gan_loss, gen_l1_loss = generator_loss(disc_generated_output, gen_output, target)
            disc_loss = discriminator_loss(disc_real_output, disc_generated_output)
        generator_gradients = gen_tape.gradient(gen_total_loss, generator.trainable_variables)
        discriminator_gradients = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        generator_optimizer.apply_gradients(zip(generator_gradients, generator.trainable_variables))
        discriminator_optimizer.apply_gradients(zip(discriminator_gradients, discriminator.trainable_variables))
        return {"g_total": gen_total_loss, "g_gan": gen_gan_loss, "g_l1": gen_l1_loss, "d": disc_loss}

    train_step.g_optimizer = generator_optimizer
    train_step.d_optimizer = discriminator_optimizer
    return train_step


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # nested model
            yield from _layers(layer)
        else:
            yield layer


def forward_macs(model) -> int:
    """Multiply-accumulates of one forward pass of ``model`` per example (Conv2D, Conv2DTranspose, Dense)."""
    import numpy as np
    import tensorflow as tf

    total = 0
    for layer in _layers(model):
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        k = int(np.prod(kernel.shape))  # kh*kw*cin*cout (conv), cin*cout (dense)
        if isinstance(layer, tf.keras.layers.Conv2DTranspose):  # (a subclass of Conv2D: test first)
            spatial = layer.input_shape[1:-1]  # every input pixel scatters the whole kernel
        elif isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
            spatial = layer.output_shape[1:-1]
            if isinstance(layer, tf.keras.layers.Conv2D):
                k //= max(1, int(getattr(layer, "groups", 1)))
        else:
            continue
        total += int(np.prod([int(s) for s in spatial])) * k
    return total


def train_step_flops(generator, discriminator, batch: int) -> int:
    """FLOPs of one pix2pix train step: 2 x MACs of G + 2 D passes (real, fake), x3 for forward + backward."""
    return 3 * 2 * (forward_macs(generator) + 2 * forward_macs(discriminator)) * int(batch)


def synthetic_batch(batch: int, size: int, classes: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"mask": rng.integers(0, classes, (batch, size, size)).astype(np.int32),
            "image": rng.random((batch, size, size, 3)).astype(np.float32)}


def standard_model(size: int, batch: int, classes: int, base_filters: int = 64, norm: str = "batch",
                   upsample: str = "resize"):
    """The benchmarked pix2pix (seed 0, compiled: BCE + 100 L1; no DiffAugment, no EMA, as
    ``build_pix2pix`` defaults) and an endless dataset of one synthetic batch."""
    import tensorflow as tf

    from synthseg_tf.models.pix2pix import build_pix2pix

    tf.keras.utils.set_random_seed(0)
    model = build_pix2pix(classes, (size, size), base_filters=base_filters, norm=norm, upsample=upsample)
    model.compile(gan_loss="bce", l1_weight=100.0)
    return model, tf.data.Dataset.from_tensors(synthetic_batch(batch, size, classes)).repeat()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--classes", type=int, default=12)
    p.add_argument("--base-filters", type=int, default=64)
    p.add_argument("--norm", default="batch")
    p.add_argument("--upsample", default="resize", help="resize (the package default) or transpose (original pix2pix)")
    p.add_argument("--warmup", type=int, default=2, help="steps before timing (after the first, traced, call)")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--which", choices=("both", "ours", "reference"), default="both")
    a = p.parse_args()

    import tensorflow as tf

    model, ds = standard_model(a.size, a.batch, a.classes, a.base_filters, a.norm, a.upsample)
    flops = train_step_flops(model.generator, model.discriminator, a.batch)

    runners, steps_per_call = {}, {"ours": 1, "reference": 1}
    if a.which in ("both", "ours"):
        ours_fn, ours_it = model.make_train_function(), iter(ds)
        runners["ours"] = lambda: ours_fn(ours_it)
        spe = getattr(model, "_steps_per_execution", None)  # fit's train function may run several steps a call
        steps_per_call["ours"] = int(spe.numpy()) if spe is not None else 1
    if a.which in ("both", "reference"):
        ref_fn, ref_it = make_reference_step(model.generator, model.discriminator), iter(ds)
        runners["reference"] = lambda: ref_fn(next(ref_it))

    def run(fn, n):
        out = None
        for _ in range(n):
            out = fn()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)  # wait for the last step

    trace_s = {}
    for name, fn in runners.items():
        t = time.perf_counter()
        run(fn, 1)
        trace_s[name] = time.perf_counter() - t
        run(fn, a.warmup)
    rates = {name: [] for name in runners}
    for _ in range(a.blocks):
        for name, fn in runners.items():
            t = time.perf_counter()
            run(fn, a.steps)
            rates[name].append(a.steps * steps_per_call[name] * a.batch / (time.perf_counter() - t))

    tag = f"{a.size}_b{a.batch}"
    info = dict(size=a.size, batch=a.batch, classes=a.classes, base_filters=a.base_filters, norm=a.norm,
                upsample=a.upsample, steps=a.steps, blocks=a.blocks, warmup=a.warmup)
    for name, key in (("ours", "gan_train_img_s"), ("reference", "reference_train_img_s")):
        if name in rates:
            rate = statistics.median(rates[name])
            report(f"{key}_{tag}", rate, "images/s", blocks_img_s=[round(r, 3) for r in rates[name]],
                   first_call_s=round(trace_s[name], 1), **info)
            if name == "ours":
                report(f"gan_train_gflops_{tag}", flops / a.batch * rate / 1e9, "GFLOP/s",
                       gflop_per_step=round(flops / 1e9, 2), note="3 x 2 x MACs of Conv2D/Conv2DTranspose/Dense "
                       "(G + 2 D passes) / time", **info)


if __name__ == "__main__":
    main()
