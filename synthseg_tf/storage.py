"""File access that works on local disk and on the filesystems TensorFlow knows (``gs://``, ``s3://``
with tensorflow-io, ``hdfs://``, the in-memory ``ram://`` tests use, ...).

A path is *remote* when it starts with a URL scheme (``[a-z][a-z0-9+.-]*://``, :func:`is_remote`);
remote paths go through ``tf.io.gfile``, every other path through :mod:`os` exactly as before, so
local behaviour, error messages and speed do not change. TensorFlow is imported only inside these
functions and only when a remote path is used (the command line checks dataset specs before
TensorFlow loads).

Errors of remote operations are raised as the matching ``OSError`` subclasses
(``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, ``NotADirectoryError``,
``FileExistsError``, else ``OSError``), carrying the path, so callers handle local and remote
failures alike.

Writes:

- :func:`atomic_write_bytes` / :func:`atomic_write_text`: local paths use
  :func:`synthseg_tf.utils.atomic_write_bytes` (temporary file + ``os.replace``). Remote paths are
  written to a temporary name (``.tmp-*``) in the same folder, then renamed over the final name
  (``gfile.rename(..., overwrite=True)``). On an object store a rename is a server-side copy and a
  delete, not an atomic operation, but the object under the final name is created in one piece:
  readers never see a partial file under the final name (they may see the old one until the copy
  completes). A failed write removes the temporary object and raises
  :class:`~synthseg_tf.errors.StorageError` naming the path.
- :func:`atomic_directory`: local paths use :func:`synthseg_tf.utils.atomic_directory` (build under
  a temporary name, one rename into place). Remote folders are built in a temporary sibling folder
  and their files then renamed into the final folder one by one, the files named in ``last`` (e.g.
  the ``dataset.json`` that describes a TFRecord folder) at the very end: a remote folder whose
  ``last`` file is missing is incomplete.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import glob as _glob
import os
import posixpath
import re
import shutil
import uuid
from typing import Dict, Iterable, Iterator, List, Tuple

#: a URL scheme at the start of a path (``gs://``, ``s3://``, ``ram://``, ``hdfs://``, ``file://``)
SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")

TEMP_PREFIX = ".tmp-"  # the same prefix as synthseg_tf.utils.TEMP_PREFIX


def is_remote(path) -> bool:
    """True when ``path`` names a file through a URL scheme (``gs://...``), i.e. goes through ``tf.io.gfile``."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    return isinstance(path, str) and SCHEME_RE.match(path) is not None


def split_scheme(path: str) -> Tuple[str, str]:
    """``"gs://b/x"`` -> ``("gs://", "b/x")``; a local path -> ``("", path)``."""
    m = SCHEME_RE.match(path)
    return (m.group(0), path[m.end():]) if m else ("", path)


def _gfile():
    from synthseg_tf import _env  # noqa: F401  (package settings before TensorFlow loads)

    import tensorflow as tf

    return tf.io.gfile


def _as_oserror(path: str, exc: BaseException) -> OSError:
    """A TensorFlow I/O error as the matching ``OSError`` subclass naming ``path``."""
    if isinstance(exc, OSError):
        return exc
    import tensorflow as tf

    why = (getattr(exc, "message", None) or str(exc) or "").strip()
    kinds = ((tf.errors.NotFoundError, FileNotFoundError, errno.ENOENT),
             (tf.errors.PermissionDeniedError, PermissionError, errno.EACCES),
             (tf.errors.UnauthenticatedError, PermissionError, errno.EACCES),
             (tf.errors.AlreadyExistsError, FileExistsError, errno.EEXIST),
             (tf.errors.ResourceExhaustedError, OSError, errno.ENOSPC))
    for tf_cls, cls, code in kinds:
        if isinstance(exc, tf_cls):
            return cls(code, why or os.strerror(code), path)
    if isinstance(exc, tf.errors.InvalidArgumentError) and "is a directory" in why.lower():
        return IsADirectoryError(errno.EISDIR, why, path)
    if isinstance(exc, tf.errors.FailedPreconditionError) and "not a directory" in why.lower():
        return NotADirectoryError(errno.ENOTDIR, why, path)
    return OSError(errno.EIO, why or type(exc).__name__, path)


@contextlib.contextmanager
def _tf_errors(path: str):
    """Raise TensorFlow I/O errors inside the block as ``OSError`` subclasses naming ``path``."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        raise _as_oserror(path, e) from e


# --------------------------------------------------------------------------- path strings
def join(path: str, *parts: str) -> str:
    """``os.path.join`` for local paths, ``posixpath.join`` for remote ones."""
    return posixpath.join(path, *parts) if is_remote(path) else os.path.join(path, *parts)


def dirname(path: str) -> str:
    """The parent folder (a remote path's trailing ``/`` is ignored; a bucket root is its own parent)."""
    if not is_remote(path):
        return os.path.dirname(path)
    scheme, rest = split_scheme(path)
    rest = rest.rstrip("/")
    parent = posixpath.dirname(rest)
    return scheme + (parent or rest)


def basename(path: str) -> str:
    """The last part of the path (a remote path's trailing ``/`` is ignored)."""
    if not is_remote(path):
        return os.path.basename(path)
    return posixpath.basename(split_scheme(path)[1].rstrip("/"))


def abspath(path: str) -> str:
    """Local paths: ``os.path.abspath``; remote paths unchanged."""
    return path if is_remote(path) else os.path.abspath(path)


def expanduser(path: str) -> str:
    return path if is_remote(path) else os.path.expanduser(path)


def relpath(path: str, start: str) -> str:
    """``path`` relative to ``start`` (``os.path.relpath`` for local paths; remote paths must share
    ``start``'s scheme, else ``ValueError``)."""
    if not is_remote(path) and not is_remote(start):
        return os.path.relpath(path, start)
    (s1, p1), (s2, p2) = split_scheme(path), split_scheme(start)
    if s1 != s2:
        raise ValueError(f"{path} and {start} are on different filesystems")
    return posixpath.relpath("/" + p1, "/" + p2)


# --------------------------------------------------------------------------- queries
def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    with _tf_errors(path):
        return _gfile().exists(path)


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    with _tf_errors(path):
        return _gfile().isdir(path)


def isfile(path: str) -> bool:
    if not is_remote(path):
        return os.path.isfile(path)
    with _tf_errors(path):
        g = _gfile()
        return g.exists(path) and not g.isdir(path)


def getsize(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    with _tf_errors(path):
        return int(_gfile().stat(path).length)


def listdir(path: str) -> List[str]:
    """Names in a folder (remote: without the trailing ``/`` some object stores give sub-folders)."""
    if not is_remote(path):
        return os.listdir(path)
    with _tf_errors(path):
        names = _gfile().listdir(path)
    out, seen = [], set()
    for n in names:
        n = n.rstrip("/")
        if n and n not in seen:
            seen.add(n)
            out.append(n)
    return out


def walk(top: str) -> Iterator[Tuple[str, List[str], List[str]]]:
    """``os.walk`` for local folders; ``tf.io.gfile.walk`` for remote ones (folder paths and
    sub-folder names without a trailing ``/``)."""
    if not is_remote(top):
        yield from os.walk(top)
        return
    with _tf_errors(top):
        for d, subdirs, files in _gfile().walk(top):
            yield d.rstrip("/") if not d.endswith("://") else d, [s.rstrip("/") for s in subdirs], list(files)


def glob(pattern: str) -> List[str]:
    """``glob.glob`` for local patterns, ``tf.io.gfile.glob`` for remote ones."""
    if not is_remote(pattern):
        return _glob.glob(pattern)
    with _tf_errors(pattern):
        return list(_gfile().glob(pattern))


# --------------------------------------------------------------------------- reading
def read_bytes(path: str, size: int = -1) -> bytes:
    """The file's bytes (the first ``size`` when ``size >= 0``)."""
    if not is_remote(path):
        with builtins.open(path, "rb") as f:
            return f.read(size)
    with _tf_errors(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read(size)


def read_text(path: str, encoding: str = "utf-8") -> str:
    """The file decoded as text (``UnicodeDecodeError`` for bytes that are not ``encoding``)."""
    if not is_remote(path):
        with builtins.open(path, encoding=encoding) as f:
            return f.read()
    return read_bytes(path).decode(encoding)


def open(path: str, mode: str = "r", encoding: str = "utf-8"):  # noqa: A001 - mirrors builtins.open
    """A file object: ``builtins.open`` for local paths (text modes in ``encoding``),
    ``tf.io.gfile.GFile`` for remote ones (its errors are TensorFlow's, raised on first use)."""
    if not is_remote(path):
        return builtins.open(path, mode, **({} if "b" in mode else {"encoding": encoding}))
    return _gfile().GFile(path, mode)


# --------------------------------------------------------------------------- writing
def makedirs(path: str, exist_ok: bool = True) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=exist_ok)
        return
    with _tf_errors(path):
        g = _gfile()
        if not exist_ok and g.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        g.makedirs(path)


def remove(path: str) -> None:
    if not is_remote(path):
        os.remove(path)
        return
    with _tf_errors(path):
        _gfile().remove(path)


def rmtree(path: str) -> None:
    if not is_remote(path):
        shutil.rmtree(path)
        return
    with _tf_errors(path):
        _gfile().rmtree(path)


def rename(src: str, dst: str, overwrite: bool = False) -> None:
    """Local: ``os.replace`` (``overwrite``) or ``os.rename`` after an existence check. Remote:
    ``gfile.rename`` (a copy and a delete on object stores)."""
    if not is_remote(src) and not is_remote(dst):
        if not overwrite and os.path.exists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
        os.replace(src, dst)
        return
    with _tf_errors(dst):
        _gfile().rename(src, dst, overwrite=overwrite)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` so readers never see a partial file under ``path`` (module doc); a failure
    raises :class:`~synthseg_tf.errors.StorageError` naming ``path`` and leaves no temporary file."""
    from synthseg_tf.utils import atomic_write_bytes as _local, raise_storage_error

    if not is_remote(path):
        _local(path, data)
        return
    tmp = join(dirname(path), f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{basename(path)}")
    try:
        with _tf_errors(path):
            g = _gfile()
            g.makedirs(dirname(path))
            with g.GFile(tmp, "wb") as f:
                f.write(data)
            g.rename(tmp, path, overwrite=True)
    except BaseException as e:
        with contextlib.suppress(Exception):
            if _gfile().exists(tmp):
                _gfile().remove(tmp)
        if isinstance(e, OSError):
            cause = e.__cause__  # the filesystem's own message (a GCS error says more than its errno)
            raise_storage_error(path, cause if cause is not None and (getattr(cause, "message", "") or "").strip()
                                else e)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _files_under(root: str) -> List[str]:
    """Paths of every file under ``root``, relative to it (``/``-separated)."""
    out = []
    for d, _, files in walk(root):
        rel = relpath(d, root)
        out += [f if rel in (".", "") else posixpath.join(rel, f) for f in files]
    return sorted(out)


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool = False, last: Iterable[str] = ()):
    """Build a folder under a temporary name and move it into place only on success (module doc);
    ``FileExistsError`` when ``path`` exists unless ``overwrite``. Yields the folder to fill.

    Local folders: :func:`synthseg_tf.utils.atomic_directory`. Remote folders: a temporary sibling
    folder, whose files are renamed into ``path`` when the block succeeds (those named in ``last``,
    relative to the folder, at the end); on failure it is removed and ``path`` is left as it was.
    With ``overwrite``, the old folder's ``last`` files are removed first, then the new files
    replace the old ones and old files the new folder lacks are deleted.
    """
    if not is_remote(path):
        from synthseg_tf.utils import atomic_directory as _local

        with _local(path, overwrite=overwrite) as tmp:
            yield tmp
        return
    path = path.rstrip("/")
    if exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output or remove it first")
    tmp = join(dirname(path), f".{basename(path)}.tmp-{uuid.uuid4().hex[:12]}")
    makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(Exception):
            rmtree(tmp)
        raise
    last = [posixpath.normpath(p) for p in last]
    new = _files_under(tmp)
    old = _files_under(path) if isdir(path) else []
    for rel in last:
        if rel in old:
            remove(join(path, rel))
    makedirs(path)
    for rel in sorted(new, key=lambda r: (r in last, last.index(r) if r in last else 0, r)):
        sub = dirname(join(path, rel))
        if sub != path:
            makedirs(sub)
        rename(join(tmp, rel), join(path, rel), overwrite=True)
    for rel in old:
        if rel not in new and rel not in last:
            with contextlib.suppress(FileNotFoundError):
                remove(join(path, rel))
    with contextlib.suppress(Exception):
        rmtree(tmp)


__all__ = ["SCHEME_RE", "is_remote", "split_scheme", "join", "dirname", "basename", "abspath", "expanduser",
           "relpath", "exists", "isdir", "isfile", "getsize", "listdir", "walk", "glob", "read_bytes", "read_text",
           "open", "makedirs", "remove", "rmtree", "rename", "atomic_write_bytes", "atomic_write_text",
           "atomic_directory"]


# --------------------------------------------------------------------------- staged folders
#: files uploaded after every other file of a staged folder (readers take them as "complete")
STAGE_LAST = ("config.json", "metrics.json", "summary.json", "dataset.json", "generation.json")


def _local_files(root: str) -> Dict[str, Tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of the files under a local folder."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[os.path.relpath(p, root).replace(os.sep, "/")] = (st.st_size, st.st_mtime_ns)
    return out


@contextlib.contextmanager
def staged_folder(path: str, upload: bool = True, log=None):
    """A local working copy of ``path`` for code that writes a folder with local-file APIs
    (training runs: checkpoints, Keras SavedModels, reports). Local ``path``: yielded as it is.

    Remote ``path`` (``gs://...``): its current files are downloaded into a temporary folder (so a
    run resumes from what is there), the folder is yielded, and when the block ends -- also on
    an exception or Ctrl-C, so the checkpoints written so far are kept -- every new or changed
    file is uploaded atomically (:func:`atomic_write_bytes`; the files of :data:`STAGE_LAST`
    after the others), files the block deleted are deleted remotely, and the local copy is
    removed. ``upload=False`` only downloads (an input folder). A killed process uploads nothing
    of that session."""
    import tempfile

    if not is_remote(path):
        yield path
        return
    path = path.rstrip("/")
    local = tempfile.mkdtemp(prefix="synthseg-stage-")
    say = log or (lambda m: None)
    try:
        before: Dict[str, Tuple[int, int]] = {}
        if isdir(path):
            for rel in _files_under(path):
                dst = os.path.join(local, *rel.split("/"))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with builtins.open(dst, "wb") as f:
                    f.write(read_bytes(join(path, rel)))
            before = _local_files(local)
            if before:
                say(f"{path}: working on a local copy of its {len(before)} file(s) in {local}")
        elif not upload:
            raise FileNotFoundError(errno.ENOENT, "no such folder", path)
        try:
            yield local
        finally:
            if upload:
                after = _local_files(local)
                changed = [r for r, st in after.items() if before.get(r) != st]
                changed.sort(key=lambda r: (r.rsplit("/", 1)[-1] in STAGE_LAST, r))
                for rel in changed:
                    with builtins.open(os.path.join(local, *rel.split("/")), "rb") as f:
                        atomic_write_bytes(join(path, rel), f.read())
                for rel in sorted(set(before) - set(after)):
                    with contextlib.suppress(FileNotFoundError):
                        remove(join(path, rel))
                if changed:
                    say(f"uploaded {len(changed)} file(s) to {path}")
    finally:
        shutil.rmtree(local, ignore_errors=True)
