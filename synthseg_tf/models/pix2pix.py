"""pix2pix: a conditional GAN that paints an RGB image from a segmentation label map.

Three pieces:

- :func:`build_generator` -- a U-Net encoder/decoder with skip connections. It takes the
  integer mask (class ids, ``IGNORE_ID`` = 255 for void) and one-hot encodes it inside the
  model, so an exported generator is fed ids directly. Output: RGB in ``[-1, 1]`` (tanh).
- :func:`build_discriminator` -- a PatchGAN judging ``(label map, image)`` pairs patch by patch;
  :func:`discriminator_features` exposes its intermediate activations for feature matching.
- :class:`Pix2Pix` -- a ``tf.keras.Model`` holding both, with ``train_step``/``test_step`` so
  ``fit()`` works, also under ``tf.distribute.MirroredStrategy``.

Batches are dicts ``{"image": float [B,H,W,3] in [0,1], "mask": int [B,H,W], "label": int [B]}``
(``label`` only for the class-conditional variant).

Distribution: every loss is first reduced to one value per example, then averaged with
``tf.nn.compute_average_loss`` (divides by the *global* batch size), so the gradients summed
over replicas equal the single-device gradients of the same global batch. Loss trackers are fed
the per-example values, so the numbers ``fit()`` reports do not depend on the replica count.

Design follows the TensorFlow pix2pix tutorial (Isola et al. 2017) with two deliberate
differences: the innermost encoder layer has no normalisation (as in the authors' PyTorch code;
instance norm over a 1x1 bottleneck would erase it) and the PatchGAN uses ``same`` padding so
any image size works (the receptive field of the 3-downsampling version is still 70x70).

Quality levers (each optional, see the functions' docstrings):

- ``upsample="resize"`` (default): the decoder upsamples by nearest-neighbour 2x resizing and a
  3x3 convolution instead of a 4x4 stride-2 transposed convolution, which paints checkerboard
  artefacts (Odena et al. 2016); the output layer also sees the full-resolution label map.
  ``"transpose"`` is the original pix2pix decoder.
- ``label_conditioning="film"`` (default for class-conditional generators): a learned class
  embedding gives every decoder block (and the bottleneck) a per-channel scale and shift after
  its normalisation (FiLM, Perez et al. 2018), so the class reaches every scale instead of only
  the bottleneck, which the U-Net skips bypass. ``"bottleneck"``: the original concatenation.
- ``diffaugment``: Differentiable Augmentation (Zhao et al. 2020) of the discriminator's input
  pairs, see :func:`diffaugment_pair`.
- ``ema_decay``: an exponential moving average of the generator weights
  (:attr:`Pix2Pix.ema_generator`), the generator to deliver.
- ``arch="spade"``: a SPADE generator (Park et al. 2019, GauGAN) instead of the U-Net, see
  :func:`build_spade_generator`: the label map modulates every normalisation of the decoder.
- ``style_dim``: a reference image whose appearance code (:func:`reference_encoder`, GauGAN's
  style encoder used as exemplar guidance) FiLMs the U-Net decoder; :class:`Pix2Pix` trains it
  with each image, moved (:func:`moved_reference`), as its own reference.
"""
from __future__ import annotations

import math
import random
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tensorflow_addons as tfa

from synthseg_tf.data.classes import IGNORE_ID

GAN_LOSSES = ("bce", "lsgan", "hinge")
NORMS = ("batch", "instance", "none")
UPSAMPLES = ("resize", "transpose")
LABEL_CONDITIONINGS = ("film", "bottleneck")
GENERATOR_ARCHS = ("unet", "spade")  # pix2pix's U-Net, or a SPADE (GauGAN) decoder
SPADE_MIN_START = 4  # a SPADE generator starts from a map whose short side is at least this big
SPADE_MAX_UPSAMPLINGS = 6
D_LABEL_CONDITIONINGS = ("input", "projection")  # how a class-conditional discriminator takes the label
DIFFAUGMENT_OPS = ("color", "translation", "cutout")
DEFAULT_DIFFAUGMENT = "color,translation,cutout"
DIFFAUGMENT_TRANSLATION = 0.125  # max shift, as a fraction of each side (DiffAugment's default)
DIFFAUGMENT_CUTOUT = 0.5  # cut-out square side, as a fraction of each side (DiffAugment's default)
EMA_WARMUP = 10  # EMA decay at generator step t is min(ema_decay, (1 + t) / (EMA_WARMUP + t))
MAX_DEPTH = 8  # pix2pix's 256x256 generator downsamples 8 times (to 1x1)
BOTTLENECK_MAX = 4  # automatic depth keeps the bottleneck's short side at most this big
FEATURE_PREFIX = "d_feat_"  # discriminator activations used for feature matching

ImageSize = Union[int, Sequence[int]]


# --------------------------------------------------------------------------- small layers
@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class OneHotMask(tf.keras.layers.Layer):
    """Integer class ids ``[B,H,W]`` -> one-hot ``[B,H,W,K]``; void (255) -> all zeros.

    Outside training (``training`` false or unset: inference, export, evaluation) a label map with
    ids that are neither ``0..K-1`` nor void is refused with ``tf.errors.InvalidArgumentError``
    naming the ids found and ``K``: the network was never trained on them, and one-hot encoding
    would silently turn them into void. Training steps skip the check (the data pipeline checks
    masks against the class table).
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def call(self, mask, training=None):
        ids = tf.cast(mask, tf.int32)
        if not training:
            check_label_ids(ids, self.num_classes)
        return tf.one_hot(ids, self.num_classes, dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def check_label_ids(ids: tf.Tensor, num_classes: int) -> None:
    """Assert (``tf.errors.InvalidArgumentError``) that every id is in ``0..num_classes-1`` or void."""
    ids = tf.cast(ids, tf.int32)
    bad = tf.logical_and(tf.logical_or(ids < 0, ids >= num_classes), tf.not_equal(ids, IGNORE_ID))
    msg = (f"label map has class ids the generator was not trained for: it has {num_classes} classes (ids "
           f"0..{num_classes - 1}, {IGNORE_ID} = void); ids found outside them:")
    if tf.executing_eagerly():
        if bool(tf.reduce_any(bad)):
            found = np.unique(tf.boolean_mask(ids, bad).numpy()).tolist()
            raise tf.errors.InvalidArgumentError(None, None, f"{msg} {found}")
        return
    found = tf.sort(tf.unique(tf.boolean_mask(ids, bad)).y)
    tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)), [msg, tf.cast(found, tf.int64)],
        summarize=64, name="check_label_ids")


@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class GeneratorDropout(tf.keras.layers.Layer):
    """Dropout whose noise comes from its own ``tf.random.Generator``.

    Keras' ``Dropout`` uses legacy stateful random ops whose state cannot be saved; this layer's
    generator state is a variable, so it is part of any checkpoint of the model and a resumed
    run draws exactly the masks the uninterrupted run would have drawn. Created inside a
    distribution strategy scope, each replica draws a different stream.
    """

    def __init__(self, rate: float, seed: Optional[int] = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        # Drawn from Python's RNG (seeded by tf.keras.utils.set_random_seed) when not given.
        self.seed = int(seed) if seed is not None else random.randrange(2**31)

    def build(self, input_shape):
        self.rng = tf.random.Generator.from_seed(self.seed)
        super().build(input_shape)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        return tf.nn.experimental.general_dropout(inputs, rate=self.rate, uniform_sampler=self.rng.uniform)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class ClassFiLM(tf.keras.layers.Layer):
    """Feature-wise linear modulation by a class embedding: ``x * (1 + gamma) + beta``.

    Called on ``[x, embedding]`` with ``x`` ``[B,H,W,C]`` and ``embedding`` ``[B,D]``;
    ``(gamma, beta) = embedding @ kernel + bias`` give one scale and shift per example and
    channel (class-conditional normalisation when placed after a normalisation layer). The
    kernel starts small (N(0, 0.02)) and the bias at zero, so the layer starts near the identity
    but already class-dependent.
    """

    def build(self, input_shape):
        x_shape, e_shape = input_shape
        channels, embed_dim = int(x_shape[-1]), int(e_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(embed_dim, 2 * channels), initializer=_init())
        self.bias = self.add_weight(name="bias", shape=(2 * channels,), initializer="zeros")
        super().build(input_shape)

    def call(self, inputs):
        x, e = inputs
        gamma, beta = tf.split(tf.matmul(tf.cast(e, self.compute_dtype), self.kernel) + self.bias, 2, axis=-1)
        return x * (1.0 + gamma[:, None, None, :]) + beta[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class ClassProjection(tf.keras.layers.Layer):
    """The class term of a projection discriminator (Miyato & Koyama 2018): ``<embed(y), h>``.

    Called on ``[h, label]`` with features ``h`` ``[B,H,W,C]`` and ``label`` int ``[B]``; returns
    ``[B,H,W,1]``, the inner product of each position's features with the label's learned
    embedding (``C`` values per label, N(0, 0.02) at the start). Added to the unconditional
    logits, it makes the discriminator's verdict on every patch depend on whether the patch's
    features match the class, instead of feeding the label in only beside the input pixels.
    """

    def __init__(self, num_labels: int, **kwargs):
        super().__init__(**kwargs)
        self.num_labels = int(num_labels)

    def build(self, input_shape):
        h_shape, _ = input_shape
        self.embeddings = self.add_weight(name="embeddings", shape=(self.num_labels, int(h_shape[-1])),
                                          initializer=_init())
        super().build(input_shape)

    def call(self, inputs):
        h, label = inputs
        e = tf.gather(tf.cast(self.embeddings, self.compute_dtype), tf.cast(tf.reshape(label, [-1]), tf.int32))
        return tf.reduce_sum(h * e[:, None, None, :], axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (1,)

    def get_config(self):
        return {**super().get_config(), "num_labels": self.num_labels}


def _normalization(norm: str, name: str, affine: bool = True) -> Optional[tf.keras.layers.Layer]:
    """The normalisation layer for ``norm`` ("batch", "instance" or "none" -> None); ``affine=False``
    leaves out its own scale and shift (SPADE supplies them)."""
    if norm == "batch":
        return tf.keras.layers.BatchNormalization(center=affine, scale=affine, name=name)
    if norm == "instance":
        return tfa.layers.InstanceNormalization(epsilon=1e-5, center=affine, scale=affine, name=name)
    if norm in ("none", None):
        return None
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def _init():
    return tf.keras.initializers.RandomNormal(0.0, 0.02)


def _image_size(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, int):
        return int(image_size), int(image_size)
    h, w = (int(v) for v in image_size)
    if h < 2 or w < 2:
        raise ValueError(f"image_size must be at least 2x2, got {h}x{w}")
    return h, w


# --------------------------------------------------------------------------- generator
def generator_depth(image_size: ImageSize, depth: Optional[int] = None) -> int:
    """Number of stride-2 encoder steps of the generator for ``image_size``.

    With ``depth=None`` pick the deepest U-Net (at most ``MAX_DEPTH``) for which both sides
    stay integers, provided the bottleneck's short side is at most ``BOTTLENECK_MAX``: 64x64 ->
    6 (1x1), 256x256 -> 8 (1x1), 512x512 -> 8 (2x2), 128x160 -> 5 (4x5). Raises ``ValueError``
    when no such depth exists or an explicit ``depth`` does not divide the size.
    """
    h, w = _image_size(image_size)
    if depth is not None:
        depth = int(depth)
        if depth < 1:
            raise ValueError(f"generator depth must be >= 1, got {depth}")
        f = 2**depth
        if h % f or w % f:
            raise ValueError(
                f"image size {h}x{w} does not fit a generator of depth {depth}: height and width "
                f"must be divisible by 2**{depth} = {f}")
        return depth
    short = min(h, w)
    deepest = min(MAX_DEPTH, int(math.floor(math.log2(short))))
    shallowest = max(1, int(math.ceil(math.log2(short / BOTTLENECK_MAX))))
    for d in range(deepest, shallowest - 1, -1):
        if h % 2**d == 0 and w % 2**d == 0:
            return d
    need = 2**max(1, min(shallowest, MAX_DEPTH))
    raise ValueError(
        f"image size {h}x{w} is not supported by the pix2pix generator: height and width must be "
        f"divisible by {need} (so the U-Net can downsample to a small bottleneck); "
        f"resize or crop to e.g. {max(need, (h // need) * need)}x{max(need, (w // need) * need)}")


def _down_block(x, filters: int, norm: str, name: str):
    """Conv 4x4 stride 2 -> norm -> LeakyReLU(0.2)."""
    norm_layer = _normalization(norm, f"{name}_norm")
    x = tf.keras.layers.Conv2D(filters, 4, strides=2, padding="same", kernel_initializer=_init(),
                               use_bias=norm_layer is None, name=f"{name}_conv")(x)
    if norm_layer is not None:
        x = norm_layer(x)
    return tf.keras.layers.LeakyReLU(0.2, name=f"{name}_act")(x)


def _check_upsample(upsample: str) -> str:
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {UPSAMPLES}, got {upsample!r}")
    return upsample


def _upsample_conv(x, filters: int, upsample: str, name: str, use_bias: bool, activation=None,
                   conv_name: Optional[str] = None):
    """2x upsampling convolution: nearest resize + 3x3 conv ("resize") or 4x4 stride-2 transposed conv."""
    if upsample == "resize":
        x = tf.keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
        return tf.keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=_init(), use_bias=use_bias,
                                      activation=activation, name=conv_name or f"{name}_conv")(x)
    return tf.keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", kernel_initializer=_init(),
                                           use_bias=use_bias, activation=activation,
                                           name=conv_name or f"{name}_deconv")(x)


def _up_block(x, filters: int, norm: str, dropout: float, name: str, upsample: str = "transpose", film=None):
    """Upsampling conv (see :func:`_upsample_conv`) -> norm -> (FiLM) -> (dropout) -> ReLU.

    ``film``: the class embedding ``[B, D]`` tensor when the block is class-modulated.
    """
    norm_layer = _normalization(norm, f"{name}_norm")
    x = _upsample_conv(x, filters, upsample, name, use_bias=norm_layer is None)
    if norm_layer is not None:
        x = norm_layer(x)
    if film is not None:
        x = ClassFiLM(name=f"{name}_film")([x, film])
    if dropout > 0:
        x = GeneratorDropout(dropout, name=f"{name}_dropout")(x)
    return tf.keras.layers.ReLU(name=f"{name}_act")(x)


def _broadcast_label(label, num_labels: int, embed_dim: int, height: int, width: int, name: str):
    """Embed ``label`` [B] and tile it to a ``[B, height, width, embed_dim]`` feature map."""
    e = tf.keras.layers.Embedding(num_labels, embed_dim, embeddings_initializer=_init(), name=f"{name}_embed")(label)
    e = tf.keras.layers.Reshape((1, 1, embed_dim), name=f"{name}_reshape")(e)
    if (height, width) != (1, 1):
        e = tf.keras.layers.UpSampling2D((height, width), name=f"{name}_tile")(e)
    return e


def build_generator(num_classes: int, image_size: ImageSize = (256, 256), base_filters: int = 64,
                    norm: str = "batch", num_labels: Optional[int] = None, label_embed_dim: int = 32,
                    max_filters: int = 512, depth: Optional[int] = None, dropout: float = 0.5,
                    dropout_blocks: Optional[int] = None, name: str = "generator", upsample: str = "resize",
                    label_conditioning: Optional[str] = None, arch: str = "unet",
                    style_dim: int = 0) -> tf.keras.Model:
    """The pix2pix U-Net generator: label map (+ optional class label) -> RGB in ``[-1, 1]``.

    ``arch="spade"`` builds :func:`build_spade_generator` instead (same inputs and output;
    ``depth`` and ``upsample`` do not apply to it, ``upsample`` must stay "resize").

    Inputs: ``mask`` int32 ``[B,H,W]`` of class ids (void = ``IGNORE_ID``, becomes an all-zero
    one-hot vector) and, when ``num_labels`` is given, ``label`` int32 ``[B]``. Call a
    conditional generator with ``{"mask": ..., "label": ...}``; an unconditional one with the
    mask tensor.

    ``depth`` stride-2 encoder steps (automatic: see :func:`generator_depth`) with
    ``min(base_filters * 2**i, max_filters)`` filters; the decoder mirrors them with skip
    connections. As in pix2pix, the first decoder blocks use dropout (``dropout`` rate, in
    ``dropout_blocks`` blocks, default ``min(3, (depth - 1) // 2)``), the only noise source.

    ``upsample``: "resize" (nearest 2x + 3x3 conv, no checkerboard; default) or "transpose"
    (4x4 stride-2 transposed conv, the original pix2pix) in every decoder block and the output
    layer. With "resize" the output conv also sees the full-resolution one-hot label map
    (``rgb_skip``): a resize-conv cannot tell the four pixels of a 2x2 block apart the way a
    transposed conv's phases do, and the label map restores pixel-exact class boundaries.

    ``label_conditioning`` (class-conditional only; default "film"): "film" embeds the label into
    ``label_embed_dim`` channels (``g_label_embed``) and modulates the bottleneck and every
    decoder block after its normalisation with a :class:`ClassFiLM` layer (``bottleneck_film``,
    ``up<j>_film``); "bottleneck" concatenates the tiled embedding to the bottleneck only (the
    original design; the U-Net skips bypass it).

    ``style_dim`` > 0 (the U-Net only): a third input ``reference``, float32 ``[B,H,W,3]`` in
    ``[0, 1]``, a real image whose appearance (colours, textures, background) the output should
    take, as GauGAN's style encoder gives it (Park et al. 2019; exemplar guidance). A small
    encoder (:func:`reference_encoder`: strided convolutions without normalisation, so colour
    means survive, then global average pooling, so the reference's layout does not) turns it into
    ``style_dim`` numbers, which FiLM every decoder block and the bottleneck, beside the class
    embedding when there is one. :class:`Pix2Pix` trains it with each target image, flipped and
    shifted, as its own reference; generation passes a real image of the candidate's class (the one
    its label map was sampled from).
    """
    style_dim = check_style_dim(style_dim, arch, label_conditioning if num_labels else None)
    if arch not in GENERATOR_ARCHS:
        raise ValueError(f"generator arch must be one of {GENERATOR_ARCHS}, got {arch!r}")
    if arch == "spade":
        check_spade_generator(image_size, num_labels, label_conditioning, _check_upsample(upsample))
        if depth is not None:
            raise ValueError("depth is for the U-Net generator; a SPADE generator's depth follows the image size")
        return build_spade_generator(num_classes, image_size, base_filters=base_filters, norm=norm,
                                     num_labels=num_labels, label_embed_dim=label_embed_dim, max_filters=max_filters,
                                     dropout=dropout, dropout_blocks=dropout_blocks, name=name,
                                     label_conditioning=label_conditioning)
    h, w = _image_size(image_size)
    depth = generator_depth((h, w), depth)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    _check_upsample(upsample)
    if num_labels:
        label_conditioning = label_conditioning or "film"
        if label_conditioning not in LABEL_CONDITIONINGS:
            raise ValueError(f"label_conditioning must be one of {LABEL_CONDITIONINGS}, got {label_conditioning!r}")
    if dropout_blocks is None:
        dropout_blocks = min(3, (depth - 1) // 2)
    filters = [min(base_filters * 2**i, max_filters) for i in range(depth)]

    mask = tf.keras.Input((h, w), dtype=tf.int32, name="mask")
    inputs = [mask]
    x = one_hot = OneHotMask(num_classes, name="one_hot")(mask)

    skips = []
    for i, f in enumerate(filters):
        first_or_innermost = i == 0 or i == depth - 1
        x = _down_block(x, f, "none" if first_or_innermost else norm, name=f"down{i}")
        skips.append(x)

    film = None
    if num_labels:
        label = tf.keras.Input((), dtype=tf.int32, name="label")
        inputs.append(label)
        if label_conditioning == "film":
            film = tf.keras.layers.Embedding(int(num_labels), int(label_embed_dim), name="g_label_embed",
                                             embeddings_initializer=tf.keras.initializers.RandomNormal(0.0, 1.0))(label)
        else:
            bh, bw = h // 2**depth, w // 2**depth
            lab = _broadcast_label(label, int(num_labels), int(label_embed_dim), bh, bw, name="g_label")
            x = tf.keras.layers.Concatenate(name="bottleneck_label")([x, lab])
    if style_dim:
        reference = tf.keras.Input((h, w, 3), dtype=tf.float32, name="reference")
        inputs.append(reference)
        style = reference_encoder(reference, style_dim, base_filters, max_filters)
        film = style if film is None else tf.keras.layers.Concatenate(name="g_film_condition")([film, style])
    if film is not None:
        x = ClassFiLM(name="bottleneck_film")([x, film])

    for j, i in enumerate(reversed(range(depth - 1))):  # decoder block j mirrors encoder block i
        x = _up_block(x, filters[i], norm, dropout if j < dropout_blocks else 0.0, name=f"up{j}",
                      upsample=upsample, film=film)
        x = tf.keras.layers.Concatenate(name=f"skip{j}")([x, skips[i]])

    if upsample == "resize":  # the output conv also sees the full-resolution label map (pixel-exact boundaries)
        x = tf.keras.layers.UpSampling2D(2, interpolation="nearest", name="rgb_upsample")(x)
        x = tf.keras.layers.Concatenate(name="rgb_skip")([x, one_hot])
        rgb = tf.keras.layers.Conv2D(3, 3, padding="same", kernel_initializer=_init(), activation="tanh", name="rgb")(x)
    else:
        rgb = _upsample_conv(x, 3, upsample, "rgb", use_bias=True, activation="tanh", conv_name="rgb")
    return tf.keras.Model(inputs if len(inputs) > 1 else mask, rgb, name=name)


STYLE_ENCODER_MAX_DOWN = 4  # the reference encoder's stride-2 convolutions (fewer on small images)


def check_style_dim(style_dim, arch: str = "unet", label_conditioning: Optional[str] = None) -> int:
    """``style_dim`` as an int (0: no reference input); ValueError where it cannot apply."""
    if isinstance(style_dim, bool) or not isinstance(style_dim, (int, np.integer)) or style_dim < 0:
        raise ValueError(f"style_dim must be a whole number >= 0 (0: no reference image), got {style_dim!r}")
    style_dim = int(style_dim)
    if style_dim and arch != "unet":
        raise ValueError(f"a reference image (style_dim > 0) is built for the U-Net generator, not {arch!r}")
    if style_dim and label_conditioning == "bottleneck":
        raise ValueError("a reference image (style_dim > 0) modulates the decoder with FiLM; it needs "
                         "label_conditioning='film' (the default), not 'bottleneck'")
    return style_dim


def reference_encoder(reference, style_dim: int, base_filters: int = 64, max_filters: int = 512):
    """``[B, style_dim]`` appearance code of a ``[B,H,W,3]`` image in ``[0, 1]`` (``g_ref_*`` layers).

    Stride-2 4x4 convolutions with leaky ReLU and no normalisation (an instance norm would remove
    each image's channel means, which is where a class's colour lives), global average pooling
    (the code keeps what the image looks like, not where things are), one dense layer. He and
    Glorot initialisation keep the code of order one from the start, as the class embedding is (with
    pix2pix's N(0, 0.02) the code of a 4-layer encoder starts near 1e-5 and the decoder ignores it).
    """
    h, w = int(reference.shape[1]), int(reference.shape[2])
    n_down = max(1, min(STYLE_ENCODER_MAX_DOWN, int(math.log2(max(2, min(h, w)))) - 2))
    x = tf.keras.layers.Rescaling(2.0, offset=-1.0, name="g_ref_scale")(reference)
    for i in range(n_down):
        x = tf.keras.layers.Conv2D(min(base_filters * 2**i, max_filters), 4, strides=2, padding="same",
                                   kernel_initializer="he_uniform", name=f"g_ref_conv{i}")(x)
        x = tf.keras.layers.LeakyReLU(0.2, name=f"g_ref_lrelu{i}")(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="g_ref_pool")(x)
    return tf.keras.layers.Dense(int(style_dim), name="g_ref_style")(x)


# --------------------------------------------------------------------------- SPADE generator
def spade_upsamplings(image_size: ImageSize) -> int:
    """Nearest-2x upsamplings of a SPADE generator for ``image_size``: the most (at most
    ``SPADE_MAX_UPSAMPLINGS``) that keep both sides integers and the starting map's short side at
    least ``SPADE_MIN_START``: 64x64 -> 4 (starts at 4x4), 128x160 -> 5 (4x5), 256x256 -> 6."""
    h, w = _image_size(image_size)
    n = 0
    while (n < SPADE_MAX_UPSAMPLINGS and h % 2**(n + 1) == 0 and w % 2**(n + 1) == 0
           and min(h, w) // 2**(n + 1) >= SPADE_MIN_START):
        n += 1
    return n


def _spade(x, cond, hidden: int, norm: str, name: str):
    """SPADE (spatially-adaptive denormalisation): ``norm(x) * gamma(cond) + beta(cond)``.

    ``cond`` is the conditioning map at ``x``'s resolution; a shared 3x3 conv with ReLU
    (``hidden`` channels) and two 3x3 convs give a scale and a shift per pixel and channel. The
    scale conv's bias starts at one (GauGAN's ``1 + gamma``), so the layer starts near the
    plain normalisation.
    """
    channels = int(x.shape[-1])
    norm_layer = _normalization(norm, f"{name}_norm", affine=False)
    xn = norm_layer(x) if norm_layer is not None else x
    a = tf.keras.layers.Conv2D(hidden, 3, padding="same", activation="relu", kernel_initializer=_init(),
                               name=f"{name}_shared")(cond)
    gamma = tf.keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=_init(), bias_initializer="ones",
                                   name=f"{name}_gamma")(a)
    beta = tf.keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=_init(), name=f"{name}_beta")(a)
    x = tf.keras.layers.Multiply(name=f"{name}_scale")([xn, gamma])
    return tf.keras.layers.Add(name=f"{name}_shift")([x, beta])


def _spade_block(x, cond, filters: int, hidden: int, norm: str, name: str):
    """GauGAN's SPADE residual block: two (SPADE -> LeakyReLU(0.2) -> 3x3 conv) steps; the
    shortcut is SPADE -> 1x1 conv (no bias) when the channel count changes, else the input."""
    fin = int(x.shape[-1])
    middle = min(fin, filters)
    if fin != filters:
        s = _spade(x, cond, hidden, norm, f"{name}_s")
        s = tf.keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=_init(), name=f"{name}_conv_s")(s)
    else:
        s = x
    d = x
    for k, f in enumerate((middle, filters)):
        d = _spade(d, cond, hidden, norm, f"{name}_{k}")
        d = tf.keras.layers.LeakyReLU(0.2, name=f"{name}_act{k}")(d)
        d = tf.keras.layers.Conv2D(f, 3, padding="same", kernel_initializer=_init(), name=f"{name}_conv{k}")(d)
    return tf.keras.layers.Add(name=f"{name}_out")([s, d])


def check_spade_generator(image_size: ImageSize, num_labels: Optional[int] = None,
                          label_conditioning: Optional[str] = None, upsample: str = "resize") -> int:
    """Refuse what a SPADE generator cannot take (an image size that gives no 2x upsampling, the
    U-Net's transposed decoder or bottleneck label); returns its number of upsamplings. One check for
    :func:`build_spade_generator`, :func:`build_generator` and ``train_gan`` (which calls it before
    its run folder is written)."""
    h, w = _image_size(image_size)
    if upsample != "resize":
        raise ValueError("a SPADE generator upsamples by nearest resizing; upsample='transpose' is for the U-Net")
    if num_labels and label_conditioning not in (None, "film"):
        raise ValueError(f"a SPADE generator takes the class label through every SPADE layer (label_conditioning "
                         f"'film'); {label_conditioning!r} is for the U-Net")
    n = spade_upsamplings((h, w))
    if n < 1:
        raise ValueError(f"image size {h}x{w} is too small or odd for a SPADE generator: height and width must be even "
                         f"and at least {2 * SPADE_MIN_START}")
    return n


def build_spade_generator(num_classes: int, image_size: ImageSize = (256, 256), base_filters: int = 64,
                          norm: str = "instance", num_labels: Optional[int] = None, label_embed_dim: int = 32,
                          max_filters: int = 512, dropout: float = 0.5, dropout_blocks: Optional[int] = None,
                          name: str = "generator", label_conditioning: Optional[str] = None,
                          hidden: Optional[int] = None) -> tf.keras.Model:
    """A SPADE generator (Park et al. 2019, "Semantic Image Synthesis with Spatially-Adaptive
    Normalization", GauGAN without its style encoder): label map (+ class label) -> RGB in ``[-1, 1]``.

    Same inputs and output as :func:`build_generator`'s U-Net, so training, export and generation
    treat both alike. There is no encoder: a 3x3 conv turns the label map, average-pooled to
    ``1/2**n`` of the image (``n`` from :func:`spade_upsamplings`), into the starting features;
    ``n`` SPADE residual blocks (:func:`_spade_block`) at ``1/2**n`` ... ``1/2`` of the image, each
    followed by a nearest 2x upsampling; then LeakyReLU, and a 3x3 conv with tanh on those features
    concatenated with the full-resolution one-hot map (pixel-exact boundaries, as the U-Net's
    ``rgb_skip``; a SPADE block at full resolution would cost as much as all the others together).
    Every normalisation in every block is modulated by the label map at that block's resolution
    (one-hot, average-pooled, so thin structures such as edge maps survive as densities), so the
    map reaches every scale instead of only through U-Net skips. The block at ``1/2**i`` of the
    image has ``min(base_filters * 2**(i - 1), max_filters)`` output channels (the start conv
    ``min(base_filters * 2**n, max_filters)``); SPADE's hidden width is ``hidden`` (default
    ``min(128, 2 * base_filters)``). ``norm`` is the parameter-free normalisation SPADE modulates
    ("instance", "batch" or "none"). As in pix2pix, the first ``dropout_blocks`` blocks (default
    ``min(3, n // 2)``) apply dropout ``dropout`` when training, the only noise source.

    Class-conditional (``num_labels``): the label's learned embedding (``label_embed_dim``
    channels), tiled over the map, is concatenated to the label map as every SPADE layer's
    conditioning input, so the class sets the scale and shift of every normalisation, per pixel
    (``label_conditioning`` must be "film" or unset: the spatial form of class-conditional
    normalisation).
    """
    h, w = _image_size(image_size)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    n = check_spade_generator((h, w), num_labels, label_conditioning)
    hidden = int(hidden) if hidden else min(128, 2 * int(base_filters))
    if dropout_blocks is None:
        dropout_blocks = min(3, n // 2)
    mask = tf.keras.Input((h, w), dtype=tf.int32, name="mask")
    inputs = [mask]
    one_hot = OneHotMask(num_classes, name="one_hot")(mask)
    embed = None
    if num_labels:
        label = tf.keras.Input((), dtype=tf.int32, name="label")
        inputs.append(label)
        embed = tf.keras.layers.Embedding(int(num_labels), int(label_embed_dim), embeddings_initializer=_init(),
                                          name="g_label_embed")(label)
        embed = tf.keras.layers.Reshape((1, 1, int(label_embed_dim)), name="g_label_reshape")(embed)

    conds: Dict[int, tf.Tensor] = {}

    def cond_at(level: int):  # the conditioning map at 1/2**level of the image (built once per level)
        if level not in conds:
            m = one_hot if level == 0 else tf.keras.layers.AveragePooling2D(2**level, name=f"map_pool{level}")(one_hot)
            if embed is not None:
                tiled = tf.keras.layers.UpSampling2D((h // 2**level, w // 2**level), name=f"g_label_tile{level}")(embed)
                m = tf.keras.layers.Concatenate(name=f"cond{level}")([m, tiled])
            conds[level] = m
        return conds[level]

    filters = [min(int(base_filters) * 2**i, int(max_filters)) for i in range(n + 1)]
    x = tf.keras.layers.Conv2D(filters[n], 3, padding="same", kernel_initializer=_init(),
                               name="spade_in")(cond_at(n))
    for j, level in enumerate(range(n, 0, -1)):  # block j works at 1/2**level of the image
        x = _spade_block(x, cond_at(level), filters[level - 1], hidden, norm, name=f"spade{j}")
        if j < dropout_blocks and dropout > 0:
            x = GeneratorDropout(dropout, name=f"spade{j}_dropout")(x)
        if level > 1:
            x = tf.keras.layers.UpSampling2D(2, interpolation="nearest", name=f"spade{j}_upsample")(x)
    # The full-resolution step is the output conv alone, which also sees the full-resolution label
    # map (pixel-exact boundaries, as the U-Net's rgb_skip): a SPADE block at full resolution costs
    # as much as all the others together.
    x = tf.keras.layers.LeakyReLU(0.2, name="rgb_act")(x)
    x = tf.keras.layers.UpSampling2D(2, interpolation="nearest", name="rgb_upsample")(x)
    x = tf.keras.layers.Concatenate(name="rgb_skip")([x, one_hot])
    rgb = tf.keras.layers.Conv2D(3, 3, padding="same", kernel_initializer=_init(), activation="tanh", name="rgb")(x)
    return tf.keras.Model(inputs if num_labels else mask, rgb, name=name)


# --------------------------------------------------------------------------- discriminator
def _spectral(layer: tf.keras.layers.Layer, spectral_norm: bool, name: str):
    return tfa.layers.SpectralNormalization(layer, name=name) if spectral_norm else layer


def discriminator_downsamplings(image_size: ImageSize) -> int:
    """Stride-2 layers of the PatchGAN: 3 (the 70x70 PatchGAN) unless the image is small.

    Fewer for small images, so the logits map stays at least 4 pixels on its short side.
    """
    h, w = _image_size(image_size)
    return max(1, min(3, int(math.floor(math.log2(min(h, w)))) - 2))


MAX_D_SCALES = 4


def check_discriminator_scales(num_scales, image_size: ImageSize) -> int:
    """``num_scales`` as an int; ``ValueError`` unless 1..MAX_D_SCALES and the image pools evenly to >= 8 px."""
    if isinstance(num_scales, bool) or not isinstance(num_scales, (int, np.integer)) \
            or not 1 <= num_scales <= MAX_D_SCALES:
        raise ValueError(f"the discriminator's number of scales must be an integer from 1 to {MAX_D_SCALES}, "
                         f"got {num_scales!r}")
    h, w = _image_size(image_size)
    factor = 2 ** (int(num_scales) - 1)
    if h % factor or w % factor or min(h, w) // factor < 8:
        raise ValueError(f"a {num_scales}-scale discriminator pools the {h}x{w} images by up to {factor}: their "
                         f"sides must be multiples of {factor} and at least {8 * factor} pixels")
    grid = _patch_grid(h, w)
    for s in range(1, int(num_scales)):
        coarse = _patch_grid(h // 2**s, w // 2**s)
        if grid[0] % coarse[0] or grid[1] % coarse[1]:
            raise ValueError(f"a {num_scales}-scale discriminator on {h}x{w} images: scale {s}'s {coarse[0]}x"
                             f"{coarse[1]} patch grid does not tile the full-resolution {grid[0]}x{grid[1]} one; "
                             "use sides that are multiples of a larger power of 2, or fewer scales")
    return int(num_scales)


def _patch_grid(h: int, w: int) -> Tuple[int, int]:
    """The PatchGAN's logits grid on an ``h x w`` input (its stride-2 "same" convolutions round up)."""
    for _ in range(discriminator_downsamplings((h, w))):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def _patch_discriminator(x, label, num_labels: Optional[int], n_down: int, base_filters: int, norm: str,
                         spectral_norm: bool, max_filters: int, label_conditioning: str, prefix: str):
    """The PatchGAN trunk on the concatenated input ``x`` -> one logit per patch.

    ``prefix`` "" names the layers as the single-scale discriminator always has (``d0_conv``,
    ``d_feat_0``, ``logits``, ...); a scale's prefix (``"s1_"``) is inserted after ``d``.
    """
    def named(name):  # "d0_conv" -> "d_s1_d0_conv"
        return f"d_{prefix}{name}" if prefix else name

    strides = [2] * n_down + [1]  # the stride-1 layer widens the receptive field (70x70 for n=3)
    for i, s in enumerate(strides):
        f = min(base_filters * 2**i, max_filters)
        norm_layer = _normalization("none" if i == 0 else norm, named(f"d{i}_norm"))
        conv = tf.keras.layers.Conv2D(f, 4, strides=s, padding="same", kernel_initializer=_init(),
                                      use_bias=norm_layer is None, name=named(f"d{i}_conv"))
        x = _spectral(conv, spectral_norm, named(f"d{i}_sn"))(x)
        if norm_layer is not None:
            x = norm_layer(x)
        x = tf.keras.layers.LeakyReLU(0.2, name=f"{FEATURE_PREFIX}{prefix}{i}")(x)
    logits_conv = tf.keras.layers.Conv2D(1, 4, strides=1, padding="same", kernel_initializer=_init(),
                                         name=named("logits"))
    logits = _spectral(logits_conv, spectral_norm, named("logits_sn"))(x)
    if label is not None and label_conditioning == "projection":
        logits = tf.keras.layers.Add(name=named("d_logits"))(
            [logits, ClassProjection(int(num_labels), name=named("d_projection"))([x, label])])
    return logits


def build_discriminator(num_classes: int, image_size: ImageSize = (256, 256), base_filters: int = 64,
                        norm: str = "batch", spectral_norm: bool = False, num_labels: Optional[int] = None,
                        label_embed_dim: int = 32, max_filters: int = 512, label_conditioning: str = "input",
                        num_scales: int = 1, name: str = "discriminator") -> tf.keras.Model:
    """PatchGAN discriminator on ``concat(one-hot label map, image)``.

    Inputs (call with a dict): ``mask`` int32 ``[B,H,W]``, ``image`` float ``[B,H,W,3]`` in
    ``[-1, 1]`` and, when ``num_labels`` is given, ``label`` int32 ``[B]``. How the label enters
    (``label_conditioning``, class-conditional only): "input" (default) embeds it and tiles it
    over the image beside the label map; "projection" adds the projection discriminator's class
    term :class:`ClassProjection` of the last hidden features to every patch's logit
    (``d_projection``) and does not feed the label in at the input. Output: one logit per patch,
    ``[B, H/2**n, W/2**n, 1]`` with ``n`` from :func:`discriminator_downsamplings`. Every hidden activation is named ``d_feat_<i>``; use
    :func:`discriminator_features` to get them for feature matching. ``spectral_norm`` wraps
    every convolution in ``tfa.layers.SpectralNormalization`` (usually with ``norm="none"``).

    ``num_scales`` > 1 makes it pix2pixHD's multi-scale discriminator: scale ``s`` is another
    PatchGAN (its own weights) on the input average-pooled by ``2**s`` (the one-hot label map
    becomes class densities), so the coarse ones judge the layout and the full-resolution one the
    texture. Each scale's logits are nearest-upsampled to the finest scale's grid and stacked:
    the output is ``[B, h, w, num_scales]``, and a loss averaged over it weighs every scale
    equally, as pix2pixHD sums one loss per discriminator. Scale ``s`` names its layers
    ``d_s<s>_<name>`` and its activations ``d_feat_s<s>_<i>`` (feature matching uses them all).
    """
    h, w = _image_size(image_size)
    num_scales = check_discriminator_scales(num_scales, (h, w))
    mask = tf.keras.Input((h, w), dtype=tf.int32, name="mask")
    image = tf.keras.Input((h, w, 3), dtype=tf.float32, name="image")
    inputs = {"mask": mask, "image": image}
    if label_conditioning not in D_LABEL_CONDITIONINGS:
        raise ValueError(f"the discriminator's label_conditioning must be one of {D_LABEL_CONDITIONINGS}, "
                         f"got {label_conditioning!r}")
    parts = [OneHotMask(num_classes, name="one_hot")(mask), image]
    label = None
    if num_labels:
        label = tf.keras.Input((), dtype=tf.int32, name="label")
        inputs["label"] = label
        if label_conditioning == "input":
            parts.append(_broadcast_label(label, int(num_labels), int(label_embed_dim), h, w, name="d_label"))
    x = tf.keras.layers.Concatenate(name="d_input")(parts)
    trunk = dict(num_labels=num_labels, base_filters=base_filters, norm=norm, spectral_norm=spectral_norm,
                 max_filters=max_filters, label_conditioning=label_conditioning)
    logits = _patch_discriminator(x, label, n_down=discriminator_downsamplings((h, w)), prefix="", **trunk)
    if num_scales == 1:
        return tf.keras.Model(inputs, logits, name=name)
    grid = logits.shape[1:3]
    stacked = [logits]
    for s in range(1, num_scales):
        xs = tf.keras.layers.AveragePooling2D(2**s, name=f"d_s{s}_pool")(x)
        ls = _patch_discriminator(xs, label, n_down=discriminator_downsamplings((h // 2**s, w // 2**s)),
                                  prefix=f"s{s}_", **trunk)
        up = (grid[0] // ls.shape[1], grid[1] // ls.shape[2])  # whole: check_discriminator_scales
        stacked.append(tf.keras.layers.UpSampling2D(up, name=f"d_s{s}_up")(ls) if up != (1, 1) else ls)
    return tf.keras.Model(inputs, tf.keras.layers.Concatenate(name="d_scales")(stacked), name=name)


def discriminator_features(discriminator: tf.keras.Model) -> tf.keras.Model:
    """A model sharing ``discriminator``'s layers that returns ``[feat_0, ..., feat_n, logits]``."""
    feats = [l.output for l in discriminator.layers if l.name.startswith(FEATURE_PREFIX)]
    if not feats:
        raise ValueError(f"{discriminator.name} has no '{FEATURE_PREFIX}*' layers; build it with build_discriminator")
    return tf.keras.Model(discriminator.inputs, feats + [discriminator.output], name=f"{discriminator.name}_features")


# --------------------------------------------------------------------------- DiffAugment
def parse_diffaugment(policy) -> Optional[str]:
    """Canonical DiffAugment policy string (e.g. ``"color,translation,cutout"``) or ``None`` (off).

    ``policy``: ``None``, ``""`` or ``"none"`` (off), a comma-separated string or a sequence
    of ops from ``DIFFAUGMENT_OPS``, applied in the given order. Raises ``ValueError`` naming the
    ``diffaugment`` option on unknown or repeated ops.
    """
    if policy is None:
        return None
    parts = policy.split(",") if isinstance(policy, str) else list(policy)
    parts = [str(p).strip().lower() for p in parts if str(p).strip()]
    if not parts or parts == ["none"]:
        return None
    bad = [p for p in parts if p not in DIFFAUGMENT_OPS]
    if bad:
        raise ValueError(f"diffaugment: unknown op(s) {bad} in {policy!r}; use a comma-separated subset of "
                         f"{','.join(DIFFAUGMENT_OPS)} (or 'none')")
    if len(set(parts)) != len(parts):
        raise ValueError(f"diffaugment: repeated op in {policy!r}")
    return ",".join(parts)


def draw_diffaugment(rng: tf.random.Generator, policy: str, batch_size, height: int,
                     width: int) -> Dict[str, tf.Tensor]:
    """Random parameters of one DiffAugment draw for a batch, from ``rng`` (see :func:`diffaugment_pair`).

    As in the DiffAugment reference code: brightness ``+U(-0.5, 0.5)``, saturation ``x U(0, 2)``,
    contrast ``x U(0.5, 1.5)`` (on ``[-1, 1]`` images); translation by up to 1/8 of each side;
    cutout of a square of half each side centred anywhere in the image.
    """
    ops = parse_diffaugment(policy) or ""
    shape = tf.stack([batch_size, 1, 1, 1])
    p: Dict[str, tf.Tensor] = {}
    for op in ops.split(","):
        if op == "color":
            p["brightness"] = rng.uniform(shape) - 0.5
            p["saturation"] = rng.uniform(shape) * 2.0
            p["contrast"] = rng.uniform(shape) + 0.5
        elif op == "translation":
            sy, sx = int(height * DIFFAUGMENT_TRANSLATION + 0.5), int(width * DIFFAUGMENT_TRANSLATION + 0.5)
            p["shift_y"] = rng.uniform([batch_size], -sy, sy + 1, dtype=tf.int32)
            p["shift_x"] = rng.uniform([batch_size], -sx, sx + 1, dtype=tf.int32)
        elif op == "cutout":
            ch, cw = int(height * DIFFAUGMENT_CUTOUT + 0.5), int(width * DIFFAUGMENT_CUTOUT + 0.5)
            p["cut_y"] = rng.uniform([batch_size], 0, height + (1 - ch % 2), dtype=tf.int32) - ch // 2
            p["cut_x"] = rng.uniform([batch_size], 0, width + (1 - cw % 2), dtype=tf.int32) - cw // 2
    return p


def _shift(mask, image, shift, axis: int, ignore_id: int):
    """Translate along ``axis`` (1 rows, 2 columns) by ``shift`` [B]; uncovered pixels: image 0, mask void."""
    n = image.shape[axis]
    src = tf.range(n)[None, :] + shift[:, None]  # [B, n]: output index i reads input index i + shift
    valid = (src >= 0) & (src < n)
    src = tf.clip_by_value(src, 0, n - 1)
    image = tf.gather(image, src, axis=axis, batch_dims=1)
    mask = tf.gather(mask, src, axis=axis, batch_dims=1)
    valid = valid[:, :, None] if axis == 1 else valid[:, None, :]  # [B,H,W] broadcastable
    return tf.where(valid, mask, tf.cast(ignore_id, mask.dtype)), image * tf.cast(valid, image.dtype)[..., None]


def diffaugment_pair(mask, image, params: Dict[str, tf.Tensor], policy: str, ignore_id: int = IGNORE_ID):
    """Apply one DiffAugment draw (``params`` from :func:`draw_diffaugment`) to a (label map, image) pair.

    ``mask``: int ``[B,H,W]`` class ids; ``image``: float ``[B,H,W,3]`` in ``[-1, 1]``. Colour ops
    change the image only; translation and cutout move/cut the label map and the image
    identically: pixels translated in or cut out become 0 in the image and void (``ignore_id``,
    an all-zero one-hot vector in the discriminator) in the label map. Every op is
    differentiable w.r.t. ``image``. Returns ``(mask, image)``.
    """
    ops = parse_diffaugment(policy) or ""
    for op in ops.split(","):
        if op == "color":
            image = image + params["brightness"]
            mean = tf.reduce_mean(image, axis=3, keepdims=True)
            image = (image - mean) * params["saturation"] + mean
            mean = tf.reduce_mean(image, axis=[1, 2, 3], keepdims=True)
            image = (image - mean) * params["contrast"] + mean
        elif op == "translation":
            mask, image = _shift(mask, image, params["shift_y"], 1, ignore_id)
            mask, image = _shift(mask, image, params["shift_x"], 2, ignore_id)
        elif op == "cutout":
            h, w = image.shape[1], image.shape[2]
            ch, cw = int(h * DIFFAUGMENT_CUTOUT + 0.5), int(w * DIFFAUGMENT_CUTOUT + 0.5)
            ys, xs = tf.range(h)[None, :], tf.range(w)[None, :]
            y0, x0 = params["cut_y"][:, None], params["cut_x"][:, None]
            box = (((ys >= y0) & (ys < y0 + ch))[:, :, None]) & (((xs >= x0) & (xs < x0 + cw))[:, None, :])
            mask = tf.where(box, tf.cast(ignore_id, mask.dtype), mask)
            image = image * tf.cast(~box, image.dtype)[..., None]
    return mask, image


# --------------------------------------------------------------------------- losses
def _per_example_mean(x):
    """Mean over every axis but the batch axis -> ``[B]``."""
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def gan_loss_functions(gan_loss: str):
    """``(generator_fn(fake_logits), discriminator_fn(real_logits, fake_logits))`` -> per-example losses.

    The element-wise losses come from ``tensorflow_gan`` (``reduction=NONE``) and are averaged
    over patches here, leaving the batch reduction to the caller (global batch size).
    """
    import tensorflow_gan as tfgan

    L = tfgan.losses.wargs
    none = tf.compat.v1.losses.Reduction.NONE
    common = dict(reduction=none, loss_collection=None)
    if gan_loss == "bce":  # non-saturating GAN loss, as in pix2pix
        def g(fake):
            return L.modified_generator_loss(fake, **common)

        def d(real, fake):
            return L.modified_discriminator_loss(real, fake, label_smoothing=0.0, **common)
    elif gan_loss == "lsgan":
        def g(fake):
            return L.least_squares_generator_loss(fake, **common)

        def d(real, fake):
            return L.least_squares_discriminator_loss(real, fake, **common)
    elif gan_loss == "hinge":
        def g(fake):
            return L.wasserstein_generator_loss(fake, **common)

        def d(real, fake):
            return L.wasserstein_hinge_discriminator_loss(real, fake, **common)
    else:
        raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}")
    return (lambda fake: _per_example_mean(g(fake))), (lambda real, fake: _per_example_mean(d(real, fake)))


def loss_weight(name: str, weight) -> float:
    """``weight`` as a float (``None`` -> 0); ``ValueError`` naming ``name`` unless finite and >= 0."""
    weight = float(weight or 0.0)
    if weight < 0.0 or not math.isfinite(weight):
        raise ValueError(f"{name} must be a finite number >= 0, got {weight}")
    return weight


def discriminator_negative_loss(gan_loss: str):
    """``fn(logits)`` -> the per-example loss of the discriminator calling these pairs fake.

    The negative half of :func:`gan_loss_functions`' discriminator loss (``d(real, fake)`` is
    ``positive(real) + negative(fake)`` for every supported loss), used for the mismatched pairs
    of the matching-aware discriminator (see :class:`Pix2Pix`).
    """
    if gan_loss == "bce":
        def neg(logits):  # sigmoid cross-entropy against label 0
            return tf.nn.softplus(logits)
    elif gan_loss == "lsgan":
        def neg(logits):
            return 0.5 * tf.square(logits)
    elif gan_loss == "hinge":
        def neg(logits):
            return tf.nn.relu(1.0 + logits)
    else:
        raise ValueError(f"gan_loss must be one of {GAN_LOSSES}, got {gan_loss!r}")
    return lambda logits: _per_example_mean(neg(logits))


def discriminator_num_labels(discriminator: tf.keras.Model) -> Optional[int]:
    """How many class labels a class-conditional discriminator takes (its label embedding beside the
    input, or its projection layers' embeddings); ``None`` for one without a ``label`` input."""
    if "label" not in discriminator.input_names:
        return None
    for layer in discriminator.layers:
        if layer.name == "d_label_embed":
            return int(layer.input_dim)
        if isinstance(layer, ClassProjection):
            return layer.num_labels
    return None


def last_trunk_conv(discriminator: tf.keras.Model) -> str:
    """Name of the full-resolution PatchGAN's last hidden convolution (``d<n>_conv``, or its
    spectral-norm wrapper ``d<n>_sn``), whose output an auxiliary classifier head reads."""
    pattern = re.compile(r"^d(\d+)_(conv|sn)$")
    found = {}
    for layer in discriminator.layers:
        m = pattern.match(layer.name)
        if m:  # the wrapper, when there is one, is the layer in the graph
            i = int(m.group(1))
            if m.group(2) == "sn" or i not in found:
                found[i] = layer.name
    if not found:
        raise ValueError(f"{discriminator.name} has no 'd<i>_conv' layers; build it with build_discriminator")
    return found[max(found)]


def build_aux_classifier(feature_shape, num_labels: int, name: str = "d_aux_classifier") -> tf.keras.Model:
    """AC-GAN's auxiliary classifier head: global average pooling of a discriminator feature map
    ``[B,h,w,C]`` and one dense layer -> class logits ``[B, num_labels]``.

    :class:`Pix2Pix` feeds it the last trunk convolution's output *before* its normalisation:
    instance (or batch) norm removes each image's channel means, which is where a global colour
    lives, and a head on the normalised activations barely learned (``scripts/aux_head_check.py``:
    on demo-classes, 300 classifier steps from ln 37 = 3.61 to 3.47 per patch; pooled before the
    norm, 2.56).
    """
    feats = tf.keras.Input(tuple(feature_shape), name="features")
    pooled = tf.keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(feats)
    logits = tf.keras.layers.Dense(int(num_labels), kernel_initializer=_init(), name=f"{name}_logits")(pooled)
    return tf.keras.Model(feats, logits, name=name)


def mismatched_labels(label, num_labels: int, seed):
    """Each ``label`` replaced by a different one, uniformly among the other ``num_labels - 1``.

    Stateless (``seed``: an int tensor of shape ``[2]``), so a resumed run draws the same labels.
    """
    label = tf.cast(label, tf.int32)
    shift = tf.random.stateless_uniform(tf.shape(label), seed=seed, minval=1, maxval=num_labels, dtype=tf.int32)
    return (label + shift) % num_labels


def generator_inputs(generator: tf.keras.Model, data, reference=None):
    """``generator``'s inputs taken from a batch dict (or a bare mask tensor): the mask, the
    ``label`` of a class-conditional generator and, for one with a ``reference`` input
    (``style_dim`` > 0), ``reference`` when given, else the batch's ``reference``, else its
    ``image`` (each image its own reference)."""
    conditional = "label" in generator.input_names
    takes_reference = "reference" in generator.input_names
    if not isinstance(data, dict):
        if conditional:
            raise ValueError("this generator is class-conditional: pass {'mask': ..., 'label': ...}")
        if takes_reference:
            raise ValueError("this generator takes a reference image: pass {'mask': ..., 'reference': ...}")
        return tf.cast(data, tf.int32)
    mask = tf.cast(data["mask"], tf.int32)
    if not conditional and not takes_reference:
        return mask
    out = {"mask": mask}
    if conditional:
        if "label" not in data:
            raise ValueError("this generator is class-conditional but the batch has no 'label'")
        out["label"] = tf.cast(data["label"], tf.int32)
    if takes_reference:
        if reference is None:
            reference = data.get("reference", data.get("image"))
        if reference is None:
            raise ValueError("this generator takes a reference image but the batch has no 'reference' or 'image'")
        out["reference"] = tf.cast(reference, tf.float32)
    return out


def moved_reference(image, seed, replica=0, num_replicas: int = 1):
    """``image`` ``[B,H,W,3]`` with each example flipped left-right and up-down with probability 1/2
    and the batch rolled by a random (dy, dx), all drawn statelessly from ``seed`` (2 int64s).

    Under a distribution strategy, ``image`` is replica ``replica``'s share of a global batch of
    ``num_replicas`` equal shares: the flips are drawn for the global batch and this share's rows
    taken, so every example gets the flips it would get on one replica (not the same as the
    other replicas' examples at its position)."""
    n = tf.shape(image)[0]
    h, w = image.shape[1], image.shape[2]
    draws = tf.random.stateless_uniform([n * num_replicas, 2], seed=seed)[replica * n:(replica + 1) * n]
    lr = tf.reshape(draws[:, 0] < 0.5, [-1, 1, 1, 1])
    ud = tf.reshape(draws[:, 1] < 0.5, [-1, 1, 1, 1])
    image = tf.where(lr, tf.reverse(image, [2]), image)
    image = tf.where(ud, tf.reverse(image, [1]), image)
    shift = tf.random.stateless_uniform([2], seed=seed + 1, maxval=2**30, dtype=tf.int32)
    return tf.roll(image, [shift[0] % h, shift[1] % w], axis=[1, 2])


def _replica():
    """``(replica id, number of replicas)`` of the calling replica (``(0, 1)`` outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 0, 1
    return ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync


def masked_l1_per_example(real, fake, mask, ignore_id: int = IGNORE_ID):
    """Mean absolute error per example over non-void pixels (``mask != ignore_id``) -> ``[B]``.

    An example whose pixels are all void contributes 0.
    """
    valid = tf.cast(tf.not_equal(tf.cast(mask, tf.int32), ignore_id), fake.dtype)  # [B,H,W]
    err = tf.reduce_mean(tf.abs(tf.cast(real, fake.dtype) - fake), axis=-1)  # [B,H,W]
    total = tf.reduce_sum(err * valid, axis=[1, 2])
    return tf.math.divide_no_nan(total, tf.reduce_sum(valid, axis=[1, 2]))


def feature_matching_per_example(real_feats: List[tf.Tensor], fake_feats: List[tf.Tensor]):
    """pix2pixHD feature matching: mean L1 between discriminator activations, averaged over layers."""
    terms = [_per_example_mean(tf.abs(tf.stop_gradient(r) - f)) for r, f in zip(real_feats, fake_feats)]
    return tf.add_n(terms) / float(len(terms))


def default_optimizers(learning_rate: float = 2e-4, beta_1: float = 0.5):
    """pix2pix's optimisers ``(g_optimizer, d_optimizer)``: Adam(2e-4, beta_1=0.5) each, as
    :class:`~synthseg_tf.models.optimizers.FusedAdam` (Keras Adam's update in one fused kernel).

    Create them inside ``strategy.scope()`` when training distributed.
    """
    from synthseg_tf.models.optimizers import FusedAdam

    return (FusedAdam(learning_rate, beta_1=beta_1, name="g_adam"),
            FusedAdam(learning_rate, beta_1=beta_1, name="d_adam"))


# --------------------------------------------------------------------------- fast training forward pass
# Nearest 2x upsampling followed by a 3x3 "same" convolution equals one 4x4 stride-2 transposed
# convolution: along each axis, output pixel 2i reads input pixels (i-1, i) with taps (w0, w1+w2)
# and pixel 2i+1 reads (i, i+1) with (w0+w1, w2). Per 2x2 output block that is 4x4 = 16 taps per
# (input, output) channel pair instead of 4 x 9 = 36, and the decoder's resize-convolutions are most
# of the generator's arithmetic. Transposed tap a (output offset a - 1 from 2i) sums these 3x3 taps:
_UPSAMPLE_TAPS = ((2,), (1, 2), (0, 1), (0,))
# Fuse from this many batch x height x width pixels of the upsampling input (measured on CPU: the
# kernel rearrangement, paid every step, outweighs the saving below it, e.g. on 4x4 or 8x8 inputs
# with a 1024->512 kernel at batch 1).
FUSE_MIN_PIXELS = 256


def _upsample_taps(w, axis: int):
    """Along ``axis`` (size 3): taps ``(w0, w1, w2)`` -> ``(w2, w1 + w2, w0 + w1, w0)`` (see ``_UPSAMPLE_TAPS``)."""
    w0, w1, w2 = tf.unstack(w, 3, axis=axis)
    return tf.stack([w2, w1 + w2, w0 + w1, w0], axis=axis)


class FusedUpsampleConv(tf.keras.layers.Layer):
    """``conv(UpSampling2D(2, "nearest")(x))`` computed as one stride-2 transposed convolution.

    Owns no weights: it reads ``conv``'s kernel and bias (so gradients reach ``conv``'s variables)
    and applies ``conv``'s activation. ``conv`` must be a 3x3, stride-1, ``same``, undilated,
    ungrouped, channels-last ``Conv2D``. Same function as the pair; only the floating-point
    summation order differs (float32 differences ~1e-6 relative). Inputs with fewer than
    ``FUSE_MIN_PIXELS`` batch x height x width (static shape; batch taken as 1 when unknown) run
    the original ``conv(upsampling(x))``. Used by :func:`fused_generator` for training only; it is
    not meant to be saved.
    """

    def __init__(self, upsampling: tf.keras.layers.UpSampling2D, conv: tf.keras.layers.Conv2D, **kwargs):
        kwargs.setdefault("name", f"{conv.name}_fused")
        kwargs.setdefault("dtype", conv.dtype_policy)
        super().__init__(**kwargs)
        self.upsampling = upsampling
        self.conv = conv

    @tf.autograph.experimental.do_not_convert  # pure TF ops, static branches; see NO_AUTOGRAPH in synthseg_tf/_env.py
    def call(self, x, training=None):  # (``training`` unused; the decorator hides the signature from Keras)
        conv = self.conv
        pixels = None if None in x.shape[:3] else x.shape[0] * x.shape[1] * x.shape[2]
        if pixels is None and None not in x.shape[1:3]:
            pixels = x.shape[1] * x.shape[2]  # batch size unknown when traced: assume 1
        if pixels is None or pixels < FUSE_MIN_PIXELS:
            # Small inputs (near the bottleneck): rearranging the (large) kernel every step costs more
            # than the multiply-adds saved, so run the original pair.
            return conv(self.upsampling(x))
        # [3,3,in,out] -> transposed-conv kernel [4,4,out,in] (slices and adds: an einsum is slow on CPU)
        kernel = _upsample_taps(_upsample_taps(tf.cast(conv.kernel, x.dtype), 0), 1)
        kernel = tf.transpose(kernel, [0, 1, 3, 2])
        shape = tf.shape(x)
        y = tf.nn.conv2d_transpose(x, kernel, tf.stack([shape[0], 2 * shape[1], 2 * shape[2], conv.filters]),
                                   strides=2, padding="SAME")
        y.set_shape([x.shape[0], None if x.shape[1] is None else 2 * x.shape[1],
                     None if x.shape[2] is None else 2 * x.shape[2], conv.filters])
        if conv.use_bias:
            y = tf.nn.bias_add(y, tf.cast(conv.bias, y.dtype))
        return conv.activation(y) if conv.activation is not None else y


def _fusable_upsample_conv(up, conv) -> bool:
    """Whether ``conv(up(x))`` is a pair :class:`FusedUpsampleConv` can compute."""
    return (type(up) is tf.keras.layers.UpSampling2D and type(conv) is tf.keras.layers.Conv2D
            and tuple(up.size) == (2, 2) and up.interpolation == "nearest" and up.data_format == "channels_last"
            and tuple(conv.kernel_size) == (3, 3) and tuple(conv.strides) == (1, 1) and conv.padding == "same"
            and tuple(conv.dilation_rate) == (1, 1) and conv.groups == 1 and conv.data_format == "channels_last")


def fused_generator(generator: tf.keras.Model) -> Optional[tf.keras.Model]:
    """A training twin of ``generator`` with every (nearest 2x upsampling -> 3x3 conv) pair fused.

    The twin shares every layer and variable with ``generator`` (batch-norm statistics, dropout
    random streams included) and computes the same function, each pair as one
    :class:`FusedUpsampleConv` (2.25x fewer multiply-adds there). ``None`` when ``generator`` is not
    a functional model or has no such pair (e.g. ``upsample="transpose"``).
    """
    try:
        config = generator.get_config()
        layers = {layer.name: layer for layer in generator.layers}
        consumers: Dict[str, List[str]] = {}
        for layer in config["layers"]:
            for node in layer["inbound_nodes"]:
                for arg in node:
                    consumers.setdefault(arg[0], []).append(layer["name"])
    except Exception:  # not a functional model (subclassed, nested in an unusual way, ...)
        return None
    pairs = {}
    for name, users in consumers.items():
        if len(users) == 1 and name in layers and users[0] in layers \
                and _fusable_upsample_conv(layers[name], layers[users[0]]):
            pairs[name] = users[0]
    if not pairs:
        return None
    convs = set(pairs.values())
    upsamplings = {conv: layers[up] for up, conv in pairs.items()}

    def share_or_fuse(layer):
        if layer.name in pairs:
            return tf.keras.layers.Identity(name=f"{layer.name}_fused_away")
        if layer.name in convs:
            return FusedUpsampleConv(upsamplings[layer.name], layer)
        return layer  # shared, not copied

    twin = tf.keras.models.clone_model(generator, clone_function=share_or_fuse)
    if [id(v) for v in twin.trainable_variables] != [id(v) for v in generator.trainable_variables]:
        return None  # never expected; fall back to the plain generator rather than train other weights
    return twin


# --------------------------------------------------------------------------- the GAN model
class Pix2Pix(tf.keras.Model):
    """Generator + discriminator trained adversarially with an L1 reconstruction term.

    ``call(inputs)`` runs the generator (``inputs``: a mask tensor, or a dict with ``mask`` and,
    for a class-conditional generator, ``label``; extra keys such as ``image`` are ignored).
    After :meth:`compile`, ``fit()`` reports ``g_loss`` (total generator objective), ``g_gan``,
    ``g_l1``, ``d_loss`` and, with feature matching, ``g_fm``; with a class loss, ``g_cls``.

    Class loss (``compile(class_model=..., class_loss_weight=w)``, class-conditional generators
    only): a frozen classifier ``class_model`` (float32 images in ``[0, 1]`` -> class
    probabilities) scores every generated image, and the generator also minimises ``w`` times the
    cross-entropy of the image's intended ``label`` under it (as AC-GAN's generator does, with
    the classifier fixed). It pushes the class attributes (colour, texture) a pixel loss blurs
    towards the mean. Only the generator is trained by it; the discriminator is unchanged.

    Matching-aware discriminator (``compile(mismatch_weight=w)``, class-conditional models only;
    Reed et al. 2016, "Generative Adversarial Text to Image Synthesis"): the discriminator also
    sees each real (label map, image) pair with a *wrong* class label (drawn uniformly among the
    other labels, statelessly from the step count) and learns to call it fake, with weight ``w``
    (``d_mis``, the negative half of the discriminator loss on those pairs). A real image is then
    not enough to pass: it must also look like its class, which is the signal that pushes the
    generator to render class attributes (colour, texture) the label map does not show. It costs
    one more discriminator pass per step and trains only the discriminator directly; unlike the
    class loss it uses no external classifier, so a confidence filter stays independent of it.

    Auxiliary classifier (``compile(aux_class_weight=w)``; AC-GAN, Odena et al. 2017): a head
    (:func:`build_aux_classifier`, :attr:`aux_classifier`) on the discriminator's last
    full-resolution convolution (its output before the normalisation) predicts each image's class.
    The discriminator (trunk and head, one optimiser) also minimises ``w`` times its cross-entropy
    on the real images (``d_aux``), and the generator ``w`` times its cross-entropy on the generated
    ones under their intended labels (``g_aux``), so the generator is pushed towards what tells the
    classes apart in the real images. Unlike the class loss, the classifier trains with the GAN, on
    its images only. The head learns from real images only (as in many AC-GAN variants), so it
    cannot learn the generator's own mistakes as a class. It needs a class-conditional generator
    and a discriminator that does not take the label at its input
    (``label_conditioning="projection"``): with the label beside the image, the head would read the
    label, not the image.

    Reference image (a generator built with ``style_dim`` > 0): the generator's ``reference``
    input is the batch's ``reference`` when it has one, else its ``image``. In training steps it is
    each target image moved by :meth:`training_reference` (flips and a roll drawn statelessly from
    ``reference_seed`` and the step), so the encoder can carry the image's appearance (colours,
    textures, background) but not where things are, which the label map gives.

    ``diffaugment`` (policy, see :func:`parse_diffaugment`; default off): during training the
    discriminator sees DiffAugment-ed (label map, image) pairs, real and fake each with their
    own draw from ``augment_rng`` (a ``tf.random.Generator`` seeded with ``augment_seed``,
    checkpointable, one stream per replica); the generator's adversarial gradient flows through
    the augmentation. Feature matching compares the real pair's features with the fake image
    augmented by the *real* pair's draw (one extra discriminator pass), so matched positions
    stay aligned. The L1 term and evaluation (``test_step``) see un-augmented images.

    ``fused_upsample`` (default on): training steps run the generator through
    :func:`fused_generator`, which computes each decoder (nearest 2x upsampling -> 3x3 conv) pair as
    one stride-2 transposed convolution on the same variables -- the same function with 2.25x fewer
    multiply-adds in those layers (only the float summation order differs). The generator itself,
    inference, export and ``test_step`` are unchanged. No effect with ``upsample="transpose"``.

    ``ema_decay`` (default off): :attr:`ema_generator`, a non-trainable copy of the generator,
    follows ``ema = d * ema + (1 - d) * w`` after every generator step with
    ``d = min(ema_decay, (1 + t) / (EMA_WARMUP + t))`` at generator step ``t`` (a warm-up so
    short runs are not dominated by the random initialisation); non-trainable weights (batch
    norm statistics) are copied. :attr:`inference_generator` is the EMA generator when there is
    one (else the generator); ``test_step`` evaluates it.

    Under ``tf.distribute.MirroredStrategy``: build the models, this wrapper and ``compile``
    inside ``strategy.scope()`` and pass ``fit()`` a dataset of global batches (it is
    distributed for you) or a distributed dataset. Use one ``MirroredStrategy`` object per
    process (see ``synthseg_tf.training.gan.make_strategy``): several strategies over the same
    devices reuse collective-op keys and fail with shape-mismatch errors. Prefer
    ``norm="instance"`` when distributing: batch norm uses per-replica batch statistics.
    """

    def __init__(self, generator: tf.keras.Model, discriminator: tf.keras.Model, diffaugment=None,
                 ema_decay: Optional[float] = None, augment_seed: Optional[int] = None,
                 fused_upsample: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        # Training twin of the generator (see fused_generator), kept out of Keras' attribute
        # tracking so checkpoints and the model's layers are unchanged.
        object.__setattr__(self, "_train_generator", fused_generator(generator) if fused_upsample else None)
        self.conditional = "label" in generator.input_names
        self.reference_conditioned = "reference" in generator.input_names
        self._d_features = discriminator_features(discriminator)
        self.g_loss_tracker = tf.keras.metrics.Mean(name="g_loss")
        self.g_gan_tracker = tf.keras.metrics.Mean(name="g_gan")
        self.g_l1_tracker = tf.keras.metrics.Mean(name="g_l1")
        self.d_loss_tracker = tf.keras.metrics.Mean(name="d_loss")
        self.g_fm_tracker = tf.keras.metrics.Mean(name="g_fm")
        self.g_cls_tracker = tf.keras.metrics.Mean(name="g_cls")
        self.d_mis_tracker = tf.keras.metrics.Mean(name="d_mis")
        self.g_aux_tracker = tf.keras.metrics.Mean(name="g_aux")
        self.d_aux_tracker = tf.keras.metrics.Mean(name="d_aux")
        self.gan_loss = None
        self.l1_weight = 100.0
        self.feature_matching_weight = 0.0
        self.class_loss_weight = 0.0
        self.class_model = None
        self.mismatch_weight = 0.0
        self.mismatch_seed = None  # seeds the mismatched labels, with the step (set by compile)
        self.aux_class_weight = 0.0
        self.aux_classifier = None  # AC-GAN's head (made by compile with aux_class_weight > 0)
        self.num_labels = discriminator_num_labels(discriminator)

        self.diffaugment = parse_diffaugment(diffaugment)
        self.augment_rng = None
        if self.diffaugment:
            # Drawn from Python's RNG (seeded by tf.keras.utils.set_random_seed) when not given.
            self.augment_seed = int(augment_seed) if augment_seed is not None else random.randrange(2**31)
            self.augment_rng = tf.random.Generator.from_seed(self.augment_seed)
        # seeds the flips and shifts of each training reference, with the step (drawn only here, so
        # generators without a reference input draw as before)
        self.reference_seed = random.randrange(2**31) if self.reference_conditioned else None

        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.ema_generator = None
        if self.ema_decay is not None:
            if not 0.0 < self.ema_decay < 1.0:
                raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
            ema = tf.keras.models.clone_model(generator)
            ema.set_weights(generator.get_weights())
            pairs = [list(zip(ema.trainable_weights, generator.trainable_weights)),
                     list(zip(ema.non_trainable_weights, generator.non_trainable_weights))]
            if (len(ema.trainable_weights), len(ema.non_trainable_weights)) != (
                    len(generator.trainable_weights), len(generator.non_trainable_weights)) or any(
                    e.shape != w.shape for e, w in pairs[0] + pairs[1]):
                raise RuntimeError(f"the EMA copy of {generator.name} does not mirror its weights")
            self._ema_averaged = pairs[0]
            self._ema_copied = [(e, w) for e, w in pairs[1] if w.dtype.is_floating]  # e.g. batch-norm statistics
            ema.trainable = False  # (after pairing: freezing reorders non_trainable_weights)
            self.ema_generator = ema

    @property
    def inference_generator(self) -> tf.keras.Model:
        """The generator to deliver: the EMA generator when ``ema_decay`` is set, else the generator."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    # ---------------------------------------------------------------- setup
    def compile(self, g_optimizer=None, d_optimizer=None, gan_loss: str = "bce", l1_weight: float = 100.0,
                feature_matching_weight: float = 0.0, class_model=None, class_loss_weight: float = 0.0,
                mismatch_weight: float = 0.0, aux_class_weight: float = 0.0, **kwargs):
        """Set optimisers (default :func:`default_optimizers`) and the loss mix.

        ``gan_loss``: "bce" (non-saturating, pix2pix), "lsgan" or "hinge". The generator
        minimises ``gan + l1_weight * L1(void ignored) + feature_matching_weight * FM
        + class_loss_weight * CE(class_model(image), label)`` (the class loss: see the class doc;
        ``class_model`` is a callable, float32 ``[B,H,W,3]`` in ``[0, 1]`` -> probabilities
        ``[B,C]``, that is not trained here). ``mismatch_weight`` > 0 makes the discriminator
        matching-aware (see the class doc). ``aux_class_weight`` > 0 adds AC-GAN's auxiliary
        classifier (see the class doc); it makes the head, so call it inside ``strategy.scope()``.
        """
        class_loss_weight = loss_weight("class_loss_weight", class_loss_weight)
        if class_loss_weight > 0.0:
            if class_model is None:
                raise ValueError("class_loss_weight > 0 needs a class_model (a classifier of the generated images)")
            if not self.conditional:
                raise ValueError("a class loss needs a class-conditional generator (one with a 'label' input)")
        mismatch_weight = loss_weight("mismatch_weight", mismatch_weight)
        if mismatch_weight > 0.0:
            if not self.conditional or not self.num_labels:
                raise ValueError("a matching-aware discriminator (mismatch_weight > 0) needs a class-conditional "
                                 "generator and a discriminator built with num_labels (build_discriminator)")
            if self.num_labels < 2:
                raise ValueError("a matching-aware discriminator needs at least 2 class labels to mismatch")
            if self.mismatch_seed is None:  # drawn only here, so models without it draw as before
                self.mismatch_seed = random.randrange(2**31)
        aux_class_weight = loss_weight("aux_class_weight", aux_class_weight)
        if aux_class_weight > 0.0:
            self._make_aux_classifier()
        super().compile(**kwargs)
        if g_optimizer is None or d_optimizer is None:
            g_default, d_default = default_optimizers()
            g_optimizer = g_optimizer or g_default
            d_optimizer = d_optimizer or d_default
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.gan_loss = gan_loss
        self._g_loss_fn, self._d_loss_fn = gan_loss_functions(gan_loss)
        self.l1_weight = float(l1_weight)
        self.feature_matching_weight = float(feature_matching_weight)
        self.class_loss_weight = class_loss_weight
        self.class_model = class_model if class_loss_weight > 0.0 else None
        self.mismatch_weight = mismatch_weight
        self.aux_class_weight = aux_class_weight
        self._d_negative_fn = discriminator_negative_loss(gan_loss)

    @property
    def metrics(self):
        trackers = [self.g_loss_tracker, self.g_gan_tracker, self.g_l1_tracker, self.d_loss_tracker]
        if self.feature_matching_weight > 0:
            trackers.append(self.g_fm_tracker)
        if self.class_loss_weight > 0:
            trackers.append(self.g_cls_tracker)
        if self.mismatch_weight > 0:
            trackers.append(self.d_mis_tracker)
        if self.aux_class_weight > 0:
            trackers += [self.g_aux_tracker, self.d_aux_tracker]
        return trackers

    def _make_aux_classifier(self):
        """Make :attr:`aux_classifier` (once) on the discriminator's last full-resolution convolution."""
        if self.aux_classifier is not None:
            return
        if not self.conditional or not self.num_labels:
            raise ValueError("an auxiliary classifier (aux_class_weight > 0) needs a class-conditional generator "
                             "and a discriminator built with num_labels (build_discriminator)")
        if any(layer.name == "d_label_embed" for layer in self.discriminator.layers):
            raise ValueError("an auxiliary classifier (aux_class_weight > 0) needs a discriminator that does not "
                             "take the class label at its input (label_conditioning='projection'): with the label "
                             "beside the image, the head would read the label, not the image")
        conv = self.discriminator.get_layer(last_trunk_conv(self.discriminator)).output
        d = self._d_features
        # the same features and logits, plus the head's input (kept out of feature matching)
        self._d_features = tf.keras.Model(d.inputs, d.outputs[:-1] + [conv, d.outputs[-1]], name=d.name)
        self.aux_classifier = build_aux_classifier(conv.shape[1:], self.num_labels)

    @property
    def d_trainable_variables(self) -> List[tf.Variable]:
        """What the discriminator's optimiser trains: the discriminator and, with one, the auxiliary head."""
        head = self.aux_classifier.trainable_variables if self.aux_class_weight > 0 else []
        return self.discriminator.trainable_variables + head

    def build_optimizers(self):
        """Create the optimisers' slot variables now (e.g. before restoring a checkpoint)."""
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.d_trainable_variables)

    # ---------------------------------------------------------------- forward passes
    def generator_inputs(self, data, reference=None):
        """The generator's inputs taken from a batch dict (or a bare mask tensor); see
        :func:`generator_inputs`."""
        return generator_inputs(self.generator, data, reference)

    def training_reference(self, image):
        """Each training image as its own reference, moved so that only its appearance carries over:
        flipped left-right and up-down at random per example and rolled by a random shift (per step),
        drawn statelessly from ``reference_seed`` and the step."""
        seed = tf.stack([tf.constant(self.reference_seed, tf.int64), tf.cast(self.g_optimizer.iterations, tf.int64)])
        return moved_reference(tf.cast(image, tf.float32), seed, *_replica())

    def evaluation_reference(self, image):
        """Each evaluated image as its own reference, moved as in training but by one fixed draw
        (from ``reference_seed`` alone), so the validation losses of every epoch see the same
        references and none is handed the image's layout."""
        seed = tf.constant([self.reference_seed, -1], tf.int64)
        return moved_reference(tf.cast(image, tf.float32), seed, *_replica())

    def call(self, inputs, training=None):
        return self.generator(self.generator_inputs(inputs), training=training)

    def _discriminate(self, mask, image, label, training, head: bool = True):
        """``(features, logits, aux)`` of the discriminator on one (label map, image) batch; ``aux``:
        the auxiliary classifier's logits (``None`` without one, or with ``head=False``: passes
        whose class prediction is not used)."""
        inputs = {"mask": mask, "image": image}
        if self.conditional:
            inputs["label"] = label
        *feats, logits = self._d_features(inputs, training=training)
        if self.aux_classifier is None:
            return feats, logits, None
        *feats, head_input = feats  # (a head made by an earlier compile is unused at weight 0)
        if not head or self.aux_class_weight <= 0:
            return feats, logits, None
        return feats, logits, self.aux_classifier(head_input, training=training)

    def _forward(self, data, training: bool, generator: Optional[tf.keras.Model] = None):
        """Run G and D on a batch; returns per-example losses
        ``(g_total, g_gan, g_l1, g_fm, g_cls, d, d_mis, g_aux, d_aux)`` (``g_fm`` / ``g_cls`` / ``d_mis`` /
        ``g_aux`` and ``d_aux`` are ``None`` without feature matching / a class loss / a matching-aware
        discriminator / an auxiliary classifier; ``g_total`` and ``d`` include their weighted terms).

        DiffAugment is applied to the discriminator's inputs when ``training`` (see the class doc).
        """
        if self.gan_loss is None:
            raise RuntimeError("call compile() before training or evaluating Pix2Pix")
        mask = tf.cast(data["mask"], tf.int32)
        label = tf.cast(data["label"], tf.int32) if self.conditional else None
        real = tf.cast(data["image"], tf.float32) * 2.0 - 1.0
        if generator is None:
            generator = self.generator
            if training and self._train_generator is not None:
                generator = self._train_generator  # same function and variables, fewer multiply-adds
        reference = None
        if self.reference_conditioned:  # (moved in evaluation too: the unmoved image would hand over its layout)
            reference = self.training_reference(data["image"]) if training else self.evaluation_reference(data["image"])
        fake = generator(self.generator_inputs(data, reference), training=training)
        augment = training and self.diffaugment is not None
        real_pair = (mask, real)
        if augment:
            n, h, w = tf.shape(real)[0], real.shape[1], real.shape[2]
            real_draw = draw_diffaugment(self.augment_rng, self.diffaugment, n, h, w)
            fake_draw = draw_diffaugment(self.augment_rng, self.diffaugment, n, h, w)
            real_pair = diffaugment_pair(mask, real, real_draw, self.diffaugment)
            real_feats, real_logits, real_aux = self._discriminate(*real_pair, label, training)
            fake_feats, fake_logits, fake_aux = self._discriminate(
                *diffaugment_pair(mask, fake, fake_draw, self.diffaugment), label, training)
        else:
            real_feats, real_logits, real_aux = self._discriminate(mask, real, label, training)
            fake_feats, fake_logits, fake_aux = self._discriminate(mask, fake, label, training)

        g_gan = self._g_loss_fn(fake_logits)
        g_l1 = masked_l1_per_example(real, fake, mask)
        g_total = g_gan + self.l1_weight * g_l1
        g_aux = d_aux = None
        if self.aux_class_weight > 0:  # AC-GAN: the head learns the classes on real images; G is scored by it
            d_aux = tf.nn.sparse_softmax_cross_entropy_with_logits(label, tf.cast(real_aux, tf.float32))
            g_aux = tf.nn.sparse_softmax_cross_entropy_with_logits(label, tf.cast(fake_aux, tf.float32))
            g_total = g_total + self.aux_class_weight * g_aux
        g_fm = None
        if self.feature_matching_weight > 0:
            if augment:  # the fake under the real pair's draw, so matched features are aligned
                fake_feats, _, _ = self._discriminate(*diffaugment_pair(mask, fake, real_draw, self.diffaugment),
                                                      label, training, head=False)
            g_fm = feature_matching_per_example(real_feats, fake_feats)
            g_total = g_total + self.feature_matching_weight * g_fm
        g_cls = None
        if self.class_model is not None:
            probs = tf.cast(self.class_model((fake + 1.0) * 0.5), tf.float32)
            g_cls = tf.keras.losses.sparse_categorical_crossentropy(label, probs)
            g_total = g_total + self.class_loss_weight * g_cls
        d = self._d_loss_fn(real_logits, fake_logits)
        d_mis = None
        if self.mismatch_weight > 0:  # the real pair (as augmented above) under a wrong class label
            seed = tf.stack([tf.constant(self.mismatch_seed, tf.int64), tf.cast(self.d_optimizer.iterations, tf.int64)])
            wrong = mismatched_labels(label, self.num_labels, seed)
            _, mis_logits, _ = self._discriminate(*real_pair, wrong, training, head=False)
            d_mis = self._d_negative_fn(mis_logits)
            d = d + self.mismatch_weight * d_mis
        if d_aux is not None:
            d = d + self.aux_class_weight * d_aux
        return g_total, g_gan, g_l1, g_fm, g_cls, d, d_mis, g_aux, d_aux

    def _track(self, g_total, g_gan, g_l1, g_fm, g_cls, d, d_mis=None, g_aux=None, d_aux=None):
        """Feed per-example losses to the trackers (global means across replicas)."""
        self.g_loss_tracker.update_state(g_total)
        self.g_gan_tracker.update_state(g_gan)
        self.g_l1_tracker.update_state(g_l1)
        self.d_loss_tracker.update_state(d)
        if g_fm is not None:
            self.g_fm_tracker.update_state(g_fm)
        if g_cls is not None:
            self.g_cls_tracker.update_state(g_cls)
        if d_mis is not None:
            self.d_mis_tracker.update_state(d_mis)
        if g_aux is not None:
            self.g_aux_tracker.update_state(g_aux)
            self.d_aux_tracker.update_state(d_aux)
        return {m.name: m.result() for m in self.metrics}

    @staticmethod
    def _scaled_loss(per_example, model: tf.keras.Model):
        """Per-replica loss: sum / global batch size, plus the model's regularisation losses."""
        loss = tf.nn.compute_average_loss(per_example)
        if model.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        return loss

    # ---------------------------------------------------------------- Keras hooks
    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def train_step(self, data):
        """One discriminator and one generator Adam step on the batch (computed from one forward pass)."""
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            losses = self._forward(data, training=True)
            g_total, d = losses[0], losses[5]  # (see _forward for the order)
            g_loss = self._scaled_loss(g_total, self.generator)
            d_loss = self._scaled_loss(d, self.discriminator)
        g_vars = self.generator.trainable_variables
        d_vars = self.d_trainable_variables
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars))
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars))
        if self.ema_generator is not None:
            self._update_ema()
        return self._track(*losses)

    def _update_ema(self):
        """One EMA step of :attr:`ema_generator` towards the generator (call in replica context).

        The update runs once, in cross-replica context (``merge_call``), on every replica's copy
        of the (mirrored) weights, which are equal after the synchronous optimizer step.
        """
        t = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + t) / (EMA_WARMUP + t))

        def average(e, w, d):
            return e.assign(d * e + (1.0 - d) * w)

        def copy(e, w):
            return e.assign(w)

        def update(strategy, d):
            for e, w in self._ema_averaged:
                strategy.extended.update(e, average, args=(w, d))
            for e, w in self._ema_copied:
                strategy.extended.update(e, copy, args=(w,))

        tf.distribute.get_replica_context().merge_call(update, args=(decay,))

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def test_step(self, data):
        """The same losses, un-augmented, for :attr:`inference_generator` in inference mode; no updates."""
        return self._track(*self._forward(data, training=False, generator=self.inference_generator))


def build_pix2pix(num_classes: int, image_size: ImageSize = (256, 256), base_filters: int = 64,
                  norm: str = "batch", spectral_norm: bool = False, num_labels: Optional[int] = None,
                  dropout: float = 0.5, d_norm: Optional[str] = None, diffaugment=None,
                  ema_decay: Optional[float] = None, augment_seed: Optional[int] = None,
                  d_label_conditioning: str = "input", d_scales: int = 1, **generator_kwargs) -> Pix2Pix:
    """Generator + discriminator + :class:`Pix2Pix` wrapper (not compiled) in one call.

    ``d_norm`` is the discriminator's normalisation (default: ``norm``, or "none" with
    ``spectral_norm``); ``d_label_conditioning`` how it takes the class label ("input" or
    "projection"), ``d_scales`` its number of scales (see :func:`build_discriminator`).
    ``generator_kwargs`` go to :func:`build_generator` (``upsample``, ``label_conditioning``, ...); ``diffaugment``, ``ema_decay`` and ``augment_seed`` to
    :class:`Pix2Pix` (both off by default here; ``train_gan`` turns them on for new runs). Call
    inside ``strategy.scope()`` when distributing.
    """
    if d_norm is None:
        d_norm = "none" if spectral_norm else norm
    g = build_generator(num_classes, image_size, base_filters=base_filters, norm=norm, num_labels=num_labels,
                        dropout=dropout, **generator_kwargs)
    d = build_discriminator(num_classes, image_size, base_filters=base_filters, norm=d_norm,
                            spectral_norm=spectral_norm, num_labels=num_labels, label_conditioning=d_label_conditioning,
                            num_scales=d_scales)
    return Pix2Pix(g, d, diffaugment=diffaugment, ema_decay=ema_decay, augment_seed=augment_seed, name="pix2pix")
