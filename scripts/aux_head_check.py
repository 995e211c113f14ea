"""Can the discriminator's trunk carry the class? A classifier-only check behind the AC-GAN head.

Trains the projection PatchGAN's trunk (as ``synthseg experiment classification`` builds it:
64x64, 32 base filters, instance norm) plus a class head as a plain classifier on the edge-map
pairs of a quarter of demo-classes (``fraction(0.25, seed=0)``, 275 images), with DiffAugment,
for 300 Adam(2e-4, 0.5) steps, and prints the mean cross-entropy of each block of 50 steps
(ln 37 = 3.61 is a uniform guess), for:

- ``patch``: a 1x1-convolution head on every patch of the last *normalised* features
  (``d_feat_<n>``), cross-entropy averaged over the patches;
- ``pooled``: :func:`~synthseg_tf.models.pix2pix.build_aux_classifier` on the last trunk
  convolution's output *before* its normalisation (what ``Pix2Pix`` uses).

Usage: ``python scripts/aux_head_check.py`` (about a minute on 2 cores).
"""
import numpy as np
import tensorflow as tf

from synthseg_tf.data.layouts import load
from synthseg_tf.models import pix2pix as P
from synthseg_tf.training.gan_data import gan_datasets

POLICY = "color,translation,cutout"
SIZE = (64, 64)


def run(gd, head_kind: str, steps: int = 300):
    tf.keras.utils.set_random_seed(0)
    d = P.build_discriminator(gd.classes.num_classes, SIZE, base_filters=32, norm="instance",
                              num_labels=gd.num_labels, label_conditioning="projection")
    if head_kind == "patch":
        k = len(P.FEATURE_PREFIX)  # the full-resolution trunk's d_feat_<i>, not a scale's d_feat_s<s>_<i>
        layer = max((l.name for l in d.layers if l.name.startswith(P.FEATURE_PREFIX) and l.name[k:].isdigit()),
                    key=lambda n: int(n[k:]))
    else:
        layer = P.last_trunk_conv(d)
    trunk = tf.keras.Model(d.inputs, d.get_layer(layer).output)
    shape = trunk.output.shape[1:]
    if head_kind == "patch":
        x = tf.keras.Input(shape)
        head = tf.keras.Model(x, tf.keras.layers.Conv2D(gd.num_labels, 1)(x))
    else:
        head = P.build_aux_classifier(shape, gd.num_labels)
    opt = tf.keras.optimizers.Adam(2e-4, beta_1=0.5)
    rng = tf.random.Generator.from_seed(1)

    @tf.function
    def step(b):
        mask, img, lab = tf.cast(b["mask"], tf.int32), tf.cast(b["image"], tf.float32) * 2 - 1, b["label"]
        mask, img = P.diffaugment_pair(mask, img, P.draw_diffaugment(rng, POLICY, tf.shape(img)[0], *SIZE), POLICY)
        with tf.GradientTape() as tape:
            logits = head(trunk({"mask": mask, "image": img, "label": lab}, training=True), training=True)
            if head_kind == "patch":
                labels = tf.broadcast_to(tf.reshape(lab, [-1, 1, 1]), tf.shape(logits)[:3])
            else:
                labels = lab
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        variables = trunk.trainable_variables + head.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    it = iter(gd.train)
    losses = [float(step(next(it))) for _ in range(steps)]
    return [round(float(np.mean(losses[i:i + 50])), 3) for i in range(0, steps, 50)], layer


def main():
    ds = load("demo-classes").fraction(0.25, seed=0)
    gd = gan_datasets(ds, SIZE, 16, 0, conditioning="edges", val=False)
    print(f"{gd.num_labels} classes, {gd.train_size} images; uniform guess {np.log(gd.num_labels):.2f}")
    for kind in ("patch", "pooled"):
        blocks, layer = run(gd, kind)
        print(f"{kind:7s} head on {layer}: mean loss per 50 steps {blocks}", flush=True)


if __name__ == "__main__":
    main()
