"""Records one transaction as journal segments with the SQLite session extension.

A session records row changes (not DDL). The recorder cuts the transaction at every DDL
statement: the rows changed before it become one changeset segment, the statement itself a
DDL segment, and a fresh session records what follows. No session is active while a DDL
statement runs, so a replica that replays the DDL text never sees its effects twice.
"""

from __future__ import annotations

import apsw

from .exactness import KeyGuards
from .journal import CHANGESET, DDL, Segment
from .keyless import KeylessWatch
from .schema import LOCAL_TABLES


def _replicated(table: str) -> bool:
    return table not in LOCAL_TABLES


class Recorder:
    """Collects the segments of one transaction (or one savepoint of a group commit)."""

    def __init__(self, conn: apsw.Connection, guards: KeyGuards | None = None) -> None:
        self._conn = conn
        self._guards = guards  # refuse what this recording would get wrong (exactness.py)
        # repair what the session gets wrong of tables keyed by rowid (keyless.py)
        self._keyless: KeylessWatch | None = guards.keyless if guards is not None else None
        self._segments: list[Segment] = []
        self._session: apsw.Session | None = self._start()
        self._closed_bytes = 0  # segments already cut: exact sizes
        self.blobs: list[str] = []

    def _start(self) -> apsw.Session:
        if self._guards is not None:
            self._guards.prepare()
        if self._keyless is not None:
            self._keyless.start()
        session = apsw.Session(self._conn, "main")
        # Capture tables without a declared primary key too, keyed by rowid.
        session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
        # Let `size` read the changeset's size without building it (must precede attach).
        session.config(apsw.SQLITE_SESSION_OBJCONFIG_SIZE, 1)
        session.table_filter(_replicated)
        session.attach()
        return session

    def _cut(self) -> None:
        if self._session is not None:
            changeset = self._session.changeset()
            self._session.close()
            self._session = None
            if self._keyless is not None:
                changeset = self._keyless.finish(changeset)
            if changeset and self._guards is not None:
                self._guards.check(changeset)
            if changeset:
                self._segments.append((CHANGESET, changeset))
                self._closed_bytes += len(changeset)

    def before_ddl(self, sql: str) -> None:
        """Called just before a DDL statement executes."""
        self._cut()
        if self._guards is not None:
            self._guards.suspend()
        self._segments.append((DDL, sql.strip()))
        self._closed_bytes += len(sql.strip().encode())

    def after_ddl(self) -> None:
        """Called once the DDL statement has run: resume recording rows."""
        if self._session is None:
            self._session = self._start()

    @property
    def size(self) -> int:
        """Bytes the entry holds so far, without building the open changeset: the session's
        figure is an upper bound (every change the transaction made counts, even a row
        inserted and deleted again)."""
        open_bytes = self._session.changeset_size if self._session is not None else 0
        return self._closed_bytes + open_bytes

    def finish(self) -> tuple[Segment, ...]:
        """The transaction's segments; empty for a read-only transaction."""
        self._cut()
        return tuple(self._segments)

    def discard(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._keyless is not None:
            self._keyless.discard()
