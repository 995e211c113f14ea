"""Evaluation metrics.

- :mod:`.segmentation`: streaming :class:`ConfusionMatrix` (IoU, Dice, pixel accuracy; void
  pixels skipped), Keras metrics :class:`MeanIoUIgnore` / :class:`ClassIoU`, the pix2pix
  :func:`fcn_score` and :func:`per_sample_miou`;
- :mod:`.classification`: :func:`classification_report`, :func:`classifier_accuracy_on_generated`;
- :mod:`.generative`: FID / KID / Inception Score (TF-GAN) and the feature extractors
  :class:`InceptionV3Extractor` (local weights) and :class:`KerasLayerExtractor` (domain encoder).
"""
from synthseg_tf import _env  # noqa: F401

from synthseg_tf.metrics.classification import (  # noqa: F401
    classification_report,
    classifier_accuracy_on_generated,
    labels_from_predictions,
)
from synthseg_tf.metrics.generative import (  # noqa: F401
    INCEPTION_WEIGHTS_HINT,
    FeatureExtractor,
    InceptionV3Extractor,
    KerasLayerExtractor,
    compute_generative_metrics,
    fid_from_activations,
    inception_score_from_logits,
    kid_from_activations,
)
from synthseg_tf.metrics.segmentation import (  # noqa: F401
    ClassIoU,
    ConfusionMatrix,
    MeanIoUIgnore,
    fcn_score,
    per_sample_miou,
    predictions_to_ids,
)

__all__ = [
    "ConfusionMatrix",
    "MeanIoUIgnore",
    "ClassIoU",
    "fcn_score",
    "per_sample_miou",
    "predictions_to_ids",
    "classification_report",
    "classifier_accuracy_on_generated",
    "labels_from_predictions",
    "fid_from_activations",
    "kid_from_activations",
    "inception_score_from_logits",
    "FeatureExtractor",
    "InceptionV3Extractor",
    "KerasLayerExtractor",
    "compute_generative_metrics",
    "INCEPTION_WEIGHTS_HINT",
]
