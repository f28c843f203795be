"""Prometheus metrics shared by every process: request counts and latencies, `/metrics`."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

REQUESTS = Counter("tandem_http_requests_total", "HTTP requests served",
                   ["route", "method", "status"])
LATENCY = Histogram("tandem_http_request_seconds", "HTTP request latency", ["route", "method"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30))


def install_metrics(app: FastAPI) -> None:
    """Count every request by route template (not raw path: env names would explode labels)."""

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        REQUESTS.labels(template, request.method, str(response.status_code)).inc()
        LATENCY.labels(template, request.method).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
