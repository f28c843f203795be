"""`tandem …`: the command line. Every command takes `--json` for scripts."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from tandemdb import __version__

from . import data, deploy, envs, status

app = typer.Typer(help="Tandem: geo-replicated environments with planned and unplanned "
                       "failover.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_show_locals=False)  # locals may hold the token
bench_app = typer.Typer(help="Benchmarks that print JSON and compare side by side.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# A local deployment (deploy.py).
app.command("up")(deploy.up)
app.command("down")(deploy.down)
app.command("demo")(deploy.demo)
# The API, through the gateway (status.py, envs.py, data.py; all built on tandemdb.client).
app.command("status")(status.status)
app.add_typer(envs.app, name="env")
app.command("sql")(data.sql)
app.add_typer(data.files_app, name="files")
console = Console(stderr=True)


@app.command()
def version(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print Tandem's version."""
    print(json.dumps({"version": __version__}) if as_json else f"tandem {__version__}")


@bench_app.command("engine")
def bench_engine(
    transactions: int = typer.Option(2000, min=10, help="Transactions per side."),
    rounds: int = typer.Option(5, min=1, help="Alternating rounds; each side's median wins."),
    group: int = typer.Option(32, min=1, help="Transactions per group commit."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object only."),
) -> None:
    """Journal overhead: plain APSW against the journaled engine, same durability."""
    from tandemdb.bench import engine

    if as_json:
        print(json.dumps(engine.run(transactions, rounds, group)))
        return
    with console.status("benchmarking") as status:
        result = engine.run(transactions, rounds, group,
                            progress=lambda msg: status.update(f"benchmarking: {msg}"))
    table = Table(title=f"engine benchmark ({result['durability']}, "
                        f"{result['transactions_per_side']} tx per side)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("plain_tx_per_s", "journaled_tx_per_s", "overhead_ratio",
                "session_floor_tx_per_s", "floor_overhead_ratio",
                "group_commit_tx_per_s", "apply_entries_per_s"):
        table.add_row(key, str(result[key]))
    Console().print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    app()
