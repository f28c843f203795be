"""Attacks on the tenant SQL sandbox (docs/design.md, "Untrusted SQL" and invariant 8).

Every attack must fail with the right error class and change nothing: same last lsn, same
logical checksum, same system tables and schema, no journal entry. Afterwards the
environment must still take an ordinary write as exactly one journal entry.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandemdb.engine import (
    EngineError,
    Environment,
    LimitExceeded,
    Limits,
    SandboxViolation,
    SqlError,
)

SYSTEM_TABLES = ("_tandem_journal", "_tandem_meta", "_tandem_files", "_tandem_epochs",
                 "_tandem_consumers")
# The temp schema is searched before main: this table would swallow every journal entry.
SHADOW_JOURNAL = ("CREATE TABLE temp._TANDEM_JOURNAL(lsn INTEGER PRIMARY KEY, epoch, "
                  "committed_at, body, blobs)")
COUNT_TO_10_12 = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                  "WHERE x < 1000000000000) ")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Environment]:
    """An environment whose system tables all hold rows, so UPDATE/DELETE have targets."""
    env = Environment(tmp_path / "env")
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                 "INSERT INTO t(v) VALUES ('first')"])
    env.put_file("docs/a.txt", b"hello")
    env.acknowledge("secondary", 1)
    env.begin_epoch(2)  # writes _tandem_meta and a second _tandem_epochs row
    yield env
    env.close()


def system_state(env: Environment) -> dict[str, list]:
    """Tandem's system tables and the whole schema, read over a separate connection
    (the logical checksum deliberately leaves the local bookkeeping out)."""
    uri = f"file:{env.directory / 'db.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        state = {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                 for t in SYSTEM_TABLES}
        state["schema"] = conn.execute(
            "SELECT type, name, sql FROM sqlite_schema ORDER BY type, name").fetchall()
    conn.close()
    return state


def assert_still_works(env: Environment) -> None:
    """A legitimate write right after the attack commits as exactly one journal entry."""
    before = env.last_lsn
    res = env.execute([("INSERT INTO t(v) VALUES (?)", ["after"])])
    assert res.lsn == env.last_lsn == before + 1
    assert [e.lsn for e in env.read_journal(before)] == [before + 1]


def assert_refused(env: Environment, statements: list, error: type[EngineError], *,
                   limits: Limits | None = None) -> EngineError:
    """Run an attack: it must raise `error` and leave every trace of state as it was."""
    lsn, total, state = env.last_lsn, env.checksum().total, system_state(env)
    with pytest.raises(error) as caught:
        env.execute(statements, limits=limits)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    assert env.last_lsn == lsn
    assert env.checksum().total == total
    assert env.read_journal(lsn) == []
    assert system_state(env) == state
    assert_still_works(env)
    return caught.value


def rows(env: Environment, sql: str) -> list[list]:
    return env.execute([sql]).results[0].rows


def test_attach_of_another_environment_is_denied(env: Environment, tmp_path: Path) -> None:
    """ATTACH would let a tenant read or write another tenant's database file."""
    other = Environment(tmp_path / "other")
    other.execute(["CREATE TABLE secret(x)", "INSERT INTO secret VALUES ('theirs')"])
    other_total = other.checksum().total
    path = other.directory / "db.sqlite"
    assert_refused(env, [f"ATTACH DATABASE '{path}' AS o"], SandboxViolation)
    assert_refused(env, [f"ATTACH '{path}' AS o", "INSERT INTO o.secret VALUES ('x')"],
                   SandboxViolation)
    with pytest.raises(SqlError):
        env.execute(["SELECT * FROM o.secret"])
    assert other.checksum().total == other_total
    other.close()


@pytest.mark.parametrize("sql", ["DETACH o", "DETACH DATABASE main", "DETACH temp"])
def test_detach_is_denied(env: Environment, sql: str) -> None:
    assert_refused(env, [sql], SandboxViolation)


@pytest.mark.parametrize("sql", ["SELECT load_extension('x')",
                                 "SELECT load_extension('/tmp/evil.so', 'sqlite3_init')"])
def test_load_extension_is_denied(env: Environment, sql: str) -> None:
    """Loading a shared library would run arbitrary native code in the node."""
    assert_refused(env, [sql], SandboxViolation)


@pytest.mark.parametrize("sql", [
    "PRAGMA writable_schema=1", "PRAGMA journal_mode=DELETE", "PRAGMA foreign_keys=ON",
    "PRAGMA user_version=5", "PRAGMA main.user_version=5", "PRAGMA trusted_schema=1",
    "PRAGMA synchronous=OFF", "SELECT * FROM pragma_journal_mode",
])
def test_dangerous_pragmas_are_denied(env: Environment, sql: str) -> None:
    """PRAGMAs that change durability, schema safety or replicated state are refused."""
    assert_refused(env, [sql], SandboxViolation)


@pytest.mark.parametrize(("sql", "expected"), [
    ("PRAGMA user_version", [[0]]),
    ("PRAGMA table_info(t)", [[0, "id", "INTEGER", 0, None, 1], [1, "v", "TEXT", 0, None, 0]]),
    ("SELECT * FROM pragma_table_info('t')",
     [[0, "id", "INTEGER", 0, None, 1], [1, "v", "TEXT", 0, None, 0]]),
])
def test_read_only_pragmas_are_allowed(env: Environment, sql: str, expected: list) -> None:
    """Reading PRAGMAs is harmless and useful; they return rows and make no entry."""
    lsn = env.last_lsn
    assert rows(env, sql) == expected
    assert env.last_lsn == lsn and env.read_journal(lsn) == []


def test_vacuum_into_writes_no_file(env: Environment, tmp_path: Path) -> None:
    """VACUUM INTO would copy the whole database (system tables included) to any path."""
    target = tmp_path / "stolen.db"
    # SQLite has no authorizer action for VACUUM; the request's own transaction stops it.
    assert_refused(env, [f"VACUUM INTO '{target}'"], SqlError)
    assert not target.exists()


WRITE_ATTACKS = [
    "INSERT INTO _tandem_journal VALUES (99, 2, 0, x'90', NULL)",
    "UPDATE _tandem_journal SET epoch = 99", "INSERT INTO _tandem_meta VALUES ('epoch', 99)",
    "UPDATE _tandem_meta SET value = 99", "INSERT INTO _tandem_files VALUES ('e', 'ab', 1, 0)",
    "UPDATE _tandem_files SET size = 0", "INSERT INTO _tandem_epochs VALUES (99, 0)",
    "UPDATE _tandem_epochs SET start_lsn = 99", "INSERT INTO _tandem_consumers VALUES ('e', 9)",
    "UPDATE _tandem_consumers SET acked_lsn = 0", "REPLACE INTO _tandem_epochs VALUES (1, 50)",
    *(f"DELETE FROM {table}" for table in SYSTEM_TABLES),
    "INSERT INTO _tandem_files VALUES ('docs/a.txt', 'ab', 1, 0) "
    "ON CONFLICT(path) DO UPDATE SET hash = excluded.hash",
    "INSERT INTO _TANDEM_META VALUES ('epoch', 99)", "DELETE FROM main.\"_tandem_journal\"",
]


@pytest.mark.parametrize("sql", WRITE_ATTACKS)
def test_writes_to_system_tables_are_denied(env: Environment, sql: str) -> None:
    """The journal, epochs, consumers and file rows are Tandem's; a tenant never writes them."""
    assert_refused(env, [sql], SandboxViolation)


DDL_ATTACKS = [
    "DROP TABLE _tandem_journal", "DROP TABLE _TANDEM_JOURNAL",
    "CREATE INDEX evil ON _tandem_files(hash)",
    "CREATE TRIGGER evil AFTER INSERT ON _tandem_files BEGIN SELECT 1; END",
    "ALTER TABLE _tandem_files ADD COLUMN x", "ALTER TABLE _tandem_files RENAME TO f2",
    "ALTER TABLE _tandem_files RENAME COLUMN hash TO h", "CREATE TABLE _tandem_mine(a)",
    # Tandem's namespace is case-insensitive (SQLite names are, and so is the checksum's
    # filter): these would hide a tenant table from the logical checksum.
    "CREATE TABLE _TANDEM_mine(a)",
    "ALTER TABLE t RENAME TO _tandem_t",
]


@pytest.mark.parametrize("sql", DDL_ATTACKS)
def test_schema_changes_on_system_objects_are_denied(env: Environment, sql: str) -> None:
    assert_refused(env, [sql], SandboxViolation)


@pytest.mark.parametrize("body", ["INSERT INTO _tandem_meta VALUES ('owned', 1)",
                                  "DELETE FROM _tandem_journal",
                                  "UPDATE _tandem_files SET size = 0"])
def test_trigger_writing_a_system_table_cannot_fire(env: Environment, body: str) -> None:
    """A trigger body runs with the tenant's rights: the write that would fire it is denied."""
    env.execute(["CREATE TABLE u(a)"])
    with contextlib.suppress(SandboxViolation):  # refusing the trigger outright is fine too
        env.execute([f"CREATE TRIGGER evil AFTER INSERT ON u BEGIN {body}; END"])
    assert_refused(env, ["INSERT INTO u VALUES (1)"], SandboxViolation)
    assert rows(env, "SELECT count(*) FROM u") == [[0]]
    assert rows(env, "SELECT count(*) FROM _tandem_meta WHERE key = 'owned'") == [[0]]


@pytest.mark.parametrize("control", ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK",
                                     "SAVEPOINT x", "RELEASE x", "ROLLBACK TO x"])
def test_transaction_control_is_denied(env: Environment, control: str) -> None:
    """A COMMIT or ROLLBACK mid-request would cut the request's one transaction in two."""
    assert_refused(env, [("INSERT INTO t(v) VALUES (?)", ["tx"]), control,
                         ("INSERT INTO t(v) VALUES (?)", ["tx2"])], SandboxViolation)
    assert rows(env, "SELECT count(*) FROM t WHERE v LIKE 'tx%'") == [[0]]


@pytest.mark.parametrize("sql", [
    "CREATE TEMP TABLE tt(a)", "CREATE TEMPORARY VIEW tv AS SELECT 1",
    "CREATE TABLE temp.tt(a)", "CREATE VIEW temp.tv AS SELECT 1",
    "CREATE TRIGGER temp.tr AFTER INSERT ON t BEGIN SELECT 1; END",
    SHADOW_JOURNAL,
    "CREATE VIRTUAL TABLE ft USING fts5(body)", "CREATE VIRTUAL TABLE rt USING rtree(id, x0, x1)",
    "CREATE TABLE c AS SELECT * FROM t", "CREATE TABLE c AS SELECT 1 AS x",
])
def test_unreplicable_objects_are_denied(env: Environment, sql: str) -> None:
    """Temp objects, virtual tables and CREATE … AS SELECT cannot be replicated as recorded."""
    assert_refused(env, [sql], SandboxViolation)


def test_temp_table_cannot_swallow_acknowledged_writes(tmp_path: Path) -> None:
    """Invariant 1: a write acknowledged with an lsn is in the journal after a restart,
    whatever temp object a tenant tried to create first."""
    env = Environment(tmp_path / "env")
    env.execute(["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"])
    for attack in [SHADOW_JOURNAL, "CREATE TABLE temp.t(id INTEGER PRIMARY KEY, v)"]:
        with contextlib.suppress(EngineError):
            env.execute([attack])
    acked = env.execute([("INSERT INTO t(v) VALUES (?)", ["acked"])]).lsn
    env.close()
    env = Environment(tmp_path / "env")
    assert env.last_lsn >= acked
    assert [e.lsn for e in env.read_journal(0)] == list(range(1, env.last_lsn + 1))
    assert rows(env, "SELECT v FROM t") == [["acked"]]
    env.close()


@pytest.mark.parametrize("sql", ["INSERT INTO t(v) VALUES ('a'); INSERT INTO t(v) VALUES ('b')",
                                 "SELECT 1; DELETE FROM t"])
def test_two_statements_in_one_item_are_refused(env: Environment, sql: str) -> None:
    """Hidden extra statements would escape per-statement checks and results."""
    assert_refused(env, [sql], SqlError)


def test_runaway_query_is_stopped(env: Environment) -> None:
    started = time.monotonic()
    assert_refused(env, [COUNT_TO_10_12 + "SELECT count(*) FROM c"], LimitExceeded,
                   limits=Limits(statement_seconds=0.2))
    assert time.monotonic() - started < 3


def test_runaway_write_is_stopped_and_rolled_back(env: Environment) -> None:
    """Rows a stopped statement inserted before the deadline must not survive."""
    assert_refused(env, [COUNT_TO_10_12 + "INSERT INTO t(v) SELECT 'flood' FROM c"],
                   LimitExceeded, limits=Limits(statement_seconds=0.2))
    assert rows(env, "SELECT count(*) FROM t WHERE v = 'flood'") == [[0]]


def test_result_size_limits(env: Environment) -> None:
    count_to = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {})"
    ten = Limits(max_result_rows=10)
    assert len(env.execute([count_to.format(10) + " SELECT x FROM c"], limits=ten)
               .results[0].rows) == 10
    assert_refused(env, [count_to.format(11) + " SELECT x FROM c"], LimitExceeded, limits=ten)
    assert_refused(env, ["SELECT zeroblob(5000)"], LimitExceeded,
                   limits=Limits(max_result_bytes=1000))


@pytest.mark.parametrize(("sql", "text"), [
    ("SELEC 1", 'near "SELEC": syntax error'), ("DELETE t", "syntax error"),
    ("INSERT INTO t VALUES (1,)", "syntax error"), ("CREATE TABLE (a)", "syntax error"),
    ("SELECT * FROM t WHERE", "incomplete input"),
])
def test_malformed_sql_reports_sqlites_message(env: Environment, sql: str, text: str) -> None:
    """The tenant sees SQLite's own diagnosis, as a 400-class SqlError."""
    error = assert_refused(env, [sql], SqlError)
    assert text in error.message


@pytest.mark.parametrize(("failing", "error"), [
    ("INSERT INTO t(id, v) VALUES (1, 'duplicate')", SqlError),
    ("SELECT * FROM no_such_table", SqlError),
    ("DELETE FROM _tandem_journal", SandboxViolation),
    (COUNT_TO_10_12 + "SELECT count(*) FROM c", LimitExceeded),
])
def test_failure_rolls_back_the_whole_transaction(env: Environment, failing: str,
                                                  error: type[EngineError]) -> None:
    """Earlier successful statements of the request (rows and DDL) must not commit."""
    assert_refused(env, ["CREATE TABLE side(a)", "INSERT INTO side VALUES (1)",
                         ("INSERT INTO t(v) VALUES (?)", ["partial"]), failing],
                   error, limits=Limits(statement_seconds=0.2))
    assert rows(env, "SELECT count(*) FROM t WHERE v = 'partial'") == [[0]]
    with pytest.raises(SqlError, match="no such table"):
        env.execute(["SELECT * FROM side"])


def test_huge_single_value_is_refused_fast(env: Environment) -> None:
    """One VM step can allocate a huge value between two progress checks; the length
    limit stops it before it eats memory."""
    err = assert_refused(env, ["SELECT length(randomblob(1000000000))"], LimitExceeded)
    assert "MiB" in str(err)
