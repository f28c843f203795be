"""A forced failover with a local secondary present (docs/ha.md, "After a move to the pair").

The primary's node is SIGKILLed under load, the operator forces the environment over to the
pair. The local secondary may hold entries past the fork point (the old primary's, as it
acknowledged them), so the hold fences it with the old primary; it rejoins by a re-seed,
while the old primary rewinds and keeps the lost writes. Afterwards every replica is
equal and the environment fails back home without loss.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, poll_until

from .test_ha_placement import all_equal, create_in_west, replicas


@pytest.fixture(scope="module")
def lossy(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("ha-forced", nodes_per_region=2, lease_ttl=2.0)


def rejoins(lossy: LocalDeployment, env: str) -> list[dict]:
    return [o for o in lossy.client.operations(limit=50)
            if o["kind"] == "environment.rejoin" and o["target"] == env]


def test_forced_failover_fences_the_local_secondary_and_it_rejoins(lossy: LocalDeployment):
    client, env = lossy.client, "ha-forced"
    home, local = create_in_west(client, env)
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: (client.environment(env)["primary_lsn"] or 0) > 20,
                   what="writes before the outage, reported to the controller")
        lossy.kill(home)
        done = client.wait_operation(client.failover(env, mode="forced")["id"], timeout=60)
        assert done["state"] == "succeeded", done
        line = done["result"]["environments"][0]
        assert (line["to_region"], line["epoch"]) == ("east", 2)
        fork = line["fork_lsn"]
        left = replicas(client, env)
        for node in (home, local):  # both left behind at the fork point
            assert (left[node]["role"], left[node].get("behind"),
                    left[node].get("fork_lsn")) == ("fenced", True, fork), left[node]
        assert left[local]["sync"] is False and left[local]["kind"] == "local"
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes in east")
    finally:
        writer.stop()
    ids = {r[0] for r in client.sql(env, "SELECT id FROM events")["results"][0]["rows"]}
    # Every write acknowledged at or before the fork point survived the forced move.
    assert all(i in ids for i, lsn in zip(writer.acked, writer.lsns, strict=True)
               if lsn <= fork)
    lossy.start(home)
    poll_until(lambda: len([o for o in rejoins(lossy, env) if o["state"] == "succeeded"]) == 2,
               timeout=60, what="both west replicas rejoined")
    by_node = {o["params"]["node"]: o for o in rejoins(lossy, env)}
    assert by_node[local]["result"]["rewound"] is False  # re-seeded, no bundle of its own
    bundles = client.lost(env)["bundles"]
    assert [b["node"] for b in bundles] == [home]
    joined = replicas(client, env)
    assert joined[local]["role"] == joined[home]["role"] == "secondary"
    assert not any(r.get("behind") for r in joined.values())
    all_equal(lossy, env)

    back = client.wait_operation(client.failover(env)["id"], timeout=60)
    assert back["state"] == "succeeded", back
    assert back["result"]["environments"][0]["data_loss"] == 0
    assert replicas(client, env)[home]["role"] == "primary"
    all_equal(lossy, env)
