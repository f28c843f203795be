"""Tables keyed by rowid alone: recorded exactly past 127 changed rows.

The session extension keys a table without a declared PRIMARY KEY by its rowid
(SQLITE_SESSION_OBJCONFIG_ROWID), and there it has a bug (SQLite 3.54; found by the
replication fuzzer): when a session's hash table of one table's changes grows, at the 128th,
256th, 512th … changed row, the rows recorded so far are rehashed with a function that also
hashes the key's type byte, while a lookup by rowid does not. From then on, a change to a row
recorded before the growth is recorded a second time, with that moment's values as its "old"
ones; an UPDATE that is itself the 128th change gets an extra INSERT. The changeset then holds
two changes for one row, in no useful order, and the replica halts ("row already exists", "row
not found", "row differs from the recorded old values"). A plain `UPDATE t SET v = v + 1` over
128 rows of `CREATE TABLE t(v)` did it, and so did `UPDATE t SET v = v` (no change at all).

Refusing those writes would refuse common SQL, so they are recorded exactly instead:

- A recording (one session) on a schema with such tables starts with a savepoint and an update
  hook (the session owns the preupdate hook) that counts each such table's changed rows.
- At its end, a table is *at risk* when the session may have held 128 changes of it (each
  hooked change may add one for a new rowid and one for each row a REPLACE deletes, which the
  hook does not see), unless the recording only appended rows above the table's largest rowid
  and the table has no UNIQUE index (then no row was changed twice). Most recordings stop here.
- For a table at risk, the rows the changeset names are read as they are now, the savepoint is
  rolled back, the same rows are read as they were, and the table's changes are written anew
  from the two readings. The corrected changeset is applied to the rolled-back state (triggers
  off, as on a replica) and the rows must then read as before the rollback, or the write is
  refused (Unreplicable). The primary so ends in the state a replica reaches.

A row the changeset does not name cannot have changed: the first record of a row holds its
values from before the recording, and it alone makes a change appear whenever the row differs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import apsw

from .errors import ApplyConflict, Unreplicable
from .rawchangeset import skip_value, varint
from .replay import apply_changeset
from .schema import user_tables

SAVEPOINT = "_tandem_recording"
GROWTH = 128  # the session's first growth of a table's changes comes after 128 of them
UNDEFINED = b"\x00"  # a changeset field with no value (an unchanged column of an UPDATE)
_ROWID_NAMES = ("rowid", "_rowid_", "oid")
_CHUNK = 500  # rowids per read


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Shape:
    """What the session records of a rowid-keyed table: the rowid, then these columns."""

    columns: tuple[str, ...]  # not hidden: generated columns are not recorded
    unique: int  # UNIQUE indexes: how many rows one REPLACE may delete, besides the rowid's
    rowid: str | None  # a name that reads the rowid (a column may shadow "rowid")


class _Count:
    """One table's changes in the current recording, as the update hook saw them."""

    __slots__ = ("appends", "changes", "first", "last")

    def __init__(self, op: int, rowid: int) -> None:
        self.changes = 1
        self.appends = op == apsw.SQLITE_INSERT
        self.first = self.last = rowid


class KeylessWatch:
    """Watches one connection's recordings of rowid-keyed tables; repairs them when needed."""

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn
        self._version: int | None = None
        self._shapes: dict[str, _Shape] = {}
        self._max_sql = ""
        self._start_max: dict[str, int | None] = {}
        self._counts: dict[str, _Count] = {}
        self._open = False

    # -- a recording --------------------------------------------------------------------------
    def start(self) -> None:
        """A recording starts: open the savepoint and count changes, if any table needs it."""
        self._refresh()
        if not self._shapes:
            return
        conn = self._conn
        conn.execute(f"SAVEPOINT {SAVEPOINT}")
        self._open = True
        row = conn.execute(self._max_sql).fetchone() or ()
        self._start_max = dict(zip(self._shapes, row, strict=True))
        self._counts = {}
        conn.set_update_hook(self._hook)

    def _hook(self, op: int, db: str, table: str, rowid: int) -> None:
        if db != "main":
            return
        count = self._counts.get(table)
        if count is None:
            if table in self._shapes:
                self._counts[table] = _Count(op, rowid)
            return
        count.changes += 1
        if count.appends and (op != apsw.SQLITE_INSERT or rowid <= count.last):
            count.appends = False
        count.last = rowid

    def finish(self, changeset: bytes) -> bytes:
        """The recording's session is closed: its changeset, corrected where the session may
        have got a rowid-keyed table wrong. Releases the savepoint."""
        if not self._open:
            return changeset
        self._stop()
        at_risk = {t for t, c in self._counts.items() if self._at_risk(t, c)}
        if at_risk and changeset:
            changeset = self._rewrite(changeset, at_risk)
        self._conn.execute(f"RELEASE {SAVEPOINT}")
        return changeset

    def discard(self) -> None:
        """The recording failed; the caller rolls back, the savepoint with it."""
        if self._open:
            self._stop()

    def _stop(self) -> None:
        self._conn.set_update_hook(None)
        self._open = False

    def _at_risk(self, table: str, count: _Count) -> bool:
        shape = self._shapes[table]
        # A change records one row, an UPDATE of the rowid two; a REPLACE deletes one more
        # row per UNIQUE index and one for the rowid, unseen by the hook.
        if count.changes * (3 + shape.unique) < GROWTH:
            return False
        start = self._start_max.get(table)
        appended = count.appends and shape.unique == 0 and (start is None or count.first > start)
        return not appended

    # -- the schema ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        version = self._conn.execute("PRAGMA main.schema_version").get
        if version == self._version:
            return
        self._version, self._shapes = version, {}
        conn = self._conn
        for table in user_tables(conn):
            without_rowid = conn.execute("SELECT wr FROM pragma_table_list WHERE schema = "
                                         "'main' AND name = ?", (table,)).get
            info = list(conn.execute(f"PRAGMA main.table_xinfo({_q(table)})"))
            if without_rowid or any(row[5] for row in info):
                continue  # a declared key: the session does not key it by rowid
            names = {row[1].lower() for row in info}
            unique = sum(1 for row in conn.execute(f"PRAGMA main.index_list({_q(table)})")
                         if row[2])
            self._shapes[table] = _Shape(
                tuple(row[1] for row in info if row[6] == 0), unique,
                next((n for n in _ROWID_NAMES if n not in names), None))
        self._max_sql = "SELECT " + ", ".join(
            f"(SELECT max({s.rowid}) FROM main.{_q(t)})" if s.rowid else "NULL"
            for t, s in self._shapes.items())

    # -- the repair ---------------------------------------------------------------------------
    def _rewrite(self, changeset: bytes, at_risk: set[str]) -> bytes:
        blocks = _blocks(changeset, at_risk)
        keys = {name: sorted(set(found)) for name, _, _, found in blocks if name in at_risk}
        if not keys:
            return changeset
        after = {t: self._read(t, k) for t, k in keys.items()}
        self._conn.execute(f"ROLLBACK TO {SAVEPOINT}")
        before = {t: self._read(t, k) for t, k in keys.items()}
        out = bytearray()
        for name, header, body, _ in blocks:
            if name in keys:
                changes = [_change(before[name].get(k), after[name].get(k)) for k in keys[name]]
                body = b"".join(c for c in changes if c)
            if body:
                out += header + body
        fixed = bytes(out)
        self._conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
        try:
            apply_changeset(self._conn, fixed, lsn=0)
        except ApplyConflict as err:
            raise Unreplicable(_refusal(f"replaying it failed: {err}")) from None
        finally:
            self._conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1)
        for table, table_keys in keys.items():
            if self._read(table, table_keys) != after[table]:
                raise Unreplicable(_refusal(f"table {table!r} did not end as it should"))
        return fixed

    def _read(self, table: str, keys: list[int]) -> dict[int, tuple]:
        """The rows with these rowids: each the rowid, then (type, value) of every recorded
        column (TEXT as its UTF-8 bytes, so text that is not UTF-8 reads too)."""
        shape = self._shapes[table]
        if shape.rowid is None:
            raise Unreplicable(_refusal(f"table {table!r} has columns named rowid, _rowid_ "
                                        "and oid, so its rows cannot be read by rowid"))
        parts = ", ".join(f"typeof({_q(c)}), CASE typeof({_q(c)}) WHEN 'text' THEN "
                          f"CAST({_q(c)} AS BLOB) ELSE {_q(c)} END" for c in shape.columns)
        rows: dict[int, tuple] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i:i + _CHUNK]
            sql = (f"SELECT {shape.rowid}, {parts} FROM main.{_q(table)} "
                   f"WHERE {shape.rowid} IN ({', '.join('?' * len(chunk))})")
            for row in self._conn.execute(sql, chunk):
                rows[row[0]] = row
        return rows

def _refusal(why: str) -> str:
    return ("this transaction changes many rows of a table without a declared PRIMARY KEY, "
            f"and its journal entry could not be made exact ({why}); split it into smaller "
            "transactions, or give the table a PRIMARY KEY")


def _varint(n: int) -> bytes:
    """SQLite's varint (lengths only: below 2**56): 7 bits a byte, high bit = more follow."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def _field(kind: str, value: object) -> bytes:
    """One value in the changeset record format (see rawchangeset.py)."""
    if kind == "null":
        return b"\x05"
    if kind == "integer":
        return b"\x01" + struct.pack(">q", value)
    if kind == "real":
        return b"\x02" + struct.pack(">d", value)
    if not isinstance(value, bytes):  # TEXT is read as its UTF-8 bytes (_read), BLOB as is
        raise TypeError(f"a {kind} value is read as bytes, not {type(value).__name__}")
    data = value
    return (b"\x03" if kind == "text" else b"\x04") + _varint(len(data)) + data


def _change(old: tuple | None, new: tuple | None) -> bytes | None:
    """The change from `old` to `new` (rows as `_read` gives them; None: no such row), in the
    changeset format, as the session would record it."""
    if old is None:
        return None if new is None else bytes([apsw.SQLITE_INSERT, 0]) + _record(new)
    if new is None:
        return bytes([apsw.SQLITE_DELETE, 0]) + _record(old)
    if old == new:
        return None
    before, after = [_field("integer", old[0])], [UNDEFINED]
    for i in range(1, len(old), 2):
        if old[i:i + 2] == new[i:i + 2]:
            before.append(UNDEFINED)
            after.append(UNDEFINED)
        else:
            before.append(_field(old[i], old[i + 1]))
            after.append(_field(new[i], new[i + 1]))
    return bytes([apsw.SQLITE_UPDATE, 0]) + b"".join(before) + b"".join(after)


def _record(row: tuple) -> bytes:
    return _field("integer", row[0]) + b"".join(
        _field(row[i], row[i + 1]) for i in range(1, len(row), 2))

def _blocks(changeset: bytes, keyed: set[str]) -> list[tuple[str, bytes, bytes, list[int]]]:
    """A changeset's tables: name, header, the changes' bytes and, for the tables in
    `keyed`, each change's rowid (the first field of its first record)."""
    buf, i, end = bytes(changeset), 0, len(changeset)
    out: list[tuple[str, bytes, bytes, list[int]]] = []
    while i < end:  # one table: its header, then changes until the next header
        count, j = varint(buf, i + 1)
        stop = buf.index(0, j + count)
        name = buf[j + count:stop].decode("utf-8", "replace")
        header, i = buf[i:stop + 1], stop + 1
        body, keys, want = i, [], name in keyed
        while i < end and buf[i] != 0x54:  # "T" starts the next table
            op = buf[i]
            i += 2
            if want:
                keys.append(struct.unpack_from(">q", buf, i + 1)[0])
            for _ in range(count * ((op != apsw.SQLITE_INSERT) + (op != apsw.SQLITE_DELETE))):
                i = skip_value(buf, i)
        out.append((name, header, buf[body:i], keys))
    return out
