"""`tandem bench isolation`: a tenant's small writes next to another tenant's largest
statements on the same node (issue 9, item 6; invariant 10 of docs/design.md).

It starts a real local deployment (separate processes, one node per region) in a temporary
directory, with a short lease (`lease_ttl`, 1.5 s by default as in `tandem demo`), and two
environments homed on the same node:

- the **victim**, a basic environment (no geo-secondary, so no failsafe lease: should the
  node's lease lapse, its writes get 503 `no_lease` at once), written by one client, one
  small insert every `VICTIM_PERIOD` (or right after the previous answer if it is slower);
- the **neighbour**, a production environment (its entries also stream to `east`), whose
  `clients` (2) each run the largest statements the engine allows, back to back: an
  INSERT of one value as large as a journal entry may carry, a SELECT of the largest
  result allowed, and a DELETE of that row (an entry as large again).

Two phases of `seconds` each: the victim alone (the baseline), then the victim with the
neighbour running (at least one whole round of its statements). For each, the victim's
write latency p50/p99/max (through the gateway), its errors by code, and the least lease
the node had left (`tandem_node_lease_remaining_seconds`, sampled every 50 ms). The
figures come side by side with their ratio (with neighbour / baseline).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx

from tandemdb.client import Client, TandemError
from tandemdb.common.deployment import Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.engine.sandbox import Limits
from tandemdb.testing import LocalDeployment, holds_within, wait_replicated

from .switchover import _ms, _samples, percentile

VICTIM, NEIGHBOUR = "victim", "neighbour"
HOME, PAIR = "west", "east"
VICTIM_PERIOD = 0.02  # seconds between the starts of two victim writes
SAMPLE_PERIOD = 0.05  # seconds between two readings of the node's lease
ROUND_TIMEOUT = 120.0  # for the neighbour's first round of statements
ENTRY_SLACK = 64 << 10  # what an entry holds besides the value: keys, headers, the DDL
RESULT_SLACK = 1 << 20
LEASE_GAUGE = re.compile(r"^tandem_node_lease_remaining_seconds (\S+)$", re.M)


def largest_value_bytes() -> int:
    """The largest value one transaction may write: the engine's bound on a journal entry
    (64 MiB by default) less room for the rest of the entry."""
    return getattr(Limits(), "max_entry_bytes", 64 << 20) - ENTRY_SLACK


def largest_result_bytes() -> int:
    """The largest result a statement may answer, less room for its framing."""
    return Limits().max_result_bytes - RESULT_SLACK


class Victim(threading.Thread):
    """Small inserts at a steady pace; keeps each one's latency and each error's code."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True, name="victim")
        self.client = Client(url, token)
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.codes: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                self.client.sql(VICTIM, "INSERT INTO t(v) VALUES (?)", ["x" * 100])
            except TandemError as exc:
                self.codes[exc.code] += 1
                self.errors.append(str(exc)[:300])
            else:
                self.latencies.append(time.monotonic() - began)
            self.stopping.wait(max(0.0, VICTIM_PERIOD - (time.monotonic() - began)))

    def take(self) -> tuple[list[float], list[str], Counter[str]]:
        """What was measured since the last take, and start afresh."""
        out = (self.latencies, self.errors, self.codes)
        self.latencies, self.errors, self.codes = [], [], Counter()
        return out

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        self.client.close()


class Neighbour(threading.Thread):
    """The largest statements allowed, back to back, until stopped."""

    def __init__(self, url: str, token: str, value_bytes: int, result_bytes: int,
                 row: int = 1) -> None:
        super().__init__(daemon=True, name=f"neighbour-{row}")
        self.client = Client(url, token, timeout=ROUND_TIMEOUT)
        self.statements = [
            f"INSERT INTO big(id, b) VALUES ({row}, randomblob({value_bytes}))",
            f"SELECT substr(b, 1, {min(result_bytes, value_bytes)}) FROM big WHERE id = {row}",
            f"DELETE FROM big WHERE id = {row}"]
        self.seconds: list[float] = []
        self.errors: list[str] = []
        self.rounds = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for sql in self.statements:
                began = time.monotonic()
                try:
                    self.client.sql(NEIGHBOUR, sql)
                except TandemError as exc:
                    self.errors.append(f"{sql[:40]}…: {str(exc)[:300]}")
                    self.stopping.wait(0.2)
                else:
                    self.seconds.append(time.monotonic() - began)
            self.rounds += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(ROUND_TIMEOUT)
        self.client.close()


class LeaseWatch(threading.Thread):
    """Reads the node's lease gauge every SAMPLE_PERIOD; keeps the least seen per phase."""

    def __init__(self, deployment: Deployment, node: str) -> None:
        super().__init__(daemon=True, name="lease-watch")
        self.url = deployment.node_url(node) + "/metrics"
        self.http = httpx.Client(timeout=10.0, headers={
            SECRET_HEADER: deployment.secret, "authorization": f"Bearer {deployment.token}"})
        self.least: float | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_PERIOD):
            try:
                found = LEASE_GAUGE.search(self.http.get(self.url).text)
            except httpx.HTTPError:
                continue
            if found:
                value = float(found.group(1))
                self.least = value if self.least is None else min(self.least, value)

    def take(self) -> float | None:
        least, self.least = self.least, None
        return None if least is None else round(least, 3)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        self.http.close()


def _ratio(noisy: float | None, base: float | None) -> float | None:
    return None if noisy is None or not base else round(noisy / base, 2)


def _phase(victim: Victim, watch: LeaseWatch) -> dict:
    latencies, errors, codes = victim.take()
    return {"writes": len(latencies), "p50_ms": _ms(percentile(latencies, 50)),
            "p99_ms": _ms(percentile(latencies, 99)), "max_ms": _ms(max(latencies, default=None)),
            "errors": len(errors), "codes": dict(codes), "samples": errors,
            "lease_min_s": watch.take()}


def _side_by_side(base: dict, noisy: dict) -> dict:
    out: dict = {}
    for key in ("writes", "p50_ms", "p99_ms", "max_ms", "errors"):
        out[f"victim_{key}_baseline"] = base[key]
        out[f"victim_{key}_noisy"] = noisy[key]
        if key.endswith("_ms"):
            out[f"victim_{key}_ratio"] = _ratio(noisy[key], base[key])
    out["victim_no_lease_noisy"] = noisy["codes"].get("no_lease", 0)
    out["lease_min_remaining_s_baseline"] = base["lease_min_s"]
    out["lease_min_remaining_s_noisy"] = noisy["lease_min_s"]
    out["victim_error_codes_noisy"] = noisy["codes"]
    return {**out, **_samples("victim_error_samples_baseline", base["samples"]),
            **_samples("victim_error_samples_noisy", noisy["samples"])}


def measure(client: Client, deployment: Deployment, seconds: float, value_bytes: int,
            result_bytes: int, clients: int, say: Callable[[str], None]) -> dict:
    url, token = deployment.gateway_url, deployment.token
    say("creating the victim (basic) and the neighbour (production) in west")
    client.create_environment(VICTIM, type="basic", region=HOME)
    client.create_environment(NEIGHBOUR, type="production", region=HOME)
    wait_replicated(client, {NEIGHBOUR})
    client.sql(VICTIM, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    client.sql(NEIGHBOUR, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
    node = next(r["node"] for r in client.environment(VICTIM)["replicas"]
                if r.get("role") == "primary")
    victim, watch = Victim(url, token), LeaseWatch(deployment, node)
    neighbours = [Neighbour(url, token, value_bytes, result_bytes, row)
                  for row in range(1, clients + 1)]
    victim.start()
    watch.start()
    try:
        say(f"baseline: the victim writes alone for {seconds:g} s")
        time.sleep(seconds)
        base = _phase(victim, watch)
        say(f"the neighbour runs {value_bytes / (1 << 20):.1f} MiB statements from {clients} "
            f"client(s) next to the victim for {seconds:g} s (at least one round)")
        for neighbour in neighbours:
            neighbour.start()
        deadline = time.monotonic() + ROUND_TIMEOUT
        time.sleep(seconds)
        holds_within(lambda: sum(n.rounds for n in neighbours) >= 1,
                     deadline - time.monotonic(), 0.05, ignore=())
        noisy = _phase(victim, watch)
    finally:
        for neighbour in neighbours:
            neighbour.stopping.set()
        for neighbour in neighbours:
            neighbour.stop()
        victim.stop()
        watch.stop()
    spent = [s for n in neighbours for s in n.seconds]
    errors = [e for n in neighbours for e in n.errors]
    p50 = percentile(spent, 50)  # None when no statement was answered
    return {"node": node, **_side_by_side(base, noisy),
            "neighbour_clients": clients,
            "neighbour_value_mib": round(value_bytes / (1 << 20), 1),
            "neighbour_result_mib": round(min(result_bytes, value_bytes) / (1 << 20), 1),
            "neighbour_rounds": sum(n.rounds for n in neighbours),
            "neighbour_statements": len(spent),
            "neighbour_statement_p50_s": None if p50 is None else round(p50, 2),
            "neighbour_statement_max_s": None if not spent else round(max(spent), 2),
            "neighbour_errors": len(errors),
            **_samples("neighbour_error_samples", errors)}


def run(seconds: float = 5.0, lease_ttl: float = 1.5, value_bytes: int | None = None,
        clients: int = 2, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _m: None)
    value = value_bytes or largest_value_bytes()
    say("starting a deployment")
    with LocalDeployment.temporary(pairs=[(HOME, PAIR)], lease_ttl=lease_ttl,
                                   prefix="tandem-bench-") as cluster:
        result = measure(cluster.client, cluster.deployment, seconds, value,
                         largest_result_bytes(), clients, say)
    return {"bench": "isolation", "lease_ttl": lease_ttl, "seconds_per_phase": seconds,
            **result}
