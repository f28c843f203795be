"""Partitions through the fault proxy (`tandem up --fault-proxy`), with clients still
reaching the cut-off primary directly (docs/leases.md; "Split brain" in docs/design.md).

1. West partitioned from the controller and from east under two writers, one through the
   gateway and one straight at west's node: west stops taking writes within one lease, no
   write is acknowledged in epoch 1 after east's promotion (invariant 2), the controller
   fails west over by itself, and when the links heal west rejoins: the acknowledged ids
   missing from east are exactly its lost writes (3), checksums agree after the rewind and
   catch-up (4), the replay and the failback lose nothing (1).
2. West cut off from the controller only: east still pulls, so the failsafe keeps west
   writing and nobody declares west down; a forced failover then makes east stop vouching,
   west stops within one lease, and again nothing is acknowledged in epoch 1 after the
   promotion and nothing acknowledged is lost.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime

import pytest

from tandemdb.local import set_links
from tandemdb.testing import IdWriter, LocalDeployment, NodeSender, caught_up, poll_until

TTL, GRACE = 1.5, 2.0
SLACK = 0.3  # an acknowledgement travels back after its commit


@pytest.fixture(scope="module")
def proxied(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    c = start_deployment("partition", fault_proxy=True, lease_ttl=TTL, grace_seconds=GRACE,
                         heartbeat_interval=0.25)
    c.write_run_file()  # as `tandem up --detach` does: the CLI finds it
    return c


def tandem(c: LocalDeployment, *args: str) -> str:
    """Run the real CLI against the deployment; its output (stderr and stdout)."""
    done = subprocess.run([sys.executable, "-m", "tandemdb.cli.main", *args, "--data",
                           c.deployment.data], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stderr + done.stdout


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def step(op: dict, name: str) -> dict:
    return next(s for s in op["steps"] if s["name"] == name)


def writers(c: LocalDeployment, env: str) -> tuple[IdWriter, IdWriter]:
    """One writer through the gateway, one straight to west's node (past the gateway: a
    client that still reaches a partitioned primary; its refusals are certain)."""
    c.client.create_environment(env, region="west")
    gateway = IdWriter(c.client, env)
    gateway.create_table()
    direct = IdWriter(NodeSender(c.deployment.node_url(c.node_of("west")), c.deployment.secret),
                      env, first_id=1_000_000, owns_sender=True)
    return gateway.start(), direct.start()


def ids_in(c: LocalDeployment, env: str, region: str | None = None) -> list[int]:
    rows = c.client.sql(env, "SELECT id FROM events ORDER BY id", read_region=region)
    return [r[0] for r in rows["results"][0]["rows"]]


def lost_ids(c: LocalDeployment, env: str) -> set[int]:
    return {ch["after"]["id"] for b in c.client.lost(env)["bundles"] for e in b["entries"]
            for ch in e["changes"] if ch["table"] == "events" and ch["op"] == "insert"}


def rejoined(c: LocalDeployment, env: str) -> bool:
    return not any(r.get("behind") for r in c.client.environment(env)["replicas"])


def same_checksums(c: LocalDeployment, env: str) -> bool:
    return c.client.checksum(env, "west")["total"] == c.client.checksum(env, "east")["total"]


def check_loss(c: LocalDeployment, env: str, gateway: IdWriter, direct: IdWriter) -> set[int]:
    """Invariant 3: acknowledged but missing in the new primary == its lost writes, up to
    writes whose answer never came; every other acknowledged id is there once."""
    present = ids_in(c, env)
    assert len(present) == len(set(present)), "an id is present twice"
    acked = set(gateway.acked) | direct.acked_ids()
    missing = acked - set(present)
    kept = lost_ids(c, env)
    unknown = {i for i, _ in gateway.failed} | set(direct.unknown)
    assert missing <= kept, f"acknowledged, missing and not listed as lost: {missing - kept}"
    assert kept - missing <= unknown, f"listed as lost but never acknowledged: {kept - missing}"
    return kept


def finish(c: LocalDeployment, env: str, gateway: IdWriter, direct: IdWriter) -> None:
    """Replay the lost writes, fail back home, and find every acknowledged id once."""
    poll_until(lambda: caught_up(c.client, env), timeout=30, what=f"{env} caught up")
    assert same_checksums(c, env), "checksums differ after the rewind and the catch-up"
    replayed = c.client.replay_lost(env)
    assert not replayed["conflicts"], replayed
    back = c.client.wait_operation(c.client.failover(env)["id"], timeout=60)
    assert back["state"] == "succeeded" and back["result"]["environments"][0]["data_loss"] == 0
    assert c.client.environment(env)["primary_region"] == "west"
    present = ids_in(c, env)
    assert len(present) == len(set(present))
    acked = set(gateway.acked) | direct.acked_ids()
    assert acked <= set(present), f"lost after the replay: {sorted(acked - set(present))[:20]}"
    poll_until(lambda: caught_up(c.client, env), timeout=30, what=f"{env} caught up at home")
    assert same_checksums(c, env)


def test_a_partitioned_primary_stops_within_one_lease_and_is_failed_over(proxied: LocalDeployment):
    c, env = proxied, "cut-off"
    gateway, direct = writers(c, env)
    try:
        poll_until(lambda: len(direct.acked) > 20 and len(gateway.acked) > 20,
                   what="writes before the partition")
        asked_at = time.time()  # the links were cut after this …
        out = tandem(c, "region", "outage", "west", "--partition")
        cut_at = time.time()  # … and before the command answered (on a busy machine, a
        # second or more later: the CLI is a process of its own)
        assert "cut 4 link(s)" in out and "still serve clients directly" in out
        poll_until(lambda: any(r.wall > cut_at + TTL + SLACK for r in direct.refusals),
                   what="the cut-off primary to refuse writes")
        assert {r.code for r in direct.refusals if r.wall > cut_at + TTL + SLACK} == \
            {"no_lease"}
        poll_until(lambda: c.client.regions()[0]["state"] == "failed-over", timeout=40,
                   what="the controller to declare west down and fail it over")
        west = next(r for r in c.client.regions() if r["name"] == "west")
        region_op = c.client.wait_operation(west["operation"], timeout=30)
        assert (region_op["params"]["mode"], region_op["state"]) == ("forced", "succeeded")
        child = c.client.operations(parent=region_op["id"])[0]
        promoted_at = at(step(child, "promote")["started_at"])
        assert promoted_at - asked_at >= GRACE  # not declared down before the grace
        acked = len(gateway.acked)
        poll_until(lambda: len(gateway.acked) > acked + 20, what="writes resumed in east")
        assert gateway.epochs[-1] == 2
        # Invariant 2: west took nothing in epoch 1 after east's promotion; it never will.
        assert all(a.wall < promoted_at for a in direct.acks if a.epoch == 1)
        assert not [a.id for a in direct.acks if a.epoch != 1]
    finally:
        direct.stop()
        gateway.stop()

    out = tandem(c, "region", "recover", "west")
    assert "healed 4 link(s)" in out
    poll_until(lambda: rejoined(c, env), timeout=40, what="west to rejoin")
    kept = check_loss(c, env, gateway, direct)
    assert kept & direct.acked_ids(), "the direct writes after the cut should be lost writes"
    # West's last commits in epoch 1 are its lost writes; their commit times (taken before
    # the lease check that let them commit) show it stopped within one lease of the cut,
    # long before the promotion.
    last = max(e["committed_at"] for b in c.client.lost(env)["bundles"] for e in b["entries"])
    assert last <= cut_at + TTL, f"committed {last - cut_at:.2f} s after the cut"
    assert last < promoted_at
    finish(c, env, gateway, direct)
    assert c.client.wait_operation(c.client.region_failback("west")["id"],
                                   timeout=60)["state"] == "succeeded"


def test_the_failsafe_keeps_a_primary_cut_off_from_the_controller_writing(proxied: LocalDeployment):
    c, env = proxied, "no-controller"
    west = c.node_of("west")
    gateway, direct = writers(c, env)
    controller_links = [f"{west}>controller", f"controller>{west}"]
    try:
        poll_until(lambda: len(direct.acked) > 20, what="writes before the cut")
        cut_at = time.time()
        set_links(c.deployment, {"links": controller_links, "mode": "cut"})
        poll_until(lambda: time.time() > cut_at + max(3 * TTL, 2 * GRACE), timeout=20,
                   interval=0.2, what="well past a lease and the grace period")
        # East still pulls from west and vouches for it: west writes on, nothing is down.
        assert max(a.wall for a in direct.acks) > cut_at + 2 * TTL
        assert not [r.code for r in direct.refusals if r.wall > cut_at], direct.refusals[-3:]
        assert {r["name"]: r["state"] for r in c.client.regions()} == \
            {"west": "healthy", "east": "healthy"}
        assert "vouches for them by pulling" in c.tail(west, 40)

        op = c.client.wait_operation(c.client.failover(env, mode="forced")["id"], timeout=60)
        assert op["state"] == "succeeded", op
        expired = step(op, "expire-lease")
        assert "stopped vouching" in expired["detail"]
        promoted_at = at(step(op, "promote")["started_at"])
        old = [a.wall for a in direct.acks if a.epoch == 1]
        assert max(old) < promoted_at, "acknowledged in epoch 1 after the promotion"
        assert max(old) <= at(expired["started_at"]) + TTL + SLACK
        acked = len(gateway.acked)
        poll_until(lambda: len(gateway.acked) > acked + 20, what="writes in east")
    finally:
        direct.stop()
        gateway.stop()

    set_links(c.deployment, {"links": controller_links, "mode": "ok"})
    poll_until(lambda: rejoined(c, env), timeout=40, what="west to rejoin")
    check_loss(c, env, gateway, direct)
    finish(c, env, gateway, direct)
