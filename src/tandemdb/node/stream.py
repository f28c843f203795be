"""The serving side of replication: the journal stream, blobs and snapshots.

`POST /internal/v1/stream` is one long poll per peer node with all its environments
multiplexed (msgpack both ways). The positions in a request are the peer's applied lsns:
they are its acknowledgements, used at once for lag and the RPO guard, and recorded
durably (`Environment.acknowledge`) by the `Upkeep` loop, which then truncates the journal
up to what every consumer has acknowledged.

A request may also vouch for some of its primaries (`vouch`: env -> epoch), echoing the
`token` of the answer before: that keeps their failsafe lease (docs/leases.md). Every answer
carries a fresh token, and a vouching long poll is answered within a third of what a vouch
grants, so the next one comes in time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from tandemdb.common.http import ApiError
from tandemdb.engine import Environment, JournalTruncated
from tandemdb.engine.blobstore import check_digest

from .metrics import add_route
from .record import NAME
from .replicas import Replica, ReplicaSet, run_sync

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger("tandem.node.stream")

MSGPACK = "application/msgpack"
MAX_WAIT = 30.0
MAX_BYTES = 16 << 20
MAX_ENTRIES = 5000
UPKEEP_INTERVAL = 0.5


@dataclass(frozen=True)
class StreamRequest:
    node: str  # the consumer
    positions: dict[str, int]  # env -> applied lsn (its acknowledgement)
    wait: float
    budget: int
    vouch: dict[str, int]  # env -> the epoch of the primary the consumer vouches for
    token: object  # the token of the answer it last received (None on a first poll)


def _parse_request(raw: bytes) -> StreamRequest:
    try:
        body = msgpack.unpackb(raw, raw=False)
    except Exception:  # any decoding failure is the client's
        raise ApiError(400, "bad_request", "the stream request must be msgpack") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the stream request must be a map")
    node, positions = body.get("node"), body.get("positions")
    if not isinstance(node, str) or not node:
        raise ApiError(400, "bad_request", "stream request: node must be the caller's name")
    if not isinstance(positions, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in positions.items()):
        raise ApiError(400, "bad_request", "stream request: positions must map env -> lsn")
    wait = body.get("wait", 1.0)
    wait = float(wait) if isinstance(wait, (int, float)) and math.isfinite(wait) else 1.0
    wait = min(max(wait, 0.0), MAX_WAIT)
    budget = body.get("max_bytes", 4 << 20)
    budget = min(max(int(budget), 1), MAX_BYTES) if isinstance(budget, int) else 4 << 20
    vouch = body.get("vouch") or {}
    if not isinstance(vouch, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in vouch.items()):
        raise ApiError(400, "bad_request", "stream request: vouch must map env -> epoch")
    return StreamRequest(node, positions, wait, budget, vouch, body.get("token"))


def servable(replica: Replica, env: Environment, consumer: str) -> int:
    """The last lsn `consumer` may be sent. The geo rule (docs/ha.md): while a primary has a
    sync secondary (or one regaining sync), every other consumer gets only what that one
    has acknowledged, so a promoted sync secondary is never behind a geo-secondary."""
    node = replica.waits_for
    if node is None or node == consumer:
        return env.last_lsn
    sync = replica.consumers.get(node)
    return min(env.last_lsn, sync.acked_lsn if sync is not None else 0)


Target = tuple[Replica, Environment, int, int]  # replica, engine, position, servable upto


HISTORY = 8  # the newest (epoch, start lsn) pairs each answer part carries


def _read(targets: list[Target], budget: int) -> dict:
    """Worker thread: the entries after each position (up to what is servable), within one
    shared byte budget.

    Each answer part also carries, under "_first", the (lsn, committed_at) of its first
    entry; the caller takes it out (it dates the consumer's oldest unapplied commit)."""
    envs: dict[str, dict] = {}
    for replica, env, pos, upto in targets:
        if replica.dropped:
            continue
        entries: list = []
        snapshot = False
        if budget > 0 and upto > pos:
            try:
                entries = env.read_journal(pos, max_entries=min(MAX_ENTRIES, upto - pos),
                                           max_bytes=budget)
            except JournalTruncated:
                snapshot = True
            budget -= sum(e.size for e in entries)
        envs[replica.name] = {
            "epoch": env.epoch, "last_lsn": env.last_lsn,
            "epochs": env.epoch_history[-HISTORY:],
            "entries": [e.to_wire() for e in entries], "snapshot": snapshot,
            "_first": (entries[0].lsn, entries[0].committed_at) if entries else None}
    return envs


class StreamServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas: ReplicaSet = node.replicas
        self.lease = node.lease
        self.gate = node.gate

    async def stream(self, request: Request) -> Response:
        ask = _parse_request(await request.body())
        consumer, positions, wait, budget = ask.node, ask.positions, ask.wait, ask.budget
        if ask.vouch and self.lease.required:
            self._vouched(ask)
            wait = min(wait, (self.lease.ttl - self.lease.margin) / 3)
        found: list[tuple[Replica, Environment, int]] = []
        missing = []
        for name, pos in positions.items():
            replica = self.replicas.find(name) if NAME.fullmatch(name) else None
            env = replica.env if replica is not None else None
            if replica is None or env is None:
                missing.append(name)
                continue
            found.append((replica, env, pos))
            tracked = replica.consumers.get(consumer)
            if tracked is not None:  # only listed secondaries are consumers
                moved = pos > tracked.acked_lsn
                tracked.advance(pos)
                if moved and replica.waits_for == consumer:
                    replica.notify()  # the writes waiting for it (syncrule.py), geo polls
                self.node.sync.acknowledged(replica, consumer)
        targets = await self._await_entries(found, consumer, wait)
        random.shuffle(targets)  # no environment starves the others of the byte budget
        envs = await run_sync(_read, targets, budget)
        for replica, _, pos, _ in targets:
            if replica.name not in envs:
                continue
            first = envs[replica.name].pop("_first")
            tracked = replica.consumers.get(consumer)
            if tracked is not None and first is not None and first[0] == pos + 1 \
                    and tracked.acked_lsn == pos and tracked.next_at is None:
                tracked.next_at = first[1]
        answer = {"time": time.time(), "envs": envs, "token": self.lease.token()}
        if missing:
            answer["missing"] = missing  # hosted nowhere here (or seeding): nothing to pull
        return Response(await run_sync(msgpack.packb, answer), media_type=MSGPACK)

    def _vouched(self, ask: StreamRequest) -> None:
        """Extend the failsafe lease of each primary the consumer vouches for."""
        for name, epoch in ask.vouch.items():
            replica = self.replicas.find(name)
            if replica is not None:
                self.gate.vouch(replica, ask.node, epoch, ask.token)

    async def _await_entries(self, found: list[tuple[Replica, Environment, int]],
                             consumer: str, wait: float) -> list[Target]:
        """The long poll: wait up to `wait` until some entry may be sent to `consumer`;
        answer each target with what is servable then (`servable`, the geo rule)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            targets = [(replica, env, pos, servable(replica, env, consumer))
                       for replica, env, pos in found]
            remaining = deadline - loop.time()
            if remaining <= 0 or not targets or any(upto > pos for _, _, pos, upto in targets):
                return targets
            await self._wait_any([replica for replica, _, _ in found], remaining)

    @staticmethod
    async def _wait_any(replicas: list[Replica], wait: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        for replica in replicas:
            replica.add_waiter(fut)
        try:
            await asyncio.wait_for(fut, wait)
        except TimeoutError:
            pass
        finally:
            for replica in replicas:
                replica.remove_waiter(fut)

    async def blob(self, request: Request) -> Response:
        replica = self.replicas.get(request.path_params["env"])
        digest = request.path_params["digest"]
        try:
            check_digest(digest)
        except ValueError:
            raise ApiError(400, "bad_request", f"{digest!r} is not a blob digest") from None
        env = replica.require_env()
        try:
            data = await run_sync(env.blobs.get, digest)
        except KeyError:
            raise ApiError(404, "blob_not_found",
                           f"replica {replica.name} has no blob {digest[:12]}") from None
        return Response(data, media_type="application/octet-stream")

    async def snapshot(self, request: Request) -> Response:
        replica = self.replicas.get(request.path_params["env"])
        env = replica.require_env()
        dest = self.replicas.tmp_dir / f"snapshot-{replica.name}-{uuid.uuid4().hex}.sqlite"
        snap = await run_sync(env.snapshot, dest)
        log.info("serving a snapshot of %s at lsn %d (%d bytes)", replica.name, snap.lsn,
                 dest.stat().st_size)
        return FileResponse(snap.path, media_type="application/octet-stream",
                            headers={"X-Tandem-Lsn": str(snap.lsn),
                                     "X-Tandem-Epoch": str(snap.epoch)},
                            background=BackgroundTask(dest.unlink, missing_ok=True))


class Upkeep:
    """Every half second: record acknowledgements durably, then truncate the journal.

    Both are cheap no-ops when nothing moved; the durable acknowledgement may trail the
    in-memory one, which only makes truncation more careful."""

    def __init__(self, replicas: ReplicaSet) -> None:
        self.replicas = replicas

    async def run(self) -> None:
        while True:
            await asyncio.sleep(UPKEEP_INTERVAL)
            for replica in self.replicas:
                try:
                    await self.tend(replica)
                except Exception:  # try again next round
                    log.exception("upkeep of %s failed", replica.name)

    async def tend(self, replica: Replica) -> None:
        env = replica.env
        if env is None or replica.dropped:
            return
        acks = {node: c.acked_lsn for node, c in replica.consumers.items()
                if c.acked_lsn > c.persisted_lsn}
        if acks:
            await run_sync(_acknowledge, env, acks)
            for node, lsn in acks.items():
                if node in replica.consumers:
                    replica.consumers[node].persisted_lsn = lsn
        floor = min((c.persisted_lsn for c in replica.consumers.values()),
                    default=env.last_lsn)
        upto = min(floor, env.last_lsn - 1)
        if upto > replica.truncated_upto:
            removed = await run_sync(env.truncate_journal)
            replica.truncated_upto = upto
            if removed:
                log.debug("truncated %d journal entries of %s", removed, replica.name)
        await replica.refresh_lag()


def _acknowledge(env: Environment, acks: dict[str, int]) -> None:
    for node, lsn in acks.items():
        env.acknowledge(node, lsn)


def install(app: FastAPI, node: Node) -> StreamServer:
    server = StreamServer(node)
    add_route(app, "/internal/v1/stream", server.stream, methods=["POST"])
    add_route(app, "/internal/v1/envs/{env}/blobs/{digest}", server.blob, methods=["GET"])
    add_route(app, "/internal/v1/envs/{env}/snapshot", server.snapshot, methods=["GET"])
    return server
