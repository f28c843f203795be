"""One proxied link: a TCP listener that relays to its target, or breaks on purpose.

A fault applies at once to every connection of the link: `cut` aborts them and aborts each
new one on accept; `drop` keeps them open but discards every byte, both ways, and accepts
new ones without connecting onwards, so the peers see nothing but silence until their own
timeouts; `delay` holds each chunk that long before passing it on, in order. Leaving `drop`
closes the connections it silenced, since bytes were lost in the middle of their streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from enum import StrEnum

from tandemdb.common.deployment import HOST

log = logging.getLogger("tandem.faultproxy")

CHUNK = 64 << 10


class Mode(StrEnum):
    OK = "ok"
    CUT = "cut"
    DROP = "drop"


@dataclass(frozen=True)
class Fault:
    mode: Mode = Mode.OK
    delay: float = 0.0  # seconds added to every chunk (with mode ok)

    def describe(self) -> str:
        if self.mode != Mode.OK:
            return self.mode.value
        return f"ok, delayed {self.delay:g} s" if self.delay else "ok"


class Link:
    def __init__(self, name: str, port: int, target_port: int) -> None:
        self.name, self.port, self.target_port = name, port, target_port
        self.fault = Fault()
        self.server: asyncio.AbstractServer | None = None
        self._connections: set[Connection] = set()
        self.accepted = 0
        self.refused = 0
        self.relayed_bytes = 0
        self.dropped_bytes = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, HOST, self.port)

    async def stop(self) -> None:
        for conn in list(self._connections):
            conn.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def set(self, fault: Fault) -> None:
        before, self.fault = self.fault, fault
        if fault.mode == Mode.CUT or (before.mode == Mode.DROP and fault.mode != Mode.DROP):
            for conn in list(self._connections):
                conn.abort()
        if before != fault:
            log.info("link %s: %s -> %s (%d connection(s) open)", self.name, before.describe(),
                     fault.describe(), len(self._connections))

    def view(self) -> dict:
        return {"name": self.name, "port": self.port, "target_port": self.target_port,
                "mode": self.fault.mode.value, "delay": self.fault.delay,
                "connections": len(self._connections), "accepted": self.accepted,
                "refused": self.refused, "relayed_bytes": self.relayed_bytes,
                "dropped_bytes": self.dropped_bytes}

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fault.mode == Mode.CUT:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        conn = Connection(self, writer)
        self._connections.add(conn)
        try:
            await conn.run(reader)
        finally:
            self._connections.discard(conn)
            conn.close()


class Connection:
    """One client connection and, unless it was accepted into a `drop`, its upstream."""

    def __init__(self, link: Link, client: asyncio.StreamWriter) -> None:
        self.link, self.client = link, client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        """Break both sides now (a fault): what is buffered is lost, as on a real cut."""
        for writer in self._open():
            writer.transport.abort()

    def close(self) -> None:
        """End both sides once what was relayed has been sent."""
        for writer in self._open():
            writer.close()

    def _open(self) -> list[asyncio.StreamWriter]:
        """The sides not closed yet: uvloop raises on any call to a closed transport, and
        a cut closes them under the pumps' feet."""
        return [w for w in (self.client, self.upstream)
                if w is not None and not w.transport.is_closing()]

    async def run(self, reader: asyncio.StreamReader) -> None:
        if self.link.fault.mode == Mode.DROP:  # accepted into silence: nothing connects on
            await self._pump(reader, None)
            return
        try:
            up_reader, self.upstream = await asyncio.open_connection(HOST,
                                                                     self.link.target_port)
        except OSError:
            return  # the target is down: the client sees its connection closed
        await asyncio.gather(self._pump(reader, self.upstream),
                             self._pump(up_reader, self.client))

    async def _pump(self, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter | None) -> None:
        """Copy one direction, applying the link's fault to each chunk as it is read. An
        end of stream is passed on (half-close); a broken side breaks the other too."""
        link = self.link
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliver = asyncio.create_task(self._deliver(queue, writer)) if writer else None
        loop = asyncio.get_running_loop()
        clean = True
        try:
            while data := await reader.read(CHUNK):
                if link.fault.mode != Mode.OK or writer is None:
                    link.dropped_bytes += len(data)
                    continue
                queue.put_nowait((loop.time() + link.fault.delay, data))
        except (ConnectionError, OSError):
            clean = False
        finally:
            if deliver is not None:
                queue.put_nowait((0.0, b""))  # end of stream, after what is queued
                try:
                    await deliver
                except (ConnectionError, OSError):
                    clean = False
        if not clean:
            self.abort()
        elif writer in self._open() and writer.can_write_eof():
            with contextlib.suppress(OSError):  # the peer may be gone since
                writer.write_eof()

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            at, data = await queue.get()
            if not data:
                return
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            if self.link.fault.mode != Mode.OK:
                self.link.dropped_bytes += len(data)
                continue
            writer.write(data)
            self.link.relayed_bytes += len(data)
            await writer.drain()
