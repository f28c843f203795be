"""Halted streams: a secondary that cannot apply an entry stops that environment's stream.

Some apply errors are fixed by waiting: blobs not fetched yet, a failover in progress
(`StaleEpoch`), the peer down. Others are **poison**: the entry does not apply to this
replica's data (`ApplyConflict`, a DDL or changeset that SQLite refuses, a forked
history), and applying it again gives the same answer every time. Retrying those once a
second only grows the lag until the primary's RPO guard refuses every write, with nothing
saying why (issue 9). So the puller halts that replica's stream instead: it records the
halt in `halted.json` beside the replica's `replica.json`, logs it once, reports it in
heartbeats (the controller emits `replication.halted` and shows it in the environment's
answer) and sets `tandem_replication_halted{env}` = 1.

A restart does not retry: nothing about the entry or the replica's data changed, so the
halt is read back at start. What ends it: re-seeding the replica from a snapshot of its
primary (`POST /internal/v1/replicas/{env}/reseed`, which the controller's
`POST /v1/environments/{env}/replicas/{region}/reseed` calls), or a new role for the
replica (no longer a secondary, or a secondary of another primary node).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path

import apsw

from tandemdb.common.roles import Role
from tandemdb.engine import (
    EngineError,
    Environment,
    JournalGap,
    JournalTruncated,
    MissingBlobs,
    StaleEpoch,
)
from tandemdb.engine.blobstore import fsync_path, write_durably

from .replicas import Replica, ReplicaSet, run_sync

log = logging.getLogger("tandem.node.halts")

HALT_FILE = "halted.json"

# Engine errors a retry can fix: the blobs come, the new record comes, the seed comes.
TRANSIENT_ENGINE = (MissingBlobs, StaleEpoch, JournalGap, JournalTruncated)
# SQLite errors that mean "this statement cannot run on this data", not "not now" (busy,
# locked, disk full, I/O, the replica closed under us while it was being re-seeded).
POISON_SQLITE = (apsw.SQLError, apsw.ConstraintError, apsw.MismatchError, apsw.RangeError,
                 apsw.TooBigError, apsw.CorruptError, apsw.NotADBError, apsw.AbortError)


def is_poison(exc: BaseException) -> bool:
    """Whether applying the same entries again to the same replica must fail the same way."""
    if isinstance(exc, EngineError):
        return not isinstance(exc, TRANSIENT_ENGINE)
    return isinstance(exc, POISON_SQLITE)


def error_code(exc: BaseException) -> str:
    """A stable code for the cause: the engine's (`apply_conflict` …) or SQLite's class."""
    if isinstance(exc, EngineError):
        return exc.code
    return f"sqlite_{type(exc).__name__.removesuffix('Error').lower() or 'error'}"


def new_halt(*, lsn: int, applied_lsn: int, exc: BaseException, primary: str | None,
             epoch: int) -> dict:
    """The halt as recorded, reported in heartbeats and shown in the environment's answer."""
    return {"id": uuid.uuid4().hex[:16], "lsn": lsn, "applied_lsn": applied_lsn,
            "code": error_code(exc), "message": str(exc) or type(exc).__name__,
            "primary_node": primary, "epoch": epoch, "at": round(time.time(), 3)}


def load(directory: Path) -> dict | None:
    """The halt recorded in a replica's directory, if any (read at node start)."""
    path = directory / HALT_FILE
    try:
        halt = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # Unreadable: keep the replica halted rather than stream past a poison entry.
        log.error("cannot read %s (%s); the replica stays halted until it is re-seeded",
                  path, exc)
        return {"id": "unreadable", "lsn": None, "applied_lsn": None, "code": "unknown",
                "message": f"{HALT_FILE} is unreadable: {exc}", "primary_node": None,
                "epoch": None, "at": None}
    return halt if isinstance(halt, dict) else None


def save(directory: Path, halt: dict) -> None:
    """Record the halt durably (blocking: run it in a worker thread)."""
    write_durably(directory / HALT_FILE, json.dumps(halt, indent=2).encode())


def remove(directory: Path) -> None:
    """Forget the halt durably (blocking): a crash right after must not bring it back."""
    path = directory / HALT_FILE
    if not path.exists():
        return
    path.unlink()
    fsync_path(directory)


class Halts:
    """The halted streams of one node's secondaries (the puller's bookkeeping, on the loop):
    read back at start, recorded when an entry is poison, ended by a re-seed or a new role."""

    def __init__(self, replicas: ReplicaSet, region: str) -> None:
        self.replicas, self.region = replicas, region
        self._background: set[asyncio.Task] = set()  # kept referenced until done

    def tasks(self) -> list[asyncio.Task]:
        """What still runs in the background (the node stops: cancel them)."""
        return list(self._background)

    def read_back(self) -> None:
        """At start: read back the halts recorded before; a restart does not retry them."""
        for replica in self.replicas:
            halt = replica.halted = load(replica.directory)
            if halt is not None:
                replica.stream_error = _halt_error(halt)
                log.warning("replica %s: replication stays halted since %s (%s); %s",
                            replica.name, _at(halt), replica.stream_error,
                            _fix(replica, self.region))

    async def halt(self, replica: Replica, env: Environment, exc: BaseException,
                   epoch: int) -> None:
        """Stop streaming `replica`: record why durably, say it once in the log. The
        heartbeat reports it; the controller tells tenants (`replication.halted`)."""
        async with replica.lock:  # after a re-seed or role change in progress
            primary = replica.record.primary
            if replica.dropped or replica.env is not env or replica.role != Role.SECONDARY \
                    or replica.seeding is not None or replica.halted is not None:
                return
            halt = new_halt(lsn=env.last_lsn + 1, applied_lsn=env.last_lsn, exc=exc,
                            primary=primary.node if primary else None, epoch=epoch)
            replica.halted, replica.stream_error = halt, _halt_error(halt)
            try:
                await run_sync(save, replica.directory, halt)
            except OSError as err:
                log.error("replica %s: cannot record its halt in %s (%s); it holds until "
                          "this node restarts", replica.name, HALT_FILE, err)
        log.error("replica %s: replication from %s HALTED at lsn %d, which does not apply to "
                  "this replica's data (%s: %s). Its geo-secondary here is no longer updated "
                  "and will not retry; %s", replica.name, halt["primary_node"], halt["lsn"],
                  halt["code"], halt["message"], _fix(replica, self.region))

    async def end(self, replica: Replica, why: str) -> None:
        """End the replica's halt, if it has one, because of `why` (a re-seed); the caller
        holds the replica's lock."""
        if replica.halted is not None:
            log.info("replica %s: %s; its halt at lsn %s ends", replica.name, why,
                     replica.halted.get("lsn"))
            replica.halted, replica.stream_error = None, None
            await run_sync(remove, replica.directory)

    def end_stale(self) -> None:
        """A halt is about one primary's entries on a secondary: it ends when the replica is
        no longer a secondary of that primary node (promoted, fenced, or moved)."""
        for replica in self.replicas:
            halt, primary = replica.halted, replica.record.primary
            if halt is None or (replica.role == Role.SECONDARY and primary is not None
                                and halt.get("primary_node") in (None, primary.node)):
                continue
            replica.halted, replica.stream_error = None, None
            log.info("replica %s is now %s%s: its halt at lsn %s ends", replica.name,
                     replica.role, f" of {primary.node}" if primary else "", halt.get("lsn"))
            task = asyncio.create_task(self._forget(replica))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _forget(self, replica: Replica) -> None:
        async with replica.lock:
            if replica.halted is None and not replica.dropped:
                try:
                    await run_sync(remove, replica.directory)
                except OSError as exc:
                    log.error("replica %s: cannot remove %s (%s)", replica.name, HALT_FILE, exc)


def _halt_error(halt: dict) -> str:
    return f"halted at lsn {halt.get('lsn')}: {halt.get('code')}: {halt.get('message')}"


def _at(halt: dict) -> str:
    at = halt.get("at")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "?"


def _fix(replica: Replica, region: str) -> str:
    return (f"re-seed it from a snapshot of its primary: tandem env reseed {replica.name} "
            f"--region {region} (POST /v1/environments/{replica.name}/replicas/{region}/reseed)")
