"""`tandem ops [ID]` and `tandem events [--follow]` (src/tandemdb/cli/ops.py) against a real
controller and gateway (no nodes: creation survives unreachable nodes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandemdb.cli.main import app
from tandemdb.client import Client
from tandemdb.common.deployment import Deployment
from tandemdb.testing import LocalDeployment

from .conftest import BACKENDS, backend

runner = CliRunner()

FOLLOW = "from tandemdb.cli.main import app; app()"


@pytest.fixture(scope="module", params=BACKENDS)
def deployed(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """No node runs: node failover and self-healing are off, else a node's `node.down`
    (after 2 s) lands among the events these tests expect next, on a slow machine."""
    with LocalDeployment.temporary(tmp_path_factory.mktemp("cli-ops"),
                                   start=("controller", "gateway"), heartbeat_interval=0.2,
                                   node_grace_seconds=None, replace_after_seconds=None,
                                   **backend(request)) as running:
        yield running.deployment


def tandem(deployment: Deployment, *args: str) -> str:
    result = runner.invoke(app, [*args, "--data", deployment.data], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_ops_lists_and_shows_steps(deployed):
    with Client(deployed.gateway_url, deployed.token) as client:
        view = client.create_environment("cli-ops-env", "basic")
    op_id = view["operation"]
    listed = json.loads(tandem(deployed, "ops", "--json"))["operations"]
    assert listed[0]["id"] == op_id and listed[0]["state"] == "succeeded"
    shown = json.loads(tandem(deployed, "ops", op_id, "--json"))
    assert [s["name"] for s in shown["steps"]] == ["record", "create-primary", "activate"]
    text = tandem(deployed, "ops", op_id)
    for fragment in [op_id, "environment.create", "cli-ops-env", "succeeded", "create-primary",
                     "recorded as creating"]:
        assert fragment in text, fragment
    assert op_id in tandem(deployed, "ops", "--limit", "1")
    missing = runner.invoke(app, ["ops", "op-999999", "--data", deployed.data])
    assert missing.exit_code == 1 and "not_found" in missing.output


def test_events_prints_and_follows(deployed):
    answer = json.loads(tandem(deployed, "events", "--json"))
    last = answer["last"]
    assert any(e["type"] == "environment.created" for e in answer["events"])
    text = tandem(deployed, "events")
    assert "environment.created cli-ops-env (west) [op-" in text

    follower = subprocess.Popen(
        [sys.executable, "-c", FOLLOW, "events", "--follow", "--json", "--after", str(last),
         "--data", deployed.data], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).parent)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(follower.stdout.readline()))
    reader.start()
    try:
        with Client(deployed.gateway_url, deployed.token) as client:
            client.create_environment("cli-follow", "basic")
        reader.join(15)
        assert lines and lines[0], follower.stderr.read() if follower.poll() else "no line"
        event = json.loads(lines[0])
        assert (event["type"], event["environment"], event["id"]) == (
            "environment.created", "cli-follow", last + 1)
    finally:
        follower.kill()
        follower.wait(5)
