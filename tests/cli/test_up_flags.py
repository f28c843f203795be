"""`tandem up`'s node failover flags and `tandem demo --nodes-per-region`: a bad value is
one clear line, and nothing is planned or started (what a good value does is checked by
tests/integration/test_up_down.py, through a real `tandem up`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandemdb.cli.deploy import parse_seconds
from tandemdb.cli.main import app

from .test_cli import fails_cleanly, runner


@pytest.mark.parametrize("args,expected", [
    (["--node-grace-seconds", "0"],
     "--node-grace-seconds must be a number of seconds from 0.1 to 3600, or off; not '0'"),
    (["--node-grace-seconds", "soon"],
     "--node-grace-seconds must be a number of seconds from 0.1 to 3600, or off; not "
     "'soon'"),
    (["--replace-after", "0.5"],
     "--replace-after must be a number of seconds from 1 to 86400, or off; not '0.5'"),
    (["--replace-after", "inf"],
     "--replace-after must be a number of seconds from 1 to 86400, or off; not 'inf'"),
    (["--grace-seconds", "-1"],
     "--grace-seconds must be a number of seconds above 0, or off; not '-1'"),
])
def test_up_refuses_a_bad_number_of_seconds_before_starting_anything(
        tmp_path: Path, args: list[str], expected: str):
    data = tmp_path / "data"
    line = fails_cleanly(["up", *args, "--data", str(data), "--detach"], expected)
    assert line == f"error: {expected}"
    assert not data.exists(), "nothing planned"


def test_seconds_or_off():
    bounds = (0.1, 3600.0)
    assert parse_seconds("2", "--node-grace-seconds", bounds) == 2.0
    assert parse_seconds("0.1", "--node-grace-seconds", bounds) == 0.1
    assert parse_seconds(" OFF ", "--node-grace-seconds", bounds) is None
    assert parse_seconds(None, "--node-grace-seconds", bounds) is None
    assert parse_seconds("1e6", "--grace-seconds") == 1e6  # no upper bound given
    for bad in ("nan", "3600.5", "-0", ""):
        with pytest.raises(ValueError, match="--node-grace-seconds must be"):
            parse_seconds(bad, "--node-grace-seconds", bounds)


def test_demo_refuses_a_region_without_nodes():
    fails_cleanly(["demo", "--nodes-per-region", "0"],
                  "--nodes-per-region must be 1 or more, not 0")


@pytest.mark.parametrize("command,options", [
    (["up"], ["--nodes-per-region", "--node-grace-seconds", "--replace-after",
              "--grace-seconds", "default 2", "default 60"]),
    (["demo"], ["--nodes-per-region", "--json"]),
    (["node", "outage"], ["NODE", "--partition", "--json", "--data"]),
    (["node", "recover"], ["NODE", "--json", "--data"]),
])
def test_help_names_the_new_options(command: list[str], options: list[str]):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output, (command, option)
