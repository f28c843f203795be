"""Two real node processes (west-1, east-1) on loopback ports, and helpers to drive them.

No controller runs: the nodes' heartbeats fail and are logged, and the tests create
replicas with the admin API the controller would call. One pair of nodes serves the whole
node test session; each test uses its own environment names.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tandemdb.common.deployment import HOST, Deployment

MAX_BODY = 1 << 20  # small, so the oversized-body test stays cheap
START_TIMEOUT = 15.0
CATCH_UP_TIMEOUT = 20.0


def poll(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Call `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _ports_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def free_base_port(count: int = 4) -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000)
        if _ports_free(base, count):
            return base
    raise RuntimeError("no free block of ports")


class Cluster:
    """A deployment with one node per region, started as separate processes."""

    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.dep = Deployment.plan(data, [("west", "east")], 1, free_base_port())
        self.dep.max_body_bytes = MAX_BODY
        self.dep.save()
        self.data = data
        self.procs: dict[str, subprocess.Popen] = {}
        self.http = httpx.Client(headers={"X-Tandem-Secret": self.dep.secret}, timeout=15.0)

    # -- processes --------------------------------------------------------------------
    def log_file(self, name: str) -> Path:
        return self.data / f"{name}.log"

    def start(self, name: str) -> None:
        log = open(self.log_file(name), "ab")  # noqa: SIM115 - the child keeps it
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tandemdb.node", "--data", str(self.data), "--name", name],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def healthy() -> bool:
            if self.procs[name].poll() is not None:
                raise AssertionError(f"{name} exited: {self.log_tail(name)}")
            try:
                return httpx.get(self.url(name) + "/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        poll(healthy, START_TIMEOUT, f"{name} to answer /healthz")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def pause(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.http.close()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_file(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # -- HTTP -------------------------------------------------------------------------
    def url(self, name: str) -> str:
        return self.dep.node_url(name)

    def peer(self, name: str) -> dict:
        return {"node": name, "region": self.dep.nodes[name]["region"], "url": self.url(name)}

    def put_replica(self, node: str, env: str, role: str, *, primary: str | None = None,
                    secondaries: tuple[str, ...] = (), rpo: float = 900,
                    epoch: int = 1) -> dict:
        record = {"env": env, "role": role, "epoch": epoch, "type": "production",
                  "rpo_limit_seconds": rpo,
                  "primary": self.peer(primary) if primary else None,
                  "secondaries": [self.peer(s) for s in secondaries]}
        r = self.http.put(f"{self.url(node)}/internal/v1/replicas/{env}", json=record)
        assert r.status_code == 200, r.text
        return r.json()

    def pair(self, env: str, rpo: float = 900) -> None:
        """Primary on west-1 with its geo-secondary on east-1, as the controller creates it."""
        self.put_replica("west-1", env, "primary", secondaries=("east-1",), rpo=rpo)
        self.put_replica("east-1", env, "secondary", primary="west-1", rpo=rpo)

    def sql(self, node: str, env: str, *statements, **extra) -> httpx.Response:
        items = [{"sql": s} if isinstance(s, str) else {"sql": s[0], "params": s[1]}
                 for s in statements]
        return self.http.post(f"{self.url(node)}/v1/environments/{env}/sql",
                              json={"statements": items, **extra})

    def ok_sql(self, node: str, env: str, *statements, **extra) -> dict:
        r = self.sql(node, env, *statements, **extra)
        assert r.status_code == 200, r.text
        return r.json()

    def files_url(self, node: str, env: str, path: str = "") -> str:
        return f"{self.url(node)}/v1/environments/{env}/files/{path}"

    def status(self, node: str, env: str) -> dict:
        r = self.http.get(f"{self.url(node)}/internal/v1/replicas/{env}")
        assert r.status_code == 200, r.text
        return r.json()

    def checksum(self, node: str, env: str) -> dict:
        r = self.http.get(f"{self.url(node)}/internal/v1/replicas/{env}/checksum")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_equal(self, env: str, timeout: float = CATCH_UP_TIMEOUT) -> dict:
        """Poll until the secondary has caught up: same lsn and same logical checksum."""

        def current(node: str) -> dict | None:
            r = self.http.get(f"{self.url(node)}/internal/v1/replicas/{env}/checksum")
            if r.status_code == 503:  # seeding from a snapshot: not there yet
                return None
            assert r.status_code == 200, r.text
            return r.json()

        def same():
            west, east = current("west-1"), current("east-1")
            return west if west is not None and west == east else None

        try:
            return poll(same, timeout, f"{env} to have equal checksums", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- east-1 log ---\n{self.log_tail('east-1')}"
                                 f"\n--- west-1 log ---\n{self.log_tail('west-1')}") from None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("nodes"))
    try:
        c.start("west-1")
        c.start("east-1")
        yield c
    finally:
        c.close()


@pytest.fixture
def live(cluster: Cluster) -> Cluster:
    """The cluster, with both nodes made sure to be running (a test may have killed one)."""
    for name in ("west-1", "east-1"):
        proc = cluster.procs.get(name)
        if proc is None or proc.poll() is not None:
            cluster.start(name)
        else:
            proc.send_signal(signal.SIGCONT)
    return cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 1000}-{random.randrange(10**6)}"
