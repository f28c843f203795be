"""`POST /v1/nodes/{node}/drain` and `/uncordon` on a real controller (docs/ha.md, "Drain"):
the refusals that change nothing, the node states `GET /v1/nodes` shows, and placement that
never picks a drained node. The tests play the nodes (heartbeats in a thread); node
failover and self-healing are off, so a node the tests silence only looks down.

Moving primaries takes real nodes: tests/integration/test_drain.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tandemdb.controller.operations import PAUSE_ENV

from .beats import Beater
from .conftest import BACKENDS, ControllerProcess, backend, controller_process
from .waiting import operation, wait_for

QUIET = {"node_grace_seconds": None, "replace_after_seconds": None}


@pytest.fixture(scope="module", params=BACKENDS)
def three(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[tuple[ControllerProcess, Beater]]:
    """A controller of 3 nodes per region, every node heartbeating (`Beater.nodes`)."""
    with controller_process(tmp_path_factory.mktemp("drain3"), nodes_per_region=3,
                            **QUIET, **backend(request)) as ctl:
        ctl.start()
        with Beater(ctl, list(ctl.deployment.nodes)) as beats:
            wait_for(lambda: all(n["state"] == "healthy" for n in nodes(ctl).values()),
                     what="every node healthy")
            yield ctl, beats


def nodes(ctl: ControllerProcess) -> dict[str, dict]:
    answer = ctl.http.get("/v1/nodes")
    assert answer.status_code == 200, answer.text
    return {n["name"]: n for n in answer.json()["nodes"]}


def drained(ctl: ControllerProcess, node: str) -> dict:
    """Drain `node` and wait for the operation's end."""
    answer = ctl.http.post(f"/v1/nodes/{node}/drain")
    assert answer.status_code == 202, answer.text
    op_id = answer.json()["id"]
    wait_for(lambda: operation(ctl, op_id)["state"] in ("succeeded", "failed"),
             what=f"drain {op_id} to end")
    return operation(ctl, op_id)


def refused(ctl: ControllerProcess, node: str, status: int, code: str) -> str:
    """Ask for a drain that must be refused; its message. Nothing may have changed."""
    before = last_operation(ctl)
    states = {name: n["state"] for name, n in nodes(ctl).items()}
    answer = ctl.http.post(f"/v1/nodes/{node}/drain")
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code, answer.text
    assert last_operation(ctl) == before  # no new operation
    assert {name: n["state"] for name, n in nodes(ctl).items()} == states
    return answer.json()["error"]["message"]


def last_operation(ctl: ControllerProcess) -> str | None:
    newest = ctl.http.get("/v1/operations", params={"limit": 1}).json()["operations"]
    return newest[0]["id"] if newest else None


def replicas_of(ctl: ControllerProcess, env: str) -> dict[str, dict]:
    answer = ctl.http.get(f"/v1/environments/{env}")
    assert answer.status_code == 200, answer.text
    return {r["node"]: r for r in answer.json()["replicas"]}


def test_unknown_nodes_are_404(three):
    ctl, _ = three
    for path in ("drain", "uncordon"):
        answer = ctl.http.post(f"/v1/nodes/nowhere-9/{path}")
        assert answer.status_code == 404, answer.text
        assert "west-1" in answer.json()["error"]["message"]


def test_a_drained_node_is_cordoned_and_never_placed_on_until_uncordoned(three):
    ctl, _ = three
    op = drained(ctl, "west-3")
    assert op["state"] == "succeeded", op
    assert [s["name"] for s in op["steps"]] == ["mark", "move-primaries", "move-secondaries",
                                                "cordon"]
    assert op["result"]["environments"] == [] and op["result"]["secondaries"] == []
    assert nodes(ctl)["west-3"]["state"] == "cordoned"
    # Draining a cordoned node runs again (it may hold a primary since): still cordoned.
    assert drained(ctl, "west-3")["state"] == "succeeded"
    assert nodes(ctl)["west-3"]["state"] == "cordoned"
    for i in range(3):  # the fewest replicas would be west-3's: it is skipped
        answer = ctl.create(name=f"dr-place-{i}", type="basic", region="west")
        assert answer.status_code == 201, answer.text
        assert "west-3" not in replicas_of(ctl, f"dr-place-{i}")
    answer = ctl.http.post("/v1/nodes/west-3/uncordon")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"node": "west-3", "was": "cordoned"}
    assert nodes(ctl)["west-3"]["state"] == "healthy"
    assert ctl.http.post("/v1/nodes/west-3/uncordon").json()["was"] is None  # idempotent
    assert ctl.create(name="dr-place-back", type="basic", region="west").status_code == 201
    assert "west-3" in replicas_of(ctl, "dr-place-back")  # the least loaded again


def test_the_last_uncordoned_node_of_a_region_is_refused(three):
    ctl, _ = three
    for node in ("east-2", "east-3"):
        assert drained(ctl, node)["state"] == "succeeded"
    message = refused(ctl, "east-1", 409, "no_room")
    assert "last healthy, uncordoned node of east" in message
    assert "east-2 cordoned" in message and "east-3 cordoned" in message
    # A new environment there gets a primary but no local secondary: nowhere to put it.
    assert ctl.create(name="dr-lonely", type="basic", region="east").status_code == 201
    assert list(replicas_of(ctl, "dr-lonely")) == ["east-1"]
    for node in ("east-2", "east-3"):
        assert ctl.http.post(f"/v1/nodes/{node}/uncordon").status_code == 200


def test_a_silent_node_is_down_whatever_its_drain_state(three):
    ctl, beats = three
    assert drained(ctl, "east-3")["state"] == "succeeded"
    beats.nodes.remove("east-3")
    try:
        wait_for(lambda: nodes(ctl)["east-3"]["state"] == "down", what="east-3 down")
    finally:
        beats.nodes.append("east-3")
    wait_for(lambda: nodes(ctl)["east-3"]["state"] == "cordoned", what="east-3 cordoned")
    assert ctl.http.post("/v1/nodes/east-3/uncordon").status_code == 200


def test_a_primary_without_a_healthy_local_secondary_is_refused(three):
    ctl, beats = three
    assert ctl.create(name="dr-stuck", type="basic", region="west").status_code == 201
    placed = replicas_of(ctl, "dr-stuck")
    primary = next(n for n, r in placed.items() if r["role"] == "primary")
    local = next(n for n, r in placed.items() if r["kind"] == "local")
    beats.nodes.remove(local)
    try:
        wait_for(lambda: nodes(ctl)[local]["state"] == "down", what=f"{local} down")
        message = refused(ctl, primary, 409, "no_secondary")
        assert "dr-stuck" in message
        beats.nodes.remove(primary)
        wait_for(lambda: nodes(ctl)[primary]["state"] == "down", what=f"{primary} down")
        assert "planned switchover" in refused(ctl, primary, 409, "unhealthy")
    finally:
        beats.nodes.extend(n for n in (local, primary) if n not in beats.nodes)
    wait_for(lambda: all(n["state"] == "healthy" for n in nodes(ctl).values()),
             what="every node healthy again")


def test_a_secondary_moves_to_a_node_with_room_or_stays_saying_why(three):
    ctl, _ = three
    assert ctl.create(name="dr-move", type="production", region="east").status_code == 201
    placed = replicas_of(ctl, "dr-move")
    local = next(n for n, r in placed.items() if r["kind"] == "local")
    op = drained(ctl, local)
    assert op["state"] == "succeeded", op
    line = next(s for s in op["result"]["secondaries"] if s["environment"] == "dr-move")
    after = replicas_of(ctl, "dr-move")
    assert line["state"] == "replaced" and line["to_node"] in after and local not in after
    moved = after[line["to_node"]]
    assert (moved["role"], moved["kind"], moved["sync"]) == ("secondary", "local", False)
    assert moved["region"] == "east" and line["to_node"] not in placed
    events = ctl.http.get("/v1/events", params={"after": 0}).json()["events"]
    replaced = [e for e in events if e["type"] == "replica.replaced"
                and e["environment"] == "dr-move"]
    assert [(e["data"]["from_node"], e["data"]["to_node"], e["data"]["kind"])
            for e in replaced] == [(local, line["to_node"], "local")]
    assert ctl.http.post(f"/v1/nodes/{local}/uncordon").status_code == 200


def two_nodes_per_region(data, settings: dict, pause: str | None = None,
                         ) -> Iterator[ControllerProcess]:
    """A controller of 2 nodes per region, every node heartbeating; `pause` parks every
    operation that reaches that point (`TANDEM_PAUSE_AT`)."""
    with controller_process(data, nodes_per_region=2, **QUIET, **settings) as ctl:
        ctl.start(env={PAUSE_ENV: pause} if pause else None)
        with Beater(ctl, list(ctl.deployment.nodes)):
            wait_for(lambda: all(n["state"] == "healthy" for n in nodes(ctl).values()),
                     what="every node healthy")
            yield ctl


@pytest.fixture
def two(tmp_path, backend_settings) -> Iterator[ControllerProcess]:
    yield from two_nodes_per_region(tmp_path / "two", backend_settings)


@pytest.fixture
def paused(tmp_path, backend_settings) -> Iterator[ControllerProcess]:
    """Drains park before moving secondaries."""
    yield from two_nodes_per_region(tmp_path / "paused", backend_settings,
                                    "node.drain/move-secondaries:start")


def test_with_two_nodes_per_region_a_secondary_stays_and_the_result_says_so(two):
    ctl = two
    assert ctl.create(name="dr-full", type="basic", region="west").status_code == 201
    placed = replicas_of(ctl, "dr-full")
    local = next(n for n, r in placed.items() if r["kind"] == "local")
    op = drained(ctl, local)
    assert op["state"] == "succeeded", op  # the node is cordoned; the replica stays on it
    line = next(s for s in op["result"]["secondaries"] if s["environment"] == "dr-full")
    assert (line["state"], line["from_node"], line["to_node"]) == ("stayed", local, None)
    assert "every other healthy, uncordoned node of west holds a replica" in line["note"]
    assert replicas_of(ctl, "dr-full") == placed
    assert nodes(ctl)[local]["state"] == "cordoned"


def test_while_a_drain_runs_the_node_is_draining_and_busy_and_a_restart_finishes_it(
        paused):
    ctl = paused
    assert ctl.create(name="dr-resume", type="basic", region="west").status_code == 201
    assert "west-2" in replicas_of(ctl, "dr-resume")
    answer = ctl.http.post("/v1/nodes/west-2/drain", json={"parallelism": 2})
    assert answer.status_code == 202, answer.text
    op_id = answer.json()["id"]
    assert answer.json()["kind"] == "node.drain" and answer.json()["target"] == "west-2"
    wait_for(lambda: nodes(ctl)["west-2"]["state"] == "draining", what="west-2 draining")
    assert op_id in refused(ctl, "west-2", 409, "busy")
    answer = ctl.http.post("/v1/nodes/west-2/uncordon")
    assert answer.status_code == 409 and op_id in answer.json()["error"]["message"]
    # Its pair cannot go too: west-2 is draining, so west-1 is the last placeable node.
    assert "west-2 draining" in refused(ctl, "west-1", 409, "no_room")
    assert ctl.http.post("/v1/nodes/west-2/drain",
                         json={"parallelism": 0}).status_code == 400
    ctl.kill()  # parked before move-secondaries; the next controller resumes it there
    ctl.start()
    wait_for(lambda: operation(ctl, op_id)["state"] == "succeeded", timeout=30,
             what=f"drain {op_id} resumed to its end")
    done = operation(ctl, op_id)
    assert [s["attempts"] for s in done["steps"]] == [1, 1, 2, 1], done["steps"]
    assert [(x["environment"], x["state"]) for x in done["result"]["secondaries"]] == [
        ("dr-resume", "stayed")]  # 2 nodes per region: no room for it
    assert nodes(ctl)["west-2"]["state"] == "cordoned"
