"""The journal: the ordered log of an environment's committed transactions.

It lives in the environment's own SQLite file (table `_tandem_journal`) and is written in the
same SQLite transaction as the data, so a commit and its entry are atomic.

An entry's body is a list of *segments* in execution order: a changeset segment holds the row
changes recorded by the session extension, a DDL segment holds one schema statement as SQL
text. A plain DML transaction has exactly one changeset segment. Splitting at every DDL keeps
row changes and schema changes in their true order, so a replica replays them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import apsw
import msgpack

from .errors import JournalTruncated

DDL = 0
CHANGESET = 1

Segment = tuple[int, str | bytes]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One committed write transaction of one environment."""

    lsn: int
    epoch: int
    committed_at: float
    segments: tuple[Segment, ...]
    blobs: tuple[str, ...] = field(default=())

    @property
    def ddl(self) -> list[str]:
        """The schema statements the transaction ran, in order."""
        return [p for k, p in self.segments if k == DDL]  # type: ignore[misc]

    @property
    def changesets(self) -> list[bytes]:
        return [p for k, p in self.segments if k == CHANGESET]  # type: ignore[misc]

    @property
    def size(self) -> int:
        """Approximate encoded size, used for byte budgets."""
        return 32 + sum(len(p) for _, p in self.segments) + 64 * len(self.blobs)

    def to_wire(self) -> list:
        """Plain msgpack-able form for replication batches."""
        return [self.lsn, self.epoch, self.committed_at, [list(s) for s in self.segments],
                list(self.blobs)]

    @classmethod
    def from_wire(cls, raw: list) -> JournalEntry:
        lsn, epoch, committed_at, segments, blobs = raw
        return cls(int(lsn), int(epoch), float(committed_at),
                   tuple((int(k), p) for k, p in segments), tuple(blobs))


def encode_body(segments: tuple[Segment, ...]) -> bytes:
    return msgpack.packb(segments, use_bin_type=True)  # tuples pack as arrays


def decode_body(body: bytes) -> tuple[Segment, ...]:
    return tuple((k, p) for k, p in msgpack.unpackb(body, raw=False))


def _row_to_entry(row: tuple) -> JournalEntry:
    lsn, epoch, committed_at, body, blobs = row
    digests = tuple(msgpack.unpackb(blobs)) if blobs else ()
    return JournalEntry(lsn, epoch, committed_at, decode_body(body), digests)


class Journal:
    """Reads and writes `_tandem_journal` on a connection the caller already holds.

    The journal keeps its newest entry even when asked to truncate everything, so the
    environment's last lsn is always `max(lsn)` and never needs a second counter.
    """

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def append(self, entry: JournalEntry) -> None:
        blobs = msgpack.packb(list(entry.blobs)) if entry.blobs else None
        self._conn.execute(
            "INSERT INTO _tandem_journal(lsn, epoch, committed_at, body, blobs) "
            "VALUES (?, ?, ?, ?, ?)",
            (entry.lsn, entry.epoch, entry.committed_at, encode_body(entry.segments), blobs),
        )

    def last_lsn(self) -> int:
        return self._conn.execute("SELECT coalesce(max(lsn), 0) FROM _tandem_journal").get

    def first_lsn(self) -> int:
        """Lowest retained lsn (0 when the journal is empty)."""
        return self._conn.execute("SELECT coalesce(min(lsn), 0) FROM _tandem_journal").get

    def stamp_at(self, lsn: int) -> tuple[int, float] | None:
        """(epoch, committed_at) of a retained entry: enough to tell two histories apart."""
        return self._conn.execute(
            "SELECT epoch, committed_at FROM _tandem_journal WHERE lsn = ?", (lsn,)).fetchone()

    def get(self, lsn: int) -> JournalEntry | None:
        row = self._conn.execute(
            "SELECT lsn, epoch, committed_at, body, blobs FROM _tandem_journal WHERE lsn = ?",
            (lsn,)).fetchone()
        return _row_to_entry(row) if row else None

    def read_after(self, after: int, max_entries: int = 1000,
                   max_bytes: int = 4 << 20) -> list[JournalEntry]:
        """Entries with lsn > after, oldest first, within the budgets (at least one entry).

        Raises JournalTruncated when entries right after `after` were already truncated:
        the reader must be seeded from a snapshot instead.
        """
        first = self.first_lsn()
        if first and after + 1 < first:
            raise JournalTruncated(
                f"journal starts at lsn {first}; entries after lsn {after} were truncated, "
                "seed this replica from a snapshot")
        out: list[JournalEntry] = []
        used = 0
        for row in self._conn.execute(
                "SELECT lsn, epoch, committed_at, body, blobs FROM _tandem_journal "
                "WHERE lsn > ? ORDER BY lsn LIMIT ?", (after, max_entries)):
            entry = _row_to_entry(row)
            if out and used + entry.size > max_bytes:
                break
            out.append(entry)
            used += entry.size
        return out

    def iter_after(self, after: int) -> Iterator[JournalEntry]:
        """Every retained entry after `after`, oldest first (no budget)."""
        for row in self._conn.execute(
                "SELECT lsn, epoch, committed_at, body, blobs FROM _tandem_journal "
                "WHERE lsn > ? ORDER BY lsn", (after,)):
            yield _row_to_entry(row)

    def truncate(self, upto: int) -> int:
        """Delete entries with lsn <= upto, always keeping the newest. Returns rows deleted."""
        keep_from = min(upto, self.last_lsn() - 1)
        if keep_from <= 0:
            return 0
        self._conn.execute("DELETE FROM _tandem_journal WHERE lsn <= ?", (keep_from,))
        return self._conn.changes()

    def delete_after(self, lsn: int) -> None:
        """Drop entries after lsn (used by rewind, inside its transaction)."""
        self._conn.execute("DELETE FROM _tandem_journal WHERE lsn > ?", (lsn,))

    def blob_refs(self) -> set[str]:
        """Every blob digest a retained entry references (GC roots: a rewind may need them)."""
        refs: set[str] = set()
        for (blobs,) in self._conn.execute(
                "SELECT blobs FROM _tandem_journal WHERE blobs IS NOT NULL"):
            refs.update(msgpack.unpackb(blobs))
        return refs
