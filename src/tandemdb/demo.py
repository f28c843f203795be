"""`tandem demo`: a whole deployment in a temporary directory, in under a minute.

It starts the processes, creates a production environment, writes rows and files through
the gateway, watches the geo-secondary's lag fall to zero, reads back from the paired
region, compares both regions' logical checksums, prints a report and stops everything.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from tandemdb.client import Client
from tandemdb.common.deployment import Deployment
from tandemdb.local import LocalDeployment, free_base_port

ENV = "acme"
WRITERS = 8


def run_demo(rows: int = 1000, files: int = 20, quiet: bool = False) -> dict:
    console = Console(stderr=True, quiet=quiet)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tandem-demo-") as tmp:
        deployment = Deployment.plan(Path(tmp), [("west", "east")], 1, free_base_port(4))
        deployment.save()
        cluster = LocalDeployment(deployment)
        try:
            with console.status("starting") as status:
                cluster.start_all(progress=status.update)
            console.print(f"deployment up at {deployment.gateway_url}: controller, gateway, "
                          f"nodes {', '.join(sorted(deployment.nodes))}")
            client = Client(deployment.gateway_url, deployment.token)
            report = _scenario(client, console, rows, files)
        finally:
            cluster.stop_all()
    report["elapsed_seconds"] = round(time.monotonic() - started, 2)
    _print_report(console, report)
    return report


def _scenario(client: Client, console: Console, rows: int, files: int) -> dict:
    client.create_environment(ENV, type="production", region="west")
    client.sql(ENV, "CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    console.print(f"created production environment [bold]{ENV}[/bold]: primary in west, "
                  "geo-secondary in east")

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
    expected_qty = sum(i % 7 for i in range(1, rows + 1))
    ok = (east_rows == rows == len(acked) and east_qty == expected_qty and file_ok
          and west["total"] == east["total"])
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
        "checksums_equal": west["total"] == east["total"],
    }


def _watch_lag(client: Client, console: Console, timeout: float = 20.0) -> list[int]:
    """Poll the environment until the secondary's lag is zero; return the lags seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    with console.status("waiting for the geo-secondary to catch up") as status:
        while time.monotonic() < deadline:
            view = client.environment(ENV)
            lag = max((r.get("lag_entries") or 0) for r in view["replicas"]
                      if r["role"] == "secondary")
            seen.append(lag)
            status.update(f"geo-secondary lag: {lag} entries")
            if lag == 0 and _caught_up(view):
                break
            time.sleep(0.2)
    console.print(f"geo-secondary lag went {' → '.join(str(x) for x in _squeeze(seen))}")
    return seen


def _caught_up(view: dict) -> bool:
    lsns = {r["role"]: r.get("applied_lsn") for r in view["replicas"]}
    return lsns.get("secondary") is not None and lsns.get("secondary") == view.get("primary_lsn")


def _squeeze(values: list[int]) -> list[int]:
    """Drop consecutive repeats so the lag reads as a short story."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def _print_report(console: Console, report: dict) -> None:
    table = Table(title="Tandem demo" + ("" if report.get("ok") else " — FAILED"))
    table.add_column("check")
    table.add_column("value", justify="right")
    for key in ("rows_acknowledged", "rows_in_east", "files_written",
                "file_read_from_east_matches", "writes_per_second", "last_lsn",
                "checksums_equal", "elapsed_seconds"):
        table.add_row(key.replace("_", " "), str(report.get(key)))
    console.print(table)
