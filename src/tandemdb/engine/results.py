"""Inputs and outputs of an environment transaction (the data API, docs/api.md).

Parameters are checked before SQLite sees them, so a bad one is a clear SqlError naming it,
never a crash or a silent change: NaN is refused (SQLite would store NULL), integers must
fit in 64 bits, and values are NULL, numbers, text or bytes (true/false bind as 1/0, as
SQLite's TRUE and FALSE do). Results keep SQLite's values; their JSON form (`to_dict`)
spells the non-finite REALs SQLite can hold (`SELECT 1e999`) as the strings "Infinity" and
"-Infinity", as PostgreSQL's to_json does, since JSON has no such numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SqlError

Params = Sequence[Any] | Mapping[str, Any] | None
_INT64 = (-(1 << 63), (1 << 63) - 1)
_BYTES = (bytes, bytearray, memoryview)
_NONFINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _check_value(value: Any, name: str) -> None:
    """Refuse a parameter value SQLite cannot store as given."""
    kind = type(value)
    if value is None or kind is str or kind is bool or kind in _BYTES:
        return
    if kind is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise SqlError(f"parameter {name} is an integer outside SQLite's 64-bit range; "
                           "send it as text")
        return
    if kind is float:
        if value != value:
            raise SqlError(f"parameter {name} is NaN, which SQLite would store as NULL; "
                           "send null if that is meant")
        return
    what = ("an object" if isinstance(value, Mapping) else
            "a list" if isinstance(value, (list, tuple)) else f"a {kind.__name__}")
    raise SqlError(f"parameter {name} is {what}: a value must be null, a number, text, or "
                   'bytes as {"$blob": "<base64>"}')


def _check_params(params: Params) -> None:
    if params is None:
        return
    if isinstance(params, Mapping):
        for key, value in params.items():
            if type(key) is not str:
                raise SqlError(f"parameter names must be text, got {key!r}")
            _check_value(value, f":{key}")
        return
    for i, value in enumerate(params, 1):
        _check_value(value, f"{i}")


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: Params = None

    @classmethod
    def of(cls, item: Statement | str | tuple | Mapping) -> Statement:
        """Accept `Statement`, plain SQL, `(sql, params)` or `{"sql": …, "params": …}`."""
        # Concrete types first: isinstance against the Mapping ABC is slow on the hot path.
        if type(item) is tuple and len(item) == 2:
            stmt = cls(item[0], item[1])
        elif type(item) is str:
            stmt = cls(item)
        elif isinstance(item, Statement):
            stmt = item
        elif isinstance(item, Mapping):
            stmt = cls(item.get("sql"), item.get("params"))  # type: ignore[arg-type]
        else:
            raise SqlError(f"a statement must be SQL text with optional params, got {item!r}")
        if type(stmt.sql) is not str or not stmt.sql.strip():
            raise SqlError("statement has no SQL text")
        params = stmt.params
        if not (params is None or type(params) in (list, tuple, dict)
                or isinstance(params, Mapping)):
            raise SqlError("params must be a list (positional) or an object (named)")
        _check_params(params)
        return stmt


@dataclass(slots=True)
class StatementResult:
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    rows_affected: int = 0
    last_insert_rowid: int | None = None  # set only by statements that insert

    def to_dict(self) -> dict:
        """The JSON-safe form: non-finite REALs become "Infinity" / "-Infinity"."""
        rows = self.rows
        if any(math.inf in row or -math.inf in row for row in rows):
            rows = [[_json_safe(v) for v in row] for row in rows]
        return {"columns": self.columns, "rows": rows, "rows_affected": self.rows_affected,
                "last_insert_rowid": self.last_insert_rowid}


@dataclass(slots=True)
class TxResult:
    """Outcome of one transaction: per-statement results, and the lsn and epoch after it.

    For a read-only transaction `lsn` is the environment's last lsn (no entry is made)."""

    results: list[StatementResult]
    lsn: int
    epoch: int

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results], "lsn": self.lsn,
                "epoch": self.epoch}


def _json_safe(value: Any) -> Any:
    if type(value) is float and not math.isfinite(value):
        return _NONFINITE.get(value, "NaN")
    return value
