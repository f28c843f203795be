"""Several gateway URLs in the CLI: `--url a,b` and `TANDEM_URL=a,b` move on from a dead
gateway; a bad list is one clear line and exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandemdb.cli.main import app
from tandemdb.testing import LocalDeployment

runner = CliRunner()


def test_url_option_and_variable_take_several_gateways(live: LocalDeployment, dead_url: str,
                                                       tmp_path: Path):
    urls, token = f"{dead_url},{live.deployment.gateway_url}", live.deployment.token
    no_data = ["--data", str(tmp_path / "none")]  # the URLs and token come from the options
    created = runner.invoke(app, ["env", "create", "cli-gws", "--type", "sandbox", "--json",
                                  "--url", urls, "--token", token, *no_data])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["name"] == "cli-gws"
    listed = runner.invoke(app, ["env", "list", "--json", *no_data],
                           env={"TANDEM_URL": urls, "TANDEM_TOKEN": token})
    assert listed.exit_code == 0, listed.output
    assert "cli-gws" in [e["name"] for e in json.loads(listed.stdout)["environments"]]


@pytest.mark.parametrize(("url", "named"), [
    ("http://127.0.0.1:1,", "empty gateway URL in 'http://127.0.0.1:1,'"),
    ("http://127.0.0.1:1,127.0.0.1:2", "gateway URL '127.0.0.1:2' needs a scheme"),
])
def test_bad_url_list_is_one_line(url: str, named: str, tmp_path: Path):
    result = runner.invoke(app, ["env", "list", "--url", url, "--token", "t",
                                 "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: bad gateway URL from --url (or TANDEM_URL): ")
    assert named in result.stderr
    assert "Traceback" not in result.output


def test_no_gateway_answers_names_each(dead_urls: list[str], tmp_path: Path):
    result = runner.invoke(app, ["env", "list", "--url", ",".join(dead_urls),
                                 "--token", "t", "--data", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error unreachable: cannot reach Tandem at "
                                    f"{', '.join(dead_urls)} (")
