"""The secondary side of replication: one long-poll loop per peer node.

For every peer node that holds the primaries of some of this node's secondaries, a loop
posts the applied lsns of all those secondaries to the peer's `/internal/v1/stream`, and
applies each answer in lsn order: missing blobs are fetched first, then
`Environment.apply(entries, sender_epoch=…)` runs in a worker thread (it is idempotent, so
a retry after a crash is safe). A part marked `snapshot` makes that replica seed from a
fresh snapshot of the primary, while the other replicas of the loop keep streaming.
Connection errors back off from 0.2 s to 2 s and the loop retries forever; so do apply
errors a retry can fix (missing blobs, a failover in progress), one environment at a time.
An entry that cannot apply to the replica's data (a conflict, SQL that SQLite refuses, a
forked history) halts that replica's stream instead, durably and with one log line, while
the loop's other replicas stream on; re-seeding ends the halt (halts.py).

A secondary whose record says `vouch` vouches for its primary in each poll, echoing the
token of the answer before; that keeps the primary's failsafe lease (docs/leases.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import msgpack

from tandemdb.common.http import KEEPALIVE_SECONDS, SECRET_HEADER
from tandemdb.common.roles import Role
from tandemdb.engine import EngineError, JournalEntry, MissingBlobs

from . import halts, metrics
from .record import Peer
from .replicas import Replica, ReplicaSet, run_sync

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger("tandem.node.puller")

WAIT = 1.0  # long-poll wait asked of the primary
MAX_BYTES = 4 << 20
BACKOFF_MIN, BACKOFF_MAX = 0.2, 2.0
ENV_BACKOFF = 1.0  # after an apply error, leave that replica out for this long


class PeerError(Exception):
    pass


# Errors a retry may fix, so they are logged without a traceback (halts.py sorts out poison).
EXPECTED_ERRORS = (EngineError, httpx.HTTPError, PeerError, ValueError, KeyError, TypeError)


class PeerLoop:
    """The long poll to one peer node, for every secondary whose primary lives there."""

    def __init__(self, puller: Puller, peer: str, url: str) -> None:
        self.puller, self.peer, self.url = puller, peer, url
        self.task: asyncio.Task | None = None
        self._request: asyncio.Task | None = None
        self._held: dict[str, float] = {}  # env -> loop time until which it is left out
        # Since when (monotonic) polls of this peer fail; None while they succeed. The
        # controller hears it in heartbeats: the pair's view of a region's health.
        self.failing_since: float | None = None
        self._logged: dict[str, str] = {}  # last error logged per env (no log floods)
        self._token: object = None  # from the last answer; echoed by the next vouching poll

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pull-{self.peer}")

    def interrupt(self) -> None:
        """The set of replicas changed: end the current long poll and ask again."""
        if self._request is not None and not self._request.done():
            self._request.cancel()

    def replicas(self) -> list[Replica]:
        now = asyncio.get_running_loop().time()
        return [r for r in self.puller.replicas
                if r.role == Role.SECONDARY and r.record.primary is not None
                and self.puller.address(r.record.primary) == (self.peer, self.url)
                and r.env is not None and r.seeding is None and not r.dropped
                and r.halted is None and self._held.get(r.name, 0) <= now]

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        while True:
            replicas = self.replicas()
            if not replicas:
                await self.puller.wait_for_change(0.25)
                continue
            positions = {r.name: r.env.last_lsn for r in replicas}  # type: ignore[union-attr]
            # Read from the records as they are now: once a record stops vouching, no poll
            # built after that vouches (a forced failover waits on it, docs/leases.md).
            vouch = {r.name: r.env.epoch for r in replicas if r.record.vouch}  # type: ignore[union-attr]
            try:
                answer = await self._poll(positions, vouch)
                if answer is None:
                    continue  # interrupted: poll again with the new set of replicas
            except (httpx.HTTPError, PeerError, ValueError) as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("stream from %s (%s) failed: %s; retrying", self.peer,
                                self.url, _describe(exc))
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                continue
            if self.failing_since is not None:
                log.info("stream from %s is back after %.1fs", self.peer,
                         time.monotonic() - self.failing_since)
                self.failing_since = None
            backoff = BACKOFF_MIN
            try:
                parts = answer.get("envs") or {}
                for name in answer.get("missing") or ():
                    self._not_served(name)
                await asyncio.gather(*(self._handle(r, parts.get(r.name)) for r in replicas))
            except Exception:  # a malformed answer must not end the loop
                log.exception("cannot use the stream answer from %s", self.peer)
                await asyncio.sleep(BACKOFF_MAX)

    async def _poll(self, positions: dict[str, int], vouch: dict[str, int]) -> dict | None:
        """One long poll; None when `interrupt` ended it early."""
        ask = {"node": self.puller.node.name, "positions": positions, "wait": WAIT,
               "max_bytes": MAX_BYTES}
        if vouch:
            ask.update(vouch=vouch, token=self._token)
        body = msgpack.packb(ask)
        request = self._request = asyncio.create_task(self.puller.client.post(
            self.url + "/internal/v1/stream", content=body,
            headers={"content-type": "application/msgpack"}))
        try:
            response = await request
        except asyncio.CancelledError:
            if request.cancelled() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                return None
            raise
        finally:
            self._request = None
        if response.status_code != 200:
            raise PeerError(f"HTTP {response.status_code}: {response.text[:200]}")
        content = response.content
        if len(content) > 256 << 10:
            answer = await run_sync(msgpack.unpackb, content, raw=False)
        else:
            answer = msgpack.unpackb(content, raw=False)
        if not isinstance(answer, dict):
            raise PeerError("stream answer is not a map")
        self._token = answer.get("token")
        return answer

    async def _handle(self, replica: Replica, part: dict | None) -> None:
        if part is None or replica.dropped or replica.role != Role.SECONDARY \
                or replica.halted is not None or replica.seeding is not None:
            return
        if part.get("snapshot"):
            self.puller.seed(replica, self.url)
            return
        epochs = epoch_pairs(part.get("epochs"))
        if epochs != replica.upstream_epochs:
            replica.upstream_epochs = epochs
            replica.notify()  # may confirm writes it waits for as an old primary
        wire = part.get("entries") or []
        if not wire:
            return
        env = replica.env
        if env is None:
            return
        applying = False  # only an error of the apply itself may be poison
        try:
            entries = sorted((JournalEntry.from_wire(w) for w in wire), key=lambda e: e.lsn)
            fresh = [e for e in entries if e.lsn > env.last_lsn]
            epoch = int(part["epoch"])
            await self.fetch_blobs(replica, fresh)
            applying = True
            await self._apply(env, entries, epoch)
        except Exception as exc:  # sorted here; e.g. closed under us
            if replica.dropped or replica.env is not env:
                return  # dropped or re-seeded meanwhile: the error is not this replica's
            if applying and halts.is_poison(exc):
                await self.puller.halts.halt(replica, env, exc, epoch)
            else:
                self._hold(replica, exc, expected=isinstance(exc, EXPECTED_ERRORS))
            return
        if replica.stream_error is not None:
            log.info("replica %s streams again from %s", replica.name, self.peer)
            self._logged.pop(replica.name, None)
        replica.stream_error = None
        if fresh:
            metrics.REPLICATED_ENTRIES.labels(replica.name).inc(len(fresh))
            metrics.REPLICATED_BYTES.labels(replica.name).inc(sum(e.size for e in fresh))
        replica.notify()

    def _not_served(self, name: str) -> None:
        replica = self.puller.replicas.find(name)
        if replica is None or replica.dropped:
            return
        message = f"{self.peer} does not serve {name} (no such replica there, or seeding)"
        replica.stream_error = message
        if self._logged.get(name) != message:
            self._logged[name] = message
            log.warning("replica %s: %s; asking again", name, message)
        self._held[name] = asyncio.get_running_loop().time() + ENV_BACKOFF

    def _hold(self, replica: Replica, exc: Exception, expected: bool = True) -> None:
        """Leave a replica out for ENV_BACKOFF after an error a retry may fix; say so once
        per distinct error (with the traceback when the error was not foreseen)."""
        message = f"{type(exc).__name__}: {exc}"
        replica.stream_error = message
        if self._logged.get(replica.name) != message:
            self._logged[replica.name] = message
            log.error("replica %s cannot apply entries from %s: %s; retrying", replica.name,
                      self.peer, message, exc_info=None if expected else exc)
        self._held[replica.name] = asyncio.get_running_loop().time() + ENV_BACKOFF

    @staticmethod
    async def _apply(env, entries: list[JournalEntry], epoch: int) -> None:
        """Apply a batch. If it holds a poison entry, apply the entries before that one
        singly: the replica gets as far as it can, and the error is the poison entry's."""
        try:
            await run_sync(env.apply, entries, sender_epoch=epoch)
            return
        except Exception as exc:  # only poison is looked into
            if not halts.is_poison(exc) or sum(e.lsn > env.last_lsn for e in entries) < 2:
                raise
        for entry in entries:
            if entry.lsn > env.last_lsn:
                await run_sync(env.apply, [entry], sender_epoch=epoch)

    async def fetch_blobs(self, replica: Replica, entries: list[JournalEntry]) -> None:
        env = replica.env
        wanted = sorted({d for e in entries for d in e.blobs})
        if not wanted or env is None:
            return
        missing = await run_sync(lambda: [d for d in wanted if not env.blobs.has(d)])
        for digest in missing:
            response = await self.puller.client.get(
                f"{self.url}/internal/v1/envs/{replica.name}/blobs/{digest}")
            if response.status_code == 404:
                continue  # apply names it (MissingBlobs) if the entry really needs it
            if response.status_code != 200:
                raise PeerError(f"blob {digest[:12]}: HTTP {response.status_code}")
            got = await run_sync(env.blobs.put, response.content)
            if got != digest:
                await run_sync(env.blobs.delete, got)
                raise MissingBlobs([digest])


def epoch_pairs(value: object) -> tuple[tuple[int, int], ...]:
    """A stream answer's `epochs` ([[epoch, start lsn], …]); () when malformed."""
    if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(type(v) is int for v in p)
            for p in value):
        return ()
    return tuple((p[0], p[1]) for p in value)


class Puller:
    """Keeps one `PeerLoop` per peer node that holds primaries of this node's secondaries."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas: ReplicaSet = node.replicas
        headers = {SECRET_HEADER: node.deployment.secret}
        self.client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(10.0, connect=2.0, read=WAIT + 10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16,
                                keepalive_expiry=KEEPALIVE_SECONDS))
        self.loops: dict[tuple[str, str], PeerLoop] = {}
        self.seeding: dict[str, asyncio.Task] = {}
        self.closed = False
        self._changed = asyncio.Event()
        self.halts = halts.Halts(self.replicas, node.region)
        self.halts.read_back()
        self.replicas.on_change(self.refresh)

    async def wait_for_change(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), within)

    def peer_report(self) -> dict[str, dict]:
        """For each peer this node streams from: how long its stream has been failing.

        Called from the heartbeat thread while the event loop changes `loops`: it reads a
        copy (`dict.copy` runs in C, holding the GIL), never the dict being changed."""
        now = time.monotonic()
        return {peer: {"failing_seconds": 0.0 if loop.failing_since is None
                       else round(now - loop.failing_since, 3)}
                for (peer, _), loop in self.loops.copy().items()}

    def address(self, primary: Peer) -> tuple[str, str]:
        """(node, URL) to pull from: through this node's fault-proxy link to the primary's
        node when the deployment has one, else at the URL the controller gave."""
        proxied = self.node.deployment.proxied_url(self.node.name, primary.node)
        return primary.node, proxied or primary.url

    def refresh(self) -> None:
        """Start and stop peer loops to match the secondaries' primaries."""
        if self.closed:
            return
        self.halts.end_stale()
        wanted = {self.address(r.record.primary) for r in self.replicas
                  if r.role == Role.SECONDARY and r.record.primary is not None}
        for key in list(self.loops):
            if key not in wanted:
                loop = self.loops.pop(key)
                if loop.task is not None:
                    loop.task.cancel()
                log.info("stopped pulling from %s", key[0])
        for key in wanted - self.loops.keys():
            loop = self.loops[key] = PeerLoop(self, *key)
            loop.start()
            log.info("pulling from %s at %s", *key)
        for loop in self.loops.values():
            loop.interrupt()
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self) -> None:
        self.closed = True
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        tasks += list(self.seeding.values())
        tasks += self.halts.tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    async def reseed(self, replica: Replica) -> bool:
        """Seed a secondary again from a fresh snapshot of its primary, ending its halt if it
        has one. False if it is seeding already."""
        primary = replica.record.primary
        if primary is None or replica.seeding is not None or replica.name in self.seeding:
            return False
        async with replica.lock:
            self.seed(replica, self.address(primary)[1])  # marks it seeding at once
            await self.halts.end(replica, f"re-seeding from a snapshot of {primary.node}")
        return True

    # -- seeding --------------------------------------------------------------------------
    def seed(self, replica: Replica, url: str) -> None:
        if replica.name in self.seeding or replica.seeding is not None:
            return
        progress = replica.seeding = {"bytes_done": 0, "bytes_total": 0}
        self.seeding[replica.name] = asyncio.create_task(self._seed(replica, url, progress))

    async def _seed(self, replica: Replica, url: str, progress: dict) -> None:
        tmp = self.replicas.tmp_dir / f"seed-{replica.name}-{uuid.uuid4().hex}.sqlite"
        started = time.monotonic()
        try:
            log.info("seeding %s from a snapshot of %s", replica.name, url)
            lsn = await self._download(replica, url, tmp, progress)
            secret = self.node.deployment.secret
            with httpx.Client(headers={SECRET_HEADER: secret}, timeout=30.0) as blobs:

                def fetch_blob(digest: str) -> bytes:
                    response = blobs.get(f"{url}/internal/v1/envs/{replica.name}/blobs/{digest}")
                    response.raise_for_status()
                    return response.content

                await self.replicas.replace_from_snapshot(replica, tmp, fetch_blob)
            replica.last_seed = {"lsn": lsn, "bytes": progress["bytes_done"]}
            log.info("seeded %s at lsn %d (%d bytes) in %.2fs", replica.name, lsn,
                     progress["bytes_done"], time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next stream answer asks again
            log.error("seeding %s failed: %s; will retry", replica.name, _describe(exc))
            replica.stream_error = f"seeding failed: {_describe(exc)}"
            await asyncio.sleep(BACKOFF_MAX)
        finally:
            replica.seeding = None
            self.seeding.pop(replica.name, None)
            tmp.unlink(missing_ok=True)
            self.refresh()

    async def _download(self, replica: Replica, url: str, dest: Path, progress: dict) -> int:
        async with self.client.stream(
                "GET", f"{url}/internal/v1/envs/{replica.name}/snapshot",
                timeout=httpx.Timeout(30.0, connect=2.0)) as response:
            if response.status_code != 200:
                await response.aread()
                raise PeerError(f"snapshot: HTTP {response.status_code}: "
                                f"{response.text[:200]}")
            lsn = int(response.headers["x-tandem-lsn"])
            progress["bytes_total"] = int(response.headers.get("content-length", 0))
            async with await anyio.open_file(dest, "wb") as f:  # writes in worker threads
                async for chunk in response.aiter_bytes(1 << 20):
                    await f.write(chunk)
                    progress["bytes_done"] += len(chunk)
                await f.flush()
                await run_sync(os.fsync, f.wrapped.fileno())
        if progress["bytes_total"] and progress["bytes_done"] != progress["bytes_total"]:
            raise PeerError(f"snapshot cut short at {progress['bytes_done']} of "
                            f"{progress['bytes_total']} bytes")
        return lsn


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
