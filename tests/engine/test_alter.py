"""Issue 9, item 8: ALTER TABLE … RENAME TO, RENAME COLUMN and DROP COLUMN are supported.

They were refused with a wrong reason ("the temp schema is not allowed"), because SQLite's
ALTER also rewrites sqlite_temp_master. The journal carries them as DDL text in order.
"""

from __future__ import annotations

import pytest

from tandemdb.engine import Environment, RewindImpossible, SandboxViolation

from .conftest import replicate

SCHEMA = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, b TEXT, c)",
    "CREATE TABLE child(id INTEGER PRIMARY KEY, t_id REFERENCES t(id) ON DELETE CASCADE)",
    "CREATE INDEX t_b ON t(b)",
    "CREATE VIEW t_view AS SELECT id, b FROM t",
    "CREATE TABLE log(what)",
    "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.b); END",
]


def test_renames_and_drop_column_replicate_exactly(make_env):
    primary, replica = make_env("p"), make_env("r")
    primary.execute([*SCHEMA, "INSERT INTO t VALUES (1, 'one', 'x')",
                     "INSERT INTO child VALUES (10, 1)"])
    replicate(primary, replica)
    # Rows before and after each ALTER in one transaction land as they did on the primary.
    primary.execute(["INSERT INTO t VALUES (2, 'two', 'y')",
                     "ALTER TABLE t RENAME COLUMN b TO name",
                     "INSERT INTO t VALUES (3, 'three', 'z')",
                     "ALTER TABLE t RENAME TO items",
                     "UPDATE items SET c = 'changed' WHERE id = 1",
                     "ALTER TABLE items DROP COLUMN c",
                     "INSERT INTO items VALUES (4, 'four')"])
    assert replicate(primary, replica) == primary.last_lsn
    assert replica.checksum() == primary.checksum()
    # Views, triggers, indexes and foreign keys follow the new names on both replicas.
    for env in (primary, replica):
        sql = dict(env.execute(["SELECT name, sql FROM sqlite_schema"]).results[0].rows)
        assert '"items"(name)' in sql["t_b"] and "name FROM \"items\"" in sql["t_view"]
        assert "new.name" in sql["t_log"] and 'REFERENCES "items"(id)' in sql["child"]
        rows = env.execute(["SELECT * FROM t_view ORDER BY id", "SELECT what FROM log"])
        assert rows.results[0].rows == [[1, "one"], [2, "two"], [3, "three"], [4, "four"]]
        assert rows.results[1].rows == [["one"], ["two"], ["three"], ["four"]]
    replica.begin_epoch(2)  # the promoted replica keeps working with the new schema
    replica.execute(["INSERT INTO items VALUES (5, 'five')", "DELETE FROM items WHERE id = 1"])
    assert replica.execute(["SELECT count(*) FROM items"]).results[0].rows == [[4]]


@pytest.mark.parametrize("statement, reason", [
    ("ALTER TABLE t RENAME TO _tandem_mine", "reserved for Tandem"),
    ("ALTER TABLE t RENAME TO _TANDEM_files2", "reserved for Tandem"),
    ("ALTER TABLE _tandem_files RENAME TO files", "system object _tandem_files"),
    ("ALTER TABLE _tandem_files RENAME COLUMN path TO p", "system object _tandem_files"),
    ("ALTER TABLE _tandem_files DROP COLUMN modified_at", "system object _tandem_files"),
    ("ALTER TABLE _tandem_journal RENAME TO j", "system object _tandem_journal"),
    ("CREATE TEMP TABLE x(a)", "temp schema"),
    ("CREATE TEMP VIEW v AS SELECT 1", "temp"),
])
def test_reserved_names_and_the_temp_schema_stay_refused(make_env, statement, reason):
    env: Environment = make_env()
    env.execute(SCHEMA)
    lsn, total = env.last_lsn, env.checksum().total
    with pytest.raises(SandboxViolation, match=reason):
        env.execute([statement])
    assert env.last_lsn == lsn and env.checksum().total == total


def test_a_rewind_past_an_alter_is_refused(make_env):
    env = make_env()
    env.execute(SCHEMA)
    fork = env.last_lsn
    env.execute(["INSERT INTO t VALUES (1, 'a', 'b')"])
    env.execute(["ALTER TABLE t RENAME COLUMN c TO d"])
    with pytest.raises(RewindImpossible, match="schema changes"):
        env.rewind(fork)
    env.execute(["INSERT INTO t VALUES (2, 'a', 'b')"])
    assert len(env.rewind(env.last_lsn - 1)) == 1  # entries after it still rewind
