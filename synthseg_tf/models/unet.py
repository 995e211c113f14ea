"""U-Net segmenter (``segmentation_models`` on tf.keras): build, loss, compile, export, load.

Conventions
-----------
- **Model inputs are float32 RGB images in [0, 1]**, shape ``[B, H, W, 3]`` with ``H`` and ``W``
  multiples of 32. The backbone's own preprocessing is applied *inside* the model: a first layer
  scales to [0, 255] (the range the ImageNet backbones were trained on) and then applies
  ``sm.get_preprocessing(backbone)``. For the ResNet/SE-ResNet families that function is the
  identity (their first layer, ``bn_data``, normalises), so the layer is a plain
  ``Rescaling(255)``; other backbones (VGG, MobileNet, EfficientNet, ...) get a
  :class:`BackbonePreprocessing` layer. Because of this the model can be fed the tf.data
  pipeline's images as they are, and the exported SavedModel only converts uint8 to [0, 1].
- The model is a thin wrapper ``input -> preprocessing -> core`` where ``core`` (layer name
  ``"unet_core"``) is the unmodified ``sm.Unet``; :func:`unet_core` returns it.
- Masks are class ids ``0..K-1``; ``IGNORE_ID`` (255) marks void pixels, which
  :class:`SegmentationLoss` and :class:`PixelAccuracy` skip. Ids outside ``0..K-1`` are
  treated as void as well.
- The model outputs softmax probabilities ``[B, H, W, K]``.

Typical use::

    model = build_unet(num_classes=12)
    compile_unet(model, 12, metrics=[MeanIoUIgnore(12)])
    model.fit(train.map(to_unet_inputs), validation_data=val.map(to_unet_inputs), epochs=...)
    export_unet(model, "runs/x/segmenter", class_names, image_size=(256, 256))
    segment = load_segmenter("runs/x/segmenter")      # float [B,H,W,3] in [0,1] -> ids [B,H,W]
"""
from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from synthseg_tf import _env  # noqa: F401  (SM_FRAMEWORK=tf.keras before TF/sm load)
from synthseg_tf.data.classes import IGNORE_ID, ClassTable
from synthseg_tf.export.savedmodel import (  # noqa: F401  (CONFIG_FILE: re-exported)
    CONFIG_FILE,
    IMAGE_INPUTS,
    LoadedExport,
    export_config,
    prepare_export_dir,
    write_export,
)

import tensorflow as tf  # noqa: E402

CORE_NAME = "unet_core"
EXPORT_FORMAT = "synthseg_tf.segmenter"
_DECODER_PREFIXES = ("decoder_", "center_block", "final_conv")


# ============================================================================ preprocessing
def _preprocessing_is_identity(backbone: str) -> bool:
    sm = _env.import_segmentation_models()
    fn = sm.get_preprocessing(backbone)
    probe = np.linspace(0.0, 255.0, 4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    out = np.asarray(fn(probe.copy()), dtype=np.float32)
    return out.shape == probe.shape and np.allclose(out, probe)


@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class BackbonePreprocessing(tf.keras.layers.Layer):
    """Map [0, 1] images to what ``backbone`` expects: ``sm.get_preprocessing(backbone)(255 * x)``."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._fn = _env.import_segmentation_models().get_preprocessing(backbone)

    def call(self, inputs):
        return self._fn(tf.cast(inputs, tf.float32) * 255.0)

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


# ============================================================================ model
def build_unet(
    num_classes: int,
    backbone: str = "resnet34",
    encoder_weights: Optional[str] = None,
    input_shape: Tuple[Optional[int], Optional[int], int] = (None, None, 3),
) -> tf.keras.Model:
    """A U-Net (``sm.Unet``) taking [0, 1] RGB images and returning softmax probabilities.

    ``encoder_weights``:
      - ``None`` (default): random initialisation; works offline;
      - ``"imagenet"``: passed to ``sm.Unet``, which downloads the weights (needs network
        access, cached under ``~/.keras/models`` afterwards);
      - a path to a local HDF5 weights file (``.h5``/``.hdf5``) holding the encoder's layers,
        e.g. saved from ``sm.Backbones.get_backbone(...)``, from an ``sm.Unet`` or from another
        :func:`build_unet` model with ``save_weights("x.h5")``. Weights are matched to the
        encoder layers by layer name (decoder layers in the file are ignored); see
        :func:`load_encoder_weights`.

    ``input_shape`` is ``(H, W, 3)``; ``None`` sizes accept any multiple of 32.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape}")
    for s in input_shape[:2]:
        if s is not None and int(s) % 32:
            raise ValueError(f"U-Net input height/width must be multiples of 32, got {input_shape}")
    weights_file = None
    if encoder_weights is not None and encoder_weights != "imagenet":
        weights_file = os.fspath(encoder_weights)
        if not os.path.isfile(weights_file):
            raise FileNotFoundError(f"encoder weights file not found: {weights_file}")

    sm = _env.import_segmentation_models()
    sm_weights = "imagenet" if encoder_weights == "imagenet" else None
    try:
        core = sm.Unet(
            backbone,
            input_shape=tuple(input_shape),
            classes=int(num_classes),
            activation="softmax",
            encoder_weights=sm_weights,
        )
    except Exception as e:  # noqa: BLE001 - add the likely cause, keep the original chained
        if sm_weights == "imagenet":
            raise RuntimeError(
                f"building a {backbone} U-Net with ImageNet encoder weights failed ({e}); downloading "
                "them needs network access. Use encoder_weights=None or a local .h5 weights file."
            ) from e
        raise
    core._name = CORE_NAME  # a stable name so unet_core() can find it

    inputs = tf.keras.Input(shape=tuple(input_shape), name="images")
    if _preprocessing_is_identity(backbone):
        x = tf.keras.layers.Rescaling(255.0, name="to_backbone_range")(inputs)
    else:
        x = BackbonePreprocessing(backbone, name="to_backbone_range")(inputs)
    outputs = core(x)
    model = tf.keras.Model(inputs, outputs, name=f"unet_{backbone}")
    if weights_file is not None:
        load_encoder_weights(model, weights_file)
    return model


def unet_core(model: tf.keras.Model) -> tf.keras.Model:
    """The inner ``sm.Unet`` of a :func:`build_unet` model (or ``model`` itself if it is one)."""
    try:
        return model.get_layer(CORE_NAME)
    except ValueError:
        return model


def encoder_layers(model: tf.keras.Model) -> List[tf.keras.layers.Layer]:
    """The encoder (backbone) layers of a U-Net: everything but the decoder and the head."""
    core = unet_core(model)
    head = {core.layers[-1].name}
    return [
        layer
        for layer in core.layers
        if not layer.name.startswith(_DECODER_PREFIXES) and layer.name not in head
    ]


def encoder_feature_model(model: tf.keras.Model) -> tf.keras.Model:
    """``[0,1]`` images -> globally pooled encoder bottleneck features (the U-Net's domain encoder).

    The bottleneck is the last encoder layer with the smallest spatial output; its pooled
    activations serve as an offline feature space for FID/KID when no InceptionV3 weights
    are available.
    """
    core = unet_core(model)
    enc = encoder_layers(model)
    best = None
    for layer in enc:
        shape = getattr(layer, "output_shape", None)
        if not isinstance(shape, tuple) or len(shape) != 4 or shape[1] is None:
            continue
        if best is None or shape[1] * shape[2] <= best[0]:
            best = (shape[1] * shape[2], layer)
    if best is None:
        raise ValueError("cannot find the encoder bottleneck: build the model with a fixed input size")
    sub = tf.keras.Model(core.input, best[1].output)
    inputs = model.input
    x = model.get_layer("to_backbone_range")(inputs) if core is not model else inputs
    pooled = tf.keras.layers.GlobalAveragePooling2D(name="bottleneck_pool")(sub(x))
    return tf.keras.Model(inputs, pooled, name="unet_encoder_features")


def _h5_weights(path: str) -> Dict[str, np.ndarray]:
    """All weights of a Keras HDF5 weights/model file keyed by ``"layer/var"`` (e.g. ``conv0/kernel``)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a Keras HDF5 weights file ({e})") from e
    out: Dict[str, np.ndarray] = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f

        def visit(_name, obj):
            if not isinstance(obj, h5py.Group) or "weight_names" not in obj.attrs:
                return
            for wname in obj.attrs["weight_names"]:
                wname = wname.decode("utf-8") if isinstance(wname, bytes) else str(wname)
                key = "/".join(wname.split(":")[0].split("/")[-2:])
                out.setdefault(key, np.asarray(obj[wname]))

        root.visititems(visit)
    return out


def load_encoder_weights(model: tf.keras.Model, path: str) -> int:
    """Load encoder weights from a Keras HDF5 file into ``model`` by layer name.

    Every encoder layer that has weights must be found in the file with matching shapes
    (a file from a different backbone is refused rather than half-loaded); layers of the file
    that are not encoder layers of ``model`` are ignored. Returns the number of layers loaded.
    Raises ``FileNotFoundError`` for a missing file, ``ValueError`` for an unusable one.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    stored = _h5_weights(path)
    if not stored:
        raise ValueError(f"{path}: no layer weights found (expected a Keras .h5 weights file)")
    missing, loaded = [], 0
    pending = []
    for layer in encoder_layers(model):
        if not layer.weights:
            continue
        values = []
        for w in layer.weights:
            key = f"{layer.name}/{w.name.split(':')[0].split('/')[-1]}"
            if key not in stored:
                break
            if tuple(stored[key].shape) != tuple(w.shape):
                raise ValueError(
                    f"{path}: weight {key} has shape {tuple(stored[key].shape)}, the model expects "
                    f"{tuple(w.shape)} (different backbone?)"
                )
            values.append(stored[key])
        else:
            pending.append((layer, values))
            continue
        missing.append(layer.name)
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} encoder layers have no weights in the file "
            f"(e.g. {', '.join(missing[:5])}); is it from the same backbone?"
        )
    for layer, values in pending:
        layer.set_weights(values)
        loaded += 1
    return loaded


# ============================================================================ data adapter
def to_unet_inputs(batch: Mapping[str, tf.Tensor]) -> Tuple[tf.Tensor, tf.Tensor]:
    """Pipeline batch ``{"image", "mask"}`` -> ``(images float32 [0,1], masks int32 ids)``.

    Use as ``dataset.map(to_unet_inputs)``. Void pixels keep ``IGNORE_ID``; no backbone
    preprocessing is needed here (the model does it).
    """
    if "image" not in batch or "mask" not in batch:
        raise KeyError(f"a segmentation batch needs 'image' and 'mask' entries, got {sorted(batch)}")
    return tf.cast(batch["image"], tf.float32), tf.cast(batch["mask"], tf.int32)


# ============================================================================ loss
def class_weights_from_frequencies(freqs: Sequence[float], mode: str = "inverse_sqrt") -> np.ndarray:
    """Per-class loss weights from class frequencies (pixel counts or fractions).

    - ``"median"``: median frequency balancing, ``w_c = median(f) / f_c``;
    - ``"inverse_sqrt"``: the softer ``w_c = sqrt(median(f) / f_c)``.

    The median is over classes that occur, so a median-frequency class weighs 1. Classes with
    zero frequency get the largest weight of the others (they are at least as rare).
    """
    f = np.asarray(freqs, dtype=np.float64).reshape(-1)
    if f.size == 0 or np.any(f < 0) or not np.all(np.isfinite(f)):
        raise ValueError("freqs must be a non-empty list of finite non-negative numbers")
    present = f > 0
    if not present.any():
        return np.ones_like(f, dtype=np.float32)
    ratio = np.ones_like(f)
    ratio[present] = np.median(f[present]) / f[present]
    if mode == "median":
        w = ratio
    elif mode == "inverse_sqrt":
        w = np.sqrt(ratio)
    else:
        raise ValueError(f"mode must be 'inverse_sqrt' or 'median', got {mode!r}")
    w[~present] = w[present].max()
    return w.astype(np.float32)


def _valid_and_onehot(y_true, num_classes: int, ignore_id: int):
    """Ids ``[B,H,W]`` (or ``[B,H,W,1]``) -> (valid mask ``[B,H,W]`` float, one-hot ``[B,H,W,K]`` masked)."""
    y = tf.convert_to_tensor(y_true)
    if y.shape.rank == 4:
        y = tf.squeeze(y, -1)
    y = tf.cast(y, tf.int32)
    valid = (y != ignore_id) & (y >= 0) & (y < num_classes)
    ids = tf.where(valid, y, tf.zeros_like(y))
    validf = tf.cast(valid, tf.float32)
    onehot = tf.one_hot(ids, num_classes, dtype=tf.float32) * validf[..., None]
    return validf, onehot


@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class SegmentationLoss(tf.keras.losses.Loss):
    """Soft Dice (+ optional cross-entropy and focal terms) over softmax outputs, skipping void.

    ``loss = dice_weight * dice + ce_weight * ce + focal_weight * focal``, each computed **per
    example** (``call`` returns ``[B]``), so Keras's default ``SUM_OVER_BATCH_SIZE`` reduction
    averages over the global batch and the loss is correct under ``MirroredStrategy``.

    - y_true: class ids ``[B,H,W]`` (uint8/int32); ``ignore_id`` and any id outside
      ``0..K-1`` are void and excluded everywhere (numerators *and* denominators).
    - y_pred: probabilities ``[B,H,W,K]`` (the model's softmax).
    - Dice: ``1 - sum_c w_c * dice_c / sum_c w_c`` with
      ``dice_c = (2 * sum(p*t) + smooth) / (sum(p) + sum(t) + smooth)`` over valid pixels; a class
      that is absent and not predicted scores 1, so a perfect prediction gives 0 and an all-void
      example gives 0.
    - CE/focal: class-weighted, averaged over the valid pixels of the example
      (``sum(w_t * l) / sum(w_t)``, 0 when all void); focal uses ``(1 - p_t) ** focal_gamma``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_id: int = IGNORE_ID,
        dice_weight: float = 1.0,
        ce_weight: float = 0.0,
        focal_weight: float = 0.0,
        class_weights: Optional[Sequence[float]] = None,
        smooth: float = 1.0,
        focal_gamma: float = 2.0,
        name: str = "segmentation_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.ignore_id = int(ignore_id)
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.focal_weight = float(focal_weight)
        self.smooth = float(smooth)
        self.focal_gamma = float(focal_gamma)
        if min(self.dice_weight, self.ce_weight, self.focal_weight) < 0 or not (
            self.dice_weight or self.ce_weight or self.focal_weight
        ):
            raise ValueError("loss term weights must be >= 0 and not all zero")
        if class_weights is None:
            self.class_weights = None
        else:
            cw = [float(v) for v in np.asarray(class_weights, dtype=np.float64).reshape(-1)]
            if len(cw) != self.num_classes:
                raise ValueError(f"class_weights has {len(cw)} entries for {self.num_classes} classes")
            if min(cw) < 0 or sum(cw) <= 0:
                raise ValueError("class_weights must be >= 0 and not all zero")
            self.class_weights = cw

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def call(self, y_true, y_pred):
        eps = 1e-7
        k = self.num_classes
        p = tf.cast(y_pred, tf.float32)
        valid, t = _valid_and_onehot(y_true, k, self.ignore_id)
        w = tf.constant(self.class_weights if self.class_weights is not None else [1.0] * k, tf.float32)
        total = tf.zeros(tf.shape(p)[:1], tf.float32)

        if self.dice_weight:
            pv = p * valid[..., None]
            inter = tf.reduce_sum(pv * t, axis=[1, 2])  # [B, K]
            denom = tf.reduce_sum(pv, axis=[1, 2]) + tf.reduce_sum(t, axis=[1, 2])
            dice = (2.0 * inter + self.smooth) / (denom + self.smooth)
            dice_loss = 1.0 - tf.reduce_sum(dice * w, -1) / tf.reduce_sum(w)
            total += self.dice_weight * dice_loss

        if self.ce_weight or self.focal_weight:
            p_t = tf.reduce_sum(tf.clip_by_value(p, eps, 1.0) * t, -1)  # [B,H,W]; 0 at void
            p_t = tf.where(valid > 0, p_t, tf.ones_like(p_t))
            w_t = tf.reduce_sum(t * w, -1)  # class weight of each valid pixel, 0 at void
            norm = tf.maximum(tf.reduce_sum(w_t, axis=[1, 2]), eps)
            nll = -tf.math.log(p_t)
            if self.ce_weight:
                total += self.ce_weight * tf.reduce_sum(w_t * nll, axis=[1, 2]) / norm
            if self.focal_weight:
                mod = tf.pow(1.0 - p_t, self.focal_gamma)
                total += self.focal_weight * tf.reduce_sum(w_t * mod * nll, axis=[1, 2]) / norm
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "ignore_id": self.ignore_id,
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
            "focal_weight": self.focal_weight,
            "class_weights": self.class_weights,
            "smooth": self.smooth,
            "focal_gamma": self.focal_gamma,
        }


# ============================================================================ metric + compile
@tf.keras.utils.register_keras_serializable(package="synthseg_tf")
class PixelAccuracy(tf.keras.metrics.Metric):
    """Fraction of non-void pixels whose argmax prediction equals the label (void skipped)."""

    def __init__(self, ignore_id: int = IGNORE_ID, name: str = "pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_id = int(ignore_id)
        self.correct = self.add_weight(name="correct", initializer="zeros", dtype=tf.float64)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def update_state(self, y_true, y_pred, sample_weight=None):
        y = tf.convert_to_tensor(y_true)
        if y.shape.rank == 4:
            y = tf.squeeze(y, -1)
        y = tf.cast(y, tf.int32)
        pred = tf.cast(tf.argmax(y_pred, -1), tf.int32)
        valid = (y != self.ignore_id) & (y >= 0) & (y < tf.shape(y_pred)[-1])
        hit = tf.cast(valid & tf.equal(pred, y), tf.float64)
        self.correct.assign_add(tf.reduce_sum(hit))
        self.total.assign_add(tf.reduce_sum(tf.cast(valid, tf.float64)))

    @tf.autograph.experimental.do_not_convert  # pure TF ops; see NO_AUTOGRAPH note in synthseg_tf/_env.py
    def result(self):
        return tf.cast(tf.math.divide_no_nan(self.correct, self.total), tf.float32)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "ignore_id": self.ignore_id}


def default_metrics(num_classes: int, ignore_id: int = IGNORE_ID) -> list:
    """``[PixelAccuracy, MeanIoUIgnore]`` (the latter when ``synthseg_tf.metrics`` provides it)."""
    metrics = [PixelAccuracy(ignore_id=ignore_id)]
    try:
        from synthseg_tf.metrics.segmentation import MeanIoUIgnore
    except ImportError:
        return metrics
    return metrics + [MeanIoUIgnore(num_classes, ignore_id=ignore_id)]


def compile_unet(
    model: tf.keras.Model,
    num_classes: int,
    learning_rate: float = 1e-3,
    loss: Optional[tf.keras.losses.Loss] = None,
    metrics: Optional[Sequence] = None,
) -> tf.keras.Model:
    """Compile with Adam, ``loss`` (default: Dice-only :class:`SegmentationLoss`) and ``metrics``.

    ``metrics=None`` uses :func:`default_metrics`; pass ``[]`` for none. Call inside the
    distribution strategy's scope when training distributed. Returns ``model``.
    """
    if loss is None:
        loss = SegmentationLoss(num_classes)
    if metrics is None:
        metrics = default_metrics(num_classes)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
        loss=loss,
        metrics=list(metrics),
    )
    return model


# ============================================================================ export / load
def _check_image_size(image_size) -> Tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive (height, width), got {image_size}")
    return h, w


def probabilities_at_input_size(model: tf.keras.Model, images, size):
    """float [B,H,W,3] in [0,1] of any size -> class probabilities [B,H,W,K] at that size.

    Images are resized (bilinear, antialiased, as the tf.data pipeline resizes) to the
    training ``size``; the probabilities are resized back (bilinear) before any argmax.
    """
    hw = tf.shape(images)[1:3]
    x = tf.image.resize(images, size, method="bilinear", antialias=True)
    probs = tf.cast(model(x, training=False), tf.float32)
    return tf.image.resize(probs, hw, method="bilinear")


class _SegmenterModule(tf.Module):
    """What the SavedModel holds: the model's variables and the serving functions."""

    def __init__(self, model: tf.keras.Model, image_size: Tuple[int, int]):
        super().__init__(name="segmenter")
        # Track the variables only (not the Keras model), so saving does not trace every
        # Keras layer call; the functions below capture them.
        self.model_variables = list(model.variables)
        size = tf.constant(image_size, tf.int32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def segment(images):
            """float32 [B,H,W,3] in [0,1] -> label_ids uint8 [B,H,W], probabilities float32 [B,H,W,K]."""
            images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_B_H_W_3")
            probs = probabilities_at_input_size(model, images, size)
            ids = tf.cast(tf.argmax(probs, axis=-1), tf.uint8)
            return {"label_ids": ids, "probabilities": probs}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve(images):
            images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_B_H_W_3")
            return segment(tf.cast(images, tf.float32) / 255.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            image_bytes = tf.ensure_shape(image_bytes, [None], name="image_bytes_must_be_B")
            images = tf.map_fn(
                lambda b: tf.io.decode_image(b, channels=3, dtype=tf.uint8, expand_animations=False),
                image_bytes,
                fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
            )
            return serve(images)

        self.segment = segment
        self.serve = serve
        self.serve_bytes = serve_bytes
        try:
            features_model = encoder_feature_model(model)
        except (ValueError, AttributeError):  # not a U-Net with a fixed-size encoder: no feature function
            return

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def features(images):
            """float32 [B,H,W,3] in [0,1] -> pooled encoder bottleneck activations [B,C] (for FID/KID)."""
            x = tf.image.resize(images, size, method="bilinear", antialias=True)
            return tf.cast(features_model(x, training=False), tf.float32)

        self.features = features


def export_unet(
    model: tf.keras.Model,
    export_dir: str,
    class_names: Sequence[str],
    image_size: Union[int, Tuple[int, int]],
    overwrite: bool = False,
    extra_config: Optional[Mapping] = None,
) -> str:
    """Export a trained segmenter as a SavedModel (+ ``classes.json`` and ``config.json``).

    Signatures:
      - ``serving_default``: ``images`` uint8 ``[B,H,W,3]`` (any ``H, W``) -> ``label_ids`` uint8
        ``[B,H,W]`` and ``probabilities`` float32 ``[B,H,W,K]``. Images are resized (bilinear)
        to ``image_size`` (the training size), and the probabilities resized back (bilinear)
        before the argmax.
      - ``serving_bytes``: ``image_bytes`` string ``[B]`` of PNG/JPEG files (what TF Serving's
        REST API passes after decoding ``{"b64": ...}``) -> the same outputs. All images of one
        request must have the same size.
    The module also has a ``segment`` function taking float32 [0,1] images (used by
    :func:`load_segmenter`).

    Written atomically into ``export_dir`` (built next to it, then renamed); an existing
    non-empty ``export_dir`` is refused unless ``overwrite=True``. Returns the absolute path.
    """
    h, w = _check_image_size(image_size)
    table = ClassTable(list(class_names))
    k = int(model.output_shape[-1])
    if table.num_classes != k:
        raise ValueError(f"{table.num_classes} class names for a model with {k} output classes")
    export_dir = prepare_export_dir(export_dir, overwrite)
    module = _SegmenterModule(model, (h, w))
    config = export_config(EXPORT_FORMAT, "segmentation", model, (h, w), table, {
        "ignore_id": IGNORE_ID,
        "inputs": IMAGE_INPUTS,
        "outputs": {"label_ids": "uint8 [B,H,W]", "probabilities": "float32 [B,H,W,K]"},
        "resize": "bilinear to image_size; probabilities resized back bilinear before argmax",
    }, extra_config)
    write_export(module, export_dir, table, config)
    return export_dir


class Segmenter(LoadedExport):
    """A loaded segmenter export: ``segmenter(images) -> ids``.

    ``images``: ``[B,H,W,3]`` (or a single ``[H,W,3]``) numpy array or tensor, float in [0, 1]
    or uint8. Returns class ids as a uint8 numpy array ``[B,H,W]`` (``[H,W]`` for a single image).
    """

    kind = "segmenter"
    export_format = EXPORT_FORMAT

    @property
    def num_classes(self) -> int:
        return self.class_table.num_classes

    def predict(self, images) -> Dict[str, np.ndarray]:
        """``{"label_ids": uint8 [B,H,W], "probabilities": float32 [B,H,W,K]}`` for a batch."""
        x = tf.convert_to_tensor(images)
        if x.shape.rank != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images [B,H,W,3], got shape {x.shape}")
        if x.dtype == tf.uint8:
            out = self._module.serve(x)
        else:
            out = self._module.segment(tf.cast(x, tf.float32))
        return {k: v.numpy() for k, v in out.items()}

    def activations(self, images, batch_size: int = 32) -> np.ndarray:
        """Pooled encoder bottleneck features ``[N,C]`` of float [0,1] images: the offline domain
        encoder for FID/KID (see :mod:`synthseg_tf.metrics.generative`)."""
        if not hasattr(self._module, "features"):
            raise ValueError(f"{self.export_dir}: this export has no encoder feature function (exported from a "
                             "model without a fixed-size U-Net encoder, or by an older version)")
        images = np.asarray(images, dtype=np.float32)
        return np.concatenate([self._module.features(tf.constant(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])

    def __call__(self, images) -> np.ndarray:
        x = tf.convert_to_tensor(images)
        single = x.shape.rank == 3
        ids = self.predict(x[None] if single else x)["label_ids"]
        return ids[0] if single else ids


def load_segmenter(export_dir: str) -> Segmenter:
    """Load :func:`export_unet` output as a callable ``images [B,H,W,3] in [0,1] -> ids [B,H,W]``."""
    return Segmenter(export_dir)
