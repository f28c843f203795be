"""The controller process: environments over HTTP, heartbeats, views and auth."""

from __future__ import annotations

import httpx


def test_healthz_needs_no_secret_and_metrics_the_token(controller):
    health = httpx.get(f"{controller.url}/healthz").json()
    assert {k: health[k] for k in ("ok", "component", "name", "leading", "leader")} == {
        "ok": True, "component": "controller", "name": "controller", "leading": True,
        "leader": "controller"}
    assert httpx.get(f"{controller.url}/metrics").status_code == 401  # it names environments
    token = {"Authorization": f"Bearer {controller.deployment.token}"}
    metrics = httpx.get(f"{controller.url}/metrics", headers=token)
    assert metrics.status_code == 200 and "tandem_controller_healthy_nodes" in metrics.text


def test_secret_is_required(controller):
    for method, path in [("GET", "/v1/regions"), ("GET", "/v1/environments"),
                         ("POST", "/v1/environments"), ("GET", "/v1/environments/x"),
                         ("DELETE", "/v1/environments/x"), ("POST", "/internal/v1/heartbeat"),
                         ("GET", "/internal/v1/routing")]:
        for headers in [{}, {"X-Tandem-Secret": "wrong"}]:
            response = httpx.request(method, f"{controller.url}{path}", headers=headers,
                                     json={"name": "sneaky"})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
    assert controller.http.get("/v1/environments/sneaky").status_code == 404


def test_regions(controller):
    regions = controller.http.get("/v1/regions").json()["regions"]
    assert [(r["name"], r["pair"], r["state"]) for r in regions] == [
        ("west", "east", "healthy"), ("east", "west", "healthy")]
    west_node = regions[0]["nodes"][0]
    assert west_node["name"] == "west-1"
    assert west_node["url"] == controller.deployment.node_url("west-1")
    assert set(west_node) == {"name", "url", "healthy", "health", "last_heartbeat_age"}


def test_create_production_places_primary_home_and_secondary_in_pair(controller):
    # Nodes are not listening: creation must still succeed.
    response = controller.create(name="acme", type="production", region="west",
                                 rpo_limit_seconds=30)
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["name"] == "acme" and view["type"] == "production"
    assert (view["home_region"], view["primary_region"]) == ("west", "west")
    assert (view["epoch"], view["state"], view["rpo_limit_seconds"]) == (1, "active", 30)
    assert view["created_at"].endswith("Z")
    assert [(r["region"], r["node"], r["role"]) for r in view["replicas"]] == [
        ("west", "west-1", "primary"), ("east", "east-1", "secondary")]
    assert view["primary_lsn"] is None  # no heartbeat reported it yet
    for replica in view["replicas"]:
        assert {"applied_lsn", "lag_entries", "lag_seconds", "seeding"} <= set(replica)
    assert controller.http.get("/v1/environments/acme").json() == view
    log = controller.log()
    assert "environment acme (epoch 1): recorded as creating" in log
    assert "could not reach west-1" in log
    assert "environment acme (epoch 1): active" in log


def test_create_in_the_other_region_and_single_copy_types(controller):
    east = controller.create(name="east-prod", region="east").json()
    assert [(r["node"], r["role"]) for r in east["replicas"]] == [
        ("east-1", "primary"), ("west-1", "secondary")]
    for kind in ["sandbox", "basic"]:
        response = controller.create(name=f"a-{kind}", type=kind)
        assert response.status_code == 201, response.text
        view = response.json()
        assert view["type"] == kind and view["home_region"] == "west"
        assert view["rpo_limit_seconds"] == 900
        assert [(r["node"], r["role"]) for r in view["replicas"]] == [("west-1", "primary")]
    names = [v["name"] for v in controller.http.get("/v1/environments").json()["environments"]]
    assert {"east-prod", "a-sandbox", "a-basic"} <= set(names)


def test_validation_errors_change_nothing(controller):
    cases = [({"name": "Bad_Name"}, "invalid environment name"),
             ({"name": "ok-name", "type": "gold"}, "invalid environment type"),
             ({"name": "ok-name", "region": "mars"}, "unknown region 'mars'"),
             ({"name": "ok-name", "rpo_limit_seconds": 0}, "rpo_limit_seconds")]
    for body, fragment in cases:
        response = controller.create(**body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "bad_request" and fragment in error["message"]
    not_json = controller.http.post("/v1/environments", content=b"{nope")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.text
    assert controller.http.get("/v1/environments/ok-name").status_code == 404


def test_duplicate_is_409_and_keeps_the_first(controller):
    assert controller.create(name="dup", type="sandbox").status_code == 201
    again = controller.create(name="dup", type="production", region="east")
    assert again.status_code == 409 and again.json()["error"]["code"] == "exists"
    assert controller.http.get("/v1/environments/dup").json()["type"] == "sandbox"


def test_unknown_environment_is_404(controller):
    for method in ["GET", "DELETE"]:
        response = controller.http.request(method, "/v1/environments/ghost")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_heartbeat_answers_the_desired_replicas(controller):
    west_url, east_url = "http://127.0.0.1:1111", "http://127.0.0.1:2222"
    assert controller.heartbeat("west-1", url=west_url).status_code == 200
    assert controller.heartbeat("east-1", url=east_url).status_code == 200
    assert controller.create(name="hb-prod", rpo_limit_seconds=60).status_code == 201
    assert controller.create(name="hb-basic", type="basic", region="east").status_code == 201

    west = controller.desired("west-1", url=west_url)
    version = west["hb-prod"]["version"]  # the catalog record's store version
    assert version > 0
    assert west["hb-prod"] == {
        "env": "hb-prod", "role": "primary", "epoch": 1, "type": "production",
        "rpo_limit_seconds": 60, "primary": None,
        "secondaries": [{"node": "east-1", "region": "east", "url": east_url,
                         "sync": False}],
        "version": version, "vouch": False}
    assert "hb-basic" not in west
    east = controller.desired("east-1", url=east_url)
    assert east["hb-prod"] == {
        "env": "hb-prod", "role": "secondary", "epoch": 1, "type": "production",
        "rpo_limit_seconds": 60, "primary": {"node": "west-1", "region": "west",
                                             "url": west_url},
        "secondaries": [], "version": version, "vouch": True}  # its pulls keep west's failsafe
    assert east["hb-basic"]["role"] == "primary" and east["hb-basic"]["secondaries"] == []
    # Every environment in the catalog is in exactly the answers of its replicas' nodes.
    catalog = controller.http.get("/v1/environments").json()["environments"]
    for node, answer in [("west-1", west), ("east-1", east)]:
        expected = {v["name"]: r["role"] for v in catalog for r in v["replicas"]
                    if r["node"] == node}
        assert {env: d["role"] for env, d in answer.items()} == expected
    # The routing table follows the reported URLs.
    table = controller.http.get("/internal/v1/routing").json()
    assert table["environments"]["hb-prod"]["replicas"]["west"]["url"] == west_url
    # Put the deployment's URLs back for the other tests.
    controller.heartbeat("west-1")
    controller.heartbeat("east-1")


def test_view_merges_live_status_from_heartbeats(controller):
    assert controller.create(name="live").status_code == 201
    controller.heartbeat("west-1", {"live": {
        "role": "primary", "epoch": 1, "last_lsn": 42, "seeding": None,
        "consumers": {"east-1": {"acked_lsn": 40, "lag_entries": 2, "lag_seconds": 0.03}}}})
    controller.heartbeat("east-1", {"live": {
        "role": "secondary", "epoch": 1, "last_lsn": 40,
        "seeding": {"bytes_done": 10, "bytes_total": 100}}})
    view = controller.http.get("/v1/environments/live").json()
    assert view["primary_lsn"] == 42
    primary, secondary = view["replicas"]
    assert (primary["applied_lsn"], primary["lag_entries"], primary["lag_seconds"]) == (42, 0, 0)
    assert (secondary["applied_lsn"], secondary["lag_entries"],
            secondary["lag_seconds"]) == (40, 2, 0.03)
    assert secondary["seeding"] == {"bytes_done": 10, "bytes_total": 100}
    listed = {v["name"]: v for v in controller.http.get("/v1/environments").json()
              ["environments"]}
    assert listed["live"]["primary_lsn"] == 42


def test_bad_heartbeats_are_refused(controller):
    bad = [{"node": "north-1", "region": "west", "url": "http://x", "replicas": {}},
           {"node": "west-1", "region": "east", "url": "http://x", "replicas": {}},
           {"node": "west-1", "region": "west", "url": "ftp://x", "replicas": {}},
           {"node": "west-1", "region": "west", "url": "http://x", "replicas": []}]
    for body in bad:
        response = controller.http.post("/internal/v1/heartbeat", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "bad_request"


def test_delete_removes_the_env_and_drops_it_from_heartbeat_answers(controller):
    assert controller.create(name="doomed").status_code == 201
    assert "doomed" in controller.desired("east-1")
    response = controller.http.delete("/v1/environments/doomed")
    assert response.status_code == 200 and response.json() == {"deleted": "doomed"}
    assert controller.http.get("/v1/environments/doomed").status_code == 404
    assert "doomed" not in controller.desired("east-1")
    assert "doomed" not in controller.desired("west-1")
    assert "doomed" not in controller.http.get("/internal/v1/routing").json()["environments"]
    assert "environment doomed (epoch 1): deleted" in controller.log()
    # The name is free again.
    assert controller.create(name="doomed", type="basic").status_code == 201


def test_reconciliation_logs_each_difference_once(controller):
    assert controller.create(name="recon", type="basic").status_code == 201
    for _ in range(3):
        controller.heartbeat("west-1", {"stray": {"role": "primary", "epoch": 1}})
    log = controller.log()
    assert log.count("environment recon (epoch 1): node west-1 does not host its primary "
                     "replica yet") == 1
    assert log.count("environment stray: node west-1 hosts a replica the catalog does not "
                     "place there") == 1



def test_a_deleting_environment_leaves_heartbeat_answers_and_routing(controller):
    """While `deleting`, nodes are told to drop it and the gateway stops routing to it."""
    assert controller.create(name="leaving").status_code == 201
    assert "leaving" in controller.desired("east-1")
    # Another writer on the same store, as a second controller would be.
    with controller.open_store() as store:
        value, version = store.get("environments/leaving")
        assert store.compare_and_set("environments/leaving", version,
                                     {**value, "state": "deleting"})
    assert controller.http.get("/v1/environments/leaving").json()["state"] == "deleting"
    assert "leaving" not in controller.desired("east-1")
    assert "leaving" not in controller.desired("west-1")
    assert "leaving" not in controller.http.get("/internal/v1/routing").json()["environments"]
