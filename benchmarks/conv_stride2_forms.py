"""A 4x4 stride-2 convolution, forward + both gradients: as TensorFlow runs it vs its space-to-depth form.

    python benchmarks/conv_stride2_forms.py [--steps 20]

The space-to-depth form computes the same function (pad 1, ``space_to_depth(2)``, a 2x2 stride-1
valid convolution whose kernel is the 4x4 kernel rearranged): the same multiply-adds without a
strided convolution. It is the trick TPU ResNets use for their stride-2 stem. Measured here on the
encoder and discriminator shapes of the benchmarked pix2pix (256/b1 and 128/b8); prints one JSON
line per shape with both times, their ratio and the largest output difference. On this 2-core CPU
(oneDNN) it is not faster (0.74-1.03x over two runs), so the models keep the plain convolution.
"""
import argparse
import time

from common import report

SHAPES = [(1, 256, 12, 64), (1, 128, 64, 128), (1, 64, 128, 256), (1, 32, 256, 512),
          (8, 128, 12, 64), (8, 64, 64, 128), (8, 32, 128, 256)]  # (batch, input size, in, out)


def plain(x, k):
    """The 4x4 stride-2 ``SAME`` convolution of even-sized ``x`` ``[B,H,W,in]`` with ``k`` ``[4,4,in,out]``."""
    import tensorflow as tf

    return tf.nn.conv2d(x, k, 2, "SAME")


def space_to_depth(x, k):
    """:func:`plain`'s function as pad 1 -> ``space_to_depth(2)`` -> 2x2 stride-1 valid convolution."""
    import tensorflow as tf

    ci, co = k.shape[2], k.shape[3]
    xs = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 2)  # channels ordered (dy, dx, c)
    k2 = tf.transpose(tf.reshape(k, [2, 2, 2, 2, ci, co]), [0, 2, 1, 3, 4, 5])  # kernel row = 2a + dy
    return tf.nn.conv2d(xs, tf.reshape(k2, [2, 2, 4 * ci, co]), 1, "VALID")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="steps per timed block (best of 3 blocks)")
    a = p.parse_args()
    import tensorflow as tf

    def seconds(fn, x, k):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                y = fn(x, k)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, k])

        step(), step()
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(a.steps):
                out = step()
            out[0].numpy()
            best = min(best, (time.perf_counter() - t) / a.steps)
        return best

    for b, h, ci, co in SHAPES:
        x = tf.Variable(tf.random.normal([b, h, h, ci], seed=1))
        k = tf.Variable(tf.random.normal([4, 4, ci, co], seed=2) * 0.05)
        err = float(tf.reduce_max(tf.abs(plain(x, k) - space_to_depth(x, k))))
        t_plain, t_s2d = seconds(plain, x, k), seconds(space_to_depth, x, k)
        report("conv4x4_s2_space_to_depth_speedup", t_plain / t_s2d, "x", batch=b, size=h, filters_in=ci,
               filters_out=co, plain_ms=round(1e3 * t_plain, 2), space_to_depth_ms=round(1e3 * t_s2d, 2),
               max_abs_diff=err)


if __name__ == "__main__":
    main()
