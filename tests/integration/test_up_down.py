"""`tandem up --detach` / `tandem down` as a user runs them, and a restart that brings back
environments, data, lsns and replication positions (invariant 1 across restarts).

`tandem up` starts 2 nodes per region unless told otherwise: a gateway, a controller and
four nodes, so six ports; every environment has a local sync secondary (docs/ha.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tandemdb.client import Client, TandemError
from tandemdb.common.deployment import Deployment
from tandemdb.local import LocalDeployment as Processes
from tandemdb.local import free_base_port, running_pids, staged_outages
from tandemdb.testing import caught_up, poll_until

TANDEM = [sys.executable, "-m", "tandemdb.cli.main"]
PORTS = 6  # gateway, controller, west-1, west-2, east-1, east-2


def tandem(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TANDEM, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"tandem {' '.join(args)} failed:\n{proc.stderr}"
    return proc


def replicas(client: Client, env: str) -> dict[tuple[str, str], dict]:
    """An environment's replicas by (role, kind)."""
    return {(r["role"], r["kind"]): r for r in client.environment(env)["replicas"]}


def test_up_down_and_restart_keep_everything(tmp_path):
    data = str(tmp_path / "data")
    port = str(free_base_port(PORTS))
    info = json.loads(tandem("up", "--data", data, "--port", port, "--detach", "--json",
                             "--node-grace-seconds", "4", "--replace-after", "off")
                      .stdout.strip().splitlines()[-1])
    try:
        assert set(info) == {"url", "urls", "token", "data"}
        assert info["urls"] == [info["url"]]  # one gateway unless per region
        saved = Deployment.load(Path(data))
        assert sorted(saved.nodes) == ["east-1", "east-2", "west-1", "west-2"]
        assert (saved.node_grace_seconds, saved.replace_after_seconds) == (4.0, None)
        assert httpx.get(info["url"] + "/healthz").status_code == 200
        again = tandem("up", "--data", data, "--port", port, "--detach", check=False)
        assert again.returncode == 1 and "already running" in again.stderr
        client = Client(info["url"], info["token"])
        client.create_environment("keep")
        placed = replicas(client, "keep")
        assert set(placed) == {("primary", "geo"), ("secondary", "local"),
                               ("secondary", "geo")}, placed
        assert placed["secondary", "local"]["sync"] is True
        assert placed["secondary", "local"]["region"] == "west"
        client.sql("keep", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
        for i in range(25):
            lsn = client.sql("keep", "INSERT INTO t(id) VALUES (?)", [i])["lsn"]
        client.put_file("keep", "a.txt", b"persist me")
        poll_until(lambda: caught_up(client, "keep"), what="catch-up before down")
        before = client.checksum("keep", "west")["total"]
        assert json.loads(tandem("down", "--data", data, "--json").stdout)["stopped"]
        assert running_pids(data) == {}
        tandem("up", "--data", data, "--detach")
        again_saved = Deployment.load(Path(data))  # the flags are kept for the next up
        assert (again_saved.node_grace_seconds, again_saved.replace_after_seconds) == (4.0,
                                                                                       None)
        poll_until(lambda: caught_up(client, "keep"), what="replicas back after restart")
        # Sync may have lapsed under load before the restart; it comes back by itself.
        poll_until(lambda: replicas(client, "keep")["secondary", "local"]["sync"] is True,
                   what="the local secondary sync again")
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
    port = free_base_port(PORTS)
    tandem("up", "--data", str(data), "--port", str(port), "--detach")
    tandem("down", "--data", str(data))
    defaults = Deployment.load(data)
    assert len(defaults.nodes_in("west")) == len(defaults.nodes_in("east")) == 2
    assert (defaults.node_grace_seconds, defaults.replace_after_seconds) == (2.0, 60.0)
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


def test_foreground_up_supervises_and_ctrl_c_stops_everything(tmp_path):
    """Without --detach, `tandem up` restarts a child that dies and stops all on Ctrl-C."""
    data = tmp_path / "data"
    port = free_base_port(PORTS)
    proc = subprocess.Popen([*TANDEM, "up", "--data", str(data), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll_until(lambda: len(running_pids(data)) == 6, timeout=60, what="six processes")
        deployment = Deployment.load(data)
        assert sorted(deployment.nodes) == ["east-1", "east-2", "west-1", "west-2"]
        client = Client(deployment.gateway_url, deployment.token)
        placed = set()
        for name in ("spread-a", "spread-b"):
            view = client.create_environment(name)
            placed |= {r["node"] for r in view["replicas"]}
            client.sql(name, "CREATE TABLE t(x)")
        assert placed == {"west-1", "west-2", "east-1", "east-2"}, "replicas spread over nodes"
        for name in ("spread-a", "spread-b"):
            poll_until(lambda n=name: caught_up(client, n), what=f"{name} to replicate")
        pids = running_pids(data)
        os.kill(pids["west-2"], signal.SIGKILL)
        poll_until(lambda: not _alive(pids["west-2"]), what="west-2 to die")
        poll_until(lambda: _healthy(deployment.node_url("west-2")), timeout=30,
                   what="west-2 restarted by the supervisor")
        # A restarted node answers /healthz before the controller has answered its first
        # heartbeat: until then its primaries refuse writes with 503 no_lease (nothing
        # written, "retry shortly"), as a client would retry.
        for name in ("spread-a", "spread-b"):
            poll_until(lambda n=name: _written(client, n), what=f"a write to {name}")
        # A staged node outage is left alone by the supervisor until `tandem node recover`,
        # which then leaves the restart to it.
        out = json.loads(tandem("node", "outage", "west-2", "--data", str(data), "--json")
                         .stdout)
        assert out == {"node": "west-2", "kind": "kill", "killed": ["west-2"]}
        assert Processes(Deployment.load(data)).staged_out() == {"west-2"}
        time.sleep(1.5)  # three rounds of the supervisor's loop
        assert not _healthy(deployment.node_url("west-2")), "restarted while staged out"
        back = json.loads(tandem("node", "recover", "west-2", "--data", str(data), "--json")
                          .stdout)
        assert back == {"node": "west-2", "started": []}  # `tandem up` starts it
        poll_until(lambda: _healthy(deployment.node_url("west-2")), timeout=30,
                   what="west-2 restarted by the supervisor after the recover")
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        assert proc.returncode == 0
        # The restarted west-2 has a new pid: every Tandem process of this data dir is gone.
        poll_until(lambda: not any(_alive(p) for p in pids.values()), timeout=10,
                   what="every process to exit after Ctrl-C (none left running)")
        assert not _healthy(deployment.node_url("west-2"))
        assert running_pids(data) == {}
    finally:
        if proc.poll() is None:
            proc.kill()
        tandem("down", "--data", str(data), check=False)


def _written(client: Client, env: str) -> bool:
    try:
        client.sql(env, "INSERT INTO t VALUES (1)")
    except TandemError as exc:
        if exc.code != "no_lease":
            raise
        return False
    return True


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_staged_outage_and_recovery_with_the_cli(tmp_path):
    """`tandem region outage west` as a user runs it: the controller declares west down
    after the grace period and fails it over; `recover` brings it back, its replica rejoins,
    and `tandem region failback west` brings the environment home."""
    data = str(tmp_path / "data")
    port = str(free_base_port(PORTS))
    info = json.loads(tandem("up", "--data", data, "--port", port, "--detach", "--json",
                             "--grace-seconds", "2", "--lease-ttl", "1.5")
                      .stdout.strip().splitlines()[-1])
    try:
        saved = Deployment.load(data)
        assert (saved.grace_seconds, saved.lease_ttl) == (2.0, 1.5)
        client = Client(info["url"], info["token"])
        client.create_environment("rehearse")
        client.sql("rehearse", "CREATE TABLE t(id INTEGER PRIMARY KEY)")
        poll_until(lambda: caught_up(client, "rehearse"), what="replicated")
        out = json.loads(tandem("region", "outage", "west", "--data", data, "--json").stdout)
        assert out == {"region": "west", "kind": "kill", "killed": ["west-1", "west-2"]}
        again = tandem("region", "outage", "west", "--data", data, check=False)
        assert again.returncode == 1 and "already out (kill)" in again.stderr
        one = tandem("node", "outage", "west-2", "--data", data, check=False)
        assert one.returncode == 1 and "region west is out (kill)" in one.stderr
        assert not {"west-1", "west-2"} & set(running_pids(data))

        def west_state() -> str:
            return next(r["state"] for r in client.regions() if r["name"] == "west")

        poll_until(lambda: west_state() == "failed-over", timeout=40, what="auto failover")
        client.sql("rehearse", "INSERT INTO t(id) VALUES (1)")  # writable in east
        back = json.loads(tandem("region", "recover", "west", "--data", data, "--json").stdout)
        assert back == {"region": "west", "started": ["west-1", "west-2"]}
        poll_until(lambda: not any(r.get("behind") for r in
                                   client.environment("rehearse")["replicas"]),
                   timeout=30, what="the rejoin")
        poll_until(lambda: caught_up(client, "rehearse"), what="caught up again")
        tandem("region", "failback", "west", "--data", data)
        assert west_state() == "healthy"
        assert client.environment("rehearse")["primary_region"] == "west"
        unknown = tandem("region", "outage", "mars", "--data", data, check=False)
        assert unknown.returncode == 1 and "unknown region" in unknown.stderr
        no_proxy = tandem("region", "outage", "west", "--partition", "--data", data,
                          check=False)
        assert no_proxy.returncode == 1 and "tandem up --fault-proxy" in no_proxy.stderr
        node_no_proxy = tandem("node", "outage", "west-1", "--partition", "--data", data,
                               check=False)
        assert node_no_proxy.returncode == 1
        assert "tandem up --fault-proxy" in node_no_proxy.stderr
        assert staged_outages(Path(data)) == {}  # the refusals changed nothing
        not_out = tandem("region", "recover", "west", "--data", data, check=False)
        assert not_out.returncode == 1 and "is not staged out" in not_out.stderr
    finally:
        tandem("down", "--data", data, check=False)
