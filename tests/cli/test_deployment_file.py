"""deployment.json is checked on load: an unknown key or a value of the wrong type is one
line naming the key and the file, from every command that reads it, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandemdb.cli.main import app
from tandemdb.common.deployment import FILE, Deployment, DeploymentError

runner = CliRunner()


def planned(tmp_path: Path, **changes: object) -> Path:
    """A data dir whose deployment.json is a planned one with `changes` (None: drop)."""
    Deployment.plan(tmp_path, [("west", "east")], 1, 20000).save()
    path = tmp_path / FILE
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))
    return tmp_path


@pytest.mark.parametrize("changes,named", [
    ({"gatway_port": 8000}, "unknown key 'gatway_port'"),
    ({"gateway_port": "8000"}, "gateway_port"),
    ({"lease_ttl": True}, "lease_ttl"),
    ({"nodes": {"west-1": {"region": "west", "port": "x"}}}, "nodes"),
    ({"fault_proxy": {"port": 1, "links": {"west-1>controller": None}}}, "fault_proxy"),
    ({"regions": None}, "missing key 'regions'"),
], ids=["unknown key", "string port", "bool ttl", "node port", "link port", "missing"])
@pytest.mark.parametrize("command", [["status"], ["env", "list"], ["region", "outage", "west"],
                                     ["up", "--detach"]], ids=" ".join)
def test_a_bad_deployment_file_is_one_line_naming_the_key(
        tmp_path: Path, changes: dict, named: str, command: list[str]):
    data = planned(tmp_path, **changes)
    result = runner.invoke(app, [*command, "--data", str(data)], terminal_width=400)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert named in lines[0] and str(data / FILE) in lines[0], lines[0]


def test_what_the_current_version_writes_loads_unchanged(tmp_path: Path):
    planned = Deployment.plan(tmp_path, [("west", "east")], 2, 20000)
    planned.add_fault_proxy()
    planned.grace_seconds = None
    planned.save()
    assert Deployment.load(tmp_path) == planned


def test_not_an_object_or_not_json(tmp_path: Path):
    (tmp_path / FILE).write_text("[1, 2]")
    with pytest.raises(DeploymentError, match="one JSON object"):
        Deployment.load(tmp_path)
    (tmp_path / FILE).write_text("{")
    with pytest.raises(DeploymentError, match="not valid JSON"):
        Deployment.load(tmp_path)
