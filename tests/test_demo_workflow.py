"""`synthseg demo --quick`: the whole flow (data, GAN, U-Net, Beam generation, experiment, report)."""
import json
import os

import pytest

from synthseg_tf.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNTHSEG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "demo.json").read_text())
    assert "Demo finished" in printed and result["report_html"] in printed
    assert result["kept"] == 48 and os.path.isfile(result["report_html"])
    summary = json.loads((out / "experiment" / "summary.json").read_text())
    assert {r["setting"] for r in summary["rows"]} == {"real", "real+synthetic"}
    # A rerun finds every step done and only rewrites the report.
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    again = capsys.readouterr().out
    assert "already trained" in again and "already complete" in again
