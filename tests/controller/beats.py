"""Heartbeats played for the nodes, in a thread, while a controller test runs."""

from __future__ import annotations

import contextlib
import threading

import httpx

from .conftest import HEARTBEAT_INTERVAL, ControllerProcess


class Beater:
    """Heartbeats for some nodes every interval, in a thread, from `delay` s on."""

    def __init__(self, ctl: ControllerProcess, nodes: list[str], delay: float = 0.0,
                 peers: dict[str, dict] | None = None) -> None:
        self.ctl, self.nodes, self.delay, self.peers = ctl, nodes, delay, peers or {}
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Beater:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_flag.set()
        self.thread.join(5)

    def _run(self) -> None:
        self.stop_flag.wait(self.delay)
        with httpx.Client(base_url=self.ctl.url, timeout=5.0,
                          headers={"X-Tandem-Secret": self.ctl.deployment.secret}) as http:
            while not self.stop_flag.is_set():
                for node in list(self.nodes):  # (a test may silence one meanwhile)
                    with contextlib.suppress(httpx.HTTPError):  # (restarting)
                        http.post("/internal/v1/heartbeat", json={
                            "node": node, "region": self.ctl.deployment.nodes[node]["region"],
                            "url": self.ctl.deployment.node_url(node), "replicas": {},
                            "peers": self.peers.get(node, {})})
                self.stop_flag.wait(HEARTBEAT_INTERVAL)
