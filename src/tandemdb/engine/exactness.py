"""Keeping the journal exact: writes the session extension would record wrongly are refused.

The session extension keys every row by its primary key, and misses or garbles two kinds of
write without any error (issue 9):

1. **A NULL in a key.** A rowid table's PRIMARY KEY (other than INTEGER PRIMARY KEY) may
   hold NULL, and the session skips such a row: its insert, update or delete is never
   recorded, so the replica silently lacks it.
2. **Two byte forms of one key.** The session tells keys apart by their bytes, but finds the
   current row with the key column's own comparison: COLLATE NOCASE ('A' = 'a'), RTRIM
   ('a' = 'a  '), or numeric equality in a column without a type (1 = 1.0). When one
   recording holds a key in two such forms, both find the same row, and the changeset gets
   an UPDATE that changes the key or a duplicate INSERT: the replica cannot apply it.

Both are caught row by row with TEMP triggers that Tandem installs on the tenant's tables.
TEMP triggers live in this connection only: they are not part of the replicated schema nor
of the checksum, tenants cannot create, change or drop them, and they do not fire while a
replica applies or rewinds (triggers are off then). Tables that cannot hit either case
(INTEGER PRIMARY KEY, no key at all, BINARY keys with a type) get no trigger and cost
nothing. A trigger aborts the statement with a message marked `MARK`; the statement runner
turns it into `Unreplicable` (HTTP 400), and the transaction rolls back before it commits.

For case 2 each guarded table has a TEMP key log: every key the current recording has seen,
in the key columns' own collations. A key equal to a logged one but with other bytes is
refused. The log is emptied whenever the recorder starts a new recording (session).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import apsw

from . import rawchangeset
from .errors import Unreplicable
from .keyless import KeylessWatch
from .schema import user_tables

MARK = "tandem-unreplicable: "
PREFIX = "_tandem_guard_"
INT64_MIN = -(2**63)


@dataclass(frozen=True)
class KeyColumn:
    name: str
    collation: str  # the column's own (what the session's lookups use), upper case
    loose: bool  # equal values may differ in bytes: a non-BINARY collation or no type
    nullable: bool
    numeric: bool = False  # INTEGER or NUMERIC affinity: may hold the REAL -2.0**63


@dataclass(frozen=True)
class TableKey:
    """A table's primary key as the session extension sees it."""

    table: str
    columns: tuple[KeyColumn, ...]
    rowid: bool
    ambiguous: str | None  # why the session cannot tell this table's rows apart, if so

    @property
    def nullable(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.nullable) if self.rowid else ()

    @property
    def loose(self) -> bool:
        return any(c.loose for c in self.columns)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _untyped(declared: str, strict: bool) -> bool:
    """BLOB affinity (or STRICT ANY): 1 and 1.0 are stored as given and compare equal."""
    t = (declared or "").upper()
    if strict:
        return t == "ANY"
    if "INT" in t or any(s in t for s in ("CHAR", "CLOB", "TEXT")):
        return False
    return "BLOB" in t or t == ""


def _numeric(declared: str, strict: bool) -> bool:
    """INTEGER or NUMERIC affinity (not STRICT: it refuses a REAL it cannot convert)."""
    t = (declared or "").upper()
    if strict or any(s in t for s in ("CHAR", "CLOB", "TEXT", "BLOB", "REAL", "FLOA", "DOUB")):
        return "INT" in t and not strict
    return t != ""


def table_key(conn: apsw.Connection, table: str) -> TableKey | None:
    """The key of `table`; None when rows are keyed by rowid (no key, INTEGER PRIMARY KEY)."""
    pk_index = next((row[1] for row in conn.execute(f"PRAGMA main.index_list({_q(table)})")
                     if row[3] == "pk"), None)
    if pk_index is None:
        return None
    _, _, _, _, without_rowid, strict = conn.execute(
        "SELECT * FROM pragma_table_list WHERE schema = 'main' AND name = ?", (table,)).get
    index_coll = {row[2]: (row[4] or "BINARY").upper() for row in conn.execute(
        f"PRAGMA main.index_xinfo({_q(pk_index)})") if row[5] and row[2] is not None}
    columns, ambiguous = [], None
    for name in index_coll:
        declared, collation, notnull, _, _ = conn.column_metadata("main", table, name)
        collation = (collation or "BINARY").upper()
        if collation != "BINARY" and collation != index_coll[name] and ambiguous is None:
            ambiguous = (f"its key column {name} compares with COLLATE {collation} but the "
                         f"PRIMARY KEY with COLLATE {index_coll[name]}, so two rows can have "
                         "keys that look the same to the replication; declare one collation "
                         "for both (recreate the table)")
        columns.append(KeyColumn(name, collation,
                                 collation != "BINARY" or _untyped(declared, bool(strict)),
                                 not notnull and not strict, _numeric(declared, bool(strict))))
    return TableKey(table, tuple(columns), not without_rowid, ambiguous)


# Strings, quoted names and comments: what a conflict clause is looked for outside of.
_NOT_SQL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/",
                      re.DOTALL)
_CONFLICT_CLAUSE = re.compile(r"\bON\s+CONFLICT\s+(?:REPLACE|IGNORE|ROLLBACK)\b", re.IGNORECASE)


def conflict_clause(conn: apsw.Connection, table: str) -> bool:
    """Whether `table`'s definition gives a constraint its own ON CONFLICT REPLACE, IGNORE or
    ROLLBACK clause.

    A replica applies changesets with plain INSERTs and UPDATEs, which obey such a clause: a
    UNIQUE … ON CONFLICT REPLACE makes the replica delete a row the entry deletes again (the
    stream halts), ON CONFLICT IGNORE makes it skip a row without a word (silent divergence);
    both were found by the replication fuzzer. ROLLBACK would end the replica's whole apply at
    a conflict that a changeset may pass through on the way (two rows trading a UNIQUE value),
    which the apply otherwise retries. ABORT (the default) and FAIL stop one row's statement
    only, so they replicate as if no clause were there."""
    sql = conn.execute("SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = ?",
                       (table,)).get
    return bool(sql) and _CONFLICT_CLAUSE.search(_NOT_SQL.sub(" ", sql)) is not None


class KeyGuards:
    """The TEMP triggers and key logs of one connection, kept in step with its schema."""

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn
        self._version: tuple[int, int] | None = None
        self._logs: list[str] = []
        self._loose: set[str] = set()
        # Not a guard: tables keyed by rowid are recorded exactly, not refused (keyless.py).
        self.keyless = KeylessWatch(conn)

    def prepare(self) -> None:
        """A new recording starts: match the guards to the schema, empty the key logs."""
        # The temp schema's version changes too when a rollback takes the guards away.
        if self._versions() != self._version:
            self._sync()
            self._version = self._versions()
        for log in self._logs:
            self._conn.execute(f"DELETE FROM temp.{_q(log)}")

    def _versions(self) -> tuple[int, int]:
        return (self._conn.execute("PRAGMA main.schema_version").get,
                self._conn.execute("PRAGMA temp.schema_version").get)

    def suspend(self) -> None:
        """A DDL statement is about to run: take the guards away, since a trigger that names
        a column would make its DROP COLUMN fail. The recording that starts right after the
        statement (Recorder.after_ddl) installs them anew; no row changes in between."""
        self._drop()
        self._version = None

    def _drop(self) -> None:
        conn = self._conn
        old = list(conn.execute(
            "SELECT type, name FROM temp.sqlite_master WHERE name LIKE ? ESCAPE '\\' "
            "ORDER BY type = 'table'", (PREFIX.replace("_", "\\_") + "%",)))
        for kind, name in old:
            if kind in ("trigger", "table"):
                conn.execute(f"DROP {kind.upper()} IF EXISTS temp.{_q(name)}")
        self._logs, self._loose = [], set()

    def _sync(self) -> None:
        conn = self._conn
        self._drop()
        for i, table in enumerate(user_tables(conn)):
            key = table_key(conn, table)
            if key is not None:
                if key.loose:
                    self._loose.add(table)
                for sql in self._guards(key, f"{PREFIX}{i}"):
                    conn.execute(sql)
            for sql in _zero_guards(conn, table, f"{PREFIX}{i}_zero"):
                conn.execute(sql)

    def check(self, changeset: bytes) -> None:
        """The one case the key logs cannot see: REPLACE deletes a row without firing its
        DELETE trigger (recursive_triggers is off), so replacing 'A' by 'a' is logged as 'a'
        only. The session then writes an UPDATE that changes the key, which no replica can
        apply: refuse it here, before commit."""
        if not self._loose:
            return
        try:
            changes = [(c.name, c.pk_columns, c.new) for c in apsw.Changeset.iter(changeset)
                       if c.op == "UPDATE" and c.name in self._loose and c.new is not None]
        except UnicodeDecodeError:
            # TEXT that is not UTF-8, which apsw cannot read: read the bytes. Skipping such a
            # change let 'ÿþA' replaced by 'ÿþa' through, and the replica halted (soak run).
            changes = [(c.name, c.pk_columns, c.new) for c in rawchangeset.iterate(changeset)
                       if c.op == "UPDATE" and c.name in self._loose and c.new is not None]
        for name, pk_columns, new in changes:
            if any(new[i] is not apsw.no_change for i in pk_columns):
                raise Unreplicable(_collision(name))

    def _guards(self, key: TableKey, name: str) -> list[str]:
        target = f"main.{_q(key.table)}"
        if key.ambiguous:
            why = _lit(f"{MARK}table {key.table!r} cannot be replicated: {key.ambiguous}")
            return [f"CREATE TEMP TRIGGER {_q(f'{name}_{op}')} AFTER {op} ON {target} "
                    f"BEGIN SELECT raise(ABORT, {why}); END"
                    for op in ("INSERT", "UPDATE", "DELETE")]
        bodies: dict[str, list[str]] = {"INSERT": [], "UPDATE": [], "DELETE": []}
        if key.nullable:
            bodies["INSERT"].append(_null_check(key, "NEW"))
            bodies["UPDATE"] += [_null_check(key, "OLD"), _null_check(key, "NEW")]
            bodies["DELETE"].append(_null_check(key, "OLD"))
        if any(c.numeric for c in key.columns):
            bodies["INSERT"].append(_int_min_check(key))
            bodies["UPDATE"].append(_int_min_check(key))
        sql = []
        if key.loose:
            log = f"{name}_keys"
            cols = ", ".join(f"k{i} COLLATE {c.collation}" for i, c in enumerate(key.columns))
            keys = ", ".join(f"k{i}" for i in range(len(key.columns)))
            sql.append(f"CREATE TEMP TABLE {_q(log)}({cols}, UNIQUE({keys}))")
            self._logs.append(log)
            bodies["INSERT"] += _log_key(key, log, "NEW")
            bodies["UPDATE"] += _log_key(key, log, "OLD") + _log_key(key, log, "NEW")
            bodies["DELETE"] += _log_key(key, log, "OLD")
        for op, body in bodies.items():
            if body:
                sql.append(f"CREATE TEMP TRIGGER {_q(f'{name}_{op}')} AFTER {op} ON {target} "
                           f"BEGIN {' '.join(body)} END")
        return sql


def _signed_zero_columns(conn: apsw.Connection, table: str) -> list[str]:
    """Stored columns that keep a REAL's sign of zero: no type (BLOB affinity), STRICT ANY.
    Other affinities store -0.0 as the integer 0 (INTEGER, REAL, NUMERIC) or as text."""
    strict = conn.execute("SELECT strict FROM pragma_table_list WHERE schema = 'main' AND "
                          "name = ?", (table,)).get
    found = []
    for _, name, declared, _, _, _, hidden in conn.execute(
            f"PRAGMA main.table_xinfo({_q(table)})"):
        if hidden in (0, 3) and _untyped(declared, bool(strict)):  # 3: STORED generated
            found.append(name)
    return found


def _zero_guards(conn: apsw.Connection, table: str, name: str) -> list[str]:
    """The session compares values, not bytes: an UPDATE that turns 0.0 into -0.0 (or back,
    directly or through other values within one transaction) is recorded as no change, and
    the replica keeps the other sign. So -0.0 is not written into a column that keeps it,
    and a row that holds one (stored before this rule) is not updated."""
    columns = _signed_zero_columns(conn, table)
    if not columns:
        return []

    def negative_zero(image: str) -> str:
        return " OR ".join(f"(typeof({image}.{_q(c)}) = 'real' AND {image}.{_q(c)} = 0 AND "
                           f"atan2({image}.{_q(c)}, -1) < 0)" for c in columns)

    why = _lit(f"{MARK}table {table!r}: -0.0 in a column without a type cannot be replicated "
               "exactly (changes between 0.0 and -0.0 are not recorded); write 0.0 instead, "
               "or give the column a type (REAL stores -0.0 as 0.0)")
    target = f"main.{_q(table)}"
    return [f"CREATE TEMP TRIGGER {_q(f'{name}_INSERT')} AFTER INSERT ON {target} "
            f"WHEN {negative_zero('NEW')} BEGIN SELECT raise(ABORT, {why}); END",
            f"CREATE TEMP TRIGGER {_q(f'{name}_UPDATE')} AFTER UPDATE ON {target} "
            f"WHEN {negative_zero('NEW')} OR {negative_zero('OLD')} "
            f"BEGIN SELECT raise(ABORT, {why}); END"]


def _int_min_check(key: TableKey) -> str:
    """An INTEGER column cannot convert the REAL -2.0**63 to the integer -2**63 (SQLite's
    conversion stops short of the bound), yet the two compare equal: the session keys them
    apart by bytes, and a replica cannot apply a change between them. Refuse that REAL."""
    cols = [c.name for c in key.columns if c.numeric]
    cond = " OR ".join(f"(typeof(NEW.{_q(c)}) = 'real' AND NEW.{_q(c)} = {INT64_MIN}.0)"
                       for c in cols)
    why = (f"table {key.table!r}: the key column(s) {', '.join(cols)} would hold the REAL "
           f"{INT64_MIN}.0, which equals the integer {INT64_MIN} but is stored apart from it, "
           "so it cannot be replicated exactly; write the integer instead")
    return f"SELECT raise(ABORT, {_lit(MARK + why)}) WHERE {cond};"


def _null_check(key: TableKey, image: str) -> str:
    cond = " OR ".join(f"{image}.{_q(c)} IS NULL" for c in key.nullable)
    cols = ", ".join(key.nullable)
    if image == "NEW":
        why = (f"table {key.table!r}: a row would have NULL in its primary key ({cols}); "
               "Tandem cannot replicate such a row (SQLite's session extension skips it). "
               "Give every key column a value, or declare the key columns NOT NULL")
    else:
        why = (f"table {key.table!r} holds a row whose primary key ({cols}) is NULL, stored "
               "before Tandem refused such rows; changing or deleting it cannot be "
               "replicated. Copy the rows that have a key into a new table and drop this one")
    return f"SELECT raise(ABORT, {_lit(MARK + why)}) WHERE {cond};"


def _log_key(key: TableKey, log: str, image: str) -> list[str]:
    values = [f"{image}.{_q(c.name)}" for c in key.columns]
    equal = " AND ".join(f"k{i} = {v}" for i, v in enumerate(values))
    # Equal REALs differ in bytes only as 0.0 and -0.0 (untyped columns keep the sign):
    # atan2(x, -1) is pi or -pi by the sign of a zero, and equal for any other equal pair.
    same = " AND ".join(f"typeof(k{i}) = typeof({v}) AND k{i} = {v} COLLATE BINARY AND "
                        f"(typeof({v}) != 'real' OR atan2(k{i}, -1) = atan2({v}, -1))"
                        for i, v in enumerate(values))
    return [f"SELECT raise(ABORT, {_lit(MARK + _collision(key.table))}) FROM temp.{_q(log)} "
            f"WHERE {equal} AND NOT ({same});",
            # Not INSERT OR IGNORE: the outer statement's conflict policy (an UPSERT, UPDATE OR
            # FAIL, INSERT OR ROLLBACK …) overrides a trigger's, and would fail on the log.
            f"INSERT INTO temp.{_q(log)} SELECT {', '.join(values)} WHERE NOT EXISTS "
            f"(SELECT 1 FROM temp.{_q(log)} WHERE {equal});"]


def _collision(table: str) -> str:
    return (f"table {table!r}: this transaction writes a key that equals another of its "
            "keys under the key's comparison (COLLATE NOCASE or RTRIM, 1 = 1.0, or 0.0 = -0.0) but "
            "differs in its bytes, for example changing 'A' to 'a'. The journal records rows "
            "by their exact key bytes, so this cannot be replicated exactly: make the change "
            "in two requests, first DELETE the old row, then INSERT the new one")
