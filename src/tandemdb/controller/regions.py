"""Region state, and region-wide failover and failback as operations (docs/failover.md).

A region's record lives under `regions/<name>`:
`{"name", "pair", "state", "state_since", "operation"}` with state

    healthy --failover--> failing-over --> failed-over --failback--> failing-back --> healthy

`region.failover R` moves every production environment whose primary is in R to the pair;
`region.failback R` moves every production environment whose home is R and whose primary is
elsewhere back home. Steps: `mark` (the new state, with its `region.state_changed` event, in
the transaction that records the operation), `move-environments` (one `environment.failover`
child per environment, at most `parallelism` at a time; one environment's failure does not
stop the others), `settle` (the final state and its event). A resumed `move-environments`
finds the children it already started (`params.parent`) and waits for them instead of
starting them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from enum import StrEnum
from typing import Any

from tandemdb.common.http import ApiError

from .bodies import RegionFailback, RegionFailover, parse
from .catalog import Catalog, EnvType, iso_now
from .events import Events, EventType
from .failover import Failovers, summary
from .operations import Draft, Kind, Operation, Operations, Outcome, StepFailed
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.regions")

REGION_FAILOVER = "region.failover"
REGION_FAILBACK = "region.failback"


class RegionState(StrEnum):
    HEALTHY = "healthy"
    FAILING_OVER = "failing-over"
    FAILED_OVER = "failed-over"
    FAILING_BACK = "failing-back"


MOVING = {RegionState.FAILING_OVER, RegionState.FAILING_BACK}


def region_key(name: str) -> str:
    return f"regions/{name}"


def parse_region_body(raw: Any, kind: str) -> tuple[str, int]:
    """`mode` and `parallelism` of a region failover or failback body (`bodies.RegionFailover`,
    `bodies.RegionFailback`; {} when empty); 400 with what to fix."""
    if kind == REGION_FAILOVER:
        body = parse(RegionFailover, raw)
        return body.mode, body.parallelism
    return "planned", parse(RegionFailback, raw).parallelism


class Regions:
    def __init__(self, catalog: Catalog, topology: Topology, failovers: Failovers,
                 operations: Operations, events: Events) -> None:
        self.catalog, self.topology, self.failovers = catalog, topology, failovers
        self.operations, self.events = operations, events
        self.store = catalog.store
        operations.register(Kind(REGION_FAILOVER, self._step))
        operations.register(Kind(REGION_FAILBACK, self._step))

    def views(self) -> list[dict]:
        """Each region with its state, nodes, and how many primaries and homes it holds."""
        records = self.catalog.list()
        return [{**region, "nodes": self.topology.node_views(region["name"]),
                 "primaries": sum(r["primary_region"] == region["name"] for r in records),
                 "home_environments": sum(r["home_region"] == region["name"]
                                          for r in records)}
                for region in self.topology.region_records()]

    # -- starting ------------------------------------------------------------------------

    def start(self, region: str, kind: str, body: Any) -> Operation:
        """Record a region failover or failback and mark the region. Blocking."""
        if not self.topology.has_region(region):
            raise ApiError(404, "not_found", f"unknown region {region!r}: the regions are "
                           f"{', '.join(self.topology.region_names())}")
        mode, parallelism = parse_region_body(body, kind)
        moving = (RegionState.FAILING_OVER if kind == REGION_FAILOVER
                  else RegionState.FAILING_BACK)

        def build(txn: Txn, op_id: str) -> Draft:
            item = self.store.get(region_key(region))
            current = item.value if item else {"name": region, "state": "healthy",
                                               "pair": self.topology.pair_of(region)}
            if current["state"] in MOVING:
                raise ApiError(409, "busy", f"region {region} is {current['state']} (operation "
                               f"{current.get('operation')}); wait for it to end")
            self._stage_state(txn, item, current, moving, op_id)
            params = {"region": region, "pair": self.topology.pair_of(region), "mode": mode,
                      "parallelism": parallelism}
            return Draft(params, ["mark", "move-environments", "settle"],
                         {"mark": f"region {region}: {current['state']} -> {moving.value}"})

        return self.operations.create(kind, region, build)

    def _stage_state(self, txn: Txn, item, current: dict, state: RegionState,
                     op_id: str) -> None:
        name = current["name"]
        txn.expect(region_key(name), item.version if item else None).put(
            region_key(name), {**current, "state": state.value, "state_since": iso_now(),
                               "operation": op_id})
        self.events.stage(txn, EventType.REGION_STATE_CHANGED, region=name, operation=op_id,
                          data={"from": current["state"], "to": state.value})

    # -- steps ---------------------------------------------------------------------------

    async def _step(self, op: Operation, step: str) -> Outcome:
        region = op.target
        if step == "mark":
            return Outcome(f"region {region}: marked {op.kind}")
        if step == "move-environments":
            started = time.monotonic()
            result = await self._move_all(op)
            seconds = time.monotonic() - started
            verb = "moved to" if op.kind == REGION_FAILOVER else "moved home from"
            return Outcome(f"region {region}: {result['succeeded']} environment(s) {verb} "
                           f"{op.params['pair'] if op.kind == REGION_FAILOVER else 'the pair'}"
                           f", {result['failed']} failed, in {seconds:.2f} s",
                           result={**result, "seconds": round(seconds, 3)},
                           warn=result["failed"] > 0)
        if step == "settle":
            return await self._settle_state(op)
        raise StepFailed("unknown_step", f"{op.kind} has no step {step!r}")

    def _eligible(self, op: Operation) -> list[str]:
        region = op.target
        names = []
        for record in self.catalog.list():
            if record["type"] != EnvType.PRODUCTION:
                continue
            if op.kind == REGION_FAILOVER and record["primary_region"] == region:
                names.append(record["name"])
            if (op.kind == REGION_FAILBACK and record["home_region"] == region
                    and record["primary_region"] != region):
                names.append(record["name"])
        return names

    async def _move_all(self, op: Operation) -> dict:
        children = await asyncio.to_thread(self.operations.children, op.id)
        started = {child["target"]: child["id"] for child in children}
        names = sorted(set(await asyncio.to_thread(self._eligible, op)) | started.keys())
        gate = asyncio.Semaphore(op.params["parallelism"])

        async def move(name: str) -> dict:
            async with gate:
                child_id = started.get(name)
                if child_id is None:
                    try:
                        child = await asyncio.to_thread(self.failovers.start, name,
                                                        op.params["mode"], op.id)
                    except ApiError as exc:
                        return {"environment": name, "state": "failed", "operation": None,
                                "data_loss": 0, "error": exc.message}
                    child_id = child.id
                return summary(await self.operations.finish(child_id))

        lines = await asyncio.gather(*(move(name) for name in names))
        failed = sum(line["state"] != "succeeded" for line in lines)
        return {"environments": list(lines), "succeeded": len(lines) - failed, "failed": failed}

    async def _settle_state(self, op: Operation) -> Outcome:
        region = op.target
        left = await asyncio.to_thread(self._eligible, op)
        if op.kind == REGION_FAILOVER:
            state = RegionState.FAILED_OVER
        else:
            state = RegionState.FAILED_OVER if left else RegionState.HEALTHY
        item = await asyncio.to_thread(self.store.get, region_key(region))
        current = item.value if item else {"name": region, "state": "healthy",
                                           "pair": op.params["pair"]}

        def stage(txn: Txn) -> None:
            self._stage_state(txn, item, current, state, op.id)

        remaining = f"; {len(left)} environment(s) still to move" if left else ""
        return Outcome(f"region {region}: {current['state']} -> {state.value}{remaining}",
                       stage, warn=bool(left))
