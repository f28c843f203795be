"""`POST /v1/environments/{env}/replicas/{region}/reseed`: copy a secondary afresh.

What ends a halted stream (halts.py): the node of the environment's secondary in `region`
drops that replica's data for a fresh snapshot of its primary, then streams on from the
snapshot's lsn. It answers 202 at once; the environment's answer shows the replica
`seeding`, then `streaming`, and `replication.resumed` tells that the halt ended. Any
secondary may be re-seeded (it is only a copy); a primary may not, it is the source. In a
region with two replicas of the environment (a local secondary), the halted secondary is
the one re-seeded.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from tandemdb.common.http import ApiError, check_secret, read_json
from tandemdb.common.roles import Role

from .catalog import EnvRecord, EnvState, ReplicaRef, not_found

if TYPE_CHECKING:
    from .app import Controller


def _chosen(ctl: Controller, record: EnvRecord, region: str) -> ReplicaRef | None:
    """The replica of `region` to re-seed: with local HA (docs/ha.md) a region may hold two
    replicas of one environment, so a secondary whose stream is halted comes first, then
    any secondary, then whatever is there (refused below)."""
    here = [r for r in record.replicas if r.region == region]
    secondaries = [r for r in here if r.role == Role.SECONDARY]
    halted = [r for r in secondaries
              if (ctl.status.report(r.node, record.name) or {}).get("halted")]
    return next(iter(halted + secondaries + here), None)


async def reseed(ctl: Controller, env: str, region: str) -> dict:
    """Ask the node of `env`'s secondary in `region` to re-seed it; what the node says."""
    record = await asyncio.to_thread(ctl.catalog.get, env)
    if record is None:
        raise not_found(env)
    replica = _chosen(ctl, record, region)
    if replica is None:
        where = ", ".join(f"{r.role} in {r.region}" for r in record.replicas)
        raise ApiError(404, "no_replica", f"environment {env} has no replica in region "
                       f"{region!r} (it has: {where}); name the region of its secondary")
    if record.state != EnvState.ACTIVE:
        raise ApiError(409, "busy", f"environment {env} is {record.state}; re-seed it once "
                       "it is active again", {"Retry-After": "1"})
    if replica.role != Role.SECONDARY:
        raise ApiError(409, "not_secondary", f"the replica of {env} in {region} is the "
                       f"{replica.role}: only a secondary is re-seeded, from a snapshot of "
                       "the primary")
    node = replica.node
    reply = await ctl.nodes.replica_call(node, ctl.topology.call_url(node), env, "reseed", {})
    if reply.status == 0:
        raise ApiError(409, "node_unreachable", f"{reply.problem}; retry once node {node} "
                       "is back", {"Retry-After": "1"})
    if not reply.ok:
        status = reply.status if 400 <= reply.status < 500 else 409
        raise ApiError(status, reply.code or "node_refused", reply.problem or "refused")
    return {"environment": env, "region": region, "node": node,
            "reseed_started": reply.body.get("reseed_started"),
            "seeding": reply.body.get("seeding"),
            "message": f"re-seeding {env} in {region} ({node}) from a snapshot of its "
                       "primary; the environment's answer shows it seeding, then streaming"}


def install_routes(app: FastAPI, ctl: Controller) -> None:
    def require_secret(request: Request) -> None:
        check_secret(request, ctl.deployment.secret)

    router = APIRouter(dependencies=[Depends(require_secret)])

    @router.post("/v1/environments/{env}/replicas/{region}/reseed")
    async def reseed_replica(env: str, region: str, request: Request) -> JSONResponse:
        body = await read_json(request, allow_empty=True)
        if body not in (None, {}):
            raise ApiError(400, "bad_request", "a re-seed takes no body (or {}): the path "
                           "names the environment and the region of its secondary")
        return JSONResponse(await reseed(ctl, env, region), status_code=202)

    app.include_router(router)
