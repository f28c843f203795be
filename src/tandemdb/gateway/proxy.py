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

import aiohttp
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tandemdb.common.http import SECRET_HEADER, ApiError

log = logging.getLogger("tandem.gateway.proxy")


UPSTREAM_ERRORS = Counter("tandem_gateway_upstream_errors_total",
                          "Forwarded calls that failed before an answer", ["upstream", "kind"])

# Request headers worth passing on; everything else (notably Authorization) stays here.
# Content-Length only goes with a body streamed through as it came.
PASS_REQUEST = {b"content-type", b"accept", b"if-none-match", b"x-request-id"}
PASS_STREAMED = PASS_REQUEST | {b"content-length"}
# Answer headers the gateway's own server sets, or that only concern one hop.
DROP_ANSWER = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer",
               b"upgrade", b"proxy-authenticate", b"server", b"date"}
DROP_BUFFERED = DROP_ANSWER | {b"content-length"}

CONCURRENCY_PER_UPSTREAM = 64
# Below uvicorn's 5 s keep-alive timeout, so the gateway never writes a request onto a
# connection the node is closing (a POST must not be lost to that race).
KEEPALIVE_SECONDS = 2.0


class Unreachable(Exception):
    """The upstream could not be reached; the request was not sent, so it may be retried."""


class Answer:
    """An upstream answer: status, raw headers, and the body read whole or streamed."""

    def __init__(self, response: aiohttp.ClientResponse, content: bytes | None) -> None:
        self.response = response
        self.status_code = response.status
        self.raw_headers = [(k.lower(), v) for k, v in response.raw_headers]
        self.content = content if content is not None else b""

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        async for chunk in self.response.content.iter_any():
            yield chunk

    def close(self) -> None:
        self.response.release()


class Proxy:
    """One aiohttp session for every forward: keep-alive connections, pooled per upstream.

    aiohttp rather than httpx on this hop, for a measured reason: forwarding through httpx's
    pool cost about 4 ms of CPU per request on the development machine (255 forwards/s on
    one core against 4,100/s straight to the node); aiohttp's C parser and connector cost a
    fraction of that. Clients and the CLI keep httpx.
    """

    def __init__(self, secret: str, upstreams: int, read_timeout: float = 60.0) -> None:
        self.secret = secret
        self.upstreams = upstreams
        self.read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=2 * CONCURRENCY_PER_UPSTREAM * max(1, self.upstreams),
                limit_per_host=2 * CONCURRENCY_PER_UPSTREAM,
                keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=2.0,
                                              sock_read=self.read_timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def headers_from(self, request: Request,
                     streamed: bool = False) -> list[tuple[str, str]]:
        """The client's headers worth forwarding, plus the cluster secret."""
        passed = PASS_STREAMED if streamed else PASS_REQUEST
        headers = [(k.decode("latin-1"), v.decode("latin-1"))
                   for k, v in request.headers.raw if k.lower() in passed]
        headers.append((SECRET_HEADER, self.secret))
        return headers

    async def send(self, method: str, url: str, headers: list[tuple[str, str]],
                   content: bytes | AsyncIterator[bytes] | None = None, *,
                   stream: bool = False, upstream: str = "node") -> Answer:
        """Send one request; with `stream`, the caller must stream or close the answer."""
        refused: list[ApiError] = []
        if content is not None and not isinstance(content, bytes):
            content = _remember_refusal(content, refused)
        try:
            return await self._send(method, url, headers, content, stream, upstream)
        except (ApiError, Unreachable):
            # A refusal while reading the client's body (413 over the limit) is the answer,
            # whatever aiohttp made of the broken upload.
            if refused:
                raise refused[0] from None
            raise

    async def _send(self, method: str, url: str, headers: list[tuple[str, str]],
                    content: bytes | AsyncIterator[bytes] | None, stream: bool,
                    upstream: str) -> Answer:
        try:
            response = await self.http.request(method, url, headers=headers, data=content,
                                               allow_redirects=False,
                                               skip_auto_headers=("User-Agent",))
            body = None if stream else await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            UPSTREAM_ERRORS.labels(upstream, "unreachable").inc()
            raise Unreachable(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            UPSTREAM_ERRORS.labels(upstream, "timeout").inc()
            raise ApiError(504, "timeout",
                           f"{upstream} did not answer in time ({type(exc).__name__}); "
                           "a write may or may not have been applied") from exc
        except aiohttp.ClientError as exc:
            UPSTREAM_ERRORS.labels(upstream, "broken").inc()
            raise ApiError(503, "unavailable",
                           f"connection to {upstream} failed mid-request "
                           f"({type(exc).__name__}: {exc or 'no detail'}); retry shortly",
                           {"Retry-After": "1"}) from exc
        if not stream:
            response.release()
        return Answer(response, body)


async def _remember_refusal(body: AsyncIterator[bytes],
                            refused: list[ApiError]) -> AsyncIterator[bytes]:
    try:
        async for chunk in body:
            yield chunk
    except ApiError as exc:
        refused.append(exc)
        raise


def buffered(answer: Answer) -> Response:
    """An upstream answer already read in full, passed back byte for byte."""
    body = answer.content
    response = Response(body, status_code=answer.status_code)
    response.raw_headers = [(k, v) for k, v in answer.raw_headers
                            if k not in DROP_BUFFERED]
    response.raw_headers.append((b"content-length", str(len(body)).encode()))
    return response


def streamed(answer: Answer) -> StreamingResponse:
    """An upstream answer opened with `stream=True`, streamed back as it arrives."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                yield chunk
        finally:
            answer.close()  # give the connection back, even on cancel

    response = StreamingResponse(body(), status_code=answer.status_code)
    response.raw_headers = [(k, v) for k, v in answer.raw_headers if k not in DROP_ANSWER]
    return response


def error_code(answer: Answer) -> str:
    """The `error.code` of a buffered error answer, or '' when it has none."""
    try:
        return str(json.loads(answer.content)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
