"""The routing table: where each environment's replicas live, kept current by long poll.

The gateway (and later the SDK) holds a copy and asks `GET /internal/v1/routing?after=R&wait=S`
again as soon as it gets an answer. Without `after` the answer is the whole table; with it,
the entries that changed after revision R (`changes`), as soon as a catalog record changed,
else after `wait` seconds with none. Revisions are the store's, so a watcher that asks again
with the answer's revision never misses a change.
"""

from __future__ import annotations

import time

from tandemdb.common.roles import Role

from .catalog import PREFIX, Catalog, EnvRecord, EnvState
from .store import Compacted
from .topology import Topology

MAX_WAIT_SECONDS = 60.0
NODES = "nodes/"  # node URLs: the other keys the table is made of


class Routing:
    def __init__(self, catalog: Catalog, topology: Topology) -> None:
        self.catalog, self.topology = catalog, topology
        self.store = catalog.store

    def table(self) -> dict:
        """The whole table: `{"revision", "environments": {env: entry}}`."""
        # Read the revision first: the table read after it is at least that new, so a
        # watcher that asks again with this revision cannot miss a write in between.
        revision = self.store.revision()
        urls = self.topology.node_urls()
        environments = {record.name: entry(record, urls) for record in self.catalog.list()
                        if record.state != EnvState.DELETING}
        return {"revision": revision, "environments": environments}

    def poll(self, after: int | None, wait: float) -> dict:
        """What changed in the table after revision `after`, once something did, or after
        `wait` s: `{"revision", "changes": {env: entry, or None when it is gone}}`. Without
        `after` (or too far behind, or when a node URL changed) the whole table. Blocking.

        A region failover changes hundreds of environments a few times each: a delta keeps
        each wake-up's cost to what changed, not the whole catalog for the controller and
        the gateway. Operations, events and webhook outboxes, written far more often, do
        not wake a watcher at all."""
        if after is None or after > self.store.revision():  # (a store newer than ours)
            return self.table()
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        position = after
        changed: dict[str, EnvRecord | None] = {}
        while not changed:
            remaining = deadline - time.monotonic()
            try:
                changes = self.store.watch("", position, max(remaining, 0.0))
            except Compacted:
                return self.table()  # too far behind to tell what changed
            if not changes:
                break
            position = changes[-1].revision
            for change in changes:
                if change.key.startswith(NODES):
                    return self.table()  # a node moved: every entry may name it
                if change.key.startswith(PREFIX):
                    changed[change.key[len(PREFIX):]] = (
                        None if change.value is None else EnvRecord.from_json(change.value))
            if remaining <= 0:
                break
        urls = self.topology.node_urls() if changed else {}
        return {"revision": position, "changes": {
            name: None if record is None or record.state == EnvState.DELETING
            else entry(record, urls) for name, record in changed.items()}}


def entry(record: EnvRecord, urls: dict[str, str]) -> dict:
    """One environment's routing entry: its replicas by region, epoch, failover state."""
    replicas: dict[str, dict] = {}
    # Primaries last, so that if a region ever holds two replicas it routes to the primary.
    for replica in sorted(record.replicas, key=lambda r: r.role == Role.PRIMARY):
        replicas[replica.region] = {"node": replica.node, "url": urls.get(replica.node),
                                    "role": replica.role.value}
    return {"epoch": record.epoch, "primary_region": record.primary_region,
            "replicas": replicas, "operation": record.operation,
            # The gateway holds calls to the primary while this is true (failover).
            "switching": record.state == EnvState.SWITCHING}
