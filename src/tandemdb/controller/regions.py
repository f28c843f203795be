"""Region state, and region-wide failover and failback as operations (docs/failover.md).

A region's record lives under `regions/<name>` (region_rules.py: its states, and which
moves a region takes in):

    healthy --failover--> failing-over --> failed-over --failback--> failing-back --> healthy
                                       `-> partially-failed-over (some did not move)

`region.failover R` moves every production environment whose primary is in R to the pair;
`region.failback R` moves every production environment whose home is R and whose primary is
elsewhere back home. Steps: `mark` (the new state, with its `region.state_changed` event, in
the transaction that records the operation), `move-environments` (one `environment.failover`
child per environment, moves.py), `settle` (the final state and its event).

A region operation succeeds only if every environment it had to move moved: otherwise
`settle` records the region's state as it is (`partially-failed-over` when environments
are left in it after a failover) and the operation ends `failed`, naming them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from tandemdb.common.http import ApiError

from .bodies import RegionFailback, RegionFailover, parse
from .catalog import Catalog, EnvType, iso_now
from .events import Events, EventType
from .failover import FAILOVER, Failovers
from .moves import Moves
from .operations import Draft, Kind, Operation, Operations, Outcome, Steps
from .region_rules import (
    MOVING,
    RegionState,
    failovers_into,
    read_region,
    refuse_region_failover,
    region_key,
)
from .store import Item, Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.regions")

REGION_FAILOVER = "region.failover"
REGION_FAILBACK = "region.failback"
NAMED = 10  # environments named in a failed region operation's error

__all__ = ["REGION_FAILBACK", "REGION_FAILOVER", "RegionState", "Regions",
           "parse_region_body"]


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
        self.moves = Moves(catalog, failovers, operations)
        operations.register(Kind(REGION_FAILOVER, self.steps))
        operations.register(Kind(REGION_FAILBACK, self.steps))

    def steps(self, params: dict) -> Steps:
        """The steps of a region operation: failover and failback alike."""
        return {"mark": self._mark, "move-environments": self._move_environments,
                "settle": self._settle_state}

    def views(self) -> list[dict]:
        """Each region with its state, nodes, and how many primaries and homes it holds."""
        records = self.catalog.list()
        return [{**region, "nodes": self.topology.node_views(region["name"]),
                 "primaries": sum(r.primary_region == region["name"] for r in records),
                 "home_environments": sum(r.home_region == region["name"] for r in records)}
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
            if kind == REGION_FAILOVER:  # (region_rules.py: why this is race-free)
                pair = self.topology.pair_of(region)
                pair_item, pair_state = read_region(self.store, pair)
                refusal = refuse_region_failover(
                    region, pair, pair_state, mode == "forced",
                    failovers_into(self.store, self.catalog.list(), region, FAILOVER))
                if refusal is not None:
                    raise refusal
                txn.expect(region_key(pair), pair_item.version if pair_item else None)
            self._stage_state(txn, item, current, moving, op_id)
            params = {"region": region, "pair": self.topology.pair_of(region), "mode": mode,
                      "parallelism": parallelism}
            return Draft(params,
                         {"mark": f"region {region}: {current['state']} -> {moving.value}"})

        return self.operations.create(kind, region, build)

    def _stage_state(self, txn: Txn, item: Item | None, current: dict, state: RegionState,
                     op_id: str) -> None:
        name = current["name"]
        txn.expect(region_key(name), item.version if item else None).put(
            region_key(name), {**current, "state": state.value, "state_since": iso_now(),
                               "operation": op_id})
        self.events.stage(txn, EventType.REGION_STATE_CHANGED, region=name, operation=op_id,
                          data={"from": current["state"], "to": state.value})

    # -- steps ---------------------------------------------------------------------------

    async def _mark(self, op: Operation) -> Outcome:
        """Done in the creating transaction; seen again only on resume."""
        return Outcome(f"region {op.target}: marked {op.kind}")

    async def _move_environments(self, op: Operation) -> Outcome:
        started = time.monotonic()
        result = await self.moves.move_all(op, lambda: self._eligible(op),
                                           op.params["mode"], op.params["parallelism"])
        seconds = time.monotonic() - started
        verb = "moved to" if op.kind == REGION_FAILOVER else "moved home from"
        return Outcome(f"region {op.target}: {result['succeeded']} environment(s) {verb} "
                       f"{op.params['pair'] if op.kind == REGION_FAILOVER else 'the pair'}"
                       f", {result['failed']} failed, in {seconds:.2f} s",
                       result={**result, "seconds": round(seconds, 3)},
                       warn=result["failed"] > 0)

    def _eligible(self, op: Operation) -> list[str]:
        region = op.target
        names = []
        for record in self.catalog.list():
            if record.type != EnvType.PRODUCTION:
                continue
            if op.kind == REGION_FAILOVER and record.primary_region == region:
                names.append(record.name)
            if (op.kind == REGION_FAILBACK and record.home_region == region
                    and record.primary_region != region):
                names.append(record.name)
        return names

    async def _settle_state(self, op: Operation) -> Outcome:
        region = op.target
        left = sorted(await asyncio.to_thread(self._eligible, op))
        if op.kind == REGION_FAILOVER:
            state = RegionState.PARTIALLY_FAILED_OVER if left else RegionState.FAILED_OVER
        else:
            state = RegionState.FAILED_OVER if left else RegionState.HEALTHY
        item = await asyncio.to_thread(self.store.get, region_key(region))
        current = item.value if item else {"name": region, "state": "healthy",
                                           "pair": op.params["pair"]}

        def stage(txn: Txn) -> None:
            self._stage_state(txn, item, current, state, op.id)

        remaining = f"; {len(left)} environment(s) still to move" if left else ""
        detail = f"region {region}: {current['state']} -> {state.value}{remaining}"
        failed = [line for line in (op.result or {}).get("environments", [])
                  if line["state"] != "succeeded"]
        if not left and not failed:
            return Outcome(detail, stage)
        return Outcome(detail, stage, warn=True, error=not_all_moved(op, left, failed, state))


def not_all_moved(op: Operation, left: list[str], failed: list[dict],
                  state: RegionState) -> tuple[str, str]:
    """The error of a region operation that did not move every environment."""
    region, verb = op.target, "failover" if op.kind == REGION_FAILOVER else "failback"
    parts = []
    if failed:
        shown = "; ".join(f"{line['environment']}: {line.get('error') or line['state']}"
                          for line in failed[:NAMED])
        more = f" and {len(failed) - NAMED} more" if len(failed) > NAMED else ""
        parts.append(f"{len(failed)} environment move(s) failed ({shown}{more})")
    if left:
        more = f" and {len(left) - NAMED} more" if len(left) > NAMED else ""
        where = f"still in {region}" if op.kind == REGION_FAILOVER else "still away from home"
        parts.append(f"{len(left)} environment(s) {where}: {', '.join(left[:NAMED])}{more}")
    return ("environments_not_moved",
            f"region {verb} {region} did not move every environment: {'; '.join(parts)}. The "
            f"region is {state.value}; 'tandem region {verb} {region}' again moves those "
            "left once their problem is fixed ('tandem ops ID' shows each one's error)")
