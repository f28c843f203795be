"""The leader watch's `/healthz` probe against whatever may listen on a controller's port:
a real HTTP server on loopback answering odd things. Only a JSON object counts as an
answer; anything else is "no answer", never an exception that would end the watch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tandemdb.common.leader_watch import probe_health

ANSWERS = {  # path -> (status, body)
    "/leading": (200, b'{"ok": true, "leading": true}'),
    "/list": (200, b"[1, 2]"),
    "/string": (200, b'"leading"'),
    "/garbage": (200, b"\xff{not json"),
    "/error": (500, b'{"leading": true}'),
}


class Odd(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = ANSWERS[self.path.removesuffix("/healthz")]
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def odd_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def probe_all(base: str) -> dict[str, dict]:
    async def run() -> dict[str, dict]:
        async with httpx.AsyncClient(timeout=2.0) as http:
            return {path: await probe_health(http, base + path) for path in ANSWERS}
    return asyncio.run(run())


def test_only_a_json_object_is_an_answer(odd_server: str):
    answers = probe_all(odd_server)
    assert answers["/leading"] == {"ok": True, "leading": True}
    for path in ("/list", "/string", "/garbage", "/error"):
        assert answers[path] == {}, path


def test_nothing_listening_is_no_answer():
    async def run() -> dict:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return await probe_health(http, "http://127.0.0.1:9")  # discard: refused
    assert asyncio.run(run()) == {}
