"""The quickstart notebook runs top to bottom (its code cells, in order, in a fresh process)."""
import json
import os
import subprocess
import sys

import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "quickstart.ipynb")


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    with open(NOTEBOOK, encoding="utf-8") as f:
        nb = json.load(f)
    code = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    script = tmp_path / "notebook.py"
    script.write_text(code)
    env = dict(os.environ, SYNTHSEG_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "samples in" in res.stdout and "real+synthetic" in res.stdout
