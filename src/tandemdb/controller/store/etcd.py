"""The etcd backend of `Store`, and the election primitives the controllers share.

Every key lives under `prefix` (default `tandem/`), so several deployments or tests can
share one etcd cluster. A key's version is its etcd `mod_revision`; each write is one etcd
transaction, so compare-and-set, `Txn` and fencing cost one round trip. Unlike SQLite, etcd
gives every key written by one transaction the same revision.

**Fencing** (Patroni's leader-key check): after `fence(key, value)` every write of this
store object carries the compare `value(key) == value`. A controller that lost the leader
key, even one paused for a while that wakes up later, cannot change a single key: its
write fails whole and raises `NotLeader`. The fence key is also read in the transaction's
failure branch, so a failed fence is told from a failed expectation in that same trip.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import DELETE, Change, Item, NotLeader, Store, StoreError, Txn
from .etcdclient import (
    DEFAULT_TIMEOUT,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    LeaseLost,
    TxnResult,
    absent,
    delete_op,
    mod_revision_is,
    parse_kv,
    prefix_end,
    put_op,
    range_op,
    value_is,
)

DEFAULT_PREFIX = "tandem/"


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Holder:
    """Who holds an election key: its value, the lease it lives by, when it was taken."""

    value: Any
    lease: int
    create_revision: int
    mod_revision: int


class EtcdStore(Store):
    def __init__(self, endpoints: Sequence[str], prefix: str = DEFAULT_PREFIX,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client = EtcdClient(endpoints, timeout)
        self.endpoints = self.client.endpoints
        self.prefix = prefix
        self._fence: tuple[str, bytes] | None = None
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"EtcdStore({', '.join(self.endpoints)}, prefix={self.prefix!r})"

    def _key(self, key: str) -> bytes:
        return (self.prefix + key).encode()

    def _name(self, kv: KeyValue) -> str:
        return kv.key.decode()[len(self.prefix):]

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        _, kvs, _ = self.client.range(self._key(key))
        return Item(json.loads(kvs[0].value), kvs[0].mod_revision) if kvs else None

    def list(self, prefix: str, *, after: str | None = None, limit: int | None = None,
             reverse: bool = False) -> dict[str, Item]:
        if limit is not None and limit <= 0:
            return {}
        end = prefix_end(self._key(prefix))
        start = self._key(prefix)
        if after is not None and after >= prefix:
            start = self._key(after) + b"\0"  # the first key that sorts after `after`
        if not start:
            start = b"\0"  # the whole keyspace (an empty store prefix)
        if end != b"\0" and start >= end:
            return {}
        _, kvs, _ = self.client.range(start, end, limit=limit or 0, descending=reverse)
        return {self._name(kv): Item(json.loads(kv.value), kv.mod_revision) for kv in kvs}

    def revision(self) -> int:
        revision, _, _ = self.client.range(self._key(""), count_only=True)
        return revision

    def watch(self, prefix: str, after_revision: int, timeout: float) -> builtins.list[Change]:
        if self._closed.is_set():
            return []
        key = self._key(prefix) or b"\0"
        events = self.client.watch(key, prefix_end(self._key(prefix)), after_revision + 1,
                                   timeout)
        return [Change(e.kv.mod_revision, self._name(e.kv),
                       None if e.deleted else json.loads(e.kv.value)) for e in events]

    # -- writes --------------------------------------------------------------------------

    def fence(self, key: str, value: str | None) -> None:
        self._fence = None if value is None else (key, _encode(value))

    def put(self, key: str, value: Any) -> int:
        return self._txn([], [put_op(self._key(key), _encode(value))]).revision

    def compare_and_set(self, key: str, expected_version: int | None, value: Any) -> bool:
        return self._txn([self._expect(key, expected_version)],
                         [put_op(self._key(key), _encode(value))]).succeeded

    def delete(self, key: str) -> bool:
        result = self._txn([], [delete_op(self._key(key))])
        return int(result.responses[0]["response_delete_range"].get("deleted", 0)) > 0

    def commit(self, txn: Txn) -> dict[str, int] | None:
        ops = [delete_op(self._key(key)) if value is DELETE
               else put_op(self._key(key), _encode(value)) for key, value in txn.writes.items()]
        result = self._txn([self._expect(k, v) for k, v in txn.expected.items()], ops)
        if not result.succeeded:
            return None
        return {key: result.revision for key, value in txn.writes.items() if value is not DELETE}

    def _expect(self, key: str, version: int | None) -> dict:
        return absent(self._key(key)) if version is None else mod_revision_is(self._key(key),
                                                                             version)

    def _txn(self, compare: builtins.list[dict], success: builtins.list[dict]) -> TxnResult:
        """One etcd transaction, guarded by the fence when one is set."""
        self._check_open()
        fence = self._fence
        if fence is None:
            return self.client.txn(compare, success)
        key, value = fence
        result = self.client.txn([value_is(self._key(key), value), *compare], success,
                                 [range_op(self._key(key))])
        if not result.succeeded:
            kvs = result.responses[0]["response_range"].get("kvs", [])
            current = parse_kv(kvs[0]).value if kvs else None
            if current != value:
                now = f"it now holds {current.decode()}" if current else "nobody holds it now"
                raise NotLeader(f"this controller no longer holds the leader key {key!r} "
                                f"({now}); the write was not made")
        return result

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError(f"{self!r} is closed")

    # -- election primitives (never fenced) ----------------------------------------------

    def grant(self, ttl_seconds: int) -> int:
        """A new lease of `ttl_seconds`; keys attached to it vanish when it expires."""
        self._check_open()
        lease, _ = self.client.lease_grant(ttl_seconds)
        return lease

    def keepalive(self, lease: int) -> float:
        """Renew `lease`; the seconds it has left. `LeaseLost` if it already expired."""
        self._check_open()
        ttl = self.client.lease_keepalive(lease)
        if ttl <= 0:
            raise LeaseLost(f"lease {lease:x} expired or was revoked; the keys it held are gone")
        return float(ttl)

    def revoke(self, lease: int) -> None:
        """End `lease` now (its keys go at once); a lease already gone is fine."""
        self._check_open()
        self.client.lease_revoke(lease)

    def lease_remaining(self, lease: int) -> float | None:
        """Seconds left on `lease`, None if it no longer exists."""
        self._check_open()
        ttl = self.client.lease_ttl(lease)
        return None if ttl < 0 else float(ttl)

    def acquire(self, key: str, value: Any, lease: int) -> bool:
        """Create `key` = `value` under `lease` only if nobody holds it; True if we did."""
        self._check_open()
        result = self.client.txn([absent(self._key(key))],
                                 [put_op(self._key(key), _encode(value), lease)])
        return result.succeeded

    def holder(self, key: str) -> Holder | None:
        """Who holds `key` now, or None."""
        self._check_open()
        _, kvs, _ = self.client.range(self._key(key))
        if not kvs:
            return None
        kv = kvs[0]
        return Holder(json.loads(kv.value), kv.lease, kv.create_revision, kv.mod_revision)

    def members(self) -> builtins.list[dict]:
        """Each etcd member: name, client URLs, healthy (answers and sees a leader), leader.

        With no member reachable, one unhealthy entry per configured endpoint."""
        self._check_open()
        try:
            listed = self.client.member_list()
        except EtcdUnavailable as exc:
            return [{"name": None, "id": None, "client_urls": [url], "healthy": False,
                     "leader": False, "error": str(exc)} for url in self.endpoints]
        out, leaders = [], set()
        for member in listed:
            urls = member.get("clientURLs", [])
            status = self.client.status(urls[0]) if urls else None
            leader = int(status.get("leader", 0)) if status else 0
            if leader:
                leaders.add(leader)
            out.append({"name": member.get("name") or None, "id": int(member["ID"]),
                        "client_urls": urls, "healthy": bool(leader),
                        "raft_term": int(status.get("raftTerm", 0)) if status else None,
                        "db_size": int(status.get("dbSize", 0)) if status else None})
        for entry in out:
            entry["leader"] = entry["healthy"] and entry["id"] in leaders
        return out

    def close(self) -> None:
        self._closed.set()
        self.client.close()


__all__ = ["EtcdError", "EtcdStore", "EtcdUnavailable", "Holder", "LeaseLost", "NotLeader"]
