"""A Beam filesystem for tests: ``sharedfs://a/b`` lives under ``$SYNTHSEG_SHAREDFS_ROOT/a/b``.

It stands for remote object storage (``gs://``): no directories, nothing reachable through
local-file APIs under the URL itself. Worker processes load it through ``--beam_plugins``
(``sharedfs_plugin``, with this folder on ``PYTHONPATH``), as Dataflow workers would load a
custom filesystem. Every operation is counted per process in ``$ROOT/.ops/<pid>`` so a test can
check that the workers, not only the driver, wrote through it.
"""
import os
import posixpath

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

SCHEME = "sharedfs"
PREFIX = SCHEME + "://"


def _root() -> str:
    root = os.environ.get("SYNTHSEG_SHAREDFS_ROOT")
    if not root:
        raise BeamIOError("SYNTHSEG_SHAREDFS_ROOT is not set")
    return root


def _count(op: str) -> None:
    d = os.path.join(_root(), ".ops")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, str(os.getpid())), "a", encoding="utf-8") as f:
        f.write(op + "\n")


class SharedFileSystem(FileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    @staticmethod
    def _local(path: str) -> str:
        if not path.startswith(PREFIX):
            raise BeamIOError(f"not a {PREFIX} path: {path}")
        rest = path[len(PREFIX):].lstrip("/")
        return os.path.join(_root(), "store", *rest.split("/"))

    @staticmethod
    def _remote(local: str) -> str:
        return PREFIX + os.path.relpath(local, os.path.join(_root(), "store")).replace(os.sep, "/")

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *paths)

    def split(self, path):
        return posixpath.split(path)

    def has_dirs(self):
        return False

    def mkdirs(self, path):
        pass  # object stores have no folders

    def _list(self, dir_or_prefix):
        store = os.path.join(_root(), "store")
        for r, _, files in os.walk(store):
            for f in files:
                local = os.path.join(r, f)
                remote = self._remote(local)
                if remote.startswith(dir_or_prefix):
                    st = os.stat(local)
                    yield FileMetadata(remote, st.st_size, st.st_mtime)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        _count("create")
        local = self._local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return open(local, "wb")

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        _count("open")
        return open(self._local(path), "rb")

    def copy(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            with open(self._local(s), "rb") as f:
                data = f.read()
            with self.create(d) as f:
                f.write(data)

    def rename(self, source_file_names, destination_file_names):
        _count("rename")
        for s, d in zip(source_file_names, destination_file_names):
            dst = self._local(d)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(self._local(s), dst)

    def exists(self, path):
        return os.path.isfile(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def delete(self, paths):
        errors = {}
        for p in paths:
            try:
                os.remove(self._local(p))
            except OSError as e:
                errors[p] = e
        if errors:
            raise BeamIOError("Delete operation failed", errors)
