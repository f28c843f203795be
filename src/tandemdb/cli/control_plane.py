"""`tandem status`'s control plane: controllers and who leads, etcd members, gateways.

It renders `GET /v1/control-plane` (docs/api.md), which any controller answers itself,
so `tandem status` can say why nothing is decided when no controller leads.
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


def _yes(value: Any, good: str = "up", bad: str = "down") -> Text:
    return Text(good, style="green") if value else Text(bad, style="red")


def control_plane(view: dict) -> RenderableType:
    """Three small tables, and a red line when nobody leads."""
    parts: list[RenderableType] = []
    leader = view.get("leader") or {}
    controllers = Table(title="control plane", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("controller", "site", "state", "role", "since", "lease left"):
        controllers.add_column(column, no_wrap=True)
    for row in view.get("controllers", []):
        leads = row.get("name") == leader.get("name")
        since = leader.get("since")
        controllers.add_row(
            row.get("name", "?"), row.get("site") or "—", _yes(row.get("reachable")),
            Text("leader", style="bold green") if leads else
            "follower" if row.get("reachable") else "",
            time.strftime("%H:%M:%S", time.localtime(since)) if leads and since else "",
            f"{leader.get('lease_remaining_seconds')} s"
            if leads and leader.get("lease_remaining_seconds") is not None else "")
    parts.append(controllers)
    store = view.get("store", {})
    if store.get("members"):
        members = Table(title=f"etcd ({'quorum' if store.get('quorum') else 'NO QUORUM'})",
                        title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("member", "health", "raft leader", "url"):
            members.add_column(column, no_wrap=column != "url", overflow="fold")
        for member in sorted(store["members"], key=lambda m: m.get("name") or ""):
            state = (Text("healthy", style="green") if member.get("healthy") else
                     Text("no raft leader" if member.get("raft_term") is not None
                          else "unreachable", style="red"))
            members.add_row(member.get("name") or "?", state,
                            "yes" if member.get("leader") else "",
                            ", ".join(member.get("client_urls", [])))
        parts.append(members)
    gateways = Table(title="gateways", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("gateway", "region", "state", "url"):
        gateways.add_column(column, no_wrap=column != "url", overflow="fold")
    for row in view.get("gateways", []):
        gateways.add_row(row.get("name", "?"), row.get("region") or "—",
                         _yes(row.get("reachable")), row.get("url", ""))
    parts.append(gateways)
    if view.get("problem"):
        parts.append(Text(f"no controller decides now: {view['problem']}", style="bold red"))
    return Group(*parts)
