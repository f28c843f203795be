"""Node loss (docs/ha.md, "Node loss"): SIGKILL the node of a primary under load.

The controller declares the node down after `node_grace_seconds`, promotes the sync local
secondary and routes to it: no acknowledged write is lost (invariant 1), the region is not
failed over, and at most one node acknowledges writes in any epoch (invariant 2). When the
node comes back its replica rewinds what it committed past the fork point, never
acknowledged, into a lost-writes bundle marked `acknowledged: false`, and rejoins as the
local secondary, which the new primary makes sync again; every replica is then equal.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandemdb.client import TandemError
from tandemdb.testing import IdWriter, LocalDeployment, ids_in, lost_writes, poll_until

from .test_ha_placement import all_equal, create_in_west, replicas


@pytest.fixture(scope="module")
def ha(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("node-loss", nodes_per_region=2, node_grace_seconds=2.0)


def node_ops(cluster: LocalDeployment, kind: str, target: str) -> list[dict]:
    """The operations of `kind` on `target`, newest first."""
    return [o for o in cluster.client.operations(limit=100)
            if o["kind"] == kind and o["target"] == target]


def synced(cluster: LocalDeployment, env: str, node: str) -> None:
    """Wait until `node` is recorded sync (a loaded machine may have let sync lapse for a
    moment, and only a sync replica is promoted by a node failover)."""
    poll_until(lambda: replicas(cluster.client, env)[node]["sync"] is True, timeout=30,
               what=f"{node} recorded sync for {env}")


def one_primary_per_epoch(writer: IdWriter) -> None:
    """Two writable primaries in one epoch would hand out the same lsn twice."""
    seen: dict[tuple[str, int, int], int] = {}
    for ack in writer.acks:
        other = seen.setdefault((ack.env, ack.epoch, ack.lsn), ack.id)
        assert other == ack.id, f"{ack.env}: lsn {ack.lsn} of epoch {ack.epoch} acknowledged twice"


def test_losing_a_primary_node_loses_no_acknowledged_write(ha: LocalDeployment):
    client = ha.client
    lost_env, other_env = "node-loss-a", "node-loss-b"
    view = client.create_environment(lost_env, region="west")
    home = view["replicas"][0]["node"]
    local = next(r["node"] for r in view["replicas"] if r["kind"] == "local")
    assert replicas(client, lost_env)[local]["sync"] is True
    client.create_environment(other_env, region="west")
    writer = IdWriter(client, [lost_env, other_env])
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 40, what="writes before the node is lost")
        assert not node_ops(ha, "node.failover", home)
        synced(ha, lost_env, local)
        ha.kill(home)
        done = poll_until(lambda: next((o for o in node_ops(ha, "node.failover", home)
                                        if o["state"] != "running"), None),
                          timeout=30, what=f"the node failover of {home}")
        assert done["state"] == "succeeded", done
        line = next(x for x in done["result"]["environments"] if x["environment"] == lost_env)
        assert (line["state"], line["data_loss"], line["to_node"], line["epoch"]) == (
            "succeeded", 0, local, 2), line
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 20, what="writes after the node loss")
    finally:
        writer.stop()

    after = replicas(client, lost_env)
    assert (after[local]["role"], after[local]["kind"]) == ("primary", "geo"), after
    assert (after[home]["role"], after[home]["behind"], after[home]["unacknowledged"]) == (
        "fenced", True, True), after
    assert client.environment(lost_env)["primary_region"] == "west"
    assert {r["name"]: r["state"] for r in client.regions()}["west"] == "healthy"
    types = [e["type"] for e in client.events()["events"]]
    assert "node.down" in types and "node.failover.completed" in types
    for env in (lost_env, other_env):
        writer.check(client, env)  # every acknowledged id present exactly once
    one_primary_per_epoch(writer)

    ha.start(home)
    poll_until(lambda: any(o["state"] == "succeeded"
                           for o in node_ops(ha, "environment.rejoin", lost_env)),
               timeout=60, what=f"{home} rejoined")
    bundles = client.lost(lost_env)["bundles"]
    assert [b["node"] for b in bundles] == [home], bundles
    print("node failover:", line, "bundle entries:", len(bundles[0]["entries"]),
          "longest pause:", writer.longest_pause())
    assert all(b["acknowledged"] is False for b in bundles), bundles
    assert all(e["acknowledged"] is False for b in bundles for e in b["entries"])
    _, ids = lost_writes(client.lost(lost_env), "events")
    assert not ids & writer.acked_ids(lost_env), "an acknowledged write was rewound"
    poll_until(lambda: replicas(client, lost_env)[home]["sync"] is True, timeout=30,
               what=f"{home} sync again, the new primary's local secondary")
    assert replicas(client, lost_env)[home]["role"] == "secondary"
    all_equal(ha, lost_env)
    writer.check(client, lost_env)


def test_a_switchover_to_the_local_secondary_loses_nothing(ha: LocalDeployment):
    """`failover ENV --to NODE`: the planned switchover within the region (a drain's first
    step); the kinds swap, and the new primary makes the old one its sync secondary."""
    client, env = ha.client, "node-switch"
    home, local = create_in_west(client, env)
    with pytest.raises(TandemError) as bad:
        client.failover(env, mode="forced", to=local)
    assert bad.value.status == 400
    with pytest.raises(TandemError) as unknown:
        client.failover(env, to="west-9")
    assert (unknown.value.status, unknown.value.code) == (409, "no_secondary")
    # Four writers, so that groups are in flight (committed, waiting for the sync
    # secondary's acknowledgement) when the old primary is fenced.
    writers = [IdWriter(client, env, first_id=k, step=4) for k in range(1, 5)]
    writers[0].create_table()
    for writer in writers:
        writer.start()
    try:
        poll_until(lambda: len(writers[0].acked) > 20, what="writes before the switchover")
        done = client.wait_operation(client.failover(env, to=local)["id"], timeout=60)
        assert done["state"] == "succeeded", done
        line = done["result"]["environments"][0]
        assert (line["data_loss"], line["to_region"], line["epoch"]) == (0, "west", 2)
        acked = len(writers[0].acked)
        poll_until(lambda: len(writers[0].acked) > acked + 20, what="writes after it")
    finally:
        for writer in writers:
            writer.stop()
    ids = ids_in(client, env, "events")
    assert len(ids) == len(set(ids)), "an id is present twice"
    acked = set().union(*(w.acked_ids(env) for w in writers))
    unknown = set().union(*(w.unknown_ids(env) for w in writers))
    assert acked <= set(ids), sorted(acked - set(ids))[:20]  # invariant 1: nothing lost
    assert not set(ids) - acked - unknown, "ids nobody wrote"
    for writer in writers:
        one_primary_per_epoch(writer)
        # A write the old primary committed before the fence was confirmed by the
        # switchover itself (the new primary's history holds it), not failed as unknown.
        assert not [m for _, m in writer.failed if "sync_unavailable" in m], writer.failed
    poll_until(lambda: replicas(client, env)[home]["sync"] is True, timeout=30,
               what=f"{home}, the old primary, sync again")
    now = replicas(client, env)
    assert (now[local]["role"], now[local]["kind"]) == ("primary", "geo")
    assert (now[home]["role"], now[home]["kind"]) == ("secondary", "local")
    assert client.environment(env)["primary_region"] == "west"
    all_equal(ha, env)


def test_a_primary_not_moved_at_first_is_moved_while_its_node_stays_down(ha: LocalDeployment):
    """The sync secondary's node is frozen when the primary's node dies: the first node
    failover cannot move the environment (its target does not answer); once the target is
    back, a retry within the same outage moves it, losing nothing."""
    client, env = ha.client, "node-retry"
    home, local = create_in_west(client, env)
    writer = IdWriter(client, env)
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 20, what="writes before the faults")
        before = {o["id"] for o in node_ops(ha, "node.failover", home)}
        synced(ha, env, local)
        ha.pause(local)
        ha.kill(home)
        first = poll_until(lambda: next((o for o in node_ops(ha, "node.failover", home)
                                         if o["id"] not in before
                                         and o["state"] != "running"), None),
                           timeout=30, what=f"the first node failover of {home}")
        assert first["state"] == "failed", first
        assert replicas(client, env)[home]["role"] == "primary"  # rolled back, not moved
        ha.resume(local)
        moved = poll_until(lambda: replicas(client, env)[local]["role"] == "primary",
                           timeout=30, what=f"a retry moving {env} to {local}")
        assert moved
        again = poll_until(lambda: [
            o for o in node_ops(ha, "node.failover", home)
            if o["id"] not in before and o["params"].get("again") and any(
                line["environment"] == env and line["state"] == "succeeded"
                for line in (o["result"] or {}).get("environments", []))],
            what="the retry's result")
        assert again
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 10, what="writes after the move")
    finally:
        writer.stop()
        ha.resume(local)
    writer.check(client, env)
    one_primary_per_epoch(writer)
    downs = [e for e in client.events()["events"] if e["type"] == "node.down"
             and e["data"]["node"] == home and e["operation"] not in before]
    assert len(downs) == 1  # one for the outage, none for the retry
    ha.start(home)
    poll_until(lambda: replicas(client, env)[home]["role"] == "secondary", timeout=60,
               what=f"{home} rejoined")
