"""The generation output folder's file operations, the same on the driver and on every worker.

Local paths use the operating system directly (atomic temp-then-rename writes, exactly as the
rest of the library). Any other path (``gs://``, ``s3://``, ``hdfs://`` or a scheme a Beam
plugin registers) goes through Apache Beam's ``FileSystems``, the one file API every Beam
runner's workers have: a Dataflow worker shares no disk with the driver, so the driver finds
the workers' output only through that storage. A remote write goes to a temporary name in
the same folder and is renamed into place when complete (on object stores the rename is a
copy + delete, so "atomic" means a reader never sees a partial file under the final name).

Only the generation output uses this module; dataset reading goes through ``tf.io.gfile``
(:mod:`synthseg_tf.storage`).
"""
from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import struct
import uuid
from typing import Iterable, Iterator, List, Optional

from synthseg_tf.utils import TEMP_PREFIX, atomic_write_bytes, atomic_writer, is_temp_name

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_remote(path: str) -> bool:
    return bool(_SCHEME.match(os.fspath(path)))


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def join(folder: str, *names: str) -> str:
    if is_remote(folder):
        return posixpath.join(folder.rstrip("/"), *names)
    return os.path.join(folder, *names)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/")) if is_remote(path) else os.path.basename(path)


def absolute(path: str) -> str:
    """``path`` made absolute when local; remote paths are returned as they are."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    return _fs().exists(path) if is_remote(path) else os.path.exists(path)


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    return _fs().exists(path) and not path.endswith("/")


def isdir(path: str) -> bool:
    """Local: a directory. Remote (no directories on object stores): any object below ``path/``."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(listdir(path)) or _fs().exists(path.rstrip("/") + "/")


def listdir(folder: str) -> List[str]:
    """Names directly in ``folder`` (files; for remote folders also the first component of deeper objects)."""
    if not is_remote(folder):
        return os.listdir(folder) if os.path.isdir(folder) else []
    prefix = folder.rstrip("/") + "/"
    res = _fs().match([prefix + "**"])[0].metadata_list
    names = set()
    for m in res:
        rest = m.path[len(prefix):] if m.path.startswith(prefix) else ""
        if rest:
            names.add(rest.split("/", 1)[0])
    return sorted(names)


def files(folder: str, pattern: str) -> List[str]:
    """Sorted full paths of the files directly in ``folder`` whose name matches regex ``pattern``."""
    rx = re.compile(pattern)
    return sorted(join(folder, n) for n in listdir(folder) if rx.match(n) and isfile(join(folder, n)))


def makedirs(folder: str) -> None:
    if is_remote(folder):
        with contextlib.suppress(IOError, OSError):
            _fs().mkdirs(folder)  # object stores: nothing to do (and "exists" is not an error)
    else:
        os.makedirs(folder, exist_ok=True)


def read_bytes(path: str) -> bytes:
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _fs().open(path) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write ``path`` atomically (temporary name in the same folder, then renamed)."""
    if not is_remote(path):
        atomic_write_bytes(path, data)
        return
    tmp = join(posixpath.dirname(path), f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{basename(path)}")
    fs = _fs()
    try:
        with fs.create(tmp) as f:
            f.write(data)
        if fs.exists(path):
            fs.delete([path])
        fs.rename([tmp], [path])
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete([tmp])
        raise


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_direct(path: str, data: bytes) -> None:
    """Write ``path`` in place (no temporary name): for files that count only once a later
    marker file (a shard's manifest part) is written, and that a rerun writes again."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return
    with _fs().create(path) as f:
        f.write(data)


@contextlib.contextmanager
def text_writer(path: str) -> Iterator:
    """A text stream to ``path``, moved into place only when the block ends without an exception."""
    if not is_remote(path):
        with atomic_writer(path, "w") as f:
            yield f
        return
    fs = _fs()
    tmp = join(posixpath.dirname(path), f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{basename(path)}")
    raw = fs.create(tmp)
    ok = False
    try:
        w = io.TextIOWrapper(raw, encoding="utf-8")
        yield w
        w.flush()
        w.detach()
        raw.close()
        ok = True
    finally:
        if not ok:
            with contextlib.suppress(Exception):
                raw.close()
            with contextlib.suppress(Exception):
                fs.delete([tmp])
    if fs.exists(path):
        fs.delete([path])
    fs.rename([tmp], [path])


def remove(paths: Iterable[str]) -> int:
    """Delete the files that exist among ``paths``; returns how many."""
    paths = list(paths)
    local = [p for p in paths if not is_remote(p)]
    n = 0
    for p in local:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
            n += 1
    remote = [p for p in paths if is_remote(p) and _fs().exists(p)]
    if remote:
        _fs().delete(remote)
        n += len(remote)
    return n


def remove_temp_files(folders: Iterable[str]) -> int:
    """Delete temporary files (:func:`~synthseg_tf.utils.is_temp_name`) directly in ``folders``."""
    victims = []
    for d in folders:
        for name in listdir(d):
            p = join(d, name)
            if is_temp_name(name) and (is_remote(p) or (os.path.isfile(p) and not os.path.islink(p))):
                victims.append(p)
    return remove(victims)


def safe_join(root: str, rel: str, where: str = "") -> str:
    """:func:`synthseg_tf.utils.safe_join` for local roots; for remote roots the same checks on the
    path text (no symlinks on object stores)."""
    from synthseg_tf.utils import safe_join as local_safe_join

    if not is_remote(root):
        return local_safe_join(root, rel, where)
    from synthseg_tf.data.io import DataError

    src = where or root
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or _SCHEME.match(rel):
        raise DataError(src, f"entry path {rel!r} is not a relative file path inside {root}")
    if any(part == ".." for part in rel.replace("\\", "/").split("/")):
        raise DataError(src, f"entry path {rel!r} escapes {root} ('..')")
    return join(root, rel)


# --------------------------------------------------------------------------- TFRecord framing
def _crc32c(data: bytes) -> int:
    import google_crc32c

    return google_crc32c.value(data)


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_bytes(records: Iterable[bytes]) -> bytes:
    """Records framed as a TFRecord file (length, masked CRC-32C of the length, data, masked
    CRC-32C of the data), the bytes ``tf.io.TFRecordWriter`` writes; built in memory so the file
    can go to any storage in one write."""
    out = io.BytesIO()
    for r in records:
        length = struct.pack("<Q", len(r))
        out.write(length)
        out.write(struct.pack("<I", _masked_crc(length)))
        out.write(r)
        out.write(struct.pack("<I", _masked_crc(r)))
    return out.getvalue()


def read_tfrecords(data: bytes, where: str = "") -> List[bytes]:
    """The records of a TFRecord file's bytes, checksums verified (``ValueError`` naming ``where``)."""
    recs, pos = [], 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{where}: truncated TFRecord file (a record header at byte {pos})")
        length = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", length)
        (crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if crc != _masked_crc(length) or pos + 16 + n > len(data):
            raise ValueError(f"{where}: damaged TFRecord file (record at byte {pos})")
        r = data[pos + 12:pos + 12 + n]
        (dcrc,) = struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])
        if dcrc != _masked_crc(r):
            raise ValueError(f"{where}: damaged TFRecord file (checksum of the record at byte {pos})")
        recs.append(r)
        pos += 16 + n
    return recs


def optional_text(path: str) -> Optional[str]:
    """The file's text, or None when it does not exist."""
    try:
        return read_text(path)
    except FileNotFoundError:
        return None
    except (IOError, OSError) as e:
        if is_remote(path) and not exists(path):
            return None
        raise e
