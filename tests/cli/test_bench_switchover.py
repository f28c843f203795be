"""`tandem bench switchover --store …`: the side-by-side bookkeeping, then a small real run
with the control plane on etcd (the sqlite run is in test_failover_cli.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tandemdb.bench.stores import compare, parse_stores, ratio, side_by_side


def test_stores_parse_in_the_order_given_and_refuse_the_rest():
    assert parse_stores("sqlite") == ["sqlite"]
    assert parse_stores("etcd, sqlite") == ["etcd", "sqlite"]
    for bad in ("", "mysql", "sqlite,sqlite", "sqlite,etcd,", "etcd://127.0.0.1:2379"):
        with pytest.raises(ValueError, match="--store must be"):
            parse_stores(bad)


def test_rounds_alternate_the_stores_and_the_comparison_takes_medians():
    calls: list[str] = []
    seconds = {"sqlite": iter([2.0, 4.0, 3.0]), "etcd": iter([3.0, 9.0, 4.5])}

    def run(store: str, progress, size: int) -> dict:
        calls.append(store)
        progress("measuring")
        return {"bench": "toy", "store": store, "size": size, "t": next(seconds[store]),
                "u": None if store == "etcd" else 1.0}

    said: list[str] = []
    lines = list(side_by_side(run, ["sqlite", "etcd"], 3, ["t", "u"], said.append, 1.5,
                              size=7))
    assert calls == ["sqlite", "etcd"] * 3
    assert said[:2] == ["[sqlite, round 1/3] measuring", "[etcd, round 1/3] measuring"]
    assert [line.get("round") for line in lines[:6]] == [1, 1, 2, 2, 3, 3]
    assert all(line["size"] == 7 for line in lines[:6])
    assert lines[6] == {"bench": "toy", "comparison": "etcd/sqlite", "rounds": 3,
                        "t_sqlite": 3.0, "t_etcd": 4.5, "t_ratio": 1.5,
                        "u_sqlite": 1.0, "u_etcd": None, "u_ratio": None,
                        "goal_ratio": 1.5, "t_within_goal": True}


def test_a_run_that_fails_keeps_the_lines_before_it():
    def run(store: str, progress) -> dict:
        if store == "etcd":
            raise RuntimeError("etcd run failed")
        return {"bench": "toy", "store": store}

    taken: list[dict] = []
    with pytest.raises(RuntimeError, match="etcd run failed"):
        taken.extend(side_by_side(run, ["sqlite", "etcd"], 1, ["t"]))
    assert taken == [{"bench": "toy", "store": "sqlite"}]


def test_one_store_answers_its_line_only():
    lines = list(side_by_side(lambda store, progress: {"bench": "toy", "store": store},
                              ["etcd"], 1, ["t"]))
    assert lines == [{"bench": "toy", "store": "etcd"}]


def test_ratio_is_null_when_it_cannot_be_told():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(3.0, None) is None and ratio(3.0, 0) is None
    line = compare([{"bench": "b", "store": "sqlite", "t": 0.0},
                    {"bench": "b", "store": "etcd", "t": 1.0}], ["t"], 1.5)
    assert line["t_ratio"] is None and line["t_within_goal"] is None


def test_bench_switchover_on_etcd_smoke(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "switchover",
                           "--envs", "3", "--failovers", "2", "--store", "etcd", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = [json.loads(line) for line in done.stdout.splitlines()]
    assert (result["bench"], result["store"]) == ("switchover", "etcd")
    assert (result["failovers"], result["region_envs"]) == (2, 3)
    assert result["failovers_failed"] == 0 and result["writer_errors"] == 0
    assert result["writes_acknowledged"] == result["writes_found"] > 0
    assert result["region_switch_state"] == result["region_failback_state"] == "succeeded"
    assert result["region_switch_envs_failed"] == result["region_failback_envs_failed"] == 0
    for key in ("env_unavailability_p99_ms", "rto_p99_ms", "region_switch_seconds",
                "region_failback_seconds"):
        assert isinstance(result[key], int | float) and result[key] > 0, key
    # Where the switch spent CPU: the controllers and the etcd members both worked.
    cpu = result["region_switch_cpu_seconds"]
    assert set(cpu) == {"controller", "etcd", "node", "gateway"}
    assert cpu["controller"] > 0 and cpu["etcd"] > 0
    assert result["region_switch_control_plane_cpu_seconds"] == pytest.approx(
        cpu["controller"] + cpu["etcd"], abs=0.011)
