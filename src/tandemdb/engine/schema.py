"""Tandem's system tables inside each environment database, and how the database is opened.

`_tandem_files` is replicated with the tenant's tables (files and rows share one recovery
point). The others are local bookkeeping of one replica and are never replicated.
"""

from __future__ import annotations

from pathlib import Path

import apsw

DB_FILE = "db.sqlite"
SYSTEM_PREFIX = "_tandem_"
MAX_VALUE_BYTES = 256 << 20
FILES_TABLE = "_tandem_files"
# Local to one replica: never recorded in changesets, never part of the logical checksum.
LOCAL_TABLES = frozenset({
    "_tandem_journal", "_tandem_meta", "_tandem_epochs", "_tandem_consumers",
})

SYSTEM_DDL = """
CREATE TABLE IF NOT EXISTS _tandem_journal(
    lsn INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL,
    committed_at REAL NOT NULL,
    body BLOB NOT NULL,
    blobs BLOB
);
CREATE TABLE IF NOT EXISTS _tandem_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _tandem_epochs(
    epoch INTEGER PRIMARY KEY,
    start_lsn INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _tandem_consumers(
    name TEXT PRIMARY KEY,
    acked_lsn INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _tandem_files(
    path TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified_at REAL NOT NULL
) WITHOUT ROWID;
"""


def is_reserved(name: str) -> bool:
    """Names starting with `_tandem_` belong to Tandem (SQLite names ignore case)."""
    return name.lower().startswith(SYSTEM_PREFIX)


def reserved_name_clash(conn: apsw.Connection) -> str | None:
    """A schema object that took a reserved name (for example through ALTER … RENAME TO,
    whose new name the authorizer never sees); None when there is none."""
    known = LOCAL_TABLES | {FILES_TABLE}
    for (name,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE lower(name) LIKE '\\_tandem\\_%' ESCAPE '\\'"):
        if name not in known:
            return name
    return None


def open_database(path: Path) -> apsw.Connection:
    """Open an environment database with durable commits.

    WAL with synchronous=FULL fsyncs the WAL on every commit, so an acknowledged commit
    survives kill -9 and power loss without relying on the OS to flush later.
    """
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(5000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA trusted_schema=OFF")
    # Defensive mode forbids writable_schema tricks and other ways to corrupt the file.
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    # Bounds any single value, so `randomblob(1e9)` fails fast instead of eating memory
    # between two progress-handler checks. A transaction whose changeset outgrows it fails
    # as "too big" too: that bounds the size of one journal entry.
    conn.limit(apsw.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.execute(SYSTEM_DDL)
    return conn


def user_tables(conn: apsw.Connection) -> list[str]:
    """Tables the tenant created, sorted (excludes sqlite_ and Tandem's system tables)."""
    return [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' AND name NOT LIKE '\\_tandem\\_%' ESCAPE '\\' ORDER BY name")]


def table_exists(conn: apsw.Connection, name: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).get == 1
