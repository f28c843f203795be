"""The tenant SQL sandbox: an authorizer, a time limit and a result-size limit.

Tenant SQL is untrusted. Every tenant statement is prepared fresh (never taken from the
statement cache), so the authorizer sees it whole. Engine-internal statements run with the
sandbox in trusted mode. The authorizer also classifies each statement (DDL or DML) so the
recorder knows where to cut the journal entry into segments.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import apsw

from .schema import MAX_VALUE_BYTES, is_reserved

A = apsw  # action codes live on the module

DDL_ACTIONS = frozenset({
    A.SQLITE_CREATE_INDEX, A.SQLITE_CREATE_TABLE, A.SQLITE_CREATE_TRIGGER,
    A.SQLITE_CREATE_VIEW, A.SQLITE_DROP_INDEX, A.SQLITE_DROP_TABLE, A.SQLITE_DROP_TRIGGER,
    A.SQLITE_DROP_VIEW, A.SQLITE_ALTER_TABLE,
})
WRITE_ACTIONS = frozenset({A.SQLITE_INSERT, A.SQLITE_UPDATE, A.SQLITE_DELETE})
TEMP_ACTIONS = frozenset({
    A.SQLITE_CREATE_TEMP_INDEX, A.SQLITE_CREATE_TEMP_TABLE, A.SQLITE_CREATE_TEMP_TRIGGER,
    A.SQLITE_CREATE_TEMP_VIEW, A.SQLITE_DROP_TEMP_INDEX, A.SQLITE_DROP_TEMP_TABLE,
    A.SQLITE_DROP_TEMP_TRIGGER, A.SQLITE_DROP_TEMP_VIEW,
})
# Read-only PRAGMAs a tenant may run. Those in PRAGMAS_WITH_ARGUMENT take a table or index
# name; the rest are allowed only without an argument (reading, never setting).
PRAGMAS_WITH_ARGUMENT = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
})
READ_ONLY_PRAGMAS = PRAGMAS_WITH_ARGUMENT | frozenset({
    "user_version", "schema_version", "data_version", "page_count", "page_size",
    "freelist_count", "encoding", "collation_list", "pragma_list", "function_list",
    "module_list", "compile_options", "application_id",
})


# Bounds of Limits.max_entry_bytes. The top stays well under the length limit every replica
# opens with (MAX_VALUE_BYTES), so any replica can store and apply any primary's entry,
# whatever its own limits.
MIN_ENTRY_BYTES = 1 << 20
MAX_ENTRY_BYTES = 128 << 20


@dataclass(frozen=True)
class Limits:
    """Limits for tenant SQL: per statement, and per transaction (its journal entry).

    `max_entry_bytes` bounds what one transaction may write: its changes as the session
    extension counts them, plus its DDL text. It is also the largest single value a tenant
    statement may make, so an oversized `randomblob()` fails at once (SQLITE_TOOBIG)."""

    statement_seconds: float = 5.0
    max_result_rows: int = 100_000
    max_result_bytes: int = 32 << 20
    max_entry_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if not MIN_ENTRY_BYTES <= self.max_entry_bytes <= MAX_ENTRY_BYTES:
            raise ValueError(f"max_entry_bytes must be from {MIN_ENTRY_BYTES} to "
                             f"{MAX_ENTRY_BYTES}, not {self.max_entry_bytes}")


class StatementFlags:
    """What the authorizer saw while the current tenant statement was prepared."""

    __slots__ = (
        "alter", "altered", "created", "creates_table", "ddl", "denied", "dml", "drops_table",
        "inserts", "read_only", "wrote",
    )

    def __init__(self) -> None:
        self.ddl = False
        self.alter = False  # an ALTER TABLE on main: SQLite rewrites sqlite_temp_master too
        self.altered: str | None = None  # the table it alters (its name before a RENAME)
        self.dml = False
        self.inserts = False
        self.creates_table = False
        self.created: str | None = None  # the table a CREATE TABLE makes
        self.drops_table = False  # a DROP TABLE drops Tandem's TEMP guard triggers with it
        self.denied: str | None = None
        self.read_only = False
        self.wrote = False  # a write was attempted under read_only


class Sandbox:
    """Authorizer and progress handler for one environment connection."""

    def __init__(self, conn: apsw.Connection) -> None:
        self.trusted = True
        self.flags = StatementFlags()
        self._deadline: float | None = None
        self._conn = conn
        conn.authorizer = self._authorize
        conn.set_progress_handler(self._progress, 2000)

    def begin_statement(self, limits: Limits, read_only: bool = False) -> StatementFlags:
        """Start sandboxing one tenant statement (`read_only` on replicas that serve reads)."""
        self.trusted = False
        self.flags = StatementFlags()
        self.flags.read_only = read_only
        self._deadline = time.monotonic() + limits.statement_seconds
        # No value a transaction could not commit: refused when made, not after the work.
        self._conn.limit(apsw.SQLITE_LIMIT_LENGTH, min(limits.max_entry_bytes, MAX_VALUE_BYTES))
        return self.flags

    def end_statement(self) -> None:
        self.trusted = True
        self._deadline = None
        self._conn.limit(apsw.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)  # replicas apply any entry

    @contextmanager
    def internal(self) -> Iterator[None]:
        """Engine work done in the middle of a tenant statement (the session's own SQL)."""
        was, self.trusted = self.trusted, True
        try:
            yield
        finally:
            self.trusted = was

    def _progress(self) -> bool:
        # Returning True interrupts the running statement (SQLITE_INTERRUPT).
        return self._deadline is not None and time.monotonic() > self._deadline

    def _deny(self, reason: str) -> int:
        if self.flags.denied is None:
            self.flags.denied = reason
        return apsw.SQLITE_DENY

    def _authorize(self, action: int, arg1: str | None, arg2: str | None,
                   db: str | None, trigger: str | None) -> int:
        if self.trusted:
            return apsw.SQLITE_OK
        flags = self.flags
        if trigger is not None and is_reserved(trigger):
            return apsw.SQLITE_OK  # Tandem's own guard triggers (exactness.py) at work
        if action == A.SQLITE_DROP_TABLE:
            flags.drops_table = True
        elif flags.drops_table and trigger is None and db == "temp" and (
                (action == A.SQLITE_DROP_TEMP_TRIGGER and arg1 and is_reserved(arg1))
                or (action == A.SQLITE_DELETE and arg1 == "sqlite_temp_master")):
            return apsw.SQLITE_OK  # SQLite drops the table's guard triggers along with it
        if action == A.SQLITE_ALTER_TABLE and arg1 == "main":
            flags.alter, flags.altered = True, arg2
        elif (flags.alter and action == A.SQLITE_UPDATE and arg1 == "sqlite_temp_master"
              and trigger is None):
            # ALTER … RENAME and DROP COLUMN rewrite references in both schemas. Tenants
            # cannot create temp objects: what the temp schema holds is Tandem's own, and
            # must follow a renamed table or column.
            return apsw.SQLITE_OK
        if (db == "temp" or (arg1 == "temp" and action == A.SQLITE_ALTER_TABLE)) and (
                action in WRITE_ACTIONS or action in DDL_ACTIONS):
            # Temp objects live per connection, are never replicated, and a temp table named
            # like a system table would shadow it for Tandem's own statements.
            return self._deny("the temp schema is not allowed: create objects in main")
        if flags.read_only and (action in WRITE_ACTIONS or action in DDL_ACTIONS):
            flags.wrote = True
            return self._deny("this replica is read-only")
        if action in WRITE_ACTIONS:
            if arg1 and is_reserved(arg1):
                return self._deny(f"writing to Tandem's system table {arg1} is not allowed")
            if arg1 == "sqlite_sequence":
                return self._deny("writing to sqlite_sequence is not allowed")
            if trigger is None and arg1 not in ("sqlite_master", "sqlite_temp_master"):
                flags.dml = True
                flags.inserts = flags.inserts or action == A.SQLITE_INSERT
            return apsw.SQLITE_OK
        if action in DDL_ACTIONS:
            for name in (arg1, arg2):
                if name and is_reserved(name):
                    return self._deny(f"schema changes on Tandem's system object {name} "
                                      "are not allowed")
            flags.ddl = True
            if action == A.SQLITE_CREATE_TABLE and flags.created is None:
                # The first one: AUTOINCREMENT also creates sqlite_sequence, which must not
                # hide the tenant's table from the checks after the statement (a fuzzer find).
                flags.creates_table, flags.created = True, arg1
            return apsw.SQLITE_OK
        if action == A.SQLITE_SELECT and flags.creates_table:
            # Replicas replay DDL text; a CREATE TABLE … AS SELECT would insert rows twice.
            return self._deny("CREATE TABLE … AS SELECT is not supported: create the table, "
                              "then INSERT … SELECT")
        if action == A.SQLITE_PRAGMA:
            return self._authorize_pragma((arg1 or "").lower(), arg2)
        if action == A.SQLITE_FUNCTION:
            if arg2 and arg2.lower() == "load_extension":
                return self._deny("loading extensions is not allowed")
            return apsw.SQLITE_OK
        if action in (A.SQLITE_ATTACH, A.SQLITE_DETACH):
            return self._deny("ATTACH, DETACH and VACUUM INTO are not allowed")
        if action in (A.SQLITE_TRANSACTION, A.SQLITE_SAVEPOINT):
            return self._deny("transaction control is not allowed: each request already "
                              "runs as one transaction")
        if action in TEMP_ACTIONS:
            return self._deny("temporary tables, views, indexes and triggers are not allowed")
        if action in (A.SQLITE_CREATE_VTABLE, A.SQLITE_DROP_VTABLE):
            return self._deny("virtual tables are not allowed: they cannot be replicated")
        if action == A.SQLITE_ANALYZE:
            return self._deny("ANALYZE is not allowed")
        return apsw.SQLITE_OK

    def _authorize_pragma(self, name: str, argument: str | None) -> int:
        if name not in READ_ONLY_PRAGMAS:
            return self._deny(f"PRAGMA {name} is not allowed")
        if argument is not None and name not in PRAGMAS_WITH_ARGUMENT:
            return self._deny(f"PRAGMA {name} may be read but not set")
        return apsw.SQLITE_OK
