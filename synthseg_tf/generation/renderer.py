"""A trained generator, loaded from a ``gan train`` run folder or an exported SavedModel.

Both give the same call: ``render(label_maps uint8 [B,H,W], labels int [B] | None) -> uint8
[B,H,W,3]``; a generator trained with a reference image (``style_dim`` > 0, run folders only) also
takes ``references`` uint8 ``[B,H,W,3]``. Rendering is deterministic (dropout off), so a label map,
class id (and reference) fix the image.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
from typing import Dict, Optional

import numpy as np

from synthseg_tf import storage
from synthseg_tf.data.classes import ClassTable


def directory_fingerprint(path: str) -> str:
    """sha256 over the names and bytes of every file under ``path`` (first 16 hex digits; local or
    remote, e.g. ``gs://``)."""
    h = hashlib.sha256()
    if storage.is_remote(path):
        for root, dirs, files in storage.walk(path):
            dirs.sort()
            for f in sorted(files):
                p = storage.join(root, f)
                h.update(storage.relpath(p, path).encode())
                h.update(storage.read_bytes(p))
        return h.hexdigest()[:16]
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _model_dir(path: str):
    """``(kind, model folder)`` of a run folder or an export; FileNotFoundError for anything else."""
    if storage.isfile(storage.join(path, "saved_model.pb")):
        return "export", path
    if storage.isdir(storage.join(path, "generator")):
        return "run", storage.join(path, "generator")
    raise FileNotFoundError(f"{path}: not a generator (expected a `synthseg gan train` run folder with "
                            "generator/ or an exported SavedModel with saved_model.pb)")


_LOADED: Dict[str, "Renderer"] = {}
# Free the loaded generator while TensorFlow is still intact: left to the interpreter's final
# teardown, its traced functions' destructors run after TensorFlow's modules are gone and print
# "Exception ignored in: AtomicFunction.__del__ ... TypeError" at the end of a successful run.
atexit.register(_LOADED.clear)


class GeneratorInfo:
    """What a generation driver needs to know of a generator without loading its model: ``kind``,
    ``config`` (with older runs' defaults filled in), ``classes``, ``fingerprint``,
    ``conditional``, ``num_labels`` and ``image_size``, from its files alone. The workers load
    the model (:func:`load_renderer`); a driver that never renders needs no TensorFlow model."""

    def __init__(self, path: str):
        self.path = storage.abspath(path)
        try:
            self.kind, model_dir = _model_dir(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: not a generator (expected a `synthseg gan train` run folder with "
                                    "generator/ or an exported SavedModel with saved_model.pb)") from None
        self.config: Dict = _read_json(storage.join(self.path, "config.json"))
        if self.config:
            from synthseg_tf.training.gan import run_settings

            self.config = run_settings(self.config)  # what older runs lack, as they used it (upsample, ...)
        cj = storage.join(self.path, "classes.json")
        self.classes: Optional[ClassTable] = ClassTable.load(cj) if storage.isfile(cj) else None
        self.model_dir = model_dir
        self.fingerprint = directory_fingerprint(model_dir)
        size = self.config.get("image_size")
        self.image_size = tuple(size) if size else None
        self.num_labels = self.config.get("num_labels")
        self._conditional = bool(self.num_labels)
        self.reference_conditioned = bool(self.config.get("style_dim"))

    @property
    def conditional(self) -> bool:
        return self._conditional


def describe_generator(path: str):
    """A :class:`GeneratorInfo` when the generator's ``config.json`` says whether it is class-conditional
    (``num_labels``), else the loaded :class:`Renderer` (which can tell from the model)."""
    info = GeneratorInfo(path)
    return info if "num_labels" in info.config else load_renderer(path)


def load_renderer(path: str) -> "Renderer":
    """A :class:`Renderer` for ``path``, reused within this process while its files are unchanged
    (same weights fingerprint and settings): a generation run's waves, and its resumes in one
    process, load and trace the generator once instead of once per wave."""
    key = storage.abspath(path)
    kind, model_dir = _model_dir(key)
    stamp = (directory_fingerprint(model_dir),
             tuple(_file_digest(storage.join(key, f)) for f in ("config.json", "classes.json")))
    r = _LOADED.get(key)
    if r is None or r._stamp != stamp:
        _LOADED.clear()  # one generator at a time: the previous one's memory is freed
        r = Renderer(path)
        r._stamp = stamp
        _LOADED[key] = r
    return r


def _file_digest(path: str) -> Optional[str]:
    if not storage.isfile(path):
        return None
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


class Renderer(GeneratorInfo):
    """Label maps -> photos with a trained pix2pix generator.

    A run folder's ``generator/`` holds the EMA weights when the run used ``ema_decay``, and the
    SavedModel carries its own architecture (``upsample``, ``label_conditioning``), so old and
    new runs render as trained. ``config`` is the run's ``config.json`` with the settings older
    runs lack filled in (:func:`synthseg_tf.training.gan.run_settings`).
    """

    def __init__(self, path: str):
        import tensorflow as tf

        super().__init__(path)  # path, kind, config, classes, fingerprint from the files
        model_dir = self.model_dir
        self.fused = False  # whether rendering runs the fused-upsampling twin (run folders; exports carry it)
        if self.kind == "export":
            loaded = tf.saved_model.load(model_dir)
            self._fn = loaded.signatures["serving_default"]
            self._loaded = loaded
            self._conditional = "class_id" in self._fn.structured_input_signature[1]
        else:
            import tensorflow_addons  # noqa: F401  (registers InstanceNormalization for loading)

            from synthseg_tf.models.loading import load_keras_model
            from synthseg_tf.models.pix2pix import fused_generator  # (also registers the custom layers)

            self._model = load_keras_model(model_dir, what="pix2pix generator (Keras SavedModel)")  # safe mode
            names = list(self._model.input_names)
            self._conditional = "label" in names or (len(names) > 1 and "reference" not in names)
            self.reference_conditioned = "reference" in names
            # the same weights with each (nearest 2x -> 3x3 conv) pair as one transposed conv: the
            # same function (to float rounding: at most 1 grey level) in fewer multiply-adds
            fast = fused_generator(self._model)
            self.fused = fast is not None
            net = fast if fast is not None else self._model

            known = set(names) <= {"mask", "label", "reference"}

            def call(m, l=None, r=None):  # positional, in the generator's input order (the twin's is the same)
                given = {"mask": m, "label": l, "reference": r}
                args = [given[n] for n in names] if known else [m, l][:len(names)]
                return net(args if len(args) > 1 else args[0], training=False)

            self._fn = tf.function(call)
        self.num_labels = self.config.get("num_labels") if self._conditional else None  # (from the model)

    def render(self, label_maps: np.ndarray, labels: Optional[np.ndarray] = None,
               references: Optional[np.ndarray] = None) -> np.ndarray:
        import tensorflow as tf

        maps = np.asarray(label_maps, dtype=np.uint8)
        if maps.ndim == 2:
            maps = maps[None]
        if self.image_size and maps.shape[1:3] != tuple(self.image_size):
            raise ValueError(f"label maps are {maps.shape[1]}x{maps.shape[2]} but the generator was trained at "
                             f"{self.image_size[0]}x{self.image_size[1]}")
        if self._conditional:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass a class id per label map")
            lab = tf.constant(np.asarray(labels, dtype=np.int32).reshape(-1))
        ref = None
        if self.reference_conditioned:
            if references is None:
                raise ValueError("this generator was trained with a reference image (style_dim > 0): pass one real "
                                 "image per label map (references uint8 [B,H,W,3])")
            r = np.asarray(references)
            if r.shape != maps.shape + (3,):
                raise ValueError(f"references must be uint8 [B,H,W,3] matching the label maps {maps.shape}, "
                                 f"got {r.shape}")
            ref = tf.constant(r.astype(np.float32) / 255.0)
        elif references is not None:
            raise ValueError("this generator takes no reference image")
        if self.kind == "export":
            kw = {"label_map": tf.constant(maps)}
            if self._conditional:
                kw["class_id"] = lab
            return self._fn(**kw)["image"].numpy()
        out = self._fn(tf.constant(maps), lab if self._conditional else None, ref)
        return np.clip(np.round((out.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _read_json(path: str) -> Dict:
    if not storage.isfile(path):
        return {}
    return json.loads(storage.read_text(path))
