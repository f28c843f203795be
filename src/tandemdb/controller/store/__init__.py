"""The coordination store: the one seam between the controller and where its state lives.

Like Patroni's `dcs/`, the controller's logic talks only to `Store`; one module per backend
implements it: `sqlite.py` (the embedded default, one machine) and `etcd.py` (a cluster, no
single point of failure). Keys are strings such as `environments/acme`; values are JSON-able
objects. `open_store` picks the backend from a store spec.

Every write moves one global **revision** counter forward. A key's **version** is the
revision of its last write (etcd's `mod_revision`), so `compare_and_set(key, version, …)`
succeeds only if nobody wrote the key since it was read, and `watch` can answer "what changed
after revision R" without missing a write.

A `Txn` groups writes to several keys that must land together or not at all (etcd's
transactions): an event and its webhook outbox entries, an operation's step and the catalog
change it made. All its writes land in one commit, so a watcher never sees half of it. The
keys of one `Txn` may share a revision (etcd gives them one; SQLite one each), and a watch
answer always holds every change of a revision it returns, so a watcher may take the last
change's revision as its next position.

A backend shared by several controllers is **fenced**: after `fence(key, value)` every write
checks that `key` still holds `value` (this controller's claim on the leader key) and raises
`NotLeader` otherwise, changing nothing.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tandemdb.common.errors import CodedError


class StoreError(CodedError):
    """The store cannot do what was asked (closed, corrupt, or unreachable). A call that
    meets it is answered 503: the controller cannot decide now, and says why."""

    code = "store_unavailable"
    status = 503


class NotLeader(StoreError):
    """A fenced write found the leader key held by someone else: nothing was written."""

    code = "not_leader"


class Compacted(StoreError):
    """A watch asked for changes older than the store still keeps: re-read, then watch."""


class Item(NamedTuple):
    """A key's value and version; unpacks as `value, version = store.get(key)`."""

    value: Any
    version: int


@dataclass(frozen=True)
class Change:
    """One write seen by a watch. `value` is None when the key was deleted."""

    revision: int
    key: str
    value: Any | None


DELETE = object()  # a Txn write that removes its key


@dataclass
class Txn:
    """Writes to several keys, applied all together only if every expectation holds.

        txn = Txn().expect("environments/acme", version).put("environments/acme", record)
        txn.put("events/000000000007", event)
        versions = store.commit(txn)  # None: an expectation failed, nothing was written
    """

    expected: dict[str, int | None] = field(default_factory=dict)
    writes: dict[str, Any] = field(default_factory=dict)  # value, or DELETE; in order

    def expect(self, key: str, version: int | None) -> Txn:
        """Require the key's version to be `version` (None: the key must not exist)."""
        self.expected[key] = version
        return self

    def put(self, key: str, value: Any) -> Txn:
        self.writes.pop(key, None)  # a later write of the same key wins, in its place
        self.writes[key] = value
        return self

    def delete(self, key: str) -> Txn:
        self.writes.pop(key, None)
        self.writes[key] = DELETE
        return self

    def staged(self, key: str) -> Any | None:
        """The value this transaction will write to `key`, if it writes one."""
        value = self.writes.get(key)
        return None if value is DELETE else value


class Store(ABC):
    """Keys with versions, compare-and-set, prefix listing and watches by revision."""

    @abstractmethod
    def get(self, key: str) -> Item | None:
        """The key's value and version, or None if it does not exist."""

    @abstractmethod
    def put(self, key: str, value: Any) -> int:
        """Write unconditionally; returns the new version (= the new revision)."""

    @abstractmethod
    def compare_and_set(self, key: str, expected_version: int | None, value: Any) -> bool:
        """Write only if the key's version is `expected_version` (None: it must not exist)."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the key; False if it did not exist (and nothing changed)."""

    @abstractmethod
    def commit(self, txn: Txn) -> dict[str, int] | None:
        """Apply every write of `txn` in one atomic step if all its expectations hold.

        Returns the new version of each key it put, or None if an expectation failed (and
        nothing was written). Deleting a key that does not exist writes nothing for it.
        """

    @abstractmethod
    def list(self, prefix: str, *, after: str | None = None, limit: int | None = None,
             reverse: bool = False) -> dict[str, Item]:
        """Keys that start with `prefix` (and sort after `after`), in key order.

        `reverse` lists the last keys first; `limit` keeps only the first `limit` of them.
        """

    @abstractmethod
    def revision(self) -> int:
        """The revision of the latest write: 0 for an empty SQLite store; on etcd, the
        cluster's, which counts writes under every prefix (other deployments' too)."""

    @abstractmethod
    def watch(self, prefix: str, after_revision: int, timeout: float) -> builtins.list[Change]:
        """Changes under `prefix` newer than `after_revision`, in revision order.

        Answers at once if there are some, else blocks up to `timeout` seconds for one and
        returns [] if none came. Raises `Compacted` if changes after `after_revision` are
        no longer kept. Blocking: call it from a worker thread in async code.
        """

    def fence(self, key: str, value: str | None) -> None:  # noqa: B027 (a no-op by default)
        """Make every later write check that `key` holds `value` (None: stop checking).

        A write whose check fails changes nothing and raises `NotLeader`. Backends with a
        single writer (SQLite) need no fence, so by default this does nothing."""

    @abstractmethod
    def close(self) -> None:
        """Release the backend; blocked watches return at once."""


def increment(store: Store, txn: Txn, key: str) -> int:
    """Stage `key += 1` in `txn`, guarded by the key's version; returns the new number.

    A store counter: two transactions that read the same value cannot both commit, so every
    number is handed out once. Staging it twice in one transaction counts twice.
    """
    staged = txn.staged(key)
    if staged is None:
        item = store.get(key)
        txn.expect(key, item.version if item else None)
        staged = item.value if item else 0
    number = int(staged) + 1
    txn.put(key, number)
    return number


def open_store(controller_dir: Path, spec: dict | None = None) -> Store:
    """The store a spec names: `{"kind": "sqlite"}` (the default, without a spec) is
    `<controller_dir>/store.sqlite`; `{"kind": "etcd", "endpoints": [...], "prefix": ...,
    "timeout": ...}` an etcd cluster (prefix and timeout optional)."""
    kind = (spec or {}).get("kind", "sqlite")
    if kind == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(Path(controller_dir) / "store.sqlite")
    if kind == "etcd":
        from .etcd import DEFAULT_PREFIX, EtcdStore
        from .etcdclient import DEFAULT_TIMEOUT

        assert spec is not None
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            raise ValueError("an etcd store spec needs at least one endpoint")
        return EtcdStore(list(endpoints), prefix=spec.get("prefix", DEFAULT_PREFIX),
                         timeout=float(spec.get("timeout", DEFAULT_TIMEOUT)))
    raise ValueError(f"unknown store kind {kind!r}: use 'sqlite' or 'etcd'")


__all__ = ["DELETE", "Change", "Compacted", "Item", "NotLeader", "Store", "StoreError", "Txn",
           "increment", "open_store"]
