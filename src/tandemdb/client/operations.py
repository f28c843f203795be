"""Reading operation records (docs/failover.md): results, RTO, data loss, who failed.

Pure helpers over the records the API returns (`Client.operation`, `Client.operations`).
They read operation records as the contract shapes them and tolerate missing fields: a
child's result may be missing until it ends. The CLI renders with them; `tandem demo` and
`tandem bench switchover` measure with them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .api import ENDED


def environment_results(op: dict) -> list[dict]:
    """The per-environment entries of a failover operation's result (possibly none yet).

    `result.environments` by the contract; a bare result holding `rto_seconds` is taken as
    the one environment's entry, so an older or terser controller still renders."""
    result = op.get("result") or {}
    if isinstance(result.get("environments"), list):
        return [e for e in result["environments"] if isinstance(e, dict)]
    if "rto_seconds" in result:
        return [{"environment": op.get("target"), **result}]
    return []


def max_rto_seconds(op: dict) -> float | None:
    """The largest RTO over the operation's environments (None when none is measured)."""
    rtos = [float(e["rto_seconds"]) for e in environment_results(op)
            if isinstance(e.get("rto_seconds"), int | float)]
    return max(rtos) if rtos else None


def data_loss_entries(entry: dict) -> int | None:
    """`data_loss` is a count of lost entries; `{"entries": n, …}` is read the same way."""
    loss = entry.get("data_loss")
    if isinstance(loss, dict):
        loss = loss.get("entries")
    return int(loss) if isinstance(loss, int | float) else None


def merged_results(op: dict, children: list[dict]) -> list[dict]:
    """One entry per environment of a region operation: the parent's result where it has
    one, else what the child operation says (its result, or at least its state)."""
    rows: dict[str, dict] = {}
    for child in children:
        entries = environment_results(child)
        entry = dict(entries[0]) if entries else {}
        entry.setdefault("environment", child.get("target"))
        entry.setdefault("operation", child.get("id"))
        if child.get("state") in ENDED or "state" not in entry:
            entry["state"] = child.get("state")
        if child.get("error") and not entry.get("error"):
            entry["error"] = child["error"]
        rows[str(entry["environment"])] = entry
    for entry in environment_results(op):
        name = str(entry.get("environment"))
        rows[name] = {**rows.get(name, {}), **entry}
    return sorted(rows.values(), key=lambda e: str(e.get("environment")))


def child_counts(children: list[dict]) -> tuple[int, int, int]:
    """(succeeded, failed, total) over a region operation's child operations."""
    succeeded = sum(1 for c in children if c.get("state") == "succeeded")
    failed = sum(1 for c in children if c.get("state") == "failed")
    return succeeded, failed, len(children)


def failed_environments(op: dict, entries: list[dict]) -> list[str]:
    """The environments that failed, or a count when the result only has one."""
    names = [str(e.get("environment")) for e in entries
             if e.get("state") == "failed" or e.get("error")]
    result = op.get("result") or {}
    if not names and isinstance(result.get("failed"), int) and result["failed"] > 0:
        names = [f"{result['failed']} environment(s)"]
    return names


def error_text(error: Any) -> str:
    """`{"code", "message"}` (or a bare string) as one line."""
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code else str(message)
    return str(error)


def took(op: dict) -> float | None:
    """Seconds from a record's start to its end (an operation or a step), ISO timestamps."""
    try:
        return (datetime.fromisoformat(op["finished_at"])
                - datetime.fromisoformat(op["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
