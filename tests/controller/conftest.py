"""Controller tests run the real process: `python -m tandemdb.controller --data DIR`.

There are no node processes here. Tests play the nodes by POSTing heartbeats themselves;
the controller's admin calls to the nodes' ports find nothing listening (connection
refused), which is exactly the "node unreachable" case creation must survive.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tandemdb.common.deployment import Deployment

HEARTBEAT_INTERVAL = 0.2  # health limit = 3 x 0.2 s, so health tests stay short
START_TIMEOUT = 15.0


def free_base_port(count: int) -> int:
    """A base port P such that P .. P+count-1 are all free on 127.0.0.1 right now."""
    for _ in range(200):
        base = random.randint(20_000, 60_000)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free range of ports found")


def make_deployment(data: Path, nodes_per_region: int = 1) -> Deployment:
    data.mkdir(parents=True, exist_ok=True)
    port = free_base_port(2 + 2 * nodes_per_region)
    deployment = Deployment.plan(data, [("west", "east")], nodes_per_region, port)
    deployment.heartbeat_interval = HEARTBEAT_INTERVAL
    deployment.save()
    return deployment


class ControllerProcess:
    """One controller process on a deployment dir, with an HTTP client holding the secret."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.url = deployment.controller_url
        self.log_path = Path(deployment.data) / "logs" / "controller.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10.0,
                                 headers={"X-Tandem-Secret": deployment.secret})

    def start(self) -> ControllerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tandemdb.controller", "--data", self.deployment.data],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited with {self.proc.returncode}:\n"
                                     f"{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"controller not up after {START_TIMEOUT} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        self.http.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

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
