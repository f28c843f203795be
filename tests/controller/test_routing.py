"""The routing table and its long poll (`GET /internal/v1/routing?after=R&wait=S`)."""

from __future__ import annotations

import threading
import time


def routing(controller, **params):
    start = time.monotonic()
    response = controller.http.get("/internal/v1/routing", params=params)
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - start


def test_table_lists_each_environment_by_region(controller):
    assert controller.create(name="routed").status_code == 201
    assert controller.create(name="solo", type="sandbox", region="east").status_code == 201
    table, _ = routing(controller)
    deployment = controller.deployment
    routed = table["environments"]["routed"]
    assert routed["operation"].startswith("op-")  # the creation
    assert routed == {
        "epoch": 1, "primary_region": "west", "switching": False,
        "operation": routed["operation"],
        "replicas": {
            "west": {"node": "west-1", "url": deployment.node_url("west-1"), "role": "primary"},
            "east": {"node": "east-1", "url": deployment.node_url("east-1"),
                     "role": "secondary"}}}
    assert table["environments"]["solo"]["replicas"] == {
        "east": {"node": "east-1", "url": deployment.node_url("east-1"), "role": "primary"}}


def test_answers_at_once_when_newer(controller):
    table, _ = routing(controller)
    assert controller.create(name="newer", type="basic").status_code == 201
    newer, elapsed = routing(controller, after=table["revision"], wait=10)
    assert elapsed < 2
    assert newer["revision"] > table["revision"]
    # A delta: only what changed after the revision asked about.
    assert "newer" in newer["changes"] and "newer" not in table["environments"]
    assert "environments" not in newer and "routed" not in newer["changes"]
    # Asked again from there, the rest of the creation (its activation) or nothing.
    later, _ = routing(controller, after=newer["revision"], wait=0.2)
    assert set(later["changes"]) <= {"newer"}
    # Deleted: the delta says so with null.
    assert controller.http.delete("/v1/environments/newer").status_code == 200
    gone, _ = routing(controller, after=later["revision"], wait=10)
    assert gone["changes"]["newer"] is None


def test_waits_when_nothing_changed(controller):
    controller.heartbeat("west-1")  # the first heartbeat stores the node's URL: a write
    table, _ = routing(controller)
    # Heartbeats with an unchanged URL are not writes: they must not wake the poll.
    controller.heartbeat("west-1")
    same, elapsed = routing(controller, after=table["revision"], wait=0.8)
    assert elapsed >= 0.7, elapsed
    assert same == {"revision": table["revision"], "changes": {}}


def test_wakes_up_on_a_change_during_the_wait(controller):
    table, _ = routing(controller)
    creator = threading.Timer(0.3, controller.create, kwargs={"name": "mid-wait"})
    creator.start()
    woken, elapsed = routing(controller, after=table["revision"], wait=20)
    creator.join()
    assert 0.25 <= elapsed < 5, elapsed
    assert woken["revision"] > table["revision"]
    # The answer may come between the record's creation and its activation; either way
    # the environment is in it.
    assert "mid-wait" in woken["changes"]


def test_bad_parameters(controller):
    for params in [{"after": "abc"}, {"after": -1}, {"wait": -1}, {"wait": "soon"}]:
        response = controller.http.get("/internal/v1/routing", params=params)
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == "bad_request"


def test_writes_outside_the_table_do_not_wake_a_watcher(controller):
    """Operations, events and webhooks write the store often; the gateway must not rebuild
    its whole table for each of them."""
    table, _ = routing(controller)
    hook = controller.http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x",
                                                      "secret": "0123456789abcdef"})
    assert hook.status_code == 201
    same, elapsed = routing(controller, after=table["revision"], wait=1.0)
    assert elapsed >= 0.9, "woken by a write that changes nothing in the table"
    assert same["changes"] == {} and same["revision"] > table["revision"]
    controller.http.delete(f"/v1/webhooks/{hook.json()['id']}")
