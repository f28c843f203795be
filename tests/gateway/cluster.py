"""Real Tandem processes for gateway, SDK and CLI tests (no mocks of Tandem's own parts).

`Deployed` runs a deployment planned on free loopback ports through `LocalDeployment`, the
launcher `tandem up` uses: each process logs to `<data>/logs/<name>.log`, is waited for on
its `/healthz`, and all are stopped (SIGTERM, then SIGKILL) at the end of the test.
"""

from __future__ import annotations

import time
from pathlib import Path

from tandemdb.client import Client
from tandemdb.common.deployment import Deployment
from tandemdb.local import LocalDeployment, free_base_port

START_TIMEOUT = 20.0
HEARTBEAT_INTERVAL = 0.2


def plan(data: Path, nodes_per_region: int = 1, **settings) -> Deployment:
    """A west=east deployment in `data`, saved, on free ports; `settings` override fields."""
    data.mkdir(parents=True, exist_ok=True)
    deployment = Deployment.plan(data, [("west", "east")], nodes_per_region,
                                 free_base_port(2 + 2 * nodes_per_region))
    deployment.heartbeat_interval = HEARTBEAT_INTERVAL
    for key, value in settings.items():
        setattr(deployment, key, value)
    deployment.save()
    return deployment


class Deployed:
    """The processes of one deployment, started on demand, all stopped by `stop_all`."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.data = Path(deployment.data)
        self.local = LocalDeployment(deployment)

    def log(self, name: str) -> str:
        return self.local.log_file(name).read_text(errors="replace")

    def start(self, name: str) -> None:
        """Start one process ("controller", "gateway" or a node) and wait for its /healthz."""
        self.local.start(name, wait=False)
        self.local.wait_healthy(name, START_TIMEOUT)

    def start_all(self) -> None:
        """Controller, every node, then the gateway; returns once every node is healthy."""
        for name in self.local.names():
            self.start(name)
        nodes: list[dict] = []
        with self.client() as client:
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                nodes = [n for r in client.regions() for n in r.get("nodes", [])]
                if len(nodes) == len(self.deployment.nodes) and all(n.get("healthy")
                                                                    for n in nodes):
                    return
                time.sleep(0.1)
        raise AssertionError(f"nodes not healthy after {START_TIMEOUT} s: {nodes}\n"
                             + self.logs_tail())

    def client(self, **options) -> Client:
        return Client(self.deployment.gateway_url, self.deployment.token, **options)

    def logs_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {self.local.log_file(name)} (last {lines} lines)\n"
                         + self.local.tail(name, lines) for name in self.local.processes)

    def stop_all(self) -> None:
        self.local.stop_all()
