"""The routing table: where each environment's replicas live, kept current by long poll.

The gateway (and later the SDK) holds a copy and asks `GET /internal/v1/routing?after=R&wait=S`
again as soon as it gets an answer. The table's revision is the store's revision when it was
read, so a watcher never misses a change: the answer comes at once when a catalog record or
a node URL changed after `after`, else when one changes, else after `wait` seconds.
"""

from __future__ import annotations

import time

from .catalog import PREFIX, Catalog, EnvState, Role
from .store import Compacted
from .topology import Topology

MAX_WAIT_SECONDS = 60.0
ROUTED = (PREFIX, "nodes/")  # the keys the table is made of


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
        """The table, once something it shows changed after revision `after`, or `wait`
        s passed. Blocking.

        Only catalog records and node URLs wake a watcher: operations, events and webhook
        outboxes write the store far more often (a region failover, thousands of times),
        and each wake-up costs the controller and the gateway a whole table."""
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        while after is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                changes = self.store.watch("", after, remaining)
            except Compacted:
                break  # too far behind to tell: answer the table as it is
            if not changes or any(c.key.startswith(ROUTED) for c in changes):
                break
            after = changes[-1].revision
        return self.table()
