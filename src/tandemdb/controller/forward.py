"""A controller that does not lead passes every call on to the one that does.

Nodes and gateways may reach any controller (their own site's first), so a follower
forwards what it gets to the leader named by the leader key and streams the answer back,
long polls included. It answers 503 `no_leader` when nobody leads (etcd lost its quorum,
or an election is under way), when the leader cannot be reached, or when a call was
already forwarded once (two controllers that disagree on who leads must not bounce a call
between them): the caller retries, or moves on to another controller.

Only the leader's own answers change anything, so forwarding adds no way to act twice: a
forwarded write whose answer is lost on the way back is as unknown to the caller as one
sent to the leader directly, and is answered so (502/504 `outcome_unknown`), never
`no_leader`, which tells a gateway or node that the call did not run and may go to another
controller.
"""

from __future__ import annotations

import json
import logging

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from .leader import Leadership

log = logging.getLogger("tandem.controller.forward")

FORWARDED = b"x-tandem-forwarded"
LOCAL_PATHS = frozenset({"/healthz", "/metrics", "/v1/control-plane"})  # every controller's own
HOP_HEADERS = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding",
                         b"content-length", b"te", b"trailer", b"upgrade"})
TIMEOUT = httpx.Timeout(10.0, connect=2.0, read=120.0)  # long polls answer well within 120 s
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # nothing left here


class FollowerForward:
    """ASGI middleware: pass through while leading, else forward to the leader."""

    def __init__(self, app: ASGIApp, leadership: Leadership, max_body_bytes: int) -> None:
        self.app, self.leadership, self.max_body = app, leadership, max_body_bytes
        self.http: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.leadership.leading
                or scope["path"] in LOCAL_PATHS):
            await self.app(scope, receive, send)
            return
        leader = self.leadership.leader
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_HEADERS]
        if leader is None or leader.get("name") == self.leadership.name:
            why = self.leadership.problem or "an election is under way"
            await _refuse(send, f"no controller leads now ({why}); retry shortly")
            return
        if any(k.lower() == FORWARDED for k, _ in headers):
            await _refuse(send, f"{self.leadership.name} does not lead either (it sees "
                                f"{leader['name']} as leader); retry shortly")
            return
        body = await _read_body(receive, self.max_body)
        if body is None:
            await _send_json(send, 413, "body_too_large",
                             f"the request body is over {self.max_body} bytes")
            return
        url = leader["url"] + scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        if self.http is None:
            self.http = httpx.AsyncClient(timeout=TIMEOUT)
        request = self.http.build_request(
            scope["method"], url, content=body,
            headers=[*((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers),
                     (FORWARDED.decode(), self.leadership.name)])
        try:
            response = await self.http.send(request, stream=True)
        except NOT_SENT as exc:
            await _refuse(send, f"the leader {leader['name']} at {leader['url']} cannot be "
                                f"reached ({type(exc).__name__}); retry shortly")
            return
        except httpx.TransportError as exc:  # sent: the leader may have run it
            await _unknown(send, scope["method"], leader["name"], exc)
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                                    for k, v in response.headers.multi_items()
                                    if k.encode("latin-1").lower() not in HOP_HEADERS]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.TransportError as exc:  # the answer broke off: the caller sees a cut
            log.warning("forward to %s broke off: %s", leader["name"], exc)
        finally:
            await response.aclose()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _refuse(send: Send, message: str) -> None:
    await _send_json(send, 503, "no_leader", message, retry_after=True)


async def _unknown(send: Send, method: str, leader: str, exc: httpx.TransportError) -> None:
    """No answer from the leader after the call reached it: a read may be asked again
    (503/504 `unavailable`); a write may or may not have run (502/504 `outcome_unknown`)."""
    timed_out = isinstance(exc, httpx.TimeoutException)
    if method in ("GET", "HEAD"):
        await _send_json(send, 504 if timed_out else 503, "unavailable", f"the leader {leader} "
                         f"did not answer ({type(exc).__name__}); retry shortly", True)
        return
    what = "did not answer in time" if timed_out else "broke the connection before answering"
    await _send_json(send, 504 if timed_out else 502, "outcome_unknown",
                     f"the leader {leader} {what} ({type(exc).__name__}), after the request "
                     "reached it: it may or may not have run, so it was not sent again. Check "
                     "its effect before you retry it")


async def _send_json(send: Send, status: int, code: str, message: str,
                     retry_after: bool = False) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
