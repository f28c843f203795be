"""Moving many environments as one operation: one `environment.failover` child each.

A region failover or failback (regions.py), a node failover (node_failover.py) and a drain
move a set of environments, at most `parallelism` at a time; one environment's failure does
not stop the others. A resumed parent finds the children it already started
(`params.parent`) and waits for them instead of starting them again. An environment another
operation holds is waited for, then moved if it still has to be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tandemdb.common.http import ApiError

from .catalog import Catalog
from .failover import FailoverParams, Failovers
from .operations import LIVE, Operation, Operations, OpState

BUSY_ATTEMPTS = 3  # an environment another operation holds: wait for it, this many times
BUSY_WAIT = 60.0  # seconds, at most, for that operation to end


class Moves:
    def __init__(self, catalog: Catalog, failovers: Failovers, operations: Operations) -> None:
        self.catalog, self.failovers, self.operations = catalog, failovers, operations

    async def move_all(self, op: Operation, eligible: Callable[[], list[str]], mode: str,
                       parallelism: int,
                       to: Callable[[str], str | None] = lambda name: None) -> dict:
        """Move every environment `eligible()` names (blocking; read again after a wait)
        with a failover of `mode` to `to(name)` (None: the mode's own target); the result
        has one line per environment, and how many succeeded and failed."""
        children = await asyncio.to_thread(self.operations.children, op.id)
        started = {child["target"]: child["id"] for child in children}
        names = sorted(set(await asyncio.to_thread(eligible)) | started.keys())
        gate = asyncio.Semaphore(parallelism)

        async def move(name: str) -> dict:
            async with gate:
                child_id = started.get(name)
                if child_id is None:
                    return await self._start_child(op, name, eligible, mode, to)
                return summary(await self.operations.finish(child_id))

        lines = await asyncio.gather(*(move(name) for name in names))
        failed = sum(line["state"] != "succeeded" for line in lines)
        return {"environments": list(lines), "succeeded": len(lines) - failed, "failed": failed}

    async def _start_child(self, op: Operation, name: str, eligible: Callable[[], list[str]],
                           mode: str, to: Callable[[str], str | None]) -> dict:
        """Move one environment (a child operation) and answer its line of the result. An
        environment another operation holds is waited for, then moved if still needed."""
        for _ in range(BUSY_ATTEMPTS):
            try:
                target = await asyncio.to_thread(to, name)
                child = await asyncio.to_thread(self.failovers.start, name, mode, op.id,
                                                to=target)
            except ApiError as exc:
                holder = await self._holder(name) if exc.code == "busy" else None
                if holder is None:
                    return failed_line(name, exc.message)
                await asyncio.to_thread(self.operations.wait_ended, holder, BUSY_WAIT)
                if name not in await asyncio.to_thread(eligible):
                    return {"environment": name, "state": "succeeded", "operation": holder,
                            "data_loss": 0, "note": f"moved by operation {holder}"}
                continue
            return summary(await self.operations.finish(child.id))
        return failed_line(name, f"environment {name!r} stayed held by other operations; "
                                 f"move it with 'tandem failover {name}'")

    async def _holder(self, name: str) -> str | None:
        """The live operation that holds environment `name`, if any."""
        read = await asyncio.to_thread(self.catalog.read, name)
        op_id = read[0].operation if read else None
        held = await asyncio.to_thread(self.operations.get, op_id) if op_id else None
        return op_id if held is not None and held["state"] in LIVE else None


def summary(op: Operation) -> dict:
    """One environment's line in a parent operation's result, from its failover."""
    if op.state == OpState.SUCCEEDED and op.result and op.result.get("environments"):
        return op.result["environments"][0]
    p = FailoverParams.from_json(op.params)
    return {"environment": op.target, "from_region": p.source.region,
            "to_region": p.target.region, "state": op.state.value, "operation": op.id,
            "data_loss": 0, "epoch": p.epoch, "error": (op.error or {}).get("message")}


def failed_line(name: str, error: str) -> dict:
    """A result line for an environment whose child operation never started."""
    return {"environment": name, "state": "failed", "operation": None, "data_loss": 0,
            "error": error}
