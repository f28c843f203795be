"""`tandem bench engine` end to end, small: every figure is there and positive."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_engine_prints_its_figures_side_by_side(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "engine",
                           "--transactions", "40", "--rounds", "2", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    for field in ("plain_tx_per_s", "journaled_tx_per_s", "guarded_tx_per_s",
                  "unguarded_twin_tx_per_s", "group_commit_tx_per_s", "apply_entries_per_s"):
        assert figures[field] > 0, field
    ratio = figures["unguarded_twin_tx_per_s"] / figures["guarded_tx_per_s"]
    assert abs(figures["guard_overhead_ratio"] - ratio) < 0.01
    assert figures["applied_entries"] == 41  # the CREATE TABLE and 40 inserts
