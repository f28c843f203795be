"""The replication fuzzer's row changes: INSERT, UPSERT, REPLACE, UPDATE (of keys too),
DELETE, INSERT … SELECT, writes through views, swaps of two keys in one transaction, and
now and then many rows in one statement.

Values come mostly from a small pool (fuzz_schema.SCALARS), so statements hit existing rows,
keys collide, and collations and affinities meet. Many statements fail (a UNIQUE or NOT
NULL constraint, a STRICT type, a trigger's RAISE): that is a useful outcome, since a refused
transaction must change nothing.
"""

from __future__ import annotations

from hypothesis import strategies as st

from . import fuzz_schema
from .fuzz_schema import Draw, Schema, Stmt, Table, value

UPDATE_EXPRS = ["{c} + 1", "0 - {c}", "upper({c})", "lower({c})", "{c} || ' '", "rtrim({c})",
                "NULL", "CAST({c} AS TEXT)", "{c} * 1.0"]


def _update_exprs() -> list[str]:
    """`-c` turns 0.0 into -0.0: only with NEG_ZERO (`0 - c` never makes -0.0)."""
    return UPDATE_EXPRS + (["-{c}"] if fuzz_schema.NEG_ZERO else [])


def _where(draw: Draw, table: Table) -> tuple[str, list]:
    col = draw(st.sampled_from([c.name for c in table.columns] + ["rowid"] * (
        not table.without_rowid)))
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return "", []
    if kind == 1:
        return f" WHERE {col} IS NULL", []
    if kind == 2:
        (a, pa), (b, pb) = value(draw, literal=False), value(draw, literal=False)
        return f" WHERE {col} IN ({a}, {b})", pa + pb
    sql, params = value(draw)
    return f" WHERE {col} = {sql}", params


def insert(draw: Draw, table: Table) -> Stmt:
    """INSERT [OR REPLACE|IGNORE], REPLACE, or an UPSERT, of one to three rows."""
    cols = draw(st.lists(st.sampled_from([c.name for c in table.writable] or ["rowid"]),
                         min_size=0, max_size=len(table.writable) + 1, unique=True))
    if draw(st.integers(0, 9)):  # mostly give the key columns a value
        cols += [k for k in table.pk if k not in cols and not table.rowid_alias]
    verb = draw(st.sampled_from(["INSERT", "INSERT OR REPLACE", "INSERT OR IGNORE", "REPLACE",
                                 "INSERT", "INSERT"]))
    params: list = []
    if cols:
        rows = []
        for _ in range(draw(st.integers(1, 3))):
            parts = []
            for _col in cols:
                sql, p = value(draw)
                parts.append(sql)
                params += p
            rows.append(f"({', '.join(parts)})")
        body = f"({', '.join(cols)}) VALUES {', '.join(rows)}"
    else:
        body = "DEFAULT VALUES"
    upsert = ""
    if verb == "INSERT" and cols and draw(st.booleans()):
        keyed = table.pk and draw(st.integers(0, 3)) > 0
        target = f"({', '.join(table.pk)})" if keyed else ""
        target_col = draw(st.sampled_from(cols))
        if target and draw(st.booleans()):
            expr = draw(st.sampled_from([f"excluded.{target_col}", f"{target_col} + 1",
                                         f"excluded.{target_col} || 'u'"]))
            upsert = f" ON CONFLICT{target} DO UPDATE SET {target_col} = {expr}"
        else:
            upsert = " ON CONFLICT DO NOTHING"
    return f"{verb} INTO {table.name} {body}{upsert}", params


def update(draw: Draw, table: Table) -> Stmt:
    """UPDATE [OR REPLACE|IGNORE] of any columns, keys included, by value or expression."""
    targets = [c.name for c in table.writable] + ["rowid"] * (not table.without_rowid)
    cols = draw(st.lists(st.sampled_from(targets), min_size=1, max_size=2, unique=True))
    params: list = []
    sets = []
    for col in cols:
        if draw(st.booleans()):
            sets.append(f"{col} = " + draw(st.sampled_from(_update_exprs())).format(c=col))
        else:
            sql, p = value(draw)
            sets.append(f"{col} = {sql}")
            params += p
    where, wparams = _where(draw, table)
    verb = draw(st.sampled_from(["UPDATE", "UPDATE", "UPDATE OR REPLACE", "UPDATE OR IGNORE"]))
    return f"{verb} {table.name} SET {', '.join(sets)}{where}", params + wparams


def update_from(draw: Draw, schema: Schema, table: Table) -> Stmt:
    """UPDATE … FROM another table: one row may match several source rows."""
    source = schema.tables[draw(st.sampled_from(sorted(schema.tables)))]
    col = draw(st.sampled_from([c.name for c in table.writable] or ["rowid"]))
    src = draw(st.sampled_from([c.name for c in source.columns]))
    on = draw(st.sampled_from([c.name for c in table.columns]))
    return (f"UPDATE {table.name} SET {col} = s.{src} FROM {source.name} AS s "
            f"WHERE {table.name}.{on} = s.{src}"), []


def delete(draw: Draw, table: Table) -> Stmt:
    where, params = _where(draw, table)
    returning = ""
    if draw(st.integers(0, 4)) == 0:
        safe = fuzz_schema.RETURNING_ABORT or not fuzz_schema.INVALID_UTF8
        returning = " RETURNING *" if safe else " RETURNING 1"
    return f"DELETE FROM {table.name}{where}{returning}", params


def insert_select(draw: Draw, schema: Schema, table: Table) -> Stmt:
    source = schema.tables[draw(st.sampled_from(sorted(schema.tables)))]
    col = draw(st.sampled_from([c.name for c in table.writable] or ["rowid"]))
    src = draw(st.sampled_from([c.name for c in source.columns]))
    verb = draw(st.sampled_from(["INSERT OR IGNORE", "INSERT OR REPLACE", "INSERT"]))
    order = "" if source.without_rowid else " ORDER BY rowid"
    return f"{verb} INTO {table.name}({col}) SELECT {src} FROM {source.name}{order} LIMIT 3", []


def bulk(draw: Draw, table: Table) -> Stmt:
    """45 or 130 rows in one statement: past the 128 changes at which the session extension
    recorded a table without a declared key wrongly (keyless.py), and past the 43 at which
    the engine repairs such a recording."""
    col = draw(st.sampled_from([c.name for c in table.writable] or ["rowid"]))
    cols = [col] + [k for k in table.pk if k != col and not table.rowid_alias]
    expr = draw(st.sampled_from(["i", "'k' || i", "i % 7", "CASE i % 4 WHEN 0 THEN i WHEN 1 "
                                 "THEN 'a' || i WHEN 2 THEN NULL ELSE i * 0.5 END"]))
    verb = draw(st.sampled_from(["INSERT", "INSERT OR IGNORE", "INSERT OR REPLACE"]))
    rows = draw(st.sampled_from([45, 130]))
    return (f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
            f"{verb} INTO {table.name}({', '.join(cols)}) "
            f"SELECT {', '.join([expr] * len(cols))} FROM n"), []


def swap(draw: Draw, table: Table) -> list[Stmt]:
    """Swap two key values through a third, in one transaction (three UPDATEs)."""
    key = table.pk[0] if table.pk else ("rowid" if not table.without_rowid else
                                        table.columns[0].name)
    (a, pa), (b, pb) = value(draw, literal=False), value(draw, literal=False)
    spare = draw(st.sampled_from([-99, "zz", 1e9]))
    return [(f"UPDATE {table.name} SET {key} = ? WHERE {key} = {a}", [spare, *pa]),
            (f"UPDATE {table.name} SET {key} = {a} WHERE {key} = {b}", pa + pb),
            (f"UPDATE {table.name} SET {key} = {b} WHERE {key} = ?", [*pb, spare])]


def view_insert(draw: Draw, schema: Schema) -> Stmt:
    view = draw(st.sampled_from(sorted(schema.views)))
    table = schema.tables.get(schema.views[view])
    cols = [c.name for c in table.writable] if table else []
    if not cols:
        return f"INSERT INTO {view} DEFAULT VALUES", []
    params: list = []
    parts = []
    for _ in cols:
        sql, p = value(draw)
        parts.append(sql)
        params += p
    return f"INSERT INTO {view}({', '.join(cols)}) VALUES ({', '.join(parts)})", params


def dml(draw: Draw, schema: Schema) -> list[Stmt]:
    """One row-changing statement (or a three-statement swap) on a random table."""
    table = schema.tables[draw(st.sampled_from(sorted(schema.tables)))]
    kind = draw(st.sampled_from(["insert", "insert", "insert", "update", "update", "delete",
                                 "insert_select", "swap", "view", "bulk"]))
    if kind == "insert":
        return [insert(draw, table)]
    if kind == "update":
        return [update(draw, table) if draw(st.integers(0, 4)) else
                update_from(draw, schema, table)]
    if kind == "delete":
        return [delete(draw, table)]
    if kind == "insert_select":
        return [insert_select(draw, schema, table)]
    if kind == "swap":
        return swap(draw, table)
    if kind == "bulk":
        return [bulk(draw, table)]
    if kind == "view" and schema.views:
        return [view_insert(draw, schema)]
    return [insert(draw, table)]
