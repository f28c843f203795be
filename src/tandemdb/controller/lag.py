"""`replication.lag_exceeded` events: the RPO guard, as tenants hear of it.

A primary's heartbeat report carries each secondary's lag in seconds. When that lag passes
the environment's `rpo_limit_seconds` the primary refuses writes (its own RPO guard); the
controller sees the same numbers and tells tenants once per episode: `replication.lag_exceeded`
when the lag first passes the limit, `replication.lag_recovered` when it is back under it.
Which episodes are open is kept in memory, so a controller restart during one may tell of
it again (events are at least once, like webhooks).

The same reports carry the secondaries' halted streams, told of by `halts.HaltWatch`.
"""

from __future__ import annotations

import asyncio
import logging

from .events import Events, EventType
from .halts import HaltWatch
from .topology import Topology

log = logging.getLogger("tandem.controller.lag")


class LagWatch:
    def __init__(self, topology: Topology, events: Events) -> None:
        self.topology, self.events = topology, events
        self.exceeded: set[tuple[str, str]] = set()  # (environment, secondary node)
        self.halts = HaltWatch(topology, events)

    async def observe(self, node: str, replicas: dict[str, dict],
                      desired: list[dict]) -> None:
        """Compare a node's report with the limits in its desired replicas; emit an event
        on every crossing, and on every halt of a stream and its end."""
        await self.halts.observe(node, replicas)
        limits = {d["env"]: d["rpo_limit_seconds"] for d in desired if d["role"] == "primary"}
        for env, report in replicas.items():
            limit = limits.get(env)
            if limit is None or report.get("role") != "primary":
                continue
            for secondary, seen in (report.get("consumers") or {}).items():
                lag = seen.get("lag_seconds") if isinstance(seen, dict) else None
                if not isinstance(lag, int | float):
                    continue
                key = (env, secondary)
                if lag > limit and key not in self.exceeded:
                    self.exceeded.add(key)
                    await self._emit(EventType.REPLICATION_LAG_EXCEEDED, env, node, secondary,
                                     lag, limit, seen.get("lag_entries"))
                elif lag <= limit and key in self.exceeded:
                    self.exceeded.discard(key)
                    await self._emit(EventType.REPLICATION_LAG_RECOVERED, env, node, secondary,
                                     lag, limit, seen.get("lag_entries"))

    async def _emit(self, kind: EventType, env: str, node: str, secondary: str, lag: float,
                    limit: float, entries: int | None) -> None:
        exceeded = kind == EventType.REPLICATION_LAG_EXCEEDED
        log.log(logging.WARNING if exceeded else logging.INFO,
                "environment %s: the secondary on %s lags %.1f s behind the primary on %s, %s "
                "the RPO limit of %g s; %s", env, secondary, lag, node,
                "over" if exceeded else "back under", limit,
                "the primary refuses writes until it catches up" if exceeded
                else "writes are accepted again")
        await asyncio.to_thread(
            self.events.emit, kind, environment=env, region=self.topology.region_of(node),
            data={"primary_node": node, "secondary_node": secondary,
                  "secondary_region": self.topology.region_of(secondary),
                  "lag_seconds": round(lag, 3), "lag_entries": entries,
                  "rpo_limit_seconds": limit})
