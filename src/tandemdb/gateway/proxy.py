"""Forwarding to nodes and the controller over one shared, pooled HTTP client.

The gateway adds the cluster secret, passes bodies through as bytes (never re-encoded), and
streams file contents both ways. Answers come back unchanged apart from hop-by-hop headers.

The pool never sends a request on a connection its peer is closing: a connection that
brought a 5xx answer is closed, not reused (a server may close after an error without
saying so, as uvicorn does after an unhandled exception), as is one that said
`Connection: close`, and idle ones are dropped before the upstream's own keep-alive ends.
Failures are sorted by what aiohttp says about the request's bytes:

- `Unreachable`: no connection could be made (refused, connect timeout); nothing was sent,
  so the caller may send it again, or elsewhere.
- nothing written: aiohttp found the pooled connection closing when it came to write the
  request (bodies in hand go out in one write). Sent once more, on a fresh connection.
- anything later: the upstream may have run the request. A read (GET) is sent once more on
  a fresh connection, unless it timed out; anything else is answered 502 (504 after a
  timeout) `outcome_unknown` and never resent, because a write must not run twice.
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
SAFE_METHODS = frozenset({"GET", "HEAD"})  # reads: running one twice changes nothing
# What aiohttp raises when a connection is already closing as it comes to write: no byte of
# the request left (http_writer.StreamWriter._write checks before writing).
NOT_WRITTEN = "Cannot write to closing transport"


class Unreachable(Exception):
    """The upstream could not be reached; the request was not sent, so it may be retried."""


class _NotSent(Exception):
    """The pooled connection was closing before any byte of the request was written."""


class _MayHaveRun(Exception):
    """The request was written (or may have been), and no answer came back."""

    def __init__(self, exc: BaseException, timed_out: bool) -> None:
        super().__init__(f"{type(exc).__name__}: {exc or 'no detail'}")
        self.timed_out = timed_out


class ClosingAfterErrors(aiohttp.ClientResponse):
    """An answer whose connection goes back to the pool only if it was not a 5xx.

    After an error a server may close the connection without a `Connection: close` (uvicorn
    does after an unhandled exception, once it has logged it); a request written onto it
    meanwhile would be lost, for another client. aiohttp pools a connection as soon as the
    whole answer has been read, possibly inside `start`, hence the check right after it.
    """

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        await super().start(connection)
        if self.status >= 500 and protocol is not None:
            protocol.force_close()  # pooled later: the connector closes it instead
            if self.connection is None:  # pooled already: close it there
                protocol.close()
        return self


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
        self._fresh: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running event loop."""
        if self._session is None:
            self._session = self._new_session(aiohttp.TCPConnector(
                limit=2 * CONCURRENCY_PER_UPSTREAM * max(1, self.upstreams),
                limit_per_host=2 * CONCURRENCY_PER_UPSTREAM,
                keepalive_timeout=KEEPALIVE_SECONDS))
        return self._session

    @property
    def fresh(self) -> aiohttp.ClientSession:
        """For the one resend: a new connection each time, closed after its answer."""
        if self._fresh is None:
            self._fresh = self._new_session(aiohttp.TCPConnector(force_close=True))
        return self._fresh

    def _new_session(self, connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, response_class=ClosingAfterErrors,
            timeout=aiohttp.ClientTimeout(total=None, connect=2.0, sock_read=self.read_timeout))
        # aiohttp resends GET, PUT and DELETE by itself once after a broken connection,
        # whether or not they ran; a DELETE of a file is a write. Resends are decided in
        # `_send`, from what is known about the request's bytes (aiohttp's own test client
        # turns this off the same way).
        session._retry_connection = False
        return session

    async def close(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()

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
        in_hand = content is None or isinstance(content, bytes)  # can be sent again
        try:
            try:
                return await self._attempt(self.http, method, url, headers, content, stream)
            except _NotSent:
                if not in_hand:
                    raise
            except _MayHaveRun as exc:  # a read may go again, unless it was just slow
                if method not in SAFE_METHODS or not in_hand or exc.timed_out:
                    raise
            UPSTREAM_ERRORS.labels(upstream, "resent").inc()
            return await self._attempt(self.fresh, method, url, headers, content, stream)
        except Unreachable:
            UPSTREAM_ERRORS.labels(upstream, "unreachable").inc()
            raise
        except _NotSent as exc:
            UPSTREAM_ERRORS.labels(upstream, "broken").inc()
            raise ApiError(503, "unavailable", f"the connection to {upstream} closed before "
                           f"the request was written ({exc}); it did not run: retry shortly",
                           {"Retry-After": "1"}) from exc
        except _MayHaveRun as exc:
            UPSTREAM_ERRORS.labels(upstream, "timeout" if exc.timed_out else "broken").inc()
            raise failure(method, upstream, str(exc), exc.timed_out) from exc

    async def _attempt(self, session: aiohttp.ClientSession, method: str, url: str,
                       headers: list[tuple[str, str]],
                       content: bytes | AsyncIterator[bytes] | None, stream: bool) -> Answer:
        """One try; its failure says whether the request can have reached the upstream."""
        try:
            response = await session.request(method, url, headers=headers, data=content,
                                             allow_redirects=False,
                                             skip_auto_headers=("User-Agent",))
            body = None if stream else await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _MayHaveRun(exc, timed_out=True) from exc
        except aiohttp.ClientError as exc:
            if _nothing_written(exc):
                raise _NotSent(f"{type(exc).__name__}: {exc}") from exc
            raise _MayHaveRun(exc, timed_out=False) from exc
        if not stream:
            response.release()
        return Answer(response, body)


def _nothing_written(exc: BaseException) -> bool:
    """aiohttp refused the request's first write: the connection was closing already. A body
    in hand goes out with the headers in that one write (a body request's writer wraps the
    refusal in a ClientOSError)."""
    return any(isinstance(e, aiohttp.ClientConnectionResetError) and NOT_WRITTEN in str(e)
               for e in (exc, exc.__cause__))


def failure(method: str, upstream: str, detail: str, timed_out: bool) -> ApiError:
    """The answer for a call that got no answer after it may have reached the upstream."""
    if method in SAFE_METHODS:  # a read: nothing to check before asking again
        return ApiError(504 if timed_out else 503, "unavailable",
                        f"{upstream} did not answer ({detail}); retry shortly",
                        {"Retry-After": "1"})
    what = "did not answer in time" if timed_out else "broke the connection before answering"
    return ApiError(504 if timed_out else 502, "outcome_unknown",
                    f"{upstream} {what} ({detail}), after the request reached it: it may or "
                    "may not have run, so it was not sent again. Check its effect (read the "
                    "rows or the file back) before you retry it")


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
