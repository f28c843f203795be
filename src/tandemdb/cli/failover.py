"""`tandem failover ENV`, `tandem region failover|failback R`, `tandem region list`.

Each failover command starts an operation (docs/failover.md) and, unless `--no-wait`,
follows it to its end: one environment step by step, a region with a progress bar of its
child operations (one per environment). Then it prints what was measured: RTO, data loss,
final lsn and new epoch per environment. Exit code 1 when the operation, or any
environment in it, failed; the operation goes on in the controller whatever the CLI does,
so Ctrl-C only stops following it (`tandem ops ID` shows it later).

It reads operation records with the SDK's helpers (`tandemdb.client.operations`) and
renders them with `views`.
"""

import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from .base import Typer
from .connection import (
    DEFAULT_DATA,
    CliError,
    Data,
    Json,
    Token,
    Url,
    connect,
    console,
    fail,
    print_json,
    reported,
)

if TYPE_CHECKING:
    from tandemdb.client import Client

POLL_SECONDS = 0.25  # how often the CLI asks for news: steps of a failover take ~100 ms
CHILDREN_LIMIT = 500  # the API's largest page of operations

region_app = Typer(help="Regions: list them with their state; fail a whole region "
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
To = Annotated[str | None, typer.Option(
    "--to", metavar="NODE", help="Promote the secondary on NODE (planned only), e.g. the local "
    "secondary, to switch over within the region. Default: the geo-secondary.")]


# --- following an operation ----------------------------------------------------------

def follow(client: "Client", op_id: str, on_update: Callable[[dict], None],
           poll: float = POLL_SECONDS) -> dict:
    """Ask for the operation until it has ended, at most every `poll` seconds.

    The long poll answers early only at the end, so `poll` also bounds how stale the shown
    steps are; a server without long poll answers at once, hence the sleep."""
    from tandemdb.client import TandemError
    from tandemdb.client.api import ENDED

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


def stopped_following(op_id: str) -> typer.Exit:
    typer.echo(f"stopped following {op_id}; it goes on: 'tandem ops {op_id}' shows it",
               err=True)
    return typer.Exit(130)


# --- commands --------------------------------------------------------------------------

def failover(
    env: EnvName,
    mode: ModeOption = Mode.planned, forced: Forced = False, to: To = None,
    no_wait: NoWait = False,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Move an environment's primary to its paired region (zero loss when planned), or with
    --to to another replica."""
    from .views import StepPrinter

    with reported(), connect(url, token, data) as client:
        op = client.failover(env, Mode.forced.value if forced else mode.value, to=to)
        if no_wait:
            print_started(op, as_json)
            return
        err = console(stderr=True, quiet=as_json)
        title = f"failover {env} ({op['id']})"
        try:
            with err.status(title) as status:
                op = follow(client, op["id"], StepPrinter(err, status, title))
        except KeyboardInterrupt:
            raise stopped_following(op["id"]) from None
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
    from .views import region_state_table

    with reported(), connect(url, token, data) as client:
        regions = client.regions()
    if as_json:
        print_json({"regions": regions})
        return
    console().print(region_state_table(regions))


def _region_follow(client: "Client", op: dict, no_wait: bool, as_json: bool,
                   title: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tandemdb.client import TandemError
    from tandemdb.client.api import ENDED
    from tandemdb.client.operations import child_counts, environment_results

    if no_wait:
        print_started(op, as_json)
        return
    op_id = op["id"]
    children: list[dict] = []
    err = console(stderr=True, quiet=as_json)
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
        raise stopped_following(op_id) from None
    except TandemError as exc:
        raise CliError(f"{exc}; the operation goes on: 'tandem ops {op_id}' shows it") \
            from None
    _finish(op, as_json, children)


def print_started(op: dict, as_json: bool) -> None:
    if as_json:
        print_json(op)
    else:
        console().print(f"started {op.get('id')} ({op.get('kind')} {op.get('target')}); "
                        f"'tandem ops {op.get('id')}' follows it")


def _finish(op: dict, as_json: bool, children: list[dict] | None = None) -> None:
    """Print the outcome, then exit 1 if the operation or any environment failed."""
    from tandemdb.client.operations import (
        environment_results,
        failed_environments,
        merged_results,
    )

    from .views import environment_line, outcome_line, results_table

    entries = merged_results(op, children or []) if children is not None \
        else environment_results(op)
    failed = failed_environments(op, entries)
    if as_json:
        print_json(op)
    else:
        out = console()
        out.print(outcome_line(op, entries))
        if children is None and len(entries) == 1:
            out.print(environment_line(entries[0]))
        elif entries:
            out.print(results_table(entries))
    exit_if_failed(op, failed)


def exit_if_failed(op: dict, failed: list[str]) -> None:
    """Exit 1 naming why, if the operation failed or any of its environments (`failed`)."""
    from tandemdb.client.operations import error_text

    if op.get("state") == "failed":
        fail(f"error: {op['id']} failed: {error_text(op.get('error') or 'no error given')}")
    if failed:
        fail(f"error: {op['id']}: failed for {', '.join(failed)} (see 'tandem ops "
             f"{op['id']}')")
