"""`tandem bench node-failure`: its bookkeeping in isolation, then one small real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tandemdb.bench.node_failure import acknowledged_twice, has_sync_local
from tandemdb.cli.main import app
from tandemdb.testing import Ack


def ack(id_: int, lsn: int, epoch: int = 1, env: str = "e") -> Ack:
    return Ack(id_, env, lsn, epoch, 0.0, 0.0)


def test_one_lsn_of_one_epoch_acknowledged_for_two_ids_is_reported():
    assert acknowledged_twice([ack(1, 5), ack(2, 6), ack(3, 5, epoch=2)]) == []
    assert acknowledged_twice([ack(1, 5), ack(2, 5, env="other")]) == []
    [line] = acknowledged_twice([ack(1, 5), ack(2, 6), ack(3, 5)])
    assert "lsn 5 of epoch 1" in line and "1 and 3" in line


def test_protected_needs_a_sync_local_secondary_and_nothing_behind():
    primary = {"node": "west-1", "role": "primary", "kind": "geo", "sync": False}
    local = {"node": "west-2", "role": "secondary", "kind": "local", "sync": True}
    geo = {"node": "east-1", "role": "secondary", "kind": "geo", "sync": False}
    assert has_sync_local({"replicas": [primary, local, geo]})
    assert not has_sync_local({"replicas": [primary, {**local, "sync": False}, geo]})
    assert not has_sync_local({"replicas": [primary, geo]})
    assert not has_sync_local({"replicas": [primary, local, {**geo, "behind": True}]})


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["bench", "node-failure", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--envs", "--json"):
        assert option in result.output, option


def test_bench_node_failure_smoke(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "node-failure",
                           "--envs", "2", "--json"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert (result["envs"], result["nodes_per_region"]) == (2, 2)
    assert result["goal_seconds"] == result["node_grace_seconds"] + \
        result["lease_ttl_seconds"] + 1
    assert result["node_failover_state"] == "succeeded", result
    assert result["all_envs_writable"], result
    assert result["acked_lost"] == 0 and result["acknowledged_twice"] == 0, result
    assert result["region_failed_over"] is False, result
    assert result["re_replication_seconds"] is not None, result  # it rejoined, sync again
    assert result["checksums_equal"] is True, result
    assert result["rewound_acked"] == 0 and result["rewound_all_unacknowledged"], result
    assert set(result["node_failover_rto_per_env"]) == {"nodeloss0", "nodeloss1"}
    assert result["writes_acknowledged"] > 0
