"""The shape of a deployment's control plane, chosen by `tandem up` (docs/deploy.md).

A `Shape` says where the controllers' state lives (`sqlite` in the controller's data dir,
or `etcd`: a 3-member cluster `tandem up` runs, one member per site, or an external one),
how many controllers run (one per site; they elect a leader through an etcd lease) and
whether each region has a gateway of its own. `Shape.check` refuses what cannot work,
with the reason; `Shape.apply` lays the extra processes out on ports after the nodes'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .deployment import Deployment

SQLITE, ETCD = "sqlite", "etcd"
SINGLE, PER_REGION = "single", "per-region"
MAX_CONTROLLERS = 7
NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass(frozen=True)
class Shape:
    store: str = SQLITE  # "sqlite", "etcd" (tandem up runs it), or "etcd://h:p[,h:p…]"
    controllers: int | None = None  # None: 1 with sqlite, one per site (3) with etcd
    gateways: str | None = None  # "single" or "per-region"; None: per-region with etcd
    witness: str = "witness"
    prefix: str = "tandem/"  # etcd keys live under it (several deployments, one cluster)
    endpoints: list[str] = field(default_factory=list)  # parsed from an etcd:// store

    @classmethod
    def parse(cls, store: str = SQLITE, controllers: int | None = None,
              gateways: str | None = None, witness: str = "witness") -> Shape:
        """`tandem up`'s flags as a Shape; ValueError naming the flag when one is wrong."""
        endpoints: list[str] = []
        if store.startswith("etcd://"):
            endpoints = etcd_endpoints(store)
        elif store not in (SQLITE, ETCD):
            raise ValueError(f"--store must be sqlite, etcd, or etcd://HOST:PORT[,HOST:PORT…] "
                             f"for a cluster that already runs; not {store!r}")
        if gateways not in (None, SINGLE, PER_REGION):
            raise ValueError(f"--gateways must be {SINGLE} or {PER_REGION}, not {gateways!r}")
        if not NAME.match(witness):
            raise ValueError(f"--witness must be a site name of lowercase letters, digits "
                             f"and '-', not {witness!r}")
        shape = cls(store, controllers, gateways, witness, endpoints=endpoints)
        if controllers is not None:
            shape.check_controllers(controllers)
        return shape

    @property
    def on_etcd(self) -> bool:
        return self.store != SQLITE

    def check_controllers(self, count: int) -> None:
        if count < 1 or count > MAX_CONTROLLERS:
            raise ValueError(f"--controllers must be from 1 to {MAX_CONTROLLERS}, not {count}")
        if count % 2 == 0:
            raise ValueError(f"--controllers must be odd, not {count}: the controllers run "
                             "one per site, and a control plane that loses half of an even "
                             "number of sites has no majority left to go on (etcd needs one "
                             "to decide); use 1, 3, 5 or 7")
        if count > 1 and not self.on_etcd:
            raise ValueError(f"--controllers {count} needs a store the controllers share: "
                             "add --store etcd (sqlite keeps the state in one controller's "
                             "data dir)")

    def controller_count(self, sites: int) -> int:
        count = self.controllers if self.controllers is not None else (
            sites if self.on_etcd else 1)
        if count > sites:
            raise ValueError(f"--controllers {count}: the controllers run one per site, and "
                             f"this layout has {sites} sites")
        return count

    def check_sites(self, regions: list[str]) -> None:
        if self.on_etcd and self.witness in regions:
            raise ValueError(f"--witness {self.witness!r} is a region: the witness is a third "
                             "site beside the regions, so that losing a region leaves two of "
                             "three etcd members; name another site")

    def apply(self, deployment: Deployment, next_port: int) -> None:
        """Add the shape's controllers, gateways and etcd members to a planned deployment,
        on ports from `next_port` (the first controller and gateway keep theirs)."""
        regions = list(deployment.regions)
        self.check_sites(regions)
        first_pair = regions[:2]
        sites = first_pair + ([self.witness] if self.on_etcd else []) + regions[2:]
        count = self.controller_count(len(sites))
        host = "127.0.0.1"
        if self.on_etcd:
            deployment.witness = self.witness
            deployment.store = {"kind": ETCD, "prefix": self.prefix}
            if self.endpoints:
                deployment.store["endpoints"] = self.endpoints
            else:
                members = {}
                for site in sites:
                    members[f"etcd-{site}"] = {"site": site, "host": host,
                                               "client_port": next_port,
                                               "peer_port": next_port + 1}
                    next_port += 2
                deployment.store["members"] = members
        if count > 1:
            controllers = {}
            for i, site in enumerate(sites[:count]):
                port = deployment.controller_port if i == 0 else next_port
                controllers[f"controller-{site}"] = {"site": site, "host": host, "port": port}
                next_port += i > 0
            deployment.controllers = controllers
        if (self.gateways or (PER_REGION if self.on_etcd else SINGLE)) == PER_REGION:
            gateways = {}
            for i, region in enumerate(regions):
                port = deployment.gateway_port if i == 0 else next_port
                gateways[f"gateway-{region}"] = {"region": region, "host": host, "port": port}
                next_port += i > 0
            deployment.gateways = gateways


def etcd_endpoints(text: str) -> list[str]:
    """`etcd://h1:p1,h2:p2` → ["http://h1:p1", "http://h2:p2"]; ValueError when malformed."""
    rest = text.removeprefix("etcd://")
    endpoints = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--store {text!r}: write each etcd endpoint as HOST:PORT "
                             f"(etcd://10.0.0.1:2379,10.0.0.2:2379); {part.strip()!r} is not")
        endpoints.append(f"http://{host}:{int(port)}")
    return endpoints
