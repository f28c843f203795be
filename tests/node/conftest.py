"""Two real node processes (west-1, east-1) on loopback ports, and helpers to drive them.

No controller runs: the nodes' heartbeats fail and are logged, and the tests create
replicas with the admin API the controller would call. With no controller to grant
leases, the deployment turns them off (`lease_ttl` 0, docs/leases.md). One pair of nodes
serves the whole node test session; each test uses its own environment names.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.node.app import Node
from tandemdb.testing import LocalDeployment, PollTimeout, poll_until

MAX_BODY = 1 << 20  # small, so the oversized-body test stays cheap
CATCH_UP_TIMEOUT = 20.0
NODES = ("west-1", "east-1")


class Clock:
    """A monotonic clock the test moves by hand: lease arithmetic without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def node_in_process(deployment: Deployment,
                          clock: Clock | None = None) -> AsyncIterator[Node]:
    """west-1 in this process with its replicas loaded from disk, and closed on the way out;
    nothing else of it runs (no heartbeat, no puller). `clock` drives its lease."""
    node = Node(deployment, "west-1")
    if clock is not None:
        node.lease.clock = clock
    await node.replicas.load()
    try:
        yield node
    finally:
        await node.replicas.close()


class Cluster(LocalDeployment):
    """The harness's deployment of which only the nodes run (`start`, `kill`, `pause`,
    `resume`, `url` are its own), with the calls the controller would make to them."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.http = httpx.Client(headers={SECRET_HEADER: deployment.secret}, timeout=15.0)

    def close(self) -> None:
        self.http.close()
        super().close()

    # -- HTTP -------------------------------------------------------------------------
    def peer(self, name: str) -> dict:
        return {"node": name, "region": self.deployment.nodes[name]["region"],
                "url": self.url(name)}

    def put_replica(self, node: str, env: str, role: str, *, primary: str | None = None,
                    secondaries: tuple[str, ...] = (), rpo: float = 900,
                    epoch: int = 1, sync: str | None = None) -> dict:
        """PUT a desired record; `sync` names the secondary a primary keeps synchronous."""
        peers = [{**self.peer(s), "sync": True} if s == sync else self.peer(s)
                 for s in secondaries]
        record = {"env": env, "role": role, "epoch": epoch, "type": "production",
                  "rpo_limit_seconds": rpo,
                  "primary": self.peer(primary) if primary else None,
                  "secondaries": peers}
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
            return poll_until(same, timeout, 0.1, f"{env} to have equal checksums")
        except PollTimeout as exc:
            raise AssertionError(f"{exc}\n--- east-1 log ---\n{self.tail('east-1', 30)}"
                                 f"\n--- west-1 log ---\n{self.tail('west-1', 30)}"
                                 ) from None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.temporary(tmp_path_factory.mktemp("nodes"), start=NODES,
                           max_body_bytes=MAX_BODY,
                           lease_ttl=0,  # no controller grants leases here
                           ) as running:
        yield running


@pytest.fixture
def live(cluster: Cluster) -> Cluster:
    """The cluster, with both nodes made sure to be running (a test may have killed one)."""
    for name in NODES:
        if name in cluster.dead():
            cluster.start(name)
        else:
            cluster.resume(name)
    return cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid() % 1000}-{random.randrange(10**6)}"
