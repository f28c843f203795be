"""What may move into a region, and region operations that do not move everything
(issue 9 items 10 and 7; controller/region_rules.py, docs/failover.md).

The controller runs alone and the test plays the nodes' heartbeats, so an environment
failover can start but its fence finds no node: it rolls back. `TANDEM_PAUSE_AT` parks
failovers where a test needs them in flight.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandemdb.controller.operations import PAUSE_ENV

from .beats import Beater
from .conftest import ControllerProcess, controller_process
from .waiting import wait_all_healthy, wait_for


@pytest.fixture
def steady(tmp_path, backend_settings) -> Iterator[ControllerProcess]:
    """A controller whose nodes stay healthy on a loaded machine too: its health limit is
    1.5 s (heartbeat_interval 0.5 s) and the Beater beats every 0.2 s. These tests are about
    region rules; a node that only looks unhealthy would be refused first."""
    with controller_process(tmp_path / "deployment", heartbeat_interval=0.5,
                            **backend_settings) as ctl:
        yield ctl


def post(ctl: ControllerProcess, path: str, body: dict | None = None) -> dict:
    answer = ctl.http.post(path, json=body or {})
    assert answer.status_code in (202, 409), answer.text
    return answer.json()


def ended(ctl: ControllerProcess, op: dict) -> dict:
    assert "id" in op, op
    return ctl.http.get(f"/v1/operations/{op['id']}?wait=30").json()


def states(ctl: ControllerProcess) -> dict[str, str]:
    return {r["name"]: r["state"] for r in ctl.http.get("/v1/regions").json()["regions"]}


def test_nothing_moves_into_an_evacuated_region_and_partial_moves_fail(steady):
    ctl = steady.start()
    with Beater(ctl, ["west-1", "east-1"]):
        wait_all_healthy(ctl)
        assert ctl.create(name="rr-west").status_code == 201
        # East holds no production primary: its failover moves nothing and succeeds.
        east = ended(ctl, post(ctl, "/v1/regions/east/failover"))
        assert (east["state"], states(ctl)["east"]) == ("succeeded", "failed-over"), east

        # Region first, then the environment: nothing moves into a failed-over region.
        refused = post(ctl, "/v1/environments/rr-west/failover")["error"]
        assert refused["code"] == "region_evacuated", refused
        assert "cannot move into east: the region is failed-over" in refused["message"]
        # Nor does a whole region fail over into it.
        refused = post(ctl, "/v1/regions/west/failover")["error"]
        assert refused["code"] == "region_evacuated" and "failback east" in refused["message"]
        assert ctl.http.get("/v1/environments/rr-west").json()["state"] == "active"
        # Nor is a new environment homed there; nothing is recorded.
        created = ctl.create(name="rr-east", region="east")
        assert created.status_code == 409, created.text
        assert created.json()["error"]["code"] == "region_evacuated"
        assert ctl.http.get("/v1/environments/rr-east").status_code == 404

        back = ended(ctl, post(ctl, "/v1/regions/east/failback"))
        assert (back["state"], states(ctl)["east"]) == ("succeeded", "healthy"), back

        # Item 7: a region failover whose environment did not move (no node answers its
        # fence) fails, names it, and the region does not read failed-over.
        west = ended(ctl, post(ctl, "/v1/regions/west/failover"))
        assert west["state"] == "failed", west
        assert west["error"]["code"] == "environments_not_moved"
        assert "rr-west" in west["error"]["message"]
        assert (west["result"]["succeeded"], west["result"]["failed"]) == (0, 1)
        assert states(ctl)["west"] == "partially-failed-over"
        assert [s["state"] for s in west["steps"]] == ["succeeded"] * 3
        # It may be tried again: a partially failed-over region is not busy.
        again = ended(ctl, post(ctl, "/v1/regions/west/failover"))
        assert again["state"] == "failed" and again["id"] != west["id"]
        events = ctl.http.get("/v1/events").json()["events"]
        changes = [(e["data"]["from"], e["data"]["to"]) for e in events
                   if e["type"] == "region.state_changed" and e["region"] == "west"]
        assert changes[-2:] == [("partially-failed-over", "failing-over"),
                                ("failing-over", "partially-failed-over")]


def test_moves_into_a_region_and_its_failover_exclude_each_other(steady):
    ctl = steady.start(env={PAUSE_ENV: "environment.failover/fence:start"})
    with Beater(ctl, ["west-1", "east-1"]):
        wait_all_healthy(ctl)
        assert ctl.create(name="rx-west").status_code == 201
        assert ctl.create(name="rx-east", region="east").status_code == 201
        # West's failover parks with rx-west's move to east in flight.
        west = post(ctl, "/v1/regions/west/failover", {"parallelism": 1})
        assert states(ctl)["west"] == "failing-over"

        # Region first, then the environment: nothing moves into a failing-over region.
        refused = post(ctl, "/v1/environments/rx-east/failover")["error"]
        assert refused["code"] == "region_evacuated" and "failing-over" in refused["message"]

        # The environment first, then the region: east's failover waits for no one.
        def parked() -> list[dict]:
            children = ctl.http.get(f"/v1/operations?parent={west['id']}").json()
            paused = "operation paused at environment.failover/fence:start" in ctl.log()
            return children["operations"] if paused else []

        moving = wait_for(parked, what="rx-west's move to park")[0]["id"]
        refused = post(ctl, "/v1/regions/east/failover")["error"]
        assert refused["code"] == "busy" and moving in refused["message"], refused
        assert states(ctl)["east"] == "healthy"
