"""Creating and deleting environments: the catalog record plus the admin calls to nodes.

Create: validate, place the replicas, store the record as `creating`, put the replica on
the primary's node then on each secondary's node, mark it `active`. A node that cannot be
reached does not fail the request: its heartbeat answer lists the replica, so the node
creates it when it is back. Delete: mark `deleting` (heartbeat answers leave it out from
then on), ask each node to drop its replica, remove the record.

If the controller dies half-way, `recover()` finishes the job at the next start: a record
left `creating` becomes `active` (heartbeats create what is missing) and one left
`deleting` is removed (heartbeats drop what is left).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tandemdb.common.http import ApiError

from .catalog import (
    Catalog,
    CreateRequest,
    EnvState,
    EnvType,
    Role,
    new_record,
    not_found,
    parse_create,
)
from .nodes import NodeClient
from .reconcile import Reconciler
from .status import LiveStatus
from .topology import Topology

log = logging.getLogger("tandem.controller.environments")


class Environments:
    def __init__(self, catalog: Catalog, topology: Topology, status: LiveStatus,
                 reconciler: Reconciler, nodes: NodeClient) -> None:
        self.catalog, self.topology, self.status = catalog, topology, status
        self.reconciler, self.nodes = reconciler, nodes

    def recover(self) -> None:
        """Finish creations and deletions a previous run left half-done."""
        for record in self.catalog.list():
            name, epoch = record["name"], record["epoch"]
            if record["state"] == EnvState.CREATING:
                self.catalog.set_state(name, EnvState.ACTIVE)
                log.info("environment %s (epoch %s): marked active; a previous run stopped "
                         "while creating it, heartbeats will create any missing replica",
                         name, epoch)
            elif record["state"] == EnvState.DELETING:
                self.catalog.remove(name)
                log.info("environment %s (epoch %s): record removed; a previous run stopped "
                         "while deleting it, heartbeats will drop any replica left", name, epoch)

    def view(self, name: str) -> dict:
        record = self.catalog.get(name)
        if record is None:
            raise not_found(name)
        return self.status.view(record)

    def views(self) -> list[dict]:
        return [self.status.view(record) for record in self.catalog.list()]

    async def create(self, body: Any) -> dict:
        try:
            request = parse_create(body, self.topology.region_names())
        except ApiError as exc:
            log.info("refused to create an environment: %s", exc.message)
            raise
        placed = await asyncio.to_thread(self._place, request)
        record = new_record(request, [replica for replica, _ in placed])
        name = request.name
        if not await asyncio.to_thread(self.catalog.insert, record):
            log.info("environment %s: refused to create it, it exists already", name)
            raise ApiError(409, "exists", f"environment {name!r} exists already: pick another "
                                          "name, or delete it first")
        log.info("environment %s (epoch 1): recorded as creating, %s, %s", name,
                 request.type.value, "; ".join(
                     f"{r['role']} on {r['node']} in {r['region']} ({why})" for r, why in placed))
        confirmed = await self._put_replicas(record)
        final = await asyncio.to_thread(self.catalog.set_state, name, EnvState.ACTIVE)
        if final is None:
            raise ApiError(409, "deleted", f"environment {name!r} was deleted while it was "
                                           "being created")
        log.info("environment %s (epoch %s): active; %d of %d replicas confirmed by their "
                 "nodes%s", name, final["epoch"], confirmed, len(record["replicas"]),
                 "" if confirmed == len(record["replicas"])
                 else ", heartbeats will create the others")
        return self.status.view(final)

    async def delete(self, name: str) -> dict:
        record = await asyncio.to_thread(self.catalog.set_state, name, EnvState.DELETING)
        if record is None:
            raise not_found(name)
        epoch = record["epoch"]
        log.info("environment %s (epoch %s): deleting on request; heartbeat answers no longer "
                 "list it", name, epoch)
        for replica in record["replicas"]:
            outcome = await self.nodes.delete_replica(
                replica["node"], self.topology.node_url(replica["node"]), name)
            if outcome.ok:
                log.info("environment %s (epoch %s): %s replica dropped on %s", name, epoch,
                         replica["role"], replica["node"])
            else:
                log.warning("environment %s (epoch %s): %s; the node drops its %s replica when "
                            "its heartbeat answer no longer lists it", name, epoch,
                            outcome.problem, replica["role"])
        await asyncio.to_thread(self.catalog.remove, name)
        log.info("environment %s (epoch %s): deleted, record removed", name, epoch)
        return {"deleted": name}

    def _place(self, request: CreateRequest) -> list[tuple[dict, str]]:
        """The replicas of a new environment, each with the reason for its node."""
        counts = self.catalog.replica_counts()
        node, why = self.topology.place(request.region, counts)
        placed = [({"region": request.region, "node": node, "role": Role.PRIMARY.value},
                   f"home region; {why}")]
        if request.type == EnvType.PRODUCTION:
            pair = self.topology.pair_of(request.region)
            node, why = self.topology.place(pair, counts)
            placed.append(({"region": pair, "node": node, "role": Role.SECONDARY.value},
                           f"pair of {request.region}; {why}"))
        return placed

    async def _put_replicas(self, record: dict) -> int:
        """PUT each replica on its node, primary first; returns how many nodes confirmed."""
        name, epoch, confirmed = record["name"], record["epoch"], 0
        ordered = sorted(record["replicas"], key=lambda r: r["role"] != Role.PRIMARY)
        for replica in ordered:
            node = replica["node"]
            desired = self.reconciler.desired(record, replica)
            outcome = await self.nodes.put_replica(node, self.topology.node_url(node), desired)
            if outcome.ok:
                confirmed += 1
                log.info("environment %s (epoch %s): %s replica put on %s", name, epoch,
                         replica["role"], node)
            else:
                log.warning("environment %s (epoch %s): %s; its heartbeat answer will tell it "
                            "to create the %s replica when it is back", name, epoch,
                            outcome.problem, replica["role"])
        return confirmed
