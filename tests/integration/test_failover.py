"""Planned failover and failback of one environment under load, and a failover that fails.

Real processes; a writer with unique ids writes through the gateway the whole time. Each
test checks the invariants it touches (docs/design.md): every acknowledged id present exactly
once and nothing written twice (1, 5), replicas equal afterwards (6), epochs only grow and
the old primary refuses writes (2, 3), and the events tell tenants what happened.
"""

from __future__ import annotations

import signal
import time

import httpx

from tandemdb.client import Client
from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until


def events_for(client: Client, env: str) -> list[str]:
    return [e["type"] for e in client.events(after=0)["events"] if e["environment"] == env]


def direct_write(cluster: LocalDeployment, region: str, env: str) -> httpx.Response:
    """A write sent straight to that region's node, past the gateway."""
    url = cluster.deployment.node_url(cluster.node_of(region))
    return httpx.post(f"{url}/v1/environments/{env}/sql",
                      headers={"X-Tandem-Secret": cluster.deployment.secret},
                      json={"statements": [{"sql": "INSERT INTO events(id) VALUES (-1)"}]})


def move(client: Client, env: str) -> dict:
    op = client.failover(env)
    assert op["kind"] == "environment.failover" and op["state"] in ("pending", "running")
    done = client.wait_operation(op["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert [s["state"] for s in done["steps"]] == ["succeeded"] * len(done["steps"])
    return done


def settle_and_check(client: Client, writer: IdWriter) -> None:
    poll_until(lambda: caught_up(client, writer.env), what="secondary caught up")
    writer.check(client)
    lsn = client.environment(writer.env)["primary_lsn"]
    for region in ("west", "east"):
        writer.check(client, region=region, min_lsn=lsn)
    sums = {region: client.checksum(writer.env, region=region)["total"]
            for region in ("west", "east")}
    assert sums["west"] == sums["east"], sums


def test_planned_failover_and_failback_under_load(cluster: LocalDeployment):
    client = cluster.client
    env = "fo-one"
    client.create_environment(env, region="west")
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    writer.start()
    try:
        time.sleep(0.5)
        over = move(client, env)
        line = over["result"]["environments"][0]
        assert (line["from_region"], line["to_region"], line["epoch"]) == ("west", "east", 2)
        assert line["data_loss"] == 0 and line["final_lsn"] > 1
        assert line["rto_seconds"] > 0
        time.sleep(0.5)
        view = client.environment(env)
        assert (view["primary_region"], view["epoch"], view["state"]) == ("east", 2, "active")
        # The old primary is a secondary now: a direct write is refused and changes nothing.
        refused = direct_write(cluster, "west", env)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] in ("not_primary", "fenced")

        back = move(client, env)
        line = back["result"]["environments"][0]
        assert (line["from_region"], line["to_region"], line["epoch"]) == ("east", "west", 3)
        time.sleep(0.5)
    finally:
        writer.stop()
    assert writer.acked and not writer.failed, writer.failed[:5]  # held, never refused
    assert writer.epochs == sorted(writer.epochs) and writer.epochs[-1] == 3
    assert direct_write(cluster, "east", env).status_code == 409
    settle_and_check(client, writer)
    assert events_for(client, env) == ["environment.created", "failover.started",
                                       "failover.completed", "failback.started",
                                       "failback.completed"]


def test_failover_that_cannot_catch_up_rolls_back(cluster: LocalDeployment):
    """The secondary's node is frozen: the failover fails cleanly and the old primary takes
    writes again in its old epoch; nothing acknowledged is lost."""
    client = cluster.client
    env = "fo-stuck"
    client.create_environment(env, region="west")
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    writer.start()
    east = cluster.node_of("east")
    try:
        time.sleep(0.3)
        cluster.signal(east, signal.SIGSTOP)
        try:
            op = client.failover(env, catch_up_timeout=1.0)
            done = client.wait_operation(op["id"], timeout=60)
        finally:
            cluster.signal(east, signal.SIGCONT)
        assert done["state"] == "failed", done
        assert done["error"]["code"] in ("catch_up_timeout", "catch_up_failed"), done["error"]
        assert "unfenced" in done["error"]["message"] or "unfence" in done["error"]["message"]
        acked_before = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked_before + 5, what="writes accepted again")
    finally:
        writer.stop()
    view = client.environment(env)
    assert (view["primary_region"], view["epoch"], view["state"]) == ("west", 1, "active")
    assert set(writer.epochs) == {1}
    settle_and_check(client, writer)
    kinds = events_for(client, env)
    assert kinds[-2:] == ["failover.started", "failover.failed"], kinds


def test_failover_refusals_change_nothing(cluster: LocalDeployment):
    client = cluster.client
    client.create_environment("fo-basic", type="basic", region="west")
    for env, body, status, code in [
        ("fo-basic", {"mode": "planned"}, 409, "no_secondary"),
        ("fo-missing", {"mode": "planned"}, 404, "not_found"),
        ("fo-basic", {"mode": "sideways"}, 400, "bad_request"),
        ("fo-basic", {"catch_up_timeout": -1}, 400, "bad_request"),
        ("fo-basic", {"extra": 1}, 400, "bad_request"),
    ]:
        answer = client._http.post(f"/v1/environments/{env}/failover", json=body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
    answer = client._http.post("/v1/regions/nowhere/failover", json={})
    assert answer.status_code == 404
    answer = client._http.post("/v1/regions/west/failover", json={"parallelism": 0})
    assert answer.status_code == 400
    view = client.environment("fo-basic")
    assert (view["epoch"], view["state"], view["primary_region"]) == (1, "active", "west")
