"""`tandem env create | list | show | delete | reseed`: the environment catalog, and the
re-seed of a geo-secondary (what ends a halted stream)."""

from enum import StrEnum
from typing import Annotated

import typer

from .base import Typer
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

app = Typer(help="Create, list, show and delete environments.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Environment name, e.g. acme.", show_default=False)]


class EnvType(StrEnum):
    production = "production"
    sandbox = "sandbox"
    basic = "basic"


@app.command("create")
def create(
    name: Name,
    env_type: Annotated[EnvType, typer.Option(
        "--type", help="production: geo-secondary in the paired region; sandbox: backups "
                       "only; basic: a single copy.")] = EnvType.production,
    region: Annotated[str | None, typer.Option(
        "--region", help="Home region (default: the first region).", show_default=False)] = None,
    rpo_limit: Annotated[float | None, typer.Option(
        "--rpo-limit", min=0, show_default=False,
        help="RPO guard: writes are refused while the secondary lags more seconds than "
             "this (default 900).")] = None,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Create an environment: its primary in the home region, a secondary in the pair."""
    from .tables import environments_table

    with reported(), connect(url, token, data) as client:
        view = client.create_environment(name, env_type.value, region, rpo_limit)
    if as_json:
        print_json(view)
        return
    out = console()
    out.print(f"created [bold]{view.get('name', name)}[/] ({view.get('type')}, home "
              f"{view.get('home_region')}, epoch {view.get('epoch')})")
    out.print(environments_table([view], title=""))


@app.command("list")
def list_(as_json: Json = False, url: Url = None, token: Token = None,
          data: Data = DEFAULT_DATA) -> None:
    """List environments with their replicas, lsns and lag."""
    from .tables import environments_table, halt_notes

    with reported(), connect(url, token, data) as client:
        views = client.environments()
    if as_json:
        print_json({"environments": views})
        return
    out = console()
    out.print(environments_table(views, title=f"{len(views)} environment(s)"))
    for note in halt_notes(views):
        out.print(note)


@app.command("show")
def show(name: Name, as_json: Json = False, url: Url = None, token: Token = None,
         data: Data = DEFAULT_DATA) -> None:
    """Show one environment: type, regions, epoch, and each replica's lsn and lag."""
    from .tables import environment_fields, environments_table, halt_notes

    with reported(), connect(url, token, data) as client:
        view = client.environment(name)
    if as_json:
        print_json(view)
        return
    out = console()
    out.print(environment_fields(view))
    out.print(environments_table([view], title="replicas"))
    for note in halt_notes([view]):
        out.print(note)


@app.command("reseed")
def reseed(
    name: Name,
    region: Annotated[str, typer.Option(
        "--region", help="Region of the secondary to copy afresh from the primary.",
        show_default=False)],
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Copy a geo-secondary afresh from a snapshot of its primary; ends a halted stream."""
    with reported(), connect(url, token, data) as client:
        answer = client.reseed(name, region)
    if as_json:
        print_json(answer)
        return
    console().print(f"re-seeding {name} in {answer.get('region', region)} "
                    f"({answer.get('node', '?')}) from a snapshot of its primary; watch it "
                    f"with: tandem env show {name}")


@app.command("delete")
def delete(name: Name, as_json: Json = False, url: Url = None, token: Token = None,
           data: Data = DEFAULT_DATA) -> None:
    """Delete an environment, its replicas, rows and files."""
    with reported(), connect(url, token, data) as client:
        answer = client.delete_environment(name)
    if as_json:
        print_json(answer)
        return
    console().print(f"deleted {answer.get('deleted', name)}")
