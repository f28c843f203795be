"""Rewind: undo entries after a fork point with inverted changesets and return them."""

from __future__ import annotations

import pytest

from tandemdb.engine import RewindImpossible

from .conftest import replicate


def test_rewind_returns_lost_entries_and_restores_state(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "CREATE TABLE n(x)"])
    env.execute(["INSERT INTO t VALUES (1, 'a')", "INSERT INTO n VALUES ('keep')"])
    env.put_file("f", b"v1")
    at_fork = env.checksum()
    env.execute(["UPDATE t SET v = 'b' WHERE id = 1", "INSERT INTO t VALUES (2, 'c')"])
    env.execute(["DELETE FROM n"])
    env.put_file("f", b"v2")
    env.put_file("g", b"new")
    env.delete_file("g")
    lost = env.rewind(3)
    assert [e.lsn for e in lost] == [4, 5, 6, 7, 8]
    assert env.last_lsn == 3
    assert env.checksum() == at_fork
    assert env.get_file("f") == b"v1"
    assert env.read_journal(3) == []


def test_rewind_then_reapply_gives_same_checksum(make_env):
    primary = make_env("p")
    primary.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"])
    for i in range(10):
        primary.execute([("INSERT INTO t VALUES (?, ?)", [i, i])])
    primary.execute(["UPDATE t SET v = v * 10"])
    replica = make_env("r")
    replicate(primary, replica)
    lost = replica.rewind(4)
    assert len(lost) == 8
    replica.apply(lost)
    assert replica.checksum() == primary.checksum()


def test_rewind_across_ddl_or_truncation_is_refused(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(v)"])
    env.execute(["INSERT INTO t VALUES (1)"])
    env.execute(["ALTER TABLE t ADD COLUMN w"])
    env.execute(["INSERT INTO t VALUES (2, 3)"])
    before = env.checksum()
    with pytest.raises(RewindImpossible, match="schema"):
        env.rewind(2)
    assert env.checksum() == before and env.last_lsn == 4
    assert [e.lsn for e in env.rewind(3)] == [4]
    env.truncate_journal()
    with pytest.raises(RewindImpossible, match="snapshot"):
        env.rewind(1)


def test_rewind_drops_epochs_that_lost_all_their_entries(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(v)"])
    env.begin_epoch(2)
    env.execute(["INSERT INTO t VALUES (1)"])
    env.rewind(1)
    assert env.epoch_history == [(1, 0)]
    assert env.epoch == 2, "the newest known epoch never goes back"
