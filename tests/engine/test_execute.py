"""Executing transactions: results, one journal entry per write, DDL capture, group commit."""

from __future__ import annotations

import pytest

from tandemdb.engine import ReadOnly, SqlError
from tandemdb.engine.journal import CHANGESET, DDL


def test_write_returns_results_lsn_and_epoch(make_env):
    env = make_env()
    res = env.execute([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        ("INSERT INTO t(v) VALUES (?)", ["a"]),
        ("INSERT INTO t(v) VALUES (:v)", {"v": "b"}),
        "SELECT id, v FROM t ORDER BY id",
    ])
    assert res.lsn == 1 and res.epoch == 1
    assert res.results[1].rows_affected == 1
    assert res.results[2].last_insert_rowid == 2
    assert res.results[3].columns == ["id", "v"]
    assert res.results[3].rows == [[1, "a"], [2, "b"]]
    assert res.results[0].last_insert_rowid is None


def test_each_write_transaction_is_one_entry_and_reads_make_none(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v)"])
    for i in range(5):
        assert env.execute([("INSERT INTO t(v) VALUES (?)", [i])]).lsn == i + 2
    read = env.execute(["SELECT count(*) FROM t"])
    assert read.lsn == 6 and read.results[0].rows == [[5]]
    no_change = env.execute(["UPDATE t SET v = 99 WHERE id = 12345"])
    assert no_change.lsn == 6
    assert [e.lsn for e in env.read_journal(0)] == [1, 2, 3, 4, 5, 6]
    assert env.last_lsn == 6


def test_select_with_no_rows_still_names_columns(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(a, b)"])
    assert env.execute(["SELECT a, b FROM t"]).results[0].columns == ["a", "b"]


def test_ddl_is_recorded_as_text_in_statement_order(make_env):
    env = make_env()
    env.execute([
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v)",
        "INSERT INTO t(v) VALUES ('x')",
        "ALTER TABLE t ADD COLUMN w DEFAULT 7",
        "UPDATE t SET w = 8",
        "CREATE INDEX t_w ON t(w)",
    ])
    (entry,) = env.read_journal(0)
    kinds = [k for k, _ in entry.segments]
    assert kinds == [DDL, CHANGESET, DDL, CHANGESET, DDL]
    assert entry.ddl == ["CREATE TABLE t(id INTEGER PRIMARY KEY, v)",
                         "ALTER TABLE t ADD COLUMN w DEFAULT 7",
                         "CREATE INDEX t_w ON t(w)"]


def test_tables_without_primary_key_are_captured(make_env):
    env = make_env()
    env.execute(["CREATE TABLE log(msg)", "INSERT INTO log VALUES ('hello')"])
    env.execute(["UPDATE log SET msg = 'bye'"])
    assert env.last_lsn == 2
    assert env.read_journal(1)[0].changesets, "rowid table update must be in a changeset"


def test_failed_statement_rolls_back_whole_transaction(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY)"])
    with pytest.raises(SqlError, match="UNIQUE"):
        env.execute(["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"])
    assert env.execute(["SELECT count(*) FROM t"]).results[0].rows == [[0]]
    assert env.last_lsn == 1


def test_bad_params_are_sql_errors(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(a)"])
    with pytest.raises(SqlError):
        env.execute([("INSERT INTO t VALUES (?)", [1, 2])])
    with pytest.raises(SqlError):
        env.execute([("INSERT INTO t VALUES (?)", [[1]])])
    with pytest.raises(SqlError):
        env.execute([("INSERT INTO t VALUES (?)", "notalist")])
    with pytest.raises(SqlError):
        env.execute([""])
    assert env.last_lsn == 1


def test_group_commit_isolates_failures(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY)"])
    outcomes = env.execute_group([
        [("INSERT INTO t VALUES (?)", [1])],
        [("INSERT INTO t VALUES (?)", [2]), ("INSERT INTO t VALUES (?)", [1])],  # fails
        ["SELECT count(*) FROM t"],
        [("INSERT INTO t VALUES (?)", [3])],
    ])
    assert outcomes[0].lsn == 2
    assert isinstance(outcomes[1], SqlError)
    assert outcomes[2].lsn == 2 and outcomes[2].results[0].rows == [[1]]
    assert outcomes[3].lsn == 3
    rows = env.execute(["SELECT id FROM t ORDER BY id"]).results[0].rows
    assert rows == [[1], [3]]
    assert [e.lsn for e in env.read_journal(0)] == [1, 2, 3]


def test_state_survives_reopen(make_env, tmp_path):
    env = make_env("a")
    env.execute(["CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"])
    env.begin_epoch(3)
    env.execute(["INSERT INTO t VALUES (2)"])
    total = env.checksum().total
    env.close()
    again = make_env("a")
    assert again.last_lsn == 2 and again.epoch == 3
    assert again.read_journal(1)[0].epoch == 3
    assert again.checksum().total == total


def test_read_only_mode_serves_reads_and_refuses_writes(make_env):
    env = make_env()
    env.execute(["CREATE TABLE t(v)", "INSERT INTO t VALUES (1)"])
    before = env.checksum().total
    assert env.execute(["SELECT v FROM t"], read_only=True).results[0].rows == [[1]]
    for sql in ("INSERT INTO t VALUES (2)", "UPDATE t SET v = 5", "DELETE FROM t",
                "CREATE TABLE u(x)", "DROP TABLE t"):
        with pytest.raises(ReadOnly):
            env.execute(["SELECT 1", sql], read_only=True)
    assert env.last_lsn == 1 and env.checksum().total == before


class Refused(Exception):
    pass


def test_before_commit_that_refuses_rolls_back_everything(make_env):
    """The primary's last lease check: after the statements, before COMMIT."""
    env = make_env()
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY)"])
    seen = []

    def refuse() -> None:
        seen.append("checked")
        raise Refused("lease expired")

    with pytest.raises(Refused):
        env.execute_group([[("INSERT INTO t VALUES (?)", [1])],
                           [("INSERT INTO t VALUES (?)", [2])]], before_commit=refuse)
    with pytest.raises(Refused):
        env.execute([("INSERT INTO t VALUES (?)", [3])], before_commit=refuse)
    assert seen == ["checked", "checked"]
    assert env.last_lsn == 1 and len(env.read_journal(0)) == 1
    assert env.execute(["SELECT count(*) FROM t"]).results[0].rows == [[0]]
    ok = env.execute_group([[("INSERT INTO t VALUES (?)", [4])]], before_commit=lambda: None)
    assert ok[0].lsn == 2
