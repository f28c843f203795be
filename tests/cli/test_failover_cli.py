"""`tandem failover`, `tandem region failover|failback|list`, `tandem bench switchover`.

Most tests run the real CLI (Typer's runner, in this process) against a real deployment:
controller, west-1, east-1 and gateway as processes, shared by this module's tests, which
run in order (each leaves the deployment as the next expects). The renderings of region
operations with a failed environment are checked against a scripted API instead (an httpx
MockTransport), because a real failure is hard to provoke on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tandemdb.bench.switchover import longest_gap, percentile
from tandemdb.cli import failover as cli_failover
from tandemdb.cli.main import app
from tandemdb.client import Client
from tandemdb.client.operations import (
    child_counts,
    data_loss_entries,
    environment_results,
    max_rto_seconds,
    merged_results,
)
from tandemdb.testing import LocalDeployment
from tests.gateway.cluster import deployed as running

runner = CliRunner()
CONNECTION = ["--json", "--url", "--token", "--data"]


# --- help and pure helpers (no deployment) ---------------------------------------------

@pytest.mark.parametrize("command,options", [
    (["failover"], ["--mode", "--no-wait", *CONNECTION]),
    (["region", "failover"], ["--mode", "--parallelism", "--no-wait", *CONNECTION]),
    (["region", "failback"], ["--parallelism", "--no-wait", *CONNECTION]),
    (["region", "list"], CONNECTION),
    (["regions"], CONNECTION),
    (["bench", "switchover"], ["--envs", "--failovers", "--json"]),
], ids=lambda c: " ".join(c))
def test_help_lists_the_options(command: list[str], options: list[str]):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, (command, option)


ENTRY = {"environment": "acme", "from_region": "west", "to_region": "east",
         "state": "succeeded", "rto_seconds": 0.182, "data_loss": 0, "final_lsn": 40,
         "epoch": 2, "operation": "op-000002"}


def test_reading_failover_results():
    op = {"id": "op-000001", "target": "west", "result": {
        "environments": [ENTRY, {**ENTRY, "environment": "globex", "rto_seconds": 0.3}],
        "succeeded": 2, "failed": 0}}
    assert [e["environment"] for e in environment_results(op)] == ["acme", "globex"]
    assert max_rto_seconds(op) == 0.3
    assert environment_results({"result": None}) == []
    assert max_rto_seconds({"result": {"environments": []}}) is None
    # A terser result (the one environment's fields only) still reads.
    assert environment_results({"target": "acme", "result": {"rto_seconds": 0.1}}) == [
        {"environment": "acme", "rto_seconds": 0.1}]
    assert data_loss_entries(ENTRY) == 0
    assert data_loss_entries({"data_loss": {"entries": 3, "seconds": 0.5}}) == 3
    assert data_loss_entries({}) is None


def test_merged_results_prefer_the_parent_and_fill_in_from_children():
    children = [
        {"id": "op-2", "target": "acme", "state": "succeeded", "result": {
            "environments": [ENTRY]}},
        {"id": "op-3", "target": "globex", "state": "failed", "result": None,
         "error": {"code": "lsn_not_reached", "message": "east-1 stayed at 7"}},
        {"id": "op-4", "target": "hooli", "state": "running", "result": None},
    ]
    parent = {"result": {"environments": [{**ENTRY, "rto_seconds": 0.2}]}}
    rows = {r["environment"]: r for r in merged_results(parent, children)}
    assert rows["acme"]["rto_seconds"] == 0.2
    assert rows["globex"]["state"] == "failed"
    assert rows["globex"]["error"]["code"] == "lsn_not_reached"
    assert rows["hooli"]["state"] == "running"
    assert child_counts(children) == (1, 1, 3)


def test_bench_statistics():
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 21)], 99) == 20.0  # p99 of 20: the max
    assert percentile([], 99) is None
    acks = [0.0, 0.1, 0.2, 0.9, 1.0]
    assert longest_gap(acks, 0.15, 0.5) == pytest.approx(0.7)
    assert longest_gap(acks, 0.15, 2.0) is None  # no write after the end: not closed


# --- a scripted API: what a failed environment looks like ----------------------------

def scripted_api(child_states: list[str]) -> httpx.MockTransport:
    """A region failover of west whose children end as `child_states` say."""
    children = []
    for i, state in enumerate(child_states):
        entry = {**ENTRY, "environment": f"env{i}", "state": state}
        if state == "failed":
            entry = {**entry, "error": {"code": "lsn_not_reached", "message": "too slow"}}
        children.append({"id": f"op-{i + 2}", "kind": "environment.failover",
                         "target": f"env{i}", "state": state, "params": {"parent": "op-1"},
                         "result": {"environments": [entry]}, "error": entry.get("error")})
    failed = sum(1 for s in child_states if s == "failed")
    region_op = {"id": "op-1", "kind": "region.failover", "target": "west",
                 "state": "succeeded", "params": {"mode": "planned"}, "steps": [],
                 "started_at": "2026-11-22T03:30:00.000+00:00",
                 "finished_at": "2026-11-22T03:30:01.500+00:00", "error": None,
                 "result": {"environments": [c["result"]["environments"][0]
                                             for c in children],
                            "succeeded": len(children) - failed, "failed": failed}}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/regions/west/failover":
            return httpx.Response(202, json={**region_op, "state": "running",
                                             "result": None, "finished_at": None})
        if request.method == "POST" and path.startswith("/v1/regions/"):
            return httpx.Response(404, json={"error": {
                "code": "not_found", "message": "no region 'mars'; regions: west, east"}})
        if path == "/v1/operations":
            assert request.url.params["parent"] == "op-1"
            return httpx.Response(200, json={"operations": children})
        if path == "/v1/operations/op-1":
            return httpx.Response(200, json=region_op)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    return httpx.MockTransport(handle)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    states: list[str] = []
    monkeypatch.setattr(cli_failover, "connect", lambda *_a: Client(
        "http://tandem.test", "t", transport=scripted_api(states)))
    yield states


def test_region_failover_with_a_failed_environment_exits_1(scripted: list[str]):
    scripted.extend(["succeeded", "failed", "succeeded"])
    result = runner.invoke(app, ["region", "failover", "west"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "2/3 environment(s) moved" in result.stdout
    assert "lsn_not_reached: too slow" in result.stdout
    assert "west → east" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "error: op-1: failed for env1 (see 'tandem ops op-1')")


def test_region_failover_json_all_succeeded(scripted: list[str]):
    scripted.extend(["succeeded", "succeeded"])
    result = runner.invoke(app, ["region", "failover", "west", "--json"])
    assert result.exit_code == 0, result.output
    op = json.loads(result.stdout)
    assert (op["state"], op["result"]["succeeded"], op["result"]["failed"]) == (
        "succeeded", 2, 0)


def test_unknown_region_is_one_line(scripted: list[str]):
    result = runner.invoke(app, ["region", "failover", "mars"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "error 404 not_found: no region 'mars'; regions: west, east")


# --- a real deployment ------------------------------------------------------------------

@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    with running(tmp_path_factory.mktemp("failover") / "data") as deployment:
        client = deployment.client
        client.create_environment("acme", type="production", region="west")
        client.sql("acme", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
        yield deployment


def tandem(deployed: LocalDeployment, *args: str, code: int = 0):
    result = runner.invoke(app, [*args, "--data", str(deployed.data)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == code, (args, result.output)
    return result


def test_region_list_shows_states(deployed: LocalDeployment):
    text = tandem(deployed, "region", "list").stdout
    for word in ("west", "east", "healthy", "1/1 healthy"):
        assert word in text, word
    regions = json.loads(tandem(deployed, "regions", "--json").stdout)["regions"]
    assert {r["name"]: r["state"] for r in regions} == {"west": "healthy", "east": "healthy"}


def test_failover_of_one_environment_prints_the_result(deployed: LocalDeployment):
    client = deployed.client
    lsn = client.sql("acme", "INSERT INTO t(id) VALUES (1)")["lsn"]
    out = tandem(deployed, "failover", "acme").stdout
    assert "environment.failover acme" in out and "succeeded" in out
    assert "acme: west → east" in out
    assert "data loss 0 entries" in out
    assert f"final lsn {lsn}" in out and "epoch 2" in out
    assert "RTO " in out and " ms" in out
    assert client.environment("acme")["primary_region"] == "east"


def test_failover_json_parses_and_goes_back(deployed: LocalDeployment):
    op = json.loads(tandem(deployed, "failover", "acme", "--json").stdout)
    assert (op["kind"], op["target"], op["state"]) == ("environment.failover", "acme",
                                                       "succeeded")
    [entry] = environment_results(op)
    assert (entry["from_region"], entry["to_region"], entry["epoch"]) == ("east", "west", 3)
    assert entry["data_loss"] == 0
    assert isinstance(entry["rto_seconds"], int | float)


def test_unknown_environment_is_one_line(deployed: LocalDeployment):
    result = tandem(deployed, "failover", "nope", code=1)
    assert result.stdout == ""
    line = result.stderr.strip()
    assert line.startswith("error 404 ") and "nope" in line, line
    result = tandem(deployed, "region", "failover", "mars", code=1)
    assert result.stderr.strip().startswith("error 4"), result.stderr


def test_region_failover_and_failback(deployed: LocalDeployment):
    out = tandem(deployed, "region", "failover", "west").stdout
    assert "region.failover west" in out and "1/1 environment(s) moved" in out
    assert "west → east" in out
    regions = json.loads(tandem(deployed, "regions", "--json").stdout)["regions"]
    assert {r["name"]: r["state"] for r in regions}["west"] == "failed-over"
    op = json.loads(tandem(deployed, "region", "failback", "west", "--json").stdout)
    assert (op["kind"], op["state"], op["result"]["succeeded"]) == ("region.failback",
                                                                    "succeeded", 1)
    assert "healthy" in tandem(deployed, "region", "list").stdout


# --- the benchmark, small ----------------------------------------------------------------

def test_bench_switchover_smoke(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "bench", "switchover",
                           "--envs", "5", "--failovers", "3", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("env_unavailability_p50_ms", "env_unavailability_p99_ms",
                "region_switch_seconds", "region_failback_seconds",
                "projected_1000_envs_seconds", "goal_p99_ms", "goal_1000_envs_seconds"):
        assert isinstance(result[key], int | float), key
    assert (result["failovers"], result["region_envs"]) == (3, 5)
    assert result["failovers_failed"] == 0 and result["writer_errors"] == 0
    assert result["writes_acknowledged"] == result["writes_found"]


def test_lost_lists_nothing_for_a_planned_history_and_refuses_unknown(deployed: LocalDeployment):
    assert "acme: no lost writes recorded" in tandem(deployed, "lost", "acme").stdout
    answer = json.loads(tandem(deployed, "lost", "acme", "--json").stdout)
    assert answer == {"environment": "acme", "bundles": []}
    result = tandem(deployed, "lost", "nope", code=1)
    assert result.stderr.strip().startswith("error 404 "), result.stderr
