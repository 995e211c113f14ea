"""scripts/selection_bias.py: selection vs evaluation deltas of classification experiments."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "selection_bias.py")


def _run(setting, seed, sel, test):
    return {"fraction": 0.25, "seed": seed, "setting": setting, "selection_macro_f1": sel,
            "metrics": {"macro_f1": test}}


def test_pairs_each_run_with_real_of_its_seed_and_summarises(tmp_path):
    runs = [_run("real", 0, 0.70, 0.80), _run("real", 1, 0.60, 0.75),
            _run("real+synthetic+finetune", 0, 0.75, 0.78),   # selection +5, evaluation -2
            _run("real+synthetic+finetune", 1, 0.61, 0.79),   # selection +1, evaluation +4
            _run("real+synthetic", 2, 0.9, 0.9)]              # no real run of seed 2: not paired
    (tmp_path / "results.json").write_text(json.dumps({"runs": runs}))
    out = subprocess.run([sys.executable, SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "seed 0: selection  +5.0  evaluation  -2.0" in out
    assert "seed 1: selection  +1.0  evaluation  +4.0" in out
    assert "seed 2" not in out
    summary = [l for l in out.splitlines() if l.startswith("real+synthetic+finetune ")]
    assert summary == ["real+synthetic+finetune       2 paired runs: selection  +3.0, evaluation  +1.0 (mean vs real); "
                       "signs agree in 1/2; selection over-states by +2.0"]


def test_a_folder_without_results_is_named(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode != 0 and "nope: no results.json" in proc.stderr
