"""``tf.data`` input pipelines: files or TFRecords -> resized, augmented batches.

Elements are dicts: ``image`` float32 ``[H, W, 3]`` in [0, 1], ``label`` int32 and, for
segmentation, ``mask`` uint8 ``[H, W]`` (ids, 255 = void). Image and mask get the same
geometric augmentation; colour changes touch the image only; masks are always resampled with
nearest-neighbour, so they only hold ids of the input mask (plus 255 where "strong" rotates in
pixels from outside the frame). Randomness is stateless and seeded per element, so a seed fixes
the whole stream even with parallel map.

``augment`` levels (:func:`augment_level`):

- ``False`` / ``"none"``: resize only;
- ``True`` / ``"standard"``: horizontal flip, scale 1-1.5x + random crop, mild colour jitter
  (:func:`augment_pair`);
- ``"strong"``: standard geometry with scale 1-1.8x, then a rotation of up to +-10 degrees with
  a 0.9-1.1x zoom (image: bilinear, reflected at the border; mask: nearest, void 255 outside
  the frame), stronger brightness/contrast/saturation/hue jitter, and with probability 0.2
  each a gaussian blur (sigma 0.4-1 px) and gaussian noise (std 0.01-0.04)
  (:func:`augment_pair_strong`).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from synthseg_tf import storage
from synthseg_tf.data.dataset import SEGMENTATION, Dataset
from synthseg_tf.data.tfrecord import feature_spec, read_metadata, tfrecord_files

AUTOTUNE = tf.data.AUTOTUNE
AUGMENT_LEVELS = ("none", "standard", "strong")
Augment = Union[bool, str, None]


def augment_level(augment: Augment) -> str:
    """``augment`` option -> ``"none"``, ``"standard"`` or ``"strong"`` (``True`` = standard).

    Raises ``ValueError`` naming the option for anything else.
    """
    if augment is None or augment is False:
        return "none"
    if augment is True:
        return "standard"
    if isinstance(augment, str) and augment.strip().lower() in AUGMENT_LEVELS:
        return augment.strip().lower()
    raise ValueError(f"augment must be True, False or one of {', '.join(AUGMENT_LEVELS)}; got {augment!r}")


def _size(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


# --------------------------------------------------------------------------- raw sources
def read_files(ds: Dataset, num_parallel: int = AUTOTUNE) -> tf.data.Dataset:
    """Decode a file-based :class:`Dataset`: elements ``image`` uint8, ``mask`` uint8, ``label``.

    Files are decoded by the dataset's own reader (handles palettes, 16-bit, RGBA, value
    remapping) inside ``tf.numpy_function``; decoding releases the GIL so parallel calls scale.
    """
    seg = ds.task == SEGMENTATION
    samples = ds.samples
    labels = np.array([s.label for s in samples], dtype=np.int32)

    def load(i):
        image, mask = ds.read(samples[int(i)])
        return (image, mask) if seg else (image,)

    def fn(i):
        outs = tf.numpy_function(load, [i], [tf.uint8, tf.uint8] if seg else [tf.uint8], stateful=False)
        el = {"image": tf.ensure_shape(outs[0], [None, None, 3]), "label": tf.gather(labels, i)}
        if seg:
            el["mask"] = tf.ensure_shape(outs[1], [None, None])
        return el

    return tf.data.Dataset.range(len(samples)).map(fn, num_parallel_calls=num_parallel, deterministic=True)


def parse_example(serialized, with_mask: bool = True):
    ex = tf.io.parse_single_example(serialized, feature_spec())
    el = {
        "image": tf.ensure_shape(tf.io.decode_png(ex["image/encoded"], channels=3), [None, None, 3]),
        "label": tf.cast(ex["label"], tf.int32),
        "synthetic": tf.cast(ex["synthetic"], tf.int32),
    }
    if with_mask:
        el["mask"] = tf.ensure_shape(tf.io.decode_png(ex["mask/encoded"], channels=1)[..., 0], [None, None])
    return el


def read_tfrecords(path: str, with_mask: Optional[bool] = None, num_parallel: int = AUTOTUNE,
                   shuffle_files: bool = False, seed: Optional[int] = None) -> tf.data.Dataset:
    """Decode a TFRecord folder (or glob) written by :func:`write_tfrecords` or ``generate``."""
    files = tfrecord_files(path)
    if with_mask is None:
        with_mask = read_metadata(path).get("task", SEGMENTATION) == SEGMENTATION
    fds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        fds = fds.shuffle(len(files), seed=seed)
    compression = "GZIP" if files[0].endswith(".gz") else None
    rec = fds.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
                         cycle_length=min(len(files), 8), num_parallel_calls=num_parallel, deterministic=True)
    return rec.map(lambda s: parse_example(s, with_mask), num_parallel_calls=num_parallel, deterministic=True)


# --------------------------------------------------------------------------- transforms
def resize_pair(image, mask, size):
    """Resize image (bilinear) and mask (nearest) to ``size``; image becomes float [0,1]."""
    image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32), size, method="bilinear",
                            antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    if mask is not None:
        mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def augment_pair(image, mask, size, seed, max_scale: float = 1.5, jitter: bool = True):
    """Joint flip + scale/crop, then colour jitter on the image only. ``seed``: int64 [2]."""
    s = tf.random.experimental.stateless_split(seed, 8)
    h, w = size
    scale = tf.random.stateless_uniform([], s[0], 1.0, max_scale)
    sh = tf.cast(tf.math.ceil(h * scale), tf.int32)
    sw = tf.cast(tf.math.ceil(w * scale), tf.int32)
    image, mask = resize_pair(image, mask, tf.stack([sh, sw]))
    oy = tf.random.stateless_uniform([], s[1], 0, sh - h + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([], s[2], 0, sw - w + 1, dtype=tf.int32)
    image = image[oy:oy + h, ox:ox + w]
    flip = tf.random.stateless_uniform([], s[3]) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    if mask is not None:
        mask = mask[oy:oy + h, ox:ox + w]
        mask = tf.cond(flip, lambda: tf.reverse(mask, [1]), lambda: mask)
        mask = tf.ensure_shape(mask, [h, w])
    if jitter:
        image = tf.image.stateless_random_brightness(image, 0.15, s[4])
        image = tf.image.stateless_random_contrast(image, 0.8, 1.2, s[5])
        image = tf.image.stateless_random_saturation(image, 0.8, 1.2, s[6])
        image = tf.image.stateless_random_hue(image, 0.03, s[7])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, [h, w, 3]), mask


def _rotate_zoom(image, mask, angle, zoom):
    """Rotate by ``angle`` (radians) and zoom by ``zoom`` about the centre; image bilinear with
    reflected borders, mask nearest with 255 (void) for pixels from outside the frame."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    c, s = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # output pixel (x, y) samples input (c*(x-cx) - s*(y-cy) + cx, s*(x-cx) + c*(y-cy) + cy)
    t = tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy, 0.0, 0.0])[None]
    out_hw = tf.shape(image)[:2]
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=t, output_shape=out_hw, fill_value=0.0, interpolation="BILINEAR",
        fill_mode="REFLECT")[0]
    if mask is not None:
        mask = tf.raw_ops.ImageProjectiveTransformV3(
            images=mask[None, ..., None], transforms=t, output_shape=out_hw, fill_value=255.0,
            interpolation="NEAREST", fill_mode="CONSTANT")[0, ..., 0]
    return image, mask


def _gaussian_blur(image, sigma):
    """Separable 5x5 gaussian blur of a ``[H, W, 3]`` float image (reflect padding)."""
    x = tf.range(-2.0, 3.0)
    k = tf.exp(-0.5 * tf.square(x / sigma))
    k = k / tf.reduce_sum(k)
    img = tf.pad(image[None], [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")
    kx = tf.tile(tf.reshape(k, [1, 5, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [5, 1, 1, 1]), [1, 1, 3, 1])
    img = tf.nn.depthwise_conv2d(img, kx, [1, 1, 1, 1], "VALID")
    img = tf.nn.depthwise_conv2d(img, ky, [1, 1, 1, 1], "VALID")
    return img[0]


def augment_pair_strong(image, mask, size, seed, max_scale: float = 1.8, max_degrees: float = 10.0,
                        blur_p: float = 0.2, noise_p: float = 0.2):
    """"strong" augmentation (module doc): :func:`augment_pair` geometry with scale up to
    ``max_scale`` (no mild jitter), rotation within +-``max_degrees`` and a 0.9-1.1x zoom, strong
    colour jitter, then gaussian blur (probability ``blur_p``) and gaussian noise (``noise_p``).
    ``seed``: int64 [2]; the same seed gives the same result. Works with ``mask=None``.
    """
    s = tf.random.experimental.stateless_split(seed, 14)
    h, w = size
    image, mask = augment_pair(image, mask, size, s[0], max_scale=max_scale, jitter=False)
    angle = tf.random.stateless_uniform([], s[1], -1.0, 1.0) * (max_degrees * np.pi / 180.0)
    zoom = tf.random.stateless_uniform([], s[2], 0.9, 1.1)
    image, mask = _rotate_zoom(image, mask, angle, zoom)
    image = tf.image.stateless_random_brightness(image, 0.3, s[3])
    image = tf.image.stateless_random_contrast(image, 0.6, 1.4, s[4])
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, s[5])
    image = tf.image.stateless_random_hue(image, 0.08, s[6])
    image = tf.clip_by_value(image, 0.0, 1.0)
    sigma = tf.random.stateless_uniform([], s[7], 0.4, 1.0)
    image = tf.cond(tf.random.stateless_uniform([], s[8]) < blur_p, lambda: _gaussian_blur(image, sigma),
                    lambda: image)
    std = tf.random.stateless_uniform([], s[9], 0.01, 0.04)
    noise = tf.random.stateless_normal(tf.shape(image), s[10]) * std
    image = tf.cond(tf.random.stateless_uniform([], s[11]) < noise_p, lambda: image + noise, lambda: image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    if mask is not None:
        mask = tf.ensure_shape(mask, [h, w])
    return tf.ensure_shape(image, [h, w, 3]), mask


def prepare(raw: tf.data.Dataset, image_size=(256, 256), augment: Augment = False, seed: Optional[int] = None,
            num_parallel: int = AUTOTUNE) -> tf.data.Dataset:
    """Raw decoded elements -> fixed-size float images (and nearest-resized masks).

    ``augment``: ``False``/``"none"``, ``True``/``"standard"`` or ``"strong"`` (module doc);
    ``seed`` fixes the augmentation stream (element ``i`` always gets the same transform).
    """
    size = _size(image_size)
    level = augment_level(augment)
    augment_fn = augment_pair_strong if level == "strong" else augment_pair

    def plain(el):
        image, mask = resize_pair(el["image"], el.get("mask"), size)
        out = dict(el, image=tf.ensure_shape(image, [*size, 3]))
        if mask is not None:
            out["mask"] = tf.ensure_shape(mask, list(size))
        return out

    def aug(el, seed_pair):
        image, mask = augment_fn(el["image"], el.get("mask"), size, seed_pair)
        out = dict(el, image=image)
        if mask is not None:
            out["mask"] = mask
        return out

    if level == "none":
        return raw.map(plain, num_parallel_calls=num_parallel, deterministic=True)
    seeds = tf.data.Dataset.random(seed=0 if seed is None else seed).batch(2, drop_remainder=True)
    return tf.data.Dataset.zip((raw, seeds)).map(aug, num_parallel_calls=num_parallel, deterministic=True)


Source = Union[str, Dataset]


def raw_source(source: Source) -> Tuple[tf.data.Dataset, int]:
    """A spec string, a :class:`Dataset`, or a TFRecord folder/glob -> (raw elements, count or -1).

    A bare remote path (``gs://...``: no spec names one) is a TFRecord folder, file or glob."""
    if isinstance(source, Dataset):
        return read_files(source), len(source)
    if isinstance(source, str) and (source.startswith("tfrecord:") or storage.is_remote(source)
                                    or os.path.isdir(source)
                                    or source.endswith((".tfrecord", ".tfrecord.gz")) or "*" in source):
        path = source[len("tfrecord:"):] if source.startswith("tfrecord:") else source
        return read_tfrecords(path), int(read_metadata(path).get("count", -1))
    from synthseg_tf.data.layouts import load

    ds = load(source)
    return read_files(ds), len(ds)


def make_dataset(source: Source, image_size=(256, 256), batch_size: int = 8, augment: Augment = False,
                 shuffle: bool = True, repeat: bool = False, seed: Optional[int] = None,
                 drop_remainder: bool = False, cache: bool = False, shuffle_buffer: int = 512,
                 num_parallel: int = AUTOTUNE, element_fn=None) -> tf.data.Dataset:
    """The training/eval input pipeline for any source; batches of dicts (see module doc).

    ``cache=True`` keeps decoded, *un-augmented* samples in memory (fine for a few thousand
    images), so augmentation stays random per epoch. ``element_fn`` maps the unbatched,
    resized elements before batching (e.g. to add conditioning maps). ``augment``: see
    :func:`prepare`.
    """
    augment_level(augment)  # a bad option fails here, before any file is read
    raw, n = raw_source(source)
    if cache:
        raw = raw.cache()  # decoded once at full size; augmentation below still varies per epoch
    if shuffle:
        raw = raw.shuffle(max(1, min(shuffle_buffer, n if n > 0 else shuffle_buffer)), seed=seed,
                          reshuffle_each_iteration=True)
    if repeat:
        raw = raw.repeat()
    out = prepare(raw, image_size, augment=augment, seed=seed, num_parallel=num_parallel)
    if element_fn is not None:
        out = element_fn(out)
    return out.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=num_parallel,
                     deterministic=True).prefetch(AUTOTUNE)


def stacked_batches(datasets: Sequence[tf.data.Dataset], rows: Sequence[int]) -> tf.data.Dataset:
    """Batches of ``rows[0]`` elements of ``datasets[0]``, then ``rows[1]`` of ``datasets[1]``, ...
    stacked in that order (the entries all of them have). Each dataset should repeat; a batch is
    only made while every one has ``rows[i]`` elements left."""
    if len(datasets) != len(rows) or not datasets:
        raise ValueError(f"one row count per dataset is needed, got {len(datasets)} datasets and {len(rows)} counts")
    if any(int(r) < 1 for r in rows):
        raise ValueError(f"row counts must be >= 1, got {list(rows)}")
    keys = set.intersection(*[set(ds.element_spec) for ds in datasets])
    parts = tuple(ds.map(lambda el: {k: el[k] for k in keys}).batch(int(r), drop_remainder=True)
                  for ds, r in zip(datasets, rows))
    return tf.data.Dataset.zip(parts).map(lambda *bs: {k: tf.concat([b[k] for b in bs], 0) for k in keys})


def mix_datasets(datasets: Sequence[tf.data.Dataset], weights: Sequence[float], seed: Optional[int] = None
                 ) -> tf.data.Dataset:
    """Sample elements from several (repeated, unbatched) datasets with the given weights."""
    w = np.asarray(weights, dtype=np.float64)
    w = (w / w.sum()).tolist()
    common = [{k: d[k] for k in ("image", "label", "mask", "target") if k in d}
              for d in [ds.element_spec for ds in datasets]]
    keys = set.intersection(*[set(c) for c in common])
    trimmed = [ds.map(lambda el: {k: el[k] for k in keys}) for ds in datasets]
    return tf.data.Dataset.sample_from_datasets(trimmed, weights=w, seed=seed)
