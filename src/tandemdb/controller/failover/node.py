"""A node failover (the primary's node is lost): promote the sync local secondary, lose nothing.

Steps (docs/ha.md, "Node loss"), E the epoch before: `hold` (the old primary `fenced` and
`behind`), `promote` (decide, reading in the same compare-and-set that the target is still
recorded `sync: true`; then promote it at what it has applied: every acknowledged write, by
the sync rule), `switch-routing` (the fork point on the old primary's replica), `repoint`
(the other secondaries stream from the new primary) and `release` (`node.failover.completed`
with data loss 0).

No lease is waited out: the promotion fences the old primary by itself. At E+1 its sync
secondary acknowledges nothing of epoch E, the controller refuses its request to drop sync
(the environment is no longer at E with that primary), and its geo-secondary is sent nothing
the sync secondary did not acknowledge, so it can commit but never acknowledge again. What it
committed past the fork point was never acknowledged: its rejoin (rejoin.py) rewinds those
entries into the lost-writes bundle marked `acknowledged: false`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from tandemdb.common.roles import Kind, Role

from ..catalog import EnvRecord, ReplicaRef
from ..operations import Operation, Outcome, StepFailed, StepRun
from ..store import Txn
from .params import FailoverParams
from .planned import RETRY_PAUSE
from .steps import FailoverSteps, mark_fork

READ_TRIES = 3  # the target's position is asked this many times when no answer comes


class SyncPromotion(FailoverSteps):
    mode = "sync"
    old_primary = Role.FENCED  # it rejoins (rewound) once its node is back
    unhealthy_hint = ""

    @property
    def steps(self) -> Mapping[str, StepRun]:
        return {"hold": self.hold, "promote": self.promote,
                "switch-routing": self.switch_routing, "repoint": self.repoint,
                "release": self.release}

    # -- at the start --------------------------------------------------------------------

    def target(self, record: EnvRecord, to: str | None) -> ReplicaRef | None:
        """The secondary recorded sync: the only one that may be promoted automatically."""
        primary = record.primary
        synced = next((r for r in record.secondaries if r.sync and r.kind == Kind.LOCAL
                       and primary is not None and r.region == primary.region), None)
        return synced if to is None or (synced is not None and synced.node == to) else None

    def no_target(self, record: EnvRecord) -> str:
        return (f"environment {record.name!r} has no local secondary recorded sync, so none "
                "holds every acknowledged write; it waits for its primary's node, or for "
                f"'tandem failover {record.name} --forced' (which may lose writes)")

    def must_be_up(self, source: ReplicaRef,
                   target: ReplicaRef) -> list[tuple[ReplicaRef, str]]:
        return [(target, "sync secondary")]

    def held(self, replica: ReplicaRef, source: ReplicaRef) -> ReplicaRef:
        """The old primary fenced and `behind`: it may have committed past the fork point,
        but acknowledged nothing there (`unacknowledged`)."""
        if replica.node == source.node:
            return replace(replica, role=Role.FENCED, behind=True, unacked=True)
        return replica

    def watched(self, env: str, source: ReplicaRef) -> dict[str, Any]:
        seen = self.ctx.status.report(source.node, env) or {}
        return {"primary_last_seen_lsn": seen.get("last_lsn")}

    # -- steps ---------------------------------------------------------------------------

    def decided(self, record: EnvRecord, p: FailoverParams) -> EnvRecord:
        """Refused unless the target is still recorded sync in the record this decision
        replaces: a primary that dropped sync first may have acknowledged writes it lacks."""
        target = record.on(p.target.node)
        if target is None or not target.sync:
            raise StepFailed("not_sync", f"environment {record.name}: the replica on "
                             f"{p.target.node} is no longer recorded sync (its primary "
                             "dropped it), so it may lack acknowledged writes; not promoted")
        return super().decided(record, p)

    async def promote(self, op: Operation) -> Outcome:
        p, name = FailoverParams.from_json(op.params), op.target
        # Reachable before the point of no return: a dead target is a rollback, not a
        # decided move with no primary to take writes.
        for _ in range(READ_TRIES):  # a connection lost in passing is tried again
            seen = await self.call(p.target, name, "wait", {"lsn": 0, "timeout": 0}, 5.0)
            if seen.ok or seen.status != 0:
                break
            await asyncio.sleep(RETRY_PAUSE)
        if not seen.ok:
            raise StepFailed("promote_failed", f"environment {name}: the sync secondary on "
                             f"{p.target.node} cannot be reached: {seen.problem}")
        record, _ = await self.record(op)
        others = [self.ctx.topology.node_ref(r.node) for r in record.secondaries
                  if r.node != p.target.node]
        fork, _ = await self.promote_at_applied(op, p, others)
        return Outcome(f"environment {name} (epoch {p.epoch + 1}): {p.target.node}, its sync "
                       f"secondary, promoted at lsn {fork}: it holds every acknowledged write",
                       result={"final_lsn": fork, "fork_lsn": fork, "epoch": p.epoch + 1})

    async def repoint(self, op: Operation) -> Outcome:
        """Tell every other secondary (the geo-secondary) that it streams from the new
        primary; one that cannot be told now learns it from its next heartbeat answer."""
        p = FailoverParams.from_json(op.params)
        record, version = await self.record(op)
        others = [r.node for r in record.secondaries]
        problems = [problem for problem in await asyncio.gather(
            *(self.put_desired(record, node, version) for node in others)) if problem]
        detail = (f"environment {op.target} (epoch {p.epoch + 1}): "
                  f"{', '.join(others) or 'no other secondary'} now stream(s) from "
                  f"{p.target.node}")
        if problems:
            detail += f" ({'; '.join(problems)}; their heartbeat answers tell them)"
        return Outcome(detail, warn=bool(problems))

    # -- hooks of the shared steps -------------------------------------------------------

    async def finished(self, op: Operation, p: FailoverParams, record: EnvRecord,
                       version: int) -> str:
        return (f"the move was already decided, so it was finished: primary on "
                f"{p.target.node} at epoch {p.epoch + 1}; {p.source.node} stays fenced until "
                "it rejoins")

    def routed(self, record: EnvRecord, final: int) -> EnvRecord:
        return mark_fork(record, final)

    def loss(self, op: Operation, p: FailoverParams,
             line: dict) -> tuple[Callable[[Txn], None] | None, str]:
        """Nothing acknowledged is lost; what the old primary committed past the fork point
        (never acknowledged) is kept at its rejoin."""
        last_seen = p.primary_last_seen_lsn
        unacked = (max(0, last_seen - line["final_lsn"]) if isinstance(last_seen, int)
                   else None)
        line.update(from_node=p.source.node, to_node=p.target.node, fork_lsn=line["final_lsn"],
                    unacknowledged_entries_known=unacked)
        return None, (f"no acknowledged write lost (fork lsn {line['final_lsn']}; the old "
                      f"primary's unacknowledged entries after it are kept at its rejoin)")
