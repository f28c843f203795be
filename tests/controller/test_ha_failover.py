"""Failovers of an environment with a local secondary (docs/ha.md, "After a move to the
pair"), on a real controller whose nodes the test plays: no node listens, so the steps
that call a node fail, which is what these tests want."""

from __future__ import annotations

from .conftest import ControllerProcess
from .waiting import operation, wait_for


def replicas(ctl: ControllerProcess, env: str) -> dict[str, dict]:
    return {r["node"]: r for r in ctl.http.get(f"/v1/environments/{env}").json()["replicas"]}


def test_the_geo_replica_is_the_target_and_a_rolled_back_forced_failover_unfences_the_local_one(
        ha_controller: ControllerProcess):
    ctl, env = ha_controller, "hf-forced"
    answer = ctl.create(name=env, region="west")
    assert answer.status_code == 201, answer.text
    nodes = {(r["role"], r["kind"]): r["node"] for r in answer.json()["replicas"]}
    primary, local = nodes[("primary", "geo")], nodes[("secondary", "local")]
    geo = nodes[("secondary", "geo")]
    for node in ctl.deployment.nodes:
        assert ctl.heartbeat(node).status_code == 200  # healthy: the target must be
    started = ctl.http.post(f"/v1/environments/{env}/failover", json={"mode": "forced"})
    assert started.status_code == 202, started.text
    op = started.json()
    assert (op["params"]["to"]["node"], op["params"]["from"]["node"]) == (geo, primary)
    held = replicas(ctl, env)
    for node in (primary, local):  # both fenced and behind from the hold on
        assert (held[node]["role"], held[node].get("behind")) == ("fenced", True), held
    assert held[geo]["role"] == "secondary"
    # The geo target never confirms that it stopped vouching (nothing listens): the
    # failover fails before the decision and is rolled back.
    wait_for(lambda: operation(ctl, op["id"])["state"] == "failed", timeout=40,
             what="the forced failover to fail")
    assert operation(ctl, op["id"])["error"]["code"] == "vouch_not_withdrawn"
    after = replicas(ctl, env)
    assert (after[primary]["role"], after[local]["role"], after[geo]["role"]) == (
        "primary", "secondary", "secondary")
    assert not any(r.get("behind") for r in after.values())
    assert after[local]["sync"] is True  # untouched: the move never happened
    view = ctl.http.get(f"/v1/environments/{env}").json()
    assert (view["epoch"], view["state"]) == (1, "active")
