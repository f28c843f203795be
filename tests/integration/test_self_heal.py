"""Self-healing (docs/ha.md, "Self-healing") with real processes, 3 nodes per region and
`replace_after_seconds` 3: a node that stays down has its replicas re-created on the
region's other nodes while writes go on.

- A node holding secondaries is SIGKILLed: every environment gets a new local secondary,
  which its primary makes sync again; nothing acknowledged is lost, the replicas are equal,
  and the node, once back, drops the replicas the catalog no longer places on it.
- A node holding a primary is SIGKILLed: the node failover promotes the sync local
  secondary, healing adds a new local secondary beside the fenced old primary, and when
  the node is back that old primary rejoins (its unacknowledged writes kept) and is then
  deleted, since it was replaced meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, poll_until

from .test_ha_placement import all_equal, ask_checksum, create_in_west, replicas

AFTER = 3.0  # replace_after_seconds


@pytest.fixture(scope="module")
def ha(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("self-heal", nodes_per_region=3, replace_after_seconds=AFTER)


def sync_local(cluster: LocalDeployment, env: str) -> str | None:
    """The node of the environment's sync local secondary, if it has one."""
    return next((n for n, r in replicas(cluster.client, env).items()
                 if r["kind"] == "local" and r["role"] == "secondary" and r["sync"]), None)


def events(cluster: LocalDeployment, kind: str, env: str) -> list[dict]:
    return [e for e in cluster.client.events(after=0)["events"]
            if e["type"] == kind and e["environment"] == env]


def dropped(cluster: LocalDeployment, node: str, env: str) -> bool:
    """The node itself no longer hosts a replica of `env`."""
    return ask_checksum(cluster, node, env).status_code == 404


def test_a_lost_node_s_secondaries_are_re_created_elsewhere(ha: LocalDeployment):
    client, envs = ha.client, ["heal-a", "heal-b"]
    for env in envs:
        client.create_environment(env, region="west")
    placed = {env: replicas(client, env) for env in envs}
    victim = next(n for n in ha.deployment.nodes_in("west")
                  if any(n in p for p in placed.values())
                  and all(p.get(n, {}).get("role") != "primary" for p in placed.values()))
    writer = IdWriter(client, envs)
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 40, what="writes before the node is lost")
        ha.kill(victim)
        for env in envs:
            poll_until(lambda env=env: sync_local(ha, env) not in (None, victim),
                       timeout=60, what=f"{env}: a new sync local secondary")
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 20, what="writes after the healing")
    finally:
        writer.stop()
    for env in envs:
        now = replicas(client, env)
        assert victim not in now and len(now) == len(placed[env]), now
        writer.check(client, env)  # every acknowledged id present exactly once
        all_equal(ha, env)
    moved = {e["environment"]: e["data"] for env in envs
             for e in events(ha, "replica.replaced", env)}
    held = {env for env in envs if victim in placed[env]}
    assert set(moved) == held
    assert all(d["from_node"] == victim and d["to_node"] != victim for d in moved.values())
    heals = [o for o in client.operations(limit=50)
             if o["kind"] == "node.heal" and o["target"] == victim]
    assert len(heals) == 1 and heals[0]["state"] == "succeeded", heals  # once per outage

    ha.start(victim)
    for env in held:
        poll_until(lambda env=env: dropped(ha, victim, env), timeout=30,
                   what=f"{victim} to drop its replica of {env}")


def test_a_fenced_old_primary_gets_a_stand_in_and_is_deleted_at_its_rejoin(
        ha: LocalDeployment):
    client, env = ha.client, "heal-c"
    home, local = create_in_west(client, env)
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 40, what="writes before the node is lost")
        # (a loaded machine may have let sync lapse; only a sync replica is promoted)
        poll_until(lambda: sync_local(ha, env) == local, timeout=30, what="sync before the kill")
        ha.kill(home)
        poll_until(lambda: replicas(client, env)[local]["role"] == "primary", timeout=30,
                   what=f"{local} promoted by the node failover")
        stand_in = poll_until(lambda: sync_local(ha, env), timeout=60,
                              what="a new sync local secondary beside the fenced one")
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 20, what="writes after the healing")
    finally:
        writer.stop()
    assert stand_in not in (home, local)
    fenced = replicas(client, env)[home]
    assert (fenced["role"], fenced["behind"]) == ("fenced", True), fenced
    [added] = [e["data"] for e in events(ha, "replica.replaced", env)]
    assert (added["from_node"], added["to_node"], added["beside"]) == (home, stand_in, True)
    writer.check(client, env)

    ha.start(home)
    poll_until(lambda: home not in replicas(client, env), timeout=60,
               what=f"{home} deleted from the catalog at its rejoin")
    # (the catalog changes first; the event lands when the rejoin's step ends)
    [rejoined] = poll_until(lambda: [e["data"] for e in events(ha, "replica.rejoined", env)],
                            what="the replica.rejoined event")
    assert rejoined["node"] == home and rejoined["deleted"] is True, rejoined
    bundles = client.lost(env)["bundles"]
    assert [b["node"] for b in bundles] == [home] and bundles[0]["acknowledged"] is False
    poll_until(lambda: dropped(ha, home, env), timeout=30, what=f"{home} to drop its replica")
    writer.check(client, env)
    all_equal(ha, env)
