"""`tandem bench failover`: the bookkeeping in isolation, then small real runs (sqlite,
etcd side by side; a partition; a whole site lost on etcd)."""

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
    for option in ("--grace", "--lease-ttl", "--envs", "--partition", "--site", "--leader-in",
                   "--store", "--rounds", "--json"):
        assert option in result.output, option


@pytest.mark.parametrize(("args", "says"), [
    (["--store", "etcd", "--partition"], "--partition needs --store sqlite"),
    (["--store", "sqlite,etcd", "--partition"], "--partition needs --store sqlite"),
    (["--store", "zookeeper"], "--store must be sqlite, etcd, or both"),
    (["--store", "etcd,etcd"], "--store must be sqlite, etcd, or both"),
    (["--site", "--partition"], "choose one of --partition and --site"),
    (["--leader-in", "north"], "--leader-in must be a site with a controller"),
])
def test_refuses_what_cannot_be_staged_before_starting_anything(args: list[str], says: str):
    result = CliRunner().invoke(app, ["bench", "failover", *args], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert says in " ".join(result.output.split()), result.output


def check_run(result: dict, store: str, outage: str) -> None:
    """One run's line: its store, its settings, and an outage that ended as it must."""
    assert (result["bench"], result["store"], result["outage"]) == ("failover", store, outage)
    # Partitioned, west answers the gateway until its leases run out: never longer.
    assert result["old_epoch_last_ack_seconds"] <= result["lease_ttl_seconds"]
    assert (result["envs"], result["grace_seconds"], result["lease_ttl_seconds"],
            result["goal_seconds"]) == (1, 2.0, 1.5, 5.5)
    assert result["region_failover_state"] == "succeeded" and result["rejoined"]
    assert result["all_envs_writable"]
    assert isinstance(result["detect_to_writable_seconds"], float)
    assert result["detect_to_writable_seconds"] >= result["grace_seconds"]
    assert result["failover_operation_seconds"] == pytest.approx(
        result["failed_over_seconds"] - result["declared_down_seconds"], abs=0.002)
    assert result["lost_equals_acked_missing"], result
    assert result["lost_entries"] >= result["acked_missing"]
    assert result["writes_acknowledged"] > 0


def bench_failover(tmp_path: Path, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "failover",
                           "--envs", "1", "--json", *args],
                          capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_bench_failover_partition_smoke(tmp_path: Path):
    [result] = bench_failover(tmp_path, "--partition")
    check_run(result, "sqlite", "partition")
    assert result["processes_lost"] == [] and result["leader_site_at_outage"] is None


def test_bench_failover_on_both_stores_side_by_side(tmp_path: Path):
    """`--store sqlite,etcd`: a line per store, the same measurement, then the ratios."""
    sqlite, etcd, comparison = bench_failover(tmp_path, "--store", "sqlite,etcd")
    for result, store in ((sqlite, "sqlite"), (etcd, "etcd")):
        check_run(result, store, "kill")
        assert result["processes_lost"] == ["west-1"]  # the region's nodes, nothing else
    assert sqlite["leader_site_at_outage"] is None and sqlite["etcd_leader_at_outage"] is None
    assert etcd["leader_site_at_outage"] in ("west", "east", "witness")
    assert etcd["etcd_leader_at_outage"] in ("etcd-west", "etcd-east", "etcd-witness")
    assert (comparison["bench"], comparison["comparison"], comparison["rounds"]) == (
        "failover", "etcd/sqlite", 1)
    for figure in ("detect_to_writable_seconds", "failed_over_seconds",
                   "declared_down_seconds", "failover_operation_seconds"):
        assert comparison[f"{figure}_sqlite"] == sqlite[figure]
        assert comparison[f"{figure}_etcd"] == etcd[figure]
        assert comparison[f"{figure}_ratio"] == round(etcd[figure] / sqlite[figure], 3)
    assert comparison["goal_ratio"] == 1.5
    assert comparison["detect_to_writable_seconds_within_goal"] == (
        comparison["detect_to_writable_seconds_ratio"] <= 1.5)


def test_bench_failover_of_a_whole_site_on_etcd(tmp_path: Path):
    """`--site --leader-in west`: the region's node, controller (the leader), gateway and
    etcd member go at once; a follower takes over, the writer goes on through east's
    gateway, and what was lost is exactly what was acknowledged and is missing."""
    [result] = bench_failover(tmp_path, "--store", "etcd", "--site", "--leader-in", "west")
    check_run(result, "etcd", "site")
    assert sorted(result["processes_lost"]) == ["controller-west", "etcd-west",
                                                "gateway-west", "west-1"]
    assert result["leader_site_at_outage"] == "west"


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
