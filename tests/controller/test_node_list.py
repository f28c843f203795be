"""`GET /v1/nodes` on a real controller of a deployment with 2 nodes per region; the tests
play the nodes (their heartbeats)."""

from __future__ import annotations

from .conftest import ControllerProcess
from .waiting import wait_for


def nodes(ctl: ControllerProcess) -> dict[str, dict]:
    answer = ctl.http.get("/v1/nodes")
    assert answer.status_code == 200, answer.text
    return {n["name"]: n for n in answer.json()["nodes"]}


def test_nodes_show_region_state_and_the_replicas_the_catalog_places(ha_controller):
    ctl = ha_controller
    for node in ctl.deployment.nodes:
        assert ctl.heartbeat(node).status_code == 200
    before = nodes(ctl)
    assert list(before) == ["west-1", "west-2", "east-1", "east-2"]
    assert {n["region"] for n in before.values()} == {"west", "east"}
    assert all(n["state"] == "healthy" and n["last_heartbeat_age"] >= 0
               for n in before.values()), before
    assert ctl.create(name="nl-prod", region="west").status_code == 201
    assert ctl.create(name="nl-basic", type="basic", region="east").status_code == 201
    after = nodes(ctl)
    records = [ctl.http.get(f"/v1/environments/{env}").json()
               for env in ("nl-prod", "nl-basic")]
    for role, field in (("primary", "primaries"), ("secondary", "secondaries")):
        placed = [r["node"] for v in records for r in v["replicas"] if r["role"] == role]
        for node, seen in after.items():
            assert seen[field] - before[node][field] == placed.count(node), (node, field)
    assert sum(n["primaries"] - before[n["name"]]["primaries"] for n in after.values()) == 2
    assert sum(n["secondaries"] - before[n["name"]]["secondaries"]
               for n in after.values()) == 3  # west local and east geo, east local


def test_a_silent_node_is_down(ha_controller):
    ctl = ha_controller

    def east_2_down() -> bool:
        for node in ("west-1", "west-2", "east-1"):
            assert ctl.heartbeat(node).status_code == 200
        seen = nodes(ctl)
        return seen["east-2"]["state"] == "down" and seen["east-1"]["state"] == "healthy"

    wait_for(east_2_down, what="east-2 down, the others healthy")
    assert nodes(ctl)["east-2"]["last_heartbeat_age"] > 0.6  # past 3 x 0.2 s
    assert ctl.heartbeat("east-2").status_code == 200
    assert nodes(ctl)["east-2"]["state"] == "healthy"
