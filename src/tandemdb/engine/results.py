"""Inputs and outputs of an environment transaction (the data-plane contract, DESIGN §3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import SqlError

Params = Sequence[Any] | Mapping[str, Any] | None


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
        return stmt


@dataclass(slots=True)
class StatementResult:
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    rows_affected: int = 0
    last_insert_rowid: int | None = None  # set only by statements that insert

    def to_dict(self) -> dict:
        return {"columns": self.columns, "rows": self.rows, "rows_affected": self.rows_affected,
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
