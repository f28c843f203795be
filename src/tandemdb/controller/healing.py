"""Self-healing: a node silent past `replace_after_seconds` has its replicas re-created
elsewhere in its region (docs/ha.md, "Self-healing").

`Healing.check` runs with the controller's health watch. A node without a heartbeat for
`replace_after_seconds` (deployment setting, default 60; null turns healing off; counted
from when this controller started listening, so a restart cannot make a node look long
lost; a node not heard from since, at least `UNHEARD_GRACE`, as for node failover) gets
one `node.heal` operation per outage, if it holds anything but primaries. Its
step `replace-replicas` (replace.py, `heal`) re-creates each secondary on a healthy,
uncordoned node of the region with no replica of the environment, and adds a new secondary
beside a fenced `behind` replica (it keeps writes its rejoin must list, so it stays until
then). Primaries are left to the node failover, or to the operator. Where no node has room
the replica stays, and the operation's result and the log say so; it is not tried again in
this outage (the node coming back ends the outage). When no other node of the region is
healthy and uncordoned (one node per region, a region outage) no operation is recorded at
all: the log says why.

When the node comes back, its heartbeat answer no longer lists the replicas that were
moved, so it drops them; a behind one rejoins, and is deleted since it was replaced
(rejoin.py).
"""

from __future__ import annotations

import asyncio
import logging

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role

from .catalog import Catalog
from .cordon import marks
from .operations import LIVE, Draft, Kind, Operation, Operations, Outcome, Steps
from .replace import Replacer
from .store import Txn
from .topology import Silences, Topology

log = logging.getLogger("tandem.controller.healing")

NODE_HEAL = "node.heal"


class Healing:
    def __init__(self, deployment: Deployment, topology: Topology, catalog: Catalog,
                 operations: Operations, replacer: Replacer) -> None:
        self.deployment, self.topology, self.catalog = deployment, topology, catalog
        self.operations, self.replacer = operations, replacer
        self.silences = Silences(topology)  # nodes healed, once per outage
        operations.register(Kind(NODE_HEAL, self.steps))

    def steps(self, params: dict) -> Steps:
        return {"replace-replicas": self._replace_replicas}

    async def check(self) -> None:
        """Start healing each node silent past `replace_after_seconds`, once per outage."""
        after = self.deployment.replace_after_seconds
        if after is None:
            return
        for node, silent in self.silences.newly_past(after):
            try:
                op = await asyncio.to_thread(self.start, node, silent)
            except ApiError as exc:
                log.log(logging.WARNING if exc.code == "no_room" else logging.INFO,
                        "node %s: silent for %.1f s, no healing: %s", node, silent,
                        exc.message)
                continue
            log.warning("node %s: no heartbeat for %.1f s, over replace_after_seconds %g; "
                        "its replicas are re-created on other nodes of %s (%s)", node, silent,
                        after, self.topology.region_of(node), op.id)
            self.operations.launch(op.id)

    def start(self, node: str, silent: float) -> Operation:
        """Record `node.heal`; 409 when there is nothing to do or a heal of it runs."""
        held = [r.name for r in self.catalog.list()
                if (mine := r.on(node)) is not None and mine.role != Role.PRIMARY]
        if not held:
            raise ApiError(409, "nothing", "it holds no secondary or fenced replica")
        region = self.topology.region_of(node) or ""
        marked = marks(self.catalog.store)
        if not any(self.topology.healthy(n) and n not in marked
                   for n in self.topology.nodes_in(region) if n != node):
            raise ApiError(409, "no_room", f"no other node of {region} is healthy and "
                           f"uncordoned, so its {len(held)} replica(s) stay on it")
        running = [op for op in self.operations.live()
                   if op.kind == NODE_HEAL and op.target == node and op.state in LIVE]
        if running:
            raise ApiError(409, "busy", f"operation {running[0].id} heals it already")

        def build(txn: Txn, op_id: str) -> Draft:
            return Draft({"node": node, "region": region,
                          "silent_seconds": round(silent, 3),
                          "replace_after_seconds": self.deployment.replace_after_seconds})

        return self.operations.create(NODE_HEAL, node, build)

    async def _replace_replicas(self, op: Operation) -> Outcome:
        node = op.target
        lines = await self.replacer.move_off(op, node, heal=True)
        counts = {state: sum(entry["state"] == state for entry in lines)
                  for state in ("replaced", "added", "stayed")}
        detail = (f"node {node}: {counts['replaced']} replica(s) re-created on other nodes, "
                  f"{counts['added']} added beside fenced ones, {counts['stayed']} stayed")
        return Outcome(detail, result={"replicas": lines, **counts},
                       warn=counts["stayed"] > 0)
