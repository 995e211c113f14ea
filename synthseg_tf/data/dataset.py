"""The in-memory description of a dataset: samples (file paths), task and class table."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from synthseg_tf.data import artefacts as _art
from synthseg_tf.data.classes import IGNORE_ID, ClassTable
from synthseg_tf.data.io import DataError, is_jpeg_file, read_image, read_mask_raw

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


SNAP_MODES = ("nearest", "void", "none")

JPEG_MASK_PROBLEM = ("JPEG mask refused: lossy compression adds values that are no class along every edge "
                     "(each would become a class or an error); save the masks as PNG, or pass ?jpeg_masks=1 "
                     "to read them anyway (their noise values are then snapped to the nearest class)")


@dataclass(frozen=True)
class DataOptions:
    """How files are read (spec options; see :mod:`synthseg_tf.data.layouts`).

    ``max_pixels``: per-image pixel limit (None: ``$SYNTHSEG_MAX_PIXELS`` or the default);
    ``snap``: what to do with mask values that are probable artefacts (None: report them,
    ``nearest``/``void``: fix them, ``none``: keep every value as a class); ``min_share``: the
    pixel share under which a value is an artefact; ``jpeg_masks``: read JPEG masks;
    ``follow_links``: allow symbolic links that point out of the dataset folder.
    """

    max_pixels: Optional[int] = None
    snap: Optional[str] = None
    min_share: float = _art.DEFAULT_MIN_SHARE
    jpeg_masks: bool = False
    follow_links: bool = False

    @property
    def fixes_artefacts(self) -> bool:
        return self.snap in ("nearest", "void")


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
    options: DataOptions = field(default_factory=DataOptions)
    #: raw mask values (ints, or ``(r, g, b)`` tuples) found to be probable artefacts -> why
    artefacts: Dict = field(default_factory=dict)
    #: the same values -> the first files holding them
    artefact_files: Dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def splits(self) -> List[str]:
        return sorted({s.split for s in self.samples if s.split})

    def source_ids(self) -> List[str]:
        """The sorted ``source_id`` s of the samples: what a model or generator built from this
        set records, and what the experiment protocol checks it against."""
        return sorted(s.source_id for s in self.samples)

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
        return read_image(sample.image, self.options.max_pixels)

    def read_mask(self, sample: Sample) -> Tuple[np.ndarray, str]:
        """Class ids (uint8 ``HxW``, void = 255) and a conversion note; errors name the file.

        Values outside the class table are an error, except probable artefacts when the spec
        asks to fix them (``?snap=nearest|void``, implied by ``?min_share=`` and ``?jpeg_masks=1``).
        """
        if sample.mask is None:
            raise DataError(sample.image, "has no mask")
        jpeg = is_jpeg_file(sample.mask)
        if jpeg and not self.options.jpeg_masks and self.mask_reader is None:
            raise DataError(sample.mask, JPEG_MASK_PROBLEM)
        if self.mask_reader is not None:
            raw, note = self.mask_reader(sample.mask)
        else:
            raw, note = read_mask_raw(sample.mask, self.options.max_pixels)
        ids = self.classes.map_values(raw)
        bad = ids < 0
        if not bad.any():
            return ids.astype(np.uint8), note
        codes = _art.codes_of(raw)
        rgb = raw.ndim == 3
        art_codes = {_art.code_of(v) if not (rgb and isinstance(v, int)) else _art.gray_to_rgb_code(v)
                     for v in self.artefacts}
        bad_codes = np.unique(codes[bad])
        if self.options.fixes_artefacts and art_codes:
            fixable = np.isin(bad_codes, np.fromiter(art_codes, dtype=np.int64))
            if fixable.all():
                fix = bad & np.isin(codes, bad_codes)
                ids = _art.snap(ids, raw, fix, self.classes, mode=self.options.snap)
                what = "to the neighbouring class" if self.options.snap == "nearest" else "to void"
                snapped = f"snapped probable mask artefacts {what} (?snap={self.options.snap})"
                return ids.astype(np.uint8), (note + "; " if note else "") + snapped
            bad_codes = bad_codes[~fixable]
        shown = ", ".join(str(_art.value_of(int(c), rgb)) for c in bad_codes[:8])
        more = f" (+{len(bad_codes) - 8} more)" if len(bad_codes) > 8 else ""
        problem = f"mask values outside the class table: {shown}{more}"
        known_art = [c for c in bad_codes.tolist() if c in art_codes]
        if known_art:
            why = {_art.value_of(c, rgb): self.artefacts.get(_art.value_of(c, rgb), "") for c in known_art}
            problem += f"; probable artefacts, not classes: {_art.describe(why, limit=3)}; {_art.SHORT_HINT}"
        else:
            st = _art.ValueStats.of_mask(raw)
            local = _art.find_artefacts(st, min_share=0, candidates=bad_codes.tolist())
            if local:
                why = {_art.value_of(c, rgb): r for c, r in local.items()}
                problem += f"; in this mask they look like artefacts: {_art.describe(why, limit=3)}; {_art.SHORT_HINT}"
        raise DataError(sample.mask, problem)

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
