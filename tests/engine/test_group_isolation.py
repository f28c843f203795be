"""A transaction that fails in a group commit fails alone, whatever the failure.

A write stopped by the time limit (SQLITE_INTERRUPT) makes SQLite roll back the whole
transaction, and with it the savepoints of the group's other transactions: execute_group
raised `SQLError: no such savepoint` and every client of the group got an error.
"""

from __future__ import annotations

from tandemdb.engine import EntryTooLarge, Environment, LimitExceeded, Limits, TxResult

from .conftest import replicate

ENDLESS = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
           "INSERT INTO t SELECT 'endless' FROM n")


def test_a_timed_out_write_fails_alone_in_its_group(make_env):
    env: Environment = make_env("p")
    env.limits = Limits(statement_seconds=0.2, max_entry_bytes=1 << 20)
    env.execute(["CREATE TABLE t(v)"])
    outcomes = env.execute_group([
        ["INSERT INTO t VALUES ('a')"],
        [ENDLESS],
        ["INSERT INTO t VALUES ('b')", "SELECT count(*) FROM t"],
        ["INSERT INTO t VALUES (randomblob(2000000))"],
        [ENDLESS],
        ["INSERT INTO t VALUES ('c')"],
    ])
    kinds = [type(o) for o in outcomes]
    assert kinds == [TxResult, LimitExceeded, TxResult, EntryTooLarge, LimitExceeded,
                     TxResult], outcomes
    assert "ran longer than" in outcomes[1].message
    assert [o.lsn for o in outcomes if isinstance(o, TxResult)] == [2, 3, 4]
    assert outcomes[2].results[1].rows == [[2]]  # it saw only what committed before it
    rows = env.execute(["SELECT v FROM t ORDER BY rowid"]).results[0].rows
    assert rows == [["a"], ["b"], ["c"]]  # each once
    replica = make_env("r")
    replicate(env, replica)
    assert replica.checksum() == env.checksum()
