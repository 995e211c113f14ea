"""Loading models from disk with clear errors: every failure is a
:class:`~synthseg_tf.errors.ModelLoadError` naming the path, what was expected there and what was
found, and Keras files are deserialised in Keras' *safe mode* (no Python bytecode from ``Lambda``
layers is executed, whatever the format).

- :func:`load_keras_model`: a Keras SavedModel folder (``saved_model.pb`` + ``keras_metadata.pb``),
  a ``.keras`` file or an HDF5 (``.h5``) file.
- :func:`load_saved_model`: a TensorFlow SavedModel folder (``tf.saved_model.load``).

A path that does not exist raises :class:`ModelNotFound`, which is both a ``ModelLoadError`` and a
``FileNotFoundError``.

Paths may be remote (``gs://...``, see :mod:`synthseg_tf.storage`): they are checked through
``tf.io.gfile`` and handed to TensorFlow/Keras, which read them the same way.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Optional

from synthseg_tf import storage
from synthseg_tf.errors import ModelLoadError

SAVED_MODEL_FILE = "saved_model.pb"
KERAS_METADATA_FILE = "keras_metadata.pb"


class ModelNotFound(ModelLoadError, FileNotFoundError):
    """The model path does not exist."""


def _listing(path: str, limit: int = 8) -> str:
    """What a folder holds, for error messages: ``'a, b, c (+5 more)'`` or ``'nothing'``."""
    try:
        names = sorted(storage.listdir(path))
    except OSError:
        return "nothing readable"
    if not names:
        return "nothing (an empty folder)"
    shown = ", ".join(n + ("/" if storage.isdir(storage.join(path, n)) else "") for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def require_saved_model_dir(path: str, what: str, hint: str = "") -> str:
    """``path`` (absolute) if it is a folder holding ``saved_model.pb``; else a ModelLoadError naming
    the folder, what was expected (``what``, plus ``hint``) and what it holds."""
    path = storage.abspath(os.fspath(path))
    if not storage.exists(path):
        raise ModelNotFound(f"{path}: {what} not found (no such file or folder)")
    if not storage.isdir(path):
        raise ModelLoadError(f"{path}: not a {what}: expected a folder with {SAVED_MODEL_FILE}, got a file")
    if not storage.isfile(storage.join(path, SAVED_MODEL_FILE)):
        raise ModelLoadError(f"{path}: not a {what}: expected a TensorFlow SavedModel folder with "
                             f"{SAVED_MODEL_FILE}{hint}; it holds {_listing(path)}")
    return path


@contextlib.contextmanager
def _safe_mode():
    """Keras' safe mode for the legacy (SavedModel/HDF5) loaders too, which do not take ``safe_mode``."""
    try:
        from keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover  (other Keras layouts: load_model's own safe_mode applies)
        yield
        return
    with SafeModeScope(True):
        yield


def load_keras_model(path: str, what: str = "Keras model", compile: bool = False,
                     custom_objects: Optional[Dict] = None):
    """Load a Keras model (SavedModel folder, ``.keras`` or ``.h5`` file) in safe mode.

    Errors (missing path, a folder that is not a Keras SavedModel, a corrupt file, a ``Lambda``
    layer holding Python code refused by safe mode) are :class:`ModelLoadError` naming ``path``.
    """
    import tensorflow as tf

    path = storage.abspath(os.fspath(path))
    if not storage.exists(path):
        raise ModelNotFound(f"{path}: {what} not found (no such file or folder)")
    if storage.isdir(path):
        require_saved_model_dir(path, what)
        if not storage.isfile(storage.join(path, KERAS_METADATA_FILE)):
            raise ModelLoadError(f"{path}: not a {what}: a TensorFlow SavedModel without {KERAS_METADATA_FILE} "
                                 "(not saved by Keras); load it with tf.saved_model.load instead")
    elif not path.endswith((".keras", ".h5", ".hdf5")):
        raise ModelLoadError(f"{path}: not a {what}: expected a SavedModel folder, a .keras or an .h5 file")
    if storage.isdir(path) and not compile:
        model = rebuild_keras_model(path, custom_objects)
        if model is not None:
            return model
    try:
        with _safe_mode():
            return tf.keras.models.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=True)
    except ModelLoadError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, tf.errors.OpError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "safe_mode" in str(e) or "arbitrary code" in str(e):
            msg = ("it holds a Lambda layer with Python code, which safe mode refuses to run (load it yourself "
                   "with tf.keras.models.load_model(..., safe_mode=False) only if you trust its source)")
        raise ModelLoadError(f"{path}: cannot load the {what}: {msg}") from e


def rebuild_keras_model(path: str, custom_objects: Optional[Dict] = None):
    """A Keras SavedModel folder's functional or sequential model rebuilt from the config it
    carries (``keras_metadata.pb``) with its variables read from ``variables/``, or ``None`` when
    that cannot be done (a subclassed model, a class not registered here, any mismatch).

    It is what ``tf.keras.models.load_model`` does for such a model, without reviving the traced
    ``tf.function`` graphs the SavedModel also holds, which take most of its time (about 2.5 s
    against 0.7 s for a 64x64 pix2pix generator): the model is built from the same config, in
    safe mode, and the read must consume every saved value and give every variable of the
    rebuilt model one (``assert_consumed``), so a rebuilt model holds exactly the saved weights.
    A ``None`` lets the caller fall back to the full loader, which reports errors properly.
    """
    import tensorflow as tf

    try:
        from keras.protobuf import saved_metadata_pb2
        from keras.src.saving.legacy.saved_model import json_utils
    except ImportError:  # pragma: no cover  (another Keras layout: use the full loader)
        return None
    try:
        meta_file = storage.join(path, KERAS_METADATA_FILE)
        if not storage.isfile(meta_file):
            return None
        saved = saved_metadata_pb2.SavedMetadata()
        saved.ParseFromString(storage.read_bytes(meta_file))
        roots = [n for n in saved.nodes if n.node_path == "root"]
        if len(roots) != 1:
            return None
        meta = json_utils.decode(roots[0].metadata)
        if meta.get("class_name") not in ("Functional", "Sequential", "Model") or not meta.get("is_graph_network"):
            return None
        with _safe_mode():
            model = tf.keras.models.model_from_config({"class_name": meta["class_name"], "config": meta["config"]},
                                                      custom_objects=custom_objects)
        status = tf.train.Checkpoint(model).read(storage.join(path, "variables", "variables"))
        try:
            status.assert_consumed()
        except AssertionError:
            status.expect_partial()  # (no warning at deletion: the caller falls back)
            return None
        return model
    except Exception:  # noqa: BLE001  (anything: the full loader decides, with its clear errors)
        return None


def load_saved_model(path: str, what: str = "SavedModel", hint: str = ""):
    """``tf.saved_model.load(path)`` with the folder checked first; failures are ModelLoadError."""
    import tensorflow as tf

    path = require_saved_model_dir(path, what, hint)
    try:
        return tf.saved_model.load(path)
    except (OSError, ValueError, TypeError, KeyError, tf.errors.OpError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"{path}: cannot load the {what} (a damaged or incompatible SavedModel): {msg}") from e


__all__ = ["ModelNotFound", "require_saved_model_dir", "load_keras_model", "rebuild_keras_model", "load_saved_model"]
