"""A raw HTTP/1.1 server that stands where the controller and a node would, for a real gateway.

It speaks just enough of their APIs for the gateway to route (`/internal/v1/routing`) and
forward (`POST …/sql`, `DELETE …/files/…`, `POST /v1/webhooks`), records every request it
receives, and misbehaves on demand the ways a real upstream does:

- `FAIL`: answers 500 and closes the connection a little later *without* announcing it
  (no `Connection: close`), as uvicorn does after an unhandled exception (it logs the
  traceback first). Bytes that arrive meanwhile are never read: a request written onto
  that connection is lost.
- `HANG_UP`: reads the request, records it, and closes without answering (a process that
  died mid-request): the call may have run. `HANG_UP_ONCE` does so the first time only.

Its own keep-alive is otherwise unlimited, so the only closes are the ones above.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter

from tandemdb.common.deployment import HOST, Deployment

ENV = "acme"
CLOSE_DELAY = 0.2  # seconds between a 500 and the unannounced close


class Upstream:
    """Listens on the deployment's controller port and on west-1's port, in its own thread."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.received: list[tuple[str, str, str]] = []  # (method, path, tag)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> Upstream:
        self._thread.start()
        ports = [self.deployment.controller_port, self.deployment.nodes["west-1"]["port"]]
        for port in ports:
            self._servers.append(self._call(asyncio.start_server(self._serve, HOST, port)))
        return self

    def stop(self) -> None:
        async def shut() -> None:
            for server in self._servers:
                server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self._call(shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def tags(self, method: str = "POST") -> Counter:
        """How many times each tagged request arrived."""
        return Counter(tag for m, _, tag in list(self.received) if m == method and tag)

    # -- serving -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(task := asyncio.current_task())
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                method, target, body = request
                if not await self._answer(method, target, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # a cancel comes from stop(): end quietly
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _answer(self, method: str, target: str, body: bytes,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is to close now."""
        path, _, query = target.partition("?")
        if path == "/internal/v1/routing":
            if "after=" in query:  # the watch's long poll: nothing ever changes
                await asyncio.sleep(30)
                return _respond(writer, 200, {"revision": 1, "changes": {}})
            return _respond(writer, 200, self._routing())
        tag = _tag(body) if method == "POST" else path.rsplit("/", 1)[-1]
        self.received.append((method, path, tag))
        if tag.startswith("HANG_UP_ONCE") and self.tags(method)[tag] > 1:
            pass  # the second time, an answer
        elif tag.startswith("HANG_UP"):
            return False
        if tag.startswith("FAIL"):
            _respond(writer, 500, {"error": {"code": "internal", "message": "boom"}})
            await writer.drain()
            await asyncio.sleep(CLOSE_DELAY)
            return False
        if path.startswith("/v1/webhooks"):
            return _respond(writer, 201, {"id": tag})
        return _respond(writer, 200, {"results": [], "lsn": len(self.received), "epoch": 1,
                                      "region": "west"})

    def _routing(self) -> dict:
        node = {"node": "west-1", "url": self.deployment.node_url("west-1"),
                "role": "primary"}
        return {"revision": 1, "environments": {ENV: {
            "epoch": 1, "primary_region": "west", "replicas": {"west": node}}}}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return method, target, body


def _tag(body: bytes) -> str:
    """`{"statements": [{"sql": TAG}]}` or `{"url": TAG}`: what the test named the call."""
    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
        doc = json.loads(body)
        return str(doc["statements"][0]["sql"] if "statements" in doc else doc["url"])
    return ""


def _respond(writer: asyncio.StreamWriter, status: int, doc: dict) -> bool:
    body = json.dumps(doc).encode()
    writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                 f"content-length: {len(body)}\r\n\r\n".encode() + body)
    return True
