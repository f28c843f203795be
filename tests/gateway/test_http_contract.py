"""The HTTP contract's crash path, served by a real uvicorn: an unhandled error is a JSON 500
that announces the connection's end, since uvicorn closes it after one (issue 9, item 4:
clients that were not told reused it, and lost their next request)."""

from __future__ import annotations

import threading

import httpx
import uvicorn
from fastapi import FastAPI

from tandemdb.common.deployment import HOST
from tandemdb.common.http import install_error_handlers
from tandemdb.local import free_base_port
from tandemdb.testing import poll_until


def test_an_unhandled_error_is_a_500_that_says_connection_close():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> dict:
        raise KeyError("not handled")

    @app.get("/fine")
    async def fine() -> dict:
        return {"ok": True}

    port = free_base_port(1)
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_config=None,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        poll_until(lambda: server.started or not thread.is_alive(), 10, 0.02, "uvicorn")
        assert server.started
        with httpx.Client(base_url=f"http://{HOST}:{port}") as http:
            assert "connection" not in http.get("/fine").headers  # kept alive
            answer = http.get("/boom")
            assert answer.status_code == 500
            assert answer.json()["error"]["code"] == "internal"
            assert "KeyError" in answer.json()["error"]["message"]
            assert answer.headers["connection"] == "close"
            assert http.get("/fine").json() == {"ok": True}  # on a new connection
    finally:
        server.should_exit = True
        thread.join(10)
