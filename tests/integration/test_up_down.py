"""`tandem up --detach` / `tandem down` as a user runs them, and a restart that brings back
environments, data, lsns and replication positions (invariant 1 across restarts)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tandemdb.client import Client
from tandemdb.local import free_base_port, running_pids

from .conftest import caught_up, wait_until

TANDEM = [sys.executable, "-m", "tandemdb.cli.main"]


def tandem(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TANDEM, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"tandem {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def test_up_down_and_restart_keep_everything(tmp_path):
    data = str(tmp_path / "data")
    port = str(free_base_port(4))
    info = json.loads(tandem("up", "--data", data, "--port", port, "--detach", "--json")
                      .stdout.strip().splitlines()[-1])
    try:
        assert set(info) == {"url", "token", "data"}
        assert httpx.get(info["url"] + "/healthz").status_code == 200
        again = tandem("up", "--data", data, "--port", port, "--detach", check=False)
        assert again.returncode == 1 and "already running" in again.stderr
        client = Client(info["url"], info["token"])
        client.create_environment("keep")
        client.sql("keep", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
        for i in range(25):
            lsn = client.sql("keep", "INSERT INTO t(id) VALUES (?)", [i])["lsn"]
        client.put_file("keep", "a.txt", b"persist me")
        wait_until(lambda: caught_up(client, "keep"), what="catch-up before down")
        before = client.checksum("keep", "west")["total"]
        assert json.loads(tandem("down", "--data", data, "--json").stdout)["stopped"]
        assert running_pids(data) == {}
        tandem("up", "--data", data, "--detach")
        wait_until(lambda: caught_up(client, "keep"), what="replicas back after restart")
        view = client.environment("keep")
        assert view["primary_lsn"] == lsn + 1, "lsns survive a restart"
        assert client.checksum("keep", "west")["total"] == before
        assert client.checksum("keep", "east")["total"] == before
        after = client.sql("keep", "INSERT INTO t(id) VALUES (100)")["lsn"]
        assert after == lsn + 2, "the journal continues where it was"
        seen = client.sql("keep", "SELECT count(*) FROM t", read_region="east", min_lsn=after)
        assert seen["results"][0]["rows"] == [[26]], "replication position survived"
    finally:
        tandem("down", "--data", data, check=False)
    assert running_pids(data) == {}


def test_up_reports_a_process_that_dies_at_start(tmp_path):
    data = tmp_path / "data"
    port = free_base_port(4)
    tandem("up", "--data", str(data), "--port", str(port), "--detach")
    tandem("down", "--data", str(data))
    (data / "nodes").mkdir(exist_ok=True)
    # Make the west node's directory unusable: it must fail and the error names its log.
    blocker = data / "nodes" / "west-1"
    if blocker.is_dir():
        import shutil

        shutil.rmtree(blocker)
    blocker.write_text("not a directory")
    proc = tandem("up", "--data", str(data), "--detach", check=False)
    try:
        assert proc.returncode == 1
        assert "west-1" in proc.stderr and "west-1.log" in proc.stderr
    finally:
        tandem("down", "--data", str(data), check=False)
