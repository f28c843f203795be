"""`tandem bench …`: benchmarks that print JSON, each side by side with its baseline."""

import json
from collections.abc import Callable
from typing import Annotated

import typer

from .base import Typer
from .connection import LazyConsole, console

bench_app = Typer(help="Benchmarks that print JSON and compare side by side.",
                        no_args_is_help=True)
err = LazyConsole(stderr=True)
JsonOnly = Annotated[bool, typer.Option("--json", help="Print one JSON object only.")]


def _report(run: Callable[..., dict], title: str, as_json: bool,
            details: Callable[[dict], None] | None = None, **options) -> None:
    """Run with a progress line on stderr (unless --json), then print a table and the JSON;
    `details` prints more from the result (what is not a single number) after the table."""
    from rich.table import Table

    if as_json:
        print(json.dumps(run(**options)))
        return
    with err.status("benchmarking") as status:
        result = run(progress=lambda msg: status.update(f"benchmarking: {msg}"), **options)
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, (int, float)) and key not in ("rounds",):
            table.add_row(key, str(value))
    console().print(table)
    if details is not None:
        details(result)
    print(json.dumps(result))


@bench_app.command("startup")
def bench_startup(rounds: int = typer.Option(20, min=1, help="Runs of each command; the "
                                              "medians count."), as_json: JsonOnly = False
                  ) -> None:
    """CLI start-up: `tandem version` and `tandem --help` against a bare `python -c pass`."""
    from tandemdb.bench.startup import run

    _report(run, "start-up benchmark (median ms; ratio to bare python)", as_json, rounds=rounds)


@bench_app.command("engine")
def bench_engine(
    transactions: int = typer.Option(2000, min=10, help="Transactions per side."),
    rounds: int = typer.Option(5, min=1, help="Alternating rounds; each side's median wins."),
    group: int = typer.Option(32, min=1, help="Transactions per group commit."),
    as_json: JsonOnly = False,
) -> None:
    """Journal overhead: plain APSW against the journaled engine, same durability."""
    from tandemdb.bench import engine

    _report(engine.run, "engine benchmark (WAL synchronous=FULL)", as_json,
            transactions=transactions, rounds=rounds, group=group)


@bench_app.command("replication")
def bench_replication(
    seconds: float = typer.Option(5.0, min=1.0, help="Seconds per measured phase."),
    as_json: JsonOnly = False,
) -> None:
    """Throughput through the gateway and geo-replication lag, on a real deployment."""
    from tandemdb.bench import replication

    _report(replication.run, "replication benchmark (local deployment)", as_json,
            seconds=seconds)


@bench_app.command("switchover")
def bench_switchover(
    envs: int = typer.Option(200, min=1, help="Production environments in the region."),
    failovers: int = typer.Option(20, min=1, help="Failovers of one environment under load."),
    as_json: JsonOnly = False,
) -> None:
    """Writers' pause during planned failovers, and a whole region's switch time."""
    from tandemdb.bench import switchover
    from tandemdb.client import TandemError

    try:
        _report(switchover.run, "switchover benchmark (local deployment)", as_json,
                envs=envs, failovers=failovers)
    except (TandemError, RuntimeError) as exc:  # a refused call: one line, not a traceback
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


@bench_app.command("failover")
def bench_failover(
    grace: float = typer.Option(2.0, min=0.1, help="grace_seconds: how long a region must "
                                                   "be lost before it is failed over."),
    lease_ttl: float = typer.Option(1.5, min=0.1, help="lease_ttl of the deployment."),
    envs: int = typer.Option(3, min=1, help="Production environments in west, one writer "
                                            "each."),
    partition: bool = typer.Option(False, "--partition", help="Cut west off from the "
                                   "controller and east with the fault proxy instead of "
                                   "SIGKILLing it (the gateway still reaches it)."),
    as_json: JsonOnly = False,
) -> None:
    """An unplanned region loss: detection to writable, data lost, lost = acked-missing."""
    from tandemdb.bench import failover
    from tandemdb.client import TandemError

    how = "partition" if partition else "SIGKILL"
    try:
        _report(failover.run, f"failover benchmark ({how} of west, local deployment)",
                as_json, details=_failover_details, grace=grace, lease_ttl=lease_ttl,
                envs=envs, partition=partition)
    except (TandemError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


@bench_app.command("isolation")
def bench_isolation(
    seconds: float = typer.Option(5.0, min=0.5, help="Seconds per phase (the neighbour's "
                                                     "phase lasts at least one round)."),
    lease_ttl: float = typer.Option(1.5, min=0.1, help="lease_ttl of the deployment."),
    clients: int = typer.Option(2, min=1, help="The neighbour's concurrent clients."),
    value_mib: float = typer.Option(0.0, min=0.0, help="Size of the neighbour's values in "
                                    "MiB (0: the largest a transaction may write)."),
    as_json: JsonOnly = False,
) -> None:
    """A tenant's small writes while another runs the largest statements allowed."""
    from tandemdb.bench import isolation
    from tandemdb.client import TandemError

    try:
        _report(isolation.run, "isolation benchmark (local deployment)", as_json,
                details=_isolation_details, seconds=seconds, lease_ttl=lease_ttl,
                clients=clients, value_bytes=int(value_mib * (1 << 20)) or None)
    except (TandemError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


def _isolation_details(result: dict) -> None:
    """The victim's figures side by side: alone, next to the neighbour, and the ratio."""
    from rich.table import Table

    table = Table(title="the victim's writes")
    for column in ("figure", "alone", "with neighbour", "ratio"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for key in ("writes", "p50_ms", "p99_ms", "max_ms", "errors"):
        table.add_row(key, str(result.get(f"victim_{key}_baseline")),
                      str(result.get(f"victim_{key}_noisy")),
                      str(result.get(f"victim_{key}_ratio", "")))
    table.add_row("lease_min_remaining_s", str(result.get("lease_min_remaining_s_baseline")),
                  str(result.get("lease_min_remaining_s_noisy")), "")
    console().print(table)


def _per_env(columns: dict[str, str]) -> Callable[[dict], None]:
    """A `details` printer: one row per environment, one column per `{title: key}` of a
    per-environment figure (the main table sums those, or takes the largest)."""

    def details(result: dict) -> None:
        from rich.table import Table

        table = Table(title="per environment")
        table.add_column("env")
        for name in columns:
            table.add_column(name, justify="right")
        for env in result.get("detect_to_writable_per_env", {}):
            table.add_row(env, *(str(result.get(key, {}).get(env))
                                 for key in columns.values()))
        console().print(table)

    return details


_failover_details = _per_env({
    "lag": "lag_at_outage_per_env", "writable s": "detect_to_writable_per_env",
    "lost (known)": "lost_entries_known_per_env", "lost": "lost_entries_per_env",
    "acked missing": "acked_missing_per_env"})


@bench_app.command("node-failure")
def bench_node_failure(
    envs: int = typer.Option(10, min=1, help="Production environments in west, their "
                                             "primaries all on one node, one writer each."),
    as_json: JsonOnly = False,
) -> None:
    """The loss of one node (2 per region): detection to writable, nothing acknowledged
    lost, no region failover, re-replication after its restart."""
    from tandemdb.bench import node_failure
    from tandemdb.client import TandemError

    try:
        _report(node_failure.run, "node failure benchmark (SIGKILL of one west node)",
                as_json, details=_node_failure_details, envs=envs)
    except (TandemError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None


_node_failure_details = _per_env({
    "writable s": "detect_to_writable_per_env", "failover RTO s": "node_failover_rto_per_env",
    "acked lost": "acked_lost_per_env"})
