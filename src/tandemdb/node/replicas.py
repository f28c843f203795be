"""The replicas a node hosts: their role records on disk, their engines and their consumers.

Each replica is one engine `Environment` in `<node dir>/envs/<env>/` with its role record
in `replica.json` beside the engine files, so a restarted node resumes its replicas before
the controller answers. Engine calls block (fsync), so every one of them runs in a worker
thread; the bookkeeping here (waiters, consumers) belongs to the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from anyio import to_thread

from tandemdb.common.http import ApiError
from tandemdb.common.roles import Role
from tandemdb.engine import Environment, StaleEpoch
from tandemdb.engine.blobstore import write_durably
from tandemdb.engine.schema import DB_FILE

from .consumers import Consumer, oldest_unapplied_at, track
from .record import RECORD_FILE, Record, check_name

log = logging.getLogger("tandem.node.replicas")


async def run_sync(fn: Callable, *args, **kwargs):
    """Run a blocking (engine) call in a worker thread."""
    return await to_thread.run_sync(partial(fn, *args, **kwargs))


@dataclass
class Replica:
    name: str
    directory: Path
    record: Record
    env: Environment | None
    consumers: dict[str, Consumer] = field(default_factory=dict)
    seeding: dict | None = None  # {"bytes_done", "bytes_total"} while seeding
    last_seed: dict | None = None  # {"lsn", "bytes"} of the last snapshot it was seeded from
    stream_error: str | None = None  # last replication error (secondary side)
    # The entry this secondary cannot apply, while its stream is halted (halts.py).
    halted: dict | None = None
    dropped: bool = False
    truncated_upto: int = 0  # the journal was last truncated up to here (Upkeep)
    batcher: object | None = None  # the data API's group committer (batcher.Batcher)
    in_flight: int = 0  # data API commits running now (fencing waits until there are none)
    # A primary's failsafe lease, on the node lease's clock: until then its geo-secondary's
    # pulls vouch for it, even with the controller unreachable (docs/leases.md; 0: never).
    failsafe_until: float = 0.0
    # The controller recorded this primary's sync secondary `sync: false` at this catalog
    # version (syncrule.py): records older than that no longer make it wait (0: never).
    sync_lost_before: int = 0
    # Regaining sync (syncrule.py): the local secondary every write waits for again while
    # the controller's record does not (yet) name it sync (None: none).
    regaining: str | None = None
    # The epoch history (epoch, start lsn) its primary last sent with a stream answer, as a
    # secondary: it may confirm writes it acknowledged nothing for yet (syncrule.py).
    upstream_epochs: tuple[tuple[int, int], ...] = ()
    _waiters: set[asyncio.Future] = field(default_factory=set)
    _lag_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Serialises this replica's record changes (adopt, fence, promote, seed); replicas
    # change in parallel, so a region failover is not one fsync after another per node.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def role(self) -> Role:
        return self.record.role

    @property
    def writable(self) -> bool:
        """Only a primary writes (and only under its lease: gate.py)."""
        return self.record.role == Role.PRIMARY

    @property
    def sync_node(self) -> str | None:
        """The secondary whose acknowledgement every write waits for (docs/ha.md), if any."""
        peer = self.record.sync_peer
        if peer is None or self.record.version < self.sync_lost_before:
            return None
        return peer.node

    @property
    def waits_for(self) -> str | None:
        """The secondary each write waits for: the sync one, or the one regaining sync."""
        if self.record.role is not Role.PRIMARY:
            return None
        regaining = self.regaining  # only while the record still lists it (else replaced)
        if regaining is not None and all(p.node != regaining for p in self.record.secondaries):
            regaining = None
        return self.sync_node or regaining

    def require_env(self) -> Environment:
        env = self.env
        if env is None or self.dropped:
            raise ApiError(503, "unavailable", f"replica {self.name} is being seeded from a "
                           "snapshot; retry shortly", {"Retry-After": "1"})
        return env

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A commit in flight (the write gate enters it; a fence waits for none)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.notify()

    # -- commit notification (event loop only) --------------------------------------------
    def notify(self) -> None:
        """Wake everyone waiting for a new commit or applied entry of this replica."""
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def add_waiter(self, fut: asyncio.Future) -> None:
        self._waiters.add(fut)

    def remove_waiter(self, fut: asyncio.Future) -> None:
        self._waiters.discard(fut)

    async def changed(self, within: float) -> None:
        """Wait until the next `notify` (a commit, an apply, an acknowledgement of the sync
        secondary, a record change), or at most `within` seconds."""
        fut = asyncio.get_running_loop().create_future()
        self.add_waiter(fut)
        try:
            await asyncio.wait_for(fut, within)
        except TimeoutError:
            pass
        finally:
            self.remove_waiter(fut)

    async def wait_for_lsn(self, lsn: int, within: float) -> bool:
        """Wait until this replica's last lsn reaches `lsn`; False on timeout."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            env = self.env
            if env is not None and env.last_lsn >= lsn:
                return True
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            # The seeding replica has no env to notify about; look again now and then.
            await self.changed(min(remaining, 0.5))

    # -- lag (computed from the journal and the acknowledgements, primary's clock) ---------
    def lag(self, node: str, now: float | None = None) -> tuple[int, float]:
        """(lag_entries, lag_seconds) of consumer `node`, from what is cached."""
        env, consumer = self.env, self.consumers.get(node)
        if env is None or consumer is None:
            return 0, 0.0
        behind = max(0, env.last_lsn - consumer.acked_lsn)
        if behind == 0 or consumer.next_at is None:
            return behind, 0.0
        return behind, max(0.0, (now or time.time()) - consumer.next_at)

    async def refresh_lag(self) -> None:
        """Learn the commit time of the oldest entry each consumer has not applied yet."""
        env = self.env
        if env is None or all(c.next_at is not None or c.acked_lsn >= env.last_lsn
                              for c in self.consumers.values()):
            return
        async with self._lag_lock:  # concurrent writers share one look-up
            for consumer in list(self.consumers.values()):
                acked = consumer.acked_lsn
                if consumer.next_at is None and env.last_lsn > acked:
                    at = await run_sync(oldest_unapplied_at, env, acked)
                    if consumer.acked_lsn == acked and at is not None:
                        consumer.next_at = at

    def consumers_report(self) -> dict:
        now = time.time()
        out = {}
        for node, consumer in self.consumers.items():
            entries, seconds = self.lag(node, now)
            out[node] = {"acked_lsn": consumer.acked_lsn, "lag_entries": entries,
                         "lag_seconds": round(seconds, 3)}
        return out


def _write_record(directory: Path, record: Record) -> None:
    write_durably(directory / RECORD_FILE, json.dumps(record.to_dict(), indent=2).encode())


class ReplicaSet:
    """The replicas of one node: open, create, update, drop (who may write: gate.py)."""

    def __init__(self, node_dir: Path, node: str, region: str) -> None:
        self.node, self.region = node, region
        self.envs_dir = Path(node_dir) / "envs"
        self.tmp_dir = Path(node_dir) / "tmp"
        self._replicas: dict[str, Replica] = {}
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []

    # -- lookup -------------------------------------------------------------------------
    def __iter__(self):
        return iter(list(self._replicas.values()))

    def __len__(self) -> int:
        return len(self._replicas)

    def find(self, name: str) -> Replica | None:
        return self._replicas.get(name)

    def get(self, name: str) -> Replica:
        check_name(name)
        replica = self._replicas.get(name)
        if replica is None:
            raise ApiError(404, "not_found", f"no replica of environment {name!r} on node "
                           f"{self.node}")
        return replica

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the loop) whenever replicas or their roles change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    # -- lifecycle ----------------------------------------------------------------------
    async def load(self) -> None:
        """Reopen every replica found on disk (a restarted node resumes at once)."""
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        if self.tmp_dir.exists():
            await run_sync(shutil.rmtree, self.tmp_dir, True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for directory in sorted(self.envs_dir.iterdir()):
            if not directory.is_dir():
                continue
            record_path = directory / RECORD_FILE
            if not record_path.exists():
                # Left over from a drop or create interrupted by a crash: nothing owns it.
                log.warning("removing %s: it has no %s", directory, RECORD_FILE)
                await run_sync(shutil.rmtree, directory, True)
                continue
            try:
                record = Record.parse(json.loads(record_path.read_text()))
                env = await run_sync(Environment, directory)
            except Exception:
                log.exception("cannot open replica in %s; skipping it", directory)
                continue
            replica = Replica(directory.name, directory, record, env)
            await self._adopt_record(replica, record)
            self._replicas[replica.name] = replica
            log.info("resumed replica %s as %s (epoch %d, lsn %d)", replica.name, record.role,
                     env.epoch, env.last_lsn)
        self._changed()

    async def ensure(self, name: str, raw: object) -> Replica:
        """Create the replica or bring it to the desired record (admin PUT, heartbeat)."""
        check_name(name)
        record = Record.parse(raw)
        replica = self._replicas.get(name)
        if replica is None:
            async with self._lock:  # creating: the set itself changes
                replica = self._replicas.get(name)
                if replica is None:
                    replica, persisted = await run_sync(self._create, name, record)
                    track(replica.consumers, persisted)
                    self._replicas[name] = replica
                    log.info("created replica %s as %s (epoch %d)", name, record.role,
                             record.epoch)
                    self._changed()
                    replica.notify()
                    return replica
        async with replica.lock:
            if replica.dropped:
                raise ApiError(409, "conflict", f"replica {name} was dropped meanwhile; "
                               "retry to create it again")
            known = replica.env.epoch if replica.env is not None else 0
            if record.version < replica.record.version:
                return replica  # an answer older than what this replica was told since
            elif record.epoch < known:
                raise ApiError(409, "stale_epoch", f"replica {name} already knows epoch "
                               f"{known}, newer than the desired record's epoch "
                               f"{record.epoch}; ignoring that record")
            elif replica.record != record:
                old = replica.record.role
                await self._adopt_record(replica, record)
                if old != record.role:
                    log.info("replica %s: role %s -> %s (epoch %d)", name, old, record.role,
                             record.epoch)
            else:
                return replica  # nothing to do (a heartbeat repeating what we have)
        self._changed()
        replica.notify()
        return replica

    async def transition(self, replica: Replica,
                         decide: Callable[[Replica], Record | None]) -> bool:
        """Change a replica's record (fence, promote, unfence); True if it changed. `decide`
        runs holding the engine's lock, so nothing commits or applies between its checks and
        the change: it raises to refuse, or answers the new record (None: nothing to do)."""
        async with replica.lock:
            if replica.dropped:
                raise ApiError(404, "not_found", f"replica {replica.name} was dropped")
            changed, persisted = await run_sync(self._transition, replica, decide)
            if changed:
                track(replica.consumers, persisted)
        if changed:
            self._changed()
            replica.notify()
        return changed

    def _transition(self, replica: Replica, decide: Callable[[Replica], Record | None],
                    ) -> tuple[bool, dict[str, int] | None]:
        with replica.require_env().exclusive():
            record = decide(replica)
            if record is not None and record != replica.record:
                return True, self._adopt(replica, record)
            return False, None

    async def drop(self, name: str) -> None:
        check_name(name)
        async with self._lock:
            replica = self._replicas.pop(name, None)
            if replica is None:
                raise ApiError(404, "not_found", f"no replica of environment {name!r} on "
                               f"node {self.node}")
            async with replica.lock:  # after any change in progress
                replica.dropped = True
                await run_sync(self._remove, replica)
            log.info("dropped replica %s", name)
        self._changed()
        replica.notify()

    async def close(self) -> None:
        for replica in list(self._replicas.values()):
            if replica.env is not None:
                await run_sync(replica.env.close)

    # -- consumers (event loop only) ------------------------------------------------------
    async def _adopt_record(self, replica: Replica, record: Record) -> None:
        """Adopt `record`: the engine's part in a worker thread, the consumers on the loop."""
        track(replica.consumers, await run_sync(self._adopt, replica, record))

    # -- worker-thread parts ------------------------------------------------------------
    def _create(self, name: str, record: Record) -> tuple[Replica, dict[str, int] | None]:
        directory = self.envs_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        env = None
        try:
            _write_record(directory, record)
            env = Environment(directory)
            replica = Replica(name, directory, record, env)
            return replica, self._adopt(replica, record)
        except BaseException:
            if env is not None:
                env.close()
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def _adopt(self, replica: Replica, record: Record) -> dict[str, int] | None:
        """Apply a record to the engine (epochs, consumers) and persist it; answer the
        consumers the engine keeps now, for `track` on the loop (None: no engine)."""
        env, persisted = replica.env, None
        if env is not None:
            promoted = record.role == Role.PRIMARY and replica.record.role == Role.SECONDARY
            if record.epoch > env.epoch:
                if record.role == Role.PRIMARY:
                    env.begin_epoch(record.epoch)
                else:
                    env.observe_epoch(record.epoch)
            elif promoted and record.epoch <= env.epoch and env.last_lsn > 0:
                raise StaleEpoch(f"cannot make replica {replica.name} writable in epoch "
                                 f"{record.epoch}: it already knows epoch {env.epoch}; a "
                                 "promotion needs a new epoch")
            persisted = self._adopt_consumers(env, record)
        if record != replica.record or not (replica.directory / RECORD_FILE).exists():
            _write_record(replica.directory, record)
        replica.record = record
        return persisted

    @staticmethod
    def _adopt_consumers(env: Environment, record: Record) -> dict[str, int]:
        """Listed secondaries are consumers (acked 0 until they report), others are not.

        Registering a secondary before it first pulls keeps the journal it needs. A fenced
        replica keeps every consumer it had: the switchover target still pulls the final
        entries from it."""
        persisted = env.consumers()
        listed = {s.node for s in record.secondaries}
        if record.role == Role.FENCED:
            listed |= persisted.keys()
        elif record.role != Role.PRIMARY:
            listed = set()
        for node in listed - persisted.keys():
            env.acknowledge(node, 0)
            persisted[node] = 0
        for node in persisted.keys() - listed:
            env.forget_consumer(node)
            del persisted[node]
        return persisted

    def _remove(self, replica: Replica) -> None:
        if replica.env is not None:
            replica.env.close()
        (replica.directory / RECORD_FILE).unlink(missing_ok=True)
        shutil.rmtree(replica.directory, ignore_errors=True)

    # -- seeding ------------------------------------------------------------------------
    async def replace_from_snapshot(self, replica: Replica, snapshot: Path, fetch_blob) -> None:
        """Swap the replica's engine for one restored from `snapshot` (a seeding secondary).

        The old database files go first; should the node crash before the restored file is
        in place, it reopens an empty replica and seeds again."""
        async with replica.lock:
            if replica.dropped:
                return
            old, replica.env = replica.env, None
            replica.truncated_upto = 0
            try:
                replica.env = await run_sync(self._restore, replica, old, snapshot, fetch_blob)
            finally:
                if replica.env is None:  # the restore failed: start from an empty replica
                    replica.env = await run_sync(Environment, replica.directory)
            await self._adopt_record(replica, replica.record)
        replica.notify()

    @staticmethod
    def _restore(replica: Replica, old: Environment | None, snapshot: Path,
                 fetch_blob) -> Environment:
        if old is not None:
            old.close()
        for suffix in ("", "-wal", "-shm", ".restoring"):
            (replica.directory / (DB_FILE + suffix)).unlink(missing_ok=True)
        return Environment.restore(snapshot, replica.directory, fetch_blob)
