"""HTTP/1.1 to one etcd member: a small keep-alive pool on the standard library.

Why not httpx: measured in docs/etcd.md, its per-request cost under 32 threads capped the
store at ~500 calls/s on a 2-core machine; `http.client` is 2-4x faster. What this module
adds is what a coordination store needs to know after a failure: whether the request left
(`SendFailed`: never sent, safe to send elsewhere) or not (`NoAnswer`: sent, outcome unknown).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from functools import cache
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 1.0
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class SendFailed(Exception):
    """The request never reached the member (refused, connect timeout): send it elsewhere."""


class NoAnswer(Exception):
    """The request was sent and no whole answer came (timeout, reset): outcome unknown."""


@cache
def tls() -> ssl.SSLContext:
    return ssl.create_default_context()


class Endpoint:
    """POSTs JSON to one member over reused connections; thread-safe."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an etcd client URL: {url!r} (use http://host:port)")
        self.url = url.rstrip("/")
        self._tls = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port or (443 if self._tls else 80)
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def post(self, path: str, body: dict, timeout: float) -> tuple[int, bytes]:
        """(status, body) of one POST, each socket operation bounded by `timeout`."""
        conn = self._take(timeout)
        try:
            conn.request("POST", path, body=json.dumps(body).encode(), headers=HEADERS)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NoAnswer(describe(exc)) from exc
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        return response.status, data

    @contextlib.contextmanager
    def stream(self, path: str, body: dict,
               timeout: float) -> Iterator[tuple[http.client.HTTPResponse, socket.socket]]:
        """A POST whose answer is read as it comes (a watch), on a connection of its own.
        Yields the response and its socket (set its timeout per read; shut it down to
        wake a reader)."""
        conn = self._connect(timeout)
        try:
            try:
                conn.request("POST", path, body=json.dumps(body).encode(), headers=HEADERS)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise NoAnswer(describe(exc)) from exc
            yield response, conn.sock
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self, timeout: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(timeout)
            if _stale(conn):  # the member closed it while idle (or restarted)
                conn.close()
                continue
            conn.sock.settimeout(timeout)
            return conn

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._closed:
            raise SendFailed(f"connection to {self.url} closed")
        connect = min(timeout, CONNECT_TIMEOUT)
        conn: http.client.HTTPConnection = (
            http.client.HTTPSConnection(self._host, self._port, timeout=connect, context=tls())
            if self._tls else http.client.HTTPConnection(self._host, self._port,
                                                         timeout=connect))
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise SendFailed(describe(exc)) from exc
        conn.sock.settimeout(timeout)
        return conn


def _stale(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection with something to read is closed (or broken)."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time (timed out)"
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"
