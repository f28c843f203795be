"""A local deployment's settings, kept in `<data>/deployment.json`.

Every process reads the same file, so the ports, the cluster secret and the admin token are
chosen once (by `tandem up`) and survive restarts.

With a fault proxy (`tandem up --fault-proxy`), the links a region's outage would cut run
through it: each node's heartbeats to the controller, the controller's calls to each node,
each node's pulls from the nodes of the paired region, and from the other nodes of its own
region (its local replicas' streams, docs/ha.md). `link_url(src, dst)` is how one
process reaches another; clients and the gateway always reach nodes directly.

`Deployment.load` checks the file against `SCHEMA` before using it: an unknown key (a typo,
or a setting this version does not have) or a value of the wrong type is one line naming
the key and the file (`DeploymentError`, a ValueError), not a traceback later on.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .layout import Shape

FILE = "deployment.json"
HOST = "127.0.0.1"
CONTROLLER = "controller"
GATEWAY = "gateway"


@dataclass
class Deployment:
    data: str
    regions: dict[str, str]  # region -> paired region (both directions present)
    nodes: dict[str, dict]  # node name -> {"region": r, "port": p}
    gateway_port: int
    controller_port: int
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lease_ttl: float = 5.0  # seconds; primaries write only under a lease (docs/leases.md)
    heartbeat_interval: float = 0.5
    max_body_bytes: int = 64 << 20
    # A region is declared down, and its primaries force-failed-over, once the controller
    # and the paired region have both lost it for this long; None leaves it to the operator.
    grace_seconds: float | None = 30.0
    # One node is declared down after this long without a heartbeat, and its primaries move
    # to their sync local secondaries (docs/ha.md); None leaves it to the operator.
    node_grace_seconds: float | None = 2.0
    # A node down this long has its replicas re-created on other nodes of its region
    # (self-healing, docs/ha.md); None never replaces them.
    replace_after_seconds: float | None = 60.0
    # A primary's sync secondary silent this long is recorded `sync: false` (docs/ha.md).
    sync_timeout: float = 1.0
    # False: local secondaries are asynchronous (never recorded sync, so a node loss waits
    # for the operator); the benchmark's baseline for what synchronous commit costs.
    sync_commit: bool = True
    # {"port": control port, "links": {"west-1>controller": port, …}}; None: no proxy.
    fault_proxy: dict | None = None
    # Webhooks may target loopback, private, link-local … addresses (controller/targets.py):
    # only for receivers on the deployment's own network, and tests with a local receiver.
    allow_private_webhooks: bool = False
    # The control plane (docs/deploy.md). None: one controller named "controller" on
    # `controller_port`, one gateway named "gateway" on `gateway_port`, as before.
    controllers: dict[str, dict] | None = None  # name -> {"site", "host", "port"}
    gateways: dict[str, dict] | None = None  # name -> {"region", "host", "port"}
    # Where the controllers keep their state: {"kind": "sqlite"} (in the controller's data
    # dir), or {"kind": "etcd", "endpoints": [url, …], "prefix": "tandem/", "members": {name:
    # {"site", "host", "client_port", "peer_port"}}} ("members": etcd that `tandem up` runs).
    store: dict = field(default_factory=lambda: {"kind": "sqlite"})
    witness: str | None = None  # the third site, beside the regions of the pair (etcd only)
    # Seconds of the controllers' leader lease in etcd (whole seconds: etcd's unit).
    controller_lease_ttl: int = 2

    def __post_init__(self) -> None:
        grace = self.grace_seconds
        if grace is not None and (type(grace) not in (int, float) or not math.isfinite(grace)
                                  or grace <= 0):
            raise ValueError(f"grace_seconds in {FILE} must be a number of seconds above 0, "
                             f"or null for off, not {grace!r}")
        for key, low, high in (("node_grace_seconds", 0.1, 3600.0),
                               ("replace_after_seconds", 1.0, 86400.0)):
            value = getattr(self, key)
            if value is not None and (type(value) not in (int, float)
                                      or not low <= value <= high):
                raise ValueError(f"{key} in {FILE} must be a number of seconds from {low:g} "
                                 f"to {high:g}, or null for off, not {value!r}")
        if type(self.sync_timeout) not in (int, float) or not 0.05 <= self.sync_timeout <= 10:
            raise ValueError(f"sync_timeout in {FILE} must be a number of seconds from 0.05 "
                             f"to 10, not {self.sync_timeout!r}")
        if type(self.sync_commit) is not bool:
            raise ValueError(f"sync_commit in {FILE} must be true or false, not "
                             f"{self.sync_commit!r}")
        if type(self.controller_lease_ttl) is not int or not 1 <= self.controller_lease_ttl <= 60:
            raise ValueError(f"controller_lease_ttl in {FILE} must be whole seconds from 1 to "
                             f"60, not {self.controller_lease_ttl!r}")
        if type(self.allow_private_webhooks) is not bool:
            raise ValueError(f"allow_private_webhooks in {FILE} must be true or false, not "
                             f"{self.allow_private_webhooks!r}")
        ttl = self.lease_ttl
        if type(ttl) not in (int, float) or not math.isfinite(ttl) or ttl < 0:
            raise ValueError(f"lease_ttl in {FILE} must be a number of seconds >= 0 (0 turns "
                             f"leases off, which only node tests without a controller use), "
                             f"not {ttl!r}")

    # -- the processes and where they listen (each binds the host of its own entry) --------
    def controller_specs(self) -> dict[str, dict]:
        """Controller name -> {"site", "host", "port"}: one "controller" unless planned."""
        return self.controllers or {CONTROLLER: {"site": None, "host": HOST,
                                                 "port": self.controller_port}}

    def gateway_specs(self) -> dict[str, dict]:
        """Gateway name -> {"region", "host", "port"}: one "gateway" unless planned."""
        return self.gateways or {GATEWAY: {"region": None, "host": HOST,
                                           "port": self.gateway_port}}

    def etcd_members(self) -> dict[str, dict]:
        """The etcd members `tandem up` runs (none with sqlite, or an external etcd)."""
        return self.store.get("members", {}) if self.store.get("kind") == "etcd" else {}

    def address(self, name: str) -> tuple[str, int]:
        """The host and port process `name` listens on (an etcd member: its client port)."""
        for specs in (self.controller_specs(), self.gateway_specs(), self.nodes):
            if name in specs:
                return specs[name].get("host", HOST), specs[name]["port"]
        member = self.etcd_members()[name]
        return member["host"], member["client_port"]

    def url(self, name: str) -> str:
        host, port = self.address(name)
        return f"http://{host}:{port}"

    def controller_urls(self) -> list[str]:
        return [self.url(name) for name in self.controller_specs()]

    def gateway_urls(self) -> list[str]:
        """Every gateway's URL; the first is `gateway_url`."""
        return [self.url(name) for name in self.gateway_specs()]

    def store_endpoints(self) -> list[str]:
        """The etcd client URLs the controllers use (empty with sqlite)."""
        if self.store.get("kind") != "etcd":
            return []
        members = self.etcd_members()
        return list(self.store.get("endpoints") or [
            f"http://{m['host']}:{m['client_port']}" for m in members.values()])

    def sites(self) -> list[str]:
        """Where the control plane runs: each region, then the witness (if any)."""
        return [*self.regions, *([self.witness] if self.witness else [])]

    def site_of(self, name: str) -> str | None:
        """The site of a process: a node's or gateway's region, a controller's or etcd
        member's site; None for the single controller and gateway of a one-site layout."""
        if name in self.nodes:
            return self.nodes[name]["region"]
        for specs, key in ((self.controller_specs(), "site"),
                           (self.gateway_specs(), "region"), (self.etcd_members(), "site")):
            if name in specs:
                return specs[name].get(key)
        return None

    @property
    def heartbeat_timeout(self) -> float:
        """How long a node waits for a heartbeat's answer before it moves on to the next
        controller: generous (a busy controller answers late) but bounded (a hung one, say a
        paused leader, never answers)."""
        return max(2.0, 4 * self.heartbeat_interval)

    @property
    def gateway_url(self) -> str:
        return self.gateway_urls()[0]

    @property
    def controller_url(self) -> str:
        return self.controller_urls()[0]

    def node_url(self, name: str) -> str:
        return self.url(name)

    def nodes_in(self, region: str) -> list[str]:
        return sorted(n for n, spec in self.nodes.items() if spec["region"] == region)

    # -- the fault proxy's links ----------------------------------------------------------
    def direct_url(self, name: str) -> str:
        """The URL a process serves on ("controller" or a node name)."""
        return self.controller_url if name == CONTROLLER else self.node_url(name)

    def link_url(self, src: str, dst: str) -> str:
        """How `src` reaches `dst`: through the fault proxy's link when there is one."""
        return self.proxied_url(src, dst) or self.direct_url(dst)

    def controller_links(self, src: str) -> list[str]:
        """How `src` (a node or gateway) reaches the controllers, its own site's first: any
        of them serves, as the others forward to the one that leads (docs/deploy.md)."""
        controllers = self.controllers
        if controllers is None:
            return [self.link_url(src, CONTROLLER)]
        site = self.site_of(src)
        names = sorted(controllers, key=lambda c: controllers[c]["site"] != site)
        return [self.url(name) for name in names]

    def proxied_url(self, src: str, dst: str) -> str | None:
        """The fault proxy's end of the link from `src` to `dst`, if it has that link."""
        port = self.links().get(f"{src}>{dst}")
        return None if port is None else f"http://{HOST}:{port}"

    def links(self) -> dict[str, int]:
        return (self.fault_proxy or {}).get("links", {})

    @property
    def fault_proxy_url(self) -> str | None:
        return f"http://{HOST}:{self.fault_proxy['port']}" if self.fault_proxy else None

    def region_links(self, region: str) -> list[str]:
        """The links that losing `region` from the network cuts: all with one end in it
        (those between two of its own nodes stay: the region is cut off, not shattered)."""
        ours = set(self.nodes_in(region))
        return sorted(name for name in self.links() if len(ours & set(name.split(">"))) == 1)

    @classmethod
    def ports_needed(cls, pairs: list[tuple[str, str]], nodes_per_region: int,
                     fault_proxy: bool, shape: Shape | None = None) -> int:
        """How many consecutive ports a deployment of this shape listens on (`plan`'s
        layout, the fault proxy's links included)."""
        layout = cls.plan(Path("."), pairs, nodes_per_region, 0, shape)
        if fault_proxy:
            layout.add_fault_proxy()
        return max(layout.ports()) + 1

    def ports(self) -> list[int]:
        """Every port the deployment listens on, the fault proxy's included."""
        proxy = self.fault_proxy or {}
        members = self.etcd_members().values()
        return [*(spec["port"] for spec in self.gateway_specs().values()),
                *(spec["port"] for spec in self.controller_specs().values()),
                *(spec["port"] for spec in self.nodes.values()),
                *(port for m in members for port in (m["client_port"], m["peer_port"])),
                *([proxy["port"]] if proxy else []), *proxy.get("links", {}).values()]

    def add_fault_proxy(self) -> None:
        """Put a fault proxy on every link an outage can cut; ports after the used ones."""
        if len(self.controller_specs()) > 1:
            raise ValueError("a fault proxy cuts the links of one controller; partitions "
                             "cannot be staged with several controllers yet")
        port = max(self.ports()) + 1
        names = []
        for node, spec in sorted(self.nodes.items()):
            names += [f"{node}>{CONTROLLER}", f"{CONTROLLER}>{node}"]
            names += [f"{node}>{peer}" for peer in self.nodes_in(self.regions[spec["region"]])]
            names += [f"{node}>{peer}" for peer in self.nodes_in(spec["region"]) if peer != node]
        self.fault_proxy = {"port": port,
                            "links": {name: port + 1 + i for i, name in enumerate(names)}}

    @classmethod
    def plan(cls, data: Path, pairs: list[tuple[str, str]], nodes_per_region: int,
             port: int, shape: Shape | None = None) -> Deployment:
        """Lay out ports from `port` upwards: gateway, controller, each node, then what the
        control plane's `shape` adds (more controllers and gateways, etcd members)."""
        if nodes_per_region < 1:
            raise ValueError(f"a region needs 1 node or more, not {nodes_per_region}")
        regions: dict[str, str] = {}
        for a, b in pairs:
            regions[a], regions[b] = b, a
        nodes: dict[str, dict] = {}
        next_port = port + 2
        for region in regions:
            for i in range(1, nodes_per_region + 1):
                nodes[f"{region}-{i}"] = {"region": region, "port": next_port}
                next_port += 1
        deployment = cls(str(data), regions, nodes, port, port + 1)
        (shape or Shape()).apply(deployment, next_port)
        return deployment

    def save(self) -> None:
        path = Path(self.data) / FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
        os.chmod(path, 0o600)  # it holds the secret and the token

    @classmethod
    def load(cls, data: Path) -> Deployment:
        path = Path(data) / FILE
        if not path.exists():
            raise FileNotFoundError(f"no deployment in {data}: run 'tandem up --data {data}'")
        try:
            raw = json.loads(path.read_text())
        except ValueError as exc:
            raise DeploymentError(f"{path} is not valid JSON: {exc}") from None
        check(raw, path)
        try:
            return cls(**raw)
        except ValueError as exc:  # __post_init__'s range checks name the key already
            raise DeploymentError(f"{exc} ({path})") from None


    # -- one process's config file (`tandem serve KIND --config FILE`) --------------------
    def config_for(self, name: str, data: Path | str | None = None) -> dict:
        """What process `name` needs to run on a host of its own: the deployment's shared
        description, its own name and its own data dir (`data`, else the deployment's)."""
        return {"name": name, **asdict(self), "data": str(data or self.data)}

    @classmethod
    def from_config(cls, path: Path) -> tuple[Deployment, str]:
        """Read a process's config file: the deployment it is part of, and its name."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise DeploymentError(f"no config file {path}") from None
        except ValueError as exc:
            raise DeploymentError(f"{path} is not valid JSON: {exc}") from None
        name = raw.pop("name", None) if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name:
            raise DeploymentError(f"{path} must name its process: add \"name\": "
                                  "\"west-1\" (a node, controller or gateway of the deployment)")
        check(raw, path)
        try:
            deployment = cls(**raw)
        except ValueError as exc:
            raise DeploymentError(f"{exc} ({path})") from None
        known = [*deployment.nodes, *deployment.controller_specs(), *deployment.gateway_specs()]
        if name not in known:
            raise DeploymentError(f"{path} names process {name!r}, which the deployment does "
                                  f"not have (it has {', '.join(known)})")
        return deployment, name


class DeploymentError(ValueError):
    """deployment.json does not fit SCHEMA; the message names the key and the file."""


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return _integer(value) or isinstance(value, float)


def _mapping(values: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, dict) and all(
        isinstance(k, str) and values(v) for k, v in value.items())


def _node(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("region"), str) \
        and _integer(value.get("port")) and isinstance(value.get("host", HOST), str)


def _process(where: str) -> Callable[[Any], bool]:
    """A controller's or gateway's entry: its site or region, host and port."""
    return lambda v: v is None or _mapping(lambda spec: isinstance(spec, dict) and isinstance(
        spec.get(where), str) and isinstance(spec.get("host"), str)
        and _integer(spec.get("port")))(v)


def _store(value: Any) -> bool:
    if not isinstance(value, dict) or value.get("kind") not in ("sqlite", "etcd"):
        return False
    if value["kind"] == "sqlite":
        return set(value) == {"kind"}
    endpoints, members = value.get("endpoints", []), value.get("members", {})
    return set(value) <= {"kind", "prefix", "endpoints", "members"} \
        and isinstance(value.get("prefix", ""), str) \
        and isinstance(endpoints, list) and all(isinstance(e, str) for e in endpoints) \
        and _mapping(lambda m: isinstance(m, dict) and isinstance(m.get("site"), str)
                     and isinstance(m.get("host"), str) and _integer(m.get("client_port"))
                     and _integer(m.get("peer_port")))(members) \
        and bool(endpoints or members)


def _fault_proxy(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and _integer(value.get("port"))
                             and _mapping(_integer)(value.get("links", {})))


# Each key of deployment.json: (is the value of the right type, what the right type is).
SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data": (lambda v: isinstance(v, str), "a path (string)"),
    "regions": (_mapping(lambda v: isinstance(v, str)), "an object of region: paired region"),
    "nodes": (_mapping(_node), 'an object of node: {"region": string, "port": integer}'),
    "gateway_port": (_integer, "an integer"),
    "controller_port": (_integer, "an integer"),
    "secret": (lambda v: isinstance(v, str), "a string"),
    "token": (lambda v: isinstance(v, str), "a string"),
    "lease_ttl": (_number, "a number of seconds"),
    "heartbeat_interval": (_number, "a number of seconds"),
    "max_body_bytes": (_integer, "an integer"),
    "grace_seconds": (lambda v: v is None or _number(v), "a number of seconds, or null"),
    "node_grace_seconds": (lambda v: v is None or _number(v),
                           "a number of seconds, or null"),
    "replace_after_seconds": (lambda v: v is None or _number(v),
                              "a number of seconds, or null"),
    "sync_timeout": (_number, "a number of seconds"),
    "sync_commit": (lambda v: isinstance(v, bool), "true or false"),
    "fault_proxy": (_fault_proxy,
                    'null or {"port": integer, "links": {link: integer}}'),
    "allow_private_webhooks": (lambda v: isinstance(v, bool), "true or false"),
    "controllers": (_process("site"),
                    'null or an object of name: {"site": s, "host": h, "port": p}'),
    "gateways": (_process("region"),
                 'null or an object of name: {"region": r, "host": h, "port": p}'),
    "store": (_store, '{"kind": "sqlite"} or {"kind": "etcd", "endpoints": [url, …] or '
                      '"members": {…}, "prefix": string}'),
    "witness": (lambda v: v is None or isinstance(v, str), "null or a site name"),
    "controller_lease_ttl": (_integer, "an integer number of seconds"),
}
assert set(SCHEMA) == {f.name for f in fields(Deployment)}, "SCHEMA must cover Deployment"
REQUIRED = ("data", "regions", "nodes", "gateway_port", "controller_port")


def check(raw: Any, path: Path) -> None:
    """Raise DeploymentError for the first key of `raw` that does not fit SCHEMA."""
    if not isinstance(raw, dict):
        raise DeploymentError(f"{path} must hold one JSON object, not {type(raw).__name__}")
    for key, value in raw.items():
        if key not in SCHEMA:
            raise DeploymentError(f"unknown key {key!r} in {path} (known keys: "
                                  f"{', '.join(SCHEMA)})")
        fits, expected = SCHEMA[key]
        if not fits(value):
            raise DeploymentError(f"{key} in {path} must be {expected}, not "
                                  f"{json.dumps(value)[:60]}")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise DeploymentError(f"missing key {missing[0]!r} in {path}")
