"""The control API as a hostile client calls it (issue 9, items 3 and 5).

Every number and string of every body and query has bounds: huge integers, 1e400,
NaN/Infinity (Python's json takes them), wrong types, nested junk, oversized strings and
unknown fields all get a 400 `bad_request` that names the field, quotes the value only in
short, and changes nothing. A record stored before the bounds cannot break a heartbeat.
"""

from __future__ import annotations

import json

import pytest

HUGE = 10**400  # json.dumps writes it digit by digit; Python's json reads it back
DEEP: list = []
for _ in range(30):
    DEEP = [DEEP]
LONG = "x" * 200_000
LONG_QUERY = "x" * 20_000  # what an HTTP client sends in one query


def state(ctl) -> dict:
    """Everything a refused request must leave as it was."""
    ops = ctl.http.get("/v1/operations", params={"limit": 1}).json()["operations"]
    return {"environments": ctl.http.get("/v1/environments").json()["environments"],
            "webhooks": ctl.http.get("/v1/webhooks").json()["webhooks"],
            "regions": [(r["name"], r["state"], r.get("operation"))
                        for r in ctl.http.get("/v1/regions").json()["regions"]],
            "operation": ops[0]["id"] if ops else None,
            "event": ctl.http.get("/v1/events").json()["last"]}


def refused(response, *fragments: str) -> str:
    """Assert a clear 400: code bad_request, a short message naming what is wrong."""
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == "bad_request", error
    assert len(error["message"]) < 400, error["message"]  # a huge value is not echoed
    for fragment in fragments:
        assert fragment in error["message"], (fragment, error["message"])
    return error["message"]


def raw(value: str) -> bytes:
    """A body with a literal JSON cannot spell (1e400, NaN, Infinity) but Python reads."""
    return value.encode()


CREATE_CASES = [
    # item 3: rpo_limit_seconds is a finite number from 1 to 86,400
    ({"name": "h-rpo", "rpo_limit_seconds": HUGE}, "rpo_limit_seconds"),
    ({"name": "h-rpo", "rpo_limit_seconds": -HUGE}, "rpo_limit_seconds"),
    (raw('{"name": "h-rpo", "rpo_limit_seconds": 1e400}'), "rpo_limit_seconds inf"),
    (raw('{"name": "h-rpo", "rpo_limit_seconds": Infinity}'), "rpo_limit_seconds inf"),
    (raw('{"name": "h-rpo", "rpo_limit_seconds": -Infinity}'), "rpo_limit_seconds"),
    (raw('{"name": "h-rpo", "rpo_limit_seconds": NaN}'), "rpo_limit_seconds nan"),
    ({"name": "h-rpo", "rpo_limit_seconds": 86_401}, "from 1 to 86400"),
    ({"name": "h-rpo", "rpo_limit_seconds": 1e308}, "rpo_limit_seconds"),
    ({"name": "h-rpo", "rpo_limit_seconds": 0.5}, "rpo_limit_seconds"),
    ({"name": "h-rpo", "rpo_limit_seconds": "900"}, "rpo_limit_seconds"),
    ({"name": "h-rpo", "rpo_limit_seconds": True}, "rpo_limit_seconds"),
    ({"name": "h-rpo", "rpo_limit_seconds": [900]}, "rpo_limit_seconds"),
    ({"name": "h-rpo", "rpo_limit_seconds": {"$blob": "AAAA"}}, "rpo_limit_seconds"),
    # item 5: a list as the type was a TypeError (500)
    ({"name": "h-type", "type": ["production"]}, "invalid environment type"),
    ({"name": "h-type", "type": {"production": 1}}, "invalid environment type"),
    ({"name": "h-type", "type": LONG}, "invalid environment type"),
    ({"name": HUGE}, "invalid environment name"),
    ({"name": LONG}, "invalid environment name"),
    ({"name": DEEP}, "invalid environment name"),
    ({"name": "acme\n"}, "invalid environment name"),
    ({"name": "h-region", "region": LONG}, "invalid region"),
    ({"name": "h-region", "region": ["west"]}, "invalid region"),
    ({"name": "h-region", "region": "mars"}, "unknown region 'mars'"),
    ({"name": "h-extra", "evil": True}, "unknown field(s) evil"),
    ({"name": "h-extra", LONG: 1}, "unknown field(s)"),
    ([{"name": "h-list"}], "JSON object"),
    (raw("null"), "JSON object"),
    (raw('"h-text"'), "JSON object"),
]


@pytest.mark.parametrize(("body", "fragment"), CREATE_CASES,
                         ids=[str(i) for i in range(len(CREATE_CASES))])
def test_create_refuses_hostile_bodies_and_changes_nothing(controller, body, fragment):
    before = state(controller)
    if isinstance(body, bytes):
        response = controller.http.post("/v1/environments", content=body)
    else:
        response = controller.http.post("/v1/environments", json=body)
    refused(response, fragment)
    assert state(controller) == before
    for node in ["west-1", "east-1"]:
        assert controller.heartbeat(node).status_code == 200


def test_rpo_limit_bounds_are_inclusive_and_reach_the_nodes_as_given(controller):
    for name, rpo in [("rpo-low", 1), ("rpo-high", 86_400), ("rpo-float", 86_400.0),
                      ("rpo-frac", 1.5)]:
        response = controller.create(name=name, type="basic", rpo_limit_seconds=rpo)
        assert response.status_code == 201, response.text
        assert json.dumps(response.json()["rpo_limit_seconds"]) == json.dumps(rpo)
        assert json.dumps(controller.desired("west-1")[name]["rpo_limit_seconds"]) == \
            json.dumps(rpo)


def test_failover_and_region_bodies_are_bounded(controller):
    assert controller.create(name="h-victim").status_code == 201
    before = state(controller)
    env = "/v1/environments/h-victim/failover"
    cases = [
        (env, {"mode": ["planned"]}, "invalid mode"),
        (env, {"mode": LONG}, "invalid mode"),
        (env, {"catch_up_timeout": HUGE}, "invalid catch_up_timeout"),
        (env, raw('{"catch_up_timeout": 1e400}'), "invalid catch_up_timeout inf"),
        (env, raw('{"catch_up_timeout": NaN}'), "invalid catch_up_timeout nan"),
        (env, {"catch_up_timeout": 0}, "above 0"),
        (env, {"catch_up_timeout": 31}, "at most 30"),
        (env, {"catch_up_timeout": True}, "invalid catch_up_timeout"),
        (env, {"catch_up_timeout": DEEP}, "invalid catch_up_timeout"),
        (env, {"mode": "planned", "why": "x"}, "unknown field(s) why"),
        (env, [], "JSON object"),
        ("/v1/regions/west/failover", {"parallelism": HUGE}, "invalid parallelism"),
        ("/v1/regions/west/failover", raw('{"parallelism": Infinity}'), "invalid parallelism"),
        ("/v1/regions/west/failover", {"parallelism": 0}, "from 1 to 256"),
        ("/v1/regions/west/failover", {"parallelism": 257}, "from 1 to 256"),
        ("/v1/regions/west/failover", {"parallelism": 1.5}, "invalid parallelism"),
        ("/v1/regions/west/failover", {"parallelism": "32"}, "invalid parallelism"),
        ("/v1/regions/west/failover", {"mode": {"forced": True}}, "invalid mode"),
        ("/v1/regions/west/failback", {"mode": "planned"}, "unknown field(s) mode"),
        ("/v1/regions/west/failback", {"parallelism": -HUGE}, "invalid parallelism"),
    ]
    for path, body, fragment in cases:
        if isinstance(body, bytes):
            response = controller.http.post(path, content=body)
        else:
            response = controller.http.post(path, json=body)
        refused(response, fragment)
    assert state(controller) == before
    assert controller.http.get("/v1/environments/h-victim").json()["state"] == "active"


def test_webhook_bodies_are_bounded_and_the_secret_never_echoed(controller):
    before = state(controller)
    secret = "a-secret-of-the-tenant-0123456789"
    hook = {"url": "https://example.com/hooks", "secret": secret}
    cases = [
        ({**hook, "url": HUGE}, "invalid url"),
        ({**hook, "url": "https://example.com/" + "p" * 3000}, "invalid url"),
        ({**hook, "url": ["https://example.com/"]}, "invalid url"),
        ({**hook, "url": {"$blob": "aHR0cDovL3g="}}, "invalid url"),
        ({**hook, "url": "https://example.com:99999/"}, "invalid url"),
        ({**hook, "url": "https://exa mple.com/"}, "invalid url"),
        ({**hook, "url": "https://example.com/\n"}, "invalid url"),
        ({**hook, "secret": HUGE}, "invalid secret"),
        ({**hook, "secret": "s" * 10_000}, "invalid secret"),
        ({**hook, "secret": secret[:15]}, "at least 16"),
        ({**hook, "environments": [HUGE]}, "invalid environments"),
        ({**hook, "environments": ["a-env"] * 1001}, "invalid environments"),
        ({**hook, "environments": DEEP}, "invalid environments"),
        ({**hook, "environments": {"a-env": True}}, "invalid environments"),
        ({**hook, "events": ["environment.created"]}, "unknown field(s) events"),
    ]
    for body, fragment in cases:
        message = refused(controller.http.post("/v1/webhooks", json=body), fragment)
        assert secret[:15] not in message
    assert state(controller) == before


QUERY_CASES = [
    ("/v1/events", {"after": str(HUGE)}, "invalid after"),
    ("/v1/events", {"after": "-1"}, "invalid after"),
    ("/v1/events", {"after": "1.5"}, "invalid after"),
    ("/v1/events", {"wait": "1e400"}, "invalid wait"),
    ("/v1/events", {"wait": "NaN"}, "invalid wait"),
    ("/v1/events", {"wait": "-Infinity"}, "invalid wait"),
    ("/v1/events", {"wait": LONG_QUERY}, "invalid wait"),
    ("/v1/events", {"since": "1"}, "unknown parameter(s) since"),
    ("/v1/operations", {"limit": str(HUGE)}, "invalid limit"),
    ("/v1/operations", {"limit": "0"}, "invalid limit"),
    ("/v1/operations", {"parent": LONG_QUERY}, "invalid parent"),
    ("/v1/operations", {"parent": "op-1"}, "invalid parent"),
    ("/v1/operations/op-000001", {"wait": "inf"}, "invalid wait"),
    ("/v1/operations/op-000001", {"wait": str(HUGE)}, "invalid wait"),
    ("/v1/operations/op-000001", {"sort": "asc"}, "unknown parameter(s) sort"),
    ("/internal/v1/routing", {"after": str(HUGE)}, "invalid after"),
    ("/internal/v1/routing", {"wait": "nan"}, "invalid wait"),
]


def test_query_parameters_are_bounded(controller):
    for path, params, fragment in QUERY_CASES:
        refused(controller.http.get(path, params=params), fragment)


def test_openapi_describes_every_control_body_with_its_bounds(controller):
    assert controller.http.get("/openapi.json", headers={"X-Tandem-Secret": "no"}
                                ).status_code == 401
    paths = controller.http.get("/openapi.json").json()["paths"]

    def body(path: str) -> dict:
        return paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]

    rpo = body("/v1/environments")["properties"]["rpo_limit_seconds"]
    assert [(b.get("minimum"), b.get("maximum")) for b in rpo["anyOf"]] == [(1, 86_400)] * 2
    assert body("/v1/environments")["additionalProperties"] is False
    assert body("/v1/webhooks")["properties"]["url"]["maxLength"] == 2048
    assert body("/v1/regions/{region}/failover")["properties"]["parallelism"]["maximum"] == 256
    assert "catch_up_timeout" in body("/v1/environments/{env}/failover")["properties"]
    events = {p["name"]: p["schema"] for p in paths["/v1/events"]["get"]["parameters"]}
    assert events["after"]["minimum"] == 0 and events["wait"]["maximum"] > 0


def test_a_stored_record_out_of_bounds_cannot_break_any_heartbeat(own_controller):
    """Records written before the bounds (issue 9, item 3: a 400-digit rpo_limit_seconds
    stored, then every node's heartbeat failed) are read within them."""
    ctl = own_controller.start()
    bad = {"old-huge": HUGE, "old-inf": float("inf"), "old-nan": float("nan"),
           "old-text": "soon", "old-zero": 0}
    for name in [*bad, "old-fine"]:
        assert ctl.create(name=name, rpo_limit_seconds=60).status_code == 201
    ctl.kill()
    with ctl.open_store() as store:
        for name, rpo in bad.items():
            value, version = store.get(f"environments/{name}")
            assert store.compare_and_set(f"environments/{name}", version,
                                         {**value, "rpo_limit_seconds": rpo})

    ctl.start()
    expected = {"old-huge": 86_400, "old-inf": 86_400, "old-nan": 900, "old-text": 900,
                "old-zero": 900, "old-fine": 60}
    for node, role in [("west-1", "primary"), ("east-1", "secondary")]:
        answer = ctl.desired(node)  # asserts 200
        assert {env: d["rpo_limit_seconds"] for env, d in answer.items()} == expected
        assert {d["role"] for d in answer.values()} == {role}
    for name, rpo in expected.items():
        view = ctl.http.get(f"/v1/environments/{name}")
        assert view.status_code == 200 and view.json()["rpo_limit_seconds"] == rpo
    assert ctl.http.get("/v1/environments").status_code == 200
    log = ctl.log()
    assert log.count("environment old-huge: its record holds rpo_limit_seconds") == 1
    assert "the controller uses 86400 instead" in log
