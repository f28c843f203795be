"""A minimal HTTP/1.1 keep-alive client for load generation (JSON in, JSON out).

The benchmark must measure Tandem, not its own client: on this 2-core machine httpx's
AsyncClient spent more CPU per request than the gateway it was loading. One connection per
worker, Content-Length bodies only (what Tandem's services answer).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status, self.body = status, body


class Connection:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post_json(self, path: str, body: dict) -> dict:
        payload = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(payload)}\r\n{self.extra}\r\n").encode()
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        data = await self.reader.readexactly(length)
        if status >= 400:
            raise HttpError(status, data)
        return json.loads(data)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
