"""A region lost without warning: detected after grace_seconds, forced over, brought back.

The west node is SIGKILLed under load. The controller stops hearing it and east's streams
from it fail; after `grace_seconds` both agree and the controller runs a forced region
failover on its own. Checked: every write acknowledged at or below each fork point
survives (4, 5), writes resume in east in epoch 2 (2, 3), tenants get `failover.data_loss`,
and when west returns its replicas rejoin with their lost writes kept, and the region fails
back home without further loss. With `grace_seconds` off, nothing happens by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until

GRACE, LEASE_TTL = 2.0, 1.5
ENVS = ["out-a", "out-b"]


@pytest.fixture(scope="module")
def watched(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("outage", lease_ttl=LEASE_TTL, grace_seconds=GRACE)


def region(c: LocalDeployment, name: str) -> dict:
    return next(r for r in c.client.regions() if r["name"] == name)


def test_a_lost_region_is_detected_failed_over_and_brought_back(watched: LocalDeployment):
    client = watched.client
    for env in ENVS:
        client.create_environment(env, region="west")
    client.sql(ENVS[1], "CREATE TABLE quiet(id INTEGER PRIMARY KEY)")  # an idle one
    writer = IdWriter(client, ENVS[0])
    writer.create_table(keyed=False)
    writer.start()
    west = watched.node_of("west")
    try:
        poll_until(lambda: (client.environment(ENVS[0])["primary_lsn"] or 0) > 20,
                   what="writes the controller has heard of")
        watched.kill(west)
        killed = time.monotonic()
        poll_until(lambda: region(watched, "west")["state"] == "failed-over", timeout=40,
                   what="the automatic forced failover of west")
        assert time.monotonic() - killed >= GRACE
        op = client.operation(region(watched, "west")["operation"], wait=30)
        assert (op["kind"], op["params"]["mode"], op["state"]) == ("region.failover",
                                                                   "forced", "succeeded")
        assert op["result"]["succeeded"] == len(ENVS)
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes resumed in east")
    finally:
        writer.stop()
    for env in ENVS:
        view = client.environment(env)
        assert (view["primary_region"], view["epoch"]) == ("east", 2)
    events = client.events(after=0)["events"]
    assert {e["environment"] for e in events if e["type"] == "failover.data_loss"} == set(ENVS)
    forks = {e["environment"]: e["data"]["fork_lsn"] for e in events
             if e["type"] == "failover.data_loss"}
    ids = {r[0] for r in client.sql(ENVS[0], "SELECT id FROM events")["results"][0]["rows"]}
    for i, lsn, epoch in zip(writer.acked, writer.lsns, writer.epochs, strict=True):
        assert i in ids or (epoch == 1 and lsn > forks[ENVS[0]]), (i, lsn, epoch)

    # West returns: its replicas rejoin (rewound, lost writes kept), then it fails back.
    watched.start(west)
    poll_until(lambda: all(not any(r.get("behind") for r in client.environment(e)["replicas"])
                           for e in ENVS), timeout=40, what="west's replicas to rejoin")
    missing = {i for i, lsn, epoch in zip(writer.acked, writer.lsns, writer.epochs,
                                          strict=True) if i not in ids}
    kept = {c["after"]["id"] for b in client.lost(ENVS[0])["bundles"] for e in b["entries"]
            for c in e["changes"] if c["table"] == "events" and c["op"] == "insert"}
    # The lost writes are exactly the acknowledged ids that are missing, plus at most the
    # writes whose answer never came (in flight at the SIGKILL: committed, not known).
    unknown = {i for i, _ in writer.failed}
    assert missing <= kept and kept - missing <= unknown, (missing ^ kept)
    for env in ENVS:
        poll_until(lambda e=env: caught_up(client, e), timeout=30, what=f"{env} caught up")
    back = client.wait_operation(client.region_failback("west")["id"], timeout=60)
    assert back["state"] == "succeeded", back
    assert region(watched, "west")["state"] == "healthy"
    changes = [(e["data"]["from"], e["data"]["to"]) for e in client.events(after=0)["events"]
               if e["type"] == "region.state_changed" and e["region"] == "west"]
    assert changes == [("healthy", "failing-over"), ("failing-over", "failed-over"),
                       ("failed-over", "failing-back"), ("failing-back", "healthy")]
    assert {r[0] for r in client.sql(ENVS[0], "SELECT id FROM events")["results"][0]
            ["rows"]} == ids


def test_with_grace_off_nothing_fails_over_by_itself(tmp_path_factory):
    with LocalDeployment.temporary(tmp_path_factory.mktemp("no-grace"), lease_ttl=LEASE_TTL,
                                   grace_seconds=None) as c:
        c.client.create_environment("manual", region="west")
        c.kill(c.node_of("west"))
        time.sleep(3 * GRACE)
        assert region(c, "west")["state"] == "healthy"
        assert c.client.environment("manual")["primary_region"] == "west"
        assert not [o for o in c.client.operations() if o["kind"] == "region.failover"]
