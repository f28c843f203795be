"""Rendering of region and node rows (a node's health as the controller reports it) and of
replicas (a local one, docs/ha.md, says so)."""

from __future__ import annotations

from rich.console import Console

from tandemdb.cli.tables import environments_table, nodes_table, regions_table


def _render(nodes: list[dict]) -> str:
    console = Console(width=200, record=True)
    console.print(regions_table([{"name": "west", "pair": "east", "state": "healthy",
                                  "nodes": nodes}]))
    return console.export_text()


def test_unknown_health_after_a_controller_restart_is_not_shown_as_down():
    text = _render([{"name": "west-1", "healthy": False, "health": "unknown"}])
    assert "unknown" in text and "down" not in text


def test_health_words():
    text = _render([{"name": "west-1", "healthy": True, "health": "healthy"},
                    {"name": "west-2", "healthy": False, "health": "unhealthy"},
                    {"name": "west-3", "healthy": False}])  # an older controller
    lines = text.splitlines()
    assert any("west-1" in line and "healthy" in line for line in lines)
    assert sum("down" in line for line in lines) == 2


def _text(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_a_local_replica_shows_its_kind_and_sync():
    view = {"name": "acme", "type": "production", "epoch": 1, "home_region": "west",
            "replicas": [
                {"region": "west", "node": "west-1", "role": "primary", "kind": "geo",
                 "sync": False},
                {"region": "west", "node": "west-2", "role": "secondary", "kind": "local",
                 "sync": True},
                {"region": "west", "node": "west-3", "role": "secondary", "kind": "local",
                 "sync": False},
                {"region": "east", "node": "east-1", "role": "secondary"}]}  # an older one
    lines = _text(environments_table([view])).splitlines()
    row = {node: next(line for line in lines if node in line)
           for node in ("west-1", "west-2", "west-3", "east-1")}
    assert "secondary local sync" in row["west-2"]
    assert "secondary local" in row["west-3"] and "sync" not in row["west-3"]
    assert "local" not in row["east-1"] and "local" not in row["west-1"]


def test_node_rows():
    text = _text(nodes_table([
        {"name": "west-1", "region": "west", "state": "healthy", "primaries": 2,
         "secondaries": 1, "last_heartbeat_age": 0.25},
        {"name": "west-2", "region": "west", "state": "down", "primaries": 0,
         "secondaries": 3, "last_heartbeat_age": None}]))
    lines = text.splitlines()
    assert "2 node(s)" in text
    assert next(line for line in lines if "west-1" in line).split() == [
        "west-1", "west", "healthy", "2", "1", "0.2s", "ago"]
    assert next(line for line in lines if "west-2" in line).split()[2:5] == ["down", "0", "3"]
