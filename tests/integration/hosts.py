"""A deployment laid out as on separate hosts: one loopback address per site, and per
process its own config file, data dir and log (docs/deploy.md).

`spread(deployment, SITES)` rewrites a planned deployment so that every process binds its
site's address on a port of its own (free on every address), and `Hosts` starts each
process the way an operator would on a host of its own: `tandem serve KIND --config FILE`
for Tandem's processes, `etcd_local.command` for the etcd members. Nothing is shared
between two processes' directories; `Hosts.dirs` says which is whose.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tandemdb import etcd_local
from tandemdb.common.deployment import Deployment
from tandemdb.local import free_base_port

# One address per site; 127.0.0.1 is nobody's, so a process found there is a leak.
SITES = {"west": "127.0.0.2", "east": "127.0.0.3", "witness": "127.0.0.4"}
LOOPBACK = ["127.0.0.1", *SITES.values()]
KINDS = ("etcd", "controller", "node", "gateway")  # the start order
START_TIMEOUT = 30.0


def bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` consecutive ports free on every loopback address of `LOOPBACK`: a process
    that answers on one of them at an address not its own can only be ours, leaking."""
    for _ in range(50):
        base = free_base_port(count)
        ports = list(range(base, base + count))
        if all(bindable(host, port) for host in LOOPBACK for port in ports):
            return ports
    raise RuntimeError(f"no {count} consecutive ports free on all of {', '.join(LOOPBACK)}")


def spread(deployment: Deployment, sites: dict[str, str]) -> None:
    """Give every process (nodes, controllers, gateways, etcd members) its site's host and
    a free port of its own."""
    d = deployment
    specs = [*d.nodes.values(), *(d.controllers or {}).values(),
             *(d.gateways or {}).values()]
    members = list(d.etcd_members().values())
    ports = iter(free_ports(len(specs) + 2 * len(members)))
    for spec in specs:
        spec["host"] = sites[spec.get("site") or spec["region"]]
        spec["port"] = next(ports)
    for member in members:
        member["host"] = sites[member["site"]]
        member["client_port"], member["peer_port"] = next(ports), next(ports)
    d.controller_port = next(iter(d.controller_specs().values()))["port"]
    d.gateway_port = next(iter(d.gateway_specs().values()))["port"]


class Hosts:
    """The processes of `deployment`, each under `root/<name>/`: `config.json`, `data/`
    and `log`, as if each ran on a machine of its own."""

    def __init__(self, deployment: Deployment, root: Path) -> None:
        self.deployment, self.root = deployment, root
        self.processes: dict[str, subprocess.Popen] = {}

    def kind(self, name: str) -> str:
        d = self.deployment
        for kind, names in (("etcd", d.etcd_members()), ("controller", d.controller_specs()),
                            ("gateway", d.gateway_specs()), ("node", d.nodes)):
            if name in names:
                return kind
        raise KeyError(name)

    def names(self, kind: str | None = None) -> list[str]:
        d = self.deployment
        every = [*d.etcd_members(), *d.controller_specs(), *sorted(d.nodes),
                 *d.gateway_specs()]
        return [n for n in every if kind is None or self.kind(n) == kind]

    def dir(self, name: str) -> Path:
        """The process's data dir: the only place it may write."""
        return self.root / name / "data"

    def log_file(self, name: str) -> Path:
        return self.root / name / "log"

    def etcd_cluster(self) -> list[etcd_local.EtcdMember]:
        return [etcd_local.EtcdMember(name, self.dir(name), spec["host"],
                                      spec["client_port"], spec["peer_port"])
                for name, spec in self.deployment.etcd_members().items()]

    def command(self, name: str) -> list[str]:
        if self.kind(name) == "etcd":
            cluster = self.etcd_cluster()
            member = next(m for m in cluster if m.name == name)
            return etcd_local.command(member, cluster, f"hosts-{self.deployment.secret[:8]}")
        config = self.root / name / "config.json"
        config.write_text(json.dumps(self.deployment.config_for(name, self.dir(name)),
                                     indent=2))
        os.chmod(config, 0o600)
        return [sys.executable, "-m", "tandemdb.cli.main", "serve", self.kind(name),
                "--config", str(config)]

    def start(self, name: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        self.dir(name).mkdir(exist_ok=True)
        with open(self.log_file(name), "ab") as log:
            self.processes[name] = subprocess.Popen(
                self.command(name), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root / name)

    def start_all(self) -> None:
        """etcd (all members at once: one alone has no quorum), then one kind at a time,
        each process answering before the next kind starts."""
        for kind in KINDS:
            for name in self.names(kind):
                self.start(name)
            for name in self.names(kind):
                self.wait_healthy(name)
            if kind == "controller":
                self.wait_leader()

    def wait_healthy(self, name: str) -> None:
        path = "/health" if self.kind(name) == "etcd" else "/healthz"
        url = self.deployment.url(name) + path
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited with code {self.processes[name].returncode}"
                                   f"; see {self.log_file(name)}:\n{self.tail(name)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = httpx.get(url, timeout=1.0)
                if answer.status_code == 200 and answer.json().get("health", "true") == "true":
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not answer {url} within {START_TIMEOUT:g} s; see "
                           f"{self.log_file(name)}:\n{self.tail(name)}")

    def wait_leader(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for name in self.names("controller"):
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    url = self.deployment.url(name) + "/healthz"
                    if httpx.get(url, timeout=1.0).json()["leading"]:
                        return name
            time.sleep(0.05)
        raise RuntimeError(f"no controller leads {START_TIMEOUT:g} s after start-up:\n"
                           + self.logs_tail())

    def tail(self, name: str, lines: int = 20) -> str:
        try:
            text = self.log_file(name).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def logs_tail(self, lines: int = 20) -> str:
        return "\n".join(f"--- {self.log_file(n)}\n{self.tail(n, lines)}"
                         for n in self.processes)

    def stop_all(self, timeout: float = 5.0) -> None:
        """SIGTERM Tandem's processes all at once, then the etcd members one by one (a
        controller resigns through them, and a member stopping beside another that stops
        too waits out its leader transfer); SIGKILL what has not exited within `timeout`
        of its SIGTERM."""
        tandem = [n for n in reversed(self.names()) if self.kind(n) != "etcd"]
        for group in (tandem, *([n] for n in self.names("etcd"))):
            running = [self.processes[n] for n in group
                       if n in self.processes and self.processes[n].poll() is None]
            for process in running:
                process.terminate()
            deadline = time.monotonic() + timeout
            for process in running:
                try:
                    process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
