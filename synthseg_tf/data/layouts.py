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

Every spec also takes these options:

===============================  ============================================================
``split=train|val|test``         keep one split.
``list=FILE``                    keep the samples a text file names, one per line: the image's
                                 path relative to the dataset folder (the images folder for
                                 ``pairs``), with or without its extension. Entries that leave
                                 that folder (``../x``, absolute paths, links pointing out)
                                 are refused.
``max_pixels=N``                 per-image pixel limit, a guard against decompression bombs
                                 (default ``$SYNTHSEG_MAX_PIXELS`` or 178956970).
``snap=nearest|void|none``       mask values that are probable interpolation/JPEG artefacts
                                 (see :mod:`synthseg_tf.data.artefacts`): ``nearest`` gives
                                 their pixels the majority class of the clean neighbouring
                                 pixels, ``void`` ignores them, ``none`` keeps every value as a
                                 class. Without the option they are reported (validate exits 2)
                                 and never become classes.
``min_share=X``                  a value on less than this share of all mask pixels is an
                                 artefact (default 0.0001 = 0.01%; ``0.1%`` also accepted;
                                 ``0`` turns the test off); implies ``snap=nearest``.
``jpeg_masks=1``                 read ``.jpg``/``.jpeg`` masks (refused by default: lossy
                                 compression adds values on every edge); implies
                                 ``snap=nearest``.
``follow_links=1``               allow symbolic links that point out of the dataset folder
                                 (refused by default).
===============================  ============================================================

A bare folder where a spec is expected is refused with the spec its contents suggest.

Paths may be local or remote (``gs://bucket/dir``, ``s3://...``, any filesystem ``tf.io.gfile``
knows; see :mod:`synthseg_tf.storage`): the spec body is split on ``:`` and a ``scheme://`` is put
back together (``pairs:gs://b/images:gs://b/masks``; a ``host:port`` right after it too, as in
``hdfs://namenode:8020/data``). Local and remote arguments can be mixed. Remote folders are listed
and read through ``tf.io.gfile`` (TensorFlow is imported only then); object stores have no
symbolic links, so the link checks apply to local paths only. A ``:`` inside a remote path
cannot be told apart from the separator.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl

import numpy as np

from synthseg_tf import storage
from synthseg_tf.data import artefacts as _art
from synthseg_tf.data.classes import CLASS_TABLE_FILE, ClassTable
from synthseg_tf.data.dataset import (CLASSIFICATION, JPEG_MASK_PROBLEM, SEGMENTATION, SNAP_MODES, DataOptions, Dataset,
                                      Sample)
from synthseg_tf.data.io import IMAGE_EXTENSIONS, DataError, is_image_file, is_jpeg_file, probe, read_mask_raw

KINDS = ("pairs", "camvid", "cityscapes", "isic2016", "classfolders", "demo-scenes", "demo-classes")
MASK_SUFFIXES = ("", "_mask", "_masks", "_label", "_labels", "_gt", "_segmentation", "_seg", "_annot", "_labelids")

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                  "car", "pedestrian", "bicyclist"]
CAMVID_VOID = 11

OPTIONS = ("split", "list", "void", "classes", "palette", "n", "size", "seed", "max_pixels", "snap", "min_share",
           "jpeg_masks", "follow_links")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "photos", "jpegimages", "rgb", "inputs", "input", "x", "data")
MASK_DIR_NAMES = ("masks", "mask", "labels", "label", "annotations", "annotation", "annots", "annot", "gt",
                  "groundtruth", "ground_truth", "segmentations", "segmentation", "segmentationclass", "targets",
                  "target", "y", "labelids")


class SpecError(ValueError):
    """A dataset spec that cannot be understood or whose folders are missing."""


_SCHEME_WORD = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_PORT = re.compile(r"\d+(/|\Z)")


def split_args(rest: str) -> List[str]:
    """The ``:``-separated arguments of a spec body, with every ``scheme://...`` argument kept whole.

    ``"gs://b/im:gs://b/ms"`` -> ``["gs://b/im", "gs://b/ms"]``; ``"/data/im:s3://x/ms"`` ->
    ``["/data/im", "s3://x/ms"]``; a port right after a remote host stays with it
    (``"hdfs://nn:8020/d"`` -> ``["hdfs://nn:8020/d"]``).
    """
    parts = rest.split(":")
    out: List[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if i + 1 < len(parts) and _SCHEME_WORD.match(p) and parts[i + 1].startswith("//"):
            p = p + ":" + parts[i + 1]
            i += 2
            authority = p.split("://", 1)[1]
            if "/" not in authority and authority and i < len(parts) and _PORT.match(parts[i]):
                p = p + ":" + parts[i]
                i += 1
        else:
            i += 1
        out.append(p)
    return out


def parse_spec(spec: str) -> Tuple[str, List[str], Dict[str, str]]:
    """``"pairs:a:b?void=255"`` -> ``("pairs", ["a", "b"], {"void": "255"})``.

    Everything that can be checked without reading files is checked here (the kind, the
    option names and values), so a bad spec fails before anything heavy is imported. A bare
    folder is refused with the spec its contents suggest.
    """
    if not spec or not isinstance(spec, str):
        raise SpecError(f"empty dataset spec; use one of: {', '.join(KINDS)}")
    body, _, query = spec.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    kind, _, rest = body.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise SpecError(_unknown_kind_message(spec, body, kind, query))
    args = split_args(rest) if rest else []
    for a in args:
        if storage.is_remote(a) and not storage.split_scheme(a)[1].strip("/"):
            raise SpecError(f"{spec}: {a!r} names no bucket or folder; e.g. {a.rstrip('/')}//BUCKET/DIR")
    unknown = [k for k in opts if k not in OPTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], OPTIONS, n=1)
        raise SpecError(f"{spec}: unknown option {unknown[0]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; options: {', '.join(OPTIONS)}")
    options_of(opts, spec)
    return kind, args, opts


def _unknown_kind_message(spec: str, body: str, kind: str, query: str) -> str:
    if storage.is_remote(body):  # checked without touching it (TensorFlow is not imported for a bad spec)
        return (f"{body!r} is a {storage.split_scheme(body)[0]} path, not a dataset spec; a spec names the layout, "
                f"e.g. pairs:IMAGES_DIR:MASKS_DIR, camvid:DIR or classfolders:DIR (here e.g. classfolders:{body}; "
                f"kinds: {', '.join(KINDS)})")
    path = os.path.expanduser(body)
    if os.path.isdir(path):
        guess, why = guess_spec(path)
        if guess:
            return (f"{body!r} is a folder, not a dataset spec; it holds {why}, so use: "
                    f"{guess + ('?' + query if query else '')}")
        return (f"{body!r} is a folder, not a dataset spec, and its contents match no layout ({why}); a spec "
                f"names the layout, e.g. pairs:IMAGES_DIR:MASKS_DIR or classfolders:DIR (kinds: {', '.join(KINDS)})")
    if ":" not in body and (os.sep in body or body.startswith((".", "~"))):
        return (f"{body!r} is neither a dataset spec nor an existing folder; a spec is KIND:PATH..., with KIND one "
                f"of: {', '.join(KINDS)}")
    msg = f"unknown dataset kind {kind!r} in spec {spec!r}; use one of: {', '.join(KINDS)}"
    close = difflib.get_close_matches(kind, KINDS, n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    return msg


def _bool_option(opts: Dict[str, str], key: str, spec: str) -> bool:
    v = opts.get(key)
    if v is None:
        return False
    v = v.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SpecError(f"{spec}: {key}={opts[key]!r} must be 1 or 0")


def options_of(opts: Dict[str, str], spec: str = "") -> DataOptions:
    """The reading options of a spec's ``?key=value`` part (errors name the option)."""
    max_pixels = None
    if opts.get("max_pixels"):
        try:
            max_pixels = int(float(opts["max_pixels"]))
        except ValueError:
            max_pixels = 0
        if max_pixels <= 0:
            raise SpecError(f"{spec}: max_pixels={opts['max_pixels']!r} must be a positive number of pixels")
    snap = opts.get("snap") or None
    if snap is not None and snap not in SNAP_MODES:
        raise SpecError(f"{spec}: snap={snap!r} must be one of {', '.join(SNAP_MODES)}")
    min_share = _art.DEFAULT_MIN_SHARE
    if "min_share" in opts:
        raw = opts["min_share"].strip()
        try:
            min_share = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
        except ValueError:
            min_share = -1.0
        if not 0 <= min_share < 1:
            raise SpecError(f"{spec}: min_share={raw!r} must be a share of pixels in [0, 1), e.g. 0.001 or 0.1%")
    jpeg_masks = _bool_option(opts, "jpeg_masks", spec)
    follow_links = _bool_option(opts, "follow_links", spec)
    if snap is None and ("min_share" in opts or jpeg_masks):
        snap = "nearest"
    return DataOptions(max_pixels=max_pixels, snap=snap, min_share=min_share, jpeg_masks=jpeg_masks,
                       follow_links=follow_links)


def guess_spec(path: str) -> Tuple[Optional[str], str]:
    """``(spec or None, what the folder holds)`` for a folder given where a spec was expected."""
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    dirs = [n for n in names if not n.startswith(".") and os.path.isdir(os.path.join(path, n))]
    low = {d.lower(): d for d in dirs}
    j = lambda *p: os.path.join(path, *p)  # noqa: E731
    if "train" in low and "trainannot" in low:
        return f"camvid:{path}", "train/ and trainannot/ folders (the CamVid layout)"
    if "leftimg8bit" in low and "gtfine" in low:
        return f"cityscapes:{path}", "leftImg8bit/ and gtFine/ folders (the Cityscapes layout)"
    if any(d.startswith("ISBI2016_ISIC_Part1") for d in dirs):
        return f"isic2016:{path}", "ISBI2016_ISIC_Part1_* folders (the ISIC 2016 layout)"
    img = next((low[n] for n in IMAGE_DIR_NAMES if n in low), None)
    msk = next((low[n] for n in MASK_DIR_NAMES if n in low), None)
    if img and msk:
        return f"pairs:{j(img)}:{j(msk)}", f"an {img}/ and a {msk}/ folder (images and masks matched by file name)"

    def images_in(d):
        try:
            return [f for f in os.listdir(d) if is_image_file(f)]
        except OSError:
            return []

    splits = [d for d in dirs if d in ("train", "val", "test")]
    if splits and len(splits) == len(dirs) and all(
            any(images_in(j(sp, c)) for c in os.listdir(j(sp)) if os.path.isdir(j(sp, c))) for sp in splits):
        return f"classfolders:{path}", f"{'/, '.join(splits)}/ folders holding one folder per class"
    with_images = [d for d in dirs if images_in(j(d))]
    if len(with_images) == 2:
        a, b = with_images
        stems = lambda d: {os.path.splitext(f)[0].lower() for f in images_in(j(d))}  # noqa: E731
        shared = stems(a) & stems(b)
        if len(shared) >= 0.5 * min(len(stems(a)), len(stems(b))):
            def masky(d):
                named = any(k in d.lower() for k in ("mask", "label", "annot", "gt", "seg"))
                return named or _looks_like_mask(j(d, sorted(images_in(j(d)))[0]))

            if masky(a) != masky(b):
                img_d, msk_d = (b, a) if masky(a) else (a, b)
                return (f"pairs:{j(img_d)}:{j(msk_d)}",
                        f"two folders with the same file names, photos in {img_d}/ and label maps in {msk_d}/")
    if len(with_images) >= 2:
        return f"classfolders:{path}", f"{len(with_images)} folders of images (one folder per class)"
    top = [n for n in names if is_image_file(n)]
    if top:
        return None, (f"{len(top)} image(s) directly inside it; segmentation needs pairs:IMAGES_DIR:MASKS_DIR, "
                      "classification classfolders:DIR with one sub-folder per class")
    return None, "no image files or known sub-folders"


def absolute_spec(spec: str) -> str:
    """The same spec with its folder and file paths made absolute (for records other runs read)."""
    kind, args, opts = parse_spec(spec)
    if kind.startswith("demo-"):
        return spec
    args = [storage.abspath(storage.expanduser(a)) for a in args]
    for key in ("classes", "palette", "list"):
        if key in opts and not opts[key].isdigit():
            opts[key] = storage.abspath(storage.expanduser(opts[key]))
    query = "&".join(f"{k}={v}" for k, v in opts.items())
    return f"{kind}:{':'.join(args)}" + (f"?{query}" if query else "")


def load(spec: str) -> Dataset:
    """Read a dataset spec (see the module docstring) into a :class:`Dataset`.

    Lists the files; masks are read only to discover the classes from their values (``pairs``
    without a class table) or, with ``?snap=``, to find the artefact values outside the table.
    """
    if isinstance(spec, Dataset):
        return spec
    kind, args, opts = parse_spec(spec)
    ctx = _Ctx(spec, options_of(opts, spec))
    ds = _LOADERS[kind](spec, args, opts, ctx)
    ds.options = ctx.options
    ds.problems = ctx.problems + list(ds.problems)
    if ds.task == SEGMENTATION and ctx.options.fixes_artefacts and not ctx.discovered:
        _find_table_artefacts(ds)
    if opts.get("list"):
        ds = _apply_list(ds, opts["list"], ctx)
    split = opts.get("split")
    if split:
        ds = ds.subset(split)
    return ds


class _Ctx:
    """What one load() call shares between its helpers: options, the dataset root, problems."""

    def __init__(self, spec: str, options: DataOptions):
        self.spec = spec
        self.options = options
        self.problems: List[Tuple[str, str]] = []
        self.root: Optional[str] = None
        self.discovered = False  # the class table was discovered from the mask values

    def list_images(self, d: str, recursive: bool = False, root: Optional[str] = None) -> List[str]:
        """Image files of ``d``; symbolic links out of ``root`` (default ``d``) are refused unless follow_links.

        Remote folders (no symbolic links there) are listed through :mod:`synthseg_tf.storage`."""
        if storage.is_remote(d):
            if recursive:
                found = [storage.join(r, f) for r, _, fs in storage.walk(d) for f in fs if is_image_file(f)]
            else:
                found = [storage.join(d, n) for n in storage.listdir(d) if is_image_file(n)]
            return sorted(found)
        root_real = os.path.realpath(root or d)
        if recursive:
            found = [os.path.join(r, f) for r, _, fs in os.walk(d) for f in fs if is_image_file(f)]
        else:
            found = [e.path for e in os.scandir(d) if is_image_file(e.name)]
        out = []
        for f in sorted(found):
            if os.path.islink(f):
                target = os.path.realpath(f)
                if not os.path.exists(target):
                    self.problems.append((f, f"broken symbolic link (its target {target} does not exist)"))
                    continue
                if not self.options.follow_links and not _within(target, root_real):
                    self.problems.append((f, f"symbolic link to {target}, outside the dataset folder {root or d}: "
                                             "refused (pass ?follow_links=1 to allow links out of the dataset)"))
                    continue
            out.append(f)
        return out


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def _apply_list(ds: Dataset, list_path: str, ctx: "_Ctx") -> Dataset:
    """Keep the samples a list file names (entries relative to the dataset root, never leaving it)."""
    list_path = storage.expanduser(list_path)
    root = ctx.root
    if not storage.isfile(list_path):
        raise SpecError(f"{ctx.spec}: list file {list_path} does not exist")
    if root is None:
        raise SpecError(f"{ctx.spec}: this layout takes no list file")
    local_root = not storage.is_remote(root)
    root_real = os.path.realpath(root) if local_root else root
    index: Dict[str, int] = {}
    for i, s in enumerate(ds.samples):
        rel = os.path.normpath(storage.relpath(s.image, root))
        index.setdefault(rel, i)
        index.setdefault(os.path.splitext(rel)[0], i)
    keep, seen, problems = [], set(), []
    try:
        lines = storage.read_text(list_path).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{list_path}: cannot read the list file ({e})") from None
    for n, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{list_path}:{n}"
        if os.path.isabs(entry) or entry.startswith("~") or re.match(r"^[A-Za-z]:[\\/]", entry):
            raise SpecError(f"{where}: {entry!r} is an absolute path; list entries are relative to the dataset "
                            f"folder {root} and cannot leave it")
        norm = os.path.normpath(entry.replace("\\", "/"))
        if norm == os.pardir or norm.startswith(os.pardir + os.sep):
            raise SpecError(f"{where}: {entry!r} leaves the dataset folder {root}; list entries must stay inside it")
        full = os.path.join(root, norm)
        if (local_root and os.path.lexists(full) and not ctx.options.follow_links
                and not _within(os.path.realpath(full), root_real)):
            raise SpecError(f"{where}: {entry!r} is a symbolic link to {os.path.realpath(full)}, outside the dataset "
                            f"folder {root}; refused (pass ?follow_links=1 to allow links out of the dataset)")
        i = index.get(norm)
        if i is None:
            problems.append((where, f"{entry!r} is not an image of the dataset in {root}"))
        elif i not in seen:
            seen.add(i)
            keep.append(i)
    out = ds.select(keep)
    out.problems = list(ds.problems) + problems
    if not keep:
        raise SpecError(f"{ctx.spec}: the list file {list_path} names none of the dataset's images"
                        + "".join(f"; {p}: {m}" for p, m in problems[:3]))
    return out


# --------------------------------------------------------------------------- helpers
def _need_dir(spec: str, path: Optional[str], what: str) -> str:
    if not path:
        raise SpecError(f"{spec}: missing {what} folder")
    path = storage.expanduser(path)
    if not storage.isdir(path):
        if storage.exists(path):
            raise SpecError(f"{spec}: {what} folder {path} is a file, not a folder")
        raise SpecError(f"{spec}: {what} folder {path} does not exist")
    return path


def _looks_like_mask(path: str) -> bool:
    """A label map rather than a photo: single-channel or palette with few values, or few colours."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.width * im.height > 4096 * 4096:
                return False
            im.load()
            arr = np.asarray(im)
    except Exception:  # noqa: BLE001 - a guess only; unreadable files are reported elsewhere
        return False
    if arr.ndim == 3:
        arr = arr[..., :3].reshape(-1, arr.shape[-1] if arr.shape[-1] <= 3 else 3)
        return len(np.unique(arr, axis=0)) <= 64
    return len(np.unique(arr)) <= 64


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _match_pairs(images: List[str], masks: List[str], split=None, strip_image_suffix: str = ""
                 ) -> Tuple[List[Sample], List[Tuple[str, str]]]:
    """Match images to masks by stem (masks may carry a suffix such as ``_mask``).

    Two images (or two masks) with the same stem (``a.png`` and ``a.jpg``) are ambiguous and
    reported; a file left without a partner is first checked to be an image at all, so a text
    file named ``x.png`` is reported as not an image rather than as an image without a mask.
    """
    by_stem: Dict[str, str] = {}
    problems = []
    for m in masks:
        key = _stem(m).lower()
        if key in by_stem:
            problems.append((m, f"two masks share the stem {_stem(m)!r} (also {by_stem[key]}); ignored"))
            continue
        by_stem[key] = m

    def base_of(img):
        stem = _stem(img)
        return stem[: -len(strip_image_suffix)] if strip_image_suffix and stem.endswith(strip_image_suffix) else stem

    images_by_base: Dict[str, List[str]] = {}
    for img in images:
        images_by_base.setdefault(base_of(img).lower(), []).append(img)
    used = set()
    samples = []
    for img in images:
        base = base_of(img)
        mask = None
        for suf in MASK_SUFFIXES:
            cand = by_stem.get((base + suf).lower())
            if cand is not None and (cand not in used or len(images_by_base[base.lower()]) > 1):
                mask = cand
                break
        twins = images_by_base[base.lower()]
        if len(twins) > 1:
            others = ", ".join(os.path.basename(t) for t in twins if t != img)
            problems.append((img, f"two images share the stem {base!r} (also {others}): which one "
                                  + (f"the mask {os.path.basename(mask)} belongs to" if mask else "is meant")
                                  + " is ambiguous; rename or remove one"))
            if mask is not None:
                used.add(mask)
            continue
        if mask is None:
            problems.append((img, probe(img) or "image has no mask (looked for a mask file with the same stem)"))
            continue
        used.add(mask)
        samples.append(Sample(image=img, mask=mask, source_id=base, split=split))
    for m in masks:
        if m not in used and not any(p[0] == m for p in problems):
            problems.append((m, probe(m) or "mask has no image"))
    return samples, problems


def _split_pairs(splits, ctx: "_Ctx") -> Tuple[List[Sample], List[Tuple[str, str]]]:
    """``[(split, images_dir, masks_dir)]`` -> matched samples of every split whose images exist."""
    samples, problems = [], []
    for split, img_dir, mask_dir in splits:
        if img_dir is None or not storage.isdir(img_dir):
            continue
        if not storage.isdir(mask_dir):
            problems.append((img_dir, f"no {storage.basename(mask_dir)} folder beside it"))
            continue
        s, p = _match_pairs(ctx.list_images(img_dir, root=ctx.root), ctx.list_images(mask_dir, root=ctx.root),
                            split=split)
        samples += s
        problems += p
    return samples, problems


def _scan_stats(mask_paths: List[str], options: DataOptions) -> _art.ValueStats:
    """Value statistics over all masks (unreadable files skipped: validate reports them; JPEG
    masks only with ``jpeg_masks``)."""
    def one(p):
        if is_jpeg_file(p) and not options.jpeg_masks:
            return None
        try:
            raw, _ = read_mask_raw(p, options.max_pixels)
        except DataError as e:
            return e
        return _art.ValueStats.of_mask(raw, p, jpeg=is_jpeg_file(p))

    total = _art.ValueStats()
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as ex:
        for st in ex.map(one, mask_paths):
            if isinstance(st, DataError):
                total.unreadable.append(str(st))
            elif st is not None:
                total.merge(st)
    return total


def _record_artefacts(ds: Dataset, stats: _art.ValueStats, found: Dict[int, str]) -> None:
    ds.artefacts = {_art.value_of(c, stats.rgb): why for c, why in found.items()}
    ds.artefact_files = {_art.value_of(c, stats.rgb): list(stats.files.get(c, [])) for c in found}


def _find_table_artefacts(ds: Dataset) -> None:
    """With ``snap`` and an explicit class table: which values outside the table are artefacts."""
    masks = [s.mask for s in ds.samples if s.mask]
    stats = _scan_stats(masks, ds.options)
    if not stats.count:
        return
    rgb = stats.rgb
    table = ds.classes
    if rgb and not table.rgb_source:
        return  # colour masks against a table of gray values: reading reports the mismatch
    if table.source_values:
        known = {_art.code_of(v) for v in table.source_values}
    elif table.rgb_source or rgb:
        known = {_art.code_of(c) for c in table.colors}
    else:
        known = set(range(table.num_classes))
    void = {_art.code_of(v) for v in table.void_values} | ({255} if not table.source_values and not rgb else set())
    outside = [c for c in stats.count if c not in known and c not in void]
    found = _art.find_artefacts(stats, ds.options.min_share, candidates=outside, known=known,
                                jpeg=ds.options.jpeg_masks)
    _record_artefacts(ds, stats, found)


def _read_palette(path: str) -> ClassTable:
    """A palette file: classes.json style JSON, or text lines ``R G B name``."""
    if not storage.isfile(path):
        raise SpecError(f"palette file {path} does not exist")
    if path.lower().endswith(".json"):
        return ClassTable.load(path)
    names, colors = [], []
    for n, line in enumerate(storage.read_text(path).splitlines(), 1):
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
def _load_pairs(spec, args, opts, ctx) -> Dataset:
    if len(args) < 2:
        raise SpecError(f"{spec}: use pairs:IMAGES_DIR:MASKS_DIR")
    img_dir = _need_dir(spec, args[0], "images")
    mask_dir = _need_dir(spec, args[1], "masks")
    ctx.root = img_dir
    images, masks = ctx.list_images(img_dir), ctx.list_images(mask_dir)
    exts = "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    if not images:
        raise SpecError(f"{spec}: empty dataset: no image files ({exts}) in {img_dir}"
                        + "".join(f"; {p}: {m}" for p, m in ctx.problems[:3]))
    if not masks:
        raise SpecError(f"{spec}: empty dataset: no mask files ({exts}) in {mask_dir}"
                        + "".join(f"; {p}: {m}" for p, m in ctx.problems[:3]))
    samples, problems = _match_pairs(images, masks)
    if not samples:
        raise SpecError(f"{spec}: no image/mask pairs found in {img_dir} and {mask_dir}"
                        + "".join(f"; {p}: {m}" for p, m in problems[:3]))
    void = _parse_void(opts)
    artefacts = None
    if "classes" in opts:
        table = ClassTable.load(opts["classes"])
    elif "palette" in opts:
        table = _read_palette(opts["palette"])
    else:
        found = [p for p in (storage.join(mask_dir, CLASS_TABLE_FILE),
                             storage.join(storage.dirname(storage.abspath(mask_dir)), CLASS_TABLE_FILE))
                 if storage.isfile(p)]
        if found:
            table = ClassTable.load(found[0])
        elif not ctx.options.jpeg_masks and all(is_jpeg_file(s.mask) for s in samples):
            raise SpecError(f"{spec}: every mask in {mask_dir} is a JPEG file: {JPEG_MASK_PROBLEM}")
        else:
            table, artefacts = _table_from_values(spec, [s.mask for s in samples], void, ctx.options)
            ctx.discovered = True
    # A class file or palette names the classes; ?void= still adds values to ignore.
    table.void_values = list(table.void_values) + [v for v in void if v not in table.void_values]
    ds = Dataset(spec=spec, task=SEGMENTATION, samples=samples, classes=table, problems=problems)
    if artefacts is not None:
        _record_artefacts(ds, *artefacts)
    return ds


def _table_from_values(spec, mask_paths, void, options: DataOptions = DataOptions()):
    """Class table from the values the masks hold, without the probable artefacts.

    -> ``(table, (stats, {artefact code: reason}))``. With ``snap=none`` every value is a class.
    """
    stats = _scan_stats(mask_paths, options)
    rgb = stats.rgb
    void_codes = {(_art.gray_to_rgb_code(v) if rgb and isinstance(v, int) else _art.code_of(v)) for v in void}
    cands = [c for c in stats.codes if c not in void_codes]
    found = {} if options.snap == "none" else _art.find_artefacts(stats, options.min_share, candidates=cands,
                                                                   jpeg=options.jpeg_masks)
    codes = [c for c in cands if c not in found]
    if not codes:
        detail = f" (every value looks like an artefact: {_art.describe(found, limit=3)})" if found else ""
        if not stats.count and stats.unreadable:
            detail = f" ({len(stats.unreadable)} unreadable, e.g. {stats.unreadable[0]})"
        raise SpecError(f"{spec}: no readable masks with class values{detail}")
    if len(codes) > 254:
        what = "colours" if rgb else "values"
        raise SpecError(f"{spec}: masks hold {len(codes)} distinct {what}; at most 254 classes are supported"
                        + ("; a colour-coded mask needs a palette (?palette=FILE) or these are not label masks"
                           if rgb else ""))
    if rgb:
        cols = [_art.value_of(c, True) for c in codes]
        vv = [v if isinstance(v, tuple) else (v, v, v) for v in void]
        table = ClassTable(names=["class_%02x%02x%02x" % c for c in cols], colors=cols, source_values=cols,
                           void_values=vv)
    else:
        table = ClassTable(names=[f"class_{v}" for v in codes], source_values=codes, void_values=void)
    return table, (stats, found)


def _load_camvid(spec, args, opts, ctx) -> Dataset:
    root = ctx.root = _need_dir(spec, args[0] if args else None, "CamVid")
    samples, problems = _split_pairs([(split, storage.join(root, split), storage.join(root, split + "annot"))
                                      for split in ("train", "val", "test")], ctx)
    if not samples:
        raise SpecError(f"{spec}: no CamVid train/trainannot (val, test) pairs under {root}"
                        + "".join(f"; {p}: {m}" for p, m in problems[:3]))
    cj = storage.join(root, CLASS_TABLE_FILE)
    table = ClassTable.load(cj) if storage.isfile(cj) else ClassTable(names=CAMVID_CLASSES, void_values=[CAMVID_VOID])
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


def _load_cityscapes(spec, args, opts, ctx) -> Dataset:
    root = ctx.root = _need_dir(spec, args[0] if args else None, "Cityscapes")
    img_root, gt_root = storage.join(root, "leftImg8bit"), storage.join(root, "gtFine")
    for d in (img_root, gt_root):
        if not storage.isdir(d):
            raise SpecError(f"{spec}: expected {d} (the leftImg8bit and gtFine folders of Cityscapes)")
    samples, problems = [], []
    for split in sorted(storage.listdir(img_root)):
        if not storage.isdir(storage.join(img_root, split)):
            continue
        imgs = [p for p in ctx.list_images(storage.join(img_root, split), recursive=True, root=root)
                if p.endswith("_leftImg8bit.png")]
        gt_dir = storage.join(gt_root, split)
        gts = ([p for p in ctx.list_images(gt_dir, recursive=True, root=root) if p.endswith("_gtFine_labelIds.png")]
               if storage.isdir(gt_dir) else [])
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
    d = storage.join(root, name)
    if not storage.isdir(d):
        return None
    inner = storage.join(d, name)  # archives often unpack as NAME/NAME/
    return inner if storage.isdir(inner) else d


def _load_isic2016(spec, args, opts, ctx) -> Dataset:
    root = ctx.root = _need_dir(spec, args[0] if args else None, "ISIC 2016")
    samples, problems = _split_pairs([(split, _find_isic_dir(root, f"ISBI2016_ISIC_Part1_{part}_Data"),
                                       _find_isic_dir(root, f"ISBI2016_ISIC_Part1_{part}_GroundTruth")
                                       or storage.join(root, f"ISBI2016_ISIC_Part1_{part}_GroundTruth"))
                                      for split, part in (("train", "Training"), ("test", "Test"))], ctx)
    if not samples:
        raise SpecError(f"{spec}: no ISBI2016_ISIC_Part1_Training_Data / _GroundTruth pairs under {root}"
                        + "".join(f"; {p}: {m}" for p, m in problems[:3]))
    table = ClassTable(names=["background", "lesion"], colors=[(0, 0, 0), (255, 255, 255)], source_values=[0, 255])
    return Dataset(spec=spec, task=SEGMENTATION, samples=samples, classes=table, problems=problems)


def _load_classfolders(spec, args, opts, ctx) -> Dataset:
    root = ctx.root = _need_dir(spec, args[0] if args else None, "class folders")
    subdirs = sorted(d for d in storage.listdir(root)
                     if not d.startswith(".") and storage.isdir(storage.join(root, d)))
    # Either split folders (any of train/ val/ test/, e.g. only train/ + test/) each holding class
    # folders, or class folders directly; a mix is ambiguous (a test/ read as a class would leak).
    split_dirs = [d for d in subdirs if d in ("train", "val", "test")]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = [d for d in subdirs if d not in split_dirs]
        raise SpecError(f"{spec}: {root} mixes split folders ({', '.join(split_dirs)}) with other folders "
                        f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); put the class folders "
                        "inside train/ val/ test/, or use no split folders at all")
    parts = [(d, storage.join(root, d)) for d in split_dirs] if split_dirs else [(None, root)]
    names = sorted({c for _, base in parts for c in storage.listdir(base)
                    if not c.startswith(".") and storage.isdir(storage.join(base, c))})
    if not names:
        raise SpecError(f"{spec}: no class sub-folders in {root}")
    samples, problems = [], []
    for split, base in parts:
        for label, name in enumerate(names):
            d = storage.join(base, name)
            files = ctx.list_images(d, root=root) if storage.isdir(d) else []
            if not files:
                problems.append((d, "class folder has no images"))
            for f in files:
                rel = storage.relpath(f, root)
                samples.append(Sample(image=f, label=label, source_id=os.path.splitext(rel)[0], split=split))
    if not samples:
        raise SpecError(f"{spec}: no images in the class folders of {root}")
    cj = storage.join(root, CLASS_TABLE_FILE)
    table = ClassTable.load(cj) if storage.isfile(cj) else ClassTable(names=names)
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


def _load_demo_scenes(spec, args, opts, ctx) -> Dataset:
    path = _materialise_demo("demo-scenes", opts)
    ds = _load_pairs(spec, [os.path.join(path, "images"), os.path.join(path, "masks")],
                     {"classes": os.path.join(path, CLASS_TABLE_FILE)}, ctx)
    return ds


def _load_demo_classes(spec, args, opts, ctx) -> Dataset:
    path = _materialise_demo("demo-classes", opts)
    return _load_classfolders(spec, [path], {}, ctx)


_LOADERS = {
    "pairs": _load_pairs,
    "camvid": _load_camvid,
    "cityscapes": _load_cityscapes,
    "isic2016": _load_isic2016,
    "classfolders": _load_classfolders,
    "demo-scenes": _load_demo_scenes,
    "demo-classes": _load_demo_classes,
}
