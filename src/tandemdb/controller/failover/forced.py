"""A forced failover (the primary's region is lost): writes past the fork point may be lost.

Steps (docs/failover.md, "Forced failover"): `hold` (which also marks the old primary
`behind`), `expire-lease` (the target stops vouching for the old primary, then both its
leases are waited out), `promote` at the target's applied lsn (the fork point),
`switch-routing` (which records the fork point on the replica left behind) and `release`
(with `failover.data_loss`). No fence to ask, nothing to catch up from, no one to reverse
replication to: the old primary stays `fenced` until it rejoins (rejoin.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Kind, Role

from ..catalog import EnvRecord, ReplicaRef
from ..events import EventType
from ..operations import Operation, Outcome, StepFailed, StepRun
from ..store import Txn
from .params import FailoverParams, parse_time
from .planned import PROMOTE_DEADLINE, RETRY_PAUSE
from .steps import FailoverSteps, mark_fork

LEASE_SLACK = 0.5  # waited past the lease ttl, on top of the node's own margin


class Forced(FailoverSteps):
    mode = "forced"
    old_primary = Role.FENCED  # its writes past the fork point are not the new history
    unhealthy_hint = ""

    @property
    def steps(self) -> Mapping[str, StepRun]:
        return {"hold": self.hold, "expire-lease": self.expire_lease,
                "promote": self.promote, "switch-routing": self.switch_routing,
                "release": self.release}

    # -- at the start --------------------------------------------------------------------

    def refusal(self, name: str) -> ApiError | None:
        if self.ctx.lease_ttl > 0:
            return None
        return ApiError(409, "no_leases", "this deployment runs without leases (lease_ttl 0), "
                        "so an old primary cannot be known to have stopped; a forced failover "
                        "needs them")

    def must_be_up(self, source: ReplicaRef,
                   target: ReplicaRef) -> list[tuple[ReplicaRef, str]]:
        return [(target, "secondary")]

    def held(self, replica: ReplicaRef, source: ReplicaRef) -> ReplicaRef:
        """The old primary, and its local secondary (docs/ha.md), fenced and `behind`:
        the local one may hold entries past the fork point too (it holds every entry the
        old primary acknowledged), so it must not stream from the new primary before it
        rejoins (rejoin.py re-seeds it)."""
        if replica.node == source.node or (replica.kind == Kind.LOCAL
                                           and replica.region == source.region):
            return replace(replica, role=Role.FENCED, behind=True)
        return replica

    def watched(self, env: str, source: ReplicaRef) -> dict[str, Any]:
        """What the primary was last seen at: the loss is counted against it."""
        seen = self.ctx.status.report(source.node, env) or {}
        return {"lease_ttl": self.ctx.lease_ttl,
                "primary_last_seen_lsn": seen.get("last_lsn")}

    # -- steps ---------------------------------------------------------------------------

    async def expire_lease(self, op: Operation) -> Outcome:
        """Wait until the old primary's leases have certainly run out; only then may
        another replica take writes (invariant 2).

        Two leases: the controller's, which no heartbeat answer after the hold extends to a
        writable primary (they make it fenced first), and the failsafe lease its
        geo-secondary's pulls keep. So the target is first told to stop vouching (its
        desired record, as of the hold, says so) and must confirm; then the wait is
        `lease_ttl` + slack from the later of the hold and that confirmation
        (docs/leases.md)."""
        p = FailoverParams.from_json(op.params)
        ttl = p.lease_ttl or 0.0
        withdrawn = await self.withdraw_vouch(op, p)
        since = max(parse_time(op.started_at), withdrawn)
        wait = since + ttl + LEASE_SLACK - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        return Outcome(f"environment {op.target} (epoch {p.epoch}): the leases of "
                       f"{p.source.node} have run out ({ttl:g} s ttl, waited "
                       f"{max(wait, 0):.2f} s after {p.target.node} stopped vouching for it); "
                       f"it cannot take writes at epoch {p.epoch}")

    async def withdraw_vouch(self, op: Operation, p: FailoverParams) -> float:
        """Tell the target to stop vouching for the old primary; when it confirmed (unix s).
        It keeps pulling what the old primary still commits, so the fork point is late."""
        target = p.target.node
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMOTE_DEADLINE
        while True:  # a poll, until the target confirms or the deadline passes
            record, version = await self.record(op)
            replica = record.on(target)
            assert replica is not None  # (a failover never removes a replica)
            desired = self.ctx.reconciler.desired(record, replica, version)
            reply = await self.ctx.nodes.put_replica(
                target, self.ctx.topology.call_url(target), desired)
            held = reply.body.get("record") if reply.ok else None
            if isinstance(held, dict) and held.get("vouch") is False:
                return time.time()
            problem = reply.problem or f"its record still vouches: {held!r}"
            if loop.time() >= deadline:
                raise StepFailed("vouch_not_withdrawn", f"environment {op.target}: the "
                                 f"secondary on {target} did not confirm that it stopped "
                                 f"vouching for the old primary: {problem}")
            await asyncio.sleep(RETRY_PAUSE)

    async def promote(self, op: Operation) -> Outcome:
        """Promote the secondary at whatever it has applied: that lsn is the fork point."""
        p, name = FailoverParams.from_json(op.params), op.target
        fork, seen = await self.promote_at_applied(op, p, [])
        last_seen = p.primary_last_seen_lsn
        lost = max(0, last_seen - fork) if isinstance(last_seen, int) else None
        committed_at = seen.get("last_committed_at")
        window = (round(max(0.0, parse_time(op.started_at) - committed_at), 3)
                  if isinstance(committed_at, int | float) else None)
        known = ("unknown (the old primary never reported)" if lost is None
                 else f"at most {lost} entries")
        return Outcome(f"environment {name} (epoch {p.epoch + 1}): {p.target.node} promoted "
                       f"at its applied lsn {fork}, the fork point; writes of the old primary "
                       f"after it may be lost: {known}",
                       result={"final_lsn": fork, "fork_lsn": fork, "epoch": p.epoch + 1,
                               "lost_entries": lost, "lost_seconds": window,
                               "primary_last_seen_lsn": last_seen})

    # -- hooks of the shared steps -------------------------------------------------------

    async def finished(self, op: Operation, p: FailoverParams, record: EnvRecord,
                       version: int) -> str:
        return (f"the move was already decided, so it was finished: primary on "
                f"{p.target.node} at epoch {p.epoch + 1}; {p.source.node} stays fenced")

    def routed(self, record: EnvRecord, final: int) -> EnvRecord:
        return mark_fork(record, final)

    def loss(self, op: Operation, p: FailoverParams,
             line: dict) -> tuple[Callable[[Txn], None] | None, str]:
        result, final = op.result or {}, line["final_lsn"]
        line.update(data_loss=result.get("lost_entries"), fork_lsn=final,
                    lost_seconds=result.get("lost_seconds"))

        def announce(txn: Txn) -> None:
            self.ctx.events.stage(txn, EventType.FAILOVER_DATA_LOSS, environment=op.target,
                                  region=p.source.region, operation=op.id, data={
                                      "fork_lsn": final, "epoch": line["epoch"],
                                      "lost_entries_known": result.get("lost_entries"),
                                      "lost_seconds_known": result.get("lost_seconds"),
                                      "primary_last_seen_lsn":
                                          result.get("primary_last_seen_lsn")})

        return announce, (f"writes after lsn {final} may be lost ({line['data_loss']} "
                          "entries at most)")
