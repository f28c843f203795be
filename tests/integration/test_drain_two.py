"""A drain with 2 nodes per region, the default (docs/ha.md, "Drain"): the node's primaries
move to the other node with the zero-loss switchover, but their old primaries have nowhere
else to go, so they stay on the drained node as local secondaries (the result says so)
and the new primaries make them sync again. Real processes, a writer of unique ids, and
the CLI's human output (the RTO table and each secondary's fate).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, poll_until

from .test_drain import tandem
from .test_ha_placement import all_equal, create_in_west, replicas


@pytest.fixture(scope="module")
def ha(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("drain-two", nodes_per_region=2, replace_after_seconds=None)


def test_with_two_nodes_the_old_primaries_stay_as_sync_local_secondaries(ha: LocalDeployment):
    client, env = ha.client, "drain-two"
    node, other = create_in_west(client, env)
    writer = IdWriter(client, env)
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 40, what="writes before the drain")
        shown = tandem(ha, "node", "drain", node)
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 20, what="writes after the drain")
    finally:
        writer.stop()
    assert shown.returncode == 0, shown.stderr
    assert "RTO ms" in shown.stdout and f"{node} → {other}" in shown.stdout, shown.stdout
    assert f"{node} → (stays)" in shown.stdout and "stayed" in shown.stdout, shown.stdout

    [op] = [o for o in client.operations(limit=20) if o["kind"] == "node.drain"]
    [line] = op["result"]["environments"]
    assert (line["environment"], line["data_loss"], line["to_node"]) == (env, 0, other)
    [kept] = op["result"]["secondaries"]
    assert (kept["environment"], kept["state"], kept["from_node"]) == (env, "stayed", node)
    writer.check(client, env)
    poll_until(lambda: replicas(client, env)[node]["sync"] is True, timeout=30,
               what=f"{node}, the old primary, sync again")
    now = replicas(client, env)
    assert (now[other]["role"], now[node]["role"], now[node]["kind"]) == (
        "primary", "secondary", "local")
    seen = {n["name"]: n for n in client.nodes()}[node]
    assert (seen["state"], seen["primaries"], seen["secondaries"]) == ("cordoned", 0, 1)
    all_equal(ha, env)
    assert tandem(ha, "node", "uncordon", node).returncode == 0
