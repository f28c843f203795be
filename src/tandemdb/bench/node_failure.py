"""`tandem bench node-failure`: what the loss of one node costs, measured end to end.

A real local deployment with 2 nodes per region (each its own process) and the deployment's
defaults (`node_grace_seconds` 2, `lease_ttl`). `envs` production environments homed in
`west`, every primary gathered on one west node (a planned switchover `to=` that node for
those placed on the other), each with its local secondary recorded sync; one writer thread
of unique ids per environment through the gateway. Then that node is SIGKILLed and nobody
calls anything: the controller must declare it down and promote each sync local secondary
(`node.failover`, docs/ha.md).

- `detect_to_writable_seconds`: from the kill to the first write acknowledged at the new
  epoch, per environment and the largest; `goal_seconds` = node grace + lease TTL + 1;
- `node_failover_rto_median_seconds` / `_max_seconds`: each environment's `rto_seconds` in
  the `node.failover` result (its move, from its start to the release of held calls);
- `acked_lost`: acknowledged ids missing from the primary afterwards (must be 0);
  `writes_unknown_outcome`: writes whose answer was an error or never came;
- `region_failed_over`: west's region state is not `healthy`, or an environment's primary
  left west (must be false: one lost node never fails a region over);
- `re_replication_seconds`: from the restart of the node until every environment again has
  a local secondary recorded sync and no replica `behind`. With 2 nodes per region this is
  the node's **rejoin** (rewind, catch up, sync regained); with 3 it would be the
  self-healing's re-creation on the third node (after `replace_after_seconds`);
- `rewound_entries`: entries the old primaries rewound at the rejoin, listed with
  `acknowledged: false`; `rewound_acked`: acknowledged ids among them (must be 0);
- `checksums_equal`: after the rejoin, every replica of every environment has the same
  checksum at the same lsn (asked of each node itself).

Nothing here asserts a speed; the figures are printed next to the goal.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Iterable

import httpx

from tandemdb.client import Client, TandemError
from tandemdb.common.http import SECRET_HEADER
from tandemdb.testing import (
    Ack,
    IdWriter,
    LocalDeployment,
    holds_within,
    ids_in,
    lost_writes,
    poll_until,
    wait_replicated,
)

from .failover import region

HOME, PAIR = "west", "east"
TABLE = "node_loss"
WARM_UP_SECONDS = 1.5  # writes flow (and replicate) this long before the kill
AFTER_SECONDS = 1.0  # and this long once every environment writes again
NODE_FAILOVER = "node.failover"


# -- what the catalog says -------------------------------------------------------------------

def primary_node(view: dict) -> str | None:
    return next((r["node"] for r in view["replicas"] if r["role"] == "primary"), None)


def has_sync_local(view: dict) -> bool:
    """A secondary of kind `local` recorded sync, and no replica still `behind` (fenced
    and waiting to rejoin): the environment survives its primary's node again."""
    replicas = view["replicas"]
    return not any(r.get("behind") for r in replicas) and any(
        r["role"] == "secondary" and r.get("kind") == "local" and r.get("sync")
        for r in replicas)


def protected(client: Client, names: Iterable[str]) -> bool:
    """Every one of `names` has a sync local secondary (`has_sync_local`)."""
    wanted = set(names)
    return all(has_sync_local(v) for v in client.environments() if v["name"] in wanted)


def operation_ids(client: Client) -> set[str]:
    """The newest operations' ids: what a later `node_operation` leaves out."""
    return {o["id"] for o in client.operations(limit=100)}


def node_operation(client: Client, kind: str, node: str,
                   before: Collection[str] = ()) -> dict | None:
    """The newest operation of `kind` on `node` that is not among the ids `before`."""
    return next((o for o in client.operations(limit=100) if o["kind"] == kind
                 and o["target"] == node and o["id"] not in before), None)


def ended(op: dict | None) -> dict | None:
    """`op` once it has ended (succeeded or failed), else None."""
    return op if op is not None and op["state"] not in ("pending", "running") else None


# -- what the nodes hold ---------------------------------------------------------------------

def replica_checksums(cluster: LocalDeployment, env: str) -> dict[str, dict]:
    """Each replica's checksum `{lsn, total, …}`, asked of its node itself, by node."""
    deployment = cluster.deployment
    headers = {SECRET_HEADER: deployment.secret}
    sums = {}
    for replica in cluster.client.environment(env)["replicas"]:
        node = replica["node"]
        answer = httpx.get(f"{deployment.node_url(node)}/internal/v1/replicas/{env}/checksum",
                           headers=headers, timeout=10)
        answer.raise_for_status()
        sums[node] = answer.json()
    return sums


def checksums_equal(cluster: LocalDeployment, env: str, timeout: float = 30.0) -> bool:
    """Once every replica is at one lsn (writes stopped, the last ones replicated): one
    checksum for all. False if they never reach one lsn within `timeout`."""
    sums: dict[str, dict] = {}

    def one_lsn() -> bool:
        sums.clear()
        sums.update(replica_checksums(cluster, env))
        return len({s["lsn"] for s in sums.values()}) == 1

    if not holds_within(one_lsn, timeout, 0.1, ignore=(TandemError, httpx.HTTPError)):
        return False
    return len({s["total"] for s in sums.values()}) == 1


def acknowledged_twice(acks: Iterable[Ack]) -> list[str]:
    """(env, epoch, lsn) acknowledged for two different ids: two writable primaries in one
    epoch (invariant 2). Answers one line per such lsn."""
    seen: dict[tuple[str, int, int], int] = {}
    twice = []
    for ack in acks:
        other = seen.setdefault((ack.env, ack.epoch, ack.lsn), ack.id)
        if other != ack.id:
            twice.append(f"{ack.env}: lsn {ack.lsn} of epoch {ack.epoch} acknowledged for "
                         f"ids {other} and {ack.id}")
    return twice


def rewound(client: Client, env: str, table: str) -> tuple[int, set[int], bool]:
    """(entries, ids, all marked `acknowledged: false`) of the env's lost-writes bundles."""
    answer = client.lost(env)
    count, ids = lost_writes(answer, table)
    unacked = all(b.get("acknowledged") is False for b in answer["bundles"])
    return count, ids, unacked


# -- setting up ------------------------------------------------------------------------------

def gather(client: Client, names: list[str], node: str, say: Callable[[str], None]) -> None:
    """Put every primary of `names` on `node` (a planned switchover to its local secondary
    there), then wait until each has its local secondary recorded sync again."""
    moving = [n for n in names if primary_node(client.environment(n)) != node]
    say(f"moving {len(moving)} primaries to {node}")
    for name in moving:
        done = client.wait_operation(client.failover(name, to=node)["id"], timeout=120)
        if done["state"] != "succeeded":
            raise RuntimeError(f"the switchover of {name} to {node} ended {done['state']}: "
                               f"{done.get('error')}")
    poll_until(lambda: protected(client, names), 60, 0.2,
               f"a sync local secondary for each of {len(names)} environment(s)")


def median_max(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.median(values), 3), round(max(values), 3)


# -- the benchmark -----------------------------------------------------------------------------

def measure(cluster: LocalDeployment, names: list[str], node: str,
            say: Callable[[str], None]) -> dict:
    """Writers on, SIGKILL `node`, wait for its node failover and writes at the new epochs,
    restart it, wait for the rejoin and sync, count what was lost."""
    client, deployment = cluster.client, cluster.deployment
    grace, ttl = deployment.node_grace_seconds or 0.0, deployment.lease_ttl
    writers = {n: IdWriter(Client(deployment.gateway_url, deployment.token), n, table=TABLE,
                           owns_sender=True) for n in names}
    for writer in writers.values():
        writer.create_table(keyed=False)  # an id applied twice shows as two rows
        writer.start()
    try:
        say(f"writing into {len(names)} environment(s) before the loss of {node}")
        time.sleep(WARM_UP_SECONDS)
        epoch = {n: client.environment(n)["epoch"] for n in names}
        since = operation_ids(client)
        say(f"SIGKILL of {node}; waiting for the controller to move its primaries")
        killed = time.monotonic()
        cluster.kill(node)
        limit = grace + ttl + 60
        holds_within(lambda: all(w.first_ack(epoch[n] + 1, killed)
                                 for n, w in writers.items()), limit)
        time.sleep(AFTER_SECONDS)
    finally:
        for writer in writers.values():
            writer.stop()
    holds_within(lambda: ended(node_operation(client, NODE_FAILOVER, node, since)), 30)
    op = node_operation(client, NODE_FAILOVER, node, since) or {}
    firsts = {n: w.first_ack(epoch[n] + 1, killed) for n, w in writers.items()}
    writable = {n: None if a is None else round(a.at - killed, 3) for n, a in firsts.items()}
    views = {n: client.environment(n) for n in names}
    failed_over = region(client, HOME)["state"] != "healthy" or any(
        v["primary_region"] != HOME for v in views.values())
    rto = {line["environment"]: line.get("rto_seconds")
           for line in (op.get("result") or {}).get("environments", [])}

    say(f"{node} back; waiting for its replicas to rejoin and regain sync")
    restarted = time.monotonic()
    cluster.start(node)
    back = holds_within(lambda: protected(client, names), 120, 0.1)
    re_replication = round(time.monotonic() - restarted, 3) if back else None
    equal = all(checksums_equal(cluster, n) for n in names)
    lost = {n: len(w.acked_ids() - set(ids_in(client, n, TABLE))) for n, w in writers.items()}
    bundles = {n: rewound(client, n, TABLE) for n in names}
    rto_median, rto_max = median_max([v for v in rto.values() if v is not None])
    return {
        "node": node,
        "node_failover_state": op.get("state"),
        "detect_to_writable_seconds": max((v for v in writable.values() if v is not None),
                                          default=None),
        "detect_to_writable_per_env": writable,
        "all_envs_writable": all(v is not None for v in writable.values()),
        "node_failover_rto_median_seconds": rto_median,
        "node_failover_rto_max_seconds": rto_max,
        "node_failover_rto_per_env": rto,
        "acked_lost": sum(lost.values()),
        "acked_lost_per_env": lost,
        "acknowledged_twice": len(acknowledged_twice(a for w in writers.values()
                                                     for a in w.acks)),
        "region_failed_over": failed_over,
        "re_replication_seconds": re_replication,
        "rewound_entries": sum(count for count, _, _ in bundles.values()),
        "rewound_acked": sum(len(ids & writers[n].acked_ids())
                             for n, (_, ids, _) in bundles.items()),
        "rewound_all_unacknowledged": all(flag for _, _, flag in bundles.values()),
        "checksums_equal": equal,
        "writes_acknowledged": sum(len(w.acks) for w in writers.values()),
        "writes_unknown_outcome": sum(len(w.unknown) for w in writers.values()),
        **({"writer_error_samples": [e for w in writers.values() for e in w.errors][:3]}
           if any(w.errors for w in writers.values()) else {}),
    }


def run(envs: int = 10, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _m: None)
    names = [f"nodeloss{i}" for i in range(envs)]
    say("starting a deployment with 2 nodes per region")
    with LocalDeployment.temporary(pairs=[(HOME, PAIR)], nodes_per_region=2,
                                   prefix="tandem-bench-") as cluster:
        client, deployment = cluster.client, cluster.deployment
        node = deployment.nodes_in(HOME)[0]
        say(f"creating {envs} production environment(s) in {HOME}")
        for name in names:
            client.create_environment(name, type="production", region=HOME)
        wait_replicated(client, names, timeout=120)
        gather(client, names, node, say)
        result = measure(cluster, names, node, say)
        grace, ttl = deployment.node_grace_seconds or 0.0, deployment.lease_ttl
    return {"bench": "node-failure", "envs": envs, "nodes_per_region": 2,
            "node_grace_seconds": grace, "lease_ttl_seconds": ttl,
            "goal_seconds": round(grace + ttl + 1, 2), **result}
