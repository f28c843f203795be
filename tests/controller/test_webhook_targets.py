"""Webhook targets (issue 9, item 11): by default a webhook may not point at a loopback,
private, link-local, multicast or unspecified address, neither as written at registration
nor as its host name resolves at delivery time; and a receiver's answer shows in
`last_error` as its status only, never its body."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.receiver import SECRET, Receiver

from .conftest import ControllerProcess, controller_process
from .waiting import wait_for

PRIVATE_URLS = [
    "http://127.0.0.1:9/hook", "http://127.1/hook", "http://2130706433/hook",
    "http://0x7f000001/hook", "http://localhost:8080/hook", "http://LocalHost./hook",
    "http://api.localhost/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/hook",
    "http://10.0.0.7/hook", "http://172.16.3.4/hook", "http://192.168.1.1/hook",
    "http://100.64.0.1/hook", "http://224.0.0.1/hook", "http://0.0.0.0/hook",
    "http://[::]/hook", "https://240.0.0.1/hook",
]


@pytest.fixture
def guarded(tmp_path: Path, backend_settings: dict) -> Iterator[ControllerProcess]:
    """A controller with the deployment's default: private webhook targets refused."""
    with controller_process(tmp_path / "deployment", allow_private_webhooks=False,
                            **backend_settings) as ctl:
        yield ctl


class TalkativeReceiver:
    """Answers every delivery 500 with a body that must never reach the tenant's view."""

    BODY = b"internal-only: db password is hunter2"

    def __init__(self) -> None:
        self.hits = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.hits += 1
                self.send_response(500)
                self.send_header("Content-Length", str(len(TalkativeReceiver.BODY)))
                self.end_headers()
                self.wfile.write(TalkativeReceiver.BODY)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_private_targets_are_refused_at_registration_by_default(guarded):
    ctl = guarded.start()
    for url in PRIVATE_URLS:
        response = ctl.http.post("/v1/webhooks", json={"url": url, "secret": SECRET})
        assert response.status_code == 400, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "bad_request", error
        assert "invalid url" in error["message"] and "allow_private_webhooks" in error["message"]
    assert ctl.http.get("/v1/webhooks").json()["webhooks"] == []
    # A public address, or a name (checked on what it resolves to at each delivery), is fine.
    for url in ["https://93.184.215.14/hook", "https://hooks.example.com/tandem"]:
        response = ctl.http.post("/v1/webhooks", json={"url": url, "secret": SECRET})
        assert response.status_code == 201, response.text


def test_a_name_that_resolves_to_loopback_at_delivery_is_not_posted_to(guarded):
    """A webhook stored with a name (as one registered while that name resolved to a
    public address would be, DNS rebinding): each delivery resolves it and refuses."""
    receiver = Receiver()
    try:
        ctl = guarded.start()
        ctl.kill()
        url = receiver.url.replace("127.0.0.1", "localhost")
        with ctl.open_store() as store:
            assert store.compare_and_set("webhooks/wh-000900", None, {
                "id": "wh-000900", "url": url, "secret": SECRET, "environments": None,
                "created_at": "2026-01-01T00:00:00.000Z"})
        ctl.start()
        assert ctl.create(name="rebound", type="basic").status_code == 201

        def refused() -> str | None:
            hooks = ctl.http.get("/v1/webhooks").json()["webhooks"]
            return next(h["last_error"] for h in hooks if h["id"] == "wh-000900")

        error = wait_for(refused, what="a refused delivery")
        assert error.startswith("refused: localhost resolves to"), error
        assert "loopback address" in error and "allow_private_webhooks" in error
        assert receiver.requests == []
    finally:
        receiver.close()


def test_last_error_holds_the_status_never_the_receivers_body(controller):
    """The test deployments allow private targets (their receivers listen on 127.0.0.1)."""
    receiver = TalkativeReceiver()
    try:
        response = controller.http.post("/v1/webhooks", json={
            "url": receiver.url, "secret": SECRET, "environments": ["talk-back"]})
        assert response.status_code == 201, response.text
        hook_id = response.json()["id"]
        assert controller.create(name="talk-back", type="basic").status_code == 201

        def failed() -> str | None:
            hooks = controller.http.get("/v1/webhooks").json()["webhooks"]
            return next(h["last_error"] for h in hooks if h["id"] == hook_id)

        assert wait_for(failed, what="a failed delivery") == "answered 500"
        assert receiver.hits >= 1
        assert b"hunter2" not in controller.log().encode()
        controller.http.delete(f"/v1/webhooks/{hook_id}")
    finally:
        receiver.close()
