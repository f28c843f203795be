"""Issue 9, item 5: a transaction's journal entry is bounded, and refused before it commits.

The bound is `Limits.max_entry_bytes` (changes as the session extension counts them, plus DDL
text). It is also the largest value a tenant statement may make, so a huge `randomblob()`
fails at once instead of after seconds of work. A small limit keeps these tests fast.
"""

from __future__ import annotations

import pytest

from tandemdb.engine import EntryTooLarge, Environment, LimitExceeded, Limits, TxResult

from .conftest import replicate

SMALL = Limits(max_entry_bytes=1 << 20)
KIB_300 = "randomblob(300000)"


@pytest.fixture
def env(make_env) -> Environment:
    e = make_env("sized")
    e.limits = SMALL
    e.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, b)"])
    return e


def refused(env: Environment, statements: list) -> EntryTooLarge:
    lsn, total = env.last_lsn, env.checksum().total
    with pytest.raises(EntryTooLarge) as caught:
        env.execute(statements)
    assert caught.value.status == 413 and caught.value.code == "entry_too_large"
    assert env.last_lsn == lsn and env.checksum().total == total
    assert env.read_journal(lsn) == []
    return caught.value


def test_a_value_over_the_limit_is_refused_when_made(env):
    err = refused(env, ["INSERT INTO t(b) VALUES (randomblob(2000000))"])
    assert "1.0 MiB" in err.message
    # The default limit refuses the 200 MB row as soon as it is made.
    with pytest.raises(EntryTooLarge, match=r"64\.0 MiB"):
        env.execute(["INSERT INTO t(b) VALUES (randomblob(200000000))"], limits=Limits())
    # A read that makes such a value is over a limit too, but it is no entry.
    with pytest.raises(LimitExceeded) as caught:
        env.execute(["SELECT length(randomblob(2000000))"])
    assert type(caught.value) is LimitExceeded


def test_many_statements_adding_up_over_the_limit_are_refused(env):
    err = refused(env, [f"INSERT INTO t(b) VALUES ({KIB_300})" for _ in range(4)])
    assert "split it into smaller transactions" in err.message
    refused(env, [f"INSERT INTO t(b) SELECT {KIB_300} FROM (SELECT 1 UNION SELECT 2 UNION "
                  "SELECT 3 UNION SELECT 4)"])


def test_deleting_more_than_the_limit_at_once_is_refused(env):
    """A DELETE's entry holds every old row: the issue's `DELETE` of two 200 MB rows."""
    for _ in range(4):
        env.execute([f"INSERT INTO t(b) VALUES ({KIB_300})"])
    refused(env, ["DELETE FROM t"])
    refused(env, [f"UPDATE t SET b = {KIB_300}"])
    env.execute(["DELETE FROM t WHERE id <= 2"])  # in parts it works
    env.execute(["DELETE FROM t"])
    assert env.execute(["SELECT count(*) FROM t"]).results[0].rows == [[0]]


def test_ddl_text_counts_too(env):
    columns = ", ".join(f"c{i} DEFAULT '{'x' * 1000}'" for i in range(300))
    refused(env, [f"CREATE TABLE wide({columns})", f"CREATE TABLE wide2({columns})",
                  f"CREATE TABLE wide3({columns})", f"CREATE TABLE wide4({columns})"])


def test_group_commit_reports_it_in_the_transactions_own_slot(env, make_env):
    outcomes = env.execute_group([
        ["INSERT INTO t(b) VALUES ('before')"],
        [f"INSERT INTO t(b) VALUES ({KIB_300})" for _ in range(4)],
        ["INSERT INTO t(b) VALUES (randomblob(2000000))"],
        ["INSERT INTO t(b) VALUES ('after')"],
    ])
    assert isinstance(outcomes[1], EntryTooLarge) and isinstance(outcomes[2], EntryTooLarge)
    assert isinstance(outcomes[0], TxResult) and isinstance(outcomes[3], TxResult)
    assert env.execute(["SELECT b FROM t"]).results[0].rows == [["before"], ["after"]]
    replica = make_env("replica")
    replicate(env, replica)
    assert replica.checksum() == env.checksum()


def test_under_the_limit_replicates_and_limits_have_bounds(env, make_env):
    env.execute([f"INSERT INTO t(b) VALUES ({KIB_300})" for _ in range(3)])
    replica = make_env("replica")
    replicate(env, replica)
    assert replica.checksum() == env.checksum()
    for bad in (0, 1 << 19, (128 << 20) + 1, 1 << 40):
        with pytest.raises(ValueError, match="max_entry_bytes must be from"):
            Limits(max_entry_bytes=bad)
    assert Limits().max_entry_bytes == 64 << 20
