"""Sync changes a primary asks for: `POST /internal/v1/environments/{env}/sync`.

The catalog's `sync` on a local replica is what a promotion trusts (docs/ha.md, "the sync
rule"): true only while the primary waits for that replica on every write. So only the
primary may change it, only in its own epoch, and a change is recorded with a
compare-and-set on the record, with its event (`replica.sync_lost`,
`replica.sync_restored`) in the same transaction. The primary stops waiting for the replica
only once it has the 200: a refusal (409 `stale`: the environment moved on, another node is
primary) means its acknowledgements are no longer its to give.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Request

from tandemdb.common.http import ApiError, check_secret, read_json
from tandemdb.common.retry import cas_attempts
from tandemdb.common.roles import Kind, Role

from .bodies import SyncChange, documented, parse
from .catalog import Catalog, EnvRecord, EnvState, not_found, record_key, stage
from .events import Events, EventType
from .store import Txn

if TYPE_CHECKING:
    from .app import Controller

log = logging.getLogger("tandem.controller.sync")


class SyncRecords:
    def __init__(self, catalog: Catalog, events: Events) -> None:
        self.catalog, self.events = catalog, events

    def change(self, env: str, body: object) -> dict:
        """Record `sync` on the replica the body names; `{"version", "sync"}`. Blocking."""
        request = parse(SyncChange, body)
        for _ in cas_attempts(f"environment {env}: a sync change"):
            read = self.catalog.read(env)
            if read is None:
                raise not_found(env)
            record, version = read
            check(record, request)
            replica = record.on(request.node)
            assert replica is not None  # (check)
            if replica.sync == request.sync:
                return {"version": version, "sync": replica.sync}
            changed = record.with_replicas(
                lambda r: replace(r, sync=request.sync) if r.node == request.node else r)
            done = self.events.transact(functools.partial(
                self._stage, record=changed, version=version, request=request))
            if done is not None:
                log.info("environment %s (epoch %d): the local replica on %s is recorded "
                         "%s, as its primary on %s asked", env, request.epoch, request.node,
                         "sync" if request.sync else "not sync", request.primary)
                return {"version": done[1][record_key(env)], "sync": request.sync}
        raise AssertionError("unreachable: cas_attempts raises after its last attempt")

    def _stage(self, txn: Txn, record: EnvRecord, version: int, request: SyncChange) -> None:
        stage(txn, record, version)
        kind = EventType.REPLICA_SYNC_RESTORED if request.sync else EventType.REPLICA_SYNC_LOST
        self.events.stage(txn, kind, environment=record.name,
                          region=record.primary_region,
                          data={"node": request.node, "primary_node": request.primary,
                                "epoch": request.epoch, "sync": request.sync})


def check(record: EnvRecord, request: SyncChange) -> None:
    """Refuse (409) a change the caller may not make now: it must be the primary at the
    environment's epoch, and the node a local secondary in its region, the only one sync."""
    name, primary = record.name, record.primary
    if (record.state == EnvState.DELETING or record.epoch != request.epoch
            or primary is None or primary.node != request.primary):
        now = (f"epoch {record.epoch}, primary on "
               f"{primary.node if primary else 'none (a failover holds it)'}")
        raise ApiError(409, "stale", f"environment {name!r}: {request.primary} at epoch "
                       f"{request.epoch} may not change sync: the catalog has {now}"
                       + (", being deleted" if record.state == EnvState.DELETING else ""))
    replica = record.on(request.node)
    if (replica is None or replica.kind != Kind.LOCAL or replica.role != Role.SECONDARY
            or replica.region != primary.region):
        raise ApiError(409, "not_local", f"environment {name!r}: {request.node} holds no "
                       f"local secondary in {primary.region}, the primary's region; only "
                       "one may be sync")
    if request.sync and any(r.sync for r in record.replicas if r.node != request.node):
        raise ApiError(409, "sync_taken", f"environment {name!r}: another replica is "
                       "recorded sync; at most one is")


def install_routes(app: FastAPI, ctl: Controller) -> None:
    def require_secret(request: Request) -> None:
        check_secret(request, ctl.deployment.secret)

    router = APIRouter(dependencies=[Depends(require_secret)])

    @router.post("/internal/v1/environments/{env}/sync", openapi_extra=documented(SyncChange))
    async def sync(env: str, request: Request) -> dict:
        body = await read_json(request)
        return await asyncio.to_thread(ctl.sync.change, env, body)

    app.include_router(router)
