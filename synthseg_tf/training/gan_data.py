"""Input pipelines for GAN training from any dataset spec (label maps or classification data).

Which samples the GAN sees (a leak fix: the GAN must never train or monitor on the val/test
split that experiments report on):

- :func:`gan_train_part` picks the training part of a full dataset: all samples when the spec
  has ``split=`` (the user chose them); else ``ds.train_val()[0]``, exactly the samples the
  experiments train on: the ``train`` split of a layout with train and val (CamVid), the
  train-split holdout of a layout with train but no val (ISIC), the deterministic hashed
  holdout of data without split labels (demo data), whose val part experiments validate on and
  so must stay unseen too. When there are too few samples to hold any out, all of the train
  split (or all samples, without split labels).
- ``--fraction F --subset-seed S`` train on ``train_part.fraction(F, seed=S)``, the subset rule of
  :meth:`Dataset.fraction` (the real subset an experiment with the same fraction/seed uses).
- Monitoring (validation losses, sample grids) uses up to ``monitor`` samples of the training
  part that the GAN does *not* train on: samples of the training part outside the subset when
  there are any, else samples held out of the subset when it has at least ``5 * monitor``
  (at most a fifth is lost), else none. Never the val/test split.
"""
from __future__ import annotations

import hashlib
from typing import Dict, List, NamedTuple, Optional

from synthseg_tf.data import SEGMENTATION, ClassTable, Dataset, make_dataset
from synthseg_tf.data.conditioning import conditioning_classes, with_conditioning_masks


class GanData(NamedTuple):
    train: object  # repeating tf.data.Dataset of global batches
    val: Optional[object]  # monitoring batches (repeating, unshuffled), or None
    classes: ClassTable  # classes of the conditioning maps
    num_labels: Optional[int]  # image classes for class-conditional training
    conditioning: str  # labelmap | edges | class
    train_size: int
    train_samples: Optional[Dataset] = None  # exactly the samples `train` reads
    monitor_samples: Optional[Dataset] = None  # the samples `val` reads (held out of training)

    @property
    def train_source_ids(self) -> List[str]:
        """Sorted ``source_id`` s of the training samples."""
        return sorted(s.source_id for s in self.train_samples.samples) if self.train_samples is not None else []

    @property
    def monitor_source_ids(self) -> List[str]:
        """Sorted ``source_id`` s of the monitoring samples (empty without monitoring)."""
        return sorted(s.source_id for s in self.monitor_samples.samples) if self.monitor_samples is not None else []

    def provenance(self) -> Dict[str, List[str]]:
        """``{"train_source_ids": [...], "monitor_source_ids": [...]}`` for ``train_gan(extra_config=...)``."""
        return {"train_source_ids": self.train_source_ids, "monitor_source_ids": self.monitor_source_ids}


def _spec_split(spec: str) -> Optional[str]:
    from synthseg_tf.data.layouts import parse_spec

    try:
        return parse_spec(spec)[2].get("split") or None
    except ValueError:
        return None


def gan_train_part(ds: Dataset) -> Dataset:
    """The part of a full dataset a GAN may train on (see the module docstring for the rule)."""
    if _spec_split(ds.spec):
        return ds
    splits = ds.splits
    if len(splits) > 1 and "train" not in splits:
        raise ValueError(f"{ds.spec}: no 'train' split to train the GAN on (splits: {', '.join(splits)}); "
                         "add split=NAME to the spec to train on one split")
    try:
        return ds.train_val()[0]
    except ValueError:  # too few samples to hold any out: nothing for experiments to validate on either
        return ds.subset("train") if "train" in splits else ds


def _hash_order(ds: Dataset) -> List[int]:
    """Sample indices ordered by a hash of their ``source_id`` (a deterministic, listing-independent order)."""
    key = [hashlib.sha1(f"gan-monitor:{s.source_id}".encode("utf-8")).hexdigest() for s in ds.samples]
    return sorted(range(len(ds.samples)), key=lambda i: (key[i], i))


def split_monitor(train: Dataset, pool: Optional[Dataset], monitor: int):
    """``(training samples, monitoring samples or None)``: the rule of the module docstring.

    ``train``: the samples chosen for training; ``pool``: the training part they were drawn from
    (``None``: just ``train``). Samples of ``pool`` outside ``train`` are preferred as monitors;
    otherwise ``monitor`` samples are held out of ``train`` when it has at least ``5 * monitor``.
    """
    if monitor < 0:
        raise ValueError(f"monitor must be >= 0, got {monitor}")
    if monitor == 0:
        return train, None
    chosen = {s.source_id for s in train.samples}
    if pool is not None:
        others = pool.select([i for i, s in enumerate(pool.samples) if s.source_id not in chosen])
        if len(others):
            return train, others.select(sorted(_hash_order(others)[:monitor]))
    if len(train) >= 5 * monitor:
        order = _hash_order(train)
        held = set(order[:monitor])
        return (train.select([i for i in range(len(train)) if i not in held]), train.select(sorted(held)))
    return train, None


def gan_datasets(ds: Dataset, image_size, batch_size: int, seed: int = 0, conditioning: str = "auto",
                 val: bool = True, fraction: Optional[float] = None, subset_seed: int = 0,
                 monitor: int = 4) -> GanData:
    """Training (and monitoring) pipelines of a GAN on ``ds``.

    Segmentation data conditions on its label maps; classification data on Canny edge maps
    (default) or on the class alone, plus the class id.

    ``val=True``: ``ds`` is a full dataset; the GAN trains on :func:`gan_train_part` ``(ds)``,
    or its ``fraction(fraction, seed=subset_seed)`` subset, and monitors up to ``monitor``
    training-part samples it does not train on (see :func:`split_monitor`). ``val=False``: ``ds``
    is exactly the training set (already split/subsetted by the caller; ``fraction`` still
    applies) and there is no monitoring. ``GanData.train_samples``/``monitor_samples`` and
    :meth:`GanData.provenance` tell which samples were used.
    """
    if ds.task == SEGMENTATION:
        if conditioning not in ("auto", "labelmap"):
            raise ValueError(f"{ds.spec} has label maps: conditioning must be 'labelmap'")
        conditioning, table, num_labels, fn = "labelmap", ds.classes, None, None
    else:
        conditioning = "edges" if conditioning == "auto" else conditioning
        table, num_labels = conditioning_classes(conditioning), ds.num_classes
        fn = lambda d: with_conditioning_masks(d, conditioning)  # noqa: E731
    pool = gan_train_part(ds) if val else ds
    train = pool.fraction(fraction, seed=subset_seed) if fraction is not None else pool
    held = None
    if val:
        train, held = split_monitor(train, pool, monitor)
    if not len(train):
        raise ValueError(f"{ds.spec}: no samples to train the GAN on")
    common = dict(image_size=image_size, batch_size=batch_size, seed=seed, element_fn=fn, drop_remainder=True)
    train_ds = make_dataset(train, augment=True, repeat=True, **common)
    val_ds = make_dataset(held, augment=False, repeat=True, shuffle=False, **common) if held is not None else None
    return GanData(train_ds, val_ds, table, num_labels, conditioning, len(train), train, held)
