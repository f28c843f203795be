"""Creating and deleting environments, as operations (docs/operations.md).

`environment.create` steps:

1. `record`: validate, place the replicas, store the catalog record as `creating`. Done in
   the store transaction that records the operation, so a refused name leaves nothing.
2. `create-primary`, then one step per secondary (`create-secondary`, or
   `create-secondary-<node>` when there are two: the local one on another node of the home
   region when it has 2+ nodes, docs/ha.md; the geo one in the pair, production only): PUT
   the replica on its node. A node that cannot be reached does not fail the step: its
   heartbeat answer lists the replica, so the node creates it when it is back.
3. `activate`: mark the record `active` and emit `environment.created`, in one transaction.

`environment.delete` steps: `mark-deleting` (heartbeat answers leave the environment out
from then on; done in the transaction that records the operation), `drop-primary` and
`drop-secondary` (ask each node to drop its replica; an unreachable node drops it when its
heartbeat answer no longer lists it), `remove-record` (remove it and emit
`environment.deleted`, in one transaction).

Every step is idempotent, so a controller restart resumes the operation where it stopped
(invariant 7). `recover()` finishes records left `creating` or `deleting` with no live
operation (written by a controller from before operations, or by hand): `creating` becomes
`active` (heartbeats create what is missing), `deleting` is removed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from typing import Any

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Kind as ReplicaKind
from tandemdb.common.roles import Role

from .catalog import (
    Catalog,
    CreateRequest,
    EnvRecord,
    EnvState,
    EnvType,
    ReplicaRef,
    loaded,
    new_record,
    not_found,
    parse_create,
    record_key,
    stage,
)
from .events import Events, EventType
from .nodes import NodeClient
from .operations import Draft, Kind, Operation, Operations, OpState, Outcome, StepFailed, Steps
from .reconcile import Reconciler
from .region_rules import read_region, refuse_create, region_key
from .status import LiveStatus
from .store import Txn
from .topology import Topology

log = logging.getLogger("tandem.controller.environments")

CREATE = "environment.create"
DELETE = "environment.delete"
OPERATION_HEADER = "X-Tandem-Operation"


def replica_steps(verb: str, replicas: list[dict]) -> list[tuple[str, ReplicaRef]]:
    """`(step name, replica)` for each replica (as an operation's parameters list them),
    primary first: `create-primary`, …"""
    ordered = sorted(map(ReplicaRef.from_json, replicas), key=lambda r: r.role != Role.PRIMARY)
    roles = [r.role for r in ordered]
    return [(f"{verb}-{r.role}" if roles.count(r.role) == 1
             else f"{verb}-{r.role}-{r.node}", r) for r in ordered]


def deleted_meanwhile(name: str) -> StepFailed:
    return StepFailed("deleted", f"environment {name!r} was deleted while it was being "
                                 "created")


class Environments:
    def __init__(self, catalog: Catalog, topology: Topology, status: LiveStatus,
                 reconciler: Reconciler, nodes: NodeClient, operations: Operations,
                 events: Events) -> None:
        self.catalog, self.topology, self.status = catalog, topology, status
        self.reconciler, self.nodes = reconciler, nodes
        self.operations, self.events = operations, events
        self.store = catalog.store
        operations.register(Kind(CREATE, self.create_steps))
        operations.register(Kind(DELETE, self.delete_steps))

    def create_steps(self, params: dict) -> Steps:
        """`record`, one step per replica (`create-primary`, …), `activate`."""
        return {"record": self._record_step,
                **{name: functools.partial(self._create_replica, replica=replica)
                   for name, replica in replica_steps("create", params["replicas"])},
                "activate": self._activate}

    def delete_steps(self, params: dict) -> Steps:
        """`mark-deleting`, one step per replica (`drop-primary`, …), `remove-record`."""
        return {"mark-deleting": self._mark_deleting,
                **{name: functools.partial(self._drop_replica, replica=replica)
                   for name, replica in replica_steps("drop", params["replicas"])},
                "remove-record": self._remove_record}

    # -- views ---------------------------------------------------------------------------

    def view(self, name: str) -> dict:
        record = self.catalog.get(name)
        if record is None:
            raise not_found(name)
        return self.status.view(record)

    def views(self) -> list[dict]:
        return [self.status.view(record) for record in self.catalog.list()]

    # -- create --------------------------------------------------------------------------

    async def create(self, body: Any) -> tuple[dict, str]:
        """Run `environment.create` to its end; the view and the operation's id."""
        try:
            request = parse_create(body, self.topology.region_names())
        except ApiError as exc:
            log.info("refused to create an environment: %s", exc.message)
            raise
        name = request.name
        placed = await asyncio.to_thread(self._place, request)
        replicas = [replica for replica, _ in placed]
        detail = (f"environment {name} (epoch 1): recorded as creating, {request.type.value}, "
                  + "; ".join(f"{r.role} on {r.node} in {r.region} ({why})"
                              for r, why in placed))

        def build(txn: Txn, op_id: str) -> Draft:
            if self.catalog.get(name) is not None:
                raise ApiError(409, "exists", f"environment {name!r} exists already: pick "
                                              "another name, or delete it first")
            # Docs/failover.md#what-may-move-where: no new primary in an evacuated region;
            # checked on the region's record version, so a region failover that starts
            # meanwhile makes this commit fail and read again.
            region, state = read_region(self.store, request.region)
            refusal = refuse_create(name, request.region, state)
            if refusal is not None:
                raise refusal
            txn.expect(region_key(request.region), region.version if region else None)
            stage(txn, new_record(request, replicas, op_id), None)
            params = {"name": name, "type": request.type.value, "region": request.region,
                      "rpo_limit_seconds": request.rpo_limit_seconds,
                      "replicas": [r.to_json() for r in replicas]}
            return Draft(params, {"record": detail})

        try:
            op = await asyncio.to_thread(self.operations.create, CREATE, name, build)
        except ApiError as exc:
            log.info("environment %s: refused to create it, %s", name,
                     "it exists already" if exc.code == "exists" else exc.message)
            raise
        final = await self.operations.finish(op.id)
        if final.state != OpState.SUCCEEDED:
            raise self._error(final)
        record = await asyncio.to_thread(self.catalog.get, name)
        if record is None or record.operation != op.id:
            raise ApiError(409, "deleted", f"environment {name!r} was deleted right after "
                                           f"it was created (operation {op.id})")
        return self.status.view(record), op.id

    async def _created(self, op: Operation) -> tuple[EnvRecord, int]:
        """The record this operation creates; StepFailed if it was deleted meanwhile."""
        read = await asyncio.to_thread(self.catalog.read, op.target)
        if read is None or read[0].operation != op.id:
            raise deleted_meanwhile(op.target)  # gone, or removed and made again by another
        return loaded(read[0]), read[1]

    async def _record_step(self, op: Operation) -> Outcome:
        """Done with the operation's record; seen again only on resume."""
        record, _ = await self._created(op)
        return Outcome(f"environment {op.target} (epoch {record.epoch}): recorded as creating")

    async def _create_replica(self, op: Operation, replica: ReplicaRef) -> Outcome:
        record, version = await self._created(op)
        confirmed = list((op.result or {}).get("replicas_confirmed", []))
        node, ok, detail = await self._put_replica(record, version, replica)
        if ok and node not in confirmed:
            confirmed.append(node)
        return Outcome(detail, result={"replicas_confirmed": confirmed}, warn=not ok)

    async def _activate(self, op: Operation) -> Outcome:
        name = op.target
        record, version = await self._created(op)
        confirmed = list((op.result or {}).get("replicas_confirmed", []))
        total = len(record.replicas)
        missing = "" if len(confirmed) == total else ", heartbeats will create the others"
        detail = (f"environment {name} (epoch {record.epoch}): active; {len(confirmed)} of "
                  f"{total} replicas confirmed by their nodes{missing}")

        def activate(txn: Txn) -> None:
            stage(txn, record.with_(state=EnvState.ACTIVE), version)
            self.events.stage(txn, EventType.ENVIRONMENT_CREATED, environment=name,
                              region=record.primary_region, operation=op.id,
                              data={"type": record.type.value,
                                    "home_region": record.home_region, "epoch": record.epoch,
                                    "replicas": [r.to_json() for r in record.replicas]})

        return Outcome(detail, activate, {"environment": name, "replicas": total,
                                          "replicas_confirmed": confirmed})

    async def _put_replica(self, record: EnvRecord, version: int,
                           replica: ReplicaRef) -> tuple[str, bool, str]:
        name, epoch, node = record.name, record.epoch, replica.node
        desired = self.reconciler.desired(record, replica, version)
        outcome = await self.nodes.put_replica(node, self.topology.call_url(node), desired)
        if outcome.ok:
            return node, True, (f"environment {name} (epoch {epoch}): {replica.role} "
                                f"replica put on {node}")
        return node, False, (f"environment {name} (epoch {epoch}): {outcome.problem}; its "
                             f"heartbeat answer will tell it to create the {replica.role} "
                             "replica when it is back")

    def _place(self, request: CreateRequest) -> list[tuple[ReplicaRef, str]]:
        """The replicas of a new environment, each with the reason for its node."""
        counts = self.catalog.replica_counts()
        node, why = self._place_in(request.region, counts,
                                   tiebreak=self.catalog.primary_counts())
        placed = [(ReplicaRef(request.region, node, Role.PRIMARY), f"home region; {why}")]
        if len(self.topology.nodes_in(request.region)) >= 2:
            try:
                local, why = self.topology.place(request.region, counts, exclude=[node])
            except LookupError as exc:  # the others are cordoned: no local secondary
                log.info("environment %s: no local secondary, %s", request.name, exc)
            else:
                sync = self.topology.deployment.sync_commit  # (false: asynchronous)
                placed.append((ReplicaRef(request.region, local, Role.SECONDARY,
                                          ReplicaKind.LOCAL, sync=sync),
                               f"local secondary, {'sync' if sync else 'async'}; {why}"))
        if request.type == EnvType.PRODUCTION:
            pair = self.topology.pair_of(request.region)
            node, why = self._place_in(pair, counts)
            placed.append((ReplicaRef(pair, node, Role.SECONDARY),
                           f"pair of {request.region}; {why}"))
        return placed

    def _place_in(self, region: str, counts: Counter[str],
                  tiebreak: Counter[str] | None = None) -> tuple[str, str]:
        """`Topology.place`, with 409 `no_room` when every node of the region is cordoned."""
        try:
            return self.topology.place(region, counts, tiebreak=tiebreak)
        except LookupError as exc:
            raise ApiError(409, "no_room", f"{exc}; no environment can be created there "
                                           "now") from None

    # -- delete --------------------------------------------------------------------------

    async def delete(self, name: str) -> tuple[dict, str]:
        """Run `environment.delete` to its end; `{"deleted": name}` and the operation's id."""
        def build(txn: Txn, op_id: str) -> Draft:
            read = self.catalog.read(name)
            if read is None:
                raise not_found(name)
            record, version = read
            if record.state == EnvState.SWITCHING:
                raise ApiError(409, "busy", f"environment {name!r} is failing over (operation "
                               f"{record.operation}); delete it once that has ended")
            stage(txn, record.with_(state=EnvState.DELETING, operation=op_id), version)
            detail = (f"environment {name} (epoch {record.epoch}): deleting on request; "
                      "heartbeat answers no longer list it")
            return Draft({"name": name, "epoch": record.epoch,
                          "replicas": [r.to_json() for r in record.replicas]},
                         {"mark-deleting": detail})

        op = await asyncio.to_thread(self.operations.create, DELETE, name, build)
        final = await self.operations.finish(op.id)
        if final.state != OpState.SUCCEEDED:
            raise self._error(final)
        return {"deleted": name}, op.id

    async def _mark_deleting(self, op: Operation) -> Outcome:
        """Done with the operation's record; seen again only on resume."""
        return Outcome(f"environment {op.target} (epoch {op.params['epoch']}): deleting on "
                       "request")

    async def _remove_record(self, op: Operation) -> Outcome:
        name, epoch = op.target, op.params["epoch"]
        read = await asyncio.to_thread(self.catalog.read, name)
        if read is None or read[0].state != EnvState.DELETING:
            # Another deletion removed it first (and emitted the event), maybe a new
            # environment of that name exists since: either way, nothing left to remove.
            return Outcome(f"environment {name} (epoch {epoch}): record already removed by "
                           "another deletion; nothing left to do")
        record, version = read

        def remove(txn: Txn) -> None:
            self._stage_removal(txn, record, version, op.id)

        return Outcome(f"environment {name} (epoch {epoch}): deleted, record removed", remove,
                       {"environment": name, "replicas": len(op.params["replicas"])})

    async def _drop_replica(self, op: Operation, replica: ReplicaRef) -> Outcome:
        name, epoch, node = op.target, op.params["epoch"], replica.node
        outcome = await self.nodes.delete_replica(node, self.topology.call_url(node), name)
        if outcome.ok:
            return Outcome(f"environment {name} (epoch {epoch}): {replica.role} replica "
                           f"dropped on {node}")
        return Outcome(f"environment {name} (epoch {epoch}): {outcome.problem}; the node drops "
                       f"its {replica.role} replica when its heartbeat answer no longer "
                       "lists it", warn=True)

    def _stage_removal(self, txn: Txn, record: EnvRecord, version: int,
                       op_id: str | None) -> None:
        name = record.name
        txn.expect(record_key(name), version).delete(record_key(name))
        self.events.stage(txn, EventType.ENVIRONMENT_DELETED, environment=name,
                          region=record.primary_region, operation=op_id,
                          data={"type": record.type.value, "epoch": record.epoch})

    @staticmethod
    def _error(op: Operation) -> ApiError:
        if op.state != OpState.FAILED:
            return ApiError(503, "interrupted", f"operation {op.id} stopped before its end and "
                                               "resumes when the controller starts again; "
                                               f"follow it with GET /v1/operations/{op.id}")
        error = op.error or {"code": "failed", "message": "the operation failed"}
        status = 409 if error["code"] == "deleted" else 500
        return ApiError(status, error["code"], f"{error['message']} (operation {op.id})")

    # -- start-up ------------------------------------------------------------------------

    def recover(self, live: set[str]) -> None:
        """Finish records left `creating` or `deleting` that no live operation will finish."""
        for record, version in self.catalog.stored():
            name, epoch = record.name, record.epoch
            if record.operation in live:
                continue
            if record.state == EnvState.CREATING:
                self.catalog.set_state(name, EnvState.ACTIVE)
                log.info("environment %s (epoch %s): marked active; a previous run stopped "
                         "while creating it, heartbeats will create any missing replica",
                         name, epoch)
            elif record.state == EnvState.DELETING:
                done = self.events.transact(functools.partial(
                    self._stage_removal, record=record, version=version, op_id=None))
                if done is not None:
                    log.info("environment %s (epoch %s): record removed; a previous run "
                             "stopped while deleting it, heartbeats will drop any replica "
                             "left", name, epoch)
