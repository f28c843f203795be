"""The Store primitives that operations, events and webhooks stand on: `Txn` (several keys,
all or nothing), ranged listing, and counters. On both real backends (the `store` fixture);
the keys of one `Txn` get one revision each on SQLite and share one on etcd."""

from __future__ import annotations

import threading

import pytest

from tandemdb.controller.store import Change, Item, Txn, increment
from tandemdb.controller.store.sqlite import SqliteStore


def test_txn_writes_every_key_or_none(store):
    first = store.put("environments/acme", {"state": "creating"})
    txn = (Txn().expect("environments/acme", first).expect("events/1", None)
           .put("environments/acme", {"state": "active"}).put("events/1", {"id": 1})
           .put("outbox/wh-1/1", {"event": 1}))
    versions = store.commit(txn)
    assert versions is not None
    assert list(versions) == ["environments/acme", "events/1", "outbox/wh-1/1"]
    assert first < min(versions.values()) and max(versions.values()) == store.revision()
    assert store.get("environments/acme") == Item({"state": "active"},
                                                  versions["environments/acme"])
    assert store.get("outbox/wh-1/1") == Item({"event": 1}, versions["outbox/wh-1/1"])
    # A watcher sees the whole transaction in one answer, each key at its version.
    assert store.watch("", first, timeout=0) == [
        Change(versions[key], key, value) for key, value in txn.writes.items()]
    # One stale expectation: nothing at all is written.
    revision = store.revision()
    stale = Txn().expect("environments/acme", first).put("environments/acme", {"state": "x"})
    stale.put("events/2", {"id": 2})
    assert store.commit(stale) is None
    assert store.get("events/2") is None and store.revision() == revision
    # "must not exist" fails for a key that exists.
    assert store.commit(Txn().expect("events/1", None).put("other", 1)) is None
    assert store.get("other") is None


def test_txn_deletes_and_watchers_see_each_key(store):
    store.put("outbox/wh-1/1", 1)
    written = store.put("outbox/wh-1/2", 2)
    txn = Txn().delete("outbox/wh-1/1").delete("outbox/wh-1/2").delete("missing")
    txn.put("webhooks/wh-1", None).delete("webhooks/wh-1")  # the last write of a key wins
    assert store.commit(txn) == {}
    assert store.list("outbox/") == {} and store.get("webhooks/wh-1") is None
    # A missing key's delete is no change; the two others are, in key order, at revisions
    # after the puts (SQLite: one each; etcd: one shared), the last one the store's.
    changes = store.watch("", written, timeout=0)
    assert [(c.key, c.value) for c in changes] == [("outbox/wh-1/1", None),
                                                   ("outbox/wh-1/2", None)]
    assert written < changes[0].revision <= changes[1].revision == store.revision()
    # Expectations can guard a delete too.
    version = store.put("k", 1)
    assert store.commit(Txn().expect("k", version - 1).delete("k")) is None
    assert store.commit(Txn().expect("k", version).delete("k")) == {}
    assert store.get("k") is None


def test_txn_is_all_or_nothing_when_a_write_fails(store):
    version = store.put("a", 1)
    txn = Txn().put("a", 2).put("b", object())  # not JSON: the commit raises before writing
    with pytest.raises(TypeError):
        store.commit(txn)
    assert store.get("a") == Item(1, version) and store.get("b") is None
    assert store.revision() == version


def test_list_after_limit_and_reverse(store):
    for seq in [3, 1, 2, 10]:
        store.put(f"events/{seq:012d}", seq)
    store.put("eventsX", "not under the prefix")
    store.put("events0", "not under the prefix either")

    def values(**kwargs) -> list:
        return [item.value for item in store.list("events/", **kwargs).values()]

    assert values() == [1, 2, 3, 10]
    assert values(after=f"events/{2:012d}") == [3, 10]
    assert values(after=f"events/{10:012d}") == []
    assert values(after="a") == [1, 2, 3, 10]  # sorts before the prefix: everything
    assert values(after="z") == []
    assert values(limit=2) == [1, 2]
    assert values(limit=0) == []
    assert values(reverse=True) == [10, 3, 2, 1]
    assert values(reverse=True, limit=2) == [10, 3]
    assert values(after=f"events/{1:012d}", reverse=True, limit=2) == [10, 3]


def test_increment_hands_each_number_out_once(store):
    txn = Txn()
    assert increment(store, txn, "counters/events") == 1
    assert increment(store, txn, "counters/events") == 2  # twice in one transaction
    assert store.commit(txn) is not None and store.get("counters/events").value == 2

    numbers: list[int] = []
    lock = threading.Lock()

    def take(count: int) -> None:
        for _ in range(count):
            while True:
                t = Txn()
                n = increment(store, t, "counters/events")
                t.put(f"events/{n:012d}", n)
                if store.commit(t) is not None:
                    with lock:
                        numbers.append(n)
                    break

    threads = [threading.Thread(target=take, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(3, 103))
    assert len(store.list("events/")) == 100


def test_sqlite_txn_survives_reopen(tmp_path):
    path = tmp_path / "store.sqlite"
    s = SqliteStore(path)
    s.commit(Txn().put("a", 1).put("b", 2))
    s.close()
    again = SqliteStore(path)
    try:
        assert again.get("a") == Item(1, 1) and again.get("b") == Item(2, 2)
        assert again.revision() == 2
    finally:
        again.close()
