"""Small shared helpers: atomic file output, run-directory guards, output locks and path checks.

* :func:`atomic_write_bytes` / :func:`atomic_writer`: a file appears complete or not at all
  (temporary name ``.tmp-*`` in the same folder + rename); a failed write (disk full,
  permission, quota) raises :class:`~synthseg_tf.errors.StorageError` naming the file and
  removes the temporary file. :data:`TEMP_PREFIX` names the temporary files, so a process
  killed mid-write leaves only names :func:`is_temp_name` recognises (and callers sweep).
* :func:`output_lock`: one writer per output folder (owner pid, host and start time in the
  lock file; stale locks of dead processes on this host are taken over with a warning).
* :func:`safe_join`: a relative path read from a manifest, refused when it escapes its root.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from typing import Callable, Dict, Iterator, Optional

_UMASK = os.umask(0)
os.umask(_UMASK)

TEMP_PREFIX = ".tmp-"


def is_temp_name(name: str) -> bool:
    """A temporary file of an atomic write (``.tmp-*``, ``*.tmp``): never a finished output."""
    return name.startswith(TEMP_PREFIX) or name.endswith(".tmp")


def storage_error(path: str, exc: BaseException, action: str = "writing") -> OSError:
    """``exc`` (an ``OSError`` or a TensorFlow I/O error) as a :class:`StorageError` naming ``path``."""
    from synthseg_tf.errors import StorageError

    if isinstance(exc, StorageError):
        return exc
    code = getattr(exc, "errno", None)
    why = os.strerror(code) if isinstance(code, int) and code else (getattr(exc, "message", None) or str(exc))
    hint = " (disk full? free space or choose another --out)" if code in (_errno.ENOSPC, _errno.EDQUOT) else ""
    err = StorageError(f"{action} {path} failed: {why}{hint}; nothing partial was kept")
    err.errno, err.path = code or _errno.EIO, path  # (no .filename: it would change str(err))
    return err


def raise_storage_error(path: str, exc: BaseException, action: str = "writing"):
    """Raise ``exc`` as :func:`storage_error` (from ``exc``; ``exc`` itself when it already is one)."""
    err = storage_error(path, exc, action)
    if err is exc:
        raise exc
    raise err from exc


@contextlib.contextmanager
def atomic_writer(path: str, mode: str = "wb") -> Iterator:
    """``with atomic_writer(path, "w") as f: ...``: the file appears at ``path`` only when the
    block ends without error (temp file + rename); an ``OSError`` raises :class:`StorageError`
    naming ``path``; the temporary file is always removed on failure."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=d)
    except OSError as e:
        raise_storage_error(path, e)
    try:
        kw = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise_storage_error(path, e)
        raise


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers never see a partial file (temp file + rename).

    A failed write raises :class:`~synthseg_tf.errors.StorageError` (an ``OSError``) naming
    ``path``; no partial or temporary file is left."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_temp_files(folders, log: Optional[Callable] = None) -> int:
    """Delete the temporary files (:func:`is_temp_name`) an interrupted run left directly in
    ``folders``; returns how many. Only call it while holding the folder's :func:`output_lock`
    (another live writer's temporary files would vanish under it)."""
    removed = 0
    for d in folders:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if is_temp_name(name) and os.path.isfile(p) and not os.path.islink(p):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(p)
                    removed += 1
    if removed and log is not None:
        log(f"removed {removed} temporary file(s) left by an interrupted run")
    return removed


# --------------------------------------------------------------------------- paths read back
def safe_join(root: str, rel: str, where: str = "") -> str:
    """``root/rel`` for a relative path read back from a manifest; ``ValueError`` (naming
    ``where``, the entry and the problem) when ``rel`` is absolute, has a ``..`` part, or
    resolves (through a symlink) outside ``root``."""
    from synthseg_tf.data.io import DataError

    src = where or root
    if not isinstance(rel, str) or not rel:
        raise DataError(src, f"entry path {rel!r} is not a relative file path")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise DataError(src, f"entry path {rel!r} is absolute; manifest paths must stay inside {root}")
    if any(part == ".." for part in rel.replace("\\", "/").split("/")):
        raise DataError(src, f"entry path {rel!r} escapes {root} ('..')")
    path = os.path.join(root, rel)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise DataError(src, f"entry path {rel!r} resolves to {real}, outside {root} (a symlink pointing out?)")
    return path


# --------------------------------------------------------------------------- output locks
LOCK_FILE = ".synthseg.lock"


def _is_remote(path: str) -> bool:
    return "://" in path


class _RemoteFiles:
    """The few file operations a remote lock needs, through Beam's ``FileSystems`` when Beam knows
    the path's scheme (``gs://``, ``s3://``, ``hdfs://`` or one a ``--beam_plugins`` module
    registers: the storage the generation workers write to), else through ``tf.io.gfile``."""

    def __init__(self, path: str):
        self.beam = None
        try:
            from apache_beam.io.filesystems import FileSystems

            FileSystems.get_filesystem(path)
            self.beam = FileSystems
        except (ImportError, ValueError):
            import tensorflow as tf

            self.gf = tf.io.gfile

    def exists(self, path: str) -> bool:
        return self.beam.exists(path) if self.beam else self.gf.exists(path)

    def read(self, path: str) -> bytes:
        if self.beam:
            if not self.beam.exists(path):
                raise FileNotFoundError(path)
            with self.beam.open(path) as f:
                return f.read()
        with self.gf.GFile(path, "rb") as f:
            return f.read()

    def write(self, folder: str, path: str, data: bytes) -> None:
        if self.beam:
            with contextlib.suppress(IOError, OSError):
                self.beam.mkdirs(folder)
            with self.beam.create(path) as f:
                f.write(data)
            return
        self.gf.makedirs(folder)
        with self.gf.GFile(path, "wb") as f:
            f.write(data)

    def remove(self, path: str) -> None:
        if self.beam:
            self.beam.delete([path])
        else:
            self.gf.remove(path)


def _proc_start(pid: int) -> Optional[str]:
    """The kernel start time of ``pid`` (clock ticks since boot; Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _owner_alive(rec: Dict) -> Optional[bool]:
    """True/False for an owner on this host; None when it cannot be told (another host)."""
    if rec.get("host") != socket.gethostname():
        return None
    try:
        pid = int(rec["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except (KeyError, TypeError, ValueError, OSError):
        return None
    start = _proc_start(pid)
    if rec.get("proc_start") and start and start != rec["proc_start"]:
        return False  # the pid was reused by a newer process
    return True


def _read_lock(path: str) -> Optional[Dict]:
    try:
        if _is_remote(path):
            data = _RemoteFiles(path).read(path)
        else:
            with open(path, "rb") as f:
                data = f.read()
        rec = json.loads(data.decode("utf-8"))
        return rec if isinstance(rec, dict) and "pid" in rec else None
    except FileNotFoundError:
        raise
    except Exception:  # noqa: BLE001 - empty (being written) or damaged
        return None


def _describe(rec: Dict) -> str:
    me = " (this process)" if rec.get("pid") == os.getpid() and rec.get("host") == socket.gethostname() else ""
    return (f"pid {rec.get('pid')}{me} on host {rec.get('host')} (since {rec.get('started', '?')}"
            f"{', ' + rec['purpose'] if rec.get('purpose') else ''})")


def _locked(folder: str, path: str, rec: Optional[Dict], alive: Optional[bool]):
    from synthseg_tf.errors import OutputLocked

    if rec is None:
        why = "its lock file is unreadable (empty or damaged)"
    elif alive is None:
        why = (f"it is locked by {_describe(rec)}, which cannot be checked from host {socket.gethostname()}")
    else:
        why = f"it is locked by a running {_describe(rec)}"
    err = OutputLocked(f"{folder}: {why}; lock file {path}. Wait for that run to finish or stop it; if it is gone, "
                       f"delete {path} and run again")
    err.path, err.owner = path, rec
    return err


@contextlib.contextmanager
def output_lock(folder: str, purpose: str = "", log: Callable = print, name: str = LOCK_FILE,
                wait_unreadable_s: float = 2.0, stale_unreadable_s: float = 30.0):
    """Hold ``folder/name`` for the block: one writer per output folder.

    The lock file holds the owner's pid, host, kernel start time (tells a reused pid apart),
    start date and ``purpose`` (JSON). A second process gets
    :class:`~synthseg_tf.errors.OutputLocked` naming the owner and the lock file. A lock
    whose owner is dead (same host; pid gone or reused) is *stale*: it is taken over with a
    warning through ``log``. An owner on another host cannot be checked, so it counts as live.
    The lock is released (the file removed, if it is still ours) when the block exits, also
    on an exception; a SIGKILLed owner leaves a stale lock the next run takes over.

    Local folders: the file is created with ``O_CREAT | O_EXCL`` (atomic), written at once; a
    reader that finds it empty waits ``wait_unreadable_s`` for the content; an unreadable lock
    older than ``stale_unreadable_s`` is stale (an owner killed between create and write). A
    stale lock is removed only under a second ``O_EXCL`` guard file (``<lock>.takeover``) and
    after checking, under it, that it is still the lock judged stale; the new lock is then
    created with ``O_EXCL``, so two processes taking over the same stale lock cannot both win.

    Non-local paths (``gs://``, ...; Beam's ``FileSystems`` or ``tf.io.gfile``): object stores have no exclusive create
    through gfile, so the best available is used: check, write, re-read after a short pause
    and keep the lock only if it still holds our token (last writer wins; a race within that
    pause can still let two runs in, which a runner's own job naming should prevent).
    """
    rec = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
           "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "purpose": purpose, "token": uuid.uuid4().hex,
           "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:8] if sys.argv else []}
    path = folder.rstrip("/") + "/" + name if _is_remote(folder) else os.path.join(folder, name)
    (_acquire_remote if _is_remote(folder) else _acquire_local)(folder, path, rec, log, wait_unreadable_s,
                                                                 stale_unreadable_s)
    try:
        yield path
    finally:
        _release(path, rec)


def _acquire_local(folder, path, rec, log, wait_unreadable_s, stale_unreadable_s) -> None:
    data = json.dumps(rec, sort_keys=True).encode("utf-8")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise_storage_error(folder, e, "creating")
    for _ in range(20):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_UMASK)
        except FileExistsError:
            pass
        except OSError as e:
            raise_storage_error(path, e, "creating lock")
        else:
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.remove(path)
                raise_storage_error(path, e, "writing lock")
            return
        # the lock exists: whose is it?
        try:
            other = _read_lock(path)
            deadline = time.time() + wait_unreadable_s
            while other is None and time.time() < deadline:  # created but not yet written
                time.sleep(0.05)
                other = _read_lock(path)
            age = time.time() - os.path.getmtime(path)
        except FileNotFoundError:
            continue  # released meanwhile: try again
        if other is None:
            if age < stale_unreadable_s:
                raise _locked(folder, path, None, None)
            alive = False
        else:
            alive = _owner_alive(other)
        if alive is not False:
            raise _locked(folder, path, other, alive)
        # stale: only the holder of the take-over guard may remove it, after checking (under the
        # guard) that it is still the lock judged stale; the loop then creates ours with O_EXCL
        with _takeover_guard(path, rec) as got:
            if not got:
                continue
            try:
                if _read_lock(path) != other:
                    continue  # changed meanwhile: judge again
                os.remove(path)
            except FileNotFoundError:
                continue
        log(f"warning: {path}: took over a stale lock of "
            + (_describe(other) + ", which is no longer running" if other else "an owner killed while writing it"))
    raise _locked(folder, path, _read_lock(path) if os.path.exists(path) else None, True)


@contextlib.contextmanager
def _takeover_guard(path: str, rec: Dict, wait_s: float = 5.0):
    """``path + ".takeover"`` held with ``O_EXCL`` while a stale lock is removed (yields False when
    it could not be had within ``wait_s``). A guard left by a dead process is removed."""
    guard = path + ".takeover"
    deadline = time.time() + wait_s
    fd = None
    while fd is None:
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_UMASK)
        except FileExistsError:
            try:
                holder = _read_lock(guard)
                old = time.time() - os.path.getmtime(guard) > 10
            except FileNotFoundError:
                continue
            if (holder is not None and _owner_alive(holder) is False) or (holder is None and old):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(guard)
                continue
            if time.time() > deadline:
                yield False
                return
            time.sleep(0.01)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(json.dumps(rec, sort_keys=True).encode("utf-8"))
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.remove(guard)


def _acquire_remote(folder, path, rec, log, wait_unreadable_s, stale_unreadable_s) -> None:
    fs = _RemoteFiles(path)
    if fs.exists(path):
        other = _read_lock(path)
        alive = _owner_alive(other) if other else None
        if alive is not False:
            raise _locked(folder, path, other, alive)
        log(f"warning: {path}: took over a stale lock of {_describe(other)}, which is no longer running")
    try:
        fs.write(folder, path, json.dumps(rec, sort_keys=True).encode("utf-8"))
    except Exception as e:  # noqa: BLE001 - OSError, TensorFlow's OpError, a Beam filesystem's errors
        raise_storage_error(path, e, "writing lock")
    time.sleep(0.5)
    now = _read_lock(path)
    if not now or now.get("token") != rec["token"]:
        raise _locked(folder, path, now, True)


def _release(path: str, rec: Dict) -> None:
    try:
        cur = _read_lock(path)
    except FileNotFoundError:
        return
    if cur is None or cur.get("token") != rec["token"]:
        return  # no longer ours (taken over after we were presumed dead): leave it
    with contextlib.suppress(Exception):
        if _is_remote(path):
            _RemoteFiles(path).remove(path)
        else:
            os.remove(path)


@contextlib.contextmanager
def atomic_directory(path: str, overwrite: bool = False):
    """Build a directory under a temporary name and move it into place only on success.

    Refuses (``FileExistsError``) when ``path`` already exists unless ``overwrite``.
    Yields the temporary directory to fill.
    """
    path = os.path.abspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another output or remove it first")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        old = tmp + ".old"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
