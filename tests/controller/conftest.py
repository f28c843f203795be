"""Controller tests run the real process: `python -m tandemdb.controller --data DIR`.

There are no node processes here. Tests play the nodes by POSTing heartbeats themselves;
the controller's admin calls to the nodes' ports find nothing listening (connection
refused), which is exactly the "node unreachable" case creation must survive.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tandemdb.common.http import SECRET_HEADER
from tandemdb.controller.store import Store, open_store
from tandemdb.controller.store.etcd import EtcdStore
from tandemdb.controller.store.sqlite import SqliteStore
from tandemdb.testing import LocalDeployment
from tests.etcd_fixture import shared_etcd, unique_prefix

HEARTBEAT_INTERVAL = 0.2  # health limit = 3 x 0.2 s, so health tests stay short
START_TIMEOUT = 15.0


class ControllerProcess:
    """The controller of a harness deployment (`local`) of which nothing else runs, with an
    HTTP client holding the secret. The harness stops every process `local` started."""

    def __init__(self, local: LocalDeployment) -> None:
        self.local, self.deployment = local, local.deployment
        self.url = self.deployment.controller_url
        self.http = httpx.Client(base_url=self.url, timeout=10.0,
                                 headers={SECRET_HEADER: self.deployment.secret})

    def start(self, env: dict[str, str] | None = None) -> ControllerProcess:
        """Start (or restart) the controller and wait until it leads: on etcd a restarted
        one first waits out the lease of the one killed. `env` as `LocalDeployment.start`."""
        self.local.start("controller", wait=False, env=env)
        self.local.wait_healthy("controller", START_TIMEOUT)
        self.local.wait_leader(START_TIMEOUT)  # on etcd: elected, and its term started
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.local.kill("controller")

    def log(self) -> str:
        return self.local.log("controller")

    @contextmanager
    def open_store(self) -> Iterator[Store]:
        """The deployment's own store (SQLite file or etcd prefix), as a second writer
        would see it: to plant records or read what a killed controller left. Unfenced."""
        store = open_store(Path(self.deployment.data) / "controller",
                           {**self.deployment.store,
                            "endpoints": self.deployment.store_endpoints()})
        try:
            yield store
        finally:
            store.close()

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


@contextmanager
def controller_process(data: Path, **settings: object) -> Iterator[ControllerProcess]:
    """A deployment planned in `data` by the harness, nothing started yet (`start()`);
    every process started is stopped on the way out. Private webhook targets are allowed
    (the tests' receivers listen on 127.0.0.1) unless `settings` say otherwise."""
    settings = {"heartbeat_interval": HEARTBEAT_INTERVAL, "allow_private_webhooks": True,
                **settings}
    with LocalDeployment.temporary(data, start=(), **settings) as local:
        ctl = ControllerProcess(local)
        try:
            yield ctl
        finally:
            ctl.http.close()


BACKENDS = ["sqlite", "etcd"]  # every controller test runs on both stores


def backend(request: pytest.FixtureRequest) -> dict:
    """The deployment settings of the store `request.param` names: SQLite in the
    controller's data dir, or the session's shared etcd under a prefix of its own."""
    if request.param == "sqlite":
        return {}
    return {"store": {"kind": "etcd", "endpoints": shared_etcd(request).endpoints,
                      "prefix": unique_prefix()}}


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest) -> dict:
    """The store settings of each backend, for tests that plan a deployment themselves."""
    return backend(request)


@pytest.fixture(scope="module", params=BACKENDS)
def controller(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """One controller shared by a module's tests (each test uses its own env names). The
    tests heartbeat now and then, so node failover and self-healing are off: a node silent
    between two tests would be declared down, and its operation and event land in the
    middle of a test that checks nothing changed."""
    with controller_process(tmp_path_factory.mktemp("deployment"), node_grace_seconds=None,
                            replace_after_seconds=None, **backend(request)) as ctl:
        yield ctl.start()


@pytest.fixture(scope="module", params=BACKENDS)
def ha_controller(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    """A controller of a deployment with 2 nodes per region (local HA), each node heard from
    once, so placement picks among all of them."""
    with controller_process(tmp_path_factory.mktemp("ha"), nodes_per_region=2,
                            **backend(request)) as ctl:
        ctl.start()
        for node in ctl.deployment.nodes:
            assert ctl.heartbeat(node).status_code == 200
        yield ctl


@pytest.fixture(params=BACKENDS)
def own_controller(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ControllerProcess]:
    """A controller of its own, for tests that kill it or depend on every heartbeat."""
    with controller_process(tmp_path / "deployment", **backend(request)) as ctl:
        yield ctl


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh coordination store of each backend, closed after the test: SQLite in a new
    file, or etcd under a prefix of its own in the session's shared etcd."""
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "store.sqlite")
    else:
        s = EtcdStore(shared_etcd(request).endpoints, prefix=unique_prefix())
    yield s
    s.close()
