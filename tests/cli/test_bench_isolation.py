"""`tandem bench isolation` (issue 9, item 6): one real run, and its options.

The run is the noisy-neighbour check itself: while a production environment runs the
largest statements allowed on the node, a basic environment on the same node (no
failsafe lease to fall back on) writes on, and neither gets a single error: the node's
lease never lapses. No figure is asserted; the benchmark prints them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tandemdb.bench.isolation import largest_value_bytes
from tandemdb.cli.main import app


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["bench", "isolation", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--seconds", "--lease-ttl", "--clients", "--value-mib", "--json"):
        assert option in result.output, option


def test_the_victim_gets_no_error_next_to_the_largest_statements(tmp_path: Path):
    # A 3 s lease (2.5 s after the margin): the old heartbeat, held up by a lag look-up
    # waiting on the neighbour's engine lock, let shorter ones lapse; item 6's regression
    # test is tests/node/test_heartbeat_thread.py (the engine's lock held, in-process).
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "isolation",
                           "--seconds", "1", "--lease-ttl", "3", "--clients", "1",
                           "--json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["neighbour_value_mib"] == round(largest_value_bytes() / (1 << 20), 1)
    assert result["neighbour_statements"] >= 3  # a whole round at least
    assert result["neighbour_errors"] == 0, result.get("neighbour_error_samples")
    assert result["victim_writes_noisy"] > 0
    assert result["victim_errors_baseline"] == 0
    assert result["victim_errors_noisy"] == 0, result.get("victim_error_samples_noisy")
    for key in ("victim_p50_ms_ratio", "victim_p99_ms_ratio", "victim_max_ms_ratio",
                "lease_min_remaining_s_noisy"):
        assert key in result
