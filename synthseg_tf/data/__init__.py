"""The data layer: dataset specs, validation, TFRecords and ``tf.data`` pipelines.

The TensorFlow-dependent parts (``make_dataset``, TFRecord writing) import TensorFlow lazily,
so listing or validating a dataset stays fast.
"""
from synthseg_tf.data.classes import CLASS_TABLE_FILE, IGNORE_ID, ClassTable
from synthseg_tf.data.dataset import CLASSIFICATION, SEGMENTATION, DataOptions, Dataset, Sample
from synthseg_tf.data.io import DataError, read_image, read_mask_raw
from synthseg_tf.data.layouts import KINDS, SpecError, cityscapes_table, load, parse_spec
from synthseg_tf.data.validate import ValidationReport, validate


def make_dataset(*args, **kwargs):
    """See :func:`synthseg_tf.data.tfdata.make_dataset`."""
    from synthseg_tf.data.tfdata import make_dataset as _make

    return _make(*args, **kwargs)


def write_tfrecords(*args, **kwargs):
    """See :func:`synthseg_tf.data.tfrecord.write_tfrecords`."""
    from synthseg_tf.data.tfrecord import write_tfrecords as _write

    return _write(*args, **kwargs)


__all__ = ["ClassTable", "IGNORE_ID", "CLASS_TABLE_FILE", "Dataset", "DataOptions", "Sample", "SEGMENTATION",
           "CLASSIFICATION", "DataError", "SpecError", "KINDS", "load", "parse_spec", "validate", "ValidationReport",
           "make_dataset", "write_tfrecords", "read_image", "read_mask_raw", "cityscapes_table"]
