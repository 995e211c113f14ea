"""`synthseg demo --quick`: the whole flow under the protocol (data, per-subset GAN, Beam generation,
copy-paste set, U-Nets in several settings, report), and a rerun that reuses every step."""
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
    assert os.path.isfile(result["report_html"])
    summary = json.loads((out / "experiment" / "summary.json").read_text())
    assert {r["setting"] for r in summary["rows"]} == {"real", "real+copypaste", "real+synthetic"}
    # the protocol: the GAN and the synthetic set come from the subset's fit images only
    cell = os.path.join(str(out), "experiment", "subsets", "frac0.5-subset0")
    fit = set(json.loads(open(os.path.join(cell, "subset.json")).read())["fit"])
    assert set(json.loads(open(os.path.join(cell, "gan", "config.json")).read())["train_source_ids"]) == fit
    assert result["kept"] == round(1.5 * len(fit))
    (c,) = summary["protocol"]["cells"]
    assert c["fit_images"] == len(fit)
    # A rerun finds every step done and only rewrites the report.
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    again = capsys.readouterr().out
    assert "reusing" in again and "training U-Net" not in again and "training pix2pix" not in again
