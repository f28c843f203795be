"""The event log over HTTP: create and delete emit events; the long poll waits and wakes."""

from __future__ import annotations

import threading
import time

import httpx

from .waiting import events_of


def test_create_and_delete_emit_events_in_order(controller):
    start = events_of(controller)["last"]
    created = controller.create(name="ev-one", region="east")
    assert created.status_code == 201
    op_created = created.headers["X-Tandem-Operation"]
    deleted = controller.http.delete("/v1/environments/ev-one")
    op_deleted = deleted.headers["X-Tandem-Operation"]

    answer = events_of(controller, after=start)
    mine = [e for e in answer["events"] if e["environment"] == "ev-one"]
    assert [(e["type"], e["operation"], e["region"]) for e in mine] == [
        ("environment.created", op_created, "east"), ("environment.deleted", op_deleted, "east")]
    first = mine[0]
    assert set(first) == {"id", "type", "at", "environment", "region", "operation", "data"}
    assert first["at"].endswith("Z") and first["data"]["type"] == "production"
    assert [(r["node"], r["role"]) for r in first["data"]["replicas"]] == [
        ("east-1", "primary"), ("west-1", "secondary")]
    # Ids count 1, 2, 3 … with no gaps; `last` is the newest; `after` skips what was read.
    ids = [e["id"] for e in answer["events"]]
    assert ids == list(range(start + 1, start + 1 + len(ids))) and answer["last"] == ids[-1]
    assert events_of(controller, after=mine[0]["id"])["events"][0] == mine[1]
    assert events_of(controller, after=answer["last"])["events"] == []


def test_refused_requests_emit_nothing(controller):
    last = events_of(controller)["last"]
    assert controller.create(name="Bad_Name").status_code == 400
    assert controller.create(name="ev-dup", type="basic").status_code == 201
    assert controller.create(name="ev-dup", type="basic").status_code == 409
    assert controller.http.delete("/v1/environments/ev-ghost").status_code == 404
    events = events_of(controller, after=last)["events"]
    assert [(e["type"], e["environment"]) for e in events] == [("environment.created",
                                                                "ev-dup")]


def test_a_waiting_poll_wakes_on_a_new_event(controller):
    last = events_of(controller)["last"]
    result: dict = {}

    def poll() -> None:
        began = time.monotonic()
        result["answer"] = events_of(controller, after=last, wait=20)
        result["seconds"] = time.monotonic() - began

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.4)
    assert poller.is_alive()  # nothing newer yet: it waits
    assert controller.create(name="ev-wake", type="basic").status_code == 201
    poller.join(10)
    assert not poller.is_alive()
    assert 0.3 < result["seconds"] < 5
    assert [(e["type"], e["environment"]) for e in result["answer"]["events"]] == [
        ("environment.created", "ev-wake")]


def test_a_waiting_poll_times_out_empty(controller):
    last = events_of(controller)["last"]
    began = time.monotonic()
    answer = events_of(controller, after=last, wait=0.5)
    assert 0.45 <= time.monotonic() - began < 3
    assert answer == {"events": [], "last": last}


def test_bad_parameters_are_refused(controller):
    for params, fragment in [({"after": -1}, "invalid after"), ({"after": "x"}, "invalid after"),
                             ({"wait": "soon"}, "invalid wait"), ({"wait": -1}, "invalid wait"),
                             ({"wait": "nan"}, "invalid wait"), ({"wait": "inf"}, "invalid wait"),
                             ({"since": 3}, "unknown parameter")]:
        response = controller.http.get("/v1/events", params=params)
        assert response.status_code == 400, params
        error = response.json()["error"]
        assert error["code"] == "bad_request" and fragment in error["message"], error
    assert httpx.get(f"{controller.url}/v1/events").status_code == 401
