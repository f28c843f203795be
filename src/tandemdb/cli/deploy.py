"""`tandem up | down | demo`: run a local deployment (see tandemdb.local)."""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_DATA = Path("tandem-data")


def up(
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Deployment data directory."),
    regions: str = typer.Option("west=east", help="Region pairs, e.g. west=east."),
    nodes_per_region: int = typer.Option(1, min=1, help="Nodes per region."),
    port: int = typer.Option(7070, help="Gateway port; the others follow it."),
    detach: bool = typer.Option(False, "--detach", help="Return once every process is up."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Start a local deployment: controller, gateway and nodes as separate processes."""
    raise typer.Exit(_not_yet("up"))


def down(
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Deployment data directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Stop a detached local deployment."""
    raise typer.Exit(_not_yet("down"))


def demo(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Start a deployment, replicate rows and files across regions, compare, stop."""
    raise typer.Exit(_not_yet("demo"))


def _not_yet(name: str) -> int:
    typer.echo(f"tandem {name} is not built yet", err=True)
    return 2
