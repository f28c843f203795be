"""`tandem ops [ID]` and `tandem events [--follow]`: operations and the event log.

`ops` lists the newest operations, or shows one with its steps (state, times, attempts and
the sentence each step logged). `events` prints the event log; `--follow` keeps a long poll
open and prints each event as it comes, until Ctrl-C.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .connection import DEFAULT_DATA, Data, Json, Token, Url, connect, print_json, reported

FOLLOW_WAIT_SECONDS = 25  # under the client's 30 s timeout
STATE_STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "pending": "dim"}


def _state(value: Any) -> Text:
    text = str(value or "?")
    return Text(text, style=STATE_STYLES.get(text, ""))


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


def event_line(event: dict) -> str:
    where = " ".join(str(part) for part in (event.get("environment"),
                                            f"({event['region']})" if event.get("region")
                                            else None) if part)
    op = f" [{event['operation']}]" if event.get("operation") else ""
    return f"#{event.get('id')} {event.get('at')} {event.get('type')} {where}{op}".rstrip()


def ops(
    op_id: Annotated[str | None, typer.Argument(
        help="Operation id, e.g. op-000017. Without it: the newest operations.",
        show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500,
                                       help="How many operations to list.")] = 20,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """List the newest operations, or show one with its steps."""
    with reported(), connect(url, token, data) as client:
        answer: Any = (client.operation(op_id) if op_id
                       else client.operations(limit))
    if as_json:
        print_json(answer if op_id else {"operations": answer})
        return
    console = Console()
    if not op_id:
        console.print(operations_table(answer, f"{len(answer)} operation(s), newest first"))
        return
    console.print(operation_summary(answer))
    if answer.get("error"):
        error = answer["error"]
        console.print(Text(f"error {error.get('code')}: {error.get('message')}", style="red"))
    if answer.get("result"):
        console.print(f"result: {answer['result']}")
    console.print(steps_table(answer))


def events(
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new events as they come, until Ctrl-C.")] = False,
    after: Annotated[int, typer.Option(
        "--after", min=0, help="Only events with a larger id (0: from the first).")] = 0,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Print the event log (environment.created, environment.deleted, …), oldest first."""
    with reported(), connect(url, token, data) as client:
        answer = client.events(after)
        if not follow:
            if as_json:
                print_json(answer)
            else:
                for event in answer["events"]:
                    print(event_line(event))
            return
        try:
            while True:
                for event in answer["events"]:
                    if as_json:
                        print(json.dumps(event), flush=True)  # one JSON object per line
                    else:
                        print(event_line(event), flush=True)
                    after = max(after, int(event["id"]))
                answer = client.events(after, FOLLOW_WAIT_SECONDS)
        except KeyboardInterrupt:
            return
