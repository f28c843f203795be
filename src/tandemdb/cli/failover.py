"""`tandem failover ENV`, `tandem region failover|failback R`, `tandem region list`.

Each failover command starts an operation (docs/failover.md) and, unless `--no-wait`,
follows it to its end: one environment step by step, a region with a progress bar of its
child operations (one per environment). Then it prints what was measured: RTO, data loss,
final lsn and new epoch per environment. Exit code 1 when the operation, or any
environment in it, failed; the operation goes on in the controller whatever the CLI does,
so Ctrl-C only stops following it (`tandem ops ID` shows it later).

It reads operation records with the SDK's helpers (`tandemdb.client.operations`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tandemdb.client import Client, TandemError
from tandemdb.client.api import ENDED
from tandemdb.client.operations import (
    child_counts,
    data_loss_entries,
    environment_results,
    error_text,
    failed_environments,
    max_rto_seconds,
    merged_results,
    took,
)

from .connection import (
    DEFAULT_DATA,
    CliError,
    Data,
    Json,
    Token,
    Url,
    connect,
    fail,
    print_json,
    reported,
)

POLL_SECONDS = 0.25  # how often the CLI asks for news: steps of a failover take ~100 ms
CHILDREN_LIMIT = 500  # the API's largest page of operations
STATE_STYLES = {"succeeded": "green", "failed": "red", "running": "yellow", "pending": "dim",
                "healthy": "green", "failed-over": "yellow", "failing-over": "yellow",
                "failing-back": "yellow", "partially-failed-over": "red"}

region_app = typer.Typer(help="Regions: list them with their state; fail a whole region "
                              "over to its pair, and back.", no_args_is_help=True)

EnvName = Annotated[str, typer.Argument(help="Environment name, e.g. acme.",
                                        show_default=False)]
RegionName = Annotated[str, typer.Argument(help="Region name, e.g. west.", show_default=False)]
NoWait = Annotated[bool, typer.Option(
    "--no-wait", help="Print the started operation and return; 'tandem ops ID' follows it.")]
Parallelism = Annotated[int | None, typer.Option(
    "--parallelism", min=1, show_default=False,
    help="Environments switched at the same time (default: the controller's).")]


class Mode(StrEnum):
    planned = "planned"  # both regions up: zero data loss
    forced = "forced"  # the primary's region is lost: loss bounded by the lag, reported


ModeOption = Annotated[Mode, typer.Option(
    "--mode", help="planned: both regions are up, nothing is lost. forced: the primary's "
                   "region is lost; promote the secondary at what it has (the loss is "
                   "reported).")]
Forced = Annotated[bool, typer.Option("--forced", help="The same as --mode forced.")]


# --- following an operation ----------------------------------------------------------

def follow(client: Client, op_id: str, on_update: Callable[[dict], None],
           poll: float = POLL_SECONDS) -> dict:
    """Ask for the operation until it has ended, at most every `poll` seconds.

    The long poll answers early only at the end, so `poll` also bounds how stale the shown
    steps are; a server without long poll answers at once, hence the sleep."""
    while True:
        asked = time.monotonic()
        try:
            op = client.operation(op_id, wait=poll)
        except TandemError as exc:
            raise CliError(f"{exc}; the operation goes on: 'tandem ops {op_id}' shows "
                           "it") from None
        on_update(op)
        if op.get("state") in ENDED:
            return op
        time.sleep(max(0.0, poll - (time.monotonic() - asked)))


def _stopped_following(op_id: str) -> typer.Exit:
    typer.echo(f"stopped following {op_id}; it goes on: 'tandem ops {op_id}' shows it",
               err=True)
    return typer.Exit(130)


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


# --- commands --------------------------------------------------------------------------

def failover(
    env: EnvName,
    mode: ModeOption = Mode.planned, forced: Forced = False,
    no_wait: NoWait = False,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Move an environment's primary to its paired region (zero loss when planned)."""
    with reported(), connect(url, token, data) as client:
        op = client.failover(env, Mode.forced.value if forced else mode.value)
        if no_wait:
            _print_started(op, as_json)
            return
        err = Console(stderr=True, quiet=as_json)
        title = f"failover {env} ({op['id']})"
        try:
            with err.status(title) as status:
                op = follow(client, op["id"], StepPrinter(err, status, title))
        except KeyboardInterrupt:
            raise _stopped_following(op["id"]) from None
    _finish(op, as_json)


@region_app.command("failover")
def region_failover(
    region: RegionName,
    mode: ModeOption = Mode.planned, forced: Forced = False,
    parallelism: Parallelism = None, no_wait: NoWait = False,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Move every production primary out of REGION to its paired region."""
    with reported(), connect(url, token, data) as client:
        op = client.region_failover(region, Mode.forced.value if forced else mode.value,
                                    parallelism)
        _region_follow(client, op, no_wait, as_json, f"region failover {region}")


@region_app.command("failback")
def region_failback(
    region: RegionName, parallelism: Parallelism = None, no_wait: NoWait = False,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Move every environment whose home is REGION back home (planned: zero loss)."""
    with reported(), connect(url, token, data) as client:
        op = client.region_failback(region, parallelism)
        _region_follow(client, op, no_wait, as_json, f"region failback {region}")


@region_app.command("list")
def region_list(as_json: Json = False, url: Url = None, token: Token = None,
                data: Data = DEFAULT_DATA) -> None:
    """List regions: pair, state (healthy, failing-over, failed-over …), since, nodes."""
    with reported(), connect(url, token, data) as client:
        regions = client.regions()
    if as_json:
        print_json({"regions": regions})
        return
    Console().print(region_state_table(regions))


def _region_follow(client: Client, op: dict, no_wait: bool, as_json: bool,
                   title: str) -> None:
    if no_wait:
        _print_started(op, as_json)
        return
    op_id = op["id"]
    children: list[dict] = []
    err = Console(stderr=True, quiet=as_json)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[failed]}", style="red"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=err, transient=True,
                      disable=not err.is_terminal) as progress:
            task = progress.add_task(f"{title} ({op_id})", total=None, failed="")

            def update(current: dict) -> None:
                nonlocal children
                children = client.operations(CHILDREN_LIMIT, parent=op_id)
                succeeded, failed, total = child_counts(children)
                total = max(total, len(environment_results(current)))
                ended = current.get("state") in ENDED
                progress.update(task, completed=succeeded + failed,
                                total=total if total or ended else None,
                                failed=f"{failed} failed" if failed else "")

            op = follow(client, op_id, update)
    except KeyboardInterrupt:
        raise _stopped_following(op_id) from None
    except TandemError as exc:
        raise CliError(f"{exc}; the operation goes on: 'tandem ops {op_id}' shows it") \
            from None
    _finish(op, as_json, children)


def _print_started(op: dict, as_json: bool) -> None:
    if as_json:
        print_json(op)
    else:
        Console().print(f"started {op.get('id')} ({op.get('kind')} {op.get('target')}); "
                        f"'tandem ops {op.get('id')}' follows it")


def _finish(op: dict, as_json: bool, children: list[dict] | None = None) -> None:
    """Print the outcome, then exit 1 if the operation or any environment failed."""
    entries = merged_results(op, children or []) if children is not None \
        else environment_results(op)
    failed = failed_environments(op, entries)
    if as_json:
        print_json(op)
    else:
        console = Console()
        console.print(outcome_line(op, entries))
        if children is None and len(entries) == 1:
            console.print(environment_line(entries[0]))
        elif entries:
            console.print(results_table(entries))
    if op.get("state") == "failed":
        fail(f"error: {op['id']} failed: {error_text(op.get('error') or 'no error given')}")
    if failed:
        fail(f"error: {op['id']}: failed for {', '.join(failed)} (see 'tandem ops "
             f"{op['id']}')")


# --- renderings ------------------------------------------------------------------------

def ms(seconds: Any) -> str:
    return f"{float(seconds) * 1000:.0f}" if isinstance(seconds, int | float) else "?"


def _state(value: Any) -> Text:
    text = str(value or "?")
    return Text(text, style=STATE_STYLES.get(text, ""))


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
    for column, justify in (("env", "left"), ("from → to", "left"), ("state", "left"),
                            ("RTO ms", "right"), ("data loss", "right"),
                            ("final lsn", "right"), ("epoch", "right")):
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
