"""Controlled experiments: does synthetic data help? Real vs real+synthetic vs synthetic-only.

- :func:`run_segmentation_experiment` (U-Net, mean IoU / Dice / pixel accuracy, per-class IoU);
- :func:`run_classification_experiment` (CNN classifier, accuracy / macro-F1, per-class F1).

Both train every (fraction of real training data) x (seed) x (setting) combination with the
same hyper-parameters, seed and compute budget, evaluate on the same real held-out data and
write ``results.json`` (every run) and ``summary.json`` (mean ± std over seeds, per-class
statistics, and per-seed paired deltas against the real-only setting). Finished runs are
skipped when the experiment is run again, so an interrupted experiment resumes.
``synthseg report OUT_DIR`` turns the folder into an HTML/Markdown report.
"""


def run_segmentation_experiment(*args, **kwargs):
    """See :func:`synthseg_tf.experiments.segmentation.run_segmentation_experiment`."""
    from synthseg_tf.experiments.segmentation import run_segmentation_experiment as _run

    return _run(*args, **kwargs)


def run_classification_experiment(*args, **kwargs):
    """See :func:`synthseg_tf.experiments.classification.run_classification_experiment`."""
    from synthseg_tf.experiments.classification import run_classification_experiment as _run

    return _run(*args, **kwargs)


__all__ = ["run_segmentation_experiment", "run_classification_experiment"]
