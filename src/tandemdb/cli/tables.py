"""Rich renderings of API answers: regions and nodes, environments and replicas, rows, files.

They only read the answers (the shapes in docs/api.md and docs/architecture.md) and
tolerate missing fields, so a newer server with more fields, or an older one with fewer,
still renders.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from rich import box
from rich.table import Table
from rich.text import Text


def _value(value: Any) -> str:
    return "?" if value is None else str(value)


def _age(seconds: Any) -> str:
    return "?" if seconds is None else f"{float(seconds):.1f}s ago"


def _time(value: Any) -> str:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value).isoformat(sep=" ", timespec="seconds")
    return _value(value)


def _health(node: dict) -> Text:
    """A node's health; `unknown` right after a controller restart, before its heartbeat."""
    words: dict[Any, str] = {True: "healthy", False: "down"}
    word = node.get("health") or words.get(node.get("healthy"), "?")
    word = "down" if word == "unhealthy" else word
    return Text(word, style={"healthy": "green", "down": "red"}.get(word, "yellow"))


def regions_table(regions: list[dict]) -> Table:
    """One row per node, grouped by region."""
    table = Table(title="regions and nodes", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("region", "pair", "state", "node", "health", "heartbeat", "url"):
        # The URL is the one column that may fold, so the short ones stay whole.
        table.add_column(column, no_wrap=column != "url", overflow="fold")
    for region in regions:
        state = region.get("state", "?")
        state_text = Text(state, style="green" if state == "healthy" else "red")
        nodes = region.get("nodes") or [{}]
        for i, node in enumerate(nodes):
            health = _health(node)
            table.add_row(region.get("name", "?") if i == 0 else "",
                          region.get("pair", "?") if i == 0 else "",
                          state_text if i == 0 else "",
                          node.get("name", "—"), health,
                          _age(node.get("last_heartbeat_age")) if node else "",
                          node.get("url", ""))
    return table


NODE_STATE_STYLE = {"healthy": "green", "down": "red"}


def nodes_table(nodes: list[dict]) -> Table:
    """One row per node: region, state, the replicas the catalog places on it."""
    table = Table(title=f"{len(nodes)} node(s)", title_justify="left", box=box.SIMPLE_HEAD)
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("node", "left"), ("region", "left"), ("state", "left"), ("primaries", "right"),
        ("secondaries", "right"), ("heartbeat", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    for node in nodes:
        state = _value(node.get("state"))
        table.add_row(_value(node.get("name")), _value(node.get("region")),
                      Text(state, style=NODE_STATE_STYLE.get(state, "yellow")),
                      _value(node.get("primaries")), _value(node.get("secondaries")),
                      _age(node.get("last_heartbeat_age")))
    return table


def _lag(replica: dict) -> Text:
    if replica.get("state") == "halted":
        lsn, behind = (replica.get("error") or {}).get("lsn"), replica.get("lag_entries")
        return Text(f"HALTED at lsn {_value(lsn)}" + (f", {behind} behind" if behind else ""),
                    style="bold red")
    seeding = replica.get("seeding")
    if seeding:
        done, total = seeding.get("bytes_done", 0), seeding.get("bytes_total") or 0
        return Text(f"seeding {100 * done / total:.0f}%" if total else "seeding",
                    style="yellow")
    if replica.get("role") == "primary":
        return Text("—", style="dim")
    entries, seconds = replica.get("lag_entries"), replica.get("lag_seconds")
    if entries is None and seconds is None:
        return Text("?")
    style = "green" if not entries else "yellow"
    return Text(f"{_value(entries)} · {float(seconds or 0):.2f}s", style=style)


ROLE_STYLE = {"primary": "bold green", "secondary": "cyan", "fenced": "red"}


def _role(replica: dict) -> Text:
    """The replica's role; a local one (docs/ha.md) says so, and whether it is sync."""
    role = replica.get("role", "")
    text = Text(role, style=ROLE_STYLE.get(role, ""))
    if replica.get("kind") == "local":
        text.append(" local", style="dim")
        if replica.get("sync"):
            text.append(" sync", style="green")
    return text


def environments_table(views: list[dict], title: str = "environments") -> Table:
    """One row per replica; the environment's own fields on its first row.

    Compact enough for 80 columns: the state is shown only when it is not `active`, and
    the home region carries a `*`, a local replica's role says `local` (and `sync`).
    """
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD,
                  caption="* home region · lag: entries · seconds", caption_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("env", "left"), ("type", "left"), ("epoch", "right"), ("region", "left"),
        ("node", "left"), ("role", "left"), ("lsn", "right"), ("lag", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=column != "env")
    for view in views:
        replicas = sorted(view.get("replicas") or [{}],
                          key=lambda r: (r.get("role") != "primary", r.get("region", "")))
        name = Text(view.get("name", "?"), style="bold")
        if view.get("state") not in (None, "active"):
            name.append(f" ({view['state']})", style="yellow")
        for i, replica in enumerate(replicas):
            region = replica.get("region", "")
            if region and region == view.get("home_region"):
                region += "*"
            table.add_row(name if i == 0 else "",
                          _value(view.get("type")) if i == 0 else "",
                          _value(view.get("epoch")) if i == 0 else "",
                          region, replica.get("node", ""),
                          _role(replica),
                          _value(replica.get("applied_lsn")) if replica else "",
                          _lag(replica) if replica else Text(""))
    return table


def halt_notes(views: list[dict]) -> list[Text]:
    """One line per halted stream: what stopped, and the command that fixes it."""
    notes = []
    for view in views:
        for replica in view.get("replicas") or []:
            error = replica.get("error") or {}
            if replica.get("state") != "halted":
                continue
            name, region = view.get("name", "?"), replica.get("region", "?")
            note = Text("! ", style="bold red")
            note.append(f"replication of {name} to {region} halted at lsn "
                        f"{_value(error.get('lsn'))}: {error.get('cause', '?')}: "
                        f"{error.get('detail', '')}", style="red")
            note.append(f"\n  The geo-secondary in {region} is not being updated and will "
                        "not retry by itself. Fix: re-seed it from a snapshot of the primary: ")
            note.append(f"tandem env reseed {name} --region {region}", style="bold")
            notes.append(note)
    return notes


def environment_fields(view: dict) -> Table:
    """The environment's own fields as a two-column grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key in ("name", "type", "state", "home_region", "primary_region", "epoch",
                "primary_lsn", "rpo_limit_seconds", "created_at"):
        if key in view:
            grid.add_row(key, _time(view[key]) if key == "created_at" else _value(view[key]))
    return grid


def rows_table(result: dict) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in result.get("columns") or []:
        table.add_column(str(column))
    for row in result.get("rows") or []:
        table.add_row(*(Text("NULL", style="dim") if v is None else Text(str(v)) for v in row))
    return table


def files_table(files: list[dict]) -> Table:
    table = Table(title=f"{len(files)} file(s)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("path")
    table.add_column("size", justify="right")
    table.add_column("hash")
    table.add_column("modified")
    for f in files:
        table.add_row(f.get("path", "?"), _value(f.get("size")), str(f.get("hash", ""))[:16],
                      _time(f.get("modified_at")))
    return table
