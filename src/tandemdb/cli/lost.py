"""`tandem lost ENV`: the writes a forced failover lost, kept when the old primary rejoined."""

from datetime import UTC, datetime
from typing import Annotated

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

EnvName = Annotated[str, typer.Argument(help="Environment name, e.g. acme.", show_default=False)]


Replay = Annotated[bool, typer.Option(
    "--replay", help="Apply the lost writes that conflict with nothing written since the "
                     "fork, and list the rows that conflict. Never applies a write twice.")]


def lost(env: EnvName, replay: Replay = False, as_json: Json = False, url: Url = None,
         token: Token = None, data: Data = DEFAULT_DATA) -> None:
    """List the lost writes of ENV: lsn, commit time, tables, rows before and after."""
    from rich.table import Table

    with reported(), connect(url, token, data) as client:
        if replay:
            _print_replay(client.replay_lost(env), as_json)
            return
        answer = client.lost(env)
    if as_json:
        print_json(answer)
        return
    out = console()
    if not answer["bundles"]:
        out.print(f"{env}: no lost writes recorded")
        return
    for bundle in answer["bundles"]:
        how = "rewound" if bundle.get("rewound") else "re-seeded"
        # A node failover's bundle: none of it was ever acknowledged (docs/ha.md).
        acked = ("; none was acknowledged (a node failover)"
                 if bundle.get("acknowledged") is False else "")
        out.print(f"[bold]{env}[/]: {len(bundle['entries'])} write(s) after fork lsn "
                  f"{bundle['fork_lsn']} (epoch {bundle['epoch']}) on {bundle['node']} "
                  f"in {bundle['region']}, {how}; recorded {bundle['recorded_at']}{acked}")
        table = Table("lsn", "committed", "table", "op", "before", "after")
        for entry in bundle["entries"]:
            when = datetime.fromtimestamp(entry["committed_at"], UTC).strftime("%H:%M:%S.%f")
            for change in entry["changes"] or [{"table": ", ".join(entry["ddl"]), "op": "ddl",
                                                 "before": None, "after": None}]:
                table.add_row(str(entry["lsn"]), when[:-3], change["table"], change["op"],
                              _row(change["before"]), _row(change["after"]))
        out.print(table)


def _row(values: dict | None) -> str:
    return "" if values is None else ", ".join(f"{k}={v!r}" for k, v in values.items())


def _print_replay(answer: dict, as_json: bool) -> None:
    from rich.table import Table

    if as_json:
        print_json(answer)
        return
    out = console()
    out.print(f"[bold]{answer['environment']}[/]: replayed {len(answer['applied'])} lost "
              f"write(s) {answer['applied'] or ''}, {len(answer['already'])} already there"
              f", {len(answer['conflicts'])} conflicting row(s) left alone")
    if answer["conflicts"]:
        table = Table("lsn", "table", "op", "key", "reason")
        for c in answer["conflicts"]:
            table.add_row(str(c["lsn"]), str(c["table"] or ""), str(c["op"] or ""),
                          _row(c["key"]), c["reason"])
        out.print(table)
