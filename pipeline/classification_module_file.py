"""TFX user module of the classification pipeline: ``preprocessing_fn`` (Transform), ``run_fn`` (the CNN
classifier ``Trainer`` and ``BaselineTrainer``) and :class:`MacroF1` (the Evaluator's macro-F1).

Settings come from the component's ``custom_config`` (see
:func:`pipeline.classification_pipeline.create_classification_pipeline`): ``image_size`` ``[H, W]``,
``num_classes``, ``class_names``, ``batch_size``, ``learning_rate``, ``seed``, ``augment``,
``log_every``, ``log_name`` and ``classifier`` (more :func:`~synthseg_tf.models.classifier.build_classifier`
/ :func:`~synthseg_tf.models.classifier.compile_classifier` settings; default the library's
``CLASSIFIER_DEFAULTS``: the recipe of ``synthseg classifier train``).

Transform (``preprocessing_fn``)
    Raw features are the package's ``tf.Example`` schema (``synthseg_tf.data.tfrecord``; for class-folder
    data ``mask/encoded`` is empty and ``label`` is the class id). ``image/encoded`` is decoded and
    resized as the library does (:func:`synthseg_tf.data.tfdata.resize_pair`) into ``image`` float32
    ``[H, W, 3]`` in [0, 1]; ``label`` int64 and ``synthetic`` int64 pass through. Per example, no
    analyzers: the exported model embeds the graph, so serving decodes exactly as training did.

Trainer (``run_fn``)
    The library's CNN (:func:`~synthseg_tf.models.classifier.build_classifier`, compiled by
    :func:`~synthseg_tf.models.classifier.compile_classifier`: categorical cross-entropy with label
    smoothing, cosine learning-rate decay over the run) trained for ``fn_args.train_steps`` steps on
    the transformed examples, with the library's standard augmentation
    (:func:`synthseg_tf.data.tfdata.prepare`). The SavedModel written to ``fn_args.serving_model_dir`` is
    a regular library classifier export (``config.json`` format ``synthseg_tf.classifier``,
    ``classes.json``): :func:`synthseg_tf.models.classifier.load_classifier` loads it and the generation
    quality filter accepts it (the classification pipeline's real-only ``BaselineTrainer`` is the
    ``SyntheticGeneration`` confidence filter). Signatures:

    - ``serving_default``: ``images`` uint8 ``[B,H,W,3]`` -> ``probabilities`` float32 ``[B,C]``,
      ``class_ids`` int32 ``[B]`` (the library's export);
    - ``serving_bytes``: ``image_bytes`` string ``[B]`` (PNG/JPEG) -> the same;
    - ``serving_tf_example``: ``examples`` string ``[B]`` of serialized ``tf.Example`` (only
      ``image/encoded`` is needed) -> the same, through the Transform graph: what TFMA and batch
      prediction on TFRecords use;
    - ``transform_features``: serialized ``tf.Example`` -> the Transform outputs.

Evaluation (:class:`MacroF1`)
    A streaming Keras metric (a ``K x K`` confusion matrix of true id vs arg-max prediction): the
    mean F1 over the classes present in the truth or the predictions, the same number as the
    library's :func:`synthseg_tf.metrics.classification.classification_report` ``macro.f1``. TFMA
    loads it from this module (its installed name) and sums the confusion matrices of its batches.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from synthseg_tf import _env  # noqa: F401  (environment settings before TensorFlow loads)

import tensorflow as tf  # noqa: E402

from ._common import (IMAGE_KEY, IMAGE_XF, fit_with_progress, save_serving_export, trainer_settings,  # noqa: E402
                      with_defaults, with_example_signatures)
from .module_file import _dense_ints, _dense_strings, decode_and_resize  # noqa: E402

LABEL_KEY = "label"
SYNTHETIC_KEY = "synthetic"
LABEL_XF = "label"
SYNTHETIC_XF = "synthetic"

DEFAULTS = {"image_size": [64, 64], "batch_size": 32, "learning_rate": 2e-3, "seed": 0, "augment": True}


def settings(custom_config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``custom_config`` with defaults filled in and ``image_size`` as an ``(H, W)`` tuple."""
    return with_defaults(custom_config, DEFAULTS)


# =========================================================================== Transform
def preprocessing_fn(inputs: Dict[str, Any], custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """tf.Transform: decode + resize the image, pass the class id through (see the module docstring)."""
    size = settings(custom_config)["image_size"]
    images, _ = decode_and_resize(_dense_strings(inputs[IMAGE_KEY]), None, size)
    out = {IMAGE_XF: images}
    if LABEL_KEY in inputs:
        out[LABEL_XF] = tf.cast(_dense_ints(inputs[LABEL_KEY]), tf.int64)
    if SYNTHETIC_KEY in inputs:
        out[SYNTHETIC_XF] = tf.cast(_dense_ints(inputs[SYNTHETIC_KEY]), tf.int64)
    return out


# =========================================================================== metric
class MacroF1(tf.keras.metrics.Metric):
    """Streaming macro-F1 of a classifier (see the module docstring).

    ``update_state(y_true, y_pred)``: ``y_true`` class ids ``[B]`` / ``[B, 1]`` or one-hot ``[B, K]``;
    ``y_pred`` scores ``[B, K]`` (arg-max) or ids ``[B]`` / ``[B, 1]``. Labels outside ``0..K-1``
    (e.g. ``-1``, no label) are skipped.
    """

    def __init__(self, num_classes: int, name: str = "macro_f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.total_cm = self.add_weight("total_confusion_matrix", shape=(self.num_classes, self.num_classes),
                                        initializer="zeros", dtype=tf.float64,
                                        aggregation=tf.VariableAggregation.SUM,
                                        synchronization=tf.VariableSynchronization.ON_READ)

    def _ids(self, y):
        y = tf.convert_to_tensor(y)
        if y.shape.rank is not None and y.shape.rank >= 2 and y.shape[-1] == self.num_classes:
            return tf.argmax(y, axis=-1, output_type=tf.int64)
        y = tf.reshape(y, [-1])
        return tf.cast(tf.round(y) if y.dtype.is_floating else y, tf.int64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = tf.reshape(self._ids(y_true), [-1])
        p = tf.reshape(self._ids(y_pred), [-1])
        w = tf.ones_like(t, tf.float64) if sample_weight is None else tf.cast(tf.reshape(sample_weight, [-1]),
                                                                               tf.float64)
        ok = (t >= 0) & (t < self.num_classes) & (p >= 0) & (p < self.num_classes)
        cm = tf.math.confusion_matrix(tf.boolean_mask(t, ok), tf.boolean_mask(p, ok), num_classes=self.num_classes,
                                      weights=tf.boolean_mask(w, ok), dtype=tf.float64)
        return self.total_cm.assign_add(cm)

    def result(self):
        cm = self.total_cm
        tp = tf.linalg.diag_part(cm)
        support = tf.reduce_sum(cm, axis=1)
        predicted = tf.reduce_sum(cm, axis=0)
        present = (support + predicted) > 0
        f1 = tf.math.divide_no_nan(2.0 * tp, support + predicted)
        n = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(tf.where(present, f1, 0.0)), n), self.dtype)

    def reset_state(self):
        self.total_cm.assign(tf.zeros_like(self.total_cm))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


# =========================================================================== Trainer
def input_fn(file_pattern: List[str], data_accessor, tf_transform_output, batch_size: int, num_classes: int,
             image_size: Tuple[int, int], augment=False, seed: Optional[int] = None) -> tf.data.Dataset:
    """Transformed examples -> repeating ``(images float32 [B,H,W,3], one-hot labels float32 [B,C])`` batches
    (``augment``: the library's augmentation, :func:`synthseg_tf.data.tfdata.prepare`)."""
    from tfx_bsl.public import tfxio

    from synthseg_tf.data.tfdata import prepare
    from synthseg_tf.models.classifier import to_classifier_inputs

    ds = data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle_seed=seed),
        tf_transform_output.transformed_metadata.schema)
    ds = ds.unbatch().map(lambda f: {"image": tf.cast(f[IMAGE_XF], tf.float32),
                                     "label": tf.cast(tf.reshape(f[LABEL_XF], []), tf.int32)})
    if augment:
        ds = prepare(ds, image_size, augment=augment, seed=seed)
    return (ds.batch(batch_size).map(lambda b: to_classifier_inputs(b, num_classes))
            .prefetch(tf.data.AUTOTUNE))


def _serving_module(model: tf.keras.Model, image_size: Tuple[int, int], tf_transform_output):
    """The library's classifier module plus the tf.Example and transform signatures."""
    from synthseg_tf.models.classifier import _ClassifierModule

    return with_example_signatures(_ClassifierModule(model, image_size), tf_transform_output, "classify")


def export_serving_model(model: tf.keras.Model, export_dir: str, tf_transform_output, class_names: List[str],
                         image_size: Tuple[int, int], extra_config: Optional[Dict] = None) -> str:
    """Write the SavedModel (+ classes.json/config.json: a library classifier export) for Evaluator/Pusher."""
    from synthseg_tf.data.classes import ClassTable
    from synthseg_tf.export.savedmodel import IMAGE_INPUTS, export_config
    from synthseg_tf.models.classifier import CONFIG_FILE, EXPORT_FORMAT

    module = _serving_module(model, image_size, tf_transform_output)
    table = ClassTable(list(class_names))
    config = export_config(EXPORT_FORMAT, "classification", model, image_size, table, {
        "inputs": IMAGE_INPUTS + "; serving_tf_example: examples string [B] (serialized tf.Example with image/encoded)",
        "outputs": {"probabilities": "float32 [B,C]", "class_ids": "int32 [B]"},
        "resize": "bilinear to image_size",
        "trained_by": "tfx",
    }, extra_config)
    return save_serving_export(module, export_dir, table, config, CONFIG_FILE)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (generic Trainer, ``fn_args: tfx.components.FnArgs``)."""
    from synthseg_tf.models.classifier import build_classifier, compile_classifier
    from synthseg_tf.training.classification import CLASSIFIER_DEFAULTS

    s = trainer_settings(fn_args, DEFAULTS)
    cfg, size, num_classes = s.cfg, s.image_size, s.num_classes
    opts = {**CLASSIFIER_DEFAULTS, **dict(cfg.get("classifier") or {})}
    train = input_fn(fn_args.train_files, fn_args.data_accessor, s.tf_transform_output, s.batch_size, num_classes,
                     size, augment=cfg.get("augment", True), seed=s.seed)
    val = input_fn(fn_args.eval_files, fn_args.data_accessor, s.tf_transform_output, s.batch_size, num_classes,
                   size, augment=False, seed=s.seed)

    tf.keras.utils.set_random_seed(s.seed)
    model = build_classifier(num_classes, input_shape=(size[0], size[1], 3), filters=opts["filters"],
                             dense_units=opts["dense_units"], dropout=float(opts["dropout"]),
                             batch_norm=bool(opts["batch_norm"]), pooling=opts["pooling"])
    lr = float(cfg["learning_rate"])
    schedule = lr
    if opts.get("lr_schedule") == "cosine":
        schedule = tf.keras.optimizers.schedules.CosineDecay(lr, max(1, s.steps), alpha=0.01)
    compile_classifier(model, learning_rate=schedule, label_smoothing=float(opts["label_smoothing"]),
                       weight_decay=float(opts["weight_decay"]))
    last = fit_with_progress(model, train, val, fn_args, s)
    export_serving_model(model, fn_args.serving_model_dir, s.tf_transform_output, s.class_names, size,
                         extra_config={"train_steps": s.steps, "history": last,
                                       "classifier": {k: (list(v) if isinstance(v, tuple) else v)
                                                      for k, v in opts.items()}})
