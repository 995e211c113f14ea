"""What the U-Net and classifier SavedModel exports share (:func:`synthseg_tf.models.unet.export_unet`,
:func:`synthseg_tf.models.classifier.export_classifier`): the export folder rules, the
``config.json`` header, the atomic write of ``saved_model.pb`` + ``classes.json`` +
``config.json`` with the ``serving_default``/``serving_bytes`` signatures, and loading one back.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional, Sequence

from synthseg_tf import _env  # noqa: F401  (quiet TF before it loads)
from synthseg_tf import storage
from synthseg_tf.data.classes import ClassTable
from synthseg_tf.utils import atomic_directory, atomic_write_text

import tensorflow as tf  # noqa: E402

CONFIG_FILE = "config.json"
IMAGE_INPUTS = "serving_default: images uint8 [B,H,W,3]; serving_bytes: image_bytes string [B] (PNG/JPEG)"


def prepare_export_dir(export_dir: str, overwrite: bool) -> str:
    """Refuse a non-empty existing ``export_dir`` unless ``overwrite``; an empty one is replaced."""
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.isdir(export_dir) and not os.listdir(export_dir):
        os.rmdir(export_dir)
    elif os.path.exists(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} already exists and is not empty; pass overwrite=True to replace it")
    return export_dir


def export_config(export_format: str, task: str, model: tf.keras.Model, image_size: Sequence[int],
                  table: ClassTable, fields: Mapping, extra_config: Optional[Mapping] = None) -> Dict:
    """``config.json`` of an export: the common header, then ``fields``, then ``extra_config``
    (later keys win)."""
    h, w = image_size
    return {
        "format": export_format,
        "version": 1,
        "task": task,
        "model_name": model.name,
        "image_size": [h, w],
        "num_classes": table.num_classes,
        "class_names": table.names,
        **dict(fields),
        **dict(extra_config or {}),
    }


def write_export(module: tf.Module, export_dir: str, table: ClassTable, config: Mapping) -> None:
    """Save ``module`` (with ``serve`` and ``serve_bytes`` as the ``serving_default`` and
    ``serving_bytes`` signatures), ``classes.json`` and ``config.json`` into ``export_dir``,
    built next to it and renamed into place."""
    with atomic_directory(export_dir, overwrite=True) as tmp:
        tf.saved_model.save(
            module,
            tmp,
            signatures={
                "serving_default": module.serve.get_concrete_function(),
                "serving_bytes": module.serve_bytes.get_concrete_function(),
            },
        )
        table.save(os.path.join(tmp, "classes.json"))
        atomic_write_text(os.path.join(tmp, CONFIG_FILE), json.dumps(config, indent=1))


class LoadedExport:
    """Base of the loaded exports: reads and checks ``config.json`` (its ``format`` must be the
    subclass's ``export_format``), loads ``classes.json`` and the SavedModel.

    Sets ``export_dir``, ``config``, ``class_table``, ``image_size`` and ``_module``; errors
    name the export as a ``kind`` export (e.g. ``"segmenter"``).
    """

    kind = ""
    export_format = ""

    def __init__(self, export_dir: str):
        from synthseg_tf.errors import ModelLoadError
        from synthseg_tf.models.loading import load_saved_model, require_saved_model_dir

        export_dir = os.fspath(export_dir)
        what = f"{self.kind} export"
        hint = f", {CONFIG_FILE} and classes.json (the model/ folder a `synthseg` training writes)"
        require_saved_model_dir(export_dir, what, hint)
        try:  # the export may be remote (gs://...): read through synthseg_tf.storage
            self.config = json.loads(storage.read_text(storage.join(export_dir, CONFIG_FILE)))
            if not isinstance(self.config, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{export_dir}: not a {what} (unreadable {CONFIG_FILE}: {e})") from e
        fmt = self.export_format
        if self.config.get("format") != fmt:
            raise ModelLoadError(f"{export_dir}: not a {what}: {CONFIG_FILE} says format "
                                 f"{self.config.get('format')!r}, not {fmt!r}")
        self.export_dir = export_dir
        try:
            self.class_table = ClassTable.load(export_dir)
            self.image_size = tuple(int(s) for s in self.config["image_size"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"{export_dir}: a damaged {what} ({e})") from e
        self._module = load_saved_model(export_dir, what)
