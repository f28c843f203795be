"""The Store primitives that operations, events and webhooks stand on: `Txn` (several keys,
all or nothing), ranged listing, and counters. On the real SQLite backend."""

from __future__ import annotations

import threading

import pytest

from tandemdb.controller.store import Change, Item, Txn, increment
from tandemdb.controller.store.sqlite import SqliteStore


def test_txn_writes_every_key_or_none(store):
    store.put("environments/acme", {"state": "creating"})  # revision 1
    txn = (Txn().expect("environments/acme", 1).expect("events/1", None)
           .put("environments/acme", {"state": "active"}).put("events/1", {"id": 1})
           .put("outbox/wh-1/1", {"event": 1}))
    assert store.commit(txn) == {"environments/acme": 2, "events/1": 3, "outbox/wh-1/1": 4}
    assert store.revision() == 4
    assert store.get("environments/acme") == Item({"state": "active"}, 2)
    # One stale expectation: nothing at all is written.
    stale = Txn().expect("environments/acme", 1).put("environments/acme", {"state": "x"})
    stale.put("events/2", {"id": 2})
    assert store.commit(stale) is None
    assert store.get("events/2") is None and store.revision() == 4
    # "must not exist" fails for a key that exists.
    assert store.commit(Txn().expect("events/1", None).put("other", 1)) is None
    assert store.get("other") is None


def test_txn_deletes_and_watchers_see_each_key(store):
    store.put("outbox/wh-1/1", 1)
    store.put("outbox/wh-1/2", 2)
    txn = Txn().delete("outbox/wh-1/1").delete("outbox/wh-1/2").delete("missing")
    txn.put("webhooks/wh-1", None).delete("webhooks/wh-1")  # the last write of a key wins
    assert store.commit(txn) == {}
    assert store.list("outbox/") == {} and store.get("webhooks/wh-1") is None
    # A missing key's delete writes nothing; the others get one revision each.
    assert store.revision() == 4
    assert store.watch("outbox/", 2, timeout=0) == [Change(3, "outbox/wh-1/1", None),
                                                    Change(4, "outbox/wh-1/2", None)]
    # Expectations can guard a delete too.
    store.put("k", 1)
    assert store.commit(Txn().expect("k", 1).delete("k")) is None
    assert store.commit(Txn().expect("k", 5).delete("k")) == {}
    assert store.get("k") is None


def test_txn_is_all_or_nothing_when_a_write_fails(store):
    store.put("a", 1)
    txn = Txn().put("a", 2).put("b", object())  # not JSON: the commit raises before writing
    with pytest.raises(TypeError):
        store.commit(txn)
    assert store.get("a") == Item(1, 1) and store.get("b") is None and store.revision() == 1


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


def test_txn_survives_reopen(tmp_path):
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
