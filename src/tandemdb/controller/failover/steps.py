"""The steps planned and forced failovers share, and what they need to run them.

`FailoverSteps.steps` is a mode's ordered table of steps (step name -> method); the runner
(operations.py) records the names when the operation is created and runs each by its name.
A mode differs from the other in its own steps and in a few hooks (`held`, `routed`,
`loss`), never in tests of the mode inside a shared step.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.common.retry import cas_attempts
from tandemdb.common.roles import Kind, Role

from ..catalog import Catalog, EnvRecord, EnvState, ReplicaRef, iso_now, stage
from ..events import Events
from ..nodes import NodeClient, Reply
from ..operations import Operation, Outcome, StepFailed, StepRun
from ..reconcile import Reconciler
from ..status import LiveStatus
from ..store import Txn
from ..topology import Topology
from .params import FailoverParams, Side, seconds_between

log = logging.getLogger("tandem.controller.failover")


def conflict(message: str) -> StepFailed:
    """What a step's compare-and-set loop raises when it kept losing (`cas_attempts`)."""
    return StepFailed("conflict", message)


@dataclass(frozen=True)
class Context:
    """What the failover steps work with."""

    catalog: Catalog
    topology: Topology
    reconciler: Reconciler
    nodes: NodeClient
    events: Events
    status: LiveStatus
    lease_ttl: float


class FailoverSteps(ABC):
    """One failover mode: its table of steps, its checks at the start, its hooks."""

    mode = ""
    old_primary: Role = Role.SECONDARY  # what the old primary becomes once the move is done
    unhealthy_hint = " (if the primary's region is lost, use a forced failover)"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    @abstractmethod
    def steps(self) -> Mapping[str, StepRun]:
        """The mode's steps, in order: step name -> method."""

    # -- at the start (hooks) ------------------------------------------------------------

    def target(self, record: EnvRecord, to: str | None) -> ReplicaRef | None:
        """The secondary to promote (hook): the one on node `to` if named, else the
        geo-secondary in the pair (a local one stays in the region, docs/ha.md)."""
        if to is not None:
            named = record.on(to)
            return named if named is not None and named.role == Role.SECONDARY else None
        return next((r for r in record.secondaries if r.kind == Kind.GEO), None)

    def no_target(self, record: EnvRecord) -> str:
        """Why there is nothing to promote (hook), for the 409."""
        return (f"environment {record.name!r} is {record.type} and has no geo-secondary to "
                "fail over to; only production environments can fail over to the pair")

    def refusal(self, name: str) -> ApiError | None:
        """Why this mode cannot start in this deployment, if it cannot."""
        return None

    def must_be_up(self, source: ReplicaRef,
                   target: ReplicaRef) -> list[tuple[ReplicaRef, str]]:
        """The replicas whose nodes must be healthy, with what each is."""
        return [(source, "primary"), (target, "secondary")]

    def held(self, replica: ReplicaRef, source: ReplicaRef) -> ReplicaRef:
        """Each replica as the hold records it: the old primary (`source`) fenced."""
        return replica.as_role(Role.FENCED) if replica.node == source.node else replica

    def watched(self, env: str, source: ReplicaRef) -> dict[str, Any]:
        """Parameters of this mode's own, recorded at the start."""
        return {}

    async def finished(self, op: Operation, p: FailoverParams, record: EnvRecord,
                       version: int) -> str:
        """After a failed step past the decision the move was finished in the catalog:
        tell the old primary, now a secondary (hook), and say so."""
        await self.put_desired(record, p.source.node, version)
        return (f"the move was already decided, so it was finished: primary on "
                f"{p.target.node} at epoch {p.epoch + 1}, {p.source.node} its secondary")

    # -- shared steps --------------------------------------------------------------------

    async def hold(self, op: Operation) -> Outcome:
        """Done in the creating transaction; seen again only on resume."""
        p = FailoverParams.from_json(op.params)
        return Outcome(f"environment {op.target} (epoch {p.epoch}): calls to the primary "
                       "are held")

    async def switch_routing(self, op: Operation) -> Outcome:
        p = FailoverParams.from_json(op.params)
        record, version = await self.record(op)
        switched = self.routed(record.with_(primary_region=p.target.region),
                               (op.result or {})["final_lsn"])

        def switch(txn: Txn) -> None:
            stage(txn, switched, version)

        return Outcome(f"environment {op.target} (epoch {p.epoch + 1}): routing now sends "
                       f"its primary calls to {p.target.region}", switch)

    def routed(self, record: EnvRecord, final: int) -> EnvRecord:
        """The record once routing follows the new primary (hook)."""
        return record

    async def release(self, op: Operation) -> Outcome:
        p, name = FailoverParams.from_json(op.params), op.target
        record, version = await self.record(op)
        final, epoch = (op.result or {})["final_lsn"], p.epoch + 1
        released_at = iso_now()
        line = {"environment": name, "from_region": p.source.region,
                "to_region": p.target.region, "state": "succeeded", "mode": p.mode,
                "rto_seconds": seconds_between(op.started_at, released_at),
                "data_loss": 0, "final_lsn": final, "epoch": epoch, "operation": op.id}
        loss, text = self.loss(op, p, line)

        def release(txn: Txn) -> None:
            stage(txn, record.with_(state=EnvState.ACTIVE), version)
            self.ctx.events.stage(txn, p.events[1], environment=name,
                                  region=p.target.region, operation=op.id,
                                  data={k: v for k, v in line.items()
                                        if k not in ("environment", "operation", "state")})
            if loss is not None:
                loss(txn)

        return Outcome(f"environment {name} (epoch {epoch}): active again with its primary "
                       f"in {p.target.region}; held calls released after "
                       f"{line['rto_seconds']:.3f} s, {text}", release,
                       {"environments": [line], "succeeded": 1, "failed": 0})

    def loss(self, op: Operation, p: FailoverParams,
             line: dict) -> tuple[Callable[[Txn], None] | None, str]:
        """What the move lost (hook): a staging of its event (or None), and a sentence.
        May add to `line`, the environment's line of the result."""
        return None, f"no data lost (final lsn {line['final_lsn']})"

    # -- helpers -------------------------------------------------------------------------

    async def call(self, side: Side, env: str, action: str, body: dict,
                   seconds: float) -> Reply:
        url = self.ctx.topology.call_url(side.node)
        return await self.ctx.nodes.replica_call(side.node, url, env, action, body, seconds)

    async def record(self, op: Operation) -> tuple[EnvRecord, int]:
        """The environment's record, still held by this operation; StepFailed if not."""
        read = await asyncio.to_thread(self.ctx.catalog.read, op.target)
        if read is None:
            raise StepFailed("deleted", f"environment {op.target!r} was deleted during its "
                                        "failover")
        if read[0].operation != op.id:
            raise StepFailed("conflict", f"environment {op.target!r} was changed by operation "
                                         f"{read[0].operation} during this failover")
        return read

    async def decide(self, op: Operation) -> int:
        """Record target-primary-at-E+1 in the catalog: the point of no return. Answers
        the record's version."""
        p = FailoverParams.from_json(op.params)
        for _ in cas_attempts(f"environment {op.target!r}: the decision",
                              error=conflict):
            record, version = await self.record(op)
            if record.epoch == p.epoch + 1:
                return version  # decided already (a resumed step)
            written = await asyncio.to_thread(self.ctx.catalog.try_update, op.target, version,
                                              self.decided(record, p))
            if written is not None:
                log.info("environment %s (epoch %d): decided, %s becomes primary at epoch %d; "
                         "from here the failover only goes forward (%s)", op.target,
                         p.epoch + 1, p.target.node, p.epoch + 1, op.id)
                return written
        raise AssertionError("unreachable: cas_attempts raises after its last attempt")

    def decided(self, record: EnvRecord, p: FailoverParams) -> EnvRecord:
        """The record the decision writes (hook; it may refuse with StepFailed, before the
        point of no return): the target primary at E+1, and no replica sync outside its
        region. A move within the region (docs/ha.md) swaps the two replicas' kinds: the
        new primary takes the old one's place, the old primary becomes the local replica,
        not sync until the new primary regains sync with it."""
        decided = record.with_(epoch=p.epoch + 1).with_roles({p.target.node: Role.PRIMARY})
        if p.target.region == p.source.region:
            kinds = {p.source.node: Kind.LOCAL, p.target.node: Kind.GEO}
            decided = decided.with_replicas(
                lambda r: replace(r, kind=kinds[r.node], sync=False) if r.node in kinds else r)
        return decided.unsynced_outside(p.target.region)

    async def promote_at_applied(self, op: Operation, p: FailoverParams,
                                 secondaries: list[dict]) -> tuple[int, dict]:
        """Decide, then promote the target at whatever it has applied (the fork point),
        asking again while it still applies. Answers that lsn and the target's position
        as it read it (`applied_lsn`, `last_committed_at`)."""
        name = op.target
        version = await self.decide(op)
        body = {"epoch": p.epoch + 1, "version": version, "secondaries": secondaries}
        for _ in cas_attempts(f"environment {name}: the promotion", error=lambda _: StepFailed(
                "promote_failed", f"environment {name}: the secondary kept applying; no "
                "stable fork point")):
            seen = await self.call(p.target, name, "wait", {"lsn": 0, "timeout": 0}, 5.0)
            if not seen.ok:
                raise StepFailed("promote_failed", f"environment {name}: cannot read the "
                                                   f"secondary's position: {seen.problem}")
            fork = int(seen.body["applied_lsn"])
            reply = await self.call(p.target, name, "promote",
                                    {**body, "expected_lsn": fork}, 5.0)
            if reply.ok:
                return fork, seen.body
            if reply.code != "lsn_mismatch":  # (a mismatch: it was still applying)
                raise StepFailed("promote_failed", f"environment {name} (epoch "
                                                   f"{p.epoch + 1}): {reply.problem}")
        raise AssertionError("unreachable: cas_attempts raises after its last attempt")

    async def put_desired(self, record: EnvRecord, node: str, version: int) -> str | None:
        """Send `node` its replica as the record has it; the problem, if the call failed."""
        replica = record.on(node)
        assert replica is not None  # (a failover never removes a replica)
        reply = await self.ctx.nodes.put_replica(
            node, self.ctx.topology.call_url(node),
            self.ctx.reconciler.desired(record, replica, version))
        return reply.problem


def mark_fork(record: EnvRecord, final: int) -> EnvRecord:
    """Where the old primary's history forked off, on the replica left `behind` (one left
    by an earlier move keeps its own fork point)."""
    return record.with_replicas(
        lambda r: replace(r, fork_lsn=final) if r.behind and r.fork_lsn is None else r)
