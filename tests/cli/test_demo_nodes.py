"""`tandem demo` with its default of 2 nodes per region: the environment it writes into has
a local sync secondary, which its catch-up and checksum checks read too (every secondary,
not one per role), and every check passes (tests/cli/test_bench_failover.py checks the
outage part)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_checks_the_local_secondary_too(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "demo", "--rows", "20",
                           "--files", "2", "--json"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"], report
    assert report["local_secondaries"] == ["west-2"] and report["local_secondaries_ok"]
    assert report["checksum_local"] == [report["checksum_west"]] == [report["checksum_east"]]
    assert report["checksums_equal"] and report["rows_in_east"] == 20
