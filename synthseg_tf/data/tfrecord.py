"""The TFRecord / ``tf.Example`` schema shared by real and synthetic data.

=====================  =======  ====================================================
feature                type     meaning
=====================  =======  ====================================================
``image/encoded``      bytes    PNG, RGB
``image/height``       int64
``image/width``        int64
``mask/encoded``       bytes    PNG, one channel of class ids (255 = void); empty
                                for classification data
``label``              int64    class id of the image (-1 when none)
``source_id``          bytes    where the sample came from (file stem, map index)
``synthetic``          int64    1 for generated samples
``provenance``         bytes    JSON: generator fingerprint, seed, source map, quality
=====================  =======  ====================================================

A TFRecord folder holds ``data-SSSSS-of-NNNNN.tfrecord`` shards, ``classes.json`` and
``dataset.json`` (spec, task, counts, skipped files).

The folder may be remote (``gs://...``, any filesystem ``tf.io.gfile`` knows): it is then written
through :func:`synthseg_tf.storage.atomic_directory`, whose files are moved into place one by one
with ``dataset.json`` last (a remote folder without ``dataset.json`` is incomplete).
"""
from __future__ import annotations

import glob
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional

import numpy as np

from synthseg_tf import storage
from synthseg_tf.data.classes import ClassTable
from synthseg_tf.data.dataset import SEGMENTATION, Dataset
from synthseg_tf.data.io import DataError, encode_png

SCHEMA_VERSION = 1
DATASET_FILE = "dataset.json"


def shard_name(i: int, n: int) -> str:
    return f"data-{i:05d}-of-{n:05d}.tfrecord"


def make_example(image: np.ndarray, mask: Optional[np.ndarray] = None, label: int = -1, source_id: str = "",
                 synthetic: bool = False, provenance: Optional[Dict] = None) -> bytes:
    """Serialize one sample to a ``tf.Example`` (bytes)."""
    import tensorflow as tf

    def b(v: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    feats = {
        "image/encoded": b(encode_png(image)),
        "image/height": i(image.shape[0]),
        "image/width": i(image.shape[1]),
        "mask/encoded": b(encode_png(mask) if mask is not None else b""),
        "label": i(label),
        "source_id": b(source_id.encode("utf-8")),
        "synthetic": i(1 if synthetic else 0),
        "provenance": b(json.dumps(provenance or {}, sort_keys=True).encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString(deterministic=True)  # map order fixed: same bytes every run


def write_tfrecords(ds: Dataset, out_dir: str, shards: int = 4, skip_bad: bool = False,
                    overwrite: bool = False) -> Dict:
    """Write ``ds`` as sharded TFRecords; sample ``i`` goes to shard ``i % shards``.

    The folder appears only when complete. A bad sample raises :class:`DataError` (nothing is
    written) unless ``skip_bad``, in which case it is listed under ``skipped`` in dataset.json.
    """
    import tensorflow as tf

    if shards < 1:
        raise ValueError("shards must be >= 1")
    skipped: List[Dict] = []
    counts = [0] * shards

    def encode(idx_sample):
        idx, s = idx_sample
        try:
            image, mask = ds.read(s)
        except DataError as e:
            return idx, None, e
        return idx, make_example(image, mask, label=s.label, source_id=s.source_id), None

    with storage.atomic_directory(out_dir, overwrite=overwrite, last=[DATASET_FILE]) as tmp:
        writers = [tf.io.TFRecordWriter(storage.join(tmp, shard_name(k, shards))) for k in range(shards)]
        try:
            written = 0
            with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 2))) as ex:
                for idx, data, err in ex.map(encode, enumerate(ds.samples)):
                    if err is not None:
                        if not skip_bad:
                            raise err
                        skipped.append({"path": err.path, "problem": err.problem})
                        continue
                    k = written % shards
                    writers[k].write(data)
                    counts[k] += 1
                    written += 1
        finally:
            for w in writers:
                w.close()
        meta = {"schema_version": SCHEMA_VERSION, "spec": ds.spec, "task": ds.task, "count": sum(counts),
                "shards": counts, "skipped": skipped, "splits": ds.splits}
        ds.classes.save(storage.join(tmp, "classes.json"))
        storage.atomic_write_text(storage.join(tmp, DATASET_FILE), json.dumps(meta, indent=1))
    return meta


def tfrecord_files(path: str) -> List[str]:
    """A TFRecord folder, a single file, or a glob -> sorted file list (error if none); local or remote."""
    if storage.is_remote(path):
        if storage.isdir(path):
            files = sorted(storage.glob(storage.join(path, "*.tfrecord"))
                           + storage.glob(storage.join(path, "*.tfrecord.gz")))
        else:
            files = sorted(storage.glob(path))
    elif os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "*.tfrecord")) + glob.glob(os.path.join(path, "*.tfrecord.gz")))
    else:
        files = sorted(glob.glob(path))
    if not files:
        raise FileNotFoundError(f"{path}: no TFRecord files found")
    return files


def read_metadata(path: str) -> Dict:
    """dataset.json of a TFRecord folder ({} when absent); local or remote."""
    p = storage.join(path if storage.isdir(path) else storage.dirname(path), DATASET_FILE)
    if not storage.isfile(p):
        return {}
    return json.loads(storage.read_text(p))


def read_class_table(path: str) -> Optional[ClassTable]:
    d = path if storage.isdir(path) else storage.dirname(path)
    p = storage.join(d, "classes.json")
    return ClassTable.load(p) if storage.isfile(p) else None


def feature_spec() -> Dict:
    import tensorflow as tf

    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "mask/encoded": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "source_id": tf.io.FixedLenFeature([], tf.string, default_value=b""),
        "synthetic": tf.io.FixedLenFeature([], tf.int64, default_value=0),
        "provenance": tf.io.FixedLenFeature([], tf.string, default_value=b"{}"),
    }


def iter_examples(path: str) -> Iterable[Dict]:
    """Decode every record of a TFRecord folder to numpy (for inspection and tests)."""
    import tensorflow as tf

    from synthseg_tf.data.io import decode_png

    for rec in tf.data.TFRecordDataset(tfrecord_files(path)):
        ex = tf.io.parse_single_example(rec, feature_spec())
        m = ex["mask/encoded"].numpy()
        yield {
            "image": decode_png(ex["image/encoded"].numpy()),
            "mask": decode_png(m) if m else None,
            "label": int(ex["label"]),
            "source_id": ex["source_id"].numpy().decode(),
            "synthetic": bool(ex["synthetic"]),
            "provenance": json.loads(ex["provenance"].numpy().decode() or "{}"),
        }


__all__ = ["make_example", "write_tfrecords", "tfrecord_files", "read_metadata", "read_class_table",
           "feature_spec", "iter_examples", "SEGMENTATION"]
