"""A stand-in for a gateway that takes a request and never answers: the one case a real
gateway cannot be made to play on demand. It counts what reached it, so a test can tell
that a write of unknown outcome was sent exactly once."""

from __future__ import annotations

import socket
import threading

from tandemdb.common.deployment import HOST

HEAD_END = b"\r\n\r\n"


class SilentServer:
    """Accepts connections and reads each request whole; then `drop` closes the connection
    without a byte of answer, else it holds it open (the client times out) until `close`."""

    def __init__(self, drop: bool, port: int = 0) -> None:
        self.drop = drop
        self.sock = socket.create_server((HOST, port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self.connections = 0
        self.requests: list[str] = []  # request lines, such as "POST /v1/... HTTP/1.1"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            worker = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5.0)
            data = b""
            while HEAD_END not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(HEAD_END, 1)
            lines = head.decode("latin-1").split("\r\n")
            with self._lock:
                self.requests.append(lines[0])
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            if not self.drop:
                self._stop.wait()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
