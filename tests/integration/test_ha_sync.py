"""Losing and regaining sync through the real controller (docs/ha.md, "Losing sync, safely"):
the local secondary's node is frozen under load; the primary has the controller record it
`sync: false` (`replica.sync_lost`) and then acknowledges writes again; thawed, the replica
catches up and is recorded `sync: true` again (`replica.sync_restored`). Nothing
acknowledged is lost and every replica ends equal."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, poll_until

from .test_ha_placement import all_equal, create_in_west, replicas


@pytest.fixture(scope="module")
def ha(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("ha-sync", nodes_per_region=2)


def sync_events(ha: LocalDeployment, env: str) -> list[dict]:
    return [e for e in ha.client.events(after=0)["events"]
            if e["environment"] == env and e["type"].startswith("replica.sync")]


def test_a_frozen_local_secondary_loses_sync_and_regains_it(ha: LocalDeployment):
    client, env = ha.client, "ha-sync"
    primary, local = create_in_west(client, env)
    writer = IdWriter(client, env)
    writer.create_table(keyed=False)
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 10, what="writes with the local replica sync")
        ha.signal(local, signal.SIGSTOP)
        try:
            poll_until(lambda: replicas(client, env)[local]["sync"] is False, timeout=20,
                       what="the catalog to record the frozen replica not sync")
            count = len(writer.acked)
            poll_until(lambda: len(writer.acked) > count + 10, timeout=20,
                       what="writes acknowledged without the frozen replica")
        finally:
            ha.signal(local, signal.SIGCONT)
        poll_until(lambda: replicas(client, env)[local]["sync"] is True, timeout=30,
                   what="the catalog to record the replica sync again")
        count = len(writer.acked)
        poll_until(lambda: len(writer.acked) > count + 10, what="writes with sync back")
    finally:
        writer.stop()
    assert not writer.failed, writer.failed[:5]
    events = sync_events(ha, env)
    # Lost, then restored, alternating (a loaded machine may add a pair of its own).
    kinds = [e["type"] for e in events]
    assert kinds and kinds == ["replica.sync_lost", "replica.sync_restored"] * (len(kinds) // 2)
    assert all((e["data"]["node"], e["data"]["primary_node"], e["data"]["epoch"])
               == (local, primary, 1) for e in events)
    writer.check(client)
    all_equal(ha, env)
