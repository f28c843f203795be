"""`tandem bench control-plane`: how long the controllers take to replace their leader.

A real local deployment with the control plane on etcd (`tandem up --store etcd`'s shape:
3 etcd members, 3 controllers, one gateway per region, one node per region) and its
defaults (controller lease 2 s). Then, `rounds` times: find the leader, SIGKILL it, and
time from the kill to

- `elected`: another controller says it leads (its `/healthz`), and
- `decided`: a control call that needs the leader (creating an environment, through the
  gateways, as a client that knows both) has been answered 201;

then start the killed one again (it comes back as a follower). One more round kills the etcd
member that is raft leader instead, and times the first decision after it (`etcd_*`):
losing one member must cost at most an etcd election, and depose no controller.

Printed next to `goal_seconds` (3, the issue's goal for a new leader with the defaults);
nothing is asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import httpx

from tandemdb.client import TandemError
from tandemdb.common.layout import Shape
from tandemdb.testing import LocalDeployment, poll_until

GOAL_SECONDS = 3.0


def _decided(cluster: LocalDeployment, name: str) -> bool:
    """One control call that needs a leader; True once it is answered 201."""
    try:
        cluster.client.create_environment(name, region="west")
    except TandemError as exc:
        return exc.code == "exists"  # an earlier try ran after all (its answer was lost)
    return True


def _etcd_leader(cluster: LocalDeployment) -> str | None:
    for name in cluster.deployment.etcd_members():
        try:
            status = httpx.post(cluster.url(name) + "/v3/maintenance/status", json={},
                                timeout=0.5).json()
        except (httpx.HTTPError, ValueError):
            continue
        if status.get("leader") and status.get("leader") == status.get("header", {}).get(
                "member_id"):
            return name
    return None


def run(rounds: int = 5, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _msg: None)
    elected: list[float] = []
    decided: list[float] = []
    say("starting a deployment with the control plane on etcd")
    with LocalDeployment.temporary(shape=Shape.parse("etcd"), prefix="tandem-bench-cp-") as c:
        for i in range(rounds):
            first = poll_until(lambda: c.leader(timeout=0.5), 15, what="a leader")
            assert first is not None  # poll_until answers a true value
            say(f"round {i + 1}/{rounds}: SIGKILL of the leader {first}")
            c.kill(first)
            killed = time.monotonic()
            poll_until(partial(c.leader, besides=first, timeout=0.5), 30, 0.02, "a new leader")
            elected.append(time.monotonic() - killed)
            poll_until(partial(_decided, c, f"bench-cp-{i}"), 30, 0.02,
                       "the first decision of the new leader")
            decided.append(time.monotonic() - killed)
            c.start(first)
        member = _etcd_leader(c)
        etcd_decided = None
        deposed = None
        if member is not None:
            leader = c.leader(timeout=0.5)
            say(f"SIGKILL of the etcd raft leader {member}")
            c.kill(member)
            killed = time.monotonic()
            poll_until(lambda: _decided(c, "bench-cp-etcd"), 30, 0.02,
                       "a decision after losing the etcd leader")
            etcd_decided = round(time.monotonic() - killed, 3)
            deposed = c.leader(timeout=0.5) != leader
            c.start(member)
    return {"bench": "control-plane", "store": "etcd", "rounds": rounds,
            "controller_lease_ttl_seconds": c.deployment.controller_lease_ttl,
            "goal_seconds": GOAL_SECONDS,
            "elected_median_seconds": round(statistics.median(elected), 3),
            "elected_max_seconds": round(max(elected), 3),
            "decided_median_seconds": round(statistics.median(decided), 3),
            "decided_max_seconds": round(max(decided), 3),
            "elected_seconds": [round(x, 3) for x in elected],
            "etcd_leader_lost_decided_seconds": etcd_decided,
            "etcd_leader_lost_deposed_controller": deposed}
