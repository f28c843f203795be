"""The node's part of failover (docs/failover.md): fence the primary, wait for the target
to catch up, promote it, unfence the old primary when a switchover fails, and rewind an old
primary that a forced failover left behind (its lost writes are written down first).

Every role change goes through `ReplicaSet.transition`: its checks run while the engine's
lock is held, so no entry is committed or applied between a check and the change, and the
new record is persisted in replica.json before the answer.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tandemdb.common import values
from tandemdb.common.http import ApiError, read_json
from tandemdb.common.roles import Role
from tandemdb.engine import RewindImpossible
from tandemdb.engine.blobstore import write_durably
from tandemdb.engine.lost import describe

from .metrics import add_route
from .record import Peer, Record, parse_version
from .replicas import Replica, run_sync

if TYPE_CHECKING:
    from .app import Node

MAX_WAIT = 30.0  # the longest a `wait` call may wait
DEFAULT_WAIT = 10.0
DRAIN_TIMEOUT = 30.0  # a fence gives the commit in flight this long to finish


def _body(raw: object) -> dict:
    if not isinstance(raw, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return raw


def _int(body: dict, key: str, minimum: int) -> int:
    value = body.get(key)
    if type(value) is not int or value < minimum:
        raise ApiError(400, "bad_request", f"{key} must be an integer >= {minimum}")
    return value


def _known_epoch(replica: Replica) -> int:
    env = replica.require_env()
    return max(replica.record.epoch, env.epoch)


def _newer(record: Record, version: int) -> Record | None:
    """The record with the caller's catalog version, if that is newer (else None): an
    idempotent retry still raises the version, so late heartbeat answers stay ignored."""
    return replace(record, version=version) if version > record.version else None


def _stale(replica: Replica, action: str, epoch: int, known: int) -> ApiError:
    return ApiError(409, "stale_epoch", f"cannot {action} replica {replica.name} at epoch "
                    f"{epoch}: it already knows epoch {known}")


class Fencing:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.replicas = node.replicas

    # -- fence ------------------------------------------------------------------------------
    async def fence(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        body = _body(await read_json(request))
        epoch, version = _int(body, "epoch", 1), parse_version(body)

        def decide(r: Replica) -> Record | None:
            record, known = r.record, _known_epoch(r)
            if epoch < known:
                raise _stale(r, "fence", epoch, known)
            if record.role == Role.FENCED and record.epoch == epoch:
                return _newer(record, version)  # fenced already: the same final lsn
            if record.role != Role.PRIMARY:
                raise ApiError(409, "not_primary", f"cannot fence replica {r.name}: it is "
                               f"{record.role} at epoch {record.epoch}, not primary")
            if epoch != known:
                raise ApiError(409, "epoch_mismatch", f"cannot fence replica {r.name} at "
                               f"epoch {epoch}: it is primary at epoch {known}")
            return replace(record, role=Role.FENCED, version=max(record.version, version))

        await self.replicas.transition(replica, decide)
        await self._drained(replica)
        record, env = replica.record, replica.require_env()
        if record.role != Role.FENCED or record.epoch != epoch:  # unfenced meanwhile
            raise ApiError(409, "conflict", f"replica {replica.name} was changed to "
                           f"{record.role} at epoch {record.epoch} while being fenced")
        return JSONResponse({"final_lsn": env.last_lsn, "epoch": epoch})

    async def _drained(self, replica: Replica) -> None:
        """Wait until no data API commit of this replica is in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT
        while replica.in_flight:
            if loop.time() >= deadline:
                raise ApiError(503, "busy", f"replica {replica.name} is fenced but a commit "
                               "is still in flight; retry the fence", {"Retry-After": "1"})
            fut = loop.create_future()
            replica.add_waiter(fut)
            try:
                await asyncio.wait_for(fut, 0.1)
            except TimeoutError:
                pass
            finally:
                replica.remove_waiter(fut)

    # -- wait -------------------------------------------------------------------------------
    async def wait(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        body = _body(await read_json(request))
        lsn = _int(body, "lsn", 0)
        timeout = body.get("timeout", DEFAULT_WAIT)
        if type(timeout) not in (int, float) or not timeout >= 0:
            raise ApiError(400, "bad_request", "timeout must be a non-negative number")
        timeout = min(float(timeout), MAX_WAIT)
        if not await replica.wait_for_lsn(lsn, timeout):
            have = replica.env.last_lsn if replica.env is not None else 0
            raise ApiError(503, "lsn_not_reached",
                           f"replica {replica.name} on node {self.node.name} has applied lsn "
                           f"{have}, not lsn {lsn}, after {timeout:g}s", {"Retry-After": "1"})
        env = replica.require_env()
        committed_at = await run_sync(env.last_committed_at)
        return JSONResponse({"applied_lsn": env.last_lsn, "epoch": env.epoch,
                             "last_committed_at": committed_at})

    # -- promote ----------------------------------------------------------------------------
    async def promote(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        body = _body(await read_json(request))
        epoch = _int(body, "epoch", 1)
        expected = _int(body, "expected_lsn", 0)
        version = parse_version(body)
        raw = body.get("secondaries") or []
        if not isinstance(raw, list):
            raise ApiError(400, "bad_request", "secondaries must be a list")
        secondaries = tuple(Peer.parse(s, "each secondary") for s in raw)

        def decide(r: Replica) -> Record | None:
            record, env = r.record, r.require_env()
            if record.role == Role.PRIMARY and record.epoch == epoch \
                    and (epoch, expected) in [tuple(h) for h in env.epoch_history]:
                # Promoted already (a retry, or the controller's heartbeat answer came first):
                # the listed secondaries still hold everything up to the final lsn.
                for peer in secondaries:
                    env.acknowledge(peer.node, expected)
                return _newer(record, version)
            known = _known_epoch(r)
            if epoch <= known:
                raise _stale(r, "promote", epoch, known)
            if record.role != Role.SECONDARY:
                raise ApiError(409, "not_secondary", f"cannot promote replica {r.name}: it "
                               f"is {record.role} at epoch {record.epoch}, not a secondary")
            if env.last_lsn != expected:
                raise ApiError(409, "lsn_mismatch", f"cannot promote replica {r.name}: it "
                               f"has applied lsn {env.last_lsn}, but the final lsn of the old "
                               f"primary is {expected}; a promotion needs exactly that lsn")
            # The listed secondaries (the fenced old primary) hold everything up to the final
            # lsn: register them there, so lag and the RPO guard start from it, not from 0.
            for peer in secondaries:
                env.acknowledge(peer.node, expected)
            return Record(Role.PRIMARY, epoch, None, secondaries, record.type,
                          record.rpo_limit_seconds, max(record.version, version))

        if await self.replicas.transition(replica, decide):
            replica.stream_error = None  # it no longer pulls
        for peer in secondaries:
            consumer = replica.consumers.get(peer.node)
            if consumer is not None and consumer.acked_lsn < expected:
                consumer.advance(expected)
                consumer.persisted_lsn = max(consumer.persisted_lsn, expected)
        return JSONResponse({"epoch": epoch, "lsn": expected})

    # -- unfence ----------------------------------------------------------------------------
    async def unfence(self, request: Request) -> JSONResponse:
        replica = self.replicas.get(request.path_params["env"])
        body = _body(await read_json(request))
        epoch, version = _int(body, "epoch", 1), parse_version(body)

        def decide(r: Replica) -> Record | None:
            record, known = r.record, _known_epoch(r)
            if record.role == Role.PRIMARY and record.epoch == epoch == known:
                return _newer(record, version)  # unfenced already (a retried call)
            if record.role != Role.FENCED or record.epoch != epoch or known != epoch:
                raise ApiError(409, "not_fenced", f"cannot unfence replica {r.name} at epoch "
                               f"{epoch}: it is {record.role} at epoch {record.epoch} (known "
                               f"epoch {known})")
            return replace(record, role=Role.PRIMARY, version=max(record.version, version))

        await self.replicas.transition(replica, decide)
        env = replica.require_env()
        return JSONResponse({"epoch": epoch, "role": replica.role, "lsn": env.last_lsn})


    # -- rewind -----------------------------------------------------------------------------
    async def rewind(self, request: Request) -> JSONResponse:
        """Take a fenced old primary back to the fork point of a forced failover; answer
        the lost writes (the entries after it, described) whether or not it could rewind.

        The bundle is written to the replica's directory before anything is undone, so a
        repeated call (the controller restarted) answers the same writes."""
        replica = self.replicas.get(request.path_params["env"])
        body = _body(await read_json(request))
        fork, epoch = _int(body, "fork_lsn", 0), _int(body, "epoch", 1)
        async with replica.lock:
            if replica.record.role != Role.FENCED:
                raise ApiError(409, "not_fenced", f"cannot rewind replica {replica.name}: it "
                               f"is {replica.record.role}; only a fenced old primary rewinds")
            answer = await run_sync(self._rewind, replica, fork, epoch)
        replica.notify()
        return JSONResponse(answer)

    @staticmethod
    def _rewind(replica: Replica, fork: int, epoch: int) -> dict:
        env = replica.require_env()
        path = replica.directory / f"lost-{epoch}-{fork}.json"
        if not path.exists():
            entries: list = []
            while True:
                batch = env.read_journal(entries[-1].lsn if entries else fork)
                if not batch:
                    break
                entries.extend(batch)
            bundle = {"fork_lsn": fork, "epoch": epoch, "last_lsn": env.last_lsn,
                      "entries": [describe(e, env.columns) for e in entries]}
            write_durably(path, values.dumps(bundle))  # BLOBs as {"$blob": base64}
        bundle = json.loads(path.read_bytes())
        reason = None
        if env.last_lsn > fork:
            try:
                env.rewind(fork)
            except RewindImpossible as exc:
                reason = str(exc)
        return {**bundle, "rewound": env.last_lsn == fork, "reason": reason}


def install(app: FastAPI, node: Node) -> Fencing:
    fencing = Fencing(node)
    base = "/internal/v1/replicas/{env}"
    add_route(app, base + "/fence", fencing.fence, methods=["POST"])
    add_route(app, base + "/wait", fencing.wait, methods=["POST"])
    add_route(app, base + "/promote", fencing.promote, methods=["POST"])
    add_route(app, base + "/unfence", fencing.unfence, methods=["POST"])
    add_route(app, base + "/rewind", fencing.rewind, methods=["POST"])
    return fencing
