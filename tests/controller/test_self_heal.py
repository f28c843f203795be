"""Self-healing on a real controller (docs/ha.md, "Self-healing"): a node silent past
`replace_after_seconds` gets one `node.heal`, which moves its secondaries to a healthy,
uncordoned node of the region with room, or says why one stays. The tests play the nodes
(heartbeats in a thread; silencing one is taking it out of the thread's list); node
failover is off, so nothing else moves.

Real nodes, seeding and sync: tests/integration/test_self_heal.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandemdb.controller.operations import PAUSE_ENV

from .beats import Beater
from .conftest import BACKENDS, ControllerProcess, backend, controller_process
from .test_drain import replicas_of
from .waiting import wait_all_healthy, wait_for

AFTER = 1.0  # replace_after_seconds


@pytest.fixture(scope="module", params=BACKENDS)
def healing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[tuple[ControllerProcess, Beater]]:
    with controller_process(tmp_path_factory.mktemp("heal"), nodes_per_region=3,
                            node_grace_seconds=None, replace_after_seconds=AFTER,
                            **backend(request)) as ctl:
        ctl.start()
        with Beater(ctl, list(ctl.deployment.nodes)) as beats:
            # (a node silenced before its first heartbeat would count as never heard from,
            # which heals only after `UNHEARD_GRACE`)
            wait_all_healthy(ctl)
            yield ctl, beats


def heals_of(ctl: ControllerProcess, node: str) -> list[dict]:
    ops = ctl.http.get("/v1/operations", params={"limit": 200}).json()["operations"]
    return [o for o in ops if o["kind"] == "node.heal" and o["target"] == node]


def silence(ctl: ControllerProcess, beats: Beater, *nodes: str) -> set[str]:
    """Stop the nodes' heartbeats; the ids of their heal operations so far."""
    for node in nodes:
        beats.nodes.remove(node)
    return {o["id"] for node in nodes for o in heals_of(ctl, node)}


def healed(ctl: ControllerProcess, node: str, before: set[str]) -> dict:
    """The node's new heal operation (not in `before`) once it has ended."""
    return wait_for(lambda: next((o for o in heals_of(ctl, node) if o["id"] not in before
                                  and o["state"] in ("succeeded", "failed")), None),
                    what=f"the healing of {node}")


def test_a_silent_node_s_secondary_moves_to_the_node_with_room(healing):
    ctl, beats = healing
    assert ctl.create(name="sh-move", type="basic", region="west").status_code == 201
    placed = replicas_of(ctl, "sh-move")
    local = next(n for n, r in placed.items() if r["kind"] == "local")
    free = next(n for n in ctl.deployment.nodes_in("west") if n not in placed)
    before = silence(ctl, beats, local)
    try:
        op = healed(ctl, local, before)
        assert op["state"] == "succeeded", op
        [line] = [x for x in op["result"]["replicas"] if x["environment"] == "sh-move"]
        assert (line["state"], line["from_node"], line["to_node"]) == ("replaced", local, free)
        now = replicas_of(ctl, "sh-move")
        assert local not in now
        assert (now[free]["role"], now[free]["kind"], now[free]["sync"]) == (
            "secondary", "local", False)
        events = ctl.http.get("/v1/events", params={"after": 0}).json()["events"]
        assert [(e["data"]["from_node"], e["data"]["to_node"], e["data"]["beside"])
                for e in events if e["type"] == "replica.replaced"
                and e["environment"] == "sh-move"] == [(local, free, False)]
    finally:
        beats.nodes.append(local)
    assert len(heals_of(ctl, local)) == len(before) + 1  # once per outage


def test_with_no_room_the_secondary_stays_and_the_result_says_why(healing):
    ctl, beats = healing
    assert ctl.create(name="sh-stay", type="basic", region="east").status_code == 201
    placed = replicas_of(ctl, "sh-stay")
    local = next(n for n, r in placed.items() if r["kind"] == "local")
    free = next(n for n in ctl.deployment.nodes_in("east") if n not in placed)
    before = silence(ctl, beats, free, local)  # the only node with room is silent too
    try:
        op = healed(ctl, local, before)
        [line] = [x for x in op["result"]["replicas"] if x["environment"] == "sh-stay"]
        assert (line["state"], line["to_node"]) == ("stayed", None), line
        assert "every other healthy, uncordoned node of east holds a replica" in line["note"]
        assert op["result"]["stayed"] >= 1 and replicas_of(ctl, "sh-stay") == placed
    finally:
        beats.nodes.extend([free, local])


def test_a_geo_secondary_is_re_created_in_the_pair_as_geo(healing):
    ctl, beats = healing
    assert ctl.create(name="sh-geo", type="production", region="west").status_code == 201
    placed = replicas_of(ctl, "sh-geo")
    geo = next(n for n, r in placed.items() if r["region"] == "east")
    before = silence(ctl, beats, geo)
    try:
        op = healed(ctl, geo, before)
        [line] = [x for x in op["result"]["replicas"] if x["environment"] == "sh-geo"]
        assert (line["state"], line["kind"]) == ("replaced", "geo"), line
        moved = replicas_of(ctl, "sh-geo")[line["to_node"]]
        assert (moved["region"], moved["role"], moved["kind"], moved["sync"]) == (
            "east", "secondary", "geo", False)
        assert geo not in replicas_of(ctl, "sh-geo")
    finally:
        beats.nodes.append(geo)


def test_with_one_node_per_region_nothing_is_recorded(tmp_path, backend_settings):
    """As before local HA: a lone node's replicas have nowhere to go, so no operation."""
    with controller_process(tmp_path / "one", node_grace_seconds=None,
                            replace_after_seconds=AFTER, **backend_settings) as ctl:
        ctl.start()
        with Beater(ctl, list(ctl.deployment.nodes)) as beats:
            wait_all_healthy(ctl)
            assert ctl.create(name="sh-one", region="west").status_code == 201
            geo = next(n for n in replicas_of(ctl, "sh-one") if n.startswith("east"))
            silence(ctl, beats, geo)
            wait_for(lambda: f"node {geo}: silent for" in ctl.log()
                     and "no other node of east is healthy" in ctl.log(),
                     what="the log saying why nothing is healed")
            assert heals_of(ctl, geo) == []


def test_a_heal_cut_off_by_a_controller_restart_says_what_it_did(tmp_path, backend_settings):
    """The step ran (the replica moved) but its end was never written: the next controller
    runs it again, which moves nothing twice and still reports the move."""
    with controller_process(tmp_path / "resume", nodes_per_region=3, node_grace_seconds=None,
                            replace_after_seconds=AFTER, **backend_settings) as ctl:
        ctl.start(env={PAUSE_ENV: "node.heal/replace-replicas:end"})
        with Beater(ctl, list(ctl.deployment.nodes)) as beats:
            wait_all_healthy(ctl)
            assert ctl.create(name="sh-resume", type="basic", region="west").status_code == 201
            placed = replicas_of(ctl, "sh-resume")
            local = next(n for n, r in placed.items() if r["kind"] == "local")
            free = next(n for n in ctl.deployment.nodes_in("west") if n not in placed)
            silence(ctl, beats, local)
            wait_for(lambda: free in replicas_of(ctl, "sh-resume"), what="the move")
            [parked] = heals_of(ctl, local)
            ctl.kill()
            ctl.start()
            op = healed(ctl, local, set())
            assert op["id"] == parked["id"] and op["state"] == "succeeded", op
            [line] = op["result"]["replicas"]
            assert (line["environment"], line["state"]) == ("sh-resume", "replaced"), line
            assert heals_of(ctl, local) == [op]  # the new controller started no other
            assert set(replicas_of(ctl, "sh-resume")) == set(placed) - {local} | {free}
