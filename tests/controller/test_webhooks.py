"""Webhooks: registration, filtering, signed delivery, retries with backoff, and delivery
that survives SIGKILL of the controller. The receiver is the tenant's own HTTP server (stdlib
`http.server` in a thread), not a Tandem part."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from tandemdb.controller.webhooks import backoff, sign
from tests.receiver import SECRET, Receiver

from .waiting import events_of, wait_for


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(fail_first: int = 0) -> Receiver:
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_backoff_doubles_to_a_minute_and_signature_is_over_timestamp_dot_body():
    assert [backoff(n) for n in range(1, 11)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    expected = hmac.new(b"k" * 16, b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign("k" * 16, "1700000000", b"{}") == f"sha256={expected}"


def register(ctl, **body) -> dict:
    response = ctl.http.post("/v1/webhooks", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_registration_is_validated_and_secret_never_shown(controller):
    before = controller.http.get("/v1/webhooks").json()["webhooks"]
    cases = [({"secret": SECRET}, "invalid url"),
             ({"url": "ftp://example.com/x", "secret": SECRET}, "invalid url"),
             ({"url": "http:///nohost", "secret": SECRET}, "invalid url"),
             ({"url": 7, "secret": SECRET}, "invalid url"),
             ({"url": "https://example.com/x", "secret": "short"}, "at least 16"),
             ({"url": "https://example.com/x"}, "at least 16"),
             ({"url": "https://example.com/x", "secret": SECRET, "environments": []},
              "invalid environments"),
             ({"url": "https://example.com/x", "secret": SECRET, "environments": "acme"},
              "invalid environments"),
             ({"url": "https://example.com/x", "secret": SECRET, "environments": ["Bad_1"]},
              "invalid environments"),
             ({"url": "https://example.com/x", "secret": SECRET, "events": ["x"]},
              "unknown field")]
    for body, fragment in cases:
        response = controller.http.post("/v1/webhooks", json=body)
        assert response.status_code == 400, body
        assert fragment in response.json()["error"]["message"], (body, response.text)
    assert controller.http.post("/v1/webhooks", content=b"[").status_code == 400
    assert controller.http.get("/v1/webhooks").json()["webhooks"] == before

    hook = register(controller, url="https://example.com/x", secret=SECRET,
                    environments=["b-env", "a-env", "a-env"])
    assert set(hook) == {"id", "url", "environments", "created_at"}
    assert hook["id"].startswith("wh-") and hook["environments"] == ["a-env", "b-env"]
    listed = {h["id"]: h for h in controller.http.get("/v1/webhooks").json()["webhooks"]}
    assert SECRET not in json.dumps(listed)
    assert listed[hook["id"]]["pending"] == 0
    assert controller.http.delete(f"/v1/webhooks/{hook['id']}").json() == {"deleted": hook["id"]}
    for hook_id in [hook["id"], "wh-999999", "nope"]:
        response = controller.http.delete(f"/v1/webhooks/{hook_id}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    for method in ["GET", "POST"]:
        assert httpx.request(method, f"{controller.url}/v1/webhooks").status_code == 401


def test_every_matching_event_arrives_signed(controller, receivers):
    everything, only_one = receivers(), receivers()
    all_hook = register(controller, url=everything.url, secret=SECRET, environments=None)
    one_hook = register(controller, url=only_one.url, secret=SECRET,
                        environments=["whf-one"])
    assert controller.create(name="whf-one", type="basic").status_code == 201
    assert controller.create(name="whf-two", type="basic").status_code == 201
    assert controller.http.delete("/v1/environments/whf-two").status_code == 200
    log = {e["id"]: e for e in events_of(controller)["events"]
           if e["environment"] in ("whf-one", "whf-two")}
    assert len(log) == 3

    wait_for(lambda: set(log) <= set(everything.delivered()), 10, what="all events delivered")
    one = log[min(log)]
    wait_for(lambda: one["id"] in only_one.delivered(), 10, what="whf-one's event delivered")

    def drained() -> bool:
        hooks = {h["id"]: h for h in controller.http.get("/v1/webhooks").json()["webhooks"]}
        return hooks[all_hook["id"]]["pending"] == hooks[one_hook["id"]]["pending"] == 0

    wait_for(drained, 10, what="outboxes empty")
    assert {i: e for i, e in everything.delivered().items() if i in log} == log
    assert only_one.delivered() == {one["id"]: one}  # the filter kept whf-two's events out
    everything.check_signatures()
    only_one.check_signatures()
    for hook in (all_hook, one_hook):
        assert controller.http.delete(f"/v1/webhooks/{hook['id']}").status_code == 200


def test_delivery_retries_with_backoff_across_sigkill(own_controller, receivers):
    """The receiver fails the first 3 deliveries. The controller is killed while they fail;
    after the restart every event still arrives, exactly once after dedup by id."""
    ctl = own_controller.start()
    receiver = receivers(fail_first=3)
    hook = register(ctl, url=receiver.url, secret=SECRET)
    assert ctl.create(name="wk-a", type="basic").status_code == 201
    assert ctl.create(name="wk-b", type="basic").status_code == 201
    assert ctl.http.delete("/v1/environments/wk-a").status_code == 200
    log = {e["id"]: e for e in events_of(ctl)["events"]}
    assert sorted(log) == [1, 2, 3]

    wait_for(lambda: len(receiver.requests) >= 2, 10, what="two failed deliveries")
    # The second failure is in the store once the controller says so (it logs after the
    # write): the receiver's count alone may run ahead of it.
    wait_for(lambda: "(attempt 2)" in ctl.log(), 10, what="the second failure recorded")
    ctl.kill()
    # The outbox, with the backoff state, is in the store the dead controller left.
    with ctl.open_store() as store:
        outbox = [item.value for item in store.list(f"outbox/{hook['id']}/").values()]
    assert [e["event"] for e in outbox] == [1, 2, 3]
    assert outbox[0]["attempts"] >= 2 and "answered 500" in outbox[0]["last_error"]
    assert outbox[0]["next_at"] > 0

    ctl.start()
    wait_for(lambda: set(receiver.delivered()) == {1, 2, 3}, 20, what="every event delivered")
    assert receiver.delivered() == log
    receiver.check_signatures()
    statuses = [r["status"] for r in receiver.requests]
    assert statuses[:3] == [500, 500, 500] and set(statuses[3:]) == {200}
    # Every attempt carried the same event: a receiver's dedup by id is enough.
    for r in receiver.requests:
        assert json.loads(r["body"]) == log[json.loads(r["body"])["id"]]
    wait_for(lambda: ctl.http.get("/v1/webhooks").json()["webhooks"][0]["pending"] == 0, 5,
             what="outbox empty")
    text = ctl.log()
    assert f"webhook {hook['id']}: event 1 (environment.created) not delivered to" in text
    assert "next attempt in" in text and "delivered to" in text
