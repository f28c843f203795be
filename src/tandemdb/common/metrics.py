"""Prometheus metrics shared by every process: request counts and latencies, `/metrics`.

`/metrics` names environments and their lsns, so it is not for anyone who can reach a port:
it needs the admin token (`Authorization: Bearer …`, how Prometheus scrapes it, see
docs/api.md), or the cluster secret (Tandem's own processes and tests).

The request middleware is plain ASGI: Starlette's BaseHTTPMiddleware cost about 0.6 ms of
CPU per request here (a third of a forwarded call), so it is not used.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandemdb.common.http import SECRET_HEADER, check_secret, check_token

REQUESTS = Counter("tandem_http_requests_total", "HTTP requests served",
                   ["route", "method", "status"])
LATENCY = Histogram("tandem_http_request_seconds", "HTTP request latency", ["route", "method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30))


class RequestMetrics:
    """ASGI middleware: count and time every request by route template (never the raw path:
    environment names would explode the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(template, scope["method"], str(status)).inc()
            LATENCY.labels(template, scope["method"]).observe(time.perf_counter() - start)


def install_metrics_endpoint(app: FastAPI, token: str, secret: str) -> None:
    """`/metrics`, for the admin token (`token`) or the cluster secret; 401 without."""
    @app.get("/metrics", include_in_schema=False)
    async def _metrics(request: Request) -> Response:
        if SECRET_HEADER in request.headers:
            check_secret(request, secret)
        else:
            check_token(request, token)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, token: str, secret: str) -> None:
    """`/metrics` plus request metrics; add it last so it is the outermost middleware."""
    install_metrics_endpoint(app, token, secret)
    app.add_middleware(RequestMetrics)
