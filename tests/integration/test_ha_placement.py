"""Local HA placement (docs/ha.md, "Records"): with 2 nodes per region every environment gets
a local secondary on the other node of its home region, recorded `sync: true`, and the
operations of today keep working with it there.

Real processes (the harness); a writer with unique ids writes through the gateway. Each
replica's checksum is read on its own node, so the local secondary is checked as itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tandemdb.client import Client
from tandemdb.testing import IdWriter, LocalDeployment, caught_up, poll_until


@pytest.fixture(scope="module")
def ha(start_deployment) -> Iterator[LocalDeployment]:
    yield start_deployment("ha", nodes_per_region=2)


def replicas(client: Client, env: str) -> dict[str, dict]:
    """The environment's replicas as its answer shows them, by node."""
    return {r["node"]: r for r in client.environment(env)["replicas"]}


def ask_checksum(cluster: LocalDeployment, node: str, env: str) -> httpx.Response:
    url = cluster.deployment.node_url(node)
    return httpx.get(f"{url}/internal/v1/replicas/{env}/checksum",
                     headers={"X-Tandem-Secret": cluster.deployment.secret}, timeout=10)


def node_checksum(cluster: LocalDeployment, node: str, env: str) -> dict:
    """The checksum of `env`'s replica on `node`, asked of that node itself."""
    answer = ask_checksum(cluster, node, env)
    answer.raise_for_status()
    return answer.json()


def all_equal(cluster: LocalDeployment, env: str) -> None:
    """Once every secondary has applied the primary's lsn, every replica has the same
    checksum at that lsn."""
    client = cluster.client
    poll_until(lambda: caught_up(client, env), what=f"the secondaries of {env} caught up")
    sums = {node: node_checksum(cluster, node, env) for node in replicas(client, env)}
    assert len({(s["lsn"], s["total"]) for s in sums.values()}) == 1, sums


def create_in_west(client: Client, env: str) -> tuple[str, str]:
    """Create a production environment in west; (its primary's node, its local
    secondary's node)."""
    view = client.create_environment(env, region="west")
    return (view["replicas"][0]["node"],
            next(r["node"] for r in view["replicas"] if r["kind"] == "local"))


def move(client: Client, env: str) -> dict:
    done = client.wait_operation(client.failover(env)["id"], timeout=60)
    assert done["state"] == "succeeded", done
    return done["result"]["environments"][0]


def test_every_environment_gets_a_sync_local_secondary(ha: LocalDeployment):
    client = ha.client
    west = set(ha.deployment.nodes_in("west"))
    for env, kind in (("ha-prod", "production"), ("ha-basic", "basic")):
        view = client.create_environment(env, type=kind, region="west")
        by_role = {(r["role"], r["kind"]): r for r in view["replicas"]}
        primary = by_role[("primary", "geo")]
        local = by_role[("secondary", "local")]
        assert {primary["node"], local["node"]} == west  # the other west node
        assert local["region"] == "west" and local["sync"] is True
        assert primary["sync"] is False
        geo = by_role.get(("secondary", "geo"))
        if kind == "production":
            assert geo is not None and geo["region"] == "east" and geo["sync"] is False
            assert len(view["replicas"]) == 3
        else:
            assert geo is None and len(view["replicas"]) == 2

    for env in ("ha-prod", "ha-basic"):
        writer = IdWriter(client, env)
        writer.create_table(keyed=False)
        writer.start()
        try:
            poll_until(lambda w=writer: len(w.acked) >= 40, what=f"40 writes to {env}")
        finally:
            writer.stop()
        assert not writer.failed, writer.failed[:5]
        writer.check(client)
        all_equal(ha, env)


def test_planned_failover_to_the_pair_and_back_loses_nothing(ha: LocalDeployment):
    client = ha.client
    env = "ha-move"
    home, local = create_in_west(client, env)
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 10, what="writes before the failover")
        over = move(client, env)
        assert (over["to_region"], over["data_loss"], over["epoch"]) == ("east", 0, 2)
        moved = replicas(client, env)
        # The local replica stays where it is, a secondary of the new primary in the pair,
        # and is no longer recorded sync: a primary in east never waits for it.
        assert moved[local]["role"] == "secondary" and moved[local]["kind"] == "local"
        assert moved[local]["sync"] is False
        assert moved[home]["role"] == "secondary" and moved[home]["kind"] == "geo"
        assert [r["node"] for r in moved.values() if r["role"] == "primary"] != [home]
        count = len(writer.acked)
        poll_until(lambda: len(writer.acked) > count + 10, what="writes in east")
        back = move(client, env)
        assert (back["to_region"], back["data_loss"], back["epoch"]) == ("west", 0, 3)
        count = len(writer.acked)
        poll_until(lambda: len(writer.acked) > count + 10, what="writes back home")
    finally:
        writer.stop()
    assert writer.acked and not writer.failed, writer.failed[:5]
    assert writer.epochs == sorted(writer.epochs) and writer.epochs[-1] == 3
    final = replicas(client, env)
    assert final[home]["role"] == "primary" and final[local]["kind"] == "local"
    # Home again, the primary regains sync with its local secondary (the node asks the
    # controller once the replica holds everything acknowledged): true in the catalog.
    poll_until(lambda: replicas(client, env)[local]["sync"] is True, timeout=30,
               what="the local secondary recorded sync again after the failback")
    writer.check(client)
    all_equal(ha, env)


def test_region_failover_and_failback_with_local_replicas(ha: LocalDeployment):
    """Every production environment of west moves to east and home again; a basic one,
    with only its local secondary, stays; nothing is lost."""
    client = ha.client
    client.create_environment("ha-region-a", region="west")
    client.create_environment("ha-region-b", type="basic", region="west")
    writer = IdWriter(client, ["ha-region-a", "ha-region-b"])
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: min(writer.acked_per_env().values(), default=0) > 5,
                   what="writes to both environments")
        over = client.wait_operation(client.region_failover("west")["id"], timeout=120)
        assert over["state"] == "succeeded", over
        assert client.environment("ha-region-a")["primary_region"] == "east"
        assert client.environment("ha-region-b")["primary_region"] == "west"
        back = client.wait_operation(client.region_failback("west")["id"], timeout=120)
        assert back["state"] == "succeeded", back
        count = len(writer.acked)
        poll_until(lambda: len(writer.acked) > count + 10, what="writes after the failback")
    finally:
        writer.stop()
    assert not writer.failed, writer.failed[:5]
    for env in ("ha-region-a", "ha-region-b"):
        view = client.environment(env)
        assert view["primary_region"] == "west" and view["state"] == "active"
        assert [r["kind"] for r in view["replicas"]].count("local") == 1
        writer.check(client, env=env)
        all_equal(ha, env)


def test_delete_drops_every_replica(ha: LocalDeployment):
    client = ha.client
    view = client.create_environment("ha-gone", type="sandbox", region="east")
    nodes = [r["node"] for r in view["replicas"]]
    assert set(nodes) == set(ha.deployment.nodes_in("east"))
    assert all(ask_checksum(ha, node, "ha-gone").status_code == 200 for node in nodes)
    client.delete_environment("ha-gone")
    assert "ha-gone" not in {v["name"] for v in client.environments()}
    assert all(ask_checksum(ha, node, "ha-gone").status_code == 404 for node in nodes)
