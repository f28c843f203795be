"""Region-wide planned failover and failback under load, with signed webhooks.

Three production environments live in west (two with writers), one in east, and a basic one
in west that cannot move. `region failover west` moves the three, `region failback west`
brings them home; the tenant's webhook receiver (a real HTTP server that fails its first
deliveries) sees every failover and failback event signed, exactly once after deduplication.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until
from tests.receiver import SECRET, Receiver

HOME = ["rg-a", "rg-b", "rg-c"]


@pytest.fixture(scope="module")
def cluster(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    """The receiver listens on 127.0.0.1: a deployment that allows private webhook targets."""
    return start_deployment("deployment", allow_private_webhooks=True)


def region_state(cluster: LocalDeployment, name: str) -> str:
    return next(r for r in cluster.client.regions() if r["name"] == name)["state"]


def run(cluster: LocalDeployment, op: dict) -> dict:
    done = cluster.client.wait_operation(op["id"], timeout=90)
    assert done["state"] == "succeeded", done
    children = cluster.client.operations(parent=op["id"], limit=100)
    assert sorted(c["target"] for c in children) == HOME
    assert all(c["state"] == "succeeded" for c in children)
    return done


def test_region_failover_and_failback_under_load(cluster: LocalDeployment):
    client = cluster.client
    receiver = Receiver(fail_first=2)
    try:
        client.create_webhook(receiver.url, SECRET, environments=HOME)
        for name in HOME:
            client.create_environment(name, region="west")
        client.create_environment("rg-east", region="east")
        client.create_environment("rg-basic", type="basic", region="west")
        writers = [IdWriter(client, name) for name in HOME[:2]]
        for writer in writers:
            writer.create_table(keyed=False)
            writer.start()
        time.sleep(0.5)

        over = run(cluster, client.region_failover("west", parallelism=2))
        result = over["result"]
        assert (result["succeeded"], result["failed"]) == (3, 0)
        assert all(line["to_region"] == "east" and line["data_loss"] == 0 and line["epoch"] == 2
                   for line in result["environments"])
        assert region_state(cluster, "west") == "failed-over"
        primaries = {e["name"]: e["primary_region"] for e in client.environments()}
        assert primaries == {"rg-a": "east", "rg-b": "east", "rg-c": "east",
                             "rg-east": "east", "rg-basic": "west"}
        time.sleep(0.5)

        back = run(cluster, client.region_failback("west"))
        assert back["result"]["succeeded"] == 3
        assert all(line["to_region"] == "west" and line["epoch"] == 3
                   for line in back["result"]["environments"])
        assert region_state(cluster, "west") == "healthy"
        time.sleep(0.3)
        for writer in writers:
            writer.stop()

        for writer in writers:
            assert writer.acked and not writer.failed, writer.failed[:5]
            assert writer.epochs == sorted(writer.epochs)
            poll_until(lambda w=writer: caught_up(client, w.env), what="caught up")
            writer.check(client)
            lsn = client.environment(writer.env)["primary_lsn"]
            writer.check(client, region="east", min_lsn=lsn)
            assert client.checksum(writer.env, region="west")["total"] == \
                client.checksum(writer.env, region="east")["total"]
        assert client.environment("rg-east")["epoch"] == 1  # not touched

        region_events = [e for e in client.events(after=0)["events"]
                         if e["type"] == "region.state_changed" and e["region"] == "west"]
        assert [(e["data"]["from"], e["data"]["to"]) for e in region_events] == [
            ("healthy", "failing-over"), ("failing-over", "failed-over"),
            ("failed-over", "failing-back"), ("failing-back", "healthy")]

        expected = {(name, kind) for name in HOME for kind in
                    ("failover.started", "failover.completed", "failback.started",
                     "failback.completed")}

        def delivered() -> set[tuple[str, str]]:
            return {(e["environment"], e["type"]) for e in receiver.delivered().values()
                    if e["type"].startswith(("failover.", "failback."))}

        poll_until(lambda: delivered() == expected, timeout=30, what="webhook deliveries")
        receiver.check_signatures()
        events = list(receiver.delivered().values())
        pairs = [(e["environment"], e["type"]) for e in events
                 if e["type"] != "environment.created"]
        assert len(pairs) == len(set(pairs)) == len(expected)  # exactly once after dedupe
    finally:
        receiver.close()
