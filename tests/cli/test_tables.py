"""Rendering of region rows: a node's health as the controller reports it."""

from __future__ import annotations

from rich.console import Console

from tandemdb.cli.tables import regions_table


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
