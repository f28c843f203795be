"""`tandem bench failover`: the bookkeeping in isolation, then one small real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandemdb.bench.failover import compare, lag_entries, lost_writes
from tandemdb.cli.main import app


def bundle(epoch: int, ids: list[int]) -> dict:
    return {"fork_lsn": 10, "epoch": epoch, "rewound": True, "entries": [
        {"lsn": 11 + k, "committed_at": 0.0, "tables": ["outage"], "changes": [
            {"table": "outage", "op": "insert", "before": None, "after": {"id": i, "at": 0.0}}]}
        for k, i in enumerate(ids)]}


def test_lost_writes_counts_entries_of_one_failover():
    answer = {"environment": "e", "bundles": [bundle(2, [7, 8]), bundle(4, [20])]}
    assert lost_writes(answer, 2) == (2, {7, 8})
    assert lost_writes(answer) == (3, {7, 8, 20})


def test_compare_allows_writes_whose_answer_never_came():
    # 5 and 6 acknowledged and lost; 7 was in flight at the kill: lost, never answered.
    assert compare({1, 2, 5, 6}, {1, 2}, {5, 6, 7}, {7})["equal"]
    assert not compare({1, 2, 5, 6}, {1, 2}, {5}, set())["equal"]  # 6 is gone for good
    assert not compare({1, 2}, {1, 2}, {9}, set())["equal"]  # 9: nobody wrote it
    assert compare({1, 2, 5}, {1, 2}, {5}, set())["acked_missing"] == [5]


def test_lag_is_the_primarys_own_report():
    view = {"primary_lsn": 90, "replicas": [
        {"role": "primary", "applied_lsn": 90, "lag_entries": 0},
        {"role": "secondary", "applied_lsn": 60, "lag_entries": 2}]}
    assert lag_entries(view) == 2


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["bench", "failover", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in ("--grace", "--lease-ttl", "--envs", "--partition", "--json"):
        assert option in result.output, option


@pytest.mark.parametrize("outage", ["kill", "partition"])
def test_bench_failover_smoke(tmp_path: Path, outage: str):
    extra = ["--partition"] if outage == "partition" else []
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "failover",
                           "--envs", "1", "--json", *extra],
                          capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outage"] == outage
    # Partitioned, west answers the gateway until its leases run out: never longer.
    assert result["old_epoch_last_ack_seconds"] <= result["lease_ttl_seconds"]
    assert (result["envs"], result["grace_seconds"], result["lease_ttl_seconds"],
            result["goal_seconds"]) == (1, 2.0, 1.5, 5.5)
    assert result["region_failover_state"] == "succeeded" and result["rejoined"]
    assert result["all_envs_writable"]
    assert isinstance(result["detect_to_writable_seconds"], float)
    assert result["detect_to_writable_seconds"] >= result["grace_seconds"]
    assert result["lost_equals_acked_missing"], result
    assert result["lost_entries"] >= result["acked_missing"]


def test_demo_folds_ids_into_ranges():
    from tandemdb.demo_outage import EN_DASH, ranges

    assert ranges([9, 3, 4, 5, 12, 13]) == f"3{EN_DASH}5, 9, 12{EN_DASH}13"
    assert EN_DASH == "\N{EN DASH}"
    assert ranges([]) == "none" and ranges([7]) == "7"


def test_demo_with_its_unplanned_outage(tmp_path: Path):
    """The main job end to end, small, with its default of 2 nodes per region: the
    environment it writes into has a local sync secondary, which its catch-up and checksum
    checks read too (every secondary, not one per role); its outage part must pass every
    check."""
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "demo", "--rows", "10",
                           "--files", "1", "--json"],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ok"] and report["outage_ok"], report
    assert report["local_secondaries"] == ["west-2"] and report["local_secondaries_ok"]
    assert report["checksum_local"] == [report["checksum_west"]] == [report["checksum_east"]]
    assert report["checksums_equal"] and report["rows_in_east"] == 10
    assert report["outage_lost_equals_acked_missing"] and report["outage_final_ok"]
    assert report["outage_replay_conflicts"] == 1  # the orders row changed again in east
    assert report["outage_lost_entries"] >= report["outage_acked_missing"] > 0
