"""`tandem ops [ID]` and `tandem events [--follow]`: operations and the event log.

`ops` lists the newest operations, or shows one with its steps (state, times, attempts and
the sentence each step logged). `events` prints the event log; `--follow` keeps a long poll
open and prints each event as it comes, until Ctrl-C.
"""

import json
from typing import Annotated, Any

import typer

from .connection import (
    DEFAULT_DATA,
    Data,
    Json,
    Token,
    Url,
    connect,
    console,
    print_json,
    reported,
)

FOLLOW_WAIT_SECONDS = 25  # under the client's 30 s timeout


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
    from rich.text import Text

    from .views import operation_summary, operations_table, steps_table

    with reported(), connect(url, token, data) as client:
        answer: Any = (client.operation(op_id) if op_id
                       else client.operations(limit))
    if as_json:
        print_json(answer if op_id else {"operations": answer})
        return
    out = console()
    if not op_id:
        out.print(operations_table(answer, f"{len(answer)} operation(s), newest first"))
        return
    out.print(operation_summary(answer))
    if answer.get("error"):
        error = answer["error"]
        out.print(Text(f"error {error.get('code')}: {error.get('message')}", style="red"))
    if answer.get("result"):
        out.print(f"result: {answer['result']}")
    out.print(steps_table(answer))


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
