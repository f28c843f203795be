"""A deployment with two controllers of which the first to try is lost (issue 12).

`controller-west` (west's own site) listens on nothing: its port is held by a `LostSite`,
bound but not listening, so every connection to it is refused, as to a site that is gone.
`LostSite.breaking()` makes it accept connections, read what comes and close them without
an answer: a controller that died with a write in hand (until then its `/healthz` says it
leads, so a gateway's leader watch sends calls there; after, it answers nothing).
`controller-east` is the real controller process (sqlite) on the deployment's controller
port. Nodes and the gateway of
west try west's controller first (`Deployment.controller_links`), so they must move on.
Used by the gateway tests and by tests/node (heartbeats, sync records).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from tandemdb.common.deployment import HOST, Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.local import free_base_port
from tandemdb.testing import LocalDeployment, plan

from .cluster import HEARTBEAT_INTERVAL

LOST, LIVE, GATEWAY = "controller-west", "controller-east", "gateway-west"
_BODY = b'{"ok": true, "component": "controller", "name": "controller-west", "leading": true}'
HEALTHZ = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
           + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY)


class LostSite:
    """A loopback port this test holds, with no controller behind it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, free_base_port(1)))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.requests: list[bytes] = []  # what reached it while breaking
        self._thread: threading.Thread | None = None

    def breaking(self) -> None:
        """From now on: accept, read the request, close without answering."""
        self.sock.listen(16)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            with conn:
                conn.settimeout(5.0)
                with suppress(OSError):
                    request = conn.recv(65536)
                    if request.startswith(b"GET /healthz "):
                        # Until it has swallowed an API write it says it leads, so a
                        # gateway's leader watch sends calls here (common/leader_watch.py):
                        # the worst case for a write in flight. Dead since, it answers
                        # nothing. (Nodes' heartbeats and the gateway's routing polls come
                        # here too, and are swallowed.)
                        if not any(r.startswith(b"POST /v1/") for r in self.requests):
                            conn.sendall(HEALTHZ)
                        continue
                    self.requests.append(request)

    def close(self) -> None:
        self.sock.close()
        if self._thread is not None:
            self._thread.join(5.0)


def with_lost_west(deployment: Deployment, lost: LostSite) -> None:
    """Two controllers (west's the lost site, east's the real one) and gateway-west."""
    deployment.controllers = {
        LOST: {"site": "west", "host": HOST, "port": lost.port},
        LIVE: {"site": "east", "host": HOST, "port": deployment.controller_port}}
    deployment.gateways = {GATEWAY: {"region": "west", "host": HOST,
                                     "port": deployment.gateway_port}}
    deployment.save()


def healthy_at(cluster: LocalDeployment, controller: str) -> bool:
    """Whether `controller` sees every node healthy (asked directly, with the secret)."""
    answer = httpx.get(f"{cluster.url(controller)}/v1/regions", timeout=10,
                       headers={SECRET_HEADER: cluster.deployment.secret})
    nodes = [n for r in answer.json()["regions"] for n in r.get("nodes", [])] \
        if answer.status_code == 200 else []
    return bool(nodes) and all(n.get("healthy") for n in nodes)


@contextmanager
def lost_west(data: Path, start: Iterable[str],
              **settings: Any) -> Iterator[tuple[LocalDeployment, LostSite]]:
    """The deployment above with `start` running (never `controller-west`), stopped on
    the way out; every log's tail is printed, which pytest shows when a test failed."""
    lost = LostSite()
    deployment = plan(data, heartbeat_interval=HEARTBEAT_INTERVAL, **settings)
    with_lost_west(deployment, lost)
    cluster = LocalDeployment(deployment)
    try:
        for name in start:
            cluster.start(name)
        yield cluster, lost
    finally:
        cluster.close()
        lost.close()
        print(cluster.logs_tail())
