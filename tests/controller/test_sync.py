"""The sync endpoint (docs/ha.md, contract 3) and the desired records of a local replica,
on a real controller of a deployment with 2 nodes per region; the tests play the nodes."""

from __future__ import annotations

import httpx
import pytest

from .conftest import ControllerProcess


@pytest.fixture(scope="module")
def ha(ha_controller: ControllerProcess) -> ControllerProcess:
    return ha_controller


def ask(ctl: ControllerProcess, env: str, **body: object) -> httpx.Response:
    return ctl.http.post(f"/internal/v1/environments/{env}/sync", json=body)


def stored(ctl: ControllerProcess, env: str) -> dict[str, dict]:
    return {r["node"]: r for r in ctl.http.get(f"/v1/environments/{env}").json()["replicas"]}


def sync_events(ctl: ControllerProcess, env: str) -> list[dict]:
    return [e for e in ctl.http.get("/v1/events", params={"after": 0}).json()["events"]
            if e["environment"] == env and e["type"].startswith("replica.sync")]


def created(ctl: ControllerProcess, env: str, **body: object) -> tuple[str, str]:
    """Create `env` in west; its primary's node and its local secondary's."""
    answer = ctl.create(name=env, region="west", **body)
    assert answer.status_code == 201, answer.text
    replicas = answer.json()["replicas"]
    primary = next(r["node"] for r in replicas if r["role"] == "primary")
    local = next(r for r in replicas if r["kind"] == "local")
    assert local["sync"] is True and local["region"] == "west" and local["node"] != primary
    return primary, local["node"]


def test_desired_records_name_the_sync_secondary_and_local_ones_do_not_vouch(ha):
    primary, local = created(ha, "sy-desired")
    theirs = ha.desired(primary)["sy-desired"]
    assert {p["node"]: p["sync"] for p in theirs["secondaries"]} == {
        local: True, next(n for n in stored(ha, "sy-desired") if n.startswith("east")): False}
    own = ha.desired(local)["sy-desired"]
    assert (own["role"], own["primary"]["node"], own["vouch"]) == ("secondary", primary, False)
    geo = next(n for n in stored(ha, "sy-desired") if n.startswith("east"))
    assert ha.desired(geo)["sy-desired"]["vouch"] is True  # only the geo one vouches
    basic = ha.create(name="sy-basic", type="basic", region="east").json()["replicas"]
    assert [(r["role"], r["kind"], r["sync"]) for r in basic] == [
        ("primary", "geo", False), ("secondary", "local", True)]


def test_the_primary_records_sync_lost_and_restored(ha):
    env = "sy-change"
    primary, local = created(ha, env)
    lost = ask(ha, env, node=local, sync=False, epoch=1, primary=primary)
    assert lost.status_code == 200, lost.text
    assert lost.json()["sync"] is False and lost.json()["version"] > 0
    assert stored(ha, env)[local]["sync"] is False
    assert {p["node"]: p["sync"] for p in ha.desired(primary)[env]["secondaries"]}[local] \
        is False
    again = ask(ha, env, node=local, sync=False, epoch=1, primary=primary)
    assert again.status_code == 200 and again.json() == lost.json()  # already so: no write
    restored = ask(ha, env, node=local, sync=True, epoch=1, primary=primary)
    assert restored.status_code == 200 and restored.json()["sync"] is True
    assert restored.json()["version"] > lost.json()["version"]
    assert stored(ha, env)[local]["sync"] is True
    events = sync_events(ha, env)
    assert [e["type"] for e in events] == ["replica.sync_lost", "replica.sync_restored"]
    assert events[0]["data"] == {"node": local, "primary_node": primary, "epoch": 1,
                                 "sync": False}


def test_refusals_change_nothing(ha):
    env = "sy-refused"
    primary, local = created(ha, env)
    geo = next(n for n in stored(ha, env) if n.startswith("east"))
    before = stored(ha, env)
    for body, status, code in [
        ({"node": local, "sync": False, "epoch": 2, "primary": primary}, 409, "stale"),
        ({"node": local, "sync": False, "epoch": 1, "primary": local}, 409, "stale"),
        ({"node": geo, "sync": False, "epoch": 1, "primary": primary}, 409, "not_local"),
        ({"node": primary, "sync": False, "epoch": 1, "primary": primary}, 409, "not_local"),
        ({"node": local, "sync": False, "epoch": 1}, 400, "bad_request"),
        ({"node": local, "sync": "no", "epoch": 1, "primary": primary}, 400, "bad_request"),
        ({"node": local, "sync": False, "epoch": "1", "primary": primary}, 400,
         "bad_request"),
        ({"node": local, "sync": False, "epoch": 0, "primary": primary}, 400, "bad_request"),
        ({"node": local, "sync": False, "epoch": 1, "primary": primary, "x": 1}, 400,
         "bad_request"),
    ]:
        answer = ask(ha, env, **body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), body
    answer = ha.http.post(f"/internal/v1/environments/{env}/sync", json=[1])
    assert answer.status_code == 400
    answer = ask(ha, "sy-ghost", node=local, sync=False, epoch=1, primary=primary)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")
    answer = httpx.post(f"{ha.url}/internal/v1/environments/{env}/sync",
                        headers={"X-Tandem-Secret": "wrong"},
                        json={"node": local, "sync": False, "epoch": 1, "primary": primary})
    assert answer.status_code == 401
    assert stored(ha, env) == before and sync_events(ha, env) == []
