"""The SQLite backend of `Store`: one file, WAL, fsync on every commit.

Tables: `kv` (key, JSON value, version), `changes` (the recent writes, for watches) and
`meta` (the global revision, and up to where `changes` was trimmed). Each write bumps the
revision, writes the key and logs the change in one `BEGIN IMMEDIATE` transaction, so a
write and what watchers see of it cannot disagree, even after a crash. Writes that arrive
together share that transaction and its fsync (group commit, each in its own savepoint). A
`Txn` is one such savepoint for all its keys: it checks every expectation, then writes each
key with a revision of its own.

Watches wait on a `threading.Condition` that every write in this process notifies. They
also re-read the file every `POLL_SECONDS`, so a writer in another process wakes them too.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import DELETE, Change, Compacted, Item, Store, StoreError, Txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value TEXT
);
CREATE INDEX IF NOT EXISTS changes_key ON changes(key);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0), ('compacted', 0);
"""

POLL_SECONDS = 0.5
KEEP_CHANGES = 10_000  # watches further behind than this get Compacted
TRIM_EVERY = 1_000
# Upper bound of a key range: sorts after every key that starts with the prefix.
PREFIX_END = "\U0010ffff"


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class _Pending:
    """One writer's step waiting for a group commit, and what became of it."""

    __slots__ = ("done", "error", "result", "step")

    def __init__(self, step: Callable[[sqlite3.Connection], Any]) -> None:
        self.step = step
        self.result: Any = None
        self.error: Exception | None = None
        self.done = False


class SqliteStore(Store):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._closed = False
        self._queued = threading.Lock()  # guards `_queue` only, never held while writing
        self._queue: list[_Pending] = []

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        with self._lock:
            row = self._conn().execute(
                "SELECT value, version FROM kv WHERE key = ?", (key,)).fetchone()
        return Item(json.loads(row[0]), row[1]) if row else None

    def list(self, prefix: str, *, after: str | None = None, limit: int | None = None,
             reverse: bool = False) -> dict[str, Item]:
        # From the prefix itself, or from just after `after` when that sorts later.
        low, op = (prefix, ">=") if after is None or after < prefix else (after, ">")
        sql = (f"SELECT key, value, version FROM kv WHERE key {op} ? AND key < ? "
               f"ORDER BY key {'DESC' if reverse else 'ASC'}")
        args: list[Any] = [low, prefix + PREFIX_END]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(max(0, limit))
        with self._lock:
            rows = self._conn().execute(sql, args).fetchall()
        return {key: Item(json.loads(value), version) for key, value, version in rows}

    def revision(self) -> int:
        with self._lock:
            return self._meta("revision")

    def watch(self, prefix: str, after_revision: int, timeout: float) -> builtins.list[Change]:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._changed:
            while True:
                if self._closed:
                    return []
                changes = self._changes_after(prefix, after_revision)
                remaining = deadline - time.monotonic()
                if changes or remaining <= 0:
                    return changes
                self._changed.wait(min(remaining, POLL_SECONDS))

    # -- writes --------------------------------------------------------------------------

    def put(self, key: str, value: Any) -> int:
        encoded = _encode(value)
        return self._write(lambda db: self._set(db, key, encoded))

    def compare_and_set(self, key: str, expected_version: int | None, value: Any) -> bool:
        encoded = _encode(value)

        def cas(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()
            current = row[0] if row else None
            if current != expected_version:
                return False
            self._set(db, key, encoded)
            return True

        return self._write(cas)

    def commit(self, txn: Txn) -> dict[str, int] | None:
        writes = [(key, None if value is DELETE else _encode(value))
                  for key, value in txn.writes.items()]

        def apply(db: sqlite3.Connection) -> dict[str, int] | None:
            for key, expected in txn.expected.items():
                row = db.execute("SELECT version FROM kv WHERE key = ?", (key,)).fetchone()
                if (row[0] if row else None) != expected:
                    return None
            versions = {}
            for key, encoded in writes:
                if encoded is not None:
                    versions[key] = self._set(db, key, encoded)
                elif db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount:
                    self._log(db, key, None)
            return versions

        return self._write(apply)

    def delete(self, key: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            if db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 0:
                return False
            self._log(db, key, None)
            return True

        return self._write(remove)

    def close(self) -> None:
        with self._changed:
            if self._closed:
                return
            self._closed = True
            self._changed.notify_all()
            self._db.close()

    # -- internals (called with the lock held) -------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"store {self.path} is closed")
        return self._db

    def _meta(self, name: str) -> int:
        return self._conn().execute("SELECT value FROM meta WHERE name = ?",
                                    (name,)).fetchone()[0]

    def _write(self, step):
        """Run `step` in a write transaction; concurrent writers share one commit.

        Group commit: a writer queues its step, then takes the lock. Whoever holds the lock
        runs every queued step, each in a savepoint of its own (a step that raises is rolled
        back alone and gets its exception), and commits them with one fsync. A writer that
        finds its step already committed by another just returns its result. Under many
        concurrent operations (a region failover) this turns hundreds of fsyncs into a few.
        """
        pending = _Pending(step)
        with self._queued:
            self._queue.append(pending)
        with self._changed:
            if not pending.done:
                with contextlib.suppress(Exception):  # each writer gets its own error below
                    self._commit_queued()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _commit_queued(self) -> None:
        """Run and commit every queued step (the caller holds the lock)."""
        with self._queued:
            batch, self._queue = self._queue, []
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                for item in batch:
                    db.execute("SAVEPOINT step")
                    try:
                        item.result = item.step(db)
                        db.execute("RELEASE step")
                    except Exception as exc:  # handed to its own writer
                        db.execute("ROLLBACK TO step")
                        db.execute("RELEASE step")
                        item.error = exc
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except BaseException as exc:  # the commit failed: no step of the batch landed
            failure = exc if isinstance(exc, Exception) else StoreError(f"commit cut: {exc!r}")
            for item in batch:
                item.result, item.error = None, failure
            raise
        finally:
            for item in batch:
                item.done = True
            self._changed.notify_all()

    def _set(self, db: sqlite3.Connection, key: str, encoded: str) -> int:
        revision = self._log(db, key, encoded)
        db.execute("INSERT INTO kv(key, value, version) VALUES (?, ?, ?) "
                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                   "version = excluded.version", (key, encoded, revision))
        return revision

    def _log(self, db: sqlite3.Connection, key: str, encoded: str | None) -> int:
        """Bump the revision and record the change; trim old changes now and then."""
        revision = self._meta("revision") + 1
        db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        db.execute("INSERT INTO changes(revision, key, value) VALUES (?, ?, ?)",
                   (revision, key, encoded))
        if revision % TRIM_EVERY == 0 and revision > KEEP_CHANGES:
            horizon = revision - KEEP_CHANGES
            db.execute("DELETE FROM changes WHERE revision <= ?", (horizon,))
            db.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (horizon,))
        return revision

    def _changes_after(self, prefix: str, after_revision: int) -> builtins.list[Change]:
        db = self._conn()
        compacted = self._meta("compacted")
        if after_revision < compacted:
            raise Compacted(f"changes up to revision {compacted} were trimmed; "
                            f"re-read the keys and watch from the current revision")
        rows = db.execute(
            "SELECT revision, key, value FROM changes WHERE revision > ? "
            "AND key >= ? AND key < ? ORDER BY revision",
            (after_revision, prefix, prefix + PREFIX_END)).fetchall()
        return [Change(rev, key, None if value is None else json.loads(value))
                for rev, key, value in rows]
