"""`tandem bench …`: benchmarks that print JSON, each side by side with its baseline."""

import json
from collections.abc import Callable, Iterable
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
    _report_lines(lambda **kw: [run(**kw)], title, as_json, details, **options)


def _report_lines(run: Callable[..., Iterable[dict]], title: str, as_json: bool,
                  details: Callable[[dict], None] | None = None, **options) -> None:
    """`_report` for a run that answers several JSON lines (one per store and round, then
    their comparison): one table with a column each, then every line."""
    from rich.table import Table

    if as_json:
        for line in run(**options):
            print(json.dumps(line), flush=True)  # as each run ends: a later one may fail
        return
    lines: list[dict] = []
    with err.status("benchmarking") as status:
        try:
            lines.extend(run(progress=lambda msg: status.update(f"benchmarking: {msg}"),
                             **options))
        except BaseException:
            for line in lines:  # what was measured before the failure
                print(json.dumps(line))
            raise
    runs = [line for line in lines if "comparison" not in line]
    table = Table(title=title)
    table.add_column("figure")
    for line in runs:
        name = " ".join(str(line[k]) for k in ("store", "round") if k in line)
        table.add_column(name if len(runs) > 1 else "value", justify="right")
    for key in runs[0]:
        values = [line.get(key) for line in runs]
        if key not in ("rounds", "round") and all(isinstance(v, int | float) for v in values):
            table.add_row(key, *map(str, values))
    console().print(table)
    for line in runs:
        if details is not None:
            details(line)
    for line in lines:
        if "comparison" in line:
            _comparison_table(line)
    for line in lines:
        print(json.dumps(line))


def _comparison_table(line: dict) -> None:
    """The comparison line of `--store sqlite,etcd` as figure | sqlite | etcd | ratio."""
    from rich.table import Table

    table = Table(title=f"{line['comparison']}, medians over {line['rounds']} round(s)")
    for column in ("figure", "sqlite", "etcd", "etcd / sqlite"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for key in line:
        if key.endswith("_ratio") and key != "goal_ratio":
            figure = key.removesuffix("_ratio")
            table.add_row(figure, str(line.get(f"{figure}_sqlite")),
                          str(line.get(f"{figure}_etcd")), str(line[key]))
    console().print(table)
    if "goal_ratio" in line:
        verdict = [v for k, v in line.items() if k.endswith("_within_goal")]
        console().print(f"goal: etcd within {line['goal_ratio']}x of sqlite: "
                        f"{'met' if verdict and verdict[0] else 'not met'}")


Stores = Annotated[str, typer.Option(
    "--store", metavar="sqlite|etcd|sqlite,etcd", help="Where the control plane keeps its "
    "state: sqlite, etcd (a 3-member cluster, a controller per site), or sqlite,etcd for "
    "both side by side in one run (a JSON line each, then one comparing them).")]
Rounds = Annotated[int, typer.Option(
    min=1, help="Runs per store, the stores alternating; the comparison takes medians.")]


def _stores(text: str) -> list[str]:
    from tandemdb.bench.stores import parse_stores

    try:
        return parse_stores(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--store") from None


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
    store: Stores = "sqlite",
    rounds: Rounds = 1,
    as_json: JsonOnly = False,
) -> None:
    """Writers' pause during planned failovers, and a whole region's switch time."""
    from tandemdb.bench import switchover
    from tandemdb.client import TandemError

    stores = _stores(store)
    try:
        _report_lines(switchover.run_stores, "switchover benchmark (local deployment)",
                      as_json, stores_=stores, rounds=rounds, envs=envs, failovers=failovers)
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
                                   "SIGKILLing it (the gateway still reaches it; sqlite "
                                   "only)."),
    site: bool = typer.Option(False, "--site", help="SIGKILL west's whole site: its nodes "
                              "and, with etcd, its controller, gateway and etcd member (as "
                              "'tandem region outage west' does)."),
    leader_in: str | None = typer.Option(
        None, "--leader-in", metavar="SITE", help="With etcd: move the controllers' "
        "leadership to SITE's controller first (west with --site: the leader is lost with "
        "the region, the worst case). By default it stays where the election put it."),
    store: Stores = "sqlite",
    rounds: Rounds = 1,
    as_json: JsonOnly = False,
) -> None:
    """An unplanned region loss: detection to writable, data lost, lost = acked-missing."""
    from tandemdb.bench import failover
    from tandemdb.client import TandemError

    stores = _stores(store)
    if partition and site:
        raise typer.BadParameter("choose one of --partition and --site", param_hint="--site")
    outage = failover.PARTITION if partition else failover.SITE if site else failover.KILL
    try:
        failover.check(outage, stores, leader_in)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    how = {failover.PARTITION: "partition of west", failover.SITE: "SIGKILL of west's site",
           failover.KILL: "SIGKILL of west"}[outage]
    try:
        _report_lines(failover.run_stores, f"failover benchmark ({how}, local deployment)",
                      as_json, details=_failover_details, stores_=stores, rounds=rounds,
                      grace=grace, lease_ttl=lease_ttl, envs=envs, outage=outage,
                      leader_in=leader_in)
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

        which = ", ".join(f"{k} {result[k]}" for k in ("store", "round") if k in result)
        table = Table(title=f"per environment ({which})" if which else "per environment")
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


@bench_app.command("control-plane")
def bench_control_plane(
    rounds: int = typer.Option(5, min=1, max=50, help="Leaders SIGKILLed, one per round."),
    as_json: JsonOnly = False,
) -> None:
    """The control plane on etcd: SIGKILL the leading controller, time the new leader and
    its first decision; then lose the etcd raft leader and time the next decision."""
    from tandemdb.bench import control_plane
    from tandemdb.client import TandemError

    try:
        _report(control_plane.run, "control-plane benchmark (leader SIGKILLed)", as_json,
                rounds=rounds)
    except (TandemError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
