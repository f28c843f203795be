"""Settling a failover whose step failed: leave exactly one writable primary.

Before the decision (target-primary-at-E+1 in the catalog) the move is rolled back: the old
primary takes writes again at E (unfenced now, or by its next heartbeat answer). After it
the move is finished: the target stays primary, and the old primary becomes what the mode
makes it (a secondary when planned, `fenced` and behind when forced).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tandemdb.common.retry import cas_attempts
from tandemdb.common.roles import Role

from ..catalog import EnvRecord, EnvState, record_key, stage
from ..operations import Operation
from ..store import Txn
from .params import FailoverParams
from .steps import FailoverSteps


async def settle(mode: FailoverSteps, op: Operation, step: str, message: str) -> str:
    """Settle the failed step; a sentence saying how. Raises (the operation stays live, to
    run again at the next start) if the catalog cannot be written."""
    p = FailoverParams.from_json(op.params)
    settled = await _record_settled(mode, op, p, step, message)
    if isinstance(settled, str):
        return settled
    record, version = settled
    source = p.source
    if record.epoch == p.epoch + 1:
        return await mode.finished(op, p, record, version)
    reply = await mode.call(source, op.target, "unfence",
                            {"epoch": p.epoch, "version": version}, 5.0)
    if reply.ok:
        return (f"the primary on {source.node} was unfenced and takes writes again at epoch "
                f"{p.epoch}; nothing was lost")
    return (f"the catalog makes {source.node} primary again at epoch {p.epoch}; it could not "
            f"be told now ({reply.problem}), its heartbeat answer will unfence it")


def _unheld(role: Role) -> Role:
    """A replica other than the old primary fenced by the hold (a forced failover's local
    secondary, docs/ha.md) is a secondary again when the move is rolled back."""
    return Role.SECONDARY if role == Role.FENCED else role


async def _record_settled(mode: FailoverSteps, op: Operation, p: FailoverParams, step: str,
                          message: str) -> tuple[EnvRecord, int] | str:
    """Write the settled record with the `*.failed` event: the record and its version, or
    why nothing was left to settle."""
    ctx, name, source, target = mode.ctx, op.target, p.source, p.target
    for _ in cas_attempts(f"environment {name}: settling the failed failover"):
        read = await asyncio.to_thread(ctx.catalog.read, name)
        if read is None:
            return "the environment no longer exists"
        record, version = read
        if record.operation != op.id:
            return (f"the environment was changed by operation {record.operation}; left as "
                    "that operation leaves it")
        if record.epoch == p.epoch + 1:  # past the point of no return: finish the move
            settled = record.with_(state=EnvState.ACTIVE, primary_region=target.region)
            settled = settled.with_roles({target.node: Role.PRIMARY,
                                          source.node: mode.old_primary})
            outcome = "moved"
        else:  # not decided: the old primary takes writes again at its old epoch
            settled = record.with_(state=EnvState.ACTIVE).with_replicas(
                lambda r: replace(r, role=Role.PRIMARY, behind=False, unacked=False)
                if r.node == source.node else replace(r, behind=False, role=_unheld(r.role)))
            outcome = "rolled back"

        def build(txn: Txn, settled: EnvRecord = settled, version: int = version,
                  outcome: str = outcome) -> None:
            stage(txn, settled, version)
            ctx.events.stage(txn, p.events[2], environment=name, region=source.region,
                             operation=op.id,
                             data={"from_region": source.region, "to_region": target.region,
                                   "step": step, "outcome": outcome, "error": message,
                                   "epoch": settled.epoch, "data_loss": 0})

        done = await asyncio.to_thread(ctx.events.transact, build)
        if done is not None:
            return settled, done[1][record_key(name)]
    raise AssertionError("unreachable: cas_attempts raises after its last attempt")
