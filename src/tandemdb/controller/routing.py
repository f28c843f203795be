"""The routing table: where each environment's replicas live, kept current by long poll.

The gateway (and later the SDK) holds a copy and asks `GET /internal/v1/routing?after=R&wait=S`
again as soon as it gets an answer. The table's revision is the store's revision: every
catalog or node-URL change moves it, so a watcher never misses one. The answer comes at
once when the store's revision differs from `after`, else when the next write lands, else
after `wait` seconds with the same revision.
"""

from __future__ import annotations

from .catalog import Catalog, EnvState, Role
from .topology import Topology

MAX_WAIT_SECONDS = 60.0


class Routing:
    def __init__(self, catalog: Catalog, topology: Topology) -> None:
        self.catalog, self.topology = catalog, topology
        self.store = catalog.store

    def table(self) -> dict:
        # Read the revision first: the table read after it is at least that new, so a
        # watcher that asks again with this revision cannot miss a write in between.
        revision = self.store.revision()
        urls = self.topology.node_urls()
        environments = {}
        for record in self.catalog.list():
            if record["state"] == EnvState.DELETING:
                continue
            replicas: dict[str, dict] = {}
            # Primaries last, so that if a region ever holds two replicas it routes to the
            # primary.
            for replica in sorted(record["replicas"], key=lambda r: r["role"] == Role.PRIMARY):
                replicas[replica["region"]] = {"node": replica["node"],
                                               "url": urls.get(replica["node"]),
                                               "role": replica["role"]}
            environments[record["name"]] = {
                "epoch": record["epoch"], "primary_region": record["primary_region"],
                "replicas": replicas, "operation": record.get("operation"),
                # The gateway holds calls to the primary while this is true (failover).
                "switching": record["state"] == EnvState.SWITCHING}
        return {"revision": revision, "environments": environments}

    def poll(self, after: int | None, wait: float) -> dict:
        """The table, once it is newer than `after` or `wait` s passed. Blocking."""
        wait = min(max(wait, 0.0), MAX_WAIT_SECONDS)
        if after is not None and wait > 0 and self.store.revision() == after:
            self.store.watch("", after, wait)
        return self.table()
