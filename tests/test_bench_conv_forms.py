"""benchmarks/conv_stride2_forms.py: the space-to-depth form it times is the same convolution."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import conv_stride2_forms as forms  # noqa: E402


@pytest.mark.parametrize("shape", [(2, 8, 3, 5), (1, 12, 4, 2)])
def test_space_to_depth_form_equals_the_strided_convolution(shape):
    b, h, ci, co = shape
    x = tf.Variable(tf.random.normal([b, h, h, ci], seed=3))
    k = tf.Variable(tf.random.normal([4, 4, ci, co], seed=4))
    grads = []
    for fn in (forms.plain, forms.space_to_depth):
        with tf.GradientTape() as tape:
            y = fn(x, k)
            loss = tf.reduce_sum(y * tf.cos(y))
        grads.append((y, *tape.gradient(loss, [x, k])))
    assert grads[0][0].shape == (b, h // 2, h // 2, co)
    for a, c in zip(*grads):
        scale = float(np.abs(a.numpy()).max())
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-4, atol=1e-5 * scale)
    # a kernel with a single non-zero tap tells the tap layout apart (a wrong rearrangement fails)
    k1 = np.zeros((4, 4, ci, co), np.float32)
    k1[3, 0, 0, 0] = 1.0
    np.testing.assert_allclose(forms.plain(x, k1).numpy(), forms.space_to_depth(x, k1).numpy(), atol=1e-6)
