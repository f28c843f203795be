"""The `tandem` command line: help for every command, and clear one-line failures.

Failures are checked against a real gateway process (tests/gateway/conftest.py) and, once,
through a real `tandem` process, so that exit codes and stderr are what a shell sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandemdb.cli.data import parse_param
from tandemdb.cli.main import app
from tandemdb.local import free_base_port
from tandemdb.testing import LocalDeployment

runner = CliRunner()
CONNECTION = ["--json", "--url", "--token", "--data"]

COMMANDS = [
    (["status"], ["--watch", *CONNECTION]),
    (["ops"], ["--limit", *CONNECTION]),
    (["events"], ["--follow", "--after", *CONNECTION]),
    (["env", "create"], ["--type", "--region", "--rpo-limit", *CONNECTION]),
    (["env", "list"], CONNECTION),
    (["env", "show"], CONNECTION),
    (["env", "delete"], CONNECTION),
    (["node", "list"], CONNECTION),
    (["sql"], ["--read-region", "--min-lsn", *CONNECTION]),
    (["files", "put"], CONNECTION),
    (["files", "get"], ["--output", "--read-region", "--min-lsn", *CONNECTION]),
    (["files", "ls"], ["--prefix", "--read-region", *CONNECTION]),
    (["files", "rm"], CONNECTION),
    (["up"], ["--data", "--regions", "--nodes-per-region", "--port", "--detach", "--json"]),
    (["down"], ["--data", "--json"]),
    (["demo"], ["--json"]),
]


@pytest.mark.parametrize("command,options", COMMANDS, ids=lambda c: " ".join(c))
def test_help_lists_the_options(command: list[str], options: list[str]):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, (command, option)


def test_top_level_help_names_every_command():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("up", "down", "demo", "status", "env", "sql", "files", "version", "bench"):
        assert f" {name} " in result.output, name


def test_env_create_refuses_an_unknown_type_before_any_call(tmp_path: Path):
    result = runner.invoke(app, ["env", "create", "acme", "--type", "gold",
                                 "--data", str(tmp_path)])
    assert result.exit_code == 2  # a usage error, from the command line parser
    assert "gold" in result.output


def fails_cleanly(args: list[str], expected: str, env: dict | None = None) -> str:
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 1, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize("count", ["0", "-2"])
def test_up_refuses_a_region_without_nodes_before_starting_anything(tmp_path: Path,
                                                                    count: str):
    data = tmp_path / "data"
    line = fails_cleanly(["up", "--nodes-per-region", count, "--data", str(data), "--detach"],
                         f"--nodes-per-region must be 1 or more, not {count}")
    assert "every region needs a node" in line
    assert not (data / "deployment.json").exists()


@pytest.mark.parametrize("args", [
    ["status"], ["env", "list"], ["env", "show", "acme"], ["env", "delete", "acme"],
    ["env", "create", "acme"], ["sql", "acme", "SELECT 1"], ["files", "ls", "acme"],
    ["files", "get", "acme", "a.txt"], ["files", "rm", "acme", "a.txt"],
])
def test_no_deployment_in_data_dir(tmp_path: Path, args: list[str]):
    line = fails_cleanly([*args, "--data", str(tmp_path / "nowhere")],
                         "no deployment in", env={"TANDEM_URL": "", "TANDEM_TOKEN": ""})
    assert line.startswith("error: ")
    assert "--url" in line and "tandem up" in line


def test_errors_from_the_gateway_are_one_line(gateway_only: LocalDeployment):
    data = str(gateway_only.data)
    line = fails_cleanly(["env", "list", "--data", data], "error 503 unavailable: ")
    assert gateway_only.deployment.controller_url in line
    fails_cleanly(["status", "--data", data, "--token", "wrong"], "error 401 unauthorized: ")
    fails_cleanly(["sql", "acme", "SELECT 1", "--data", data], "error 503 unavailable: ")
    fails_cleanly(["files", "get", "acme", "a/../../b", "--data", data],
                  "error 400 invalid_path: ")


def test_url_and_token_from_environment_variables(gateway_only: LocalDeployment):
    env = {"TANDEM_URL": gateway_only.deployment.gateway_url, "TANDEM_TOKEN": "wrong"}
    # No deployment in --data: URL and token must come from the environment.
    fails_cleanly(["env", "list", "--data", "/nonexistent"], "error 401 unauthorized", env=env)


def test_unreachable_gateway(tmp_path: Path):
    url = f"http://127.0.0.1:{free_base_port(1)}"
    fails_cleanly(["env", "list", "--url", url, "--token", "t"],
                  f"error unreachable: cannot reach Tandem at {url}")


def test_missing_local_file_for_put(tmp_path: Path):
    url = f"http://127.0.0.1:{free_base_port(1)}"
    line = fails_cleanly(["files", "put", "acme", "a.txt", str(tmp_path / "missing.txt"),
                          "--url", url, "--token", "t"], "error: No such file or directory")
    assert "missing.txt" in line


def test_a_real_tandem_process_fails_without_traceback(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", "env", "list",
                           "--data", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: no deployment in {tmp_path}")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("text,value", [
    ("42", 42), ("-1.5", -1.5), ("null", None), ("true", True), ('"42"', "42"),
    ("anvil", "anvil"), ("", ""), ("[1, 2]", [1, 2]), ("hello world", "hello world"),
])
def test_parse_param(text: str, value):
    assert parse_param(text) == value
