"""Planned node maintenance: the `node.drain` operation, and `uncordon` (docs/ha.md, "Drain").

`POST /v1/nodes/{node}/drain` checks that the node's replicas have somewhere to go, then
records the operation and marks the node `draining` (cordon.py) in one transaction, so a
refused drain (409) changes nothing. Steps:

1. `mark`: done in that transaction;
2. `move-primaries`: every primary on the node moves to its local secondary with the
   zero-loss planned switchover (fence, exact lsn, promote): one `environment.failover`
   child each (moves.py); each line of the result has its RTO (`rto_seconds`);
3. `move-secondaries`: its secondaries (the old primaries among them) are re-created on
   other nodes of the region (replace.py); where none has room (2 nodes per region) one
   stays, and its line says so;
4. `cordon`: the node is left `cordoned`; the operation fails if a primary is left on it.

Refusals (409): the node is the last healthy, uncordoned node of its region (`no_room`); a
primary on it has no healthy local secondary to take it (`no_secondary`, naming those
environments); a drain of it runs already (`busy`, naming it: follow that one). Draining a
node that is already `cordoned` runs again: a node failover may have made a replica on it
a primary since, and a second drain moves what is there. Unknown node: 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Kind as ReplicaKind

from .bodies import NodeDrain, parse
from .catalog import Catalog, EnvRecord, ReplicaRef
from .cordon import Cordons, Mark, marks, stage_mark, state_key
from .failover import Failovers
from .moves import Moves
from .operations import Draft, Kind, Operation, Operations, Outcome, Steps
from .replace import Replacer
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.drain")

NODE_DRAIN = "node.drain"
NAMED = 10  # environments named in a refusal or an error


def not_found(node: str, topology: Topology) -> ApiError:
    return ApiError(404, "not_found", f"unknown node {node!r}: the nodes are "
                    f"{', '.join(topology.deployment.nodes)} ('tandem node list')")


def named(names: list[str]) -> str:
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return ", ".join(names[:NAMED]) + more


class Drains:
    def __init__(self, catalog: Catalog, topology: Topology, failovers: Failovers,
                 operations: Operations, cordons: Cordons, replacer: Replacer) -> None:
        self.catalog, self.topology, self.operations = catalog, topology, operations
        self.cordons, self.replacer = cordons, replacer
        self.store = catalog.store
        self.moves = Moves(catalog, failovers, operations)
        operations.register(Kind(NODE_DRAIN, self.steps, self.settle))

    def steps(self, params: dict) -> Steps:
        return {"mark": self._mark, "move-primaries": self._move_primaries,
                "move-secondaries": self._move_secondaries, "cordon": self._cordon}

    # -- starting ------------------------------------------------------------------------

    def start(self, node: str, body: Any) -> Operation:
        """Record the drain and mark the node `draining`; 404/409 change nothing.
        Blocking."""
        if node not in self.topology.deployment.nodes:
            raise not_found(node, self.topology)
        parallelism = parse(NodeDrain, body).parallelism

        def build(txn: Txn, op_id: str) -> Draft:
            item = self.cordons.read(node)
            running = self.cordons.draining_op(item)
            if running is not None:
                raise ApiError(409, "busy", f"node {node} is being drained already (operation "
                               f"{running}): follow it with 'tandem ops {running}'")
            region = self.topology.region_of(node) or ""
            self._check_room(txn, node, region)
            self._check_primaries(node)
            was = item.value["state"] if item else None
            stage_mark(txn, node, Mark.DRAINING, op_id, item)
            return Draft({"node": node, "region": region, "parallelism": parallelism,
                          "was": was},
                         {"mark": f"node {node} ({region}): draining, nothing new is placed "
                                  "on it"})

        return self.operations.create(NODE_DRAIN, node, build)

    def _check_room(self, txn: Txn, node: str, region: str) -> None:
        """409 unless another node of the region is healthy and uncordoned. Each other
        node's state is expected unchanged, so two drains cannot take the last two."""
        marked = marks(self.store)
        others = [n for n in self.topology.nodes_in(region) if n != node]
        for other in others:
            item = self.cordons.read(other)
            txn.expect(state_key(other), item.version if item else None)
        if any(self.topology.healthy(n) and n not in marked for n in others):
            return
        why = "; ".join(f"{n} {marked[n].value if n in marked else 'not healthy'}"
                        for n in others) or "it is the region's only node"
        raise ApiError(409, "no_room", f"node {node} is the last healthy, uncordoned node of "
                       f"{region} ({why}): its replicas have nowhere to go, so nothing was "
                       "changed")

    def _check_primaries(self, node: str) -> None:
        """409 naming the environments whose primary on `node` has no healthy local
        secondary to take it, and when the node itself is not up to hand them over."""
        primaries = [r for r in self.catalog.list() if (p := r.primary) and p.node == node]
        if primaries and not self.topology.healthy(node):
            raise ApiError(409, "unhealthy", f"node {node} has not heartbeated lately and holds "
                           f"{len(primaries)} primary(ies): a drain hands them over with a "
                           "planned switchover, which needs it up (a lost node's primaries "
                           "move by node failover); nothing was changed")
        stuck = sorted(r.name for r in primaries if self.local_target(r) is None)
        if stuck:
            raise ApiError(409, "no_secondary", f"node {node}: the primary of {named(stuck)} "
                           "has no healthy, uncordoned local secondary to take it, so the "
                           "drain would leave it there; nothing was changed")

    def local_target(self, record: EnvRecord) -> ReplicaRef | None:
        """The local secondary that takes the environment's primary: of kind local, in the
        primary's region, on a healthy node that is not cordoned or draining."""
        primary, marked = record.primary, marks(self.store)
        return next((r for r in record.secondaries
                     if primary is not None and r.kind == ReplicaKind.LOCAL
                     and r.region == primary.region and not r.behind
                     and self.topology.healthy(r.node) and r.node not in marked), None)

    def uncordon(self, node: str) -> dict:
        """Make the node placeable again (cordon.py). Blocking."""
        if node not in self.topology.deployment.nodes:
            raise not_found(node, self.topology)
        return self.cordons.uncordon(node)

    # -- steps ---------------------------------------------------------------------------

    async def _mark(self, op: Operation) -> Outcome:
        """Done in the creating transaction; seen again only on resume."""
        return Outcome(f"node {op.target}: marked draining")

    def _primaries_on(self, node: str) -> list[str]:
        return [r.name for r in self.catalog.list() if (p := r.primary) and p.node == node]

    def _to(self, name: str) -> str:
        """The node of `name`'s local secondary; a refusal (the child's failed line) if it
        has none now: a drain never moves a primary out of its region."""
        record = self.catalog.get(name)
        target = self.local_target(record) if record is not None else None
        if target is None:
            raise ApiError(409, "no_secondary", f"environment {name!r} has no healthy, "
                           "uncordoned local secondary to take its primary")
        return target.node

    async def _move_primaries(self, op: Operation) -> Outcome:
        node, started = op.target, time.monotonic()
        result = await self.moves.move_all(op, lambda: self._primaries_on(node), "planned",
                                           op.params["parallelism"], to=self._to)
        records = {r.name: r for r in await asyncio.to_thread(self.catalog.list)}
        for entry in result["environments"]:
            record = records.get(entry["environment"])
            primary = record.primary if record is not None else None
            entry.update(from_node=node, to_node=primary.node if primary else None)
        seconds = time.monotonic() - started
        return Outcome(f"node {node}: {result['succeeded']} primary(ies) moved to their local "
                       f"secondaries, {result['failed']} failed, in {seconds:.2f} s",
                       result=result, warn=result["failed"] > 0)

    async def _move_secondaries(self, op: Operation) -> Outcome:
        node = op.target
        lines = await self.replacer.move_off(op, node, heal=False)
        moved = sum(entry["state"] == "replaced" for entry in lines)
        stayed = [entry["environment"] for entry in lines if entry["state"] == "stayed"]
        detail = f"node {node}: {moved} secondary(ies) re-created on other nodes"
        if stayed:
            detail += f", {len(stayed)} stayed ({named(stayed)}: no room, see the result)"
        return Outcome(detail, result={"secondaries": lines})

    async def _cordon(self, op: Operation) -> Outcome:
        node = op.target
        item = await asyncio.to_thread(self.cordons.read, node)
        left = sorted(await asyncio.to_thread(self._primaries_on, node))

        def cordon(txn: Txn) -> None:
            stage_mark(txn, node, Mark.CORDONED, op.id, item)

        detail = f"node {node}: cordoned; nothing new is placed on it"
        if not left:
            return Outcome(detail, cordon, {"state": Mark.CORDONED.value})
        return Outcome(f"{detail}, but it still holds the primary of {named(left)}", cordon,
                       {"state": Mark.CORDONED.value}, warn=True,
                       error=("primaries_left", f"node {node} was cordoned but still holds "
                              f"the primary of {named(left)} ('tandem ops {op.id}' says "
                              "why); 'tandem node drain' again moves them once that is fixed"))

    async def settle(self, op: Operation, step: str, message: str) -> str:
        """A failed step leaves the node cordoned, not draining: nothing new goes there."""
        def cordon() -> bool:
            txn = Txn()
            stage_mark(txn, op.target, Mark.CORDONED, op.id, self.cordons.read(op.target))
            return self.store.commit(txn) is not None

        done = await asyncio.to_thread(cordon)
        return f"node {op.target} left cordoned" if done else "its state changed meanwhile"
