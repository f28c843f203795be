"""The fault proxy as a real process in front of a plain TCP echo server: it relays, delays,
drops and cuts, per link, as its control API says; bad control calls change nothing."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tandemdb.common.deployment import HOST
from tandemdb.common.http import SECRET_HEADER
from tandemdb.local import FAULT_PROXY
from tandemdb.testing import LocalDeployment, poll_until

LINK = "west-1>controller"  # relays to the controller's port, where the echo server listens


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class Proxy:
    """The fault proxy of a deployment of which nothing else runs (the harness's)."""

    def __init__(self, local: LocalDeployment) -> None:
        self.local, self.deployment = local, local.deployment
        self.url = self.deployment.fault_proxy_url
        self.secret = {SECRET_HEADER: self.deployment.secret}

    def port(self, link: str = LINK) -> int:
        return self.deployment.links()[link]

    def set(self, **body: object) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/links", json=body, headers=self.secret)

    def links(self) -> dict[str, dict]:
        answer = httpx.get(f"{self.url}/v1/links", headers=self.secret).json()
        return {link["name"]: link for link in answer["links"]}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    with LocalDeployment.temporary(tmp_path_factory.mktemp("faultproxy"), start=(),
                                   fault_proxy=True) as local:
        echo = socketserver.ThreadingTCPServer((HOST, local.deployment.controller_port), Echo)
        echo.daemon_threads = True
        threading.Thread(target=echo.serve_forever, daemon=True).start()
        try:
            local.start(FAULT_PROXY)
            yield Proxy(local)
        finally:
            local.stop(FAULT_PROXY)
            echo.shutdown()
            echo.server_close()


@pytest.fixture(autouse=True)
def healed(proxy: Proxy) -> Iterator[None]:
    yield
    assert proxy.set(mode="ok").status_code == 200


def connect(proxy: Proxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((HOST, proxy.port()), timeout=timeout)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def closed(sock: socket.socket) -> bool:
    """True if the peer closed or reset the connection (within the socket's timeout)."""
    try:
        sock.sendall(b"x")
        return sock.recv(1) == b""
    except (ConnectionError, OSError):
        return True


def test_ok_relays_and_counts(proxy: Proxy) -> None:
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello" * 1000) == b"hello" * 1000
    link = proxy.links()[LINK]
    assert link["mode"] == "ok" and link["relayed_bytes"] >= 10000
    assert link["target_port"] == proxy.deployment.controller_port


def test_delay_holds_every_chunk_in_order(proxy: Proxy) -> None:
    assert proxy.set(links=[LINK], delay=0.3).status_code == 200
    with connect(proxy) as sock:
        started = time.monotonic()
        assert round_trip(sock, b"abc") == b"abc"
        assert time.monotonic() - started >= 0.6  # 0.3 s each way
        assert round_trip(sock, b"".join(bytes([i]) * 100 for i in range(50))) == \
            b"".join(bytes([i]) * 100 for i in range(50))


def test_drop_keeps_connections_open_in_silence_and_healing_closes_them(proxy: Proxy) -> None:
    with connect(proxy, timeout=0.5) as before:
        assert round_trip(before) == b"ping"
        assert proxy.set(links=[LINK], mode="drop").status_code == 200
        with connect(proxy, timeout=0.5) as during:  # accepted, but nothing gets through
            for sock in (before, during):
                sock.sendall(b"lost")
                with pytest.raises(TimeoutError):
                    sock.recv(10)
            assert proxy.links()[LINK]["dropped_bytes"] >= 8
            assert proxy.set(links=[LINK], mode="ok").status_code == 200
            assert closed(before) and closed(during)  # their streams lost bytes
    with connect(proxy) as after:
        assert round_trip(after) == b"ping"


def test_cut_closes_what_is_open_and_refuses_what_comes(proxy: Proxy) -> None:
    other = "east-1>controller"
    with connect(proxy) as sock:
        assert round_trip(sock) == b"ping"
        assert proxy.set(links=[LINK], mode="cut").status_code == 200
        assert closed(sock)
    with connect(proxy) as refused:
        assert closed(refused)
    assert proxy.links()[LINK]["refused"] >= 1
    with socket.create_connection((HOST, proxy.port(other)), timeout=2) as untouched:
        assert round_trip(untouched) == b"ping"  # only the named link is cut


def test_a_region_partition_cuts_exactly_its_links(proxy: Proxy) -> None:
    answer = proxy.set(region="west", mode="cut")
    assert answer.status_code == 200
    cut = sorted(link["name"] for link in answer.json()["links"])
    assert cut == ["controller>west-1", "east-1>west-1", "west-1>controller", "west-1>east-1"]
    modes = {name: link["mode"] for name, link in proxy.links().items()}
    assert modes == {**{name: "cut" for name in cut}, "east-1>controller": "ok",
                     "controller>east-1": "ok"}


@pytest.mark.parametrize("body, status", [
    ({"links": ["west-1>nowhere"], "mode": "cut"}, 404),
    ({"region": "north", "mode": "cut"}, 404),
    ({"links": [LINK], "region": "west"}, 400),
    ({"links": LINK, "mode": "cut"}, 400),
    ({"mode": "explode"}, 400),
    ({"mode": "ok", "delay": -1}, 400),
    ({"mode": "ok", "delay": "soon"}, 400),
    ({"mode": "cut", "when": "now"}, 400),
    (["cut"], 400),
])
def test_bad_control_calls_change_nothing(proxy: Proxy, body: object, status: int) -> None:
    answer = httpx.post(f"{proxy.url}/v1/links", json=body, headers=proxy.secret)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["message"]
    assert {link["mode"] for link in proxy.links().values()} == {"ok"}


def test_the_control_api_needs_the_cluster_secret(proxy: Proxy) -> None:
    for call in (lambda h: httpx.get(f"{proxy.url}/v1/links", headers=h),
                 lambda h: httpx.post(f"{proxy.url}/v1/links", json={"mode": "cut"},
                                      headers=h)):
        for headers in ({}, {SECRET_HEADER: "wrong"}):
            answer = call(headers)
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "unauthorized"
    assert {link["mode"] for link in proxy.links().values()} == {"ok"}


def test_cuts_leave_no_traceback_in_the_log(proxy: Proxy) -> None:
    """A cut is a fault on purpose, not a failure: the log says so in one line per link,
    and holds no traceback (it used to, from write_eof on connections the cut closed)."""
    socks = [connect(proxy) for _ in range(4)]
    try:
        for sock in socks:
            assert round_trip(sock) == b"ping"
        socks[0].sendall(b"in flight" * 1000)
        assert proxy.set(links=[LINK], mode="cut").status_code == 200
        poll_until(lambda: not proxy.links()[LINK]["connections"], 5, 0.05,
                   "the cut to close every connection")
    finally:
        for sock in socks:
            sock.close()
    assert proxy.set(links=[LINK], mode="ok").status_code == 200
    with connect(proxy) as sock:  # and it relays again
        assert round_trip(sock) == b"ping"
    log = proxy.local.log(FAULT_PROXY)
    assert "ok -> cut" in log
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]
