"""Planned node maintenance (docs/ha.md, "Drain") with real processes, 3 nodes per region.

`tandem node drain NODE` under a writer of unique ids: the node's primaries move to their
local secondaries with the zero-loss switchover (each with its RTO), its secondaries (the
old primaries among them) are re-created on the region's third node, and the node is left
cordoned, holding nothing; nothing acknowledged is lost, every environment gets a sync local
secondary again and its replicas end equal. `tandem node uncordon NODE` makes it placeable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from tandemdb.testing import IdWriter, LocalDeployment, poll_until

from .test_ha_placement import all_equal, replicas

ENVS = ("drain-a", "drain-b", "drain-c")


@pytest.fixture(scope="module")
def ha(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    return start_deployment("drain", nodes_per_region=3, replace_after_seconds=None)


def tandem(cluster: LocalDeployment, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI against the deployment (its data directory)."""
    return subprocess.run([sys.executable, "-m", "tandemdb.cli.main", *args, "--data",
                           str(cluster.deployment.data)], capture_output=True, text=True,
                          timeout=180)


def has_sync_local(cluster: LocalDeployment, env: str) -> bool:
    return any(r["kind"] == "local" and r["sync"] for r in replicas(cluster.client, env).values())


def test_a_drain_empties_the_node_with_nothing_lost(ha: LocalDeployment):
    client = ha.client
    views = {env: client.create_environment(env, region="west") for env in ENVS}
    node = views["drain-a"]["replicas"][0]["node"]  # drain-a's primary
    before = {env: replicas(client, env) for env in ENVS}
    primaries = {env for env, r in before.items() if r.get(node, {}).get("role") == "primary"}
    held = {env for env, r in before.items() if node in r}
    locals_ = {env: next(n for n, x in before[env].items() if x["kind"] == "local")
               for env in primaries}
    writer = IdWriter(client, list(ENVS))
    writer.create_table()
    writer.start()
    try:
        poll_until(lambda: len(writer.acked) > 40, what="writes before the drain")
        done = tandem(ha, "node", "drain", node, "--json")
        assert done.returncode == 0, done.stderr
        op = json.loads(done.stdout)
        acked = len(writer.acked)
        poll_until(lambda: len(writer.acked) > acked + 20, what="writes after the drain")
    finally:
        writer.stop()

    assert (op["kind"], op["target"], op["state"]) == ("node.drain", node, "succeeded"), op
    lines = {x["environment"]: x for x in op["result"]["environments"]}
    assert set(lines) == primaries
    for env, x in lines.items():
        assert (x["state"], x["data_loss"], x["from_node"], x["to_node"]) == (
            "succeeded", 0, node, locals_[env]), x
        assert x["rto_seconds"] > 0 and x["to_region"] == "west"
    moved = {x["environment"]: x for x in op["result"]["secondaries"]}
    assert set(moved) == held  # the old primaries are secondaries there by then
    for env, x in moved.items():
        assert x["state"] == "replaced" and x["from_node"] == node, x
        assert x["to_node"] not in before[env] or x["to_node"] == locals_.get(env) is None
    for env in ENVS:
        writer.check(client, env)  # every acknowledged id present exactly once
        assert node not in replicas(client, env)
    seen = {n["name"]: n for n in client.nodes()}[node]
    assert (seen["state"], seen["primaries"], seen["secondaries"]) == ("cordoned", 0, 0)
    for env in ENVS:
        poll_until(lambda env=env: has_sync_local(ha, env), timeout=60,
                   what=f"{env}: a sync local secondary again")
        all_equal(ha, env)

    new = client.create_environment("drain-new", type="basic", region="west")
    assert node not in {r["node"] for r in new["replicas"]}
    shown = tandem(ha, "node", "uncordon", node)
    assert shown.returncode == 0 and "uncordoned (it was cordoned)" in shown.stdout, shown
    assert {n["name"]: n for n in client.nodes()}[node]["state"] == "healthy"
