"""The node process: its HTTP app, its background loops, and `main`.

`python -m tandemdb.node --config FILE` (or `--data DIR --name NODE`) serves on the node's
own host and port: the data API, the admin API, the replication stream, blobs,
snapshots, `/healthz` and `/metrics`. Every other path needs the cluster secret; `/metrics`
takes the admin token or the secret (`tandemdb.common.metrics`).
Replicas live in `DIR/nodes/NODE/envs/<env>/`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tandemdb.common import process
from tandemdb.common.deployment import Deployment
from tandemdb.common.http import (
    ApiError,
    BodyLimit,
    check_secret,
    error_response,
    install_error_handlers,
)
from tandemdb.common.metrics import RequestMetrics, install_metrics_endpoint

from . import admin, dataapi, fencing, stream
from . import metrics as node_metrics
from .gate import WriteGate
from .heartbeat import Heartbeat
from .lease import Lease
from .puller import Puller
from .replicas import ReplicaSet
from .stream import Upkeep
from .syncrule import SYNC_BOUND, SyncRule

log = logging.getLogger("tandem.node")

OPEN_PATHS = frozenset({"/healthz", "/metrics"})  # /metrics checks credentials itself


class Node:
    """One node: its replicas and the loops that keep them replicated and reported."""

    def __init__(self, deployment: Deployment, name: str) -> None:
        if name not in deployment.nodes:
            raise ValueError(f"no node {name!r} in the deployment (nodes: "
                             f"{', '.join(sorted(deployment.nodes))})")
        self.deployment, self.name = deployment, name
        self.region: str = deployment.nodes[name]["region"]
        self.host, self.port = deployment.address(name)
        self.url = deployment.node_url(name)
        self.dir = Path(deployment.data) / "nodes" / name
        self.lease = Lease(deployment.lease_ttl)  # renewed by heartbeats (docs/leases.md)
        self.replicas = ReplicaSet(self.dir, name, self.region)
        timeout = deployment.sync_timeout  # (bounded where deployment.json is read)
        controllers = deployment.controller_links(name)  # as heartbeats reach them
        self.sync = SyncRule(name, self.region, controllers, deployment.secret, timeout,
                             max(SYNC_BOUND, 2 * timeout), regain=deployment.sync_commit)
        self.gate = WriteGate(self.region, self.lease, self.sync)  # who may write, and how
        self._tasks: list[asyncio.Task] = []
        self.puller: Puller | None = None
        self.heartbeat: Heartbeat | None = None

    async def start(self) -> None:
        await self.replicas.load()
        self.puller = Puller(self)  # it listens for replica changes from here on
        self.puller.refresh()
        self.heartbeat = Heartbeat(self)
        self._tasks = [asyncio.create_task(self.heartbeat.run(), name="heartbeat"),
                       asyncio.create_task(Upkeep(self.replicas).run(), name="upkeep")]
        log.info("node %s (region %s) serving %d replicas at %s", self.name, self.region,
                 len(self.replicas), self.url)
        self._log_lease_setting()

    def _log_lease_setting(self) -> None:
        lease, interval = self.lease, self.deployment.heartbeat_interval
        if not lease.required:
            log.warning("LEASES ARE OFF (lease_ttl = 0 in deployment.json): primaries on "
                        "%s take writes without a lease from the controller, so nothing "
                        "keeps an old primary from writing after a failover. This setting "
                        "is only for node tests that run without a controller.", self.name)
        elif lease.ttl - lease.margin < 2 * interval:
            log.warning("lease_ttl %g s leaves %g s after the safety margin, under two "
                        "heartbeat intervals (%g s each): one slow heartbeat will stop "
                        "writes on primaries; raise lease_ttl", lease.ttl,
                        lease.ttl - lease.margin, interval)
        else:
            log.info("primaries write under a lease of %g s (safety margin %g s), renewed "
                     "every %g s by heartbeats; none until the controller first answers",
                     lease.ttl, lease.margin, interval)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.puller is not None:
            await self.puller.close()
        if self.heartbeat is not None:
            await self.heartbeat.close()
        await self.sync.close()
        await self.replicas.close()


class SecretGate:
    """ASGI middleware: every path but /healthz and /metrics needs the cluster secret
    (/metrics checks it, or the admin token, itself)."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app, self.secret = app, secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            try:
                check_secret(Request(scope), self.secret)
            except ApiError as exc:
                await error_response(exc.status, exc.code, exc.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(node: Node) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await node.start()
        try:
            yield
        finally:
            await node.stop()

    app = FastAPI(title=f"tandem node {node.name}", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request, _exc: ClientDisconnect) -> JSONResponse:
        # The peer went away mid-request (e.g. a node killed while it long-polls): there is
        # no one to answer, and nothing to log as a crash.
        return error_response(400, "client_disconnected", "the client went away")

    install_metrics_endpoint(app, node.deployment.token, node.deployment.secret)
    node_metrics.install(node.replicas, node.lease)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ok": True, "component": "node", "name": node.name,
                             "region": node.region})

    dataapi.install(app, node)
    admin.install(app, node)
    fencing.install(app, node)
    stream.install(app, node)
    gated = SecretGate(BodyLimit(app, node.deployment.max_body_bytes), node.deployment.secret)
    return RequestMetrics(gated)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tandemdb.node",
                                     description="Run one Tandem node.")
    process.add_arguments(parser)
    args = parser.parse_args(argv)
    deployment, name = process.identify(parser, args, "node")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    node = Node(deployment, name)
    config = uvicorn.Config(build_app(node), host=node.host, port=node.port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
