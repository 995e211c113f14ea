"""benchmarks/generation_phases.py: the start-up / per-shard / teardown split it reports."""
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import generation_phases  # noqa: E402


def test_phases_split_start_up_steady_shards_and_teardown():
    # one worker: 5 s start-up, then a shard every 15 s; the run ends 1 s after the last shard
    start, per, tail = generation_phases.phases([20.0, 35.0, 50.0, 65.0], 66.0, 1)
    assert (start, per, tail) == pytest.approx((5.0, 15.0, 1.0))
    # two workers, 4 shards each: a round ends when its slower worker's shard lands
    times = sorted([26.3, 26.4, 41.8, 42.5, 57.5, 58.6, 73.5, 75.1])
    start, per, tail = generation_phases.phases(times, 79.1, 2)
    assert per == pytest.approx((75.1 - 26.4) / 3) and start == pytest.approx(26.4 - per)
    assert tail == pytest.approx(4.0)


def test_shard_times_reads_the_parts_in_order(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, t in enumerate((30.0, 10.0, 20.0)):
        f = parts / f"shard-{i:05d}.json"
        f.write_text("{}")
        os.utime(f, (1000.0 + t, 1000.0 + t))
    (parts / "other.txt").write_text("")
    assert generation_phases.shard_times(str(tmp_path), 1000.0) == pytest.approx([10.0, 20.0, 30.0])
