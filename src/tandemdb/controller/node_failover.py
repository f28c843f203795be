"""Node loss: declare one node down, and move its primaries to their sync local secondaries.

The controller declares a node **down** once it has had no heartbeat from it for
`node_grace_seconds` (deployment setting, default 2; null leaves it to the operator), counted
from when it started listening, so a restart cannot make a node look lost (and, for a node
not heard from since, at least `UNHEARD_GRACE`: nodes start after the controller). Once
per outage it records the operation `node.failover` (docs/ha.md, "Node loss"):

1. `declare`: the event `node.down`, in the transaction that records the operation;
2. `move-primaries`: one `environment.failover` child of mode `sync` for each environment
   whose primary is on the node (moves.py): it promotes the local secondary recorded sync,
   so nothing acknowledged is lost. An environment without one waits for its node, or for
   the operator's `tandem failover ENV --forced`; the operation then ends `failed`, naming it.
   While the node stays down, every `RETRY_AFTER` seconds a new `node.failover` (no second
   `node.down`) moves the primaries that could move now (a move that failed, e.g. its
   target did not answer in time; a sync secondary whose node is back).

One lost node never fails its region over: that takes every node of the region, lost to the
controller and to the pair (outage.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import ApiError
from tandemdb.common.roles import Kind as ReplicaKind

from .catalog import Catalog, EnvState
from .events import Events, EventType
from .failover import Failovers
from .moves import Moves
from .operations import Draft, Kind, Operation, Operations, Outcome, Steps
from .store import Txn
from .topology import Silences, Topology

log = logging.getLogger("tandem.controller.node_failover")

NODE_FAILOVER = "node.failover"
PARALLELISM = 16  # environments moved at a time
NAMED = 10  # environments named in the operation's error
RETRY_AFTER = 5.0  # seconds: a node still down is looked at again this often


class NodeFailovers:
    def __init__(self, deployment: Deployment, topology: Topology, catalog: Catalog,
                 failovers: Failovers, operations: Operations, events: Events) -> None:
        self.deployment, self.topology, self.catalog = deployment, topology, catalog
        self.operations, self.events = operations, events
        self.moves = Moves(catalog, failovers, operations)
        self.silences = Silences(topology)  # nodes declared down, once per outage
        self._retry_at: dict[str, float] = {}  # node -> when to look at it again
        operations.register(Kind(NODE_FAILOVER, self.steps))

    def steps(self, params: dict) -> Steps:
        return {"declare": self._declare, "move-primaries": self._move_primaries}

    async def check(self) -> None:
        """Declare each node silent past `node_grace_seconds` down, once per outage; while
        it stays down, try again every `RETRY_AFTER` for primaries on it that could move
        now (a move that failed, e.g. its target did not answer in time)."""
        grace = self.deployment.node_grace_seconds
        if grace is None:
            return
        now = time.monotonic()
        for node, silent in self.silences.newly_past(grace):
            self._retry_at[node] = now + RETRY_AFTER
            await self._launch(node, silent, again=False)
        for node in sorted(self.silences.seen):
            if now < self._retry_at.get(node, 0.0):
                continue
            self._retry_at[node] = now + RETRY_AFTER
            if await asyncio.to_thread(self._retry_wanted, node):
                await self._launch(node, self.topology.silent_for(node), again=True)

    async def _launch(self, node: str, silent: float, again: bool) -> None:
        try:
            op = await asyncio.to_thread(self.start, node, silent, again)
        except ApiError as exc:
            log.warning("node %s looks down but its failover cannot start: %s", node,
                        exc.message)
            return
        log.warning("node %s %s: no heartbeat for %.1f s, over node_grace_seconds %g; its "
                    "primaries move to their sync local secondaries (%s)", node,
                    "still down" if again else "declared down", silent,
                    self.deployment.node_grace_seconds, op.id)
        self.operations.launch(op.id)

    def _retry_wanted(self, node: str) -> bool:
        """No node failover of `node` runs, and a primary on it has a sync local secondary
        on a healthy node to move to. Blocking."""
        if any(op.kind == NODE_FAILOVER and op.target == node
               for op in self.operations.live()):
            return False
        for record in self.catalog.list():
            primary = record.primary
            if primary is None or primary.node != node or record.state != EnvState.ACTIVE:
                continue
            if any(r.sync and r.kind == ReplicaKind.LOCAL and r.region == primary.region
                   and self.topology.healthy(r.node) for r in record.secondaries):
                return True
        return False

    def start(self, node: str, silent: float, again: bool = False) -> Operation:
        """Record `node.failover` for `node`, with its `node.down` event unless `again`
        (a retry in the same outage). Blocking."""
        region = self.topology.region_of(node) or ""
        grace = self.deployment.node_grace_seconds

        def build(txn: Txn, op_id: str) -> Draft:
            primaries = self._primaries(node)
            if again:
                return Draft({"node": node, "region": region, "parallelism": PARALLELISM,
                              "again": True},
                             {"declare": f"node {node} ({region}) still down after "
                                         f"{silent:.1f} s; {len(primaries)} primaries on it"})
            self.events.stage(txn, EventType.NODE_DOWN, region=region, operation=op_id,
                              data={"node": node, "silent_seconds": round(silent, 3),
                                    "node_grace_seconds": grace, "primaries": len(primaries)})
            return Draft({"node": node, "region": region, "parallelism": PARALLELISM},
                         {"declare": f"node {node} ({region}) declared down after {silent:.1f} "
                                     f"s without a heartbeat; {len(primaries)} primaries on it"})

        return self.operations.create(NODE_FAILOVER, node, build)

    def _primaries(self, node: str) -> list[str]:
        """The environments whose primary is on `node`. Blocking."""
        return sorted(r.name for r in self.catalog.list()
                      if r.primary is not None and r.primary.node == node)

    async def _declare(self, op: Operation) -> Outcome:
        """Done in the creating transaction; seen again only on resume."""
        return Outcome(f"node {op.target}: declared down")

    async def _move_primaries(self, op: Operation) -> Outcome:
        node = op.target
        result = await self.moves.move_all(op, lambda: self._primaries(node), "sync",
                                           op.params["parallelism"])
        detail = (f"node {node}: {result['succeeded']} primaries moved to their sync local "
                  f"secondaries, {result['failed']} not moved")
        failed = [line for line in result["environments"] if line["state"] != "succeeded"]
        if not failed:
            return Outcome(detail, result=result)
        shown = "; ".join(f"{line['environment']}: {line.get('error') or line['state']}"
                          for line in failed[:NAMED])
        more = f" and {len(failed) - NAMED} more" if len(failed) > NAMED else ""
        return Outcome(detail, result=result, warn=True, error=(
            "environments_not_moved",
            f"node {node} is down and {len(failed)} of its primaries were not moved "
            f"({shown}{more}); they wait for the node, or for 'tandem failover ENV --forced'"))
