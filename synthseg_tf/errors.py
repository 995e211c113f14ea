"""The exceptions the library raises on purpose, and the ``synthseg`` exit code of each.

Every error names the file or folder and the problem. The command line prints it as one line
(``synthseg: error: ...``) without a traceback and exits with the code below; the README's
"Failure behaviour" section lists the same table.

====  =======================================================================================
code  meaning
====  =======================================================================================
0     success
1     an unexpected error (a bug or an environment problem: the traceback is printed)
2     bad input: a dataset, spec, mask, model folder or file that cannot be used as given
      (also argparse's usage errors)
3     output conflict: the output exists and holds something else, or another run holds its lock
4     training diverged: a NaN/Inf loss; the last good checkpoint is kept
5     protocol violation: an artifact built from images outside the experiment's subset
6     storage failure: a write failed (disk full, quota, read-only filesystem); nothing partial is kept
130   interrupted (Ctrl-C); a rerun resumes
====  =======================================================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_DATA = 2
EXIT_CONFLICT = 3
EXIT_DIVERGED = 4
EXIT_PROTOCOL = 5
EXIT_STORAGE = 6
EXIT_INTERRUPTED = 130


class OutputLocked(FileExistsError):
    """Another live process holds the output folder's lock (its pid and host are in the message)."""


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or Inf; the message names the step and the checkpoint kept."""


class ModelLoadError(ValueError):
    """A folder or file given as a model is not one (or not the kind expected)."""


class StorageError(OSError):
    """Writing an output failed (disk full, permission, quota); what was written is rolled back."""


def exit_code(exc: BaseException) -> int:
    """The documented exit code of an exception (module docstring)."""
    from synthseg_tf.data.io import DataError
    from synthseg_tf.data.layouts import SpecError
    from synthseg_tf.experiments.protocol import ProtocolError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, ProtocolError):
        return EXIT_PROTOCOL
    if isinstance(exc, (DataError, SpecError, ModelLoadError, FileNotFoundError, NotADirectoryError)):
        return EXIT_BAD_DATA
    if isinstance(exc, FileExistsError):
        return EXIT_CONFLICT
    if isinstance(exc, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(exc, StorageError) or (isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS):
        return EXIT_STORAGE
    if isinstance(exc, OSError):  # e.g. an unreadable input folder (permission denied)
        return EXIT_BAD_DATA
    return EXIT_ERROR


def _storage_errnos():
    import errno

    return {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG") if hasattr(errno, n)}


_STORAGE_ERRNOS = _storage_errnos()


# exceptions the CLI reports as one line (anything else is a bug: traceback and exit 1)
def is_expected(exc: BaseException) -> bool:
    from synthseg_tf.data.io import DataError
    from synthseg_tf.data.layouts import SpecError
    from synthseg_tf.experiments.protocol import ProtocolError

    return isinstance(exc, (DataError, SpecError, ProtocolError, ModelLoadError, TrainingDiverged, StorageError,
                            FileExistsError, FileNotFoundError, NotADirectoryError, OSError))


__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_BAD_DATA", "EXIT_CONFLICT", "EXIT_DIVERGED", "EXIT_PROTOCOL",
           "EXIT_STORAGE", "EXIT_INTERRUPTED", "OutputLocked", "TrainingDiverged", "ModelLoadError",
           "StorageError", "exit_code", "is_expected"]
