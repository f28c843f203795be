"""`tandem bench switchover`: how long writers wait during planned failovers, and how
long a whole region takes to switch.

It starts a real local deployment (separate processes, one node per region) in a temporary
directory and measures, through the gateway and the SDK:

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

Percentiles are nearest-rank: with 20 failovers, p99 is the largest of the 20.
The goals are printed next to the figures, as numbers only.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tandemdb.client import Client, TandemError
from tandemdb.client.operations import environment_results, max_rto_seconds
from tandemdb.common.deployment import Deployment
from tandemdb.local import LocalDeployment, free_base_port

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


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (an observed value; p99 of 20 samples is the largest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def longest_gap(acks: list[float], start: float, end: float) -> float | None:
    """The longest interval between consecutive acknowledgements that overlaps
    [start, end]; None when no acknowledgement came after `end` (the gap is not closed)."""
    gaps = [b - a for a, b in zip(acks, acks[1:], strict=False) if b >= start and a <= end]
    if not acks or acks[-1] < end:
        return None
    return max(gaps) if gaps else 0.0


class Writer(threading.Thread):
    """Writes unique ids round-robin over `envs`, one per transaction, until stopped;
    keeps the time of every acknowledgement (monotonic clock)."""

    def __init__(self, url: str, token: str, envs: list[str], first_id: int = 1,
                 step: int = 1) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, token)
        self.envs, self.next_id, self.step = envs, first_id, step
        self.acks: list[float] = []
        self.acked: dict[str, int] = dict.fromkeys(envs, 0)
        self.errors: list[str] = []
        self.stopping = threading.Event()
        self.running = threading.Event()  # cleared by pause()
        self.running.set()
        self.busy = threading.Lock()  # held for each write

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            if not self.running.wait(0.1):
                continue
            with self.busy:
                if not self.running.is_set():  # paused between the wait and the lock
                    continue
                env = self.envs[i % len(self.envs)]
                try:
                    self.client.sql(env, INSERT, [self.next_id])
                except TandemError as exc:
                    self.errors.append(f"{env} id {self.next_id}: {exc}")
                    time.sleep(0.01)
                else:
                    self.acks.append(time.monotonic())
                    self.acked[env] += 1
                self.next_id += self.step
                i += 1

    def pause(self) -> None:
        """Stop writing; returns once the write in flight (if any) has been answered."""
        self.running.clear()
        with self.busy:
            pass

    def resume(self) -> None:
        self.running.set()

    def wait_for_ack_after(self, moment: float, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while (not self.acks or self.acks[-1] <= moment) and time.monotonic() < deadline:
            time.sleep(0.005)

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        self.client.close()


def timed_operation(client: Client, start: Callable[[], dict]) -> tuple[dict, float, float]:
    """Start an operation and follow it to its end: (record, started, ended) monotonic."""
    began = time.monotonic()
    op = start()
    op = client.wait_operation(op["id"], timeout=OPERATION_TIMEOUT)
    return op, began, time.monotonic()


def wait_replicated(client: Client, names: set[str], timeout: float = 300.0) -> None:
    """Until every secondary of `names` is seeded and has applied its primary's lsn:
    a planned failover waits for it anyway, but should not be timed doing so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [v["name"] for v in client.environments() if v["name"] in names
                   and not _caught_up(v)]
        if not pending:
            return
        time.sleep(0.2)
    raise RuntimeError(f"secondaries not caught up after {timeout:.0f}s: {pending[:5]}…")


def _caught_up(view: dict) -> bool:
    secondaries = [r for r in view.get("replicas", []) if r.get("role") == "secondary"]
    return bool(secondaries) and all(
        not r.get("seeding") and r.get("applied_lsn") is not None
        and r.get("applied_lsn") == view.get("primary_lsn") for r in secondaries)


def _ms(seconds: float | None) -> float | None:
    """Milliseconds, rounded; None (JSON null) when nothing was measured."""
    return None if seconds is None else round(seconds * 1000, 1)


def single_environment(client: Client, url: str, token: str, failovers: int,
                       say: Callable[[str], None]) -> dict:
    client.create_environment(SOLO, type="production", region=HOME)
    wait_replicated(client, {SOLO})
    client.sql(SOLO, TABLE)
    wait_replicated(client, {SOLO})
    writer = Writer(url, token, [SOLO])
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
            gap = longest_gap(writer.acks, began, ended)
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
        "writer_writes_per_s": round(len(writer.acks) / max(1e-9, writer.acks[-1]
                                                            - writer.acks[0]), 1)
        if len(writer.acks) > 1 else 0.0,
        "writer_errors": len(writer.errors),
        "writes_acknowledged": len(writer.acks),
        "writes_found": found,
        **_samples("failures", failed),
        **_samples("writer_error_samples", writer.errors),
    }


def whole_region(client: Client, url: str, token: str, envs: int,
                 say: Callable[[str], None]) -> dict:
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
    writers = [Writer(url, token, names[i::REGION_WRITERS], first_id=i + 1,
                      step=REGION_WRITERS) for i in range(min(REGION_WRITERS, envs))]
    for w in writers:
        w.start()
    try:
        for w in writers:
            w.wait_for_ack_after(time.monotonic())
        say(f"region failover of {envs} environments under load")
        over, began, ended = timed_operation(client, lambda: client.region_failover(HOME))
        switch = ended - began
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


def run(envs: int = 200, failovers: int = 20,
        progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        deployment = Deployment.plan(Path(tmp), [(HOME, PAIR)], 1, free_base_port(4))
        deployment.save()
        cluster = LocalDeployment(deployment)
        try:
            say("starting a deployment")
            cluster.start_all()
            url, token = deployment.gateway_url, deployment.token
            with Client(url, token) as client:
                _wait_nodes(client)
                single = single_environment(client, url, token, failovers, say)
                region = whole_region(client, url, token, envs, say)
        finally:
            cluster.stop_all()
    return {"bench": "switchover", **single, **region,
            "goal_p99_ms": GOAL_P99_MS, "goal_1000_envs_seconds": GOAL_1000_ENVS_SECONDS,
            "p99_note": f"nearest rank over {failovers} failovers"
                        + (" (= the largest)" if failovers < 100 else "")}


def _wait_nodes(client: Client, timeout: float = 20.0) -> None:
    """Until every node has sent a heartbeat: environments are placed on healthy nodes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = [n for r in client.regions() for n in r.get("nodes", [])]
        if nodes and all(n.get("healthy") for n in nodes):
            return
        time.sleep(0.1)
