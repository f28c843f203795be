"""Examples the replication fuzzer (test_replication_fuzz.py) found, shrunk to plain SQL.

Each runs the statements on a primary, ships the journal to a replica and checks what the
fuzzer checks: the write is refused and changes nothing, or it commits with one journal entry,
the replica ends equal, and the inverted changesets rewind exactly.
"""

from __future__ import annotations

import pytest

from tandemdb.engine import EngineError, Limits

from .conftest import replicate


def _exact(make_env, setup: list, write: list) -> bool:
    """Run `setup`, then `write` (one transaction). True if the write committed (and then
    replicated and rewound exactly), False if the engine refused it and nothing changed."""
    primary, replica = make_env("primary"), make_env("replica")
    for tx in setup:
        primary.execute(tx)
    replicate(primary, replica)
    before, lsn = primary.checksum(), primary.last_lsn
    try:
        primary.execute(write)
    except EngineError:
        assert primary.last_lsn == lsn and primary.checksum() == before
        return False
    assert primary.last_lsn == lsn + 1, "the write changed rows but made no journal entry"
    replicate(primary, replica)
    assert replica.checksum() == primary.checksum()
    if not any(e.ddl for e in primary.read_journal(lsn)):
        replica.rewind(lsn)
        assert replica.checksum() == before
    return True


def test_same_file_put_again_replicates_its_new_modified_at(make_env):
    """Putting a file with unchanged content moves the lsn without changing the checksum
    (which covers path, hash and size only): the entry carries the new modified_at."""
    primary, replica = make_env("primary"), make_env("replica")
    primary.put_file("a", b"")
    primary.put_file("a", b"")
    assert primary.last_lsn == 2
    replicate(primary, replica)
    assert replica.stat_file("a") == primary.stat_file("a")


@pytest.mark.parametrize("table", [
    "CREATE TABLE t(k INT PRIMARY KEY, v) WITHOUT ROWID",
    "CREATE TABLE t(k INT NOT NULL PRIMARY KEY, v)",
    "CREATE TABLE t(k NUMERIC NOT NULL PRIMARY KEY, v)",
    "CREATE TABLE t(k BIGINT, j TEXT, v, PRIMARY KEY(j, k)) WITHOUT ROWID",
])
@pytest.mark.parametrize("write", ["UPDATE t SET k = k * 1.0",
                                   "INSERT INTO t(k, v) VALUES (-9223372036854775808.0, 2)"])
def test_int64_min_key_changed_to_its_real_twin(make_env, table, write):
    """An INTEGER-affinity column cannot convert the REAL -2.0**63 to an integer, so the
    UPDATE stores the key as REAL: equal to the old key, other bytes. Refused."""
    setup = [[table], ["INSERT INTO t(k, v) VALUES (-9223372036854775808, 1)"]]
    if "j TEXT" in table:
        setup[1] = ["INSERT INTO t(j, k, v) VALUES ('x', -9223372036854775808, 1)"]
        write = write.replace("t(k, v)", "t(j, k, v)").replace("(-9", "('y', -9")
    assert _exact(make_env, setup, [write]) is False


@pytest.mark.parametrize("stop", ["invalid_text", "result_limit"])
def test_a_write_stopped_while_returning_rows_leaves_nothing_open(make_env, stop):
    """The statement runner left a write open when it stopped reading its RETURNING rows:
    the environment's next checksum, acknowledge, put_file or rewind failed with 'SQL
    statements in progress' until the next tenant statement."""
    env = make_env()
    env.execute(["CREATE TABLE t(k INTEGER PRIMARY KEY, v)",
                 "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')"])
    limits = Limits(max_result_rows=1) if stop == "result_limit" else None
    if stop == "invalid_text":
        env.execute(["UPDATE t SET v = CAST(x'ff' AS TEXT) WHERE k = 2"])
    before, lsn = env.checksum(), env.last_lsn
    with pytest.raises(EngineError):
        env.execute(["DELETE FROM t RETURNING v"], limits=limits)
    assert env.checksum() == before and env.last_lsn == lsn
    env.acknowledge("secondary", lsn)
    env.put_file("f", b"x")
    assert env.last_lsn == lsn + 1
