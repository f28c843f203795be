"""Real Tandem processes for gateway, SDK and CLI tests (no mocks of Tandem's own parts).

`Deployed` starts `python -m tandemdb.<component> --data DIR [--name NODE]` processes on a
deployment planned on free loopback ports, logs each to `<data>/logs/<name>.log`, waits for
its `/healthz`, and stops them all (SIGTERM, then SIGKILL) at the end of the test.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tandemdb.client import Client
from tandemdb.common.deployment import Deployment

START_TIMEOUT = 20.0
HEARTBEAT_INTERVAL = 0.2


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
        self.procs: dict[str, subprocess.Popen] = {}

    def log_path(self, name: str) -> Path:
        return self.data / "logs" / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, component: str, name: str | None = None) -> subprocess.Popen:
        """Start one process and wait until its /healthz answers."""
        label = name or component
        args = [sys.executable, "-m", f"tandemdb.{component}", "--data", str(self.data)]
        if name:
            args += ["--name", name]
        self.log_path(label).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path(label).open("ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.data,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[label] = proc
        self.wait_healthy(label, self.url_of(component, name))
        return proc

    def url_of(self, component: str, name: str | None) -> str:
        if component == "gateway":
            return self.deployment.gateway_url
        if component == "controller":
            return self.deployment.controller_url
        return self.deployment.node_url(name or "")

    def wait_healthy(self, label: str, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            proc = self.procs[label]
            if proc.poll() is not None:
                raise AssertionError(f"{label} exited with {proc.returncode}:\n{self.log(label)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{label} not healthy after {START_TIMEOUT} s:\n{self.log(label)}")

    def start_all(self) -> None:
        """Controller, every node, then the gateway; returns once every node is healthy."""
        self.start("controller")
        for node in self.deployment.nodes:
            self.start("node", node)
        self.start("gateway")
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
        out = []
        for label in self.procs:
            tail = self.log(label).splitlines()[-lines:]
            out.append(f"--- {label}.log (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(out)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
