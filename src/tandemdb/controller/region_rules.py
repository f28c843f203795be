"""Region states, and which moves a region takes in (docs/failover.md#what-may-move-where).

A region's record lives under `regions/<name>`: `{"name", "pair", "state", "state_since",
"operation"}`. The rule, in one place:

- nothing moves into a region that is `failing-over`: it is being evacuated;
- into a region that is `failed-over`, `partially-failed-over` or `failing-back`, only its
  own environments come back (failbacks), and forced failovers (the other region is lost:
  an evacuation that is over must not keep tenants down);
- a region failover does not start while environment failovers into the region run, nor
  into a pair that is `failing-over` (or evacuated, unless forced).

Both checks run inside the store transaction that records the operation: a failover
expects the version of its target region's record, which a region operation rewrites, and
every operation record takes a number from the store counter `counters/operations`, whose
compare-and-set lets only one of two racing operations commit on what it read. The other
reads again and is refused. So the race of `region failover east` and `failover ENV`
(west to east) ends with one of them refused, whichever order they come in.
"""

from __future__ import annotations

from enum import StrEnum

from tandemdb.common.http import ApiError

from .catalog import EnvRecord, EnvState
from .operations import LIVE, op_key
from .store import Item, Store


class RegionState(StrEnum):
    HEALTHY = "healthy"
    FAILING_OVER = "failing-over"
    FAILED_OVER = "failed-over"
    # A region failover ended with some of the region's environments still in it.
    PARTIALLY_FAILED_OVER = "partially-failed-over"
    FAILING_BACK = "failing-back"


MOVING = {RegionState.FAILING_OVER, RegionState.FAILING_BACK}
EVACUATED = {RegionState.FAILED_OVER, RegionState.PARTIALLY_FAILED_OVER}


def region_key(name: str) -> str:
    return f"regions/{name}"


def read_region(store: Store, name: str) -> tuple[Item | None, str]:
    """The region's stored record (None before it is seeded) and its state."""
    item = store.get(region_key(name))
    return item, item.value["state"] if item else RegionState.HEALTHY.value


def refuse_move(env: str, region: str, state: str, *, failback: bool,
                forced: bool) -> ApiError | None:
    """409 when environment `env` may not move into `region` in `state`; else None."""
    if state == RegionState.FAILING_OVER:
        return ApiError(409, "region_evacuated", f"environment {env!r} cannot move into "
                        f"{region}: the region is failing-over (its environments are being "
                        f"moved out); wait for that to end, then 'tandem region failback "
                        f"{region}' before moving environments into it")
    if state == RegionState.HEALTHY or failback or forced:
        return None
    why = ("its environments are coming home" if state == RegionState.FAILING_BACK
           else "it was evacuated by a region failover")
    return ApiError(409, "region_evacuated", f"environment {env!r} cannot move into {region}: "
                    f"the region is {state} ({why}) and takes in only its own environments "
                    f"coming home; 'tandem region failback {region}' makes it healthy again")


def refuse_create(env: str, region: str, state: str) -> ApiError | None:
    """409 when a new environment may not have its home (its primary) in `region`."""
    if state not in (RegionState.FAILING_OVER, *EVACUATED):
        return None
    return ApiError(409, "region_evacuated", f"cannot create environment {env!r} in {region}: "
                    f"the region is {state} and its primaries are being moved out or are "
                    f"out; create it in another region, or after 'tandem region failback "
                    f"{region}'")


def failovers_into(store: Store, records: list[EnvRecord], region: str,
                   kind: str) -> list[str]:
    """Live operations of `kind` (environment failovers) moving an environment into
    `region`: the ids, oldest first. Blocking."""
    found = []
    for record in records:
        op_id = record.operation
        if record.state != EnvState.SWITCHING or not op_id:
            continue
        item = store.get(op_key(op_id))
        op = item.value if item else None
        if (op is not None and op["kind"] == kind and op["state"] in LIVE
                and op["params"]["to"]["region"] == region):
            found.append(op_id)
    return sorted(found)


def refuse_region_failover(region: str, pair: str, pair_state: str, forced: bool,
                           incoming: list[str]) -> ApiError | None:
    """409 when a failover of `region` to `pair` may not start now; else None."""
    if incoming:
        return ApiError(409, "busy", f"region {region}: environment failover(s) into it are "
                        f"running ({', '.join(incoming)}); wait for them to end "
                        f"(tandem ops {incoming[0]}), then fail the region over")
    if pair_state == RegionState.FAILING_OVER or (pair_state in EVACUATED and not forced):
        return ApiError(409, "region_evacuated", f"region {region} cannot fail over to its "
                        f"pair {pair}: {pair} is {pair_state}; 'tandem region failback "
                        f"{pair}' first (or a forced failover, if {region} is lost)")
    return None
