"""The honest-evaluation protocol every synthetic-data experiment follows.

One labelled budget
    At fraction ``f`` the experiment draws a *subset* of the training split
    (``train.fraction(f, seed=subset_seed)``). The subset is cut once more into a *fit* part and a
    *selection* part (:func:`carve_selection`, a hash of each ``source_id``, so it does not
    depend on listing order; or, with ``carve="blocks"``, whole runs of neighbouring ids,
    :func:`carve_selection_blocks`, for data cut from video). The GAN, the quality model, the
    label-map sampler's source maps and copy-paste bank, the copy-paste baseline and every
    downstream model train on the fit part and on nothing else.

Selection vs evaluation
    Keep-best, early stopping, filter thresholds and recipe choices read the selection part (or,
    when the user asks for it, another split that is not the evaluation split). The reported
    figures come from the *evaluation* split, which nothing else ever reads: no model trains on
    it, selects on it, or draws label maps from it.

Provenance
    Every synthetic set and generator used in a cell is checked before use
    (:func:`check_within`): a generator's ``train_source_ids`` and every ``source_ids`` entry of a
    synthetic set's ``manifest.jsonl`` must lie inside the fit part, and the quality model that
    filtered a synthetic set must have trained on fit images and been selected on selection images
    only (:func:`check_quality_provenance`). Anything else is refused with
    :class:`ProtocolError`, whether the experiment made it or the user passed it in.

Verdicts
    Per class and overall, :func:`verdict` turns the seed-paired deltas into "helps", "hurts" or
    "no evidence" (module constant :data:`VERDICT_RULE` says how).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

SELECTION_FRACTION = 0.2
MIN_EFFECT = 0.005  # 0.5 points: smaller mean deltas are "no evidence" even when every pair agrees
VERDICT_RULE = ("'helps' when at least 2 seed-paired deltas exist, every one is > 0 and their mean is at least "
                f"{100 * MIN_EFFECT:g} points; 'hurts' likewise with every delta < 0; otherwise 'no evidence'")


class ProtocolError(ValueError):
    """Data that breaks the protocol (e.g. a synthetic set built from images outside the subset)."""


def _unit_hash(text: str, salt: str = "") -> float:
    return int(hashlib.sha1((salt + text).encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF


def _carvable(subset, fraction: float) -> int:
    """The subset's size, after checking that ``fraction`` of it can be carved off."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"the selection fraction must be in (0, 1), got {fraction}")
    n = len(subset)
    if n < 2:
        raise ValueError(f"{subset.spec}: a subset of {n} sample(s) cannot be split into fit and selection parts")
    return n


def carve_selection(subset, fraction: float = SELECTION_FRACTION, salt: str = "selection"):
    """``(fit, selection)`` Datasets from ``subset``: a sample goes to selection when the hash of its
    ``source_id`` is below ``fraction``. Both parts get at least one sample (the lowest/highest
    hashes are moved when the rule leaves one empty); fewer than 2 samples is an error."""
    n = _carvable(subset, fraction)
    h = [_unit_hash(s.source_id, salt) for s in subset.samples]
    sel = [i for i in range(n) if h[i] < fraction]
    if not sel:
        sel = [min(range(n), key=h.__getitem__)]
    if len(sel) == n:
        sel.remove(max(sel, key=h.__getitem__))
    chosen = set(sel)
    fit = [i for i in range(n) if i not in chosen]
    return subset.select(fit), subset.select(sorted(sel))


CARVES = ("hash", "blocks")


def natural_key(source_id: str) -> Tuple:
    """Sort key that orders ``seq_9`` before ``seq_10``: video frames and numbered captures in order."""
    parts = re.split(r"([0-9]+)", source_id)  # odd positions are the runs of ASCII digits
    return tuple((0, int(t), "") if i % 2 else (1, 0, t) for i, t in enumerate(parts) if t)


def carve_selection_blocks(subset, fraction: float = SELECTION_FRACTION, salt: str = "selection",
                           block: Optional[int] = None):
    """``(fit, selection)`` like :func:`carve_selection`, but the selection part is made of whole
    *blocks* of neighbouring images: the subset's source ids in natural order (``0001TP_006690``,
    ``0001TP_006720``, ...; video frames, numbered captures) cut into runs of ``block`` images
    (default ``ceil(sqrt(s))`` for a selection of ``s = round(fraction * n)`` images), and whole
    runs picked by the hash of their first id until at least ``s`` images are selected (so at
    most one run over; a cut run would put its other frames, the nearest ones, in the fit part).

    For data cut from video (CamVid, Cityscapes sequences) a random carve puts selection frames a
    second from a fit frame, so selection rewards memorising the fit scenes; with blocks most
    selection images are further from every fit image, closer to how far a held-out clip is.
    """
    n = _carvable(subset, fraction)
    target = min(n - 1, max(1, int(round(float(fraction) * n))))
    size = int(block) if block is not None else math.ceil(math.sqrt(target))
    if size < 1:
        raise ValueError(f"the selection block size must be >= 1, got {block}")
    ids = [s.source_id for s in subset.samples]
    order = sorted(range(n), key=lambda i: (natural_key(ids[i]), ids[i]))  # "a1" / "a01": by text
    runs = [order[i:i + size] for i in range(0, n, size)]
    runs.sort(key=lambda r: _unit_hash(ids[r[0]], salt))
    sel: List[int] = []
    for r in runs:
        if len(sel) >= target:
            break
        sel.extend(r[:n - 1 - len(sel)])  # whole runs, but the fit part keeps at least one image
    chosen = set(sel)
    fit = [i for i in range(n) if i not in chosen]
    return subset.select(fit), subset.select(sorted(sel))


def check_carve(how: str) -> str:
    """``how`` when it names a selection carve (:data:`CARVES`), else ValueError."""
    if how not in CARVES:
        raise ValueError(f"the selection carve must be one of {', '.join(CARVES)}, got {how!r}")
    return how


def carve(subset, fraction: float = SELECTION_FRACTION, how: str = "hash"):
    """:func:`carve_selection` (``how="hash"``) or :func:`carve_selection_blocks` (``"blocks"``)."""
    if check_carve(how) == "hash":
        return carve_selection(subset, fraction)
    return carve_selection_blocks(subset, fraction)


def source_ids(ds) -> List[str]:
    return ds.source_ids()


def _shown(ids: Sequence[str]) -> str:
    """The first five of ``ids`` and how many more, for an error message."""
    return ", ".join(ids[:5]) + (f" (+{len(ids) - 5} more)" if len(ids) > 5 else "")


def check_within(used: Iterable[str], allowed: Iterable[str], what: str) -> None:
    """Refuse ``what`` when it was built from source ids outside ``allowed`` (or records none)."""
    used, allowed = set(used), set(allowed)
    if not used:
        raise ProtocolError(f"{what} records no source ids, so it cannot be shown to use only the experiment's "
                            "training subset; rebuild it with this version of synthseg-tf")
    outside = sorted(used - allowed)
    if outside:
        shown = _shown(outside)
        raise ProtocolError(f"{what} was built from {len(outside)} image(s)/label map(s) outside the experiment's "
                            f"training subset ({len(allowed)} images): {shown}. Under the protocol the generator, "
                            "filters, label-map sources and models may only see that subset; let the experiment "
                            "train its own generator (omit --generator/--synthetic) or build one on the subset")


def checked(path: str, kind: str, allowed: Iterable[str], selection: Optional[Iterable[str]] = None) -> str:
    """``path`` (a ``"generator"``, ``"synthetic set"`` or ``"copy-paste set"``) after
    :func:`check_within` of its provenance; for a synthetic set given ``selection`` (the ids the
    experiment selects on), also :func:`check_quality_provenance` of the model that filtered it."""
    reader = generator_source_ids if kind == "generator" else synthetic_source_ids
    allowed = set(allowed)
    check_within(reader(path), allowed, f"{kind} {path}")
    if kind == "synthetic set" and selection is not None:
        check_quality_provenance(path, allowed, selection)
    return path


def check_quality_provenance(folder: str, allowed: Iterable[str], selection: Iterable[str]) -> Optional[Dict]:
    """Refuse a synthetic set whose quality model (the segmenter or classifier that filtered it, or
    whose losses drove the pixel filter and hardness) trained on images outside ``allowed`` or was
    selected (keep-best, early stopping, the calibrated thresholds' images) on images outside
    ``selection``. Under the protocol the filter is one more model of the subset: a filter trained
    on the whole train split, or kept-best on the evaluation split, would carry those images' labels
    into the set. The model's ids come from ``generation.json`` (``quality_provenance``, recorded
    when the set was made) or else from the export's ``config.json``. A set made without a quality
    model passes (None); one whose model records no ids (an older version, or trained from
    TFRecords) is refused: what it saw cannot be shown. Returns the checked provenance."""
    from synthseg_tf.generation.filtering import quality_model_provenance
    from synthseg_tf.generation.pipeline import read_generation_state

    state = read_generation_state(folder) or {}
    model = (state.get("identity") or {}).get("quality_model")
    if not model:
        return None
    prov = state.get("quality_provenance") or quality_model_provenance(model)
    what = f"the quality model {model} that filtered synthetic set {folder}"
    if not prov or prov.get("train") is None or prov.get("selection") is None:
        raise ProtocolError(f"{what} records no source ids for its training and selection images (made by an older "
                            "version, or trained from TFRecords), so it cannot be shown to use only the experiment's "
                            "subset; let the experiment build the set (omit --synthetic) or train the filter with "
                            "this version on the subset's images and generate again")
    check_within(prov["train"], allowed, what)
    outside = sorted(set(prov["selection"]) - set(selection))
    if outside:
        shown = _shown(outside)
        raise ProtocolError(f"{what} was selected (keep-best, early stopping) on {len(outside)} image(s) outside the "
                            f"experiment's selection split: {shown}. Under the protocol only the selection split may "
                            "choose; a filter selected on the evaluation split leaks it into the synthetic set")
    return prov


def generator_source_ids(generator_dir: str) -> Set[str]:
    """``train_source_ids`` from a GAN run folder or an exported generator (``config.json``)."""
    for name in ("config.json", os.path.join("assets", "config.json")):
        path = os.path.join(generator_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            return set(cfg.get("train_source_ids") or [])
    raise ProtocolError(f"{generator_dir}: no config.json; is it a `synthseg gan train` run or a generator export?")


def synthetic_source_ids(folder: str) -> Set[str]:
    """Every source id a synthetic set was built from: each ``manifest.jsonl`` entry's
    ``source_ids`` (base map, cut-mix partner, copy-paste donors) and, for generated sets, the real
    pairs its ``loss_stats.json`` (pixel filter, hardness) was computed on."""
    from synthseg_tf.generation.pipeline import manifest_source_ids

    try:
        return set(manifest_source_ids(folder))
    except FileNotFoundError:
        raise ProtocolError(f"{folder}: no manifest.jsonl, so its provenance cannot be checked") from None
    except ValueError as e:
        raise ProtocolError(str(e)) from None


def verdict(values: Sequence[float], min_effect: float = MIN_EFFECT) -> str:
    """"helps" / "hurts" / "no evidence" from seed-paired deltas (see :data:`VERDICT_RULE`)."""
    vals = [float(v) for v in values if v is not None]
    if len(vals) < 2:
        return "no evidence"
    mean = sum(vals) / len(vals)
    if all(v > 0 for v in vals) and mean >= min_effect:
        return "helps"
    if all(v < 0 for v in vals) and mean <= -min_effect:
        return "hurts"
    return "no evidence"


def describe(subset_fraction: float, subset_seed, n_subset: int, n_fit: int, n_sel: int, selection: str,
             evaluation: str, generator: Optional[str]) -> Dict:
    """The protocol record stored with every experiment cell and printed by the CLI."""
    return {
        "subset": {"fraction": subset_fraction, "seed": subset_seed, "images": n_subset},
        "fit_images": n_fit, "selection_images": n_sel,
        "selection": selection, "evaluation": evaluation,
        "generator_trained_on": generator,
        "rule": "the GAN, quality filter, label-map sources, copy-paste bank and every model use only the fit "
                "images; keep-best/early stopping/thresholds read the selection images; figures come from the "
                "evaluation split, which nothing else reads",
    }


__all__ = ["ProtocolError", "carve_selection", "carve_selection_blocks", "carve", "check_carve", "CARVES",
           "natural_key", "check_within", "checked", "check_quality_provenance", "generator_source_ids", "synthetic_source_ids",
           "source_ids", "verdict", "VERDICT_RULE", "SELECTION_FRACTION", "describe", "split_for_protocol"]


def split_for_protocol(ds, evaluation=None) -> Tuple[object, object, str]:
    """``(train, evaluation, description)``: the training split subsets are drawn from and the
    evaluation data.

    ``evaluation=None``: the dataset's own val split (or, without split labels, the hash holdout
    of ``Dataset.train_val``), and the rest of the training split trains. Given a spec/Dataset,
    that is the evaluation data and the training split is ``train`` when the layout has one,
    else everything; an evaluation set that shares source ids with the training split is refused.
    """
    from synthseg_tf.data.layouts import load

    if evaluation is None:
        train, ev = ds.train_val()
        return train, ev, f"{ds.spec}: " + ("val split" if "val" in ds.splits else "hash holdout of Dataset.train_val")
    ev = load(evaluation) if isinstance(evaluation, str) else evaluation
    train = ds.subset("train") if "train" in ds.splits else ds
    overlap = set(source_ids(train)) & set(source_ids(ev)) if getattr(ev, "samples", None) is not None else set()
    if overlap:
        raise ProtocolError(f"the evaluation data {ev.spec} shares {len(overlap)} images with the training split of "
                            f"{ds.spec} (e.g. {sorted(overlap)[0]}); evaluate on a split nothing trains on")
    return train, ev, getattr(ev, "spec", str(evaluation))
