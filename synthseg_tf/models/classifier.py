"""Image classifier CNN: build, compile, stratified splits, export and load.

The network (the design's CNN) takes float32 RGB images in [0, 1], ``[B, H, W, 3]``:

    [Conv2D 3x3 + (BatchNorm) + ReLU] x 2 -> MaxPool 2x2      one block per entry of ``filters``
    Flatten (or GlobalAveragePooling2D) -> Dropout
    Dense + ReLU ... (the last one is named ``"penultimate"``) -> Dropout
    Dense(num_classes, softmax)  named ``"predictions"``

The ``"penultimate"`` activations are the feature space used for FID/KID
(:func:`feature_extractor`). Labels are one-hot for training (categorical cross-entropy);
:func:`to_classifier_inputs` converts pipeline batches ``{"image", "label"}``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from synthseg_tf import _env  # noqa: F401  (quiet TF before it loads)
from synthseg_tf.data.classes import ClassTable
from synthseg_tf.export.savedmodel import (  # noqa: F401  (CONFIG_FILE: re-exported)
    CONFIG_FILE,
    IMAGE_INPUTS,
    LoadedExport,
    export_config,
    prepare_export_dir,
    write_export,
)

import tensorflow as tf  # noqa: E402

PENULTIMATE = "penultimate"
EXPORT_FORMAT = "synthseg_tf.classifier"


# ============================================================================ model
def build_classifier(
    num_classes: int,
    input_shape: Tuple[int, int, int] = (128, 128, 3),
    filters: Sequence[int] = (32, 64, 128, 256),
    dense_units: Sequence[int] = (256,),
    dropout: float = 0.5,
    batch_norm: bool = False,
    pooling: str = "flatten",
    bn_momentum: float = 0.99,
) -> tf.keras.Model:
    """The CNN described above; outputs softmax probabilities ``[B, num_classes]``.

    ``pooling`` is ``"flatten"`` (needs a fixed ``input_shape``) or ``"gap"``
    (GlobalAveragePooling2D). ``batch_norm`` adds BatchNormalization after each conv, whose
    moving statistics use ``bn_momentum`` (Keras' default 0.99).
    ``dense_units`` must be non-empty: its last layer is the ``"penultimate"`` feature layer.
    """
    if int(num_classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    if not filters:
        raise ValueError("filters must list at least one conv block")
    if not dense_units:
        raise ValueError("dense_units must list at least one layer (the last one is 'penultimate')")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 < float(bn_momentum) < 1.0:
        raise ValueError(f"bn_momentum must be in (0, 1), got {bn_momentum}")
    if pooling not in ("flatten", "gap"):
        raise ValueError(f"pooling must be 'flatten' or 'gap', got {pooling!r}")
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (H, W, 3), got {input_shape}")
    if pooling == "flatten" and None in tuple(input_shape[:2]):
        raise ValueError("pooling='flatten' needs a fixed input size; use pooling='gap' for any size")
    min_side = 2 ** len(filters)
    for s in input_shape[:2]:
        if s is not None and int(s) < min_side:
            raise ValueError(f"input {input_shape} too small for {len(filters)} pooling blocks (need >= {min_side})")

    L = tf.keras.layers
    inputs = tf.keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for b, f in enumerate(filters, start=1):
        for c in (1, 2):
            x = L.Conv2D(int(f), 3, padding="same", use_bias=not batch_norm, name=f"block{b}_conv{c}")(x)
            if batch_norm:
                x = L.BatchNormalization(momentum=float(bn_momentum), name=f"block{b}_bn{c}")(x)
            x = L.ReLU(name=f"block{b}_relu{c}")(x)
        x = L.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = L.Flatten(name="flatten")(x) if pooling == "flatten" else L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(dropout, name="dropout_features")(x)
    for i, units in enumerate(dense_units):
        last = i == len(dense_units) - 1
        x = L.Dense(int(units), activation="relu", name=PENULTIMATE if last else f"dense{i + 1}")(x)
    x = L.Dropout(dropout, name="dropout_penultimate")(x)
    outputs = L.Dense(int(num_classes), activation="softmax", name="predictions")(x)
    return tf.keras.Model(inputs, outputs, name="classifier")


def feature_extractor(model: tf.keras.Model) -> tf.keras.Model:
    """A model mapping the classifier's input to its ``"penultimate"`` activations (FID/KID)."""
    return tf.keras.Model(model.input, model.get_layer(PENULTIMATE).output, name="classifier_features")


def compile_classifier(model: tf.keras.Model, learning_rate=1e-3, label_smoothing: float = 0.0,
                       weight_decay: float = 0.0) -> tf.keras.Model:
    """Adam (AdamW when ``weight_decay > 0``) + categorical cross-entropy (one-hot labels, with
    ``label_smoothing``) + accuracy. ``learning_rate``: a float or a Keras schedule. Returns ``model``.
    """
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if float(weight_decay) < 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if float(weight_decay) > 0.0:
        optimizer = tf.keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=float(weight_decay))
    else:
        optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate)
    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.CategoricalCrossentropy(label_smoothing=float(label_smoothing)),
        metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def early_stopping(patience: int = 5, monitor: str = "val_loss") -> tf.keras.callbacks.EarlyStopping:
    """Stop when ``monitor`` (``val_loss``: lower is better; ``val_accuracy``: higher) has not
    improved for ``patience`` epochs; keep the best weights."""
    if monitor not in ("val_loss", "val_accuracy"):
        raise ValueError(f"monitor must be 'val_loss' or 'val_accuracy', got {monitor!r}")
    return tf.keras.callbacks.EarlyStopping(monitor=monitor, mode="min" if monitor == "val_loss" else "max",
                                            patience=int(patience), restore_best_weights=True)


def to_classifier_inputs(batch: Mapping[str, tf.Tensor], num_classes: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Pipeline batch ``{"image", "label"}`` -> ``(images float32 [0,1], one-hot labels float32 [B,C])``;
    a ``target`` entry ``[B,C]``, when present, is the label instead.

    Use as ``dataset.map(lambda b: to_classifier_inputs(b, num_classes))``.
    """
    if "image" not in batch or "label" not in batch:
        raise KeyError(f"a classification batch needs 'image' and 'label' entries, got {sorted(batch)}")
    if "target" in batch:  # per-sample soft targets (synthetic images with a teacher's probabilities)
        return tf.cast(batch["image"], tf.float32), tf.cast(batch["target"], tf.float32)
    labels = tf.cast(batch["label"], tf.int32)
    return tf.cast(batch["image"], tf.float32), tf.one_hot(labels, int(num_classes), dtype=tf.float32)


# ============================================================================ separate statistics
SYNTHETIC_BN = ("shared", "separate", "auxiliary")
SYNTHETIC_BATCHES = ("sampled", "fixed")


def synthetic_rows(batch_size: int, synthetic_ratio: float) -> int:
    """Synthetic images per batch of ``batch_size`` when each batch holds a fixed share of them:
    ``round(ratio x batch)``, at least 1 and leaving at least 1 real image."""
    batch_size = int(batch_size)
    if batch_size < 2:
        raise ValueError(f"a batch of real and synthetic images needs at least 2 rows, got {batch_size}")
    if not 0.0 < float(synthetic_ratio) < 1.0:
        raise ValueError(f"synthetic_ratio must be in (0, 1) for batches of both, got {synthetic_ratio}")
    return min(batch_size - 1, max(1, int(round(float(synthetic_ratio) * batch_size))))


class SeparateSyntheticStatistics(tf.keras.Model):
    """Trains ``classifier`` on batches whose first ``real_rows`` rows are real images and the rest
    synthetic, normalising each part by its own batch statistics (as AdvProp's auxiliary batch norm
    does for adversarial examples). Only the real part updates the moving statistics, so inference
    normalises as the real images alone would.

    ``auxiliary=False``: the two parts share the batch norms' scales and offsets. ``True`` (AdvProp
    proper): the synthetic part goes through its own copy of every batch norm (scales, offsets and
    statistics, started from the classifier's), sharing every other layer; the copies are trained
    by the synthetic rows only and never used at inference.

    Everything else is the classifier's: the loss is the compiled loss over the whole batch (each row
    weighted as in a shared-statistics step), ``weights`` start with the classifier's, in its order
    (followed by the copies' with ``auxiliary``), and calling the model calls the classifier. Export
    and save ``classifier`` itself.
    """

    def __init__(self, classifier: tf.keras.Model, real_rows: int, auxiliary: bool = False, **kwargs):
        super().__init__(name=kwargs.pop("name", "separate_synthetic_statistics"), **kwargs)
        if int(real_rows) < 1:
            raise ValueError(f"real_rows must be >= 1, got {real_rows}")
        self.classifier = classifier
        self.real_rows = int(real_rows)
        self._norms = [layer for layer in classifier.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
        if not self._norms:
            raise ValueError("separate synthetic statistics need a classifier with batch normalisation "
                             "(batch_norm=True)")
        self.synthetic_branch = _with_own_batch_norms(classifier) if auxiliary else None

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def _synthetic_forward(self, images):
        """The classifier on synthetic rows: batch statistics in training, moving statistics untouched
        (momentum 1 while this call is traced), or the copy with its own batch norms."""
        if self.synthetic_branch is not None:
            return self.synthetic_branch(images, training=True)
        saved = [layer.momentum for layer in self._norms]
        try:
            for layer in self._norms:
                layer.momentum = 1.0
            return self.classifier(images, training=True)
        finally:
            for layer, momentum in zip(self._norms, saved):
                layer.momentum = momentum

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        n = self.real_rows
        with tf.GradientTape() as tape:
            real = self.classifier(x[:n], training=True)
            synthetic = self._synthetic_forward(x[n:])
            y_pred = tf.concat([real, synthetic], 0)
            loss = self.compute_loss(x, y, y_pred, sample_weight)
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return self.compute_metrics(x, y, y_pred, sample_weight)


def _with_own_batch_norms(classifier: tf.keras.Model) -> tf.keras.Model:
    """``classifier`` with a new copy of each batch norm (same configuration and current weights,
    name suffixed ``_synthetic``) and every other layer shared, weights included."""
    norm = tf.keras.layers.BatchNormalization

    def copy_norms(layer):
        if not isinstance(layer, norm):
            return layer
        config = dict(layer.get_config(), name=f"{layer.name}_synthetic")
        return norm.from_config(config)

    branch = tf.keras.models.clone_model(classifier, clone_function=copy_norms)
    for layer in classifier.layers:
        if isinstance(layer, norm):
            branch.get_layer(f"{layer.name}_synthetic").set_weights(layer.get_weights())
    return branch


# ============================================================================ splits
def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``n`` samples of one class into per-split counts (see :func:`stratified_split`)."""
    k = len(fractions)
    active = np.flatnonzero(fractions > 0)
    counts = np.zeros(k, dtype=np.int64)
    if n <= len(active):
        counts[active[:n]] = 1  # too few to go around: one each, in split order (train first)
        return counts
    raw = n * fractions
    counts = np.floor(raw).astype(np.int64)
    # largest remainders get the leftovers (ties: earlier split first)
    order = sorted(active, key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    # every active split gets at least one, taken from the currently largest split
    for i in active:
        if counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    return counts


def stratified_split(
    labels: Sequence[int],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> Tuple[np.ndarray, ...]:
    """Deterministic per-class split of sample indices, e.g. ``train, val, test = stratified_split(y)``.

    For each class (independently shuffled with ``seed``), its ``n`` samples are divided by
    ``fractions`` with largest-remainder rounding, and then every split with a positive
    fraction gets at least one sample (taken from the largest). Classes with fewer samples
    than there are such splits give one sample to each split in order: a class with 1 sample
    is train-only, with 2 samples train + val (for the default 3 fractions). So every class is
    in the first split and in all splits whenever it has enough samples.

    Returns one sorted int64 index array per fraction. ``fractions`` must be non-negative,
    with a positive first entry, and sum to 1.
    """
    y = np.asarray(labels).reshape(-1)
    fr = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if fr.size < 1 or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    if fr[0] <= 0:
        raise ValueError("the first (training) fraction must be positive")
    rng = np.random.default_rng(seed)
    parts: List[List[np.ndarray]] = [[] for _ in fr]
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        start = 0
        for s, c in enumerate(_allocate(idx.size, fr)):
            parts[s].append(idx[start : start + c])
            start += c
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts)


# ============================================================================ export / load
class _ClassifierModule(tf.Module):
    """What the SavedModel holds: the model's variables and the serving functions."""

    def __init__(self, model: tf.keras.Model, image_size: Tuple[int, int]):
        super().__init__(name="classifier")
        self.model_variables = list(model.variables)  # track variables, not the Keras model
        size = tf.constant(image_size, tf.int32)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
        def classify(images):
            """float32 [B,H,W,3] in [0,1] -> probabilities float32 [B,C], class_ids int32 [B]."""
            images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_B_H_W_3")
            x = tf.image.resize(images, size, method="bilinear", antialias=True)
            probs = tf.cast(model(x, training=False), tf.float32)
            return {"probabilities": probs, "class_ids": tf.cast(tf.argmax(probs, -1), tf.int32)}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        def serve(images):
            images = tf.ensure_shape(images, [None, None, None, 3], name="images_must_be_B_H_W_3")
            return classify(tf.cast(images, tf.float32) / 255.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            image_bytes = tf.ensure_shape(image_bytes, [None], name="image_bytes_must_be_B")
            def decode(b):
                img = tf.io.decode_image(b, channels=3, dtype=tf.uint8, expand_animations=False)
                return tf.image.resize(tf.cast(img, tf.float32) / 255.0, size, method="bilinear", antialias=True)

            images = tf.map_fn(
                decode, image_bytes, fn_output_signature=tf.TensorSpec([None, None, 3], tf.float32)
            )
            return classify(images)

        self.classify = classify
        self.serve = serve
        self.serve_bytes = serve_bytes


def export_classifier(
    model: tf.keras.Model,
    export_dir: str,
    class_names: Sequence[str],
    image_size: Union[int, Tuple[int, int]],
    overwrite: bool = False,
    extra_config: Optional[Mapping] = None,
) -> str:
    """Export the classifier as a SavedModel (+ ``classes.json`` and ``config.json``).

    Signatures:
      - ``serving_default``: ``images`` uint8 ``[B,H,W,3]`` (any size, resized bilinear to
        ``image_size``) -> ``probabilities`` float32 ``[B,C]``, ``class_ids`` int32 ``[B]``;
      - ``serving_bytes``: ``image_bytes`` string ``[B]`` of PNG/JPEG files (sizes may differ)
        -> the same outputs.
    The module also has a ``classify`` function taking float32 [0,1] images.

    Written atomically (built next to ``export_dir``, then renamed); an existing non-empty
    ``export_dir`` is refused unless ``overwrite=True``. Returns the absolute path.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    in_hw = tuple(model.input_shape[1:3])
    if None not in in_hw and in_hw != (h, w):
        raise ValueError(f"image_size {(h, w)} does not match the model's fixed input size {in_hw}")
    table = ClassTable(list(class_names))
    c = int(model.output_shape[-1])
    if table.num_classes != c:
        raise ValueError(f"{table.num_classes} class names for a model with {c} outputs")
    export_dir = prepare_export_dir(export_dir, overwrite)
    module = _ClassifierModule(model, (h, w))
    config = export_config(EXPORT_FORMAT, "classification", model, (h, w), table, {
        "inputs": IMAGE_INPUTS,
        "outputs": {"probabilities": "float32 [B,C]", "class_ids": "int32 [B]"},
        "resize": "bilinear to image_size",
    }, extra_config)
    write_export(module, export_dir, table, config)
    return export_dir


class Classifier(LoadedExport):
    """A loaded classifier export: ``classifier(images) -> class ids``.

    ``images``: ``[B,H,W,3]`` (or one ``[H,W,3]``) numpy array or tensor, float in [0, 1] or
    uint8, any size (a single image is treated as a batch of one). ``__call__`` returns int32
    class ids ``[B]``; :meth:`predict_proba` returns probabilities ``[B,C]``.
    """

    kind = "classifier"
    export_format = EXPORT_FORMAT

    @property
    def class_names(self) -> List[str]:
        return self.class_table.names

    def predict(self, images) -> Dict[str, np.ndarray]:
        """``{"probabilities": float32 [B,C], "class_ids": int32 [B]}`` for a batch."""
        x = tf.convert_to_tensor(images)
        if x.shape.rank == 3:
            x = x[None]
        if x.shape.rank != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images [B,H,W,3], got shape {x.shape}")
        out = self._module.serve(x) if x.dtype == tf.uint8 else self._module.classify(tf.cast(x, tf.float32))
        return {k: v.numpy() for k, v in out.items()}

    def predict_proba(self, images) -> np.ndarray:
        return self.predict(images)["probabilities"]

    def classify_function(self, images: tf.Tensor) -> tf.Tensor:
        """Probabilities ``[B,C]`` of float32 images ``[B,H,W,3]`` in ``[0, 1]`` (any size), as a
        differentiable TensorFlow function: usable inside a ``tf.function`` or a gradient tape
        (e.g. as a GAN's class loss); the weights are not trainable here.

        First-order gradients only, under any number of tapes, eager or in a ``tf.function``: the
        loaded function runs unrecorded and its gradient comes from a fresh tape in the backward
        pass. (Called directly under two tapes, or a persistent one, TensorFlow differentiates a
        loaded function for higher orders, which its antialiased resize does not support.)"""
        from tensorflow.python.eager import record  # (no public equivalent of pausing every tape)

        classify = self._module.classify

        @tf.custom_gradient
        def probabilities(x):
            def grad(dy, variables=None):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = classify(x)["probabilities"]
                dx = tape.gradient(y, x, output_gradients=dy)
                return (dx, [None] * len(variables)) if variables else dx  # the classifier is frozen

            with record.stop_recording():  # the outer tapes record this call as one op, with ``grad``
                y = classify(x)["probabilities"]
            return y, grad

        return probabilities(tf.cast(images, tf.float32))

    def __call__(self, images) -> np.ndarray:
        return self.predict(images)["class_ids"]


def load_classifier(export_dir: str) -> Classifier:
    """Load :func:`export_classifier` output as a callable ``images -> class ids``."""
    return Classifier(export_dir)
