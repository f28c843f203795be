"""Two real node processes (west-1, east-1) on loopback ports, and helpers to drive them.

No controller runs: the nodes' heartbeats fail and are logged, and the tests create
replicas with the admin API the controller would call. With no controller to grant
leases, the deployment turns them off (`lease_ttl` 0, docs/leases.md). One pair of nodes
serves the whole node test session; each test uses its own environment names.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.local import LocalDeployment, free_base_port

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


class Cluster:
    """A deployment with one node per region; only the nodes run, through `LocalDeployment`."""

    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.dep = Deployment.plan(data, [("west", "east")], 1, free_base_port(4))
        self.dep.max_body_bytes = MAX_BODY
        self.dep.lease_ttl = 0  # no controller grants leases here
        self.dep.save()
        self.local = LocalDeployment(self.dep)
        self.http = httpx.Client(headers={"X-Tandem-Secret": self.dep.secret}, timeout=15.0)

    # -- processes --------------------------------------------------------------------
    def start(self, name: str) -> None:
        self.local.start(name, wait=False)
        self.local.wait_healthy(name, START_TIMEOUT)

    def kill(self, name: str) -> None:
        self.local.kill(name)

    def pause(self, name: str) -> None:
        self.local.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.local.signal(name, signal.SIGCONT)

    def close(self) -> None:
        for name in self.local.processes:
            self.resume(name)  # a paused node must run to act on SIGTERM
        self.local.stop_all()
        self.http.close()

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
            raise AssertionError(f"{exc}\n--- east-1 log ---\n{self.local.tail('east-1', 30)}"
                                 f"\n--- west-1 log ---\n{self.local.tail('west-1', 30)}"
                                 ) from None


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
        if name in cluster.local.dead():
            cluster.start(name)
        else:
            cluster.resume(name)
    return cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 1000}-{random.randrange(10**6)}"
