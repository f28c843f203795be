"""Small helpers shared by the controller tests."""

from __future__ import annotations

from tandemdb.testing import poll_until

# The one poll-until helper (tandemdb/testing.py), by the name these tests call it.
wait_for = poll_until


def events_of(ctl, after: int = 0, **params) -> dict:
    response = ctl.http.get("/v1/events", params={"after": after, **params})
    assert response.status_code == 200, response.text
    return response.json()


def operation(ctl, op_id: str) -> dict:
    response = ctl.http.get(f"/v1/operations/{op_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_all_healthy(ctl) -> None:
    """Until the controller has heard from every node lately (the tests' Beater started)."""
    wait_for(lambda: all(n["healthy"] for r in ctl.http.get("/v1/regions").json()["regions"]
                         for n in r["nodes"]), what="every node healthy")
