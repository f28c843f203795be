"""Starting a failover: the checks, and the `hold` step done in the creating transaction.

`Failovers` registers the `environment.failover` kind, whose table of steps is the
operation's mode's (planned.py or forced.py), and settles a failed step (settle.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from tandemdb.common.http import ApiError

from ..catalog import Catalog, EnvRecord, EnvState, ReplicaRef, not_found, stage
from ..events import Events
from ..nodes import NodeClient
from ..operations import Draft, Kind, Operation, Operations, StepRun
from ..reconcile import Reconciler
from ..region_rules import read_region, refuse_move, region_key
from ..status import LiveStatus
from ..store import Txn
from ..topology import Topology
from .forced import Forced
from .node import SyncPromotion
from .params import CATCH_UP_TIMEOUT, FAILOVER, FailoverParams, Side
from .planned import Planned
from .settle import settle
from .steps import Context, FailoverSteps

log = logging.getLogger("tandem.controller.failover")


class Failovers:
    def __init__(self, catalog: Catalog, topology: Topology, reconciler: Reconciler,
                 nodes: NodeClient, operations: Operations, events: Events,
                 status: LiveStatus, lease_ttl: float) -> None:
        ctx = Context(catalog, topology, reconciler, nodes, events, status, lease_ttl)
        self.catalog, self.topology, self.operations = catalog, topology, operations
        self.events, self.store = events, catalog.store
        self.modes: dict[str, FailoverSteps] = {
            m.mode: m for m in (Planned(ctx), Forced(ctx), SyncPromotion(ctx))}
        operations.register(Kind(FAILOVER, self.steps, self.settle))

    def steps(self, params: dict) -> Mapping[str, StepRun]:
        """The table of an operation's steps: its mode's."""
        return self.modes[params["mode"]].steps

    async def settle(self, op: Operation, step: str, message: str) -> str:
        return await settle(self.modes[op.params["mode"]], op, step, message)

    def start(self, name: str, mode: str = "planned", parent: str | None = None,
              catch_up_timeout: float = CATCH_UP_TIMEOUT, to: str | None = None) -> Operation:
        """Record the operation and hold the environment (step 1). Blocking; raises
        `ApiError` (and changes nothing) when the environment cannot fail over now.

        `to` names the node of the secondary to promote (a drain's local secondary); by
        default it is the mode's own target (`FailoverSteps.target`).

        Just after a controller start it first waits (a few heartbeat intervals at most)
        until the health of the nodes this failover needs up is known."""
        how = self.modes[mode]
        self._await_health(name, how, to)

        def build(txn: Txn, op_id: str) -> Draft:
            read = self.catalog.read(name)
            if read is None:
                raise not_found(name)
            record, version = read
            source, target = self._check(record, how, to)
            reason = ("node" if target.region == source.region
                      else "failback" if target.region == record.home_region else "failover")
            into, state = read_region(self.store, target.region)
            refusal = refuse_move(name, target.region, state, failback=reason == "failback",
                                  forced=mode == "forced")
            if refusal is not None:
                raise refusal
            # A region operation that changes the target's state in between makes this
            # transaction fail, and the next attempt reads the new state.
            txn.expect(region_key(target.region), into.version if into else None)
            held = record.with_(state=EnvState.SWITCHING, operation=op_id).with_replicas(
                lambda r: how.held(r, source))
            stage(txn, held, version)
            params = FailoverParams(name, mode, reason, record.epoch, Side.of(source),
                                    Side.of(target), catch_up_timeout, parent,
                                    **how.watched(name, source))
            self.events.stage(txn, params.events[0], environment=name,
                              region=source.region, operation=op_id,
                              data={"from_region": source.region,
                                    "to_region": target.region, "epoch": record.epoch,
                                    "mode": mode})
            detail = (f"environment {name} (epoch {record.epoch}): {mode} {reason} from "
                      f"{source.region} to {target.region} started; calls to the primary "
                      f"are held and the catalog records {source.node} as fenced")
            return Draft(params.to_json(), {"hold": detail})

        return self.operations.create(FAILOVER, name, build)

    def _await_health(self, name: str, how: FailoverSteps, to: str | None) -> None:
        """Wait until the health of the nodes that `how` needs up is known (see Topology):
        a forced failover waits for its target's node, not for the lost primary's, whose
        silence would only end with the unknown window."""
        read = self.catalog.read(name)
        if read is None:
            return  # refused by the check that follows
        record = read[0]
        source, target = record.primary, how.target(record, to)
        nodes = ([replica.node for replica, _ in how.must_be_up(source, target)]
                 if source is not None and target is not None else record.nodes)
        began = time.monotonic()
        healths = self.topology.wait_known(nodes)
        waited = time.monotonic() - began
        if waited >= 0.05:
            log.info("environment %s: waited %.2f s for its nodes' first heartbeats since the "
                     "controller started before checking them (%s)", name, waited,
                     ", ".join(f"{node} {health.value}" for node, health in healths.items()))

    def _check(self, record: EnvRecord, how: FailoverSteps,
               to: str | None) -> tuple[ReplicaRef, ReplicaRef]:
        """The primary and the replica to promote; 409 when a failover cannot start."""
        name = record.name
        if record.state != EnvState.ACTIVE:
            raise ApiError(409, "busy", f"environment {name!r} is {record.state} (operation "
                           f"{record.operation}); wait for that operation to end: "
                           f"tandem ops {record.operation}")
        source, behind = record.primary, record.behind
        target = how.target(record, to)
        if target is None and to is not None:
            raise ApiError(409, "no_secondary", f"environment {name!r} has no secondary on "
                           f"node {to!r} to promote")
        if target is None and behind is not None:
            raise ApiError(409, "no_secondary", f"environment {name!r}: its replica in "
                           f"{behind.region} is fenced since a failover and holds writes past "
                           "the fork point; it rejoins as a secondary (rewound, its lost writes "
                           "kept) once its node is back")
        if source is None or target is None:
            raise ApiError(409, "no_secondary", how.no_target(record))
        refusal = how.refusal(name)
        if refusal is not None:
            raise refusal
        for replica, what in how.must_be_up(source, target):
            if not self.topology.healthy(replica.node):
                raise ApiError(409, "unhealthy", f"environment {name!r}: the node of its "
                               f"{what} ({replica.node} in {replica.region}) has not "
                               f"heartbeated lately; a {how.mode} failover needs it up"
                               + how.unhealthy_hint)
        return source, target
