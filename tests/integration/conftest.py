"""Integration fixtures: a real local deployment (controller, gateway, nodes as processes)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tandemdb.client import Client
from tandemdb.common.deployment import Deployment
from tandemdb.local import LocalDeployment, free_base_port


class Cluster:
    """A running deployment plus the handles a test needs."""

    def __init__(self, data: Path, fault_proxy: bool = False, **settings: float) -> None:
        """`settings` override deployment.json fields (e.g. lease_ttl); none by default.
        `fault_proxy`: the links to the controller and between regions run through it."""
        self.deployment = Deployment.plan(data, [("west", "east")], 1, free_base_port(16))
        if fault_proxy:
            self.deployment.add_fault_proxy()
        for key, value in settings.items():
            if not hasattr(self.deployment, key):
                raise TypeError(f"no deployment setting {key!r}")
            setattr(self.deployment, key, value)
        self.deployment.save()
        self.local = LocalDeployment(self.deployment)
        self.client = Client(self.deployment.gateway_url, self.deployment.token)

    def node_of(self, region: str) -> str:
        return self.deployment.nodes_in(region)[0]


def wait_until(check: Callable[[], bool], timeout: float = 15.0, interval: float = 0.05,
               what: str = "condition") -> None:
    """Poll `check` until it holds; fail the test (not hang) at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def caught_up(client: Client, env: str) -> bool:
    view = client.environment(env)
    lsns = {r["role"]: r.get("applied_lsn") for r in view["replicas"]}
    return lsns.get("secondary") == view.get("primary_lsn") and lsns.get("secondary")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("deployment"))
    try:
        c.local.start_all()
        yield c
    finally:
        c.local.stop_all()
