"""Process-wide settings the package owns, applied before TensorFlow or segmentation-models load.

Importing the library sets only what it needs to work: ``SM_FRAMEWORK=tf.keras`` (so
segmentation-models builds on tf.keras), unless the user set it. It does **not** silence
TensorFlow's C++ log (``TF_CPP_MIN_LOG_LEVEL``), Python loggers or warning filters: those carry
TensorFlow's own error messages, and a library must not hide them from its users.

The ``synthseg`` command line calls :func:`quiet` first (a CLI's output should be its own), and
notebooks may call ``synthseg_tf.quiet()`` for the same effect. Values the user already set
(``TF_CPP_MIN_LOG_LEVEL=0`` to see TensorFlow's C++ log) are respected.
"""
import logging
import os
import warnings

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")

# Third-party import-time noise that says nothing actionable (quiet() filters it).
_NOISE = (
    dict(message=r".*pkg_resources is deprecated.*"),
    dict(message=r".*TensorFlow Addons.*"),
    dict(category=UserWarning, module=r"tensorflow_addons.*"),
    dict(category=DeprecationWarning, module=r"(tensorflow_gan|tensorflow_probability|keras|tensorflow).*"),
    dict(category=FutureWarning, module=r"google\..*"),  # "non-supported Python 3.10"
)


class _DropKnownNoise(logging.Filter):
    """tensorflow_addons warns on the root logger each time an InstanceNormalization loads."""

    def filter(self, record):
        return "The given value for groups will be overwritten" not in record.getMessage()


def quiet(tf_log_level: str = "3") -> None:
    """Quiet TensorFlow and third-party import noise for this process: ``TF_CPP_MIN_LOG_LEVEL``
    (unless already set; the default ``3`` also hides the harmless CUDA-plugin registration
    errors of CPU machines), TensorFlow's Python logger at ERROR, and the known third-party
    deprecation warnings. Call it before TensorFlow is imported for the C++ part to apply."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(tf_log_level))
    for kw in _NOISE:
        warnings.filterwarnings("ignore", **kw)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(f, _DropKnownNoise) for f in root.filters):
        root.addFilter(_DropKnownNoise())


def quiet_tensorflow():
    """Lower TensorFlow's Python logger to errors (call after importing tensorflow)."""
    try:
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def import_segmentation_models():
    """Import ``segmentation_models`` on tf.keras without its banner on stdout."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import segmentation_models as sm
    return sm



# NO_AUTOGRAPH: the package's Keras losses, metrics and train steps are pure TensorFlow
# (their only branches are on Python settings), so they are marked
# ``tf.autograph.experimental.do_not_convert``. In long-lived processes that build many models
# (test workers, notebooks), AutoGraph's transformed-code cache was seen returning the wrong
# method of a class (``__init__`` for ``call``); skipping the conversion avoids that cache.
