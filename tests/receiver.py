"""A tenant's webhook receiver for tests: a real HTTP server (stdlib `http.server` in a
thread) that keeps every delivery and checks signatures as a tenant must."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "s3cret-for-the-receiver-0123"


class Receiver:
    """Answers 500 to the first `fail_first` deliveries, then 200; keeps every request."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = 500 if len(receiver.requests) < receiver.fail_first else 200
                    receiver.requests.append({"status": status, "body": body,
                                              "headers": dict(self.headers.items())})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tandem"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> dict[int, dict]:
        """Events taken (2xx), deduplicated by event id as a receiver must."""
        with self.lock:
            return {json.loads(r["body"])["id"]: json.loads(r["body"])
                    for r in self.requests if r["status"] == 200}

    def check_signatures(self, secret: str = SECRET) -> None:
        """Every request: valid HMAC over "<timestamp>.<body>", fresh timestamp, ids agree."""
        with self.lock:
            requests = list(self.requests)
        for r in requests:
            h = {k.lower(): v for k, v in r["headers"].items()}
            expected = hmac.new(secret.encode(), h["x-tandem-timestamp"].encode() + b"."
                                + r["body"], hashlib.sha256).hexdigest()
            assert hmac.compare_digest(h["x-tandem-signature"], f"sha256={expected}")
            assert abs(time.time() - int(h["x-tandem-timestamp"])) < 300
            assert h["content-type"] == "application/json"
            assert int(h["x-tandem-event-id"]) == json.loads(r["body"])["id"]
