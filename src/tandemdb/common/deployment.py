"""A local deployment's settings, kept in `<data>/deployment.json`.

Every process reads the same file, so the ports, the cluster secret and the admin token are
chosen once (by `tandem up`) and survive restarts.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILE = "deployment.json"
HOST = "127.0.0.1"


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

    def __post_init__(self) -> None:
        grace = self.grace_seconds
        if grace is not None and (type(grace) not in (int, float) or not math.isfinite(grace)
                                  or grace <= 0):
            raise ValueError(f"grace_seconds in {FILE} must be a number of seconds above 0, "
                             f"or null for off, not {grace!r}")
        ttl = self.lease_ttl
        if type(ttl) not in (int, float) or not math.isfinite(ttl) or ttl < 0:
            raise ValueError(f"lease_ttl in {FILE} must be a number of seconds >= 0 (0 turns "
                             f"leases off, which only node tests without a controller use), "
                             f"not {ttl!r}")

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.gateway_port}"

    @property
    def controller_url(self) -> str:
        return f"http://{HOST}:{self.controller_port}"

    def node_url(self, name: str) -> str:
        return f"http://{HOST}:{self.nodes[name]['port']}"

    def nodes_in(self, region: str) -> list[str]:
        return sorted(n for n, spec in self.nodes.items() if spec["region"] == region)

    @classmethod
    def plan(cls, data: Path, pairs: list[tuple[str, str]], nodes_per_region: int,
             port: int) -> Deployment:
        """Lay out ports from `port` upwards: gateway, controller, then each node."""
        regions: dict[str, str] = {}
        for a, b in pairs:
            regions[a], regions[b] = b, a
        nodes: dict[str, dict] = {}
        next_port = port + 2
        for region in regions:
            for i in range(1, nodes_per_region + 1):
                nodes[f"{region}-{i}"] = {"region": region, "port": next_port}
                next_port += 1
        return cls(str(data), regions, nodes, port, port + 1)

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
        return cls(**json.loads(path.read_text()))
