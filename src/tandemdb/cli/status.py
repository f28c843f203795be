"""`tandem status [--watch]`: the control plane, regions, node health, environments, roles,
lsns and lag."""

import time
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from rich.console import Group

    from tandemdb.client import Client, TandemError

REFRESH_SECONDS = 1.0


def snapshot(client: "Client") -> dict:
    """The whole picture: `{"control_plane": {...}, "regions": [...], "environments":
    [...]}`. Without a leading controller the control plane still answers (it says why),
    and the rest is left out."""
    from tandemdb.client import TandemError

    state: dict = {"control_plane": client.control_plane()}
    try:
        state |= {"regions": client.regions(), "environments": client.environments()}
    except TandemError:
        if state["control_plane"].get("leader"):
            raise
    return state


def render(state: dict, error: "TandemError | None" = None) -> "Group":
    from rich.console import Group, RenderableType
    from rich.text import Text

    from .control_plane import control_plane
    from .tables import environments_table, halt_notes, regions_table

    parts: list[RenderableType] = [control_plane(state.get("control_plane", {})),
                                   regions_table(state.get("regions", [])),
                                   environments_table(state.get("environments", [])),
                                   *halt_notes(state.get("environments", []))]
    if error is not None:
        parts.insert(0, Text(f"{error} (showing the last answer; retrying)", style="red"))
    stamp = time.strftime("%H:%M:%S")
    parts.append(Text(f"as of {stamp}", style="dim"))
    return Group(*parts)


def status(
    watch: Annotated[bool, typer.Option(
        "--watch", help="Refresh every second until Ctrl-C.")] = False,
    as_json: Json = False, url: Url = None, token: Token = None, data: Data = DEFAULT_DATA,
) -> None:
    """Show the control plane (controllers, leader, etcd, gateways), regions, nodes with
    their health, and environments with roles, lsns and lag."""
    with reported(), connect(url, token, data) as client:
        state = snapshot(client)
        if not watch:
            if as_json:
                print_json(state)
            else:
                console().print(render(state))
            return
        try:
            watch_loop(client, state, as_json)
        except KeyboardInterrupt:
            return


def watch_loop(client: "Client", state: dict, as_json: bool) -> None:
    """Refresh until Ctrl-C; a failed refresh is shown, and the next one tried anyway."""
    from rich.live import Live

    from tandemdb.client import TandemError

    if as_json:  # one JSON object per line, one line per refresh
        while True:
            print_json(state)
            time.sleep(REFRESH_SECONDS)
            try:
                state = snapshot(client)
            except TandemError as exc:
                state = {**state, "error": {"status": exc.status, "code": exc.code,
                                            "message": exc.message}}
    with Live(render(state), auto_refresh=False) as live:
        while True:
            time.sleep(REFRESH_SECONDS)
            error = None
            try:
                state = snapshot(client)
            except TandemError as exc:
                error = exc
            live.update(render(state, error), refresh=True)
