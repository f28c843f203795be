"""The controller's HTTP routes (docs/architecture.md, "Controller").

Public (forwarded by the gateway): `/v1/regions[/{region}/failover|failback]`,
`/v1/nodes[/{node}/drain|uncordon]`,
`/v1/environments[/{env}[/failover]]`, `/v1/operations[/{id}]`, `/v1/events`,
`/v1/webhooks[/{id}]` (docs/operations.md, docs/failover.md).
Internal: `/internal/v1/heartbeat` from nodes, `/internal/v1/routing` long poll from the
gateway. Everything but `/healthz` needs the cluster secret (`/metrics` also takes the
admin token as a Bearer token, as a Prometheus scrape sends it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from tandemdb.common.http import check_secret, read_json

from .bodies import (
    CreateEnvironment,
    EnvironmentFailover,
    EventsQuery,
    NodeDrain,
    OperationsQuery,
    OperationWait,
    RegionFailback,
    RegionFailover,
    RegisterWebhook,
    RoutingQuery,
    documented,
    parse,
)
from .environments import OPERATION_HEADER
from .failover import parse_request
from .node_list import node_list
from .operations import Operation
from .operations import not_found as operation_not_found
from .regions import REGION_FAILBACK, REGION_FAILOVER
from .status import parse_heartbeat

if TYPE_CHECKING:
    from .app import Controller

log = logging.getLogger("tandem.controller.api")


def install_routes(app: FastAPI, ctl: Controller) -> None:
    def require_secret(request: Request) -> None:
        check_secret(request, ctl.deployment.secret)

    router = APIRouter(dependencies=[Depends(require_secret)])

    @router.get("/v1/regions")
    async def regions() -> dict:
        return {"regions": await asyncio.to_thread(ctl.regions.views)}

    @router.get("/v1/nodes")
    async def nodes() -> dict:
        return {"nodes": await asyncio.to_thread(node_list, ctl.topology, ctl.catalog)}

    async def started(op: Operation) -> JSONResponse:
        """202 with the operation just recorded; it runs on in the background."""
        ctl.operations.launch(op.id)
        return JSONResponse(op.to_dict(), status_code=202, headers={OPERATION_HEADER: op.id})

    @router.post("/v1/nodes/{node}/drain", openapi_extra=documented(NodeDrain))
    async def drain(node: str, request: Request) -> JSONResponse:
        body = await read_json(request, allow_empty=True)
        return await started(await asyncio.to_thread(ctl.drains.start, node, body))

    @router.post("/v1/nodes/{node}/uncordon")
    async def uncordon(node: str) -> dict:
        return await asyncio.to_thread(ctl.drains.uncordon, node)

    @router.post("/v1/regions/{region}/failover", openapi_extra=documented(RegionFailover))
    async def region_failover(region: str, request: Request) -> JSONResponse:
        body = await read_json(request, allow_empty=True)
        return await started(await asyncio.to_thread(ctl.regions.start, region,
                                                     REGION_FAILOVER, body))

    @router.post("/v1/regions/{region}/failback", openapi_extra=documented(RegionFailback))
    async def region_failback(region: str, request: Request) -> JSONResponse:
        body = await read_json(request, allow_empty=True)
        return await started(await asyncio.to_thread(ctl.regions.start, region,
                                                     REGION_FAILBACK, body))

    @router.post("/v1/environments/{env}/failover",
                 openapi_extra=documented(EnvironmentFailover))
    async def failover(env: str, request: Request) -> JSONResponse:
        mode, catch_up, to = parse_request(await read_json(request, allow_empty=True))
        return await started(await asyncio.to_thread(ctl.failovers.start, env, mode, None,
                                                     catch_up, to))

    @router.post("/v1/environments", openapi_extra=documented(CreateEnvironment))
    async def create_environment(request: Request) -> JSONResponse:
        view, op_id = await ctl.environments.create(await read_json(request))
        return JSONResponse(view, status_code=201, headers={OPERATION_HEADER: op_id})

    @router.get("/v1/environments")
    async def list_environments() -> dict:
        return {"environments": await asyncio.to_thread(ctl.environments.views)}

    @router.get("/v1/environments/{env}")
    async def show_environment(env: str) -> dict:
        return await asyncio.to_thread(ctl.environments.view, env)

    @router.delete("/v1/environments/{env}")
    async def delete_environment(env: str) -> JSONResponse:
        answer, op_id = await ctl.environments.delete(env)
        return JSONResponse(answer, headers={OPERATION_HEADER: op_id})

    @router.get("/v1/environments/{env}/lost")
    async def lost_writes(env: str) -> dict:
        return await asyncio.to_thread(ctl.rejoins.lost, env)

    @router.post("/v1/environments/{env}/lost/replay")
    async def replay_lost(env: str) -> dict:
        return await ctl.replayer.replay(env)

    @router.get("/v1/operations", openapi_extra=documented(query=OperationsQuery))
    async def list_operations(request: Request) -> dict:
        query = parse(OperationsQuery, dict(request.query_params))
        return {"operations": await asyncio.to_thread(ctl.operations.recent, query.limit,
                                                      query.parent)}

    @router.get("/v1/operations/{op_id}", openapi_extra=documented(query=OperationWait))
    async def show_operation(op_id: str, request: Request) -> dict:
        wait = parse(OperationWait, dict(request.query_params)).wait
        loop = asyncio.get_running_loop()
        op = await loop.run_in_executor(ctl.watchers, ctl.operations.wait_ended, op_id, wait)
        if op is None:
            raise operation_not_found(op_id)
        return op

    @router.get("/v1/events", openapi_extra=documented(query=EventsQuery))
    async def events(request: Request) -> dict:
        query = parse(EventsQuery, dict(request.query_params))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ctl.watchers, ctl.events.poll, query.after,
                                          query.wait)

    @router.post("/v1/webhooks", openapi_extra=documented(RegisterWebhook))
    async def register_webhook(request: Request) -> JSONResponse:
        hook = await asyncio.to_thread(ctl.webhooks.register, await read_json(request))
        return JSONResponse(hook, status_code=201)

    @router.get("/v1/webhooks")
    async def list_webhooks() -> dict:
        return {"webhooks": await asyncio.to_thread(ctl.webhooks.list)}

    @router.delete("/v1/webhooks/{hook_id}")
    async def delete_webhook(hook_id: str) -> dict:
        return await asyncio.to_thread(ctl.webhooks.remove, hook_id)

    @router.post("/internal/v1/heartbeat")
    async def heartbeat(request: Request) -> dict:
        body = await read_json(request)
        node, url, replicas = parse_heartbeat(body, ctl.deployment.nodes)
        peers = body.get("peers")  # the node's streams: how long each has been failing
        return await ctl.heartbeat(node, url, replicas, peers if isinstance(peers, dict)
                                   else {})

    @router.get("/internal/v1/routing", openapi_extra=documented(query=RoutingQuery))
    async def routing(request: Request) -> dict:
        query = parse(RoutingQuery, dict(request.query_params))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(ctl.watchers, ctl.routing.poll, query.after,
                                          query.wait)

    @router.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict:
        """The API's description, with one schema per body and query (bodies.py)."""
        return app.openapi()

    app.include_router(router)
