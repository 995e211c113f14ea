"""``synthseg data validate``: read every sample once and report what is wrong, file by file.

Besides unreadable, truncated, non-image and mismatched files, the report names mask values
that are probable interpolation or JPEG artefacts (:mod:`synthseg_tf.data.artefacts`): they are
never made classes, each mask holding them is a problem (exit 2) until the spec says what to
do with them (``?snap=nearest``, ``?snap=void``, ``?min_share=X`` or ``?snap=none``), and with
``snap`` the conversion is counted among the conversions.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from synthseg_tf.data.artefacts import FIX_HINT, describe
from synthseg_tf.data.classes import IGNORE_ID
from synthseg_tf.data.dataset import SEGMENTATION, Dataset, Sample
from synthseg_tf.data.io import DataError


@dataclass
class ValidationReport:
    dataset: Dataset
    checked: int = 0
    bad: List[Tuple[str, str]] = field(default_factory=list)  # (path, problem)
    conversions: Counter = field(default_factory=Counter)  # note -> count
    pixel_counts: Optional[np.ndarray] = None  # per class (segmentation)
    void_pixels: int = 0
    label_counts: Optional[np.ndarray] = None  # per class (classification)
    good_indices: List[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def artefacts(self) -> Dict:
        """Probable artefact mask values -> why (empty when the spec keeps every value, ``snap=none``)."""
        return dict(self.dataset.artefacts)

    def artefact_summary(self) -> str:
        """One paragraph on the artefact values: what they are, where, and the fix (or '' if none)."""
        ds = self.dataset
        if not ds.artefacts:
            return ""
        vals = describe(ds.artefacts, ds.artefact_files)
        if ds.options.fixes_artefacts:
            return f"artefacts {len(ds.artefacts)} mask value(s) snapped (?snap={ds.options.snap}): {vals}"
        return (f"artefacts {len(ds.artefacts)} mask value(s) look like interpolation artefacts and were not made "
                f"classes: {vals}. {FIX_HINT}")

    def good_dataset(self) -> Dataset:
        """The dataset without the samples that failed (what ``--skip-bad`` trains on)."""
        return self.dataset.select(self.good_indices)

    def to_dict(self) -> Dict:
        names = self.dataset.classes.names
        d = {"spec": self.dataset.spec, "task": self.dataset.task, "checked": self.checked,
             "good": len(self.good_indices), "bad": [{"path": p, "problem": m} for p, m in self.bad],
             "conversions": dict(self.conversions), "classes": names,
             "artefacts": [{"value": list(v) if isinstance(v, tuple) else v, "why": why,
                            "files": self.dataset.artefact_files.get(v, [])}
                           for v, why in self.dataset.artefacts.items()]}
        if self.pixel_counts is not None:
            total = max(1, int(self.pixel_counts.sum()))
            d["pixel_frequency"] = {n: float(c) / total for n, c in zip(names, self.pixel_counts)}
            d["void_pixels"] = self.void_pixels
        if self.label_counts is not None:
            d["label_counts"] = {n: int(c) for n, c in zip(names, self.label_counts)}
        return d

    def format(self) -> str:
        ds = self.dataset
        lines = [f"dataset   {ds.spec}", f"task      {ds.task}",
                 f"samples   {self.checked} checked, {len(self.good_indices)} good, {len(self.bad)} problems"]
        if ds.splits:
            per = Counter(ds.samples[i].split for i in self.good_indices)
            lines.append("splits    " + ", ".join(f"{sp} {per.get(sp, 0)}" for sp in ds.splits))
        for note, n in sorted(self.conversions.items()):
            lines.append(f"converted {n} file(s): {note}")
        if ds.artefacts:
            lines.append(self.artefact_summary())
        lines.append("")
        if self.pixel_counts is not None:
            total = max(1, int(self.pixel_counts.sum()))
            lines.append(f"{'id':>3}  {'class':<24} {'pixels':>12} {'share':>7}")
            for i, (n, c) in enumerate(zip(ds.classes.names, self.pixel_counts)):
                lines.append(f"{i:>3}  {n:<24} {int(c):>12} {100.0 * c / total:>6.2f}%")
            lines.append(f"{IGNORE_ID:>3}  {'(void, ignored)':<24} {self.void_pixels:>12}")
        elif self.label_counts is not None:
            lines.append(f"{'id':>3}  {'class':<24} {'images':>7}")
            for i, (n, c) in enumerate(zip(ds.classes.names, self.label_counts)):
                lines.append(f"{i:>3}  {n:<24} {int(c):>7}")
        return "\n".join(lines)


def _check(ds: Dataset, i: int, sample: Sample):
    """-> (index, problems, notes, per-class counts or None, void count)."""
    notes, problems = [], []
    try:
        image, note = ds.read_image(sample)
        notes.append(note)
        if image.shape[0] < 8 or image.shape[1] < 8:
            problems.append((sample.image, f"image is only {image.shape[1]}x{image.shape[0]} pixels"))
    except DataError as e:
        problems.append((e.path, e.problem))
        image = None
    except (ValueError, OSError, MemoryError) as e:  # anything else while reading: still name the file
        problems.append((sample.image, f"cannot read: {type(e).__name__}: {e}"))
        image = None
    if ds.task != SEGMENTATION:
        return i, problems, notes, None, 0
    try:
        mask, note = ds.read_mask(sample)
        notes.append(note)
    except DataError as e:
        problems.append((e.path, e.problem))
        return i, problems, notes, None, 0
    except (ValueError, OSError, MemoryError) as e:
        problems.append((sample.mask, f"cannot read: {type(e).__name__}: {e}"))
        return i, problems, notes, None, 0
    if image is not None and mask.shape[:2] != image.shape[:2]:
        problems.append((sample.mask, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                                      f"{image.shape[1]}x{image.shape[0]} ({sample.image})"))
    counts = np.bincount(mask.ravel(), minlength=256)
    return i, problems, notes, counts[: ds.num_classes], int(counts[IGNORE_ID])


def validate(ds: Dataset, workers: Optional[int] = None) -> ValidationReport:
    """Read every sample (in parallel threads: decoding releases the GIL) and collect problems."""
    rep = ValidationReport(dataset=ds)
    rep.bad.extend(ds.problems)
    if ds.task == SEGMENTATION:
        rep.pixel_counts = np.zeros(ds.num_classes, dtype=np.int64)
    else:
        rep.label_counts = np.zeros(ds.num_classes, dtype=np.int64)
    workers = workers or min(16, 2 * (os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as ex:
        for i, problems, notes, counts, void in ex.map(lambda a: _check(ds, *a), enumerate(ds.samples)):
            rep.checked += 1
            for n in notes:
                if n:
                    rep.conversions[n] += 1
            if problems:
                rep.bad.extend(problems)
                continue
            rep.good_indices.append(i)
            if counts is not None:
                rep.pixel_counts += counts
                rep.void_pixels += void
            if rep.label_counts is not None:
                rep.label_counts[ds.samples[i].label] += 1
    return rep
