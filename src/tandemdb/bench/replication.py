"""`tandem bench replication`: throughput through the gateway and geo-replication lag.

It starts a real local deployment (separate processes) in a temporary directory and
drives it with an asyncio load generator in this process:

- `tx_per_s_max`: 32 concurrent clients, single-row insert transactions, as fast as they go;
- `lag_p50_ms` / `lag_p99_ms` at fixed offered rates: for each acknowledged write, the time
  from its acknowledgement until a reader polling the paired region sees its lsn. It is the
  lag a reader of the geo-secondary experiences, probe latency included;
- `catchup_entries_per_s`: the secondary's node is paused (SIGSTOP) while writes pile up,
  then resumed; entries applied per second until it has caught up;
- `write_p50_ms_at_500`: the median write latency (send to acknowledgement) at 500 tx/s;
- `write_p50_ms_one_client`: the same for one client writing one transaction after another
  (no queueing: what a write itself costs).

The same run measures it all three times: on a deployment of one node per region (no local
replica); on one of two nodes per region whose local secondary is asynchronous
(`sync_commit: false`, figures prefixed `async_`); and on one of two nodes per region whose
local secondary is sync (docs/ha.md, prefixed `sync_`). `sync_waits` counts the group
commits that waited for it (from the primary's metrics). `sync_throughput_cost` is the share
of throughput synchronous commit costs against the same deployment without it (async), and
`sync_throughput_cost_vs_one_node` against one node per region (that also counts the local
secondary's own work on this host's cores). `sync_write_p50_added_ms` is the median write
latency synchronous commit adds (one client, against the async shape); its floor is one
fsync on the secondary plus a round trip, so the run also measures this disk's
`fsync_p50_ms`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tandemdb.testing import LocalDeployment

from .rawhttp import Connection

ENV = "bench"
INSERT = "INSERT INTO t(v) VALUES (?)"


class Load:
    """Async load through the gateway over a pool of raw keep-alive connections."""

    def __init__(self, url: str, token: str, concurrency: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        self.pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(concurrency + 2):
            self.pool.put_nowait(Connection(url, headers))

    async def post(self, path: str, body: dict) -> dict:
        conn = await self.pool.get()
        try:
            return await conn.post_json(path, body)
        except BaseException:
            await conn.close()  # a half-read answer must not poison the next request
            raise
        finally:
            self.pool.put_nowait(conn)

    async def sql(self, sql: str, params: list | None = None, **extra) -> dict:
        body = {"statements": [{"sql": sql, "params": params or []}], **extra}
        return await self.post(f"/v1/environments/{ENV}/sql", body)

    async def close(self) -> None:
        while not self.pool.empty():
            await self.pool.get_nowait().close()


async def max_throughput(load: Load, clients: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await load.sql(INSERT, ["x" * 100])
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return done / (time.monotonic() - start)


async def one_client_p50_ms(load: Load, seconds: float) -> float:
    """The median latency of one client's writes, one after another: no queueing, so it
    is what each write itself costs."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        start = time.perf_counter()
        await load.sql(INSERT, ["x" * 100])
        latencies.append((time.perf_counter() - start) * 1000)
    return _pct(latencies, 50)


async def lag_at_rate(load: Load, rate: float, seconds: float,
                      latencies: list[float]) -> list[float]:
    """Offer `rate` writes/s (open loop); return per-write lag in ms as seen from east.
    Each write's latency in ms (send to acknowledgement) is added to `latencies`."""
    acked: dict[int, float] = {}
    seen: list[tuple[float, int]] = []
    stop = time.monotonic() + seconds
    tasks: list[asyncio.Task] = []

    async def one() -> None:
        sent = time.monotonic()
        answer = await load.sql(INSERT, ["x" * 100])
        acked[answer["lsn"]] = time.monotonic()
        latencies.append((acked[answer["lsn"]] - sent) * 1000)

    async def probe() -> None:
        while time.monotonic() < stop + 2:
            answer = await load.sql("SELECT 1", read_region="east")
            seen.append((time.monotonic(), answer["lsn"]))
            await asyncio.sleep(0.002)

    prober = asyncio.create_task(probe())
    interval, next_at = 1.0 / rate, time.monotonic()
    while next_at < stop:
        tasks.append(asyncio.create_task(one()))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*tasks)
    await prober
    lags = []
    i = 0
    for lsn, at in sorted(acked.items()):
        while i < len(seen) and seen[i][1] < lsn:
            i += 1
        if i < len(seen):
            lags.append(max(0.0, seen[i][0] - at) * 1000)
    return lags


async def catch_up(load: Load, cluster: LocalDeployment, east: str, entries: int) -> float:
    cluster.signal(east, signal.SIGSTOP)
    try:
        sem = asyncio.Semaphore(32)

        async def one() -> int:
            async with sem:
                return (await load.sql(INSERT, ["x" * 100]))["lsn"]

        last = max(await asyncio.gather(*(one() for _ in range(entries))))
    finally:
        cluster.signal(east, signal.SIGCONT)
    start = time.monotonic()
    while True:
        answer = await load.sql("SELECT 1", read_region="east")
        if answer["lsn"] >= last:
            return entries / (time.monotonic() - start)
        await asyncio.sleep(0.005)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return round(statistics.quantiles(values, n=100)[int(q) - 1], 1) if len(values) > 1 \
        else round(values[0], 1)


async def _run(url: str, token: str, cluster: LocalDeployment, seconds: float,
               say: Callable[[str], None], sync: bool) -> dict:
    load = Load(url, token, 32)
    try:
        await load.post("/v1/environments", {"name": ENV, "type": "production"})
        east = _geo_node(cluster, sync)
        await load.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        say("one client's write latency")
        result: dict = {"write_p50_ms_one_client": await one_client_p50_ms(load, seconds)}
        say("max throughput, 32 clients")
        result["tx_per_s_max"] = round(await max_throughput(load, 32, seconds), 1)
        for rate in (500, 1000):
            say(f"lag at {rate} tx/s offered")
            latencies: list[float] = []
            lags = await lag_at_rate(load, rate, seconds, latencies)
            result[f"lag_p50_ms_at_{rate}"] = _pct(lags, 50)
            result[f"lag_p99_ms_at_{rate}"] = _pct(lags, 99)
            if rate == 500:
                result["write_p50_ms_at_500"] = _pct(latencies, 50)
        say("catch-up after pausing the secondary")
        result["catchup_entries_per_s"] = round(await catch_up(load, cluster, east, 5000), 1)
        if sync:
            result["waits"] = _sync_waits(cluster)
        return result
    finally:
        await load.close()


def _geo_node(cluster: LocalDeployment, sync: bool) -> str:
    """The node of the environment's geo-secondary; make sure its local secondary, if the
    deployment has one, is sync exactly when `sync` (else the figures would measure the
    wrong thing)."""
    replicas = cluster.client.environment(ENV)["replicas"]
    local = [r for r in replicas if r.get("kind") == "local"]
    if any(r.get("sync") is not sync for r in local) or (sync and not local):
        raise RuntimeError(f"{ENV}'s local secondary is not {'sync' if sync else 'async'}: "
                           f"{replicas}")
    return next(r["node"] for r in replicas if r["role"] == "secondary"
                and r.get("kind", "geo") == "geo")


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda message: say(f"{prefix}{message}")


def _sync_waits(cluster: LocalDeployment) -> int:
    """How many group commits the primary waited for its sync secondary (its metrics): the
    proof that the `sync_` figures measured synchronous commit."""
    primary = next(r["node"] for r in cluster.client.environment(ENV)["replicas"]
                   if r["role"] == "primary")
    text = httpx.get(f"{cluster.deployment.node_url(primary)}/metrics", timeout=10,
                     headers={"Authorization": f"Bearer {cluster.deployment.token}"}).text
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if line.startswith("tandem_sync_wait_seconds_count"))


def fsync_p50_ms(directory: Path, rounds: int = 50) -> float:
    """The median time of one fsync after a 4 KiB append, in `directory`: the floor of
    what a durable acknowledgement costs on this disk."""
    path = directory / "fsync-probe"
    times = []
    with path.open("ab") as f:
        for _ in range(rounds):
            f.write(b"x" * 4096)
            f.flush()
            start = time.perf_counter()
            os.fsync(f.fileno())
            times.append((time.perf_counter() - start) * 1000)
    path.unlink()
    return round(statistics.median(times), 2)


# (nodes per region, sync_commit, prefix of the figures)
SHAPES = ((1, True, ""), (2, False, "async_"), (2, True, "sync_"))


def run(seconds: float = 5.0, progress: Callable[[str], None] | None = None) -> dict:
    say = progress or (lambda _m: None)
    result: dict = {}
    for nodes_per_region, sync_commit, prefix in SHAPES:
        say(f"starting a deployment of {nodes_per_region} node(s) per region"
            + (f" ({'sync' if sync_commit else 'async'} local secondary)"
               if nodes_per_region > 1 else ""))
        with LocalDeployment.temporary(prefix="tandem-bench-", sync_commit=sync_commit,
                                       nodes_per_region=nodes_per_region) as cluster:
            figures = asyncio.run(_run(cluster.deployment.gateway_url,
                                       cluster.deployment.token, cluster, seconds,
                                       _prefixed(say, prefix), prefix == "sync_"))
            if prefix == "sync_":
                result["fsync_p50_ms"] = fsync_p50_ms(Path(cluster.deployment.data))
        result.update({prefix + key: value for key, value in figures.items()})
    result["sync_throughput_cost"] = round(
        1 - result["sync_tx_per_s_max"] / result["async_tx_per_s_max"], 3)
    result["sync_throughput_cost_vs_one_node"] = round(
        1 - result["sync_tx_per_s_max"] / result["tx_per_s_max"], 3)
    result["sync_write_p50_added_ms"] = round(
        result["sync_write_p50_ms_one_client"] - result["async_write_p50_ms_one_client"], 2)
    return {"bench": "replication", "clients": 32, "seconds_per_phase": seconds, **result}
