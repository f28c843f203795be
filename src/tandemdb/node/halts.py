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

import json
import logging
import os
import time
import uuid
from pathlib import Path

import apsw

from tandemdb.engine import EngineError, JournalGap, JournalTruncated, MissingBlobs, StaleEpoch
from tandemdb.engine.blobstore import write_durably

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
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
