"""Controller tests run the real process: `python -m tandemdb.controller --data DIR`.

There are no node processes here. Tests play the nodes by POSTing heartbeats themselves;
the controller's admin calls to the nodes' ports find nothing listening (connection
refused), which is exactly the "node unreachable" case creation must survive.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tandemdb.common.deployment import Deployment
from tandemdb.controller.store.sqlite import SqliteStore
from tandemdb.local import LocalDeployment, free_base_port

HEARTBEAT_INTERVAL = 0.2  # health limit = 3 x 0.2 s, so health tests stay short
START_TIMEOUT = 15.0


def make_deployment(data: Path, nodes_per_region: int = 1,
                    allow_private_webhooks: bool = True) -> Deployment:
    """`allow_private_webhooks`: on, as the tests' webhook receivers listen on 127.0.0.1."""
    data.mkdir(parents=True, exist_ok=True)
    port = free_base_port(2 + 2 * nodes_per_region)
    deployment = Deployment.plan(data, [("west", "east")], nodes_per_region, port)
    deployment.heartbeat_interval = HEARTBEAT_INTERVAL
    deployment.allow_private_webhooks = allow_private_webhooks
    deployment.save()
    return deployment


class ControllerProcess:
    """The controller alone, run by `LocalDeployment`, with an HTTP client holding the secret."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.url = deployment.controller_url
        self.local = LocalDeployment(deployment)
        self.http = httpx.Client(base_url=self.url, timeout=10.0,
                                 headers={"X-Tandem-Secret": deployment.secret})

    def start(self) -> ControllerProcess:
        self.local.start("controller", wait=False)
        self.local.wait_healthy("controller", START_TIMEOUT)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.local.kill("controller")

    def close(self) -> None:
        self.local.stop("controller")
        self.http.close()

    def log(self) -> str:
        return self.local.log_file("controller").read_text(errors="replace")

    # -- playing a node ------------------------------------------------------------------

    def heartbeat(self, node: str, replicas: dict | None = None, url: str | None = None,
                  ) -> httpx.Response:
        region = self.deployment.nodes[node]["region"]
        return self.http.post("/internal/v1/heartbeat", json={
            "node": node, "region": region, "url": url or self.deployment.node_url(node),
            "replicas": replicas or {}})

    def desired(self, node: str, replicas: dict | None = None,
                url: str | None = None) -> dict[str, dict]:
        """Heartbeat as `node` and return its answer keyed by environment."""
        response = self.heartbeat(node, replicas, url)
        assert response.status_code == 200, response.text
        return {d["env"]: d for d in response.json()["replicas"]}

    def create(self, **body) -> httpx.Response:
        return self.http.post("/v1/environments", json=body)


@pytest.fixture(scope="module")
def controller(tmp_path_factory) -> ControllerProcess:
    """One controller shared by a module's tests (each test uses its own env names)."""
    ctl = ControllerProcess(make_deployment(tmp_path_factory.mktemp("deployment"))).start()
    yield ctl
    ctl.close()


@pytest.fixture
def own_controller(tmp_path) -> ControllerProcess:
    """A controller of its own, for tests that kill it or depend on every heartbeat."""
    ctl = ControllerProcess(make_deployment(tmp_path / "deployment"))
    yield ctl
    ctl.close()


@pytest.fixture
def store(tmp_path: Path):
    """A fresh SQLite coordination store, closed after the test."""
    s = SqliteStore(tmp_path / "store.sqlite")
    yield s
    s.close()
