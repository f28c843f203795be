"""The Store, on both backends (the `store` fixture: SQLite and etcd): compare-and-set,
listing, revisions, watches and durability. Revisions are counted from the store's revision
at the start of the test (`base`): an etcd shared by several tests has moved on already."""

from __future__ import annotations

import threading
import time

import pytest

from tandemdb.controller.store import Change, Compacted, Item, StoreError, open_store
from tandemdb.controller.store import sqlite as sqlite_backend
from tandemdb.controller.store.etcd import EtcdStore
from tandemdb.controller.store.sqlite import SqliteStore


def test_empty_store(store):
    base = store.revision()
    if isinstance(store, SqliteStore):
        assert base == 0
    assert store.get("a") is None
    assert store.list("") == {}
    assert store.delete("a") is False
    assert store.revision() == base  # a delete of nothing is not a write


def test_put_get_versions_and_revision(store):
    base = store.revision()
    v1 = store.put("regions/west", {"name": "west", "pair": "east"})
    assert v1 == base + 1 and store.revision() == base + 1
    value, version = store.get("regions/west")
    assert value == {"name": "west", "pair": "east"} and version == base + 1
    v2 = store.put("regions/east", {"name": "east"})
    v3 = store.put("regions/west", {"name": "west", "pair": "south"})
    assert (v2, v3) == (base + 2, base + 3)
    assert store.get("regions/west") == Item({"name": "west", "pair": "south"}, base + 3)
    assert store.get("regions/east").version == base + 2  # untouched keys keep theirs


def test_compare_and_set(store):
    base = store.revision()
    # None means "must not exist".
    assert store.compare_and_set("environments/acme", None, {"epoch": 1}) is True
    assert store.compare_and_set("environments/acme", None, {"epoch": 99}) is False
    value, version = store.get("environments/acme")
    assert value == {"epoch": 1}
    # A stale version loses; the current one wins and the version moves on.
    assert store.compare_and_set("environments/acme", version + 1, {"epoch": 2}) is False
    assert store.compare_and_set("environments/acme", version, {"epoch": 2}) is True
    assert store.compare_and_set("environments/acme", version, {"epoch": 3}) is False
    assert store.get("environments/acme").value == {"epoch": 2}
    # An expected version for a key that does not exist fails.
    assert store.compare_and_set("environments/none", 1, {}) is False
    assert store.get("environments/none") is None
    # Failed CAS writes nothing.
    assert store.revision() == base + 2


def test_compare_and_set_race_has_one_winner(store):
    store.put("counter", 0)
    wins = []

    def bump() -> None:
        for _ in range(50):
            while True:
                value, version = store.get("counter")
                if store.compare_and_set("counter", version, value + 1):
                    wins.append(1)
                    break

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("counter").value == 200 == len(wins)


def test_delete_and_recreate(store):
    base = store.revision()
    store.put("environments/acme", {"epoch": 1})
    assert store.delete("environments/acme") is True
    assert store.get("environments/acme") is None
    assert store.delete("environments/acme") is False
    assert store.compare_and_set("environments/acme", None, {"epoch": 1}) is True
    assert store.revision() == base + 3


def test_list_by_prefix_in_key_order(store):
    for key in ["environments/b", "environments/a", "environmentsX", "regions/west",
                "environments/a/sub"]:
        store.put(key, {"key": key})
    listed = store.list("environments/")
    assert list(listed) == ["environments/a", "environments/a/sub", "environments/b"]
    assert listed["environments/b"].value == {"key": "environments/b"}
    assert list(store.list("regions/")) == ["regions/west"]
    assert len(store.list("")) == 5


def test_watch_answers_at_once_with_newer_changes(store):
    base = store.revision()
    store.put("environments/a", 1)
    store.put("regions/west", 2)
    store.delete("environments/a")
    start = time.monotonic()
    changes = store.watch("environments/", base, timeout=5)
    assert time.monotonic() - start < 1
    assert changes == [Change(base + 1, "environments/a", 1),
                       Change(base + 3, "environments/a", None)]
    assert store.watch("", base + 1, timeout=0) == [Change(base + 2, "regions/west", 2),
                                                    Change(base + 3, "environments/a", None)]


def test_watch_times_out_without_a_write(store):
    store.put("environments/a", 1)
    base = store.revision()
    start = time.monotonic()
    assert store.watch("environments/", base, timeout=0.4) == []
    assert time.monotonic() - start >= 0.35
    # A write under another prefix does not answer a watch of this one.
    store.put("regions/west", 1)
    assert store.watch("environments/", base, timeout=0.2) == []


def test_watch_wakes_on_a_write_from_another_thread(store):
    base = store.revision()
    writer = threading.Timer(0.3, store.put, args=("environments/acme", {"epoch": 1}))
    start = time.monotonic()
    writer.start()
    changes = store.watch("environments/", base, timeout=10)
    elapsed = time.monotonic() - start
    writer.join()
    assert changes == [Change(base + 1, "environments/acme", {"epoch": 1})]
    assert 0.25 <= elapsed < 2, elapsed


def test_watch_sees_a_write_from_another_store_object(store):
    """Another controller's write (its own store object, its own connections) wakes a
    watch at once: etcd pushes it; SQLite's watch finds it by polling the file."""
    other = (SqliteStore(store.path) if isinstance(store, SqliteStore)
             else EtcdStore(store.endpoints, prefix=store.prefix))
    base = store.revision()
    try:
        threading.Timer(0.2, other.put, args=("k", 1)).start()
        start = time.monotonic()
        assert store.watch("", base, timeout=10) == [Change(base + 1, "k", 1)]
        assert time.monotonic() - start < sqlite_backend.POLL_SECONDS + 1.0
    finally:
        other.close()


def test_sqlite_watch_sees_a_write_from_another_process(tmp_path):
    """A second connection (as another process would have) wakes the watch by polling."""
    path = tmp_path / "store.sqlite"
    watcher, writer = SqliteStore(path), SqliteStore(path)
    try:
        threading.Timer(0.2, writer.put, args=("k", 1)).start()
        start = time.monotonic()
        assert watcher.watch("", 0, timeout=10) == [Change(1, "k", 1)]
        assert time.monotonic() - start < sqlite_backend.POLL_SECONDS + 1.0
    finally:
        watcher.close()
        writer.close()


def test_close_wakes_a_blocked_watch(store):
    result = []
    base = store.revision()
    t = threading.Thread(target=lambda: result.append(store.watch("", base, timeout=30)))
    t.start()
    time.sleep(0.2)
    store.close()
    t.join(5)
    assert not t.is_alive() and result == [[]]
    with pytest.raises(StoreError, match="closed"):
        store.get("a")


def test_sqlite_watch_behind_the_trimmed_log_is_compacted(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_backend, "KEEP_CHANGES", 5)
    monkeypatch.setattr(sqlite_backend, "TRIM_EVERY", 10)
    s = SqliteStore(tmp_path / "store.sqlite")
    try:
        for i in range(10):
            s.put(f"k{i}", i)
        with pytest.raises(Compacted):
            s.watch("", 2, timeout=0)
        assert [c.revision for c in s.watch("", 5, timeout=0)] == [6, 7, 8, 9, 10]
    finally:
        s.close()


def test_sqlite_state_survives_reopen(tmp_path):
    s = open_store(tmp_path / "controller")
    s.put("regions/west", {"name": "west"})
    assert s.compare_and_set("environments/acme", None, {"epoch": 1})
    s.put("environments/gone", {})
    s.delete("environments/gone")
    s.close()
    assert (tmp_path / "controller" / "store.sqlite").exists()
    again = open_store(tmp_path / "controller")
    try:
        assert again.revision() == 4
        assert again.get("environments/acme") == Item({"epoch": 1}, 2)
        assert again.get("environments/gone") is None
        assert list(again.list("")) == ["environments/acme", "regions/west"]
        assert [c.revision for c in again.watch("", 0, timeout=0)] == [1, 2, 3, 4]
        assert again.put("x", 1) == 5  # the revision goes on from where it was
    finally:
        again.close()


def test_sqlite_group_commit_keeps_each_writer_apart(tmp_path, monkeypatch):
    """Concurrent writers share commits; each still gets its own result, its own failure,
    and a revision of its own, and a failing step does not undo the others."""
    store = SqliteStore(tmp_path / "store.sqlite")
    commits = 0
    real = sqlite_backend.SqliteStore._commit_queued

    def counting(self) -> None:
        nonlocal commits
        commits += 1
        real(self)

    monkeypatch.setattr(sqlite_backend.SqliteStore, "_commit_queued", counting)
    results: dict[int, int] = {}
    errors: list[Exception] = []

    def writer(i: int) -> None:
        for j in range(25):
            results[i * 100 + j] = store.put(f"g/{i}/{j}", {"i": i, "j": j})
        try:
            store._write(lambda db: (_ for _ in ()).throw(ValueError(f"step {i} refuses")))
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 8 and all("refuses" in str(e) for e in errors)
    assert len(set(results.values())) == 200  # a revision each
    for key, revision in results.items():
        assert store.get(f"g/{key // 100}/{key % 100}") == Item({"i": key // 100,
                                                                 "j": key % 100}, revision)
    assert store.revision() == max(results.values())
    assert commits <= 208  # never more commits than writes (usually far fewer)
    store.close()
