"""Re-creating a replica on another node of its region (docs/ha.md, "Drain", "Self-healing").

`Replacer.move_off(op, node, heal)` takes every replica of `node` that is not a primary
elsewhere, one environment at a time (at most `PARALLELISM` at once):

- a **secondary** (local or geo) moves: in one compare-and-set the catalog swaps its node D
  for C, a healthy, uncordoned node of the same region holding no replica of the
  environment (role secondary, same kind, `sync: false`), with the event
  `replica.replaced {from_node, to_node, kind}` in the same transaction; then C is sent its
  desired record (a new secondary seeds from a snapshot while writes go on), the primary
  its own (it now streams to C, and regains sync with it by itself), and D a DELETE. A call
  that fails is left to the heartbeats: C's answer lists the replica, D's no longer does.
  A primary that was regaining sync with the old replica (a drained node's old primary,
  just switched over) drops that regain for the new one (node/syncrule.py, 461b4b5);
- a fenced **`behind`** replica (an old primary a node failover left behind, holding writes
  its rejoin must list) is never removed here. When healing (`heal`), and the primary is in
  its region with no other replica of its kind there, a new secondary of that kind is
  added beside it; its rejoin then finds it **replaced meanwhile** (`replaced_meanwhile`)
  and deletes it instead of making it a secondary (rejoin.py). A drain leaves it: it
  rejoins as soon as its node heartbeats, which a drained node does;
- a **primary** is never re-created: a failover moves it (drain.py, node_failover.py).

It runs as a step of the caller's operation (a drain, a heal), and every decision is read
from the catalog: a replica already swapped is no longer on D, a behind one already
stood in for has its stand-in. So a step cut off by a controller restart runs again safely
and does nothing twice (invariant 7). An environment another operation holds is waited
for (`BUSY_WAIT`), then taken as it is then.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from tandemdb.common.roles import Role

from .catalog import Catalog, EnvRecord, EnvState, ReplicaRef, record_key, stage
from .events import Events, EventType
from .nodes import NodeClient
from .operations import LIVE, Operation, Operations
from .reconcile import Reconciler
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.replace")

PARALLELISM = 8  # environments whose replica is re-created at a time
BUSY_ATTEMPTS = 3  # an environment another operation holds: waited for this many times
BUSY_WAIT = 60.0  # seconds, at most, each time


def replaced_meanwhile(record: EnvRecord, node: str) -> bool:
    """True if another replica of the region plays the part of `node`'s (same kind, not
    behind): a stand-in was added while it was away, so it is no longer needed."""
    mine = record.on(node)
    return mine is not None and any(
        r.node != node and r.region == mine.region and r.kind == mine.kind and not r.behind
        for r in record.replicas)


def line(record: EnvRecord, replica: ReplicaRef, state: str, note: str,
         to_node: str | None = None) -> dict:
    """One replica's line in the caller's result."""
    return {"environment": record.name, "from_node": replica.node, "to_node": to_node,
            "kind": replica.kind.value, "role": replica.role.value, "state": state,
            "note": note}


def with_new(record: EnvRecord, new: ReplicaRef, instead_of: str | None) -> EnvRecord:
    """The record with `new` in place of the replica on `instead_of` (None: beside it)."""
    if instead_of is None:
        return record.with_(replicas=(*record.replicas, new))
    return record.with_replicas(lambda r: new if r.node == instead_of else r)


class Replacer:
    def __init__(self, catalog: Catalog, topology: Topology, reconciler: Reconciler,
                 nodes: NodeClient, operations: Operations, events: Events) -> None:
        self.catalog, self.topology, self.reconciler = catalog, topology, reconciler
        self.nodes, self.operations, self.events = nodes, operations, events

    async def move_off(self, op: Operation, node: str, heal: bool) -> list[dict]:
        """Re-create what `node` holds elsewhere (see the module); one line per replica
        that is not a primary: `replaced`, `added` (beside a behind one) or `stayed`."""
        records = await asyncio.to_thread(self.catalog.list)
        names = sorted(r.name for r in records
                       if (mine := r.on(node)) is not None and mine.role != Role.PRIMARY)
        # A resumed step: what this operation moved before the controller restarted.
        done = [{"environment": r.name, "from_node": node, "to_node": None, "kind": None,
                 "role": None, "state": "replaced", "note": "re-created before the "
                 "controller restarted (its replica.replaced event says where)"}
                for r in records if r.operation == op.id and r.on(node) is None]
        gate = asyncio.Semaphore(PARALLELISM)

        async def one(name: str) -> dict | None:
            async with gate:
                return await self._replace(op, name, node, heal)

        return done + [found for found in await asyncio.gather(*(one(name) for name in names))
                       if found is not None]

    async def _replace(self, op: Operation, name: str, node: str, heal: bool) -> dict | None:
        held: dict | None = None  # its line if the attempts run out (busy, or contended)
        for _ in range(BUSY_ATTEMPTS):
            read = await asyncio.to_thread(self.catalog.read, name)
            mine = read[0].on(node) if read else None
            if read is None or mine is None or mine.role == Role.PRIMARY:
                return None  # deleted, moved already, or made primary meanwhile
            record, version = read
            if record.state != EnvState.ACTIVE:
                held = line(record, mine, "stayed", f"{record.state} throughout (operation "
                                                    f"{record.operation})")
                await self._wait_for(record)
                continue
            why = self._stays(record, mine, heal)
            if why is not None:
                return line(record, mine, "stayed", why)
            target = await asyncio.to_thread(self.room, record, mine.region)
            if target is None:
                log.warning("environment %s: its %s replica on %s stays there: no other "
                            "healthy, uncordoned node of %s without a replica of it (%s)",
                            name, mine.kind, node, mine.region, op.id)
                return line(record, mine, "stayed", f"every other healthy, uncordoned node "
                                                    f"of {mine.region} holds a replica of it")
            added = mine.behind
            new = ReplicaRef(mine.region, target, Role.SECONDARY, mine.kind)
            changed = with_new(record, new, None if added else node).with_(operation=op.id)
            done = await asyncio.to_thread(self.events.transact, functools.partial(
                self._stage, record=changed, version=version, op=op, old=mine, new=new))
            if done is None:  # the record changed in between: read it again
                held = line(record, mine, "stayed", "its record kept changing meanwhile; a "
                                                    "later drain or heal moves it")
                continue
            await self._tell(changed, done[1][record_key(name)], node, target, added)
            how = "added beside it (it rejoins, then is deleted)" if added else "moved"
            log.info("environment %s (epoch %d): %s replica on %s %s on %s, seeded from a "
                     "snapshot (%s)", name, record.epoch, mine.kind, node,
                     "stood in for by a new one" if added else "re-created", target, op.id)
            return line(record, mine, "added" if added else "replaced", how, target)
        return held

    def _stays(self, record: EnvRecord, mine: ReplicaRef, heal: bool) -> str | None:
        """Why this replica is not re-created now, or None if it is."""
        if not mine.behind:
            return None if mine.role == Role.SECONDARY else f"it is {mine.role}"
        primary = record.primary
        if not heal:
            return "fenced behind a failover: it rejoins (rewound) as its node heartbeats"
        if primary is None or primary.region != mine.region:
            return (f"fenced behind a failover and its primary is not in {mine.region}: it "
                    "rejoins when its node is back")
        if replaced_meanwhile(record, mine.node):
            return "fenced behind a failover, and already stood in for"
        return None

    def room(self, record: EnvRecord, region: str) -> str | None:
        """A healthy, uncordoned node of `region` holding no replica of the environment
        (the least loaded), or None. Blocking."""
        silent = [n for n in self.topology.nodes_in(region) if not self.topology.healthy(n)]
        try:
            node, _ = self.topology.place(region, self.catalog.replica_counts(),
                                          exclude=[*record.nodes, *silent])
        except LookupError:
            return None
        return node

    def _stage(self, txn: Txn, record: EnvRecord, version: int, op: Operation,
               old: ReplicaRef, new: ReplicaRef) -> None:
        stage(txn, record, version)
        self.events.stage(txn, EventType.REPLICA_REPLACED, environment=record.name,
                          region=new.region, operation=op.id,
                          data={"from_node": old.node, "to_node": new.node,
                                "kind": new.kind.value, "epoch": record.epoch,
                                "beside": old.behind})

    async def _tell(self, record: EnvRecord, version: int, old: str, new: str,
                    added: bool) -> None:
        """PUT the new replica and the primary's record; DELETE the old one unless it
        stays (behind). Failures are left to the heartbeats."""
        primary = record.primary
        for node in [new] + ([primary.node] if primary is not None else []):
            await self._put(record, version, node)
        if not added:
            outcome = await self.nodes.delete_replica(old, self.topology.call_url(old),
                                                      record.name)
            if outcome.problem:
                log.info("environment %s: %s; %s drops the replica when its heartbeat "
                         "answer no longer lists it", record.name, outcome.problem, old)

    async def _put(self, record: EnvRecord, version: int, node: str) -> None:
        """Send `node` its replica as the record has it; a failure is the heartbeat's."""
        replica = record.on(node)
        assert replica is not None  # (read or just written with it)
        outcome = await self.nodes.put_replica(node, self.topology.call_url(node),
                                               self.reconciler.desired(record, replica,
                                                                       version))
        if outcome.problem:
            log.info("environment %s: %s; its heartbeat answer tells it", record.name,
                     outcome.problem)

    async def _wait_for(self, record: EnvRecord) -> None:
        """Wait (bounded) for the operation that holds the environment to end."""
        op_id = record.operation or ""
        held = await asyncio.to_thread(self.operations.get, op_id)
        if held is not None and held["state"] in LIVE:
            await asyncio.to_thread(self.operations.wait_ended, op_id, BUSY_WAIT)
        else:
            await asyncio.sleep(1.0)  # not active, yet no live operation: look again soon
