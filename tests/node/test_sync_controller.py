"""Losing and regaining sync with the real controller (docs/ha.md; contract 3 of issue 11):
a whole local deployment of 2 nodes per region (the harness), a production environment whose
local secondary the catalog records sync. Pausing that secondary's node (SIGSTOP) makes the
primary ask the controller to record it unsynced; once it is, the writes are acknowledged.
Resumed and caught up, the secondary is recorded sync again, and writes wait for it again.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tandemdb.common.http import SECRET_HEADER
from tandemdb.testing import LocalDeployment, poll_until


@pytest.fixture(scope="module")
def ha() -> Iterator[LocalDeployment]:
    with LocalDeployment.temporary(prefix="tandem-sync-", nodes_per_region=2) as running:
        yield running


def local_replica(cluster: LocalDeployment, env: str) -> dict:
    return next(r for r in cluster.client.environment(env)["replicas"]
                if r["kind"] == "local")


def node_status(cluster: LocalDeployment, node: str, env: str) -> dict:
    answer = httpx.get(f"{cluster.deployment.node_url(node)}/internal/v1/replicas/{env}",
                       headers={SECRET_HEADER: cluster.deployment.secret}, timeout=10)
    answer.raise_for_status()
    return answer.json()


def names_sync(cluster: LocalDeployment, primary: str, env: str, node: str) -> bool:
    """Whether the primary's own record names `node` its sync secondary."""
    peers = node_status(cluster, primary, env)["record"]["secondaries"]
    return any(p["node"] == node and p.get("sync") for p in peers)


def sync_events(cluster: LocalDeployment, env: str) -> list[tuple[str, str]]:
    return [(e["type"], e["data"]["node"])
            for e in cluster.client.events(after=0)["events"]
            if e["environment"] == env and e["type"].startswith("replica.sync")]


def test_sync_is_lost_and_regained_through_the_controller(ha: LocalDeployment) -> None:
    client, env = ha.client, "synced"
    client.create_environment(env, region="west")
    primary = next(r["node"] for r in client.environment(env)["replicas"]
                   if r["role"] == "primary")
    local = local_replica(ha, env)["node"]
    poll_until(lambda: names_sync(ha, primary, env, local), 20.0, 0.1,
               "the primary's record to name its sync secondary")
    client.sql(env, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    held = node_status(ha, local, env)["last_lsn"]

    ha.pause(local)
    try:
        acks = [client.sql(env, "INSERT INTO t VALUES (?)", [i])["lsn"] for i in range(3)]
        assert min(acks) > held  # acknowledged although the paused secondary lacks them…
        assert local_replica(ha, env)["sync"] is False  # …once the catalog said so
        assert sync_events(ha, env) == [("replica.sync_lost", local)]
    finally:
        ha.resume(local)

    poll_until(lambda: local_replica(ha, env)["sync"], 20.0, 0.1,
               "the caught-up secondary to be recorded sync again")
    assert sync_events(ha, env) == [("replica.sync_lost", local),
                                    ("replica.sync_restored", local)]
    poll_until(lambda: names_sync(ha, primary, env, local), 20.0, 0.1,
               "the primary's record to name it sync again")
    for i in range(10, 20):
        lsn = client.sql(env, "INSERT INTO t VALUES (?)", [i])["lsn"]
        assert node_status(ha, local, env)["last_lsn"] >= lsn  # waited for it again
