"""Outage detection: declare a region down, and force its primaries over to the pair.

A region is **down** only when both of these have held for `grace_seconds` (deployment
setting, default 30; `tandem up --grace-seconds off` leaves failover to the operator):

- the controller has had no heartbeat from any node of the region (counted from when it
  started listening, never from before: a restart cannot make a region look down);
- the paired region agrees: every node of the pair is heard from, and every stream it runs
  from a node of the region has been failing that long (none is healthy).

Requiring the pair keeps a controller that is itself cut off from declaring a healthy
region down: if it cannot hear the pair either, it does nothing. Then, once per outage (the
region must be `healthy`, with production primaries in it), it starts `region.failover`
with mode `forced` (docs/failover.md); the forced steps wait out the old primaries' leases.
"""

from __future__ import annotations

import asyncio
import logging

from tandemdb.common.deployment import Deployment
from tandemdb.common.http import ApiError

from .catalog import Catalog, EnvType
from .operations import Operations
from .regions import REGION_FAILOVER, Regions
from .status import LiveStatus
from .topology import Topology

log = logging.getLogger("tandem.controller.outage")


class OutageWatch:
    def __init__(self, deployment: Deployment, topology: Topology, catalog: Catalog,
                 status: LiveStatus, regions: Regions, operations: Operations) -> None:
        self.deployment, self.topology, self.catalog = deployment, topology, catalog
        self.status, self.regions, self.operations = status, regions, operations

    def lost_by_pair(self, region: str, grace: float) -> str | None:
        """Why the pair agrees the region is lost, or None if it does not (or cannot say)."""
        pair = self.topology.pair_of(region)
        lost_nodes = set(self.topology.nodes_in(region))
        failing = []
        for node in self.topology.nodes_in(pair):
            if not self.topology.healthy(node):
                return None  # the pair cannot vouch: maybe the controller is the one cut off
            for peer, stream in (self.status.peers.get(node) or {}).items():
                if peer not in lost_nodes:
                    continue
                seconds = stream.get("failing_seconds") if isinstance(stream, dict) else None
                if not isinstance(seconds, int | float) or seconds < grace:
                    return None  # a stream from the region still works, or not for long
                failing.append(f"{node} from {peer} for {seconds:.0f} s")
        return ", ".join(failing) if failing else None

    async def check(self) -> None:
        """One look at every region; starts at most one forced failover per down region."""
        grace = self.deployment.grace_seconds
        if grace is None:
            return
        for region in self.topology.region_names():
            silent = min(self.topology.silent_for(n) for n in self.topology.nodes_in(region))
            if silent < grace:
                continue
            streams = self.lost_by_pair(region, grace)
            if streams is None:
                continue
            records = await asyncio.to_thread(self.topology.region_records)
            state = next(r["state"] for r in records if r["name"] == region)
            primaries = [r.name for r in await asyncio.to_thread(self.catalog.list)
                         if r.primary_region == region and r.type == EnvType.PRODUCTION]
            if state != "healthy" or not primaries:
                continue
            try:
                op = await asyncio.to_thread(self.regions.start, region, REGION_FAILOVER,
                                             {"mode": "forced"})
            except ApiError as exc:
                log.warning("region %s looks down but its failover cannot start: %s", region,
                            exc.message)
                continue
            log.warning("region %s declared down: no heartbeat from its nodes for %.0f s and "
                        "its pair's streams failing (%s), both over grace_seconds %g; forced "
                        "failover of %d environment(s) to %s (%s)", region, silent, streams,
                        grace, len(primaries), self.topology.pair_of(region), op.id)
            self.operations.launch(op.id)
