"""Nodes that know several controllers (issue 12), their own site's first: with west's
controller lost (nothing listening on its port, tests/gateway/controllers.py), west's nodes
heartbeat to east's, which sees them healthy and grants their leases, and a primary that
loses its sync secondary gets `sync: false` recorded there, so its writes are acknowledged.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tandemdb.common.http import SECRET_HEADER
from tandemdb.testing import poll_until
from tests.gateway.controllers import GATEWAY, LIVE, healthy_at, lost_west

NODES = ("west-1", "west-2", "east-1", "east-2")


def test_nodes_move_on_to_the_next_controller_for_heartbeats_and_sync_records(tmp_path: Path):
    with lost_west(tmp_path / "data", (LIVE, *NODES, GATEWAY),
                   nodes_per_region=2) as (cluster, lost):
        live = cluster.url(LIVE)
        poll_until(lambda: healthy_at(cluster, LIVE), 20.0, 0.1, "every node's heartbeat")
        for node in ("west-1", "west-2"):  # their own site's controller first, then east's
            log = cluster.log(node)
            # Moved on after the refusal, or steered to the leader (common/leader_watch.py)
            # before the first beat: either way once, and they stick to it.
            assert (f"heartbeats now go to {live} ({lost.url}: ConnectError" in log
                    or f"heartbeats now go to {live} (it leads)" in log), log
            assert log.count("heartbeats now go to") == 1
        assert "heartbeats now go to" not in cluster.log("east-1")  # east's own is up

        # A production environment in west: its primary writes under a lease that east's
        # controller granted, and waits for its sync local secondary.
        client, env = cluster.client, "synced"
        view = client.create_environment(env, region="west")
        primary = next(r["node"] for r in view["replicas"] if r["role"] == "primary")
        local = next(r["node"] for r in view["replicas"] if r["kind"] == "local")
        poll_until(lambda: names_sync(cluster.deployment, primary, env, local), 20.0, 0.1,
                   "the primary's record to name its sync secondary")
        client.sql(env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
        # Its sync secondary stops: the primary asks the controller to record it unsynced,
        # first west's (refused), then east's, and the write is acknowledged once it has.
        cluster.pause(local)
        try:
            lsn = client.sql(env, "INSERT INTO t VALUES (1)")["lsn"]
            assert lsn >= 2
            replicas = client.environment(env)["replicas"]
            assert next(r for r in replicas if r["node"] == local)["sync"] is False
        finally:
            cluster.resume(local)
        assert f"sync records now go to {live} ({lost.url}" in cluster.log(primary)
        assert f"recorded {local} as sync: false" in cluster.log(primary)


def names_sync(deployment, primary: str, env: str, node: str) -> bool:
    """Whether the primary's own record names `node` its sync secondary."""
    answer = httpx.get(f"{deployment.node_url(primary)}/internal/v1/replicas/{env}",
                       headers={SECRET_HEADER: deployment.secret}, timeout=10)
    answer.raise_for_status()
    peers = answer.json()["record"]["secondaries"]
    return any(p["node"] == node and p.get("sync") for p in peers)
