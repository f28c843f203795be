"""State survives SIGKILL of the controller; half-done creations and deletions finish."""

from __future__ import annotations

CATALOG_FIELDS = ["name", "type", "home_region", "primary_region", "epoch", "state",
                  "rpo_limit_seconds", "created_at"]


def catalog(ctl) -> dict[str, dict]:
    views = ctl.http.get("/v1/environments").json()["environments"]
    return {v["name"]: {**{f: v[f] for f in CATALOG_FIELDS},
                        "replicas": [(r["region"], r["node"], r["role"]) for r in v["replicas"]]}
            for v in views}


def test_state_survives_sigkill_and_restart(own_controller):
    ctl = own_controller.start()
    ctl.heartbeat("west-1")
    ctl.heartbeat("east-1")
    for body in [{"name": "keep-prod", "rpo_limit_seconds": 12},
                 {"name": "keep-box", "type": "sandbox", "region": "east"},
                 {"name": "keep-basic", "type": "basic"},
                 {"name": "gone"}]:
        assert ctl.create(**body).status_code == 201
    assert ctl.http.delete("/v1/environments/gone").status_code == 200
    before = catalog(ctl)
    routing_before = ctl.http.get("/internal/v1/routing").json()
    assert set(before) == {"keep-prod", "keep-box", "keep-basic"}

    ctl.kill()
    ctl.start()

    assert catalog(ctl) == before
    routing_after = ctl.http.get("/internal/v1/routing").json()
    assert routing_after["environments"] == routing_before["environments"]
    # A gateway polls on from the revision it has, so it must never go back. On etcd it
    # moves on (the election writes, and etcd counts every write of the cluster); SQLite
    # has no election: its restart writes nothing.
    assert routing_after["revision"] >= routing_before["revision"]
    if ctl.deployment.store["kind"] == "sqlite":
        assert routing_after["revision"] == routing_before["revision"]
    regions = ctl.http.get("/v1/regions").json()["regions"]
    assert [(r["name"], r["pair"]) for r in regions] == [("west", "east"), ("east", "west")]
    # Health is in memory: nobody is healthy until the nodes heartbeat again.
    assert not any(n["healthy"] for r in regions for n in r["nodes"])
    # The answers to heartbeats come from the stored catalog.
    assert set(ctl.desired("west-1")) == {"keep-prod", "keep-basic"}
    assert set(ctl.desired("east-1")) == {"keep-prod", "keep-box"}
    # The store goes on: duplicates are still refused, new names accepted.
    assert ctl.create(name="keep-prod").status_code == 409
    assert ctl.create(name="after-restart", type="basic").status_code == 201
    assert ctl.http.get("/internal/v1/routing").json()["revision"] > routing_before["revision"]


def test_half_done_creation_and_deletion_finish_at_start(own_controller):
    ctl = own_controller.start()
    assert ctl.create(name="half-made", type="basic").status_code == 201
    assert ctl.create(name="half-gone", type="basic").status_code == 201
    ctl.kill()
    # Put the records in the states a crash in the middle of a request would leave.
    with ctl.open_store() as store:
        for name, state in [("half-made", "creating"), ("half-gone", "deleting")]:
            value, version = store.get(f"environments/{name}")
            assert store.compare_and_set(f"environments/{name}", version,
                                         {**value, "state": state})

    ctl.start()
    assert ctl.http.get("/v1/environments/half-made").json()["state"] == "active"
    assert ctl.http.get("/v1/environments/half-gone").status_code == 404
    log = ctl.log()
    assert "environment half-made (epoch 1): marked active; a previous run stopped" in log
    assert "environment half-gone (epoch 1): record removed; a previous run stopped" in log
