"""A planned failover (both regions up): nothing is lost.

Steps (docs/failover.md, "Planned failover"), E the epoch before, L the old primary's final
lsn: `hold`, `fence` (the old primary at E; it answers L), `catch-up` (the target applies
exactly L), `promote` (decide target-primary-at-E+1, then promote it at L), `switch-routing`,
`reverse` (the old primary becomes a secondary of the new one), `release`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tandemdb.common.retry import cas_attempts
from tandemdb.common.roles import Role

from ..operations import Operation, Outcome, StepFailed, StepRun
from .params import FailoverParams
from .steps import FailoverSteps, conflict

FENCE_TIMEOUT = 35.0  # a fence waits up to 30 s for the commit in flight
PROMOTE_DEADLINE = 15.0  # retry an unanswered promote this long (and a vouch, forced.py)
RETRY_PAUSE = 0.2  # seconds between those tries


class Planned(FailoverSteps):
    mode = "planned"
    old_primary = Role.SECONDARY

    @property
    def steps(self) -> Mapping[str, StepRun]:
        return {"hold": self.hold, "fence": self.fence, "catch-up": self.catch_up,
                "promote": self.promote, "switch-routing": self.switch_routing,
                "reverse": self.reverse, "release": self.release}

    async def fence(self, op: Operation) -> Outcome:
        p = FailoverParams.from_json(op.params)
        where = f"environment {op.target} (epoch {p.epoch})"
        _, version = await self.record(op)
        reply = await self.call(p.source, op.target, "fence",
                                {"epoch": p.epoch, "version": version}, FENCE_TIMEOUT)
        if not reply.ok:
            raise StepFailed("fence_failed", f"{where}: could not fence the primary: "
                                             f"{reply.problem}")
        final = int(reply.body["final_lsn"])
        return Outcome(f"{where}: primary on {p.source.node} fenced at final lsn {final}; it "
                       "takes no more writes", result={"final_lsn": final})

    async def catch_up(self, op: Operation) -> Outcome:
        p = FailoverParams.from_json(op.params)
        where = f"environment {op.target} (epoch {p.epoch})"
        final, timeout = (op.result or {})["final_lsn"], p.catch_up_timeout
        reply = await self.call(p.target, op.target, "wait",
                                {"lsn": final, "timeout": timeout}, timeout + 5)
        if not reply.ok:
            code = "catch_up_timeout" if reply.code == "lsn_not_reached" else "catch_up_failed"
            raise StepFailed(code, f"{where}: the secondary on {p.target.node} did not reach "
                                   f"the final lsn {final}: {reply.problem}")
        return Outcome(f"{where}: secondary on {p.target.node} has applied the final lsn "
                       f"{final}, no more and no less")

    async def promote(self, op: Operation) -> Outcome:
        p = FailoverParams.from_json(op.params)
        final = (op.result or {})["final_lsn"]
        version = await self.decide(op)
        body = {"epoch": p.epoch + 1, "expected_lsn": final, "version": version,
                "secondaries": [self.ctx.topology.node_ref(p.source.node)]}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROMOTE_DEADLINE
        while True:  # a poll: an unanswered promote is asked again until the deadline
            reply = await self.call(p.target, op.target, "promote", body, 5.0)
            if reply.ok:
                break
            if 400 <= reply.status < 500 or loop.time() >= deadline:
                raise StepFailed("promote_failed", f"environment {op.target} (epoch "
                                 f"{p.epoch + 1}): {reply.problem}")
            await asyncio.sleep(RETRY_PAUSE)
        return Outcome(f"environment {op.target} (epoch {p.epoch + 1}): {p.target.node} "
                       f"promoted to primary at epoch {p.epoch + 1} from lsn {final}",
                       result={"epoch": p.epoch + 1})

    async def reverse(self, op: Operation) -> Outcome:
        """Make the old primary a secondary of the new one: catalog first, then its node."""
        p = FailoverParams.from_json(op.params)
        source = p.source.node
        for _ in cas_attempts(f"environment {op.target!r}: reversing replication",
                              error=conflict):
            record, version = await self.record(op)
            old = record.on(source)
            if old is not None and old.role == Role.SECONDARY:
                break
            reversed_ = record.with_roles({source: Role.SECONDARY})
            written = await asyncio.to_thread(self.ctx.catalog.try_update, op.target,
                                              version, reversed_)
            if written is not None:
                record, version = reversed_, written
                break
        problem = await self.put_desired(record, source, version)
        detail = (f"environment {op.target} (epoch {p.epoch + 1}): {source} is now a "
                  f"secondary of {p.target.node}; replication runs "
                  f"{p.target.region} -> {p.source.region}")
        if problem:
            detail += f" ({problem}; its heartbeat answer tells it when it is back)"
        return Outcome(detail, warn=bool(problem))
