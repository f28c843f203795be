"""Lost writes described for people: what a rewind takes out (docs/failover.md, "When the
old primary's region returns").

After a forced failover the old primary may hold entries past the fork point that the new
primary never saw. Before they are undone, each is described: its lsn, epoch and commit
time, the tables it touched, its schema statements, and every row it changed: its key, and
its values before and after (`None` for an insert's before or a delete's after). An
update names only what the changeset knows: the key and the columns it changed.

Values are as in SQL results, except two that JSON cannot carry as such, which are tagged so
that nothing mistakes them for plain values (a replay leaves them to people): a non-finite
REAL is `{"$real": "Infinity"}` (or "-Infinity"), and TEXT that is not valid UTF-8 is
`{"$text_hex": "…"}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import apsw

from . import rawchangeset
from .journal import CHANGESET, DDL, JournalEntry

NON_FINITE = "$real"  # tags a REAL infinity: {"$real": "Infinity"} or {"$real": "-Infinity"}
TAGS = (NON_FINITE, rawchangeset.INVALID_TEXT)  # values a replay cannot write back as given


def describe(entry: JournalEntry, columns: Callable[[str], list[str]]) -> dict[str, Any]:
    """One lost entry; `columns(table)` names a table's columns in order."""
    changes, tables, ddl = [], [], []
    for kind, payload in entry.segments:
        if kind == DDL:
            ddl.append(payload)
            continue
        if kind != CHANGESET:
            continue
        for change in _changes(payload):  # type: ignore[arg-type]
            names = columns(change.name)
            if change.column_count == len(names) + 1:  # a table without a key: rowid first
                names = ["rowid", *names]
            elif change.column_count != len(names):
                names = [f"c{i}" for i in range(change.column_count)]
            if change.name not in tables:
                tables.append(change.name)
            keyed = change.new if change.op == "INSERT" else change.old
            changes.append({"table": change.name, "op": change.op.lower(),
                            "key": {names[i]: keyed[i] for i in sorted(change.pk_columns)},
                            "before": _row(names, change.old),
                            "after": _after(names, change.old, change.new)})
    return {"lsn": entry.lsn, "epoch": entry.epoch, "committed_at": entry.committed_at,
            "tables": tables, "ddl": ddl, "changes": changes}


def _changes(changeset: bytes) -> list:
    """The changes with their values read, from apsw; if one holds TEXT that is not UTF-8,
    apsw cannot decode it, and the changeset is read without decoding instead."""
    try:
        return [rawchangeset.RawChange(c.name, c.op, c.column_count, set(c.pk_columns),
                                       _safe(c.old), _safe(c.new))
                for c in apsw.Changeset.iter(changeset)]
    except UnicodeDecodeError:
        return [rawchangeset.RawChange(c.name, c.op, c.column_count, c.pk_columns,
                                       _safe(c.old), _safe(c.new))
                for c in rawchangeset.iterate(changeset)]


def _safe(values: tuple | None) -> tuple | None:
    """JSON-safe values: a non-finite REAL is tagged (a plain "Infinity" would be TEXT)."""
    if values is None or not any(type(v) is float and not math.isfinite(v) for v in values):
        return values
    return tuple({NON_FINITE: "Infinity" if v > 0 else "-Infinity"}
                 if type(v) is float and not math.isfinite(v) else v for v in values)


def _row(names: list[str], values: tuple | None) -> dict | None:
    if values is None:
        return None
    return {n: v for n, v in zip(names, values, strict=False) if v is not apsw.no_change}


def _after(names: list[str], old: tuple | None, new: tuple | None) -> dict | None:
    if new is None:
        return None
    old = old or (apsw.no_change,) * len(new)
    return {n: (v if v is not apsw.no_change else o)
            for n, o, v in zip(names, old, new, strict=False)
            if not (v is apsw.no_change and o is apsw.no_change)}
