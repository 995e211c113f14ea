"""Errors stay visible: importing the library hides nothing of TensorFlow's (its C++ log level,
loggers and warning filters are the user's); only the command line quiets its own output."""
import json
import os
import subprocess
import sys

PROBE = r"""
import json, logging, os, sys, warnings
before = list(warnings.filters)
import synthseg_tf, synthseg_tf.data, synthseg_tf.models.unet, synthseg_tf.training.segmentation  # noqa
print(json.dumps({
    "tf_cpp": os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
    "ignores_added": [str(f) for f in warnings.filters if f not in before and f[0] == "ignore"
                      and f[2] in (DeprecationWarning, FutureWarning, UserWarning)],
    "tf_logger": logging.getLogger("tensorflow").level,
    "root_filters": len(logging.getLogger().filters),
    "sm_framework": os.environ.get("SM_FRAMEWORK"),
}))
"""


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def test_importing_the_library_leaves_tensorflow_logs_and_warning_filters_alone():
    out = subprocess.run([sys.executable, "-c", PROBE], env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tf_cpp"] is None  # TensorFlow's own C++ errors still reach the user
    assert got["ignores_added"] == []  # no process-wide warning filters (third-party ones use other categories)
    assert got["tf_logger"] < 40  # not raised to ERROR by the library
    assert got["root_filters"] == 0
    assert got["sm_framework"] == "tf.keras"  # the one setting the library needs to work


def test_the_cli_quiets_its_own_output_and_respects_the_users_setting():
    code = "import os; from synthseg_tf import quiet; quiet(); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "3", out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", code], env=dict(_env(), TF_CPP_MIN_LOG_LEVEL="0"),
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0"
    # main() itself calls quiet() before any subcommand imports TensorFlow
    src = open(os.path.join(os.path.dirname(__file__), "..", "..", "synthseg_tf", "cli.py")).read()
    assert "quiet()" in src.split("def main(", 1)[1].split("parser = build_parser()")[0]


def test_every_documented_error_has_its_exit_code():
    import errno

    from synthseg_tf.data import DataError, SpecError
    from synthseg_tf.errors import (ModelLoadError, OutputLocked, StorageError, TrainingDiverged, exit_code,
                                    is_expected)
    from synthseg_tf.experiments.protocol import ProtocolError

    cases = {DataError("a.png", "not an image"): 2, SpecError("bad"): 2, ModelLoadError("x"): 2,
             FileNotFoundError("x"): 2, PermissionError(errno.EACCES, "unreadable input"): 2,
             FileExistsError("x"): 3, OutputLocked("x"): 3, TrainingDiverged("nan"): 4, ProtocolError("x"): 5,
             StorageError(errno.EACCES, "write failed"): 6, OSError(errno.ENOSPC, "No space left on device"): 6,
             KeyboardInterrupt(): 130, RuntimeError("a bug"): 1}
    assert {type(e).__name__ + str(getattr(e, "errno", "")): exit_code(e) for e in cases} == \
        {type(e).__name__ + str(getattr(e, "errno", "")): c for e, c in cases.items()}
    assert not is_expected(RuntimeError("a bug"))  # bugs keep their traceback
