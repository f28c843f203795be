"""Rich renderings of operations (docs/operations.md, docs/failover.md): lists and steps
for `tandem ops`, and for failovers the steps as they end, the outcome, the results per
environment and the regions' state.

Imported by the commands when they render (connection.py says why), never at start-up.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Literal

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tandemdb.client.api import ENDED
from tandemdb.client.operations import data_loss_entries, error_text, max_rto_seconds, took

STATE_STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "pending": "dim",
                "healthy": "green", "failed-over": "yellow", "failing-over": "yellow",
                "failing-back": "yellow", "partially-failed-over": "red"}


def _state(value: Any) -> Text:
    text = str(value or "?")
    return Text(text, style=STATE_STYLES.get(text, ""))


# --- tandem ops ------------------------------------------------------------------------

def _steps_done(op: dict) -> str:
    steps = op.get("steps") or []
    return f"{sum(1 for s in steps if s.get('state') == 'succeeded')}/{len(steps)}"


def _when(value: Any) -> str:
    """`2026-11-22T03:30:00.123Z` as `2026-11-22 03:30:00`."""
    return str(value or "")[:19].replace("T", " ")


def _took(started: Any, finished: Any) -> str:
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started))
    except (TypeError, ValueError):
        return ""
    return f"{seconds.total_seconds():.2f}s"


def operations_table(ops: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("id", "kind", "target", "state", "steps", "started"):
        table.add_column(column, no_wrap=column != "target", overflow="fold")
    for op in ops:
        table.add_row(str(op.get("id")), str(op.get("kind")), str(op.get("target")),
                      _state(op.get("state")), _steps_done(op),
                      _when(op.get("started_at"))[5:])  # MM-DD HH:MM:SS
    return table


def operation_summary(op: dict) -> Text:
    text = Text(f"{op.get('id')} {op.get('kind')} {op.get('target')}: ")
    text.append_text(_state(op.get("state")))
    text.append(f" ({_steps_done(op)} steps), started {_when(op.get('started_at'))}")
    if op.get("finished_at"):
        text.append(f", took {_took(op.get('started_at'), op.get('finished_at'))}")
    return text


def steps_table(op: dict) -> Table:
    table = Table(title="steps", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("#", "step", "state", "took", "tries", "detail"):
        table.add_column(column, no_wrap=column != "detail", overflow="fold")
    for i, step in enumerate(op.get("steps") or [], 1):
        table.add_row(str(i), str(step.get("name")), _state(step.get("state")),
                      _took(step.get("started_at"), step.get("finished_at")),
                      str(step.get("attempts", "")), str(step.get("detail") or ""))
    return table


# --- failovers -------------------------------------------------------------------------

class StepPrinter:
    """Prints each step once it has ended, and shows the running one on a status line."""

    def __init__(self, console: Console, status: Any, title: str) -> None:
        self.console, self.status, self.title = console, status, title
        self.printed: set[int] = set()

    def __call__(self, op: dict) -> None:
        running = None
        for i, step in enumerate(op.get("steps") or []):
            state = step.get("state")
            if state in ENDED and i not in self.printed:
                self.printed.add(i)
                mark, style = ("✓", "green") if state == "succeeded" else ("✗", "red")
                line = Text(f"  {mark} ", style=style)
                line.append(str(step.get("name")), style="bold")
                spent = took(step)
                if spent is not None:
                    line.append(f"  {spent * 1000:.0f} ms", style="dim")
                if step.get("detail"):
                    line.append(f"  {step['detail']}", style="dim")
                self.console.print(line)
            elif state == "running" and running is None:
                running = step.get("name")
        self.status.update(f"{self.title}: {running or op.get('state')}")


def ms(seconds: Any) -> str:
    return f"{float(seconds) * 1000:.0f}" if isinstance(seconds, int | float) else "?"


def outcome_line(op: dict, entries: list[dict]) -> Text:
    text = Text(f"{op.get('kind')} {op.get('target')} ({op.get('id')}): ")
    text.append_text(_state(op.get("state")))
    spent = took(op)
    if spent is not None:
        text.append(f" in {spent:.2f}s")
    if len(entries) > 1 or (entries and op.get("kind") != "environment.failover"):
        done = sum(1 for e in entries if e.get("state") == "succeeded")
        text.append(f"; {done}/{len(entries)} environment(s) moved")
        rto = max_rto_seconds({"result": {"environments": entries}})
        if rto is not None:
            text.append(f", RTO max {ms(rto)} ms")
    elif not entries and op.get("kind", "").startswith("region."):
        text.append("; no environment to move")
    return text


def environment_line(entry: dict) -> Text:
    """`acme: west → east · RTO 182 ms · data loss 0 entries · final lsn 1234 · epoch 2`."""
    text = Text(f"{entry.get('environment')}: {entry.get('from_region', '?')} → "
                f"{entry.get('to_region', '?')}", style="bold")
    loss = data_loss_entries(entry)
    text.append(f" · RTO {ms(entry.get('rto_seconds'))} ms · data loss "
                f"{'?' if loss is None else loss} entries · final lsn "
                f"{entry.get('final_lsn', '?')} · epoch {entry.get('epoch', '?')}")
    if entry.get("error"):
        text.append(f" · {error_text(entry['error'])}", style="red")
    return text


def results_table(entries: list[dict]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("env", "left"), ("from → to", "left"), ("state", "left"), ("RTO ms", "right"),
        ("data loss", "right"), ("final lsn", "right"), ("epoch", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    errors = any(e.get("error") for e in entries)
    if errors:
        table.add_column("error", overflow="fold")
    for e in entries:
        loss = data_loss_entries(e)
        row: list[Any] = [str(e.get("environment")),
                          f"{e.get('from_region', '?')} → {e.get('to_region', '?')}",
                          _state(e.get("state")), ms(e.get("rto_seconds")),
                          "?" if loss is None else str(loss), str(e.get("final_lsn", "?")),
                          str(e.get("epoch", "?"))]
        if errors:
            row.append(Text(error_text(e["error"]) if e.get("error") else "", style="red"))
        table.add_row(*row)
    return table


def _since(value: Any) -> str:
    if isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return str(value or "")[:19].replace("T", " ")


def region_state_table(regions: list[dict]) -> Table:
    """One row per region: pair, state, since, healthy nodes, the operation moving it."""
    table = Table(title="regions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("region", "pair", "state", "since", "nodes", "operation"):
        table.add_column(column, no_wrap=True, justify="right" if column == "nodes" else "left")
    for region in regions:
        nodes = region.get("nodes") or []
        healthy = sum(1 for n in nodes if n.get("healthy"))
        table.add_row(str(region.get("name", "?")), str(region.get("pair", "?")),
                      _state(region.get("state")), _since(region.get("state_since")),
                      Text(f"{healthy}/{len(nodes)} healthy",
                           style="green" if nodes and healthy == len(nodes) else "red"),
                      str(region.get("operation") or ""))
    return table
