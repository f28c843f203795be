"""One harness for the tests, the benchmarks and the fault suites, which each used to carry
their own copy of it:

- `LocalDeployment.temporary(**settings)`: a real deployment (processes) in a temporary
  directory, started (all, or only the parts a suite does not play itself), with a ready
  `Client`, stopped again even when the body fails;
- `IdWriter`: a thread writing unique ids, recording what was acknowledged (id, lsn, epoch,
  time, node) and what has an unknown outcome, for the invariants of docs/design.md (`check` after
  a planned failover, `compare` after a forced one);
- `poll_until`: wait for a condition with a deadline and a clear error naming it.

It imports nothing heavier than the SDK and the local launcher, which its users need anyway.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import httpx

from tandemdb.client import Client, TandemError
from tandemdb.common.deployment import Deployment
from tandemdb.common.http import SECRET_HEADER
from tandemdb.common.layout import Shape
from tandemdb.local import LocalDeployment as Processes
from tandemdb.local import free_base_port

T = TypeVar("T")
PAIRS = (("west", "east"),)
ERROR_PAUSE = 0.02  # a writer's pause after a failed write, so an outage is not a busy loop


# -- waiting ---------------------------------------------------------------------------------

class PollTimeout(TimeoutError, RuntimeError):
    """`poll_until` gave up. Also a RuntimeError, which the CLI reports as one line."""


def poll_until(check: Callable[[], T], timeout: float = 15.0, interval: float = 0.05,
               what: str = "condition", ignore: tuple[type[BaseException], ...] = ()) -> T:
    """Call `check` until it returns something true, and return that; raise PollTimeout
    naming `what` at the deadline instead of hanging. Exceptions in `ignore` count as "not
    yet" (a deployment in the middle of an outage refuses some calls)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*ignore):
            if value := check():
                return value
        if time.monotonic() >= deadline:
            raise PollTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def holds_within(check: Callable[[], object], timeout: float, interval: float = 0.05,
                 ignore: tuple[type[BaseException], ...] = (TandemError,)) -> bool:
    """`poll_until` for a caller that reports the outcome instead of failing: True when
    `check` held before `timeout`, refused calls counting as "not yet"."""
    try:
        poll_until(check, timeout, interval, ignore=ignore)
    except PollTimeout:
        return False
    return True


def caught_up(client: Client, env: str) -> bool:
    """Every secondary of `env` is seeded and has applied its primary's last lsn, and the
    primary has reported a write (a test waits for what it wrote, not for lsn 0)."""
    view = client.environment(env)
    return bool(view.get("primary_lsn")) and _caught_up(view)


def _caught_up(view: dict) -> bool:
    """A view whose secondaries are seeded and have applied the primary's reported lsn."""
    secondaries = [r for r in view.get("replicas", []) if r.get("role") == "secondary"]
    return bool(secondaries) and all(
        not r.get("seeding") and r.get("applied_lsn") is not None
        and r.get("applied_lsn") == view.get("primary_lsn") for r in secondaries)


def wait_replicated(client: Client, names: Iterable[str], timeout: float = 300.0) -> None:
    """Until every secondary of `names` is seeded and caught up: a planned failover waits
    for it anyway, but a benchmark should not time it doing so."""
    wanted = set(names)
    poll_until(lambda: all(_caught_up(v) for v in client.environments()
                           if v["name"] in wanted), timeout, 0.2,
               f"the secondaries of {len(wanted)} environment(s) to catch up")


def nodes_healthy(client: Client) -> bool:
    """Every node has sent a heartbeat: environments are placed on healthy nodes only."""
    nodes = [n for r in client.regions() for n in r.get("nodes", [])]
    return bool(nodes) and all(n.get("healthy") for n in nodes)


# -- a deployment ----------------------------------------------------------------------------

def plan(data: Path, pairs: Sequence[tuple[str, str]] = PAIRS, nodes_per_region: int = 1,
         fault_proxy: bool = False, shape: Shape | None = None,
         **settings: Any) -> Deployment:
    """Plan a deployment in `data` (its control plane as `shape` says: etcd, controllers,
    gateways) and save its deployment.json. `settings` override its fields (lease_ttl,
    grace_seconds, …): every process reads them from there."""
    data.mkdir(parents=True, exist_ok=True)
    count = Deployment.ports_needed(list(pairs), nodes_per_region, fault_proxy, shape)
    deployment = Deployment.plan(data, list(pairs), nodes_per_region, free_base_port(count),
                                 shape)
    if fault_proxy:
        deployment.add_fault_proxy()
    for key, value in settings.items():
        if not hasattr(deployment, key):
            raise TypeError(f"no deployment setting {key!r}")
        setattr(deployment, key, value)
    deployment.save()
    return deployment


class LocalDeployment(Processes):
    """The launcher's processes plus what a test or a benchmark holds on to: a `Client` of
    the gateway, the node of a region, the processes' logs. A suite that plays some parts
    itself (nodes, a controller) subclasses it with its helpers, and starts only the rest."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self.client = Client(deployment.gateway_urls(), deployment.token)

    @classmethod
    @contextmanager
    def temporary(cls, data: Path | None = None, *, start: Iterable[str] | None = None,
                  healthy: bool = True, prefix: str = "tandem-",
                  progress: Callable[[str], None] | None = None,
                  **settings: Any) -> Iterator[Self]:
        """Plan (in `data`, else a temporary directory removed afterwards), start every
        process (`progress` is told each), wait until every node is `healthy` (unless told
        not to), yield; stop every process on the way out, also when the body raised.
        `settings` go to `plan`. `start` names the only processes to start (`()`: none):
        a suite that plays the other parts itself; no wait for heartbeats then."""
        with ExitStack() as stack:
            if data is None:
                data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
            cluster = cls(plan(data, **settings))
            stack.callback(cluster.close)
            if start is None:
                cluster.start_all(progress)
            for name in start or ():
                cluster.start(name)
            if healthy and start is None:
                poll_until(lambda: nodes_healthy(cluster.client), 20.0, 0.1,
                           "every node's first heartbeat", ignore=(TandemError,))
            yield cluster

    def node_of(self, region: str) -> str:
        return self.deployment.nodes_in(region)[0]

    def pause(self, name: str) -> None:
        """SIGSTOP: the process holds its sockets but answers nothing (a hung machine)."""
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def log(self, name: str) -> str:
        return self.log_file(name).read_text(errors="replace")

    def logs_tail(self, lines: int = 40) -> str:
        """The last lines of every started process's log: what a failed test shows."""
        return "\n".join(f"--- {self.log_file(name)} (last {lines} lines)\n"
                         + self.tail(name, lines) for name in self.processes)

    def close(self) -> None:
        """Stop every process started, paused ones too (they must run to act on SIGTERM)."""
        for name in self.processes:
            self.resume(name)
        self.client.close()
        self.stop_all()


# -- a unique-id writer ----------------------------------------------------------------------

@dataclass(frozen=True)
class Ack:
    """One acknowledged write: `at` from time.monotonic(), `wall` from time.time()."""

    id: int
    env: str
    lsn: int
    epoch: int
    at: float
    wall: float
    target: str | None = None  # the node it was sent to, when the sender names one


@dataclass(frozen=True)
class Refusal:
    """A write the server refused for certain (`Refused`): it was not committed."""

    id: int
    wall: float
    code: str


class Refused(Exception):
    """Raised by a sender when the server answered that it did not write."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Sender(Protocol):
    def sql(self, env: str, sql: str, params: list | None = None) -> dict: ...


class NodeSender:
    """Writes straight to one node's data API, past the gateway: a client that still
    reaches a partitioned primary. A non-200 answer is a `Refused` with its code. `retarget`
    sends the next writes elsewhere (a switchover driven by hand); `Ack.target` says where."""

    def __init__(self, url: str, secret: str, timeout: float = 5.0,
                 node: str | None = None) -> None:
        self.http = httpx.Client(headers={SECRET_HEADER: secret}, timeout=timeout)
        self._target = (url, node or url)  # one tuple: a write sees both or neither
        self.sent_to: str | None = None  # the node of the last write (the writer's thread)

    def retarget(self, url: str, node: str | None = None) -> None:
        self._target = (url, node or url)

    def sql(self, env: str, sql: str, params: list | None = None) -> dict:
        url, self.sent_to = self._target
        answer = self.http.post(f"{url}/v1/environments/{env}/sql",
                                json={"statements": [{"sql": sql, "params": params or []}]})
        if answer.status_code != 200:
            raise Refused(answer.json()["error"]["code"])
        return answer.json()

    def close(self) -> None:
        self.http.close()


class IdWriter:
    """A thread writing unique ids (`first_id`, then every `step`), one per transaction,
    round-robin over `envs`, as fast as answers come, until `stop`.

    Each answer is kept: `acks` (id, env, lsn, epoch, times), `failed` (id, message) whose
    outcome is unknown (an error may come after the commit), `refusals` (a `Refused` from
    the sender: certainly not written). `stamp` adds the wall time in an `at` column."""

    def __init__(self, sender: Sender, envs: str | Sequence[str], *, table: str = "events",
                 first_id: int = 1, step: int = 1, stamp: bool = True,
                 error_pause: float = ERROR_PAUSE, owns_sender: bool = False) -> None:
        self.sender, self.owns_sender = sender, owns_sender
        self.envs = [envs] if isinstance(envs, str) else list(envs)
        self.table, self.stamp, self.error_pause = table, stamp, error_pause
        self.first_id, self.next_id, self.step = first_id, first_id, step
        columns = "id, at" if stamp else "id"
        self.insert = f"INSERT INTO {table}({columns}) VALUES ({'?, ?' if stamp else '?'})"
        self.acks: list[Ack] = []
        self.failed: list[tuple[int, str]] = []
        self.refusals: list[Refusal] = []
        self._stopping = threading.Event()
        self._running = threading.Event()  # cleared by pause()
        self._running.set()
        self._busy = threading.Lock()  # held for each write
        self._thread: threading.Thread | None = None

    @property
    def env(self) -> str:
        return self.envs[0]

    # -- running ---------------------------------------------------------------------------
    def create_table(self, keyed: bool = True) -> None:
        """`keyed=False`: ids are not a key, so a write applied twice shows as two rows."""
        key = " PRIMARY KEY" if keyed else ""
        at = ", at REAL" if self.stamp else ""
        for env in self.envs:
            self.sender.sql(env, f"CREATE TABLE IF NOT EXISTS {self.table}(id INTEGER{key}{at})")

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"id-writer-{self.env}")
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stopping.is_set():
            if not self._running.wait(0.1):
                continue
            with self._busy:
                if not self._running.is_set():  # paused between the wait and the lock
                    continue
                self._write(self.envs[i % len(self.envs)], self.next_id)
                self.next_id += self.step
                i += 1

    def _write(self, env: str, id_: int) -> None:
        params = [id_, time.time()] if self.stamp else [id_]
        try:
            answer = self.sender.sql(env, self.insert, params)
        except Refused as exc:
            self.refusals.append(Refusal(id_, time.time(), exc.code))
        except Exception as exc:  # the SDK's TandemError, or a transport error: unknown
            self.failed.append((id_, f"{env} id {id_}: {exc}"))
        else:
            self.acks.append(Ack(id_, env, answer["lsn"], answer["epoch"], time.monotonic(),
                                 time.time(), getattr(self.sender, "sent_to", None)))
            return
        time.sleep(self.error_pause)

    def pause(self) -> None:
        """Stop writing; returns once the write in flight (if any) has been answered."""
        self._running.clear()
        with self._busy:
            pass

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """Stop and wait for the write in flight: afterwards every write has its answer."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(60)
        if self.owns_sender and hasattr(self.sender, "close"):
            self.sender.close()

    # -- what happened ---------------------------------------------------------------------
    @property
    def acked(self) -> list[int]:
        return [a.id for a in self.acks]

    @property
    def lsns(self) -> list[int]:
        return [a.lsn for a in self.acks]

    @property
    def epochs(self) -> list[int]:
        return [a.epoch for a in self.acks]

    @property
    def errors(self) -> list[str]:
        return [message for _, message in self.failed]

    @property
    def unknown(self) -> list[int]:
        """Ids whose outcome is unknown: they may or may not exist, never twice."""
        return [i for i, _ in self.failed]

    def acked_on(self, target: str) -> list[Ack]:
        """The acknowledgements of writes sent to `target` (see `NodeSender.retarget`)."""
        return [a for a in list(self.acks) if a.target == target]

    def acked_ids(self, env: str | None = None) -> set[int]:
        return {a.id for a in self.acks if env is None or a.env == env}

    def unknown_ids(self, env: str | None = None) -> set[int]:
        return {i for i in self.unknown if env is None or self.env_of(i) == env}

    def env_of(self, id_: int) -> str:
        """The environment id `id_` was (or would be) written to: ids go round-robin."""
        return self.envs[(id_ - self.first_id) // self.step % len(self.envs)]

    def acked_per_env(self) -> dict[str, int]:
        counts = Counter(a.env for a in self.acks)
        return {env: counts[env] for env in self.envs}

    def ack_times(self) -> list[float]:
        return [a.at for a in self.acks]

    def first_ack(self, epoch: int, after: float) -> Ack | None:
        """The first write acknowledged at `epoch` or later, answered after `after`."""
        return next((a for a in list(self.acks) if a.epoch >= epoch and a.at >= after), None)

    def wait_for_ack_after(self, moment: float, timeout: float = 15.0) -> bool:
        """Until a write is acknowledged after `moment` (monotonic): writes flow again."""
        return holds_within(lambda: self.acks and self.acks[-1].at > moment, timeout, 0.005)

    def longest_gap(self, start: float, end: float) -> float | None:
        """The pause a writer saw around [start, end] (see `longest_gap`)."""
        return longest_gap(self.ack_times(), start, end)

    def longest_pause(self) -> float:
        """The longest time between two consecutive acknowledgements of the whole run."""
        return max((b - a for a, b in itertools.pairwise(self.ack_times())), default=0.0)

    def writes_per_second(self) -> float:
        times = self.ack_times()
        return round(len(times) / max(1e-9, times[-1] - times[0]), 1) if len(times) > 1 \
            else 0.0

    def check(self, client: Client, env: str | None = None, region: str | None = None,
              min_lsn: int | None = None) -> set[int]:
        """After a planned failover (invariant 1): every acknowledged id of `env` is present
        exactly once, and nothing is there that nobody wrote. Returns the ids present."""
        env = env or self.env
        ids = ids_in(client, env, self.table, region=region, min_lsn=min_lsn)
        if len(ids) != len(set(ids)):
            raise AssertionError("an id is present twice")
        missing = self.acked_ids(env) - set(ids)
        if missing:
            raise AssertionError(f"acknowledged ids missing in {region or 'primary'}: "
                                 f"{sorted(missing)[:20]}")
        unexpected = set(ids) - self.acked_ids(env) - self.unknown_ids(env)
        if unexpected:
            raise AssertionError(f"ids nobody wrote: {sorted(unexpected)[:20]}")
        return set(ids)


def longest_gap(acks: list[float], start: float, end: float) -> float | None:
    """The longest interval between consecutive acknowledgements that overlaps
    [start, end]; None when no acknowledgement came after `end` (the gap is not closed)."""
    gaps = [b - a for a, b in itertools.pairwise(acks) if b >= start and a <= end]
    if not acks or acks[-1] < end:
        return None
    return max(gaps) if gaps else 0.0


def ids_in(client: Client, env: str, table: str, region: str | None = None,
           min_lsn: int | None = None) -> list[int]:
    """The ids in `table`, in order, duplicates kept (a write applied twice shows)."""
    answer = client.sql(env, f"SELECT id FROM {table} ORDER BY id", read_region=region,
                        min_lsn=min_lsn)
    return [row[0] for row in answer["results"][0]["rows"]]


def lost_writes(answer: dict, table: str, epoch: int | None = None) -> tuple[int, set[int]]:
    """(entries, ids inserted into `table`) in `tandem lost` bundles, only those of the
    failover to `epoch` when given."""
    entries = [e for b in answer["bundles"] if epoch is None or b["epoch"] == epoch
               for e in b["entries"]]
    ids = {c["after"]["id"] for e in entries for c in e["changes"]
           if c["table"] == table and c["op"] == "insert" and c.get("after")}
    return len(entries), ids


def compare(acked: set[int], found: set[int], lost: set[int], unknown: set[int]) -> dict:
    """After a forced failover (invariant 3): acknowledged ids the new primary lacks must be
    among the lost writes, and every lost write was acknowledged or has an unknown
    outcome."""
    missing = acked - found
    extra = lost - missing
    return {"acked_missing": sorted(missing), "lost_not_acked": sorted(extra),
            "equal": missing <= lost and extra <= unknown}
