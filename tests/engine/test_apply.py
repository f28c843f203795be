"""Applying entries on a replica: in order, once, within the epoch rules, never silently."""

from __future__ import annotations

import pytest

from tandemdb.engine import (
    ApplyConflict,
    DivergentHistory,
    JournalGap,
    MissingBlobs,
    StaleEpoch,
)

from .conftest import copy_blobs, replicate


def _primary_with_rows(make_env, n: int = 5):
    primary = make_env("primary")
    primary.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
    for i in range(n):
        primary.execute([("INSERT INTO t(id, v) VALUES (?, ?)", [i, f"v{i}"])])
    return primary


def _replicated(make_env, n: int, replica_name: str = "replica"):
    """A primary with `n` rows and a replica that has applied all of its entries."""
    primary = _primary_with_rows(make_env, n)
    replica = make_env(replica_name)
    replicate(primary, replica)
    return primary, replica


def test_apply_reaches_equal_checksum(make_env):
    primary = _primary_with_rows(make_env)
    primary.put_file("a/b.txt", b"hello")
    replica = make_env("replica")
    assert replicate(primary, replica) == primary.last_lsn
    assert replica.checksum() == primary.checksum()
    assert replica.get_file("a/b.txt") == b"hello"
    assert [e.lsn for e in replica.read_journal(0)] == [e.lsn for e in primary.read_journal(0)]


def test_apply_is_idempotent_and_refuses_gaps(make_env):
    primary = _primary_with_rows(make_env)
    replica = make_env("replica")
    entries = primary.read_journal(0)
    replica.apply(entries[:3])
    assert replica.apply(entries[:4]) == 4, "retry with overlap applies only the new one"
    assert replica.apply(entries[:4]) == 4
    with pytest.raises(JournalGap, match="expected lsn 5"):
        replica.apply(entries[5:])
    assert replica.last_lsn == 4
    replica.apply(entries)
    assert replica.checksum() == primary.checksum()
    assert replica.execute(["SELECT count(*) FROM t"]).results[0].rows == [[5]]


def test_batch_is_all_or_nothing(make_env):
    primary, replica = make_env("primary"), make_env("replica")
    primary.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
    for i in (1, 2, 5):
        primary.execute([("INSERT INTO t(id, v) VALUES (?, 'p')", [i])])
    # A replica whose lsn 1 differs: its row 5 collides with the primary's lsn 4.
    replica.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                     "INSERT INTO t(id, v) VALUES (5, 'local')"])
    before = replica.checksum().total
    with pytest.raises(ApplyConflict) as info:
        replica.apply(primary.read_journal(1))
    assert info.value.table == "t" and info.value.key == (5,)
    assert "lsn 4" in str(info.value) and "'t'" in str(info.value)
    assert replica.checksum().total == before and replica.last_lsn == 1, \
        "nothing of the failed batch is applied"


def test_conflicting_insert_names_table_and_key(make_env):
    primary, replica = make_env("primary"), make_env("replica")
    primary.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
    primary.execute(["INSERT INTO t(id, v) VALUES (7, 'theirs')"])
    replica.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                     "INSERT INTO t(id, v) VALUES (7, 'mine')"])
    with pytest.raises(ApplyConflict, match="already exists"):
        replica.apply(primary.read_journal(1))
    with pytest.raises(DivergentHistory, match="forked"):
        replica.apply(primary.read_journal(0))


def test_local_write_on_a_replica_is_detected_as_divergence(make_env):
    primary, replica = _replicated(make_env, 1)
    replica.execute(["INSERT INTO t(id, v) VALUES (7, 'mine')"])
    primary.execute(["INSERT INTO t(id, v) VALUES (7, 'theirs')"])
    with pytest.raises(DivergentHistory):
        replica.apply(primary.read_journal(2))


def test_missing_blobs_are_refused_before_anything_applies(make_env):
    primary = make_env("primary")
    primary.put_file("f", b"content")
    replica = make_env("replica")
    entries = primary.read_journal(0)
    with pytest.raises(MissingBlobs) as info:
        replica.apply(entries)
    assert info.value.digests == list(entries[0].blobs)
    assert replica.last_lsn == 0
    copy_blobs(primary, replica, entries)
    replica.apply(entries)
    assert replica.get_file("f") == b"content"


def test_triggers_do_not_fire_on_replicas(make_env):
    primary = make_env("primary")
    primary.execute([
        "CREATE TABLE t(id INTEGER PRIMARY KEY)",
        "CREATE TABLE audit(id INTEGER PRIMARY KEY AUTOINCREMENT, tid)",
        "CREATE TRIGGER t_audit AFTER INSERT ON t BEGIN INSERT INTO audit(tid) VALUES "
        "(new.id); END",
    ])
    primary.execute(["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"])
    replica = make_env("replica")
    replicate(primary, replica)
    rows = replica.execute(["SELECT tid FROM audit ORDER BY id"]).results[0].rows
    assert rows == [[1], [2]], "the trigger's rows come from the changeset, once"
    assert replica.checksum() == primary.checksum()


def test_stale_sender_epoch_is_refused(make_env):
    primary, replica = _replicated(make_env, 2)
    replica.observe_epoch(2)
    primary.execute(["INSERT INTO t(id, v) VALUES (50, 'late')"])
    with pytest.raises(StaleEpoch, match="epoch 1"):
        replicate(primary, replica)
    assert replica.last_lsn == 3


def test_entries_of_a_superseded_epoch_are_refused(make_env):
    """An old primary's writes after the fork point never enter a replica of the new epoch."""
    old, new = _replicated(make_env, 2, "new")  # lsn 1..3, epoch 1
    new.begin_epoch(2)  # promoted at lsn 3
    old.execute(["INSERT INTO t(id, v) VALUES (99, 'lost')"])  # lsn 4, epoch 1
    lost = old.read_journal(3)
    with pytest.raises(StaleEpoch, match="superseded"):
        new.apply(lost, sender_epoch=2)
    assert new.last_lsn == 3


def test_replica_learns_epoch_changes_from_entries(make_env):
    a, b = _replicated(make_env, 1, "b")
    a.begin_epoch(2)
    a.execute(["INSERT INTO t(id, v) VALUES (5, 'five')"])
    replicate(a, b)
    assert b.epoch == 2 and b.epoch_history == [(1, 0), (2, 2)]
    c = make_env("c")  # a fresh replica reads old-epoch entries then new ones: allowed
    replicate(a, c)
    assert c.checksum() == a.checksum() and c.epoch == 2


def test_same_lsn_from_another_epoch_is_divergence(make_env):
    a, b = _replicated(make_env, 2, "b")
    b.begin_epoch(2)
    b.execute(["INSERT INTO t(id, v) VALUES (77, 'b')"])  # lsn 4 epoch 2
    a.observe_epoch(3)
    a.execute(["INSERT INTO t(id, v) VALUES (78, 'a')"])  # lsn 4 epoch 3 (contrived)
    with pytest.raises(DivergentHistory):
        b.apply(a.read_journal(3), sender_epoch=3)
