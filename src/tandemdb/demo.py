"""`tandem demo`: a whole deployment in a temporary directory, in under a minute.

It starts the processes (2 nodes per region by default), creates a production environment
(with a local sync secondary on the other west node, and a geo-secondary in east), writes
rows and files through the gateway, watches every secondary's lag fall to zero, reads back
from the paired region and compares the logical checksums of all three replicas. Then,
while a writer thread keeps writing unique ids through the gateway into five production
environments, it fails one environment over, the whole home region over, and back; after
each operation it compares the writes acknowledged with the rows found. Last, the home
region is lost without warning (demo_outage.py): forced over by the controller, brought
back, its lost writes listed, compared with what the writer lacks, replayed, and failed
back. It prints a report and stops everything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from tandemdb.bench.switchover import TABLE, id_writer, wait_replicated
from tandemdb.client import Client, TandemError
from tandemdb.client.operations import environment_results, max_rto_seconds
from tandemdb.common.deployment import Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.demo_outage import GRACE_SECONDS, LEASE_TTL, run_outage
from tandemdb.testing import IdWriter, LocalDeployment, caught_up

ENV = "acme"
WRITERS = 8
HOME, PAIR = "west", "east"
FLEET = [ENV, "globex", "initech", "umbrella", "hooli"]  # production, homed in west
OPERATION_TIMEOUT = 120.0
WRITE_BEFORE_SECONDS = 0.5  # the writer runs this long before each operation starts


def run_demo(rows: int = 1000, files: int = 20, quiet: bool = False,
             nodes_per_region: int = 2) -> dict:
    """With 2+ nodes per region every environment also has a local sync secondary, which
    the checks read too (docs/ha.md)."""
    console = Console(stderr=True, quiet=quiet)
    started = time.monotonic()
    # A short grace period and lease, so that the lost region is failed over in seconds.
    # The harness starts every process under a status line naming each, and stops them all
    # (and removes the directory) however the demo ends.
    with console.status("starting") as status, LocalDeployment.temporary(
            prefix="tandem-demo-", healthy=False, progress=status.update,
            nodes_per_region=nodes_per_region, grace_seconds=GRACE_SECONDS,
            lease_ttl=LEASE_TTL) as cluster:
        status.stop()  # every process is up: from here on the demo prints its own lines
        deployment, client = cluster.deployment, cluster.client
        console.print(f"deployment up at {deployment.gateway_url}: controller, gateway, "
                      f"nodes {', '.join(sorted(deployment.nodes))}")
        report = _scenario(client, deployment, console, rows, files)
        switched = _failovers(client, deployment, console)
        report.update(switched, ok=report["ok"] and switched["failovers_ok"])
        if switched["failovers_ok"]:
            report.update(run_outage(client, cluster, console, ENV, FLEET))
        else:
            console.print("[red]the unplanned outage is skipped: the planned failovers "
                          "did not end as they should[/red]")
            report["outage_ok"] = False
        report["ok"] = report["ok"] and report["outage_ok"]
    report["elapsed_seconds"] = round(time.monotonic() - started, 2)
    _print_report(console, report)
    return report


def _scenario(client: Client, deployment: Deployment, console: Console, rows: int,
              files: int) -> dict:
    view = client.create_environment(ENV, type="production", region="west")
    client.sql(ENV, "CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    local = [r for r in view["replicas"] if r.get("kind") == "local"]
    # With 2+ nodes in west, one local secondary, recorded sync; with one node, none.
    local_ok = len(local) == min(1, len(deployment.nodes_in(HOME)) - 1) \
        and all(r.get("sync") for r in local)
    primary = next(r["node"] for r in view["replicas"] if r["role"] == "primary")
    console.print(f"created production environment [bold]{ENV}[/bold]: primary on {primary}"
                  + "".join(f", local {'sync ' if r.get('sync') else ''}secondary on "
                            f"{r['node']}" for r in local) + f", geo-secondary in {PAIR}")

    acked: list[int] = []
    last_lsn = 0
    begin = time.monotonic()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=False) as progress:
        row_task = progress.add_task("writing rows through the gateway", total=rows)

        def write(i: int) -> int:
            answer = client.sql(ENV, "INSERT INTO orders(id, item, qty) VALUES (?, ?, ?)",
                                [i, f"item-{i}", i % 7])
            acked.append(i)
            progress.advance(row_task)
            return answer["lsn"]

        with ThreadPoolExecutor(WRITERS) as pool:
            last_lsn = max(pool.map(write, range(1, rows + 1)))
        file_task = progress.add_task("writing files", total=files)
        contents = {}
        for i in range(files):
            path = f"invoices/{i:04d}.txt"
            contents[path] = f"invoice {i}\n".encode() * (i + 1)
            last_lsn = max(last_lsn, client.put_file(ENV, path, contents[path])["lsn"])
            progress.advance(file_task)
    write_seconds = time.monotonic() - begin

    lag_samples = _watch_lag(client, console)
    count = client.sql(ENV, "SELECT count(*), sum(qty) FROM orders", read_region="east",
                       min_lsn=last_lsn)
    east_rows, east_qty = count["results"][0]["rows"][0]
    sample = next(iter(contents), None)
    file_ok = sample is None or client.get_file(ENV, sample, read_region="east") == contents[sample]
    west, east = client.checksum(ENV, "west"), client.checksum(ENV, "east")
    local_sums = [_node_checksum(deployment, r["node"]) for r in local]
    equal = all(s == west["total"] for s in [east["total"], *local_sums])
    expected_qty = sum(i % 7 for i in range(1, rows + 1))
    ok = (east_rows == rows == len(acked) and east_qty == expected_qty and file_ok
          and equal and local_ok)
    return {
        "ok": ok,
        "environment": ENV,
        "rows_acknowledged": len(acked),
        "rows_in_east": east_rows,
        "files_written": files,
        "file_read_from_east_matches": file_ok,
        "write_seconds": round(write_seconds, 2),
        "writes_per_second": round((rows + files) / write_seconds, 1),
        "last_lsn": last_lsn,
        "lag_entries_seen": lag_samples,
        "checksum_west": west["total"],
        "checksum_east": east["total"],
        "local_secondaries": [r["node"] for r in local],
        "local_secondaries_ok": local_ok,
        "checksum_local": local_sums,
        "checksums_equal": equal,
    }


def _node_checksum(deployment: Deployment, node: str) -> str:
    """The logical checksum of ENV's replica on `node`, asked of the node itself: the
    gateway reads one replica per region, and a local secondary shares its region with
    the primary."""
    answer = httpx.get(f"{deployment.node_url(node)}/internal/v1/replicas/{ENV}/checksum",
                       headers={SECRET_HEADER: deployment.secret}, timeout=30.0)
    answer.raise_for_status()
    return str(answer.json()["total"])


def _failovers(client: Client, deployment: Deployment, console: Console) -> dict:
    """One environment over, the home region over, then back, under a writer: after each
    operation the writer pauses and every acknowledged write must be found."""
    for name in FLEET[1:]:
        client.create_environment(name, type="production", region=HOME)
    wait_replicated(client, set(FLEET), timeout=30)  # every replica is up and reported
    for name in FLEET:
        client.sql(name, TABLE)
    wait_replicated(client, set(FLEET), timeout=30)
    console.print(f"{len(FLEET)} production environments in {HOME} "
                  f"({', '.join(FLEET)}); a writer thread writes unique ids into them, "
                  "round-robin")
    writer = id_writer(deployment.gateway_url, deployment.token, FLEET)
    writer.start()
    steps = [("env failover", ENV, lambda: client.failover(ENV), PAIR, [ENV]),
             ("region failover", HOME, lambda: client.region_failover(HOME), PAIR, FLEET),
             ("region failback", HOME, lambda: client.region_failback(HOME), HOME, FLEET)]
    rows: list[dict] = []
    refused = None
    try:
        for label, target, start, region, moved in steps:
            time.sleep(WRITE_BEFORE_SECONDS)
            rows.append(_one_operation(client, console, writer, label, target, start,
                                       region, moved))
    except TandemError as exc:  # the operation could not even start
        refused = f"{exc}"
        console.print(f"[red]✗ {len(rows) + 1}. {steps[len(rows)][0]} refused: {exc}[/red]")
    finally:
        writer.stop()
    found = _counts(client)  # the writer has stopped: every write has been answered
    per_env = writer.acked_per_env()
    acked, found_total = sum(per_env.values()), sum(found.values())
    ok = (refused is None and all(r["ok"] for r in rows) and not writer.errors
          and per_env == found)
    mark = "[green]✓[/green]" if per_env == found else "[red]✗[/red]"
    console.print(f"{mark} at the end: {acked} writes acknowledged, {found_total} rows found")
    _print_failovers(console, rows, writer.errors)
    return {"failovers": rows, "failover_writes_acknowledged": acked,
            "failover_rows_found": found_total, "failover_writer_errors": len(writer.errors),
            "failover_rto_max_ms": max((r["rto_ms"] or 0 for r in rows), default=None),
            **({"failover_refused": refused} if refused else {}), "failovers_ok": ok}


def _one_operation(client: Client, console: Console, writer: IdWriter, label: str,
                   target: str, start: Callable[[], dict], region: str,
                   moved: list[str]) -> dict:
    began = time.monotonic()
    with console.status(f"{label} {target} while writing"):
        op = client.wait_operation(start()["id"], timeout=OPERATION_TIMEOUT)
        ended = time.monotonic()
        writer.wait_for_ack_after(ended)  # writes flow again: the pause has ended
    pause = writer.longest_gap(began, ended)
    writer.pause()
    try:
        acked = writer.acked_per_env()
        found = _counts(client)
        primaries = {v["name"]: v.get("primary_region") for v in client.environments()}
    finally:
        writer.resume()
    placed = all(primaries.get(name) == region for name in moved)
    rto = max_rto_seconds(op)
    row = {"operation": label, "target": target, "id": op["id"], "state": op["state"],
           "environments": len(environment_results(op)),
           "rto_ms": None if rto is None else round(rto * 1000, 1),
           "writer_pause_ms": None if pause is None else round(pause * 1000, 1),
           "writes_acknowledged": sum(acked.values()), "rows_found": sum(found.values()),
           "primaries_in": region if placed else primaries,
           "error": op.get("error")}
    row["ok"] = (op["state"] == "succeeded" and placed and acked == found)
    mark = "[green]✓[/green]" if row["ok"] else "[red]✗[/red]"
    console.print(f"{mark} {label} {target}: {op['state']}, RTO {_num(row['rto_ms'])} ms, "
                  f"writer paused {_num(row['writer_pause_ms'])} ms; acknowledged "
                  f"{row['writes_acknowledged']}, found {row['rows_found']}")
    return row


def _counts(client: Client) -> dict[str, int]:
    """Rows in each fleet environment's table, read from its primary."""
    return {name: client.sql(name, "SELECT count(*) FROM t")["results"][0]["rows"][0][0]
            for name in FLEET}


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def _print_failovers(console: Console, rows: list[dict], errors: list[str]) -> None:
    table = Table(title="failovers under a writer (pause: longest wait between two "
                        "acknowledged writes)")
    for column in ("operation", "target", "state", "envs", "RTO ms", "pause ms", "acked",
                   "found", "primaries"):
        table.add_column(column, justify="left" if column in (
            "operation", "target", "state", "primaries") else "right")
    for r in rows:
        table.add_row(r["operation"], r["target"],
                      r["state"] if r["ok"] else f"[red]{r['state']}[/red]",
                      str(r["environments"]), _num(r["rto_ms"]), _num(r["writer_pause_ms"]),
                      str(r["writes_acknowledged"]),
                      str(r["rows_found"]) if r["ok"] else f"[red]{r['rows_found']}[/red]",
                      str(r["primaries_in"]))
    console.print(table)
    for error in errors[:5]:
        console.print(f"[red]writer error: {error}[/red]")
    for r in rows:
        if r.get("error"):
            console.print(f"[red]{r['id']} {r['operation']}: {r['error']}[/red]")


def _watch_lag(client: Client, console: Console, timeout: float = 20.0) -> list[int]:
    """Poll the environment until every secondary (the geo one, and the local one with 2+
    nodes per region) has applied the primary's lsn; return the largest lags seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    with console.status("waiting for the secondaries to catch up") as status:
        while time.monotonic() < deadline:
            view = client.environment(ENV)
            lag = max((r.get("lag_entries") or 0) for r in view["replicas"]
                      if r["role"] == "secondary")
            seen.append(lag)
            status.update(f"secondaries' lag: {lag} entries")
            if lag == 0 and caught_up(client, ENV):
                break
            time.sleep(0.2)
    console.print(f"secondaries' lag went {' → '.join(str(x) for x in _squeeze(seen))}")
    return seen


def _squeeze(values: list[int]) -> list[int]:
    """Drop consecutive repeats so the lag reads as a short story."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def _print_report(console: Console, report: dict) -> None:
    table = Table(title="Tandem demo" + ("" if report.get("ok") else " — FAILED"))
    table.add_column("check")
    table.add_column("value", justify="right")
    for key in ("rows_acknowledged", "rows_in_east", "files_written",
                "file_read_from_east_matches", "writes_per_second", "last_lsn",
                "local_secondaries", "checksums_equal", "failover_writes_acknowledged",
                "failover_rows_found", "failover_writer_errors", "failover_rto_max_ms",
                "outage_declared_down_seconds", "outage_writable_seconds",
                "outage_lost_entries", "outage_acked_missing",
                "outage_lost_equals_acked_missing", "outage_replayed",
                "outage_replay_conflicts", "outage_failback_state", "outage_rows_found",
                "elapsed_seconds"):
        table.add_row(key.replace("_", " "), str(report.get(key)))
    console.print(table)
