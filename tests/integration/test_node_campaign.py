"""The node fault campaign (issue 11, docs/ha.md): a seeded random sequence of node faults
over one deployment with local HA (2 nodes per region unless told 3, a fault proxy on every
link, the node to node ones included), under a writer of unique ids per environment that
runs throughout.

Scenario kinds, each on a node holding primaries:

- `kill`: SIGKILL the node; its primaries move to their sync local secondaries
  (`node.failover`); restarted, it rejoins;
- `partition-controller`: cut its links to and from the controller (its pair still vouches
  for it); the controller declares it down and fails it over the same way; healed, it
  rejoins, rewinding what it committed and never acknowledged;
- `partition-local`: cut its links to and from the other nodes of its region, so it and its
  local replicas lose sync (recorded false through the controller, writes go on); healed,
  sync comes back;
- `drain`: `node drain` under load, then `uncordon`;
- `kill-during-drain`: SIGKILL the node just after its drain starts.

After each scenario the state is restored (links healed, node restarted and uncordoned,
every environment with a sync local secondary, nothing `behind`, secondaries caught up), and
checked: no acknowledged id missing (or present twice), no id present that nobody wrote, no
(env, epoch, lsn) acknowledged for two ids and no acknowledgement at an older epoch after a
newer one (at most one writable primary per epoch), equal checksums on every replica, every
rewound id listed `acknowledged: false`, never an acknowledged id and never present, every
id neither acknowledged nor present among the unknown-outcome writes; the region never
failed over. A violation fails the test naming the seed and the scenario; `TANDEM_SEED=S`
replays a sequence (with the same TANDEM_SOAK and node count: the choices, not the
timing). The normal suite runs 10 scenarios (each kind twice); the soak form runs N times
as many, and `TANDEM_NODES_PER_REGION=3` runs it over 3 nodes per region (a drain then
re-creates the node's secondaries on the third node):

    TANDEM_SOAK=N TANDEM_SEED=S .venv/bin/python -m pytest -m soak -s \
        tests/integration/test_node_campaign.py
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tandemdb.bench.node_failure import (
    acknowledged_twice,
    checksums_equal,
    ended,
    node_operation,
    operation_ids,
    primary_node,
    protected,
    rewound,
)
from tandemdb.client import TandemError
from tandemdb.common.deployment import Deployment
from tandemdb.local import set_links
from tandemdb.testing import IdWriter, LocalDeployment, caught_up, ids_in, poll_until

HOMES = {"camp-w1": "west", "camp-w2": "west", "camp-w3": "west", "camp-e1": "east"}
TABLE = "events"
KINDS = ("kill", "partition-controller", "partition-local", "drain", "kill-during-drain")
FAULTS = {"kill-during-drain": 2}  # faults a scenario injects (one unless said)
BOUNDED = 10  # scenarios of the normal suite: each kind twice
SETTLE = 60.0  # seconds a scenario's effect, and the recovery after it, may take
# Answers a write may meet while its primary is lost or moving (the call did not run, or
# its outcome is unknown and counted as such).
WHY = ("switching", "no_lease", "unavailable", "outcome_unknown", "sync_unavailable",
       "fenced", "timed out", "not_primary")
ERROR_CODE = re.compile(r"error \d+ (\w+)")  # in the SDK's message: "error 503 no_lease: …"


@dataclass
class Scenario:
    number: int
    kind: str
    node: str
    notes: list[str] = field(default_factory=list)
    drain: str | None = None  # the drain a kill interrupted: its outcome is noted at the end

    def __str__(self) -> str:
        return f"scenario {self.number} ({self.kind} of {self.node})"


class Violation(AssertionError):
    """What a scenario broke; the test fails with the seed and the scenario."""


class Campaign:
    """The deployment, its writers and the bookkeeping of one seeded sequence."""

    def __init__(self, cluster: LocalDeployment, writers: dict[str, IdWriter],
                 seed: int) -> None:
        self.cluster, self.client, self.writers = cluster, cluster.client, writers
        self.deployment: Deployment = cluster.deployment
        self.rng, self.seed = random.Random(seed), seed
        self.scenarios = self.faults = 0
        self.lost: set[int] = set()
        self.violations: list[str] = []

    # -- choosing ----------------------------------------------------------------------------
    def plan(self, count: int) -> list[str]:
        """`count` kinds, each about as often as the others, in a seeded order."""
        kinds = [KINDS[i % len(KINDS)] for i in range(count)]
        self.rng.shuffle(kinds)
        return kinds

    def node_with_primaries(self) -> str:
        holding = sorted(n["name"] for n in self.client.nodes() if n["primaries"])
        return self.rng.choice(holding)

    # -- faults ------------------------------------------------------------------------------
    def primaries_on(self, node: str) -> dict[str, int]:
        """The environments whose primary is on `node`, with their epoch now."""
        views = {n: self.client.environment(n) for n in HOMES}
        return {n: v["epoch"] for n, v in views.items() if primary_node(v) == node}

    def writable_again(self, moved: dict[str, int], since: float, s: Scenario) -> None:
        """Each of `moved` acknowledges a write at a later epoch, after `since`."""
        for env, epoch in moved.items():
            if not poll_until_ok(lambda e=env, ep=epoch: self.writers[e].first_ack(ep + 1, since)):
                raise Violation(f"{s}: {env} took no write at an epoch after {epoch}")

    def failed_over(self, node: str, before: set[str], s: Scenario) -> dict:
        """The node failover of `node` the fault caused, once ended: it must succeed."""
        op = poll_until(lambda: ended(node_operation(self.client, "node.failover", node,
                                                     before)),
                        SETTLE, 0.1, f"{s}: the node failover of {node}", (TandemError,))
        if op["state"] != "succeeded":
            raise Violation(f"{s}: node.failover {op['id']} ended {op['state']}: "
                            f"{op.get('error')}")
        return op

    def kill(self, s: Scenario) -> None:
        moved, before = self.primaries_on(s.node), operation_ids(self.client)
        since = time.monotonic()
        self.cluster.kill(s.node)
        self.failed_over(s.node, before, s)
        self.writable_again(moved, since, s)

    def partition_controller(self, s: Scenario) -> None:
        moved, before = self.primaries_on(s.node), operation_ids(self.client)
        since = time.monotonic()
        self.cut([f"{s.node}>controller", f"controller>{s.node}"])
        self.failed_over(s.node, before, s)
        self.writable_again(moved, since, s)

    def partition_local(self, s: Scenario) -> None:
        peers = [n for n in self.deployment.nodes_in(self.region_of(s.node)) if n != s.node]
        after = self.client.events()["last"]
        self.cut([f"{a}>{b}" for p in peers for a, b in ((s.node, p), (p, s.node))])

        def sync_lost() -> list[dict]:
            return [e for e in self.client.events(after=after)["events"]
                    if e["type"] == "replica.sync_lost"]

        if not poll_until_ok(sync_lost):
            raise Violation(f"{s}: no replica.sync_lost while cut from {', '.join(peers)}")
        s.notes.append(f"{len(sync_lost())} sync_lost")
        now = time.monotonic()
        for env in self.primaries_on(s.node):  # writes go on once sync is recorded lost
            if not poll_until_ok(lambda e=env: self.writers[e].wait_for_ack_after(now)):
                raise Violation(f"{s}: {env} took no write after losing sync")

    def drain(self, s: Scenario) -> None:
        op = self.client.wait_operation(self.client.drain_node(s.node)["id"], timeout=SETTLE)
        if op["state"] != "succeeded":
            raise Violation(f"{s}: node.drain ended {op['state']}: {op.get('error')}")
        s.notes.append(f"{len(op['result']['environments'])} primaries moved")

    def kill_during_drain(self, s: Scenario) -> None:
        before = operation_ids(self.client)
        s.drain = self.client.drain_node(s.node)["id"]
        time.sleep(self.rng.uniform(0.0, 0.15))  # its switchovers take about that long
        self.cluster.kill(s.node)
        self.failed_over(s.node, before, s)  # whatever the drain had not moved yet

    # -- recovery ----------------------------------------------------------------------------
    def cut(self, links: list[str]) -> None:
        set_links(self.deployment, {"links": links, "mode": "cut"})

    def region_of(self, node: str) -> str:
        return self.deployment.nodes[node]["region"]

    def restore(self, s: Scenario) -> None:
        """Links healed, every node running and uncordoned, every environment with a sync
        local secondary and nothing behind, every region healthy and still home."""
        set_links(self.deployment, {"mode": "ok"})
        for node in self.deployment.nodes:
            if self.cluster.processes[node].poll() is not None:
                self.cluster.start(node)
        poll_until(lambda: not any(o["kind"] == "node.drain" and not ended(o)
                                   for o in self.client.operations(limit=50)),
                   SETTLE, 0.2, f"{s}: the drains to end", (TandemError,))
        for node in self.deployment.nodes:  # a no-op on a node never drained; a drained
            self.client.uncordon_node(node)  # one restarted may list as down, not cordoned
        try:
            poll_until(lambda: all(n["state"] == "healthy" for n in self.client.nodes())
                       and protected(self.client, HOMES), SETTLE, 0.2,
                       "every node healthy, every environment with a sync local secondary",
                       (TandemError,))
        except TimeoutError as exc:
            raise Violation(f"{s} did not recover: {exc}") from None
        if s.drain is not None:
            op = self.client.operation(s.drain)
            error = op.get("error") or {}
            s.notes.append(f"drain {op['state']}" + (f" ({error.get('code')})" if error else ""))
        regions = {r["name"]: r["state"] for r in self.client.regions()}
        homes = {e["name"]: e["primary_region"] for e in self.client.environments()
                 if e["name"] in HOMES}
        if set(regions.values()) != {"healthy"} or homes != HOMES:
            raise Violation(f"{s}: a region failed over: {regions}, {homes}")

    # -- the checks --------------------------------------------------------------------------
    def check(self, s: Scenario) -> list[str]:
        """The invariants, with the writers paused; answers what is broken."""
        for writer in self.writers.values():
            writer.pause()
        try:
            return [f"{s}: {v}" for env in HOMES for v in self.check_env(env, s)] + [
                f"{s}: {v}" for v in acknowledged_twice(a for w in self.writers.values()
                                                       for a in w.acks)]
        finally:
            for writer in self.writers.values():
                writer.resume()

    def check_env(self, env: str, s: Scenario) -> Iterator[str]:
        writer, client = self.writers[env], self.client
        acked, unknown = writer.acked_ids(), set(writer.unknown)
        if writer.epochs != sorted(writer.epochs):
            yield f"{env}: an acknowledgement at an older epoch after a newer one"
        if not poll_until_ok(lambda: caught_up(client, env)):
            yield f"{env}: the secondaries did not catch up"
        elif not checksums_equal(self.cluster, env):
            yield f"{env}: the replicas' checksums differ"
        found = ids_in(client, env, TABLE)
        present = set(found)
        if len(found) != len(present):
            yield f"{env}: an id is present twice"
        missing = acked - present
        self.lost |= missing
        if missing:
            yield f"{env}: acknowledged ids lost: {sorted(missing)[:20]}"
        if present - acked - unknown:
            yield f"{env}: ids nobody wrote: {sorted(present - acked - unknown)[:20]}"
        _, ids, unacked = rewound(client, env, TABLE)
        if not unacked:
            yield f"{env}: a rewound bundle not marked acknowledged: false"
        if ids & acked:
            yield f"{env}: acknowledged ids rewound: {sorted(ids & acked)[:20]}"
        if ids & present:
            yield f"{env}: rewound ids also present: {sorted(ids & present)[:20]}"
        issued = set(range(writer.first_id, writer.next_id, writer.step))
        if (issued - acked - present) - unknown:
            yield f"{env}: ids neither acknowledged, present nor unknown: " \
                  f"{sorted((issued - acked - present) - unknown)[:20]}"

    def unexplained(self) -> list[str]:
        """Writer errors no fault here explains (a bug in a call, not an outage)."""
        return [m for w in self.writers.values() for m in w.errors
                if not any(why in m for why in WHY)]

    # -- running -----------------------------------------------------------------------------
    def run(self, count: int) -> None:
        actions: dict[str, Callable[[Scenario], None]] = {
            "kill": self.kill, "partition-controller": self.partition_controller,
            "partition-local": self.partition_local, "drain": self.drain,
            "kill-during-drain": self.kill_during_drain}
        for number, kind in enumerate(self.plan(count), 1):
            s = Scenario(number, kind, self.node_with_primaries())
            started, failed = time.monotonic(), {e: len(w.failed) for e, w in self.writers.items()}
            try:
                actions[kind](s)
                self.restore(s)
                broken = self.check(s)
            except Violation as exc:
                broken = [str(exc)]
            met = [m for e, w in self.writers.items() for _, m in w.failed[failed[e]:]]
            s.notes.append(unknown_outcomes(met))
            if kind == "drain" and any("sync_unavailable" in m for m in met):
                # A planned switchover confirms what the old primary committed before its
                # fence: nothing is left outcome-unknown by a drain alone.
                broken.append(f"{s}: a drain left writes sync_unavailable")
            self.scenarios += 1
            self.faults += FAULTS.get(kind, 1)
            print(f"{s}: {round(time.monotonic() - started, 1)} s "
                  f"{'; '.join(s.notes)}{' VIOLATED' if broken else ''}", flush=True)
            if broken:
                self.violations += broken
                return

    def summary(self) -> str:
        acked = sum(len(w.acks) for w in self.writers.values())
        return (f"node campaign seed={self.seed}: scenarios={self.scenarios} "
                f"faults={self.faults} acknowledged={acked} lost={len(self.lost)} "
                f"violations={len(self.violations)}")


def unknown_outcomes(messages: list[str]) -> str:
    """`N unknown (code: n, …)`: the writes of a scenario whose outcome is unknown."""
    codes = Counter(match[1] if (match := ERROR_CODE.search(m)) else "other"
                    for m in messages)
    by_code = ", ".join(f"{c}: {n}" for c, n in codes.items())
    return f"{len(messages)} unknown" + (f" ({by_code})" if by_code else "")


def poll_until_ok(check: Callable[[], object], timeout: float = SETTLE) -> bool:
    try:
        poll_until(check, timeout, 0.05, ignore=(TandemError,))
    except TimeoutError:
        return False
    return True


def test_the_fault_proxy_cuts_a_node_from_its_local_peers_not_a_region_from_itself(
        tmp_path):
    deployment = Deployment.plan(tmp_path, [("west", "east")], 2, 20000)
    deployment.add_fault_proxy()
    assert {"west-1>west-2", "west-2>west-1", "east-1>east-2"} <= set(deployment.links())
    cut = deployment.region_links("west")
    assert "west-1>west-2" not in cut and {"west-1>controller", "east-1>west-2"} <= set(cut)


@pytest.fixture(scope="module")
def campaign_cluster(start_deployment: Callable[..., LocalDeployment]) -> LocalDeployment:
    nodes = int(os.environ.get("TANDEM_NODES_PER_REGION") or 2)
    return start_deployment("node-campaign", nodes_per_region=nodes, fault_proxy=True)


@pytest.mark.soak
def test_node_fault_campaign(campaign_cluster: LocalDeployment):
    seed = int(os.environ.get("TANDEM_SEED") or random.randrange(1 << 32))
    rounds = int(os.environ.get("TANDEM_SOAK") or 1)
    print(f"node campaign: seed {seed} (TANDEM_SEED={seed} replays it)", flush=True)
    client = campaign_cluster.client
    writers = {}
    for env, home in HOMES.items():
        client.create_environment(env, region=home)
        writers[env] = IdWriter(client, env, table=TABLE)
        writers[env].create_table(keyed=False)  # an id applied twice shows as two rows
    poll_until(lambda: protected(client, HOMES), 60, 0.2, "sync local secondaries")
    campaign = Campaign(campaign_cluster, writers, seed)
    for writer in writers.values():
        writer.start()
    try:
        campaign.run(BOUNDED * rounds)
    finally:
        for writer in writers.values():
            writer.stop()
        print(campaign.summary(), flush=True)
    assert not campaign.violations, (
        f"seed {seed} (TANDEM_SEED={seed} replays it):\n" + "\n".join(campaign.violations)
        + "\n" + campaign_cluster.logs_tail(30))
    assert campaign.scenarios == BOUNDED * rounds
    assert not campaign.unexplained(), campaign.unexplained()[:5]
    assert all(w.acks for w in writers.values()), "a writer never got a write through"
