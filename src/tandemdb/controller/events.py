"""The event log: what happened, in order, durable, readable by long poll (docs/operations.md).

Events live under `events/<seq>` in the store, numbered 1, 2, 3 … by the store counter
`counters/events` (keys are zero-padded to 12 digits, so they sort by number). An event is
written in the same store transaction as the change it reports, together with its webhook
outbox entries (`webhooks.py`): the log never tells of a change that did not happen, never
misses one that did, and a webhook never misses an event.

`GET /v1/events?after=N&wait=S` answers the events after N, oldest first, at most 500, or
waits up to S seconds (max 30) for one (`Events.poll`, blocking, run in a worker thread;
the query's schema is `bodies.EventsQuery`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from tandemdb.common.retry import cas_attempts

from .catalog import iso_now
from .store import Store, Txn, increment

PREFIX = "events/"
COUNTERS = "counters/"
COUNTER = COUNTERS + "events"
MAX_BATCH = 500
MAX_WAIT_SECONDS = 30.0

T = TypeVar("T")


class EventType(StrEnum):
    ENVIRONMENT_CREATED = "environment.created"
    ENVIRONMENT_DELETED = "environment.deleted"
    REGION_STATE_CHANGED = "region.state_changed"
    FAILOVER_STARTED = "failover.started"
    FAILOVER_COMPLETED = "failover.completed"
    FAILOVER_FAILED = "failover.failed"
    FAILOVER_DATA_LOSS = "failover.data_loss"
    FAILBACK_STARTED = "failback.started"
    FAILBACK_COMPLETED = "failback.completed"
    FAILBACK_FAILED = "failback.failed"
    REPLICA_REJOINED = "replica.rejoined"
    REPLICA_REPLACED = "replica.replaced"  # self-healing and drain: re-created elsewhere
    NODE_DOWN = "node.down"  # node_failover.py: missed heartbeats for node_grace_seconds
    NODE_FAILOVER_STARTED = "node.failover.started"  # one environment moves in its region
    NODE_FAILOVER_COMPLETED = "node.failover.completed"
    NODE_FAILOVER_FAILED = "node.failover.failed"
    REPLICA_SYNC_LOST = "replica.sync_lost"  # sync.py: a primary stopped waiting for it
    REPLICA_SYNC_RESTORED = "replica.sync_restored"  # ... and waits for it again
    REPLICATION_LAG_EXCEEDED = "replication.lag_exceeded"
    REPLICATION_LAG_RECOVERED = "replication.lag_recovered"
    REPLICATION_HALTED = "replication.halted"  # halts.py
    REPLICATION_RESUMED = "replication.resumed"


def event_key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}"


class Outbox(Protocol):
    """Whoever must hear of every event in the transaction that records it (webhooks)."""

    def enqueue(self, txn: Txn, event: dict) -> None: ...


class Events:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.outbox: Outbox | None = None
        self.listeners: list[Callable[[], None]] = []  # told after each committed event
        # Transactions that bump counters are built and committed one at a time in this
        # process, so they do not lose compare-and-sets to each other; another process
        # writing the same store is still kept out by the expectations themselves. The
        # others (most operation records) are only built under it.
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------

    def transact(self, build: Callable[[Txn], T]) -> tuple[T, dict[str, int]] | None:
        """Build a transaction with `build` and commit it; None if an expectation failed.

        Returns what `build` returned and the new versions of the keys written. Blocking.
        """
        with self._lock:
            txn = Txn()
            value = build(txn)
            counted = any(key.startswith(COUNTERS) for key in txn.expected)
            if counted:
                versions = self.store.commit(txn)
        if not counted:
            # No counter read: nothing another build could race on here, so it commits
            # outside the lock and can share a group commit with other writers.
            versions = self.store.commit(txn)
        if versions is None:
            return None
        if any(key.startswith(PREFIX) for key in versions):
            for listener in self.listeners:
                listener()
        return value, versions

    def stage(self, txn: Txn, type: EventType, *, environment: str | None = None,
              region: str | None = None, operation: str | None = None,
              data: Mapping[str, Any] | None = None) -> dict:
        """Add an event (and its outbox entries) to `txn`; returns the event."""
        seq = increment(self.store, txn, COUNTER)
        event = {"id": seq, "type": type.value, "at": iso_now(), "environment": environment,
                 "region": region, "operation": operation, "data": dict(data or {})}
        txn.put(event_key(seq), event)
        if self.outbox is not None:
            self.outbox.enqueue(txn, event)
        return event

    def commit(self, build: Callable[[Txn], T], what: str) -> tuple[T, dict[str, int]]:
        """`transact` until its expectations hold (another writer took the event counter
        or a key in between); `Contended` naming `what` after the last attempt. Blocking."""
        for _ in cas_attempts(what):
            done = self.transact(build)
            if done is not None:
                return done
        raise AssertionError("unreachable: cas_attempts raises after its last attempt")

    def emit(self, type: EventType, **fields: Any) -> dict:
        """Record one event on its own (when no other change goes with it). Blocking."""
        return self.commit(lambda txn: self.stage(txn, type, **fields), f"event {type}")[0]

    # -- reading -------------------------------------------------------------------------

    def last(self) -> int:
        """The newest event id (0 before the first event)."""
        item = self.store.get(COUNTER)
        return int(item.value) if item else 0

    def get(self, seq: int) -> dict | None:
        item = self.store.get(event_key(seq))
        return item.value if item else None

    def after(self, after: int, limit: int = MAX_BATCH) -> list[dict]:
        """Events with id > `after`, oldest first, at most `limit`."""
        start = event_key(after) if after > 0 else None
        return [item.value for item in
                self.store.list(PREFIX, after=start, limit=limit).values()]

    def poll(self, after: int, wait: float) -> dict:
        """`{"events": [...], "last": N}` once some event is newer than `after`, or after
        `wait` seconds with none. Blocking: run it in a worker thread."""
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT_SECONDS)
        while True:
            # The revision first: an event written after the read below is a change after
            # it, so the watch cannot sleep through it.
            revision = self.store.revision()
            events = self.after(after)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return {"events": events, "last": self.last()}
            self.store.watch(PREFIX, revision, remaining)

