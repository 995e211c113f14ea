"""The in-memory description of a dataset: samples (file paths), task and class table."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from synthseg_tf.data.classes import IGNORE_ID, ClassTable
from synthseg_tf.data.io import DataError, read_image, read_mask_raw

SEGMENTATION = "segmentation"
CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Sample:
    """One example: a photo, its mask (segmentation) and/or its class label (classification)."""

    image: str
    mask: Optional[str] = None
    label: int = -1
    source_id: str = ""
    split: Optional[str] = None


@dataclass
class Dataset:
    """A dataset read from a spec string (see :func:`synthseg_tf.data.load`).

    ``problems`` lists ``(path, problem)`` pairs found while listing the files (e.g. an image
    without its mask); :func:`synthseg_tf.data.validate` adds the ones found by reading.
    """

    spec: str
    task: str
    samples: List[Sample]
    classes: ClassTable
    problems: List[Tuple[str, str]] = field(default_factory=list)
    mask_reader: Optional[Callable[[str], Tuple[np.ndarray, str]]] = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def splits(self) -> List[str]:
        return sorted({s.split for s in self.samples if s.split})

    # ------------------------------------------------------------------ selection
    def select(self, indices: Sequence[int]) -> "Dataset":
        return replace(self, samples=[self.samples[i] for i in indices])

    def subset(self, split: str) -> "Dataset":
        """Samples of one split (``train``/``val``/``test``); error if the layout has no such split."""
        picked = [s for s in self.samples if s.split == split]
        if not picked:
            have = ", ".join(self.splits) or "none"
            raise ValueError(f"{self.spec}: no samples in split {split!r} (splits: {have})")
        return replace(self, samples=picked)

    def train_val(self, val_fraction: float = 0.2) -> Tuple["Dataset", "Dataset"]:
        """``(train, val)`` for model selection; never touches a layout's test (or other) split.

        - The layout has ``train`` and ``val`` splits: exactly those two (``val_fraction`` unused).
        - It has ``train`` but no ``val`` (e.g. ISIC 2016: train + test): val is a holdout of
          the *train* samples only; ``test`` and any other split appear in neither part.
        - No split labels, or a single split that is not ``train`` (a spec restricted with
          ``split=val``, say, whose samples the caller chose to use): a holdout of all samples.
        - Several splits but no ``train`` (e.g. ``val`` + ``test``): ``ValueError``, since
          pooling them would train on an evaluation split.

        The holdout hashes each sample's ``source_id`` (a sample is in val when the hash falls
        below ``val_fraction``), so it does not change when files are added or the listing
        order differs.
        """
        splits = self.splits
        if "train" in splits and "val" in splits:
            return self.subset("train"), self.subset("val")
        if "train" in splits:
            pool = [i for i, s in enumerate(self.samples) if s.split == "train"]
        elif len(splits) > 1:
            raise ValueError(f"{self.spec}: the layout has splits {', '.join(splits)} but no 'train' split; "
                             "refusing to pool them into a train/val split (pick one with split=NAME)")
        else:
            pool = list(range(len(self.samples)))
        val_idx, train_idx = [], []
        for i in pool:
            h = int(hashlib.sha1(self.samples[i].source_id.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
            (val_idx if h < val_fraction else train_idx).append(i)
        if not val_idx or not train_idx:
            what = "train-split samples" if "train" in splits else "samples"
            raise ValueError(f"{self.spec}: {len(pool)} {what} are too few for a train/val split "
                             f"(val_fraction {val_fraction})")
        return self.select(train_idx), self.select(val_idx)

    def fraction(self, frac: float, seed: int = 0) -> "Dataset":
        """A random ``frac`` of the samples (at least one), deterministic for ``seed``."""
        if not 0 < frac <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {frac}")
        n = max(1, int(round(len(self.samples) * frac)))
        idx = np.sort(np.random.default_rng(seed).permutation(len(self.samples))[:n])
        return self.select(idx.tolist())

    # ------------------------------------------------------------------ reading
    def read_image(self, sample: Sample) -> Tuple[np.ndarray, str]:
        return read_image(sample.image)

    def read_mask(self, sample: Sample) -> Tuple[np.ndarray, str]:
        """Class ids (uint8 ``HxW``, void = 255) and a conversion note; errors name the file."""
        if sample.mask is None:
            raise DataError(sample.image, "has no mask")
        raw, note = (self.mask_reader or read_mask_raw)(sample.mask)
        ids = self.classes.map_values(raw)
        bad = ids < 0
        if bad.any():
            vals = np.unique(raw[bad] if raw.ndim == 2 else raw[bad].reshape(-1, 3), axis=0)
            shown = ", ".join(str(tuple(v) if np.ndim(v) else int(v)) for v in vals[:8])
            more = f" (+{len(vals) - 8} more)" if len(vals) > 8 else ""
            raise DataError(sample.mask, f"mask values outside the class table: {shown}{more}")
        return ids.astype(np.uint8), note

    def read(self, sample: Sample) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``(image uint8 HxWx3, mask ids uint8 HxW or None)``; raises DataError on any problem."""
        image, _ = self.read_image(sample)
        if self.task != SEGMENTATION:
            return image, None
        mask, _ = self.read_mask(sample)
        if mask.shape[:2] != image.shape[:2]:
            raise DataError(
                sample.mask,
                f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                f"{image.shape[1]}x{image.shape[0]} ({sample.image})",
            )
        return image, mask

    def describe(self) -> Dict:
        d = {"spec": self.spec, "task": self.task, "samples": len(self.samples), "classes": self.classes.names}
        if self.splits:
            d["splits"] = {sp: sum(1 for s in self.samples if s.split == sp) for sp in self.splits}
        return d


__all__ = ["Sample", "Dataset", "SEGMENTATION", "CLASSIFICATION", "IGNORE_ID"]
