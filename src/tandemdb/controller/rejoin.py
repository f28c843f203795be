"""A lost region's replicas rejoin: keep their lost writes, rewind, stream again.

After a forced failover the old primary's replica is `fenced` and `behind` in the catalog,
with the `fork_lsn` where the new history began. When its node heartbeats again (healthy
after being unhealthy, or at the controller's start), `environment.rejoin` runs for each
such replica:

1. `rewind`: `POST node/…/rewind {"fork_lsn", "epoch"}`. The node writes down the entries
   after the fork point (the **lost writes**, described row by row) before undoing them, and
   answers them. They are stored under `lost/<env>/<epoch>-<fork>` in the same transaction
   that ends the step, so they are kept even if the replica is re-seeded next.
2. `rejoin`: the catalog makes the replica a `secondary` of the new primary again. If it
   rewound, it streams from the fork point on; if it could not (schema changes after the
   fork), it is dropped and created again empty, so it is seeded from a snapshot. The event
   `replica.rejoined` says which, and how many writes were lost. If self-healing added a
   stand-in for it while its node was away (replace.py, `replaced_meanwhile`), it is
   deleted from the catalog and its node instead (`deleted: true` in the event).

A local secondary the forced failover fenced with the old primary (docs/ha.md) skips the
rewind: its entries past the fork are a prefix of the old primary's, kept by that one's
rewind, so it is re-seeded instead of listing them twice.

`GET /v1/environments/{env}/lost` (and `tandem lost ENV`) lists the stored bundles;
replay.py applies them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Kind as ReplicaKind
from tandemdb.common.roles import Role

from .catalog import Catalog, EnvRecord, EnvState, iso_now, not_found, stage
from .events import Events, EventType
from .nodes import NodeClient
from .operations import Draft, Kind, Operation, Operations, Outcome, StepFailed, Steps
from .reconcile import Reconciler
from .replace import replaced_meanwhile
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.rejoin")

REJOIN = "environment.rejoin"
REWIND_POLLS = 20  # asked this many times, half a second apart: a poll, not a CAS
LOST = "lost/"


def lost_key(env: str, epoch: int, fork: int) -> str:
    return f"{LOST}{env}/{epoch:08d}-{fork:012d}"


class Rejoins:
    def __init__(self, catalog: Catalog, topology: Topology, reconciler: Reconciler,
                 nodes: NodeClient, operations: Operations, events: Events) -> None:
        self.catalog, self.topology, self.reconciler = catalog, topology, reconciler
        self.nodes, self.operations, self.events = nodes, operations, events
        self.store = catalog.store
        operations.register(Kind(REJOIN, self.steps))

    def steps(self, params: dict) -> Steps:
        return {"rewind": self._rewind, "rejoin": self._rejoin}

    def lost(self, env: str) -> dict:
        """The lost-writes bundles of an environment, oldest first. Blocking."""
        if self.catalog.get(env) is None and not self.store.list(f"{LOST}{env}/", limit=1):
            raise not_found(env)
        return {"environment": env, "bundles": [
            item.value for item in self.store.list(f"{LOST}{env}/").values()]}

    async def check(self, node: str) -> None:
        """Start a rejoin for every replica of `node` left behind by a forced failover."""
        records = await asyncio.to_thread(self.catalog.list)
        for record in records:
            behind = record.on(node)
            if (behind is None or not behind.behind or behind.fork_lsn is None
                    or record.state != EnvState.ACTIVE):
                continue
            try:
                op = await asyncio.to_thread(self._start, record.name, node)
            except ApiError as exc:
                log.info("environment %s: no rejoin of %s now: %s", record.name, node,
                         exc.message)
                continue
            self.operations.launch(op.id)

    def _start(self, name: str, node: str) -> Operation:
        def build(txn: Txn, op_id: str) -> Draft:
            read = self.catalog.read(name)
            behind = read[0].on(node) if read else None
            if (read is None or behind is None or not behind.behind
                    or read[0].state != EnvState.ACTIVE):
                raise ApiError(409, "busy", f"environment {name!r} has no replica on {node} "
                                            "waiting to rejoin, or another operation holds it")
            record, version = read
            running = self.operations.get(record.operation or "")
            if running is not None and running["state"] in ("pending", "running"):
                raise ApiError(409, "busy", f"environment {name!r}: operation "
                                            f"{running['id']} is still running")
            stage(txn, record.with_(operation=op_id), version)
            return Draft({"environment": name, "node": node, "region": behind.region,
                          "fork_lsn": behind.fork_lsn, "epoch": record.epoch,
                          "kind": behind.kind.value, "acknowledged": not behind.unacked})

        return self.operations.create(REJOIN, name, build)

    async def _rewind(self, op: Operation) -> Outcome:
        p, name = op.params, op.target
        node, fork, epoch = p["node"], p["fork_lsn"], p["epoch"]
        where = f"environment {name} (epoch {epoch})"
        if p.get("kind") == ReplicaKind.LOCAL and p.get("acknowledged", True):
            return Outcome(f"{where}: {node} holds the old primary's local secondary; its "
                           "entries past the fork point are a prefix of the old primary's, "
                           "which keeps them as its lost writes, so it is re-seeded instead",
                           result={"lost_entries": 0, "rewound": False})
        url = self.topology.call_url(node)
        for _ in range(REWIND_POLLS):  # the node may not have seen it is fenced yet
            reply = await self.nodes.replica_call(node, url, name, "rewind",
                                                  {"fork_lsn": fork, "epoch": epoch}, 60.0)
            if reply.ok or (reply.code not in ("not_fenced", "unavailable")
                            and reply.status != 0):
                break
            await asyncio.sleep(0.5)
        if not reply.ok:
            raise StepFailed("rewind_failed", f"{where}: {reply.problem}")
        bundle = {**reply.body, "environment": name, "node": node,
                  "region": p["region"], "recorded_at": iso_now(), "operation": op.id}
        if not p.get("acknowledged", True):  # left by a sync promotion (docs/ha.md)
            bundle["acknowledged"] = False
            bundle["entries"] = [{**entry, "acknowledged": False}
                                 for entry in bundle["entries"]]
        lost = len(bundle["entries"])

        def keep(txn: Txn) -> None:
            txn.put(lost_key(name, epoch, fork), bundle)

        how = ("rewound to it" if bundle["rewound"]
               else f"could not rewind ({bundle['reason']}), so it is re-seeded")
        return Outcome(f"{where}: {node} kept {lost} lost write(s) after the fork point "
                       f"{fork} and {how}", keep,
                       {"lost_entries": lost, "rewound": bundle["rewound"]})

    async def _rejoin(self, op: Operation) -> Outcome:
        p, name = op.params, op.target
        node, rewound = p["node"], (op.result or {}).get("rewound", False)
        read = await asyncio.to_thread(self.catalog.read, name)
        if read is None or read[0].operation != op.id:
            raise StepFailed("conflict", f"environment {name!r} changed during its rejoin")
        record, read_version = read
        if replaced_meanwhile(record, node):
            return await self._drop_replaced(op, record, read_version)
        joined = record.with_roles({node: Role.SECONDARY}).with_replicas(
            lambda r: replace(r, behind=False, fork_lsn=None, unacked=False)
            if r.node == node else r)
        version = await asyncio.to_thread(self.catalog.try_update, name, read_version, joined)
        if version is None:
            raise StepFailed("conflict", f"environment {name!r} changed during its rejoin")
        url = self.topology.call_url(node)
        if not rewound:  # an empty replica is seeded from a snapshot of the new primary
            await self.nodes.delete_replica(node, url, name)
        replica = joined.on(node)
        assert replica is not None  # (the record was read with it)
        outcome = await self.nodes.put_replica(node, url, self.reconciler.desired(
            joined, replica, version))
        lost = (op.result or {}).get("lost_entries", 0)
        announce = self._announce(op, rewound=rewound, reseeded=not rewound)
        how = "streams from the fork point" if rewound else "is seeded from a snapshot"
        detail = (f"environment {name} (epoch {p['epoch']}): {node} is a secondary again and "
                  f"{how}; {lost} lost write(s) kept (tandem lost {name})")
        if outcome.problem:
            detail += f" ({outcome.problem}; its heartbeat answer tells it)"
        return Outcome(detail, announce, warn=bool(outcome.problem))

    async def _drop_replaced(self, op: Operation, record: EnvRecord, version: int) -> Outcome:
        """Self-healing added a stand-in while the node was away (replace.py): with its lost
        writes kept, the replica is deleted from the catalog and its node."""
        p, name, node = op.params, op.target, op.params["node"]
        kept = record.with_(replicas=tuple(r for r in record.replicas if r.node != node))
        if await asyncio.to_thread(self.catalog.try_update, name, version, kept) is None:
            raise StepFailed("conflict", f"environment {name!r} changed during its rejoin")
        dropped = await self.nodes.delete_replica(node, self.topology.call_url(node), name)
        lost = (op.result or {}).get("lost_entries", 0)
        announce = self._announce(op, rewound=(op.result or {}).get("rewound", False),
                                  reseeded=False, deleted=True)
        detail = (f"environment {name} (epoch {p['epoch']}): {node} was replaced while it "
                  f"was away, so it is deleted; {lost} lost write(s) kept (tandem lost {name})")
        if dropped.problem:
            detail += f" ({dropped.problem}; its heartbeat answer no longer lists it)"
        return Outcome(detail, announce, {"deleted": True}, warn=bool(dropped.problem))

    def _announce(self, op: Operation, **how: bool) -> Callable[[Txn], None]:
        """The staging of the rejoin's `replica.rejoined` event; `how` it rejoined."""
        p = op.params

        def announce(txn: Txn) -> None:
            self.events.stage(txn, EventType.REPLICA_REJOINED, environment=op.target,
                              region=p["region"], operation=op.id,
                              data={"node": p["node"], "fork_lsn": p["fork_lsn"],
                                    "epoch": p["epoch"],
                                    "lost_entries": (op.result or {}).get("lost_entries", 0),
                                    **how})

        return announce
