"""`tandem bench switchover`: how long writers wait during planned failovers, and how
long a whole region takes to switch.

It starts a real local deployment (separate processes, one node per region) in a temporary
directory, its control plane on `store` (sqlite: one controller; etcd: a 3-member cluster
and a controller per site, bench/stores.py), and measures, through west's gateway and the
SDK:

(a) **one environment under writer load**: a thread writes one row per transaction as fast
    as it can while the environment is failed over `failovers` times, back and forth. For
    each failover, `env_unavailability` is the longest gap between two consecutive
    acknowledged writes that overlaps the failover (from the call that starts it to the
    answer that it has ended): the pause a writer actually sees. The gateway holds writes
    during the switch, so the writer should see no errors (`writer_errors`). Also the
    controller's own `rto_seconds` (fence to first write on the new primary).
(b) **a region**: `envs` production environments homed in `west`, a few writer threads
    round-robin over them, then `POST /v1/regions/west/failover` and the failback, each
    timed from the call to the end of the operation (client side, polling included).
    `projected_1000_envs_seconds` scales the failover linearly to 1,000 environments.
    `region_switch_cpu_seconds`: the CPU each kind of process used meanwhile (controllers,
    etcd members, nodes, gateways): on a small machine the switch's time follows it.

Percentiles are nearest-rank: with 20 failovers, p99 is the largest of the 20.
The goals are printed next to the figures, as numbers only.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tandemdb.bench import stores
from tandemdb.client import Client
from tandemdb.client.operations import environment_results, max_rto_seconds
from tandemdb.common.layout import SQLITE
from tandemdb.testing import IdWriter, LocalDeployment, wait_replicated
from tandemdb.testing import longest_gap as longest_gap  # the demo and tests use it here

SOLO = "solo"
HOME, PAIR = "west", "east"
GOAL_P99_MS = 500
GOAL_1000_ENVS_SECONDS = 10
REGION_WRITERS = 4
CREATE_WORKERS = 8
OPERATION_TIMEOUT = 600.0
SETTLE_SECONDS = 0.2  # between failovers: writes flow again on the new primary
TABLE = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY)"
INSERT = "INSERT INTO t(id) VALUES (?)"
# The figures `--store sqlite,etcd` compares (bench/stores.py).
FIGURES = ("rto_p99_ms", "region_switch_seconds", "rto_p50_ms", "env_unavailability_p99_ms",
           "region_failback_seconds", "region_switch_rto_max_ms",
           "region_switch_control_plane_cpu_seconds")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (an observed value; p99 of 20 samples is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def id_writer(url: str, token: str, envs: list[str], first_id: int = 1,
              step: int = 1) -> IdWriter:
    """Unique ids round-robin over `envs` into table `t`, one per transaction, through a
    client of its own (closed by `stop`)."""
    return IdWriter(Client(url, token), envs, table="t", stamp=False, first_id=first_id,
                    step=step, error_pause=0.01, owns_sender=True)


def timed_operation(client: Client, start: Callable[[], dict]) -> tuple[dict, float, float]:
    """Start an operation and follow it to its end: (record, started, ended) monotonic."""
    began = time.monotonic()
    op = start()
    op = client.wait_operation(op["id"], timeout=OPERATION_TIMEOUT)
    return op, began, time.monotonic()


def _ms(seconds: float | None) -> float | None:
    """Milliseconds, rounded; None (JSON null) when nothing was measured."""
    return None if seconds is None else round(seconds * 1000, 1)


def single_environment(client: Client, url: str, token: str, failovers: int,
                       say: Callable[[str], None]) -> dict:
    client.create_environment(SOLO, type="production", region=HOME)
    wait_replicated(client, {SOLO})
    client.sql(SOLO, TABLE)
    wait_replicated(client, {SOLO})
    writer = id_writer(url, token, [SOLO])
    writer.start()
    gaps: list[float] = []
    rtos: list[float] = []
    failed: list[str] = []
    try:
        writer.wait_for_ack_after(time.monotonic())
        for k in range(failovers):
            say(f"failover {k + 1}/{failovers} of one environment under load")
            op, began, ended = timed_operation(client, lambda: client.failover(SOLO))
            if op["state"] != "succeeded":
                failed.append(f"{op['id']}: {op.get('error')}")
            writer.wait_for_ack_after(ended)
            gap = writer.longest_gap(began, ended)
            if gap is not None:
                gaps.append(gap)
            rto = max_rto_seconds(op)
            if rto is not None:
                rtos.append(rto)
            time.sleep(SETTLE_SECONDS)
    finally:
        writer.stop()
    found = client.sql(SOLO, "SELECT count(*) FROM t")["results"][0]["rows"][0][0]
    return {
        "failovers": failovers,
        "failovers_failed": len(failed),
        "env_unavailability_p50_ms": _ms(percentile(gaps, 50)),
        "env_unavailability_p99_ms": _ms(percentile(gaps, 99)),
        "env_unavailability_max_ms": _ms(max(gaps, default=None)),
        "rto_p50_ms": _ms(percentile(rtos, 50)),
        "rto_p99_ms": _ms(percentile(rtos, 99)),
        "writer_writes_per_s": writer.writes_per_second(),
        "writer_errors": len(writer.errors),
        "writes_acknowledged": len(writer.acks),
        "writes_found": found,
        **_samples("failures", failed),
        **_samples("writer_error_samples", writer.errors),
    }


def cpu_seconds(cluster: LocalDeployment) -> dict[str, float]:
    """CPU time (user + system) used so far by the deployment's processes, summed per kind
    (controller, etcd, node, gateway), from /proc: what a region switch costs where, which
    on a small machine is what its time follows. Empty where there is no /proc."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    used: dict[str, float] = {}
    for name, proc in cluster.processes.items():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kind = cluster.kind(name)
        used[kind] = used.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return used


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {kind: round(after[kind] - before.get(kind, 0.0), 2) for kind in after}


def whole_region(client: Client, url: str, token: str, envs: int,
                 say: Callable[[str], None],
                 cpu: Callable[[], dict[str, float]] = dict) -> dict:
    names = [f"r{i:04d}" for i in range(envs)]
    created = 0

    def create(name: str) -> None:
        nonlocal created
        with Client(url, token) as own:
            own.create_environment(name, type="production", region=HOME)
        created += 1
        say(f"creating {envs} production environments ({created} done)")

    def create_table(name: str) -> None:
        with Client(url, token) as own:
            own.sql(name, TABLE)

    with ThreadPoolExecutor(CREATE_WORKERS) as pool:
        list(pool.map(create, names))
        # Tables only once every replica is reported: a replica created while a heartbeat
        # answer was in flight can be dropped by its node and made again a moment later.
        say(f"waiting for {envs} geo-secondaries to be seeded")
        wait_replicated(client, set(names))
        list(pool.map(create_table, names))
    wait_replicated(client, set(names))
    writers = [id_writer(url, token, names[i::REGION_WRITERS], first_id=i + 1,
                         step=REGION_WRITERS) for i in range(min(REGION_WRITERS, envs))]
    for w in writers:
        w.start()
    try:
        for w in writers:
            w.wait_for_ack_after(time.monotonic())
        say(f"region failover of {envs} environments under load")
        used = cpu()
        over, began, ended = timed_operation(client, lambda: client.region_failover(HOME))
        switch = ended - began
        spent = cpu_spent(used, cpu())
        time.sleep(1.0)  # writes flow in the other region for a moment
        say(f"region failback of {envs} environments under load")
        back, began, ended = timed_operation(client, lambda: client.region_failback(HOME))
        failback = ended - began
    finally:
        for w in writers:
            w.stop()
    return {
        "region_envs": envs,
        "region_switch_seconds": round(switch, 2),
        "region_switch_state": over["state"],
        "region_switch_envs_failed": _failed(over),
        "region_switch_rto_max_ms": _ms(max_rto_seconds(over)),
        "region_switch_cpu_seconds": spent,
        "region_switch_control_plane_cpu_seconds": round(
            spent.get("controller", 0.0) + spent.get("etcd", 0.0), 2) if spent else None,
        "region_failback_seconds": round(failback, 2),
        "region_failback_state": back["state"],
        "region_failback_envs_failed": _failed(back),
        "projected_1000_envs_seconds": round(switch * 1000 / envs, 1),
        "region_writer_errors": sum(len(w.errors) for w in writers),
        "region_writes_acknowledged": sum(len(w.acks) for w in writers),
        **_samples("region_switch_failures", _failures(over)),
        **_samples("region_failback_failures", _failures(back)),
        **_samples("region_writer_error_samples", [e for w in writers for e in w.errors]),
    }


def _failures(op: dict) -> list[str]:
    """`env: code: message` for each environment that failed (and the operation's own)."""
    out = [f"{e.get('environment')}: {e.get('error')}" for e in environment_results(op)
           if e.get("state") == "failed" or e.get("error")]
    if op.get("error"):
        out.insert(0, f"{op.get('id')}: {op['error']}")
    return out


def _samples(key: str, items: list[str], keep: int = 3) -> dict:
    """At most `keep` examples under `key`, only when there are any (the JSON stays short)."""
    return {key: items[:keep]} if items else {}


def _failed(op: dict) -> int:
    result = op.get("result") or {}
    if isinstance(result.get("failed"), int):
        return result["failed"]
    return sum(1 for e in environment_results(op) if e.get("state") == "failed")


def run(envs: int = 200, failovers: int = 20, store: str = SQLITE,
        progress: Callable[[str], None] | None = None) -> dict:
    """One deployment with its control plane on `store`: one environment, then a region."""
    say = progress or (lambda _m: None)
    say(f"starting a deployment (control plane on {store})")
    with LocalDeployment.temporary(pairs=[(HOME, PAIR)], shape=stores.shape(store),
                                   prefix="tandem-bench-") as cluster:
        url, token = cluster.deployment.gateway_url, cluster.deployment.token
        single = single_environment(cluster.client, url, token, failovers, say)
        region = whole_region(cluster.client, url, token, envs, say,
                              lambda: cpu_seconds(cluster))
    return {"bench": "switchover", "store": store, **single, **region,
            "goal_p99_ms": GOAL_P99_MS, "goal_1000_envs_seconds": GOAL_1000_ENVS_SECONDS,
            "p99_note": f"nearest rank over {failovers} failovers"
                        + (" (= the largest)" if failovers < 100 else "")}


def run_stores(stores_: list[str], rounds: int = 1, progress: Callable[[str], None] | None
               = None, **options: object) -> Iterator[dict]:
    """`run` on each store, alternating for `rounds`, then their comparison (stores.py);
    each line as soon as it is known."""
    return stores.side_by_side(run, stores_, rounds, FIGURES, progress, None, **options)
