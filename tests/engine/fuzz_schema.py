"""The replication fuzzer's model of a tenant schema, and the DDL it generates.

The model is what the primary's schema is, as far as the generators need to know: tables
(columns with affinity, collation, nullability, generated columns, keys), indexes, triggers
and views. A transaction is drawn against a staged copy; the copy becomes the model only if
the primary commits it, so a refused transaction can never make the model drift.

The flags switch on generators for defects that issue 9 names, or that this fuzzer found: each
stayed off until its fix was in the engine, so the suite stayed green meanwhile. All are on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

# Issue 9 item 1: NULL-able key columns in rowid tables (the session extension drops rows).
NULL_KEYS = True
# Issue 9 item 2: NOCASE/RTRIM key columns, whose collation-equal updates halted the stream.
COLLATED_KEYS = True
# Issue 9 item 8: ALTER TABLE RENAME TO / RENAME COLUMN / DROP COLUMN.
ALTER_RENAME_DROP = True
# Found by this fuzzer: a key changed from the integer -2**63 to the REAL -2**63 (equal under
# numeric comparison, different bytes) halted the replica; see test_fuzz_regressions.py.
INT64_MIN = True
# Found by this fuzzer: a write whose RETURNING stopped mid-way (a non-UTF-8 value, a result
# limit) left its statement open; RETURNING * meets non-UTF-8 text only with this on.
RETURNING_ABORT = True
# Found by this fuzzer: a value changed from -0.0 to 0.0 (or back) was no change to the
# session extension, so the commit made no entry and the replica kept the old sign.
NEG_ZERO = True
# Found by this fuzzer: a constraint's own ON CONFLICT REPLACE or IGNORE also rules the
# replica's changeset apply, which then replaces rows itself and halts on the entry's DELETE,
# or silently skips an INSERT (the replica diverges); see test_fuzz_regressions.py.
CONSTRAINT_CONFLICT = True
# Issue 9 item 5: text that is not valid UTF-8 (`CAST(x'fffe41' AS TEXT)`) broke checksums.
INVALID_UTF8 = True

Draw = Callable[[st.SearchStrategy], Any]
Stmt = tuple[str, list]

AFFINITY_TYPES = ["", "INT", "INTEGER", "TEXT", "REAL", "NUMERIC", "BLOB", "VARCHAR(5)",
                  "DOUBLE", "BOOLEAN"]
STRICT_TYPES = ["INT", "INTEGER", "REAL", "TEXT", "BLOB", "ANY"]
COLLATIONS = [None, "BINARY", "NOCASE", "RTRIM"]
# A small pool, so keys collide, collations meet ('a', 'A', 'a '), and affinities convert.
# Blobs stay valid UTF-8 (a blob becomes text through ||, CAST or affinity) unless
# INVALID_UTF8 is on.
SCALARS: list[Any] = [0, 1, 2, -1, None, "a", "A", "a ", "b", "B", "1", "", 1.0, 2.5, 0.0,
                      b"a", b"", 9223372036854775807, -(2**62), float("inf"),
                      "é", b"\x00\xc3\xa9"]
LITERALS = ["zeroblob(1)", "1e999", "-1e999", "'a' || 'B'", "x'0061'", "NULL", "upper('a')",
            "9223372036854775807 + 1", "CAST('2' AS INTEGER)", "-9223372036854775807 - 1"]
INVALID_TEXT = ["randomblob(2)", "x'00ff'", "CAST(x'fffe41' AS TEXT)"]


@dataclass
class Column:
    name: str
    decl: str = ""
    collate: str | None = None
    notnull: bool = False
    generated: str | None = None  # the expression of a generated column
    stored: bool = False

    def sql(self) -> str:
        parts = [self.name, self.decl]
        if self.generated is not None:
            parts.append(f"AS ({self.generated}) {'STORED' if self.stored else 'VIRTUAL'}")
        if self.collate:
            parts.append(f"COLLATE {self.collate}")
        if self.notnull:
            parts.append("NOT NULL")
        return " ".join(p for p in parts if p)


@dataclass
class Table:
    name: str
    columns: list[Column]
    pk: list[str] = field(default_factory=list)  # declared key columns ([] = none)
    rowid_alias: bool = False  # INTEGER PRIMARY KEY: the key is the rowid
    without_rowid: bool = False
    strict: bool = False

    @property
    def writable(self) -> list[Column]:
        return [c for c in self.columns if c.generated is None]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass
class Index:
    name: str
    table: str
    columns: list[str]
    unique: bool
    partial: bool


@dataclass
class Schema:
    tables: dict[str, Table] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)
    triggers: dict[str, str] = field(default_factory=dict)  # name -> table or view
    views: dict[str, str] = field(default_factory=dict)  # name -> table it selects from
    counter: int = 0
    random: bool = False  # some column's DEFAULT is random(): inserts are not repeatable

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def staged(self) -> Schema:
        return copy.deepcopy(self)

    def drop_table(self, name: str) -> None:
        del self.tables[name]
        self.indexes = {k: v for k, v in self.indexes.items() if v.table != name}
        self.triggers = {k: v for k, v in self.triggers.items() if v != name}

    def rename_table(self, old: str, new: str) -> None:
        table = self.tables.pop(old)
        table.name = new
        self.tables[new] = table
        for index in self.indexes.values():
            if index.table == old:
                index.table = new
        self.triggers = {k: (new if v == old else v) for k, v in self.triggers.items()}
        self.views = {k: (new if v == old else v) for k, v in self.views.items()}


def value(draw: Draw, *, literal: bool = True) -> tuple[str, list]:
    """One value as SQL text and its parameters: mostly a bound parameter from the pool."""
    kind = draw(st.integers(0, 9))
    if literal and kind == 9:
        options = [sql for sql in LITERALS if INT64_MIN or "9223372036854775807 -" not in sql]
        options += INVALID_TEXT if INVALID_UTF8 else []
        return draw(st.sampled_from(options)), []
    if kind == 8:
        blobs = st.binary(max_size=3) if INVALID_UTF8 else st.text(max_size=2).map(str.encode)
        ints = st.integers() if INT64_MIN else st.integers().filter(lambda i: i != -(2**63))
        floats = st.floats() if NEG_ZERO else st.floats().map(lambda f: f if f else 0.0)
        return "?", [draw(st.one_of(ints, st.text(max_size=3), blobs, floats))]
    extra = ([b"\xff"] if INVALID_UTF8 else []) + ([-(2**63)] if INT64_MIN else [])
    extra += [-0.0] if NEG_ZERO else []
    return "?", [draw(st.sampled_from(SCALARS + extra))]


def _column(draw: Draw, name: str, strict: bool, *, key: bool) -> Column:
    decl = draw(st.sampled_from(STRICT_TYPES if strict else AFFINITY_TYPES))
    collations = COLLATIONS if (COLLATED_KEYS or not key) else [None, "BINARY"]
    collate = draw(st.sampled_from(collations))
    notnull = draw(st.integers(0, 5)) == 0 if (NULL_KEYS or not key) else True
    return Column(name, decl, collate, notnull)


def create_table(draw: Draw, schema: Schema) -> Stmt:
    """CREATE TABLE of any kind: rowid alias, declared (composite) key, no key, WITHOUT ROWID."""
    name = schema.fresh("t")
    kind = draw(st.sampled_from(["alias", "pk", "nopk", "without_rowid"]))
    strict = draw(st.integers(0, 3)) == 0
    n = draw(st.integers(1, 4))
    key_count = 0 if kind in ("nopk", "alias") else draw(st.integers(1, min(2, n)))
    cols = [_column(draw, f"c{i}", strict, key=i < key_count) for i in range(n)]
    if kind == "alias":
        cols.insert(0, Column("k", "INTEGER"))
    table = Table(name, cols, pk=[c.name for c in cols[:key_count]], rowid_alias=kind == "alias",
                  without_rowid=kind == "without_rowid", strict=strict)
    if kind == "alias":
        table.pk = ["k"]
    if draw(st.booleans()):
        source = draw(st.sampled_from([c.name for c in cols]))
        expr = draw(st.sampled_from([f"{source} || 'x'", f"typeof({source})", f"{source} + 1",
                                     f"lower({source})"]))
        gen_type = "ANY" if strict else ""
        table.columns.append(Column("g", gen_type, generated=expr, stored=draw(st.booleans())))
    defs = []
    for col in table.columns:
        text = col.sql()
        if kind == "alias" and col.name == "k":
            text += " PRIMARY KEY" + (" AUTOINCREMENT" if draw(st.booleans()) else "")
        elif col.generated is None and col.name not in table.pk and draw(st.integers(0, 5)) == 0:
            default = draw(st.sampled_from(["0", "'d'", "NULL", "(random())"]))
            schema.random = schema.random or "random" in default
            text += " DEFAULT " + default
        defs.append(text)
    others = [t for t in schema.tables.values() if t.pk]
    if others and draw(st.booleans()):
        parent = draw(st.sampled_from(others))
        action = draw(st.sampled_from(["CASCADE", "SET NULL", "RESTRICT", "NO ACTION"]))
        table.columns.append(Column("p"))
        defs.append(f"p REFERENCES {parent.name}({parent.pk[0]}) ON DELETE {action} "
                    f"ON UPDATE {draw(st.sampled_from(['CASCADE', 'SET NULL']))}")
    # A constraint's own conflict clause makes a plain INSERT or UPDATE replace or skip rows.
    # The engine refuses such tables: drawn now and then, so most tables get made.
    conflict = st.sampled_from([""] * 6 + [" ON CONFLICT REPLACE", " ON CONFLICT IGNORE",
                                           " ON CONFLICT FAIL"] * CONSTRAINT_CONFLICT)
    if kind in ("pk", "without_rowid"):
        defs.append(f"PRIMARY KEY({', '.join(table.pk)}){draw(conflict)}")
    plain = [c.name for c in table.writable if c.name not in table.pk]
    if plain and draw(st.integers(0, 3)) == 0:
        defs.append(f"UNIQUE({draw(st.sampled_from(plain))}){draw(conflict)}")
    if plain and draw(st.integers(0, 5)) == 0:
        defs.append(f"CHECK ({draw(st.sampled_from(plain))} IS NOT 'boom')")
    options = [o for o, on in (("WITHOUT ROWID", table.without_rowid), ("STRICT", strict)) if on]
    schema.tables[name] = table
    return f"CREATE TABLE {name}({', '.join(defs)}) {', '.join(options)}".strip(), []


def create_index(draw: Draw, schema: Schema, table: Table) -> Stmt:
    name = schema.fresh("i")
    cols = draw(st.lists(st.sampled_from([c.name for c in table.columns]), min_size=1,
                         max_size=2, unique=True))
    rendered = []
    for col in cols:
        collate = draw(st.sampled_from(COLLATIONS))
        rendered.append(col + (f" COLLATE {collate}" if collate else ""))
    unique = draw(st.booleans())
    where = draw(st.sampled_from(["", f" WHERE {cols[0]} IS NOT NULL", f" WHERE {cols[0]} > 0"]))
    schema.indexes[name] = Index(name, table.name, cols, unique, bool(where))
    kind = "UNIQUE INDEX" if unique else "INDEX"
    return f"CREATE {kind} {name} ON {table.name}({', '.join(rendered)}){where}", []


def add_column(draw: Draw, schema: Schema, table: Table) -> Stmt:
    col = _column(draw, schema.fresh("a"), table.strict, key=False)
    if draw(st.integers(0, 4)) == 0:
        col.generated, col.stored = f"{table.columns[0].name} || ''", False
        col.notnull = False
    text = col.sql()
    if col.generated is None:
        default = draw(st.sampled_from(["", " DEFAULT 7", " DEFAULT 'z'", " DEFAULT NULL"]))
        if col.notnull and default in ("", " DEFAULT NULL"):
            default = " DEFAULT 0"
        text += default
    table.columns.append(col)
    return f"ALTER TABLE {table.name} ADD COLUMN {text}", []


def create_trigger(draw: Draw, schema: Schema, table: Table) -> Stmt:
    """A trigger whose writes land in another (or the same) table, or that refuses a row."""
    name = schema.fresh("tr")
    timing = draw(st.sampled_from(["BEFORE", "AFTER"]))
    event = draw(st.sampled_from(["INSERT", "UPDATE", "DELETE"]))
    ref = {"INSERT": "NEW", "DELETE": "OLD"}.get(event) or draw(st.sampled_from(["NEW", "OLD"]))
    col = draw(st.sampled_from([c.name for c in table.columns]))
    target = draw(st.sampled_from(sorted(schema.tables)))
    tcols = [c.name for c in schema.tables[target].writable] or ["rowid"]
    tcol = draw(st.sampled_from(tcols))
    body = draw(st.sampled_from([
        f"INSERT OR IGNORE INTO {target}({tcol}) VALUES ({ref}.{col})",
        f"INSERT OR REPLACE INTO {target}({tcol}) VALUES ({ref}.{col})",
        f"UPDATE {target} SET {tcol} = {ref}.{col} WHERE {tcol} IS NOT {ref}.{col}",
        f"DELETE FROM {target} WHERE {tcol} = {ref}.{col}",
        f"SELECT RAISE(ABORT, 'refused by trigger') WHERE {ref}.{col} = 'b'",
    ]))
    schema.triggers[name] = table.name
    return (f"CREATE TRIGGER {name} {timing} {event} ON {table.name} FOR EACH ROW "
            f"BEGIN {body}; END"), []


def create_view(draw: Draw, schema: Schema, table: Table) -> list[Stmt]:
    """A view over a table, and an INSTEAD OF INSERT trigger that writes through it."""
    name = schema.fresh("v")
    cols = [c.name for c in table.writable]
    schema.views[name] = table.name
    stmts: list[Stmt] = [(f"CREATE VIEW {name} AS SELECT * FROM {table.name}", [])]
    if cols and draw(st.booleans()):
        trigger = schema.fresh("tr")
        schema.triggers[trigger] = name
        news = ", ".join(f"NEW.{c}" for c in cols)
        stmts.append((f"CREATE TRIGGER {trigger} INSTEAD OF INSERT ON {name} BEGIN "
                       f"INSERT INTO {table.name}({', '.join(cols)}) VALUES ({news}); END", []))
    return stmts


def alter_rename_drop(draw: Draw, schema: Schema, table: Table) -> Stmt:
    """ALTER TABLE RENAME TO / RENAME COLUMN / DROP COLUMN (behind ALTER_RENAME_DROP)."""
    choice = draw(st.sampled_from(["table", "column", "drop"]))
    if choice == "table":
        new = schema.fresh("t")
        old = table.name
        schema.rename_table(old, new)
        return f"ALTER TABLE {old} RENAME TO {new}", []
    plain = [c for c in table.columns if c.name not in table.pk]
    if choice == "drop" and (not plain or len(table.columns) < 2):
        # SQLite refuses to drop a key or the last column; the model would lose it anyway,
        # and the statements drawn after it in the transaction would find no column left.
        choice = "column"
    col = draw(st.sampled_from(plain if choice == "drop" else table.columns))
    if choice == "column":
        old, col.name = col.name, schema.fresh("r")
        table.pk = [col.name if k == old else k for k in table.pk]
        for index in schema.indexes.values():
            if index.table == table.name:
                index.columns = [col.name if c == old else c for c in index.columns]
        return f"ALTER TABLE {table.name} RENAME COLUMN {old} TO {col.name}", []
    table.columns.remove(col)  # SQLite refuses it if anything uses the column
    return f"ALTER TABLE {table.name} DROP COLUMN {col.name}", []


def ddl(draw: Draw, schema: Schema) -> list[Stmt]:
    """One schema change against the staged schema (which it updates as if it succeeds)."""
    if not schema.tables:
        return [create_table(draw, schema)]
    table = schema.tables[draw(st.sampled_from(sorted(schema.tables)))]
    kinds = ["table", "index", "index", "add_column", "trigger", "drop_index", "drop_trigger",
             "view", "drop_table"] + (["alter"] * 2 if ALTER_RENAME_DROP else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "table" and len(schema.tables) < 6:
        return [create_table(draw, schema)]
    if kind == "index":
        return [create_index(draw, schema, table)]
    if kind == "add_column":
        return [add_column(draw, schema, table)]
    if kind == "trigger":
        return [create_trigger(draw, schema, table)]
    if kind == "view":
        return create_view(draw, schema, table)
    if kind == "alter":
        return [alter_rename_drop(draw, schema, table)]
    if kind == "drop_index" and schema.indexes:
        name = draw(st.sampled_from(sorted(schema.indexes)))
        del schema.indexes[name]
        return [(f"DROP INDEX {name}", [])]
    if kind == "drop_trigger" and schema.triggers:
        name = draw(st.sampled_from(sorted(schema.triggers)))
        del schema.triggers[name]
        return [(f"DROP TRIGGER {name}", [])]
    if kind == "drop_table" and len(schema.tables) > 1:
        schema.drop_table(table.name)
        return [(f"DROP TABLE {table.name}", [])]
    return [create_index(draw, schema, table)]
