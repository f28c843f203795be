"""A replica's own writes: apply the primary's entries, and rewind after a forced failover.

Part of `Environment` (environment.py), kept apart because these are the engine's only
writes that do not come from a tenant: they replay recorded changesets (with triggers off:
their effects are recorded too) instead of running SQL, and keep the epoch history exact.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import apsw

from .blobstore import BlobStore
from .errors import DivergentHistory, JournalGap, MissingBlobs, RewindImpossible, StaleEpoch
from .journal import Journal, JournalEntry
from .replay import replay_segments, undo_segments


class ReplicaApply:
    """`Environment.apply` and `Environment.rewind` (state and helpers: environment.py)."""

    blobs: BlobStore
    _lock: threading.RLock
    _conn: apsw.Connection
    _journal: Journal
    _last_lsn: int
    _epoch: int
    _epochs: list[tuple[int, int]]
    _write_tx: Callable[[], AbstractContextManager[None]]
    _set_meta: Callable[[str, int], None]

    @contextmanager
    def _triggers_off(self) -> Iterator[None]:
        """Replicas apply changesets with triggers disabled: their effects are recorded."""
        self._conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
        try:
            yield
        finally:
            self._conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1)

    def _epoch_in_force(self, lsn: int, history: list[tuple[int, int]]) -> int:
        return max(e for e, start in history if start < lsn)

    # -- replica apply -------------------------------------------------------------------
    def apply(self, entries: Sequence[JournalEntry], *, sender_epoch: int | None = None) -> int:
        """Apply entries from the primary, in lsn order, exactly once. Returns last_lsn.

        Entries at or below last_lsn are skipped (idempotent retries); a gap, an entry from a
        superseded epoch, a missing blob or any row conflict is an error and nothing of the
        batch is applied.
        """
        if not entries:
            return self._last_lsn
        sender = sender_epoch if sender_epoch is not None else max(e.epoch for e in entries)
        with self._lock:
            if sender < self._epoch:
                raise StaleEpoch(f"entries come from a primary in epoch {sender}, but this "
                                 f"replica knows epoch {self._epoch}; refusing them")
            fresh = [e for e in entries if e.lsn > self._last_lsn]
            self._check_already_applied([e for e in entries if e.lsn <= self._last_lsn])
            missing = sorted({d for e in fresh for d in e.blobs if not self.blobs.has(d)})
            if missing:
                raise MissingBlobs(missing)
            lsn, history = self._last_lsn, list(self._epochs)
            with self._write_tx(), self._triggers_off():
                for entry in fresh:
                    if entry.lsn != lsn + 1:
                        raise JournalGap(f"expected lsn {lsn + 1}, got {entry.lsn}: "
                                         "entries must be applied in order without gaps")
                    self._check_entry_epoch(entry, sender, history)
                    replay_segments(self._conn, entry.segments, lsn=entry.lsn)
                    self._journal.append(entry)
                    if entry.epoch > history[-1][0]:
                        history.append((entry.epoch, entry.lsn - 1))
                        self._conn.execute("INSERT INTO _tandem_epochs VALUES (?, ?)",
                                           history[-1])
                    lsn = entry.lsn
                if sender > self._epoch:
                    self._set_meta("epoch", sender)
            self._last_lsn, self._epochs = lsn, history
            self._epoch = max(self._epoch, sender)
            return lsn

    def _check_already_applied(self, entries: list[JournalEntry]) -> None:
        for entry in entries:
            mine = self._journal.stamp_at(entry.lsn)
            if mine is not None and mine != (entry.epoch, entry.committed_at):
                raise DivergentHistory(
                    f"lsn {entry.lsn} here is not the sender's lsn {entry.lsn} (epoch "
                    f"{mine[0]} vs {entry.epoch}): histories forked, rewind this replica "
                    "to the fork point")

    def _check_entry_epoch(self, entry: JournalEntry, sender: int,
                           history: list[tuple[int, int]]) -> None:
        if entry.epoch > sender:
            raise DivergentHistory(f"lsn {entry.lsn} claims epoch {entry.epoch}, newer than "
                                   f"its sender's epoch {sender}")
        in_force = self._epoch_in_force(entry.lsn, history)
        if entry.epoch < in_force:
            raise StaleEpoch(f"lsn {entry.lsn} was written in epoch {entry.epoch}, but epoch "
                             f"{in_force} is in force from that lsn on: it comes from a "
                             "superseded primary")

    # -- rewind ----------------------------------------------------------------------------
    def rewind(self, to_lsn: int) -> list[JournalEntry]:
        """Undo every entry after `to_lsn`, newest first; return them (the lost writes).

        Refuses (RewindImpossible) when an entry after `to_lsn` changed the schema or was
        already truncated: then the replica needs a full copy from a snapshot.
        """
        with self._lock:
            if to_lsn >= self._last_lsn:
                return []
            first = self._journal.first_lsn()
            if to_lsn < 0 or to_lsn + 1 < first:
                raise RewindImpossible(f"cannot rewind to lsn {to_lsn}: the journal starts at "
                                       f"lsn {first}; re-seed this replica from a snapshot")
            entries = list(self._journal.iter_after(to_lsn))
            with_ddl = [e.lsn for e in entries if e.ddl]
            if with_ddl:
                raise RewindImpossible(f"cannot rewind past schema changes (lsn {with_ddl}); "
                                       "re-seed this replica from a snapshot")
            with self._write_tx(), self._triggers_off():
                for entry in reversed(entries):
                    undo_segments(self._conn, entry.segments, lsn=entry.lsn)
                self._journal.delete_after(to_lsn)
                self._conn.execute("DELETE FROM _tandem_epochs WHERE start_lsn >= ? AND "
                                   "epoch > (SELECT min(epoch) FROM _tandem_epochs)", (to_lsn,))
            self._last_lsn = to_lsn
            self._epochs = list(self._conn.execute(
                "SELECT epoch, start_lsn FROM _tandem_epochs ORDER BY epoch"))
            return entries
