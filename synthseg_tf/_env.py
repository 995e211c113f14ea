"""Process-wide settings the package owns, applied before TensorFlow or segmentation-models load.

Users should not have to export ``SM_FRAMEWORK`` or silence TensorFlow's C++ log spam
themselves. Values the user already set are respected.
"""
import logging
import os
import warnings

os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # hides the harmless CUDA-plugin registration errors on CPU

# Third-party import-time noise that says nothing actionable to our users.
warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*")
warnings.filterwarnings("ignore", message=r".*TensorFlow Addons.*")
warnings.filterwarnings("ignore", category=UserWarning, module=r"tensorflow_addons.*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(tensorflow_gan|tensorflow_probability|keras|tensorflow).*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")  # "non-supported Python 3.10"
logging.getLogger("tensorflow").setLevel(logging.ERROR)


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


class _DropKnownNoise(logging.Filter):
    """tensorflow_addons warns on the root logger each time an InstanceNormalization loads."""

    def filter(self, record):
        return "The given value for groups will be overwritten" not in record.getMessage()


logging.getLogger().addFilter(_DropKnownNoise())

# NO_AUTOGRAPH: the package's Keras losses, metrics and train steps are pure TensorFlow
# (their only branches are on Python settings), so they are marked
# ``tf.autograph.experimental.do_not_convert``. In long-lived processes that build many models
# (test workers, notebooks), AutoGraph's transformed-code cache was seen returning the wrong
# method of a class (``__init__`` for ``call``); skipping the conversion avoids that cache.
