"""Runs a whole deployment on this machine: controller, gateway and nodes as OS processes.

`tandem up`, `tandem down`, `tandem demo` and the integration tests all go through
`LocalDeployment`, so what the tests exercise is exactly what a user starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tandemdb import etcd_local
from tandemdb.common.deployment import HOST, Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.common.layout import Shape
from tandemdb.common.outages import KILL, PARTITION, staged_outages, write_outages

RUN_FILE = "run.json"
FAULT_PROXY = "faultproxy"
ETCD_TOKEN_PREFIX = "tandem-"
START_TIMEOUT = 30.0


class StartError(RuntimeError):
    """A process did not come up; the message names its log file and its last lines."""


def free_base_port(count: int) -> int:
    """A port P such that P … P+count-1 are all free on the loopback address.

    Candidates come from below the kernel's ephemeral range: a port inside it can be
    handed to some outgoing connection (our own heartbeats included) between this check
    and the server's bind, which CI once hit as "address already in use".
    """
    import random

    start, end = 10000, ephemeral_range()[0]
    if end - start < 4 * count:
        start, end = 1024, 10000
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(start, end - count)
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise StartError(f"no {count} consecutive free ports found between {start} and {end}")


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing ports (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


class LocalDeployment:
    """The processes of one deployment, started from its data dir."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.data = Path(deployment.data)
        self.logs = self.data / "logs"
        self.processes: dict[str, subprocess.Popen] = {}

    # -- naming -------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Start order: the fault proxy (if any), etcd members, controllers, nodes, then
        gateways (each process by its name in the deployment: `controller-west`, …)."""
        d = self.deployment
        proxy = [FAULT_PROXY] if d.fault_proxy else []
        return [*proxy, *d.etcd_members(), *d.controller_specs(), *sorted(d.nodes),
                *d.gateway_specs()]

    def kind(self, name: str) -> str:
        """What process `name` is: controller, gateway, node, etcd or the fault proxy."""
        d = self.deployment
        for kind, names in (("controller", d.controller_specs()), ("gateway", d.gateway_specs()),
                            ("etcd", d.etcd_members()), (FAULT_PROXY, [FAULT_PROXY])):
            if name in names:
                return kind
        return "node"

    def url(self, name: str) -> str:
        if name == FAULT_PROXY:
            return self.deployment.fault_proxy_url or ""
        return self.deployment.url(name)

    def port(self, name: str) -> int:
        return int(self.url(name).rsplit(":", 1)[1])

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def config_file(self, name: str) -> Path:
        return self.data / "config" / f"{name}.json"

    def command(self, name: str) -> list[str]:
        """The process's command line. Tandem's own processes read a config file of their
        own, written here, as on a host of their own (`tandem serve`, docs/deploy.md)."""
        kind = self.kind(name)
        if kind == "etcd":
            return etcd_local.command(self.etcd_member(name), self.etcd_cluster(),
                                      self.etcd_token())
        if kind == FAULT_PROXY:
            return [sys.executable, "-m", "tandemdb.faultproxy", "--data", str(self.data)]
        config = self.config_file(name)
        config.parent.mkdir(parents=True, exist_ok=True)
        tmp = config.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.deployment.config_for(name), indent=2))
        os.chmod(tmp, 0o600)  # it holds the secret and the token
        os.replace(tmp, config)
        return [sys.executable, "-m", f"tandemdb.{kind}", "--config", str(config)]

    def etcd_member(self, name: str) -> etcd_local.EtcdMember:
        spec = self.deployment.etcd_members()[name]
        return etcd_local.EtcdMember(name, self.data / "etcd" / name, spec["host"],
                                     spec["client_port"], spec["peer_port"])

    def etcd_cluster(self) -> list[etcd_local.EtcdMember]:
        return [self.etcd_member(name) for name in self.deployment.etcd_members()]

    def etcd_token(self) -> str:
        """The etcd cluster's token: unique per deployment, and how `_is_tandem` knows the
        member processes as this launcher's."""
        return f"{ETCD_TOKEN_PREFIX}{self.deployment.secret[:12]}"

    # -- starting and stopping ------------------------------------------------------------
    def start(self, name: str, wait: bool = True,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start one process; `env` adds environment variables (fault tests)."""
        if not port_is_free(self.port(name)):
            raise StartError(f"{name}: port {self.port(name)} is already in use; choose "
                             "another base port with --port, or stop what holds it")
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(name), "ab") as log:
            log.write(f"\n--- starting {name} at {time.ctime()} ---\n".encode())
            log.flush()
            # A session of its own: Ctrl-C in the terminal reaches `tandem up`, which then
            # stops the children in order, and a detached deployment outlives the shell.
            proc = subprocess.Popen(self.command(name), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, **env} if env else None)
        self.processes[name] = proc
        if wait:
            self.wait_healthy(name)
        return proc

    def start_all(self, progress: Callable[[str], None] | None = None) -> None:
        """Start every process, stage by stage in `names()` order: the fault proxy, the
        etcd members, the controllers (until one leads), the nodes, the gateways. The
        processes of a stage start together (an etcd member is ready only once a majority
        of them runs; the rest just start faster)."""
        d = self.deployment
        stages = [[FAULT_PROXY] if d.fault_proxy else [], list(d.etcd_members()),
                  list(d.controller_specs()), sorted(d.nodes), list(d.gateway_specs())]
        for stage in filter(None, stages):
            if progress:
                progress(f"starting {', '.join(stage)}")
            for name in stage:
                self.start(name, wait=False)
            for name in stage:
                self.wait_healthy(name)
            if stage == stages[2]:
                if progress:
                    progress("waiting for a controller to lead")
                self.wait_leader()

    def healthz(self, name: str, timeout: float = 1.0) -> dict:
        """Process `name`'s `/healthz` answer, or {} if it gives none within `timeout`."""
        try:
            return httpx.get(self.url(name) + "/healthz", timeout=timeout).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def leader(self, besides: str | None = None, timeout: float = 1.0) -> str | None:
        """The controller that says it leads now (and is not `besides`), or None."""
        for name in self.deployment.controller_specs():
            if name != besides and self.healthz(name, timeout).get("leading"):
                return name
        return None

    def wait_leader(self, timeout: float = START_TIMEOUT) -> str:
        """Until a controller has been elected and has started its term; its name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = self.leader()
            if name is not None:
                return name
            time.sleep(0.05)
        raise StartError(f"no controller leads {timeout:.0f} s after start-up; see "
                         + ", ".join(str(self.log_file(n))
                                     for n in self.deployment.controller_specs()))

    def wait_healthy(self, name: str, timeout: float = START_TIMEOUT) -> None:
        proc = self.processes[name]
        deadline = time.monotonic() + timeout
        url = self.url(name) + ("/health" if self.kind(name) == "etcd" else "/healthz")
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartError(f"{name} exited with code {proc.returncode} during start-up; "
                                 f"see {self.log_file(name)}:\n{self.tail(name)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = httpx.get(url, timeout=1.0)
                if answer.status_code == 200 and answer.json().get("health", "true") == "true":
                    return
            time.sleep(0.05)
        raise StartError(f"{name} did not answer {url} within {timeout:.0f}s; see "
                         f"{self.log_file(name)}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash or a lost machine)."""
        self.signal(name, signal.SIGKILL)
        self.processes[name].wait(10)

    def signal(self, name: str, sig: int) -> None:
        proc = self.processes[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def stop(self, name: str, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        proc = self.processes.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop_all(self) -> None:
        for name in reversed(self.names()):
            self.stop(name)

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]

    # -- detached deployments -------------------------------------------------------------
    def write_run_file(self, supervised: bool = False) -> None:
        pids = {name: proc.pid for name, proc in self.processes.items()}
        (self.data / RUN_FILE).write_text(json.dumps({"pids": pids, "supervised": supervised},
                                                     indent=2))

    def staged_out(self) -> set[str]:
        """Nodes SIGKILLed by `tandem region|node outage` (not to be restarted)."""
        return {process for name, kind in staged_outages(self.data).items() if kind == KILL
                for process in target(self.deployment, name).processes}


# -- staged outages (tandem region|node outage | recover) -----------------------------------

REGION, NODE = "region", "node"  # what a staged outage takes out


@dataclass(frozen=True)
class Target:
    """What a staged outage takes out: a whole region, or one node. `outage.json` is keyed
    by its name (a region's or a node's)."""

    what: str  # REGION or NODE
    name: str
    nodes: tuple[str, ...]
    # The fault proxy's links its partition cuts: a region's with one end in it (it is cut
    # off, its nodes still reach each other), a node's with it at either end.
    links: tuple[str, ...]
    # What a kill takes down: a node; or a region's whole site, its nodes, the controller,
    # gateway and etcd member that run there.
    processes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.what} {self.name}"


def target(deployment: Deployment, name: str, what: str | None = None) -> Target:
    """`name` as a region or a node of `deployment` (`what` insists on one); a StartError
    naming the known ones when there is none."""
    if what != NODE and name in deployment.regions:
        nodes = tuple(deployment.nodes_in(name))
        return Target(REGION, name, nodes, tuple(deployment.region_links(name)), tuple(
            p for p in LocalDeployment(deployment).names() if deployment.site_of(p) == name))
    if what != REGION and name in deployment.nodes:
        return Target(NODE, name, (name,), tuple(sorted(
            link for link in deployment.links() if name in link.split(">"))), (name,))
    known = {REGION: [*deployment.regions], NODE: [*deployment.nodes]}
    kinds = [what] if what else [REGION, NODE]
    raise StartError(f"unknown {' or '.join(kinds)} {name!r}: " + "; ".join(
        f"the {k}s are {', '.join(known[k])}" for k in kinds))


def stage_outage(data: Path, name: str, partition: bool = False,
                 what: str = REGION) -> list[str]:
    """Take a region, or one node, out of a running local deployment; answers what was hit.

    Without `partition`: SIGKILL its nodes, and for a region also the controller, gateway and
    etcd member of its site (names answered); a foreground `tandem up` does not restart
    them until `recover`. With it: its nodes keep running and serving
    clients, but the fault proxy cuts their links to the controller and to the paired
    region, and a node's to the other nodes of its region too (link names answered). A
    region and one of its nodes are never out at once."""
    deployment = Deployment.load(data)
    hit = target(deployment, name, what)
    pids = running_pids(data)
    if not pids:
        raise StartError(f"no deployment is running from {data}; 'tandem up' starts one")
    out = staged_outages(data)
    for key, kind in out.items():
        other = target(deployment, key)
        if other == hit:
            raise StartError(f"{hit} is already out ({kind}); 'tandem {what} recover {name}' "
                             "brings it back first")
        if set(other.nodes) & set(hit.nodes):
            part, whole = (other, hit) if hit.what == REGION else (hit, other)
            raise StartError(f"{other} is out ({kind}), and {part} is part of {whole}; "
                             f"'tandem {other.what} recover {key}' brings it back first")
    if partition:
        links = set_links(deployment, {"links": list(hit.links), "mode": "cut"})
        write_outages(data, {**out, name: PARTITION})
        return links
    write_outages(data, {**out, name: KILL})
    killed = []
    for name in hit.processes:
        pid = pids.get(name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(name)
    return killed


def recover(data: Path, name: str, what: str = REGION) -> tuple[str, list[str]]:
    """End a staged outage; answers its kind and the links healed or the nodes started
    (none when a foreground `up` restarts killed nodes itself). A link that another staged
    partition also cuts (a node's link to a partitioned pair) stays cut."""
    deployment = Deployment.load(data)
    hit = target(deployment, name, what)
    out = staged_outages(data)
    if name not in out:
        raise StartError(f"{hit} is not staged out; 'tandem {what} outage {name}' takes it "
                         "out")
    kind = out.pop(name)
    if kind == PARTITION:
        still = {link for key, other in out.items() if other == PARTITION
                 for link in target(deployment, key).links}
        healed = set_links(deployment, {"links": [link for link in hit.links
                                                  if link not in still], "mode": "ok"})
        write_outages(data, out)
        return kind, healed
    write_outages(data, out)
    run = json.loads((Path(data) / RUN_FILE).read_text())
    if run.get("supervised"):
        return kind, []  # the foreground supervisor starts them within half a second
    cluster = LocalDeployment(deployment)
    started = []
    for name in hit.processes:  # etcd first, then the controller, nodes, the gateway
        if name not in running_pids(data):
            run["pids"][name] = cluster.start(name).pid
            started.append(name)
    (Path(data) / RUN_FILE).write_text(json.dumps(run, indent=2))
    return kind, started


def set_links(deployment: Deployment, body: dict) -> list[str]:
    """Set faults through the fault proxy's control API (`POST /v1/links`); link names."""
    url = deployment.fault_proxy_url
    if url is None:
        raise StartError("this deployment has no fault proxy: start it with 'tandem up "
                         "--fault-proxy' to stage partitions")
    try:
        response = httpx.post(url + "/v1/links", json=body, timeout=5.0,
                              headers={SECRET_HEADER: deployment.secret})
    except httpx.HTTPError as exc:
        raise StartError(f"the fault proxy at {url} cannot be reached ({exc}); is the "
                         "deployment running?") from None
    if response.status_code != 200:
        raise StartError(f"the fault proxy refused {body}: {response.text[:300]}")
    return [link["name"] for link in response.json()["links"]]


def running_pids(data: Path) -> dict[str, int]:
    """Processes of a detached deployment that are still alive and still Tandem's."""
    path = Path(data) / RUN_FILE
    if not path.exists():
        return {}
    pids = json.loads(path.read_text()).get("pids", {})
    return {name: pid for name, pid in pids.items() if _is_tandem(pid)}


def _is_tandem(pid: int) -> bool:
    """Guard against pid reuse: only signal processes whose command line is Tandem's."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"tandemdb." in cmdline or b"\x00" + ETCD_TOKEN_PREFIX.encode() in cmdline


def stop_detached(data: Path, timeout: float = 5.0) -> list[str]:
    """Stop a detached deployment: SIGTERM all, wait, SIGKILL what is left. Returns names."""
    pids = running_pids(data)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_is_tandem(p) for p in pids.values()):
        time.sleep(0.05)
    for pid in pids.values():
        if _is_tandem(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    (Path(data) / RUN_FILE).unlink(missing_ok=True)
    return sorted(pids)


def open_or_plan(data: Path, pairs: list[tuple[str, str]], nodes_per_region: int,
                 port: int, shape: Shape | None = None) -> Deployment:
    """Reuse the deployment in `data` (same ports, secret, token), or plan a new one."""
    data = Path(data)
    if (data / "deployment.json").exists():
        return Deployment.load(data)
    deployment = Deployment.plan(data.resolve(), pairs, nodes_per_region, port, shape)
    data.mkdir(parents=True, exist_ok=True)
    deployment.save()
    return deployment


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """`west=east,north=south` → [("west", "east"), ("north", "south")]."""
    pairs = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("=")
        if not sep or not a or not b or a == b:
            raise ValueError(f"bad region pair {part!r}: write it as west=east")
        pairs.append((a, b))
    return pairs
