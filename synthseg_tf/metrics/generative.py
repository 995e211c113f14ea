"""Generative-model metrics: FID, KID and Inception Score, plus the feature extractors feeding them.

The distances are computed by ``tensorflow_gan.eval`` (TF-GAN) on precomputed activations /
logits, in float64:

- :func:`fid_from_activations` -> ``tfgan.eval.frechet_classifier_distance_from_activations``
  (``|m1 - m2|^2 + Tr(C1 + C2 - 2 (C1 C2)^1/2)`` with unbiased sample covariances);
- :func:`kid_from_activations` -> ``tfgan.eval.kernel_classifier_distance_and_std_from_activations``
  (unbiased MMD^2 with the kernel ``k(x, y) = (x.y / d + 1)^3``, block estimator);
- :func:`inception_score_from_logits` -> ``tfgan.eval.classifier_score_from_logits``
  (``exp E_x KL(p(y|x) || p(y))``), averaged over ``splits`` chunks.

Feature extractors (anything with ``activations(images, batch_size)``; see
:class:`FeatureExtractor`):

- :class:`InceptionV3Extractor` — Keras' ImageNet InceptionV3 from a *local* weights file
  (nothing can be downloaded here). Note that the Keras weights are not the TF-slim / pytorch-fid
  "FID Inception" weights, so scores are comparable between runs of this package but not with
  published FID numbers.
- :class:`KerasLayerExtractor` — the offline "domain encoder": a layer of a model trained in this
  project (U-Net bottleneck, classifier penultimate layer). Scores computed with different
  extractors are not comparable with each other.

FID is biased for small samples: compare models at the same sample sizes.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import tensorflow as tf

__all__ = [
    "fid_from_activations",
    "kid_from_activations",
    "inception_score_from_logits",
    "FeatureExtractor",
    "InceptionV3Extractor",
    "KerasLayerExtractor",
    "compute_generative_metrics",
    "INCEPTION_WEIGHTS_HINT",
]

INCEPTION_WEIGHTS_HINT = (
    "InceptionV3 weights are not downloadable here; pass a local file "
    "(keras inception_v3_weights_tf_dim_ordering_tf_kernels.h5) or use the domain encoder"
)


def _tfgan():
    from synthseg_tf import _env  # noqa: F401  (quiets TF-GAN/TFP deprecation noise)
    import tensorflow_gan as tfgan

    return tfgan


def _activations_2d(a, what: str) -> np.ndarray:
    if hasattr(a, "numpy"):
        a = a.numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [num_samples, dim] array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf")
    return a


def _pair(a, b, min_samples: int) -> Tuple[np.ndarray, np.ndarray]:
    a = _activations_2d(a, "activations a")
    b = _activations_2d(b, "activations b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"activation sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if min(a.shape[0], b.shape[0]) < min_samples:
        raise ValueError(f"need at least {min_samples} samples per set, got {a.shape[0]} and {b.shape[0]}")
    return a, b


# ---------------------------------------------------------------------------------------------
# metrics on activations / logits
# ---------------------------------------------------------------------------------------------
def fid_from_activations(a, b) -> float:
    """Fréchet distance between the Gaussians fitted to two activation sets ``[N, D]``, ``[M, D]``.

    Needs ``N, M >= 2``; with fewer samples than dimensions the covariances are singular and the
    value is dominated by estimation noise.
    """
    a, b = _pair(a, b, 2)
    fid = _tfgan().eval.frechet_classifier_distance_from_activations(
        tf.constant(a, tf.float64), tf.constant(b, tf.float64))
    # The SVD-based matrix square root can leave a tiny negative value for identical sets.
    return max(float(fid), 0.0)


def kid_from_activations(a, b, max_block_size: int = 1024) -> Tuple[float, float]:
    """Kernel Inception Distance ``(mean, std)`` between activation sets ``[N, D]`` and ``[M, D]``.

    The unbiased MMD^2 estimate with the cubic polynomial kernel is averaged over
    ``ceil(max(N, M) / max_block_size)`` blocks; ``std`` is the standard error over blocks and is
    ``NaN`` when there is a single block (use a smaller ``max_block_size`` to get one). Can be
    slightly negative when the sets come from the same distribution. Each block needs >= 2
    samples of each set. Rows should be in random order (blocks are contiguous slices).
    """
    a, b = _pair(a, b, 2)
    max_block_size = int(max_block_size)
    n_blocks = -(-max(a.shape[0], b.shape[0]) // max_block_size)
    if min(a.shape[0], b.shape[0]) // n_blocks < 2:
        raise ValueError(
            f"max_block_size={max_block_size} splits {a.shape[0]} / {b.shape[0]} samples into {n_blocks} blocks; "
            "each block needs at least 2 samples of each set")
    mean, std = _tfgan().eval.kernel_classifier_distance_and_std_from_activations(
        tf.constant(a, tf.float64), tf.constant(b, tf.float64), max_block_size=max_block_size)
    return float(mean), float(std)


def inception_score_from_logits(logits, splits: int = 10) -> Tuple[float, float]:
    """Inception Score ``(mean, std)`` from classifier logits ``[N, C]``.

    The logits are cut into ``splits`` contiguous chunks (as in the original implementation),
    the score ``exp(E KL(p(y|x) || p(y)))`` is computed per chunk and the mean and (population)
    standard deviation over chunks are returned. ``1 <= IS <= C``. Probabilities can be passed
    as ``log(p)``.
    """
    lg = _activations_2d(logits, "logits")
    splits = int(splits)
    if splits < 1 or splits > lg.shape[0]:
        raise ValueError(f"splits must be in 1..{lg.shape[0]} (number of samples), got {splits}")
    tfgan = _tfgan()
    scores = [float(tfgan.eval.classifier_score_from_logits(tf.constant(chunk, tf.float64)))
              for chunk in np.array_split(lg, splits)]
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------------------------------
# feature extractors
# ---------------------------------------------------------------------------------------------
@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images ``float [N, H, W, 3]`` in ``[0, 1]`` to activations ``float [N, D]``.

    Extractors may also provide ``logits(images, batch_size) -> [N, C]`` (enables the Inception
    Score; they should then report ``has_logits = True``) and
    ``activations_and_logits(images, batch_size)`` (both in one pass).
    """

    def activations(self, images, batch_size: int = 32) -> np.ndarray:
        ...


def _images_float(images) -> np.ndarray:
    if hasattr(images, "numpy"):
        images = images.numpy()
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32, copy=False)


class _BatchedModelExtractor:
    """Shared batching: subclasses set ``self._fn`` (images -> (activations, logits or None))."""

    has_logits = False
    _fn: Callable

    def _run(self, images, batch_size: int):
        x = _images_float(images)
        batch_size = max(1, int(batch_size))
        acts, logits = [], []
        for s in range(0, x.shape[0], batch_size):
            a, lg = self._fn(tf.constant(x[s:s + batch_size]))
            acts.append(a.numpy().astype(np.float64))
            if lg is not None:
                logits.append(lg.numpy().astype(np.float64))
        acts = np.concatenate(acts) if acts else np.zeros((0, 0))
        logits = np.concatenate(logits) if logits else None
        return acts, logits

    def activations(self, images, batch_size: int = 32) -> np.ndarray:
        return self._run(images, batch_size)[0]

    def logits(self, images, batch_size: int = 32) -> np.ndarray:
        if not self.has_logits:
            raise NotImplementedError(f"{type(self).__name__} has no classifier logits")
        return self._run(images, batch_size)[1]

    def activations_and_logits(self, images, batch_size: int = 32):
        """``(activations [N, D], logits [N, C] or None)`` in a single pass."""
        return self._run(images, batch_size)


class InceptionV3Extractor(_BatchedModelExtractor):
    """ImageNet InceptionV3 (Keras) from a local weights file: 2048-d pool features and logits.

    Builds ``tf.keras.applications.InceptionV3(weights=None, include_top=True)`` and loads
    ``weights_path`` (the Keras file ``inception_v3_weights_tf_dim_ordering_tf_kernels.h5`` or any
    ``save_weights`` output of that architecture). Images ``float [N, H, W, 3]`` in ``[0, 1]``
    (grey ``[N, H, W, 1]`` is repeated to 3 channels, uint8 is scaled) are bilinearly resized to
    299x299 and mapped to ``[-1, 1]`` (``inception_v3.preprocess_input``). ``logits`` are the
    pre-softmax outputs of the 1000-way ``predictions`` layer.

    Raises ``FileNotFoundError`` when ``weights_path`` is ``None`` or missing: there is no network
    access to download the weights.
    """

    has_logits = True
    input_size = 299

    def __init__(self, weights_path: Optional[str]):
        if not weights_path or not os.path.isfile(os.fspath(weights_path)):
            where = f" ({weights_path!r} does not exist)" if weights_path else ""
            raise FileNotFoundError(INCEPTION_WEIGHTS_HINT + where)
        self.weights_path = os.fspath(weights_path)
        model = tf.keras.applications.InceptionV3(weights=None, include_top=True)
        model.load_weights(self.weights_path)
        self.model = model
        pool = model.get_layer("avg_pool").output
        self._features = tf.keras.Model(model.input, pool)
        dense = model.get_layer("predictions")
        size = self.input_size

        @tf.function(reduce_retracing=True)
        def fn(x):
            if x.shape[-1] == 1:
                x = tf.tile(x, [1, 1, 1, 3])
            x = tf.image.resize(x, (size, size), method="bilinear")
            x = x * 2.0 - 1.0
            feats = self._features(x, training=False)
            logits = tf.matmul(feats, dense.kernel) + dense.bias
            return feats, logits

        self._fn = fn


class KerasLayerExtractor(_BatchedModelExtractor):
    """Offline "domain encoder": activations from one layer of a trained functional Keras model.

    - ``layer_name``: the layer whose output gives the features. Spatial outputs
      (``[N, h, w, C]``) are globally average-pooled to ``[N, C]``. When ``None``:
      for a classifier (2-D model output) the input of the final layer (penultimate features);
      for a dense predictor (e.g. a U-Net) the *last* layer at the *lowest* spatial resolution
      (the encoder bottleneck; needs static spatial shapes, otherwise pass ``layer_name``).
    - logits (``has_logits``): available when the model output is 2-D (a classifier). Softmax
      outputs (non-negative rows summing to 1) are turned into ``log(p)``, which gives the same
      class probabilities; other outputs are used as logits.
    - ``preprocess``: optional TF callable applied to the ``[0, 1]`` images first (use what the
      model saw in training); with ``resize=True`` images are bilinearly resized to the model's
      static input size when it differs.
    """

    def __init__(self, model: tf.keras.Model, layer_name: Optional[str] = None,
                 preprocess: Optional[Callable] = None, resize: bool = True):
        if not isinstance(model, tf.keras.Model):
            raise TypeError(f"model must be a tf.keras.Model, got {type(model).__name__}")
        try:
            inputs, outputs = model.inputs, model.outputs
        except AttributeError:
            inputs = outputs = None
        if not inputs or not outputs:
            raise TypeError("KerasLayerExtractor needs a functional/Sequential model with defined inputs and outputs")
        if len(inputs) != 1:
            raise ValueError(f"the model must take a single image input, it has {len(inputs)}")
        self.model = model
        out = outputs[0]
        is_classifier = out.shape.rank == 2
        if layer_name is None:
            feat_tensor, self.layer_name = self._default_features(model, is_classifier)
        else:
            try:
                layer = model.get_layer(layer_name)
            except ValueError as e:
                names = ", ".join(l.name for l in model.layers[-30:])
                raise ValueError(f"no layer {layer_name!r} in model {model.name!r}; some layers: {names}") from e
            feat_tensor, self.layer_name = layer.output, layer_name
        if isinstance(feat_tensor, (list, tuple)):
            raise ValueError(f"layer {self.layer_name!r} has several outputs; choose another layer")
        self.has_logits = bool(is_classifier)
        self._model = tf.keras.Model(inputs[0], [feat_tensor, out] if is_classifier else [feat_tensor])
        in_shape = inputs[0].shape
        target = tuple(in_shape[1:3]) if (resize and in_shape.rank == 4 and None not in tuple(in_shape[1:3])) else None
        channels = in_shape[-1] if in_shape.rank == 4 else None
        self.feature_dim = feat_tensor.shape[-1]

        @tf.function(reduce_retracing=True)
        def fn(x):
            if channels is not None and x.shape[-1] == 1 and channels == 3:
                x = tf.tile(x, [1, 1, 1, 3])
            if target is not None and tuple(x.shape[1:3]) != target:
                x = tf.image.resize(x, target, method="bilinear")
            if preprocess is not None:
                x = preprocess(x)
            res = self._model(x, training=False)
            feats = res[0] if isinstance(res, (list, tuple)) else res
            feats = tf.cast(feats, tf.float32)
            if feats.shape.rank > 2:
                feats = tf.reduce_mean(feats, axis=list(range(1, feats.shape.rank - 1)))
            if not is_classifier:
                return feats, None
            y = tf.cast(res[1], tf.float32)
            is_prob = tf.logical_and(
                tf.reduce_all(y >= 0.0),
                tf.reduce_all(tf.abs(tf.reduce_sum(y, axis=-1) - 1.0) < 1e-3))
            logits = tf.cond(is_prob, lambda: tf.math.log(tf.maximum(y, 1e-30)), lambda: y)
            return feats, logits

        self._fn = fn

    @staticmethod
    def _default_features(model: tf.keras.Model, is_classifier: bool):
        if is_classifier:
            last = model.layers[-1]
            inp = last.input
            if isinstance(inp, (list, tuple)):
                raise ValueError("the final layer has several inputs; pass layer_name")
            return inp, f"{last.name}:input"
        best, best_area = None, None
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.InputLayer):
                continue
            shape = getattr(layer.output, "shape", None)
            if shape is None or isinstance(layer.output, (list, tuple)) or shape.rank != 4:
                continue
            h, w = shape[1], shape[2]
            if h is None or w is None:
                raise ValueError("the model has dynamic spatial shapes; pass layer_name (e.g. the bottleneck layer)")
            area = h * w
            if best_area is None or area <= best_area:
                best, best_area = layer, area
        if best is None:
            raise ValueError("could not find a spatial feature layer; pass layer_name")
        return best.output, best.name


# ---------------------------------------------------------------------------------------------
# all together
# ---------------------------------------------------------------------------------------------
def _extract(extractor, images, batch_size: int, want_logits: bool):
    if want_logits and hasattr(extractor, "activations_and_logits"):
        return extractor.activations_and_logits(images, batch_size)
    acts = extractor.activations(images, batch_size)
    logits = extractor.logits(images, batch_size) if want_logits else None
    return acts, logits


def compute_generative_metrics(
    extractor,
    real_images,
    fake_images,
    batch_size: int = 32,
    kid_block_size: int = 1024,
    is_splits: int = 10,
) -> Dict:
    """FID, KID and (when the extractor has logits) Inception Score of ``fake_images`` vs ``real_images``.

    Both image sets are ``float [N, H, W, 3]`` in ``[0, 1]`` (uint8 is scaled). The Inception
    Score uses the fake images only, with ``min(is_splits, num_fake)`` splits. Returns::

        {"fid", "kid", "kid_std", "num_real", "num_fake", "feature_dim",
         "inception_score", "inception_score_std"}   # the last two only with logits

    ``kid_std`` is ``NaN`` when all samples fit in one KID block (see :func:`kid_from_activations`).
    """
    if not hasattr(extractor, "activations"):
        raise TypeError("extractor must provide activations(images, batch_size)")
    has_logits = bool(getattr(extractor, "has_logits", hasattr(extractor, "logits")))
    real_acts = _extract(extractor, real_images, batch_size, want_logits=False)[0]
    fake_acts, fake_logits = _extract(extractor, fake_images, batch_size, want_logits=has_logits)
    fid = fid_from_activations(real_acts, fake_acts)
    kid, kid_std = kid_from_activations(real_acts, fake_acts, max_block_size=kid_block_size)
    out = {
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "num_real": int(real_acts.shape[0]),
        "num_fake": int(fake_acts.shape[0]),
        "feature_dim": int(real_acts.shape[1]),
    }
    if has_logits and fake_logits is not None:
        splits = max(1, min(int(is_splits), fake_logits.shape[0]))
        out["inception_score"], out["inception_score_std"] = inception_score_from_logits(fake_logits, splits)
    return out
