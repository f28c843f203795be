"""Serving with uvicorn, and stopping promptly: open long polls end as shutdown begins.

uvicorn's shutdown waits for open requests (up to `timeout_graceful_shutdown`, or for ever)
and then cancels them, logging an error and a `CancelledError` traceback. A long poll (a GET
with `wait`: the gateway's routing watch, events, an operation's end) would hold every stop
for up to its wait and then leave that traceback, at every stop, although nothing failed.
So `serve` runs a `Server` that tells `LongPolls` when shutdown begins, and `LongPolls`
answers each open long poll at once with 503 `shutting_down`: its client asks again, of the
process that comes next. Other requests finish as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandemdb.common.http import error_response

STARTUP_FAILURE = 3  # uvicorn.run's exit status when the server never started


def is_long_poll(scope: Scope) -> bool:
    """A GET that may wait for news: it has a `wait` query parameter."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    query = scope.get("query_string", b"").decode("latin-1")
    return any(name == "wait" for name, _ in parse_qsl(query, keep_blank_values=True))


class LongPolls:
    """ASGI middleware: after `stop()`, open long polls get 503 at once, and new ones too."""

    def __init__(self, app: ASGIApp, process: str) -> None:
        self.app, self.process = app, process
        self.stopping = False
        self._stopped: asyncio.Event | None = None  # made in the serving loop

    def stop(self) -> None:
        self.stopping = True
        if self._stopped is not None:
            self._stopped.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_long_poll(scope):
            await self.app(scope, receive, send)
            return
        if self.stopping:
            await self._refuse(scope, receive, send)
            return
        if self._stopped is None:
            self._stopped = asyncio.Event()
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        poll = asyncio.ensure_future(self.app(scope, receive, watch))
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not poll.done() and not started:
                poll.cancel()  # its worker thread, if any, ends with the process
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
                await self._refuse(scope, receive, send)
                return
            await poll  # it answered (or is answering): let it finish
        finally:
            stopped.cancel()
            poll.cancel()  # no-op once done; when we are cancelled, so is the poll

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(503, "shutting_down",
                                  f"the {self.process} is stopping; ask again shortly",
                                  {"Retry-After": "1", "Connection": "close"})
        await response(scope, receive, send)


class Server(uvicorn.Server):
    """uvicorn's server, telling `LongPolls` first when shutdown begins."""

    def __init__(self, config: uvicorn.Config, polls: LongPolls) -> None:
        super().__init__(config)
        self.polls = polls

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.polls.stop()
        await super().shutdown(sockets)


def serve(app: ASGIApp, process: str, **config: Any) -> None:
    """Run `app` as `uvicorn.run(app, **config)` would, long polls ending at shutdown."""
    polls = LongPolls(app, process)
    server = Server(uvicorn.Config(polls, **config), polls)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
