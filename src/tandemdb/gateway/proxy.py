"""Forwarding to nodes and the controller over one shared, pooled HTTP client.

The gateway adds the cluster secret, passes bodies through as bytes (never re-encoded), and
streams file contents both ways. Answers come back unchanged apart from hop-by-hop headers.
Failures are sorted by what they mean for a retry:

- `Unreachable`: the request never left (refused connection, connect timeout, pool full);
  the caller may send it elsewhere.
- anything after the request may have arrived: 503 `unavailable` or 504 `timeout`, never
  retried, because a write may have been applied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import anyio
import httpx
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tandemdb.common.http import SECRET_HEADER, ApiError

log = logging.getLogger("tandem.gateway.proxy")


UPSTREAM_ERRORS = Counter("tandem_gateway_upstream_errors_total",
                          "Forwarded calls that failed before an answer", ["upstream", "kind"])

# Request headers worth passing on; everything else (notably Authorization) stays here.
# Content-Length only goes with a body streamed through as it came; httpx sets it for bytes.
PASS_REQUEST = {b"content-type", b"accept", b"if-none-match", b"x-request-id"}
PASS_STREAMED = PASS_REQUEST | {b"content-length"}
# Answer headers the gateway's own server sets, or that only concern one hop.
DROP_ANSWER = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer",
               b"upgrade", b"proxy-authenticate", b"server", b"date"}
# A buffered body is decoded by httpx, so its original length and encoding no longer apply.
DROP_BUFFERED = DROP_ANSWER | {b"content-length", b"content-encoding"}

CONCURRENCY_PER_UPSTREAM = 64


class Unreachable(Exception):
    """The upstream could not be reached; the request was not sent, so it may be retried."""


class Proxy:
    """One `httpx.AsyncClient` for every forward: keep-alive connections, pooled per upstream."""

    def __init__(self, secret: str, upstreams: int, read_timeout: float = 60.0) -> None:
        keepalive = CONCURRENCY_PER_UPSTREAM * max(1, upstreams)
        self.secret = secret
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=2 * keepalive,
                                max_keepalive_connections=keepalive, keepalive_expiry=30.0),
            timeout=httpx.Timeout(read_timeout, connect=2.0, pool=5.0),
            follow_redirects=False)

    async def close(self) -> None:
        await self.http.aclose()

    def headers_from(self, request: Request,
                     streamed: bool = False) -> list[tuple[bytes, bytes]]:
        """The client's headers worth forwarding, plus the cluster secret."""
        passed = PASS_STREAMED if streamed else PASS_REQUEST
        headers = [(k, v) for k, v in request.headers.raw if k.lower() in passed]
        headers.append((SECRET_HEADER.encode(), self.secret.encode()))
        return headers

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]],
                   content: bytes | AsyncIterator[bytes] | None = None, *,
                   stream: bool = False, upstream: str = "node") -> httpx.Response:
        """Send one request; with `stream`, the caller must close the answer (or stream it)."""
        request = self.http.build_request(method, url, headers=headers, content=content)
        try:
            return await self.http.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            UPSTREAM_ERRORS.labels(upstream, "unreachable").inc()
            raise Unreachable(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        except httpx.TimeoutException as exc:
            UPSTREAM_ERRORS.labels(upstream, "timeout").inc()
            raise ApiError(504, "timeout",
                           f"{upstream} did not answer in time ({type(exc).__name__}); "
                           "a write may or may not have been applied") from exc
        except httpx.TransportError as exc:
            UPSTREAM_ERRORS.labels(upstream, "broken").inc()
            raise ApiError(503, "unavailable",
                           f"connection to {upstream} failed mid-request "
                           f"({type(exc).__name__}: {exc or 'no detail'}); retry shortly",
                           {"Retry-After": "1"}) from exc


def buffered(answer: httpx.Response) -> Response:
    """An upstream answer already read in full, passed back byte for byte."""
    body = answer.content
    response = Response(body, status_code=answer.status_code)
    response.raw_headers = [(k, v) for k, v in answer.headers.raw
                            if k.lower() not in DROP_BUFFERED]
    response.raw_headers.append((b"content-length", str(len(body)).encode()))
    return response


def streamed(answer: httpx.Response) -> StreamingResponse:
    """An upstream answer opened with `stream=True`, streamed back as it arrives."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):  # give the connection back even on cancel
                await answer.aclose()

    response = StreamingResponse(body(), status_code=answer.status_code)
    response.raw_headers = [(k, v) for k, v in answer.headers.raw
                            if k.lower() not in DROP_ANSWER]
    return response


def error_code(answer: httpx.Response) -> str:
    """The `error.code` of a buffered error answer, or '' when it has none."""
    try:
        return str(json.loads(answer.content)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
