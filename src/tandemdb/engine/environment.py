"""`Environment`: one tenant environment on one node (a SQL database plus its files).

Everything an environment does to its data goes through here: tenant transactions (each
write makes one journal entry in the same SQLite commit), files, journal reading and
truncation, applying entries on a replica, rewind, snapshots, garbage collection and the
logical checksum. One connection and one lock serialise the work; the lock is never held
across network I/O.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import checksum as checksum_mod
from . import snapshot as snapshot_mod
from .apply import ReplicaApply
from .blobstore import BlobStore, LocalBlobStore, digest_of
from .errors import (
    EngineError,
    FileNotFound,
    MissingBlobs,
    StaleEpoch,
)
from .exactness import KeyGuards
from .files import FileInfo, FileTable, normalise_path, normalise_prefix
from .journal import Journal, JournalEntry
from .recorder import Recorder
from .results import Statement, StatementResult, TxResult
from .sandbox import Limits, Sandbox
from .schema import DB_FILE, open_database
from .statements import StatementRunner


class _GroupRolledBack(Exception):
    """SQLite rolled back a whole group commit: nothing of it was written."""


class Environment(ReplicaApply):
    """One environment replica: open it on a directory, then execute, apply, rewind …
    (apply and rewind, a replica's own write paths, are in apply.py)."""

    def __init__(self, directory: Path | str, *, blobs: BlobStore | None = None,
                 limits: Limits | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.blobs = blobs or LocalBlobStore(self.directory / "blobs")
        self.limits = limits or Limits()
        self._lock = threading.RLock()
        self._conn = open_database(self.directory / DB_FILE)
        self._sandbox = Sandbox(self._conn)
        self._runner = StatementRunner(self._conn, self._sandbox)
        self._guards = KeyGuards(self._conn)  # refuses writes the journal would get wrong
        self._journal = Journal(self._conn)
        self._files = FileTable(self._conn)
        self._pins: Counter[str] = Counter()
        with self._write_tx():
            if self._conn.execute("SELECT count(*) FROM _tandem_epochs").get == 0:
                self._conn.execute("INSERT INTO _tandem_epochs VALUES (1, 0)")
        self._last_lsn = self._journal.last_lsn()
        self._epochs: list[tuple[int, int]] = list(
            self._conn.execute("SELECT epoch, start_lsn FROM _tandem_epochs ORDER BY epoch"))
        self._epoch = max(self._meta("epoch", 1), self._epochs[-1][0])

    # -- state ------------------------------------------------------------------------
    @property
    def last_lsn(self) -> int:
        """The lsn of the newest committed entry (0 before the first write)."""
        return self._last_lsn

    def last_committed_at(self) -> float | None:
        """When the newest entry was committed (its primary's clock), if it is retained:
        how old the last write a forced promotion keeps is."""
        with self._lock:
            stamp = self._journal.stamp_at(self._last_lsn)
        return stamp[1] if stamp else None

    @property
    def epoch(self) -> int:
        """The newest epoch this replica knows; it refuses anything older."""
        return self._epoch

    @property
    def epoch_history(self) -> list[tuple[int, int]]:
        """(epoch, start_lsn) pairs: epoch E's entries have lsn > start_lsn."""
        return list(self._epochs)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the environment still: no commit, apply or rewind runs until the block ends.

        Re-entrant, so engine calls inside the block work. A node uses it to check a
        replica's lsn and change its role as one step."""
        with self._lock:
            yield

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _meta(self, key: str, default: int) -> int:
        value = self._conn.execute(
            "SELECT value FROM _tandem_meta WHERE key = ?", (key,)).get
        return default if value is None else value

    def _set_meta(self, key: str, value: int) -> None:
        self._conn.execute(
            "INSERT INTO _tandem_meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @contextmanager
    def _write_tx(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error (the caller holds the lock)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    # -- tenant transactions ----------------------------------------------------------------
    def execute(self, statements: Sequence, *, limits: Limits | None = None,
                read_only: bool = False,
                before_commit: Callable[[], None] | None = None) -> TxResult:
        """Run statements as one transaction; a write makes one journal entry, atomically.

        With `read_only` (a secondary serving reads) any write or DDL raises ReadOnly.
        `before_commit` runs after the statements, right before COMMIT: if it raises, the
        whole transaction rolls back (a primary's last lease check, docs/leases.md)."""
        stmts = [Statement.of(s) for s in statements]
        limits = limits or self.limits
        with self._lock:
            with self._write_tx():
                recorder = Recorder(self._conn, self._guards)
                results = self._run_statements(recorder, stmts, limits, read_only)
                entry = self._seal(recorder, self._last_lsn + 1)
                if before_commit is not None:
                    before_commit()
            if entry is not None:
                self._last_lsn = entry.lsn
            return TxResult(results, self._last_lsn, self._epoch)

    def execute_group(self, transactions: Sequence[Sequence], *,
                      limits: Limits | None = None,
                      before_commit: Callable[[], None] | None = None,
                      ) -> list[TxResult | EngineError]:
        """Group commit: many client transactions, one SQLite commit (one fsync).

        Each runs in its own savepoint and gets its own journal entry; one that fails is
        rolled back alone and reported in its slot, the others commit together.
        `before_commit` is as for `execute`: if it raises, none of them commits.
        """
        limits = limits or self.limits
        failed: dict[int, EngineError] = {}
        with self._lock:
            while True:
                try:
                    return self._group_once(transactions, limits, before_commit, failed)
                except _GroupRolledBack:
                    continue  # nothing of the group was written: run it again without that one

    def _group_once(self, transactions: Sequence[Sequence], limits: Limits,
                    before_commit: Callable[[], None] | None,
                    failed: dict[int, EngineError]) -> list[TxResult | EngineError]:
        """One attempt at a group; the transactions in `failed` keep their error."""
        with self._lock:
            outcomes: list[tuple[list[StatementResult], int] | EngineError] = []
            lsn = self._last_lsn
            with self._write_tx():
                for i, statements in enumerate(transactions):
                    if i in failed:
                        outcomes.append(failed[i])
                        continue
                    self._conn.execute("SAVEPOINT client_tx")
                    try:
                        stmts = [Statement.of(s) for s in statements]
                        recorder = Recorder(self._conn, self._guards)
                        results = self._run_statements(recorder, stmts, limits)
                        entry = self._seal(recorder, lsn + 1)
                    except EngineError as err:
                        if not self._conn.in_transaction:
                            # A write stopped by the time limit (SQLITE_INTERRUPT) makes SQLite
                            # roll back the whole transaction, the others' savepoints with it.
                            failed[i] = err
                            raise _GroupRolledBack from None
                        self._conn.execute("ROLLBACK TO client_tx")
                        self._conn.execute("RELEASE client_tx")
                        outcomes.append(err)
                        continue
                    self._conn.execute("RELEASE client_tx")
                    if entry is not None:
                        lsn = entry.lsn
                    outcomes.append((results, lsn))
                if before_commit is not None:
                    before_commit()
            self._last_lsn = lsn
            return [o if isinstance(o, EngineError) else TxResult(o[0], o[1], self._epoch)
                    for o in outcomes]

    def _run_statements(self, recorder: Recorder, stmts: list[Statement], limits: Limits,
                        read_only: bool = False) -> list[StatementResult]:
        try:
            return [self._runner.run(recorder, s, limits, read_only) for s in stmts]
        except BaseException:
            recorder.discard()
            raise

    def _seal(self, recorder: Recorder, lsn: int) -> JournalEntry | None:
        """Turn what the recorder saw into a journal entry, written in the open transaction."""
        segments = recorder.finish()
        if not segments:
            return None
        entry = JournalEntry(lsn, self._epoch, time.time(), segments, tuple(recorder.blobs))
        self._journal.append(entry)
        return entry

    # -- files -----------------------------------------------------------------------------
    def put_file(self, path: str, data: bytes, *,
                 before_commit: Callable[[], None] | None = None) -> TxResult:
        """Store a file: the blob is durable before the row that references it commits.
        `before_commit` is as for `execute`."""
        path = normalise_path(path)
        with self.staged_blob(data) as digest:

            def write(recorder: Recorder) -> None:
                old = self._files.lookup(path)
                self._files.upsert(FileInfo(path, digest, len(data), time.time()))
                recorder.blobs.append(digest)
                if old is not None and old.hash != digest:
                    recorder.blobs.append(old.hash)  # a rewind restores the old row

            return self._internal_tx(write, before_commit)

    def delete_file(self, path: str, *,
                    before_commit: Callable[[], None] | None = None) -> TxResult:
        path = normalise_path(path)

        def remove(recorder: Recorder) -> None:
            old = self._files.lookup(path)
            if old is None:
                raise FileNotFound(f"no file {path!r}")
            self._files.remove(path)
            recorder.blobs.append(old.hash)

        return self._internal_tx(remove, before_commit)

    def stat_file(self, path: str) -> FileInfo:
        path = normalise_path(path)
        with self._lock:
            info = self._files.lookup(path)
        if info is None:
            raise FileNotFound(f"no file {path!r}")
        return info

    def get_file(self, path: str) -> bytes:
        with self._lock:
            info = self.stat_file(path)
            try:
                return self.blobs.get(info.hash)
            except KeyError:
                raise MissingBlobs([info.hash]) from None

    def list_files(self, prefix: str = "") -> list[FileInfo]:
        prefix = normalise_prefix(prefix)
        with self._lock:
            return self._files.list(prefix)

    def _internal_tx(self, body: Callable[[Recorder], None],
                     before_commit: Callable[[], None] | None) -> TxResult:
        """A write made by the engine itself (files), journaled like a tenant transaction."""
        with self._lock:
            with self._write_tx():
                recorder = Recorder(self._conn, self._guards)
                try:
                    body(recorder)
                except BaseException:
                    recorder.discard()
                    raise
                entry = self._seal(recorder, self._last_lsn + 1)
                if before_commit is not None:
                    before_commit()
            if entry is not None:
                self._last_lsn = entry.lsn
            return TxResult([], self._last_lsn, self._epoch)

    @contextmanager
    def staged_blob(self, data: bytes) -> Iterator[str]:
        """Make `data` a durable blob, pinned against garbage collection until the block
        ends (the row that references it commits inside); yields its digest. Call it
        without the lock held: the fsync is the slow part of a file write."""
        digest = digest_of(data)
        with self.pin_blobs([digest]):
            self.blobs.put(data)
            yield digest

    @contextmanager
    def pin_blobs(self, digests: Iterable[str]) -> Iterator[None]:
        """Keep blobs from garbage collection while a row that needs them is being written."""
        digests = list(digests)
        with self._lock:
            self._pins.update(digests)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(digests)
                self._pins += Counter()  # drop zero counts

    # -- journal ---------------------------------------------------------------------------
    def read_journal(self, after: int, *, max_entries: int = 1000,
                     max_bytes: int = 4 << 20) -> list[JournalEntry]:
        """Entries after lsn `after`, oldest first, within the budgets."""
        with self._lock:
            return self._journal.read_after(after, max_entries, max_bytes)

    def columns(self, table: str) -> list[str]:
        """A table's column names in order ([] if it does not exist)."""
        with self._lock:
            return [row[1] for row in self._conn.execute(
                "SELECT * FROM pragma_table_info(?)", (table,))]

    def first_lsn(self) -> int:
        with self._lock:
            return self._journal.first_lsn()

    def acknowledge(self, consumer: str, lsn: int) -> None:
        """Record that `consumer` (a secondary) has applied up to `lsn`; it persists."""
        with self._lock, self._write_tx():
            self._conn.execute(
                "INSERT INTO _tandem_consumers(name, acked_lsn) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET acked_lsn = max(acked_lsn, excluded.acked_lsn)",
                (consumer, lsn))

    def forget_consumer(self, consumer: str) -> None:
        with self._lock, self._write_tx():
            self._conn.execute("DELETE FROM _tandem_consumers WHERE name = ?", (consumer,))

    def consumers(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conn.execute("SELECT name, acked_lsn FROM _tandem_consumers"))

    def truncate_journal(self, upto: int | None = None) -> int:
        """Delete entries every consumer has acknowledged (and <= upto). Returns the count."""
        with self._lock:
            limit = self._last_lsn if upto is None else min(upto, self._last_lsn)
            acked = self.consumers().values()
            if acked:
                limit = min(limit, min(acked))
            with self._write_tx():
                return self._journal.truncate(limit)

    # -- epochs ----------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        """Promotion: from now on this replica writes in `epoch`, starting after last_lsn."""
        with self._lock:
            if epoch <= self._epoch:
                raise StaleEpoch(f"cannot begin epoch {epoch}: this replica already knows "
                                 f"epoch {self._epoch}")
            with self._write_tx():
                self._conn.execute("INSERT INTO _tandem_epochs VALUES (?, ?)",
                                   (epoch, self._last_lsn))
                self._set_meta("epoch", epoch)
            self._epochs.append((epoch, self._last_lsn))
            self._epoch = epoch

    def observe_epoch(self, epoch: int) -> None:
        """Fencing: learn that `epoch` exists, so anything older is refused from now on."""
        with self._lock:
            if epoch > self._epoch:
                with self._write_tx():
                    self._set_meta("epoch", epoch)
                self._epoch = epoch

    # -- snapshots, checksum, garbage ------------------------------------------------------
    def snapshot(self, dest: Path | None = None) -> snapshot_mod.Snapshot:
        """A consistent copy (SQLite backup API) that carries its own lsn and epoch.

        Snapshots kept in this environment's `snapshots/` folder pin their blobs against
        garbage collection until `drop_snapshot`."""
        with self._lock:
            return snapshot_mod.take(self._conn, self.directory, self._last_lsn, self._epoch,
                                     dest)

    def drop_snapshot(self, snap: snapshot_mod.Snapshot) -> None:
        Path(snap.path).unlink(missing_ok=True)

    @classmethod
    def restore(cls, snapshot_path: Path, directory: Path | str, fetch_blob,
                **kwargs) -> Environment:
        """Seed a new replica from a snapshot; `fetch_blob(digest) -> bytes` supplies files."""
        snapshot_mod.restore(Path(snapshot_path), Path(directory), fetch_blob,
                             blobs=kwargs.get("blobs"))
        return cls(directory, **kwargs)

    def checksum(self) -> checksum_mod.Checksum:
        """Logical checksum of rows, schema and files; equal on replicas with equal content."""
        with self._lock:
            return checksum_mod.compute(self._conn, self.blobs)

    def collect_garbage(self) -> int:
        """Delete blobs no file row, retained journal entry, snapshot or pin needs."""
        with self._lock:
            roots = self._files.digests() | self._journal.blob_refs() | set(self._pins)
            roots |= snapshot_mod.kept_blob_refs(self.directory)
            removed = 0
            for digest in list(self.blobs.digests()):
                if digest not in roots:
                    self.blobs.delete(digest)
                    removed += 1
            return removed

