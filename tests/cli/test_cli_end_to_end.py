"""The CLI against a running deployment (controller, west-1, east-1, gateway)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tandemdb.cli.main import app
from tandemdb.testing import LocalDeployment, poll_until

runner = CliRunner()


def tandem(deployed: LocalDeployment, *args: str, stdin: bytes | None = None) -> str:
    result = runner.invoke(app, [*args, "--data", str(deployed.data)], input=stdin,
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


def tandem_json(deployed: LocalDeployment, *args: str) -> dict:
    return json.loads(tandem(deployed, *args, "--json"))


def test_cli_end_to_end(cluster: LocalDeployment, tmp_path: Path):
    created = tandem_json(cluster, "env", "create", "acme", "--region", "west",
                          "--rpo-limit", "60")
    assert (created["name"], created["home_region"], created["rpo_limit_seconds"]) == (
        "acme", "west", 60)
    assert "acme" in tandem(cluster, "env", "list")
    assert [e["name"] for e in tandem_json(cluster, "env", "list")["environments"]] == ["acme"]
    assert tandem_json(cluster, "env", "show", "acme")["primary_region"] == "west"

    tandem(cluster, "sql", "acme", "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n REAL)")
    inserted = tandem_json(cluster, "sql", "acme", "INSERT INTO t(v, n) VALUES (?, ?)",
                           "anvil", "2.5")
    assert inserted["results"][0]["rows_affected"] == 1
    read = tandem_json(cluster, "sql", "acme", "SELECT v, n, typeof(n) FROM t",
                       "--read-region", "east", "--min-lsn", str(inserted["lsn"]))
    assert read["region"] == "east"
    assert read["results"][0]["rows"] == [["anvil", 2.5, "real"]]
    table = tandem(cluster, "sql", "acme", "SELECT v FROM t WHERE n > ?", "1")
    assert "anvil" in table and "1 row(s)" in table and "region west" in table

    local = tmp_path / "report.bin"
    local.write_bytes(b"\x00\x01report" * 1000)
    put = tandem_json(cluster, "files", "put", "acme", "reports/q1.bin", str(local))
    assert put["size"] == local.stat().st_size
    tandem(cluster, "files", "put", "acme", "notes.txt", "-", stdin=b"from stdin")
    out = tmp_path / "back.bin"
    tandem(cluster, "files", "get", "acme", "reports/q1.bin", "-o", str(out),
           "--read-region", "east", "--min-lsn", str(put["lsn"]))
    assert out.read_bytes() == local.read_bytes()
    assert tandem(cluster, "files", "get", "acme", "notes.txt") == "from stdin"
    listed = tandem_json(cluster, "files", "ls", "acme", "--prefix", "reports/")["files"]
    assert [f["path"] for f in listed] == ["reports/q1.bin"]
    assert "notes.txt" in tandem(cluster, "files", "ls", "acme")
    assert tandem_json(cluster, "files", "rm", "acme", "notes.txt")["deleted"] == "notes.txt"
    assert "notes.txt" not in tandem(cluster, "files", "ls", "acme")

    status = tandem_json(cluster, "status")
    assert {r["name"] for r in status["regions"]} == {"west", "east"}
    assert [e["name"] for e in status["environments"]] == ["acme"]
    def caught_up() -> str | None:  # the secondary's lag in `tandem status` is zero
        text = tandem(cluster, "status")
        return text if "0 · 0.00s" in text else None

    text = poll_until(caught_up, 10, 0.2, "the secondary to catch up in tandem status")
    for word in ("west-1", "east-1", "healthy", "acme", "primary", "secondary", "production"):
        assert word in text, word

    assert tandem_json(cluster, "env", "delete", "acme") == {"deleted": "acme"}
    result = runner.invoke(app, ["env", "show", "acme", "--data", str(cluster.data)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error 404 not_found:")
