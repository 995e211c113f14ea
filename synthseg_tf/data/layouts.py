"""Dataset spec strings and the on-disk layouts they name.

A spec is ``KIND[:ARG[:ARG]][?key=value&...]``:

===============================  ============================================================
``pairs:IMAGES_DIR:MASKS_DIR``   images and masks matched by file stem (``a.jpg`` <-> ``a.png``
                                 or ``a_mask.png``). Mask values are remapped to ids 0..K-1;
                                 options ``classes=FILE`` (a classes.json), ``palette=FILE``
                                 (colour-coded masks), ``void=V[,V]`` (values to ignore).
``camvid:DIR``                   ``train/ trainannot/ val/ valannot/ [test/ testannot/]``,
                                 void id 11 ignored.
``cityscapes:DIR``               ``leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` with
                                 ``gtFine/SPLIT/CITY/*_gtFine_labelIds.png``; ``classes=19``
                                 (train ids, default) or ``classes=30``.
``isic2016:DIR``                 ``ISBI2016_ISIC_Part1_{Training,Test}_Data/*.jpg`` with
                                 ``..._GroundTruth/*_Segmentation.png`` (binary).
``classfolders:DIR``             one sub-folder per class (optionally under train/val/test).
``demo-scenes`` / ``demo-classes``  the built-in procedural datasets (``n=``, ``size=``,
                                 ``seed=``), written once to a cache folder.
===============================  ============================================================

Every spec also takes ``split=train|val|test`` to keep one split.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl

import numpy as np

from synthseg_tf.data.classes import CLASS_TABLE_FILE, ClassTable
from synthseg_tf.data.dataset import CLASSIFICATION, SEGMENTATION, Dataset, Sample
from synthseg_tf.data.io import DataError, is_image_file, read_mask_raw

KINDS = ("pairs", "camvid", "cityscapes", "isic2016", "classfolders", "demo-scenes", "demo-classes")
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_segmentation", "_seg", "_annot", "_labelids")

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                  "car", "pedestrian", "bicyclist"]
CAMVID_VOID = 11


class SpecError(ValueError):
    """A dataset spec that cannot be understood or whose folders are missing."""


def parse_spec(spec: str) -> Tuple[str, List[str], Dict[str, str]]:
    """``"pairs:a:b?void=255"`` -> ``("pairs", ["a", "b"], {"void": "255"})``."""
    if not spec or not isinstance(spec, str):
        raise SpecError(f"empty dataset spec; use one of: {', '.join(KINDS)}")
    body, _, query = spec.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    kind, _, rest = body.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise SpecError(f"unknown dataset kind {kind!r} in spec {spec!r}; use one of: {', '.join(KINDS)}")
    args = rest.split(":") if rest else []
    return kind, args, opts


def absolute_spec(spec: str) -> str:
    """The same spec with its folder and file paths made absolute (for records other runs read)."""
    kind, args, opts = parse_spec(spec)
    if kind.startswith("demo-"):
        return spec
    args = [os.path.abspath(os.path.expanduser(a)) for a in args]
    for key in ("classes", "palette"):
        if key in opts and not opts[key].isdigit():
            opts[key] = os.path.abspath(os.path.expanduser(opts[key]))
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return f"{kind}:{':'.join(args)}" + (f"?{query}" if query else "")


def load(spec: str) -> Dataset:
    """Read a dataset spec (see the module docstring) into a :class:`Dataset` (lists files only)."""
    if isinstance(spec, Dataset):
        return spec
    kind, args, opts = parse_spec(spec)
    loader = _LOADERS[kind]
    ds = loader(spec, args, opts)
    split = opts.get("split")
    if split:
        ds = ds.subset(split)
    return ds


# --------------------------------------------------------------------------- helpers
def _need_dir(spec: str, path: Optional[str], what: str) -> str:
    if not path:
        raise SpecError(f"{spec}: missing {what} folder")
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise SpecError(f"{spec}: {what} folder {path} does not exist")
    return path


def _list_images(d: str, recursive: bool = False) -> List[str]:
    if recursive:
        out = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if is_image_file(f)]
    else:
        out = [os.path.join(d, f) for f in os.listdir(d) if is_image_file(f)]
    return sorted(out)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _match_pairs(images: List[str], masks: List[str], split=None, strip_image_suffix: str = ""
                 ) -> Tuple[List[Sample], List[Tuple[str, str]]]:
    """Match images to masks by stem (masks may carry a suffix such as ``_mask``)."""
    by_stem: Dict[str, str] = {}
    problems = []
    for m in masks:
        key = _stem(m).lower()
        if key in by_stem:
            problems.append((m, f"two masks share the stem {_stem(m)!r} (also {by_stem[key]}); ignored"))
            continue
        by_stem[key] = m
    used = set()
    samples = []
    for img in images:
        stem = _stem(img)
        base = stem[: -len(strip_image_suffix)] if strip_image_suffix and stem.endswith(strip_image_suffix) else stem
        mask = None
        for suf in MASK_SUFFIXES:
            cand = by_stem.get((base + suf).lower())
            if cand is not None and cand not in used:
                mask = cand
                break
        if mask is None:
            problems.append((img, "image has no mask (looked for a mask file with the same stem)"))
            continue
        used.add(mask)
        samples.append(Sample(image=img, mask=mask, source_id=base, split=split))
    for m in masks:
        if m not in used and not any(p[0] == m for p in problems):
            problems.append((m, "mask has no image"))
    return samples, problems


def _split_pairs(splits) -> Tuple[List[Sample], List[Tuple[str, str]]]:
    """``[(split, images_dir, masks_dir)]`` -> matched samples of every split whose images exist."""
    samples, problems = [], []
    for split, img_dir, mask_dir in splits:
        if img_dir is None or not os.path.isdir(img_dir):
            continue
        if not os.path.isdir(mask_dir):
            problems.append((img_dir, f"no {os.path.basename(mask_dir)} folder beside it"))
            continue
        s, p = _match_pairs(_list_images(img_dir), _list_images(mask_dir), split=split)
        samples += s
        problems += p
    return samples, problems


def _scan_mask_values(mask_paths: List[str], reader=read_mask_raw) -> Tuple[list, bool]:
    """Distinct raw values over all masks (unreadable files skipped: validate reports them)."""
    def one(p):
        try:
            raw, _ = reader(p)
        except DataError:
            return None
        if raw.ndim == 3:
            codes = np.unique((raw[..., 0].astype(np.int64) << 16) | (raw[..., 1].astype(np.int64) << 8) | raw[..., 2])
            return ("rgb", codes)
        return ("gray", np.unique(raw))

    grays, rgbs = set(), set()
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as ex:
        for res in ex.map(one, mask_paths):
            if res is None:
                continue
            (rgbs if res[0] == "rgb" else grays).update(int(v) for v in res[1])
    if rgbs:
        # Grayscale masks mixed with colour ones: a gray value g is the colour (g, g, g).
        rgbs.update((g << 16) | (g << 8) | g for g in grays)
        return sorted(rgbs), True
    return sorted(grays), False


def _read_palette(path: str) -> ClassTable:
    """A palette file: classes.json style JSON, or text lines ``R G B name``."""
    if not os.path.isfile(path):
        raise SpecError(f"palette file {path} does not exist")
    if path.lower().endswith(".json"):
        return ClassTable.load(path)
    names, colors = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = re.split(r"[\s,;]+", line)
            try:
                colors.append(tuple(int(x) for x in parts[:3]))
            except ValueError:
                raise SpecError(f"{path}:{n}: expected 'R G B name', got {line!r}") from None
            names.append(" ".join(parts[3:]) or f"class_{len(names)}")
    return ClassTable(names=names, colors=colors, source_values=colors)


def _parse_void(opts: Dict[str, str]) -> list:
    v = opts.get("void", "")
    if not v:
        return []
    out = []
    for part in v.split(","):
        part = part.strip()
        out.append(tuple(int(x) for x in part.split("/")) if "/" in part else int(part))
    return out


# --------------------------------------------------------------------------- layouts
def _load_pairs(spec, args, opts) -> Dataset:
    if len(args) < 2:
        raise SpecError(f"{spec}: use pairs:IMAGES_DIR:MASKS_DIR")
    img_dir = _need_dir(spec, args[0], "images")
    mask_dir = _need_dir(spec, args[1], "masks")
    samples, problems = _match_pairs(_list_images(img_dir), _list_images(mask_dir))
    if not samples:
        raise SpecError(f"{spec}: no image/mask pairs found in {img_dir} and {mask_dir}")
    void = _parse_void(opts)
    if "classes" in opts:
        table = ClassTable.load(opts["classes"])
    elif "palette" in opts:
        table = _read_palette(opts["palette"])
    else:
        found = [p for p in (os.path.join(mask_dir, CLASS_TABLE_FILE),
                             os.path.join(os.path.dirname(os.path.abspath(mask_dir)), CLASS_TABLE_FILE))
                 if os.path.isfile(p)]
        table = ClassTable.load(found[0]) if found else _table_from_values(spec, [s.mask for s in samples], void)
    # A class file or palette names the classes; ?void= still adds values to ignore.
    table.void_values = list(table.void_values) + [v for v in void if v not in table.void_values]
    return Dataset(spec=spec, task=SEGMENTATION, samples=samples, classes=table, problems=problems)


def _table_from_values(spec, mask_paths, void) -> ClassTable:
    values, rgb = _scan_mask_values(mask_paths)
    if rgb:
        cols = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in values]
        cols = [c for c in cols if c not in void]
        if len(cols) > 254:
            raise SpecError(f"{spec}: masks hold {len(cols)} distinct colours; a colour-coded mask needs a "
                            "palette (?palette=FILE) or these are not label masks")
        return ClassTable(names=["class_%02x%02x%02x" % c for c in cols], colors=cols, source_values=cols,
                          void_values=void)
    vals = [v for v in values if v not in void]
    if not vals:
        raise SpecError(f"{spec}: no readable masks with class values")
    if len(vals) > 254:
        raise SpecError(f"{spec}: masks hold {len(vals)} distinct values; at most 254 classes are supported")
    return ClassTable(names=[f"class_{v}" for v in vals], source_values=vals, void_values=void)


def _load_camvid(spec, args, opts) -> Dataset:
    root = _need_dir(spec, args[0] if args else None, "CamVid")
    samples, problems = _split_pairs([(split, os.path.join(root, split), os.path.join(root, split + "annot"))
                                      for split in ("train", "val", "test")])
    if not samples:
        raise SpecError(f"{spec}: no CamVid train/trainannot (val, test) pairs under {root}"
                        + "".join(f"; {p}: {m}" for p, m in problems[:3]))
    cj = os.path.join(root, CLASS_TABLE_FILE)
    table = ClassTable.load(cj) if os.path.isfile(cj) else ClassTable(names=CAMVID_CLASSES, void_values=[CAMVID_VOID])
    return Dataset(spec=spec, task=SEGMENTATION, samples=samples, classes=table, problems=problems)


def cityscapes_table(setting: str = "19") -> ClassTable:
    """Class table from the official ``cityscapesscripts`` label definitions.

    ``"19"``: the 19 evaluation classes (train ids); ``"30"``: the 30 classes of the dataset's
    class list (every label but unlabeled, ego vehicle, rectification border, out of roi and
    license plate).
    """
    from cityscapesscripts.helpers.labels import labels

    if setting == "19":
        chosen = sorted((l for l in labels if 0 <= l.trainId < 255), key=lambda l: l.trainId)
    elif setting == "30":
        skip = {"unlabeled", "ego vehicle", "rectification border", "out of roi", "license plate"}
        chosen = [l for l in labels if l.name not in skip and l.id >= 0]
    else:
        raise SpecError(f"cityscapes classes must be 19 or 30, got {setting!r}")
    ids = {l.id for l in chosen}
    void = sorted({l.id for l in labels if 0 <= l.id < 256 and l.id not in ids} | {255})
    return ClassTable(names=[l.name for l in chosen], colors=[l.color for l in chosen],
                      source_values=[l.id for l in chosen], void_values=void)


def _load_cityscapes(spec, args, opts) -> Dataset:
    root = _need_dir(spec, args[0] if args else None, "Cityscapes")
    img_root, gt_root = os.path.join(root, "leftImg8bit"), os.path.join(root, "gtFine")
    for d in (img_root, gt_root):
        if not os.path.isdir(d):
            raise SpecError(f"{spec}: expected {d} (the leftImg8bit and gtFine folders of Cityscapes)")
    samples, problems = [], []
    for split in sorted(os.listdir(img_root)):
        if not os.path.isdir(os.path.join(img_root, split)):
            continue
        imgs = [p for p in _list_images(os.path.join(img_root, split), recursive=True) if p.endswith("_leftImg8bit.png")]
        gt_dir = os.path.join(gt_root, split)
        gts = ([p for p in _list_images(gt_dir, recursive=True) if p.endswith("_gtFine_labelIds.png")]
               if os.path.isdir(gt_dir) else [])
        gt_by_key = {os.path.basename(p)[: -len("_gtFine_labelIds.png")]: p for p in gts}
        for img in imgs:
            key = os.path.basename(img)[: -len("_leftImg8bit.png")]
            gt = gt_by_key.pop(key, None)
            if gt is None:
                problems.append((img, f"no gtFine/{split}/.../{key}_gtFine_labelIds.png"))
            else:
                samples.append(Sample(image=img, mask=gt, source_id=key, split=split))
        problems += [(p, "label map has no leftImg8bit image") for p in gt_by_key.values()]
    if not samples:
        raise SpecError(f"{spec}: no leftImg8bit/gtFine pairs under {root}")
    table = cityscapes_table(opts.get("classes", "19"))
    return Dataset(spec=spec, task=SEGMENTATION, samples=samples, classes=table, problems=problems)


def _find_isic_dir(root: str, name: str) -> Optional[str]:
    d = os.path.join(root, name)
    if not os.path.isdir(d):
        return None
    inner = os.path.join(d, name)  # archives often unpack as NAME/NAME/
    return inner if os.path.isdir(inner) else d


def _load_isic2016(spec, args, opts) -> Dataset:
    root = _need_dir(spec, args[0] if args else None, "ISIC 2016")
    samples, problems = _split_pairs([(split, _find_isic_dir(root, f"ISBI2016_ISIC_Part1_{part}_Data"),
                                       _find_isic_dir(root, f"ISBI2016_ISIC_Part1_{part}_GroundTruth")
                                       or os.path.join(root, f"ISBI2016_ISIC_Part1_{part}_GroundTruth"))
                                      for split, part in (("train", "Training"), ("test", "Test"))])
    if not samples:
        raise SpecError(f"{spec}: no ISBI2016_ISIC_Part1_Training_Data / _GroundTruth pairs under {root}"
                        + "".join(f"; {p}: {m}" for p, m in problems[:3]))
    table = ClassTable(names=["background", "lesion"], colors=[(0, 0, 0), (255, 255, 255)], source_values=[0, 255])
    return Dataset(spec=spec, task=SEGMENTATION, samples=samples, classes=table, problems=problems)


def _load_classfolders(spec, args, opts) -> Dataset:
    root = _need_dir(spec, args[0] if args else None, "class folders")
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    # Either split folders (any of train/ val/ test/, e.g. only train/ + test/) each holding class
    # folders, or class folders directly; a mix is ambiguous (a test/ read as a class would leak).
    split_dirs = [d for d in subdirs if d in ("train", "val", "test")]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = [d for d in subdirs if d not in split_dirs]
        raise SpecError(f"{spec}: {root} mixes split folders ({', '.join(split_dirs)}) with other folders "
                        f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); put the class folders "
                        "inside train/ val/ test/, or use no split folders at all")
    parts = [(d, os.path.join(root, d)) for d in split_dirs] if split_dirs else [(None, root)]
    names = sorted({c for _, base in parts for c in os.listdir(base)
                    if os.path.isdir(os.path.join(base, c)) and not c.startswith(".")})
    if not names:
        raise SpecError(f"{spec}: no class sub-folders in {root}")
    samples, problems = [], []
    for split, base in parts:
        for label, name in enumerate(names):
            d = os.path.join(base, name)
            files = _list_images(d) if os.path.isdir(d) else []
            if not files:
                problems.append((d, "class folder has no images"))
            for f in files:
                rel = os.path.relpath(f, root)
                samples.append(Sample(image=f, label=label, source_id=os.path.splitext(rel)[0], split=split))
    if not samples:
        raise SpecError(f"{spec}: no images in the class folders of {root}")
    cj = os.path.join(root, CLASS_TABLE_FILE)
    table = ClassTable.load(cj) if os.path.isfile(cj) else ClassTable(names=names)
    if table.names != names:
        table = ClassTable(names=names)
    return Dataset(spec=spec, task=CLASSIFICATION, samples=samples, classes=table, problems=problems)


def demo_cache_dir() -> str:
    return os.environ.get("SYNTHSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthseg_tf")


def _materialise_demo(kind: str, opts: Dict[str, str]) -> str:
    from synthseg_tf.data import demo

    seed = int(opts.get("seed", 0))
    if kind == "demo-scenes":
        n = int(opts.get("n", 300))
        size = _parse_size(opts.get("size", "128"))
        path = os.path.join(demo_cache_dir(), f"demo-scenes-n{n}-{size[0]}x{size[1]}-seed{seed}")
        writer = lambda: demo.write_demo_scenes(path, n=n, size=size, seed=seed)  # noqa: E731
    else:
        size = _parse_size(opts.get("size", "64"))
        path = os.path.join(demo_cache_dir(), f"demo-classes-{size[0]}x{size[1]}-seed{seed}")
        writer = lambda: demo.write_demo_classes(path, seed=seed, size=size)  # noqa: E731
    if not os.path.isdir(path):
        try:
            writer()
        except FileExistsError:  # another process made it first
            pass
    return path


def _parse_size(s: str) -> Tuple[int, int]:
    parts = [int(p) for p in re.split(r"[x,]", str(s)) if p]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise SpecError(f"size must be N or HxW, got {s!r}")


def _load_demo_scenes(spec, args, opts) -> Dataset:
    path = _materialise_demo("demo-scenes", opts)
    ds = _load_pairs(spec, [os.path.join(path, "images"), os.path.join(path, "masks")],
                     {"classes": os.path.join(path, CLASS_TABLE_FILE)})
    return ds


def _load_demo_classes(spec, args, opts) -> Dataset:
    path = _materialise_demo("demo-classes", opts)
    return _load_classfolders(spec, [path], {})


_LOADERS = {
    "pairs": _load_pairs,
    "camvid": _load_camvid,
    "cityscapes": _load_cityscapes,
    "isic2016": _load_isic2016,
    "classfolders": _load_classfolders,
    "demo-scenes": _load_demo_scenes,
    "demo-classes": _load_demo_classes,
}
