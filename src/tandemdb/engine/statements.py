"""Runs one tenant SQL statement inside the sandbox and records it for the journal.

One cursor is reused for every statement (its exec tracer is installed once); the state of
the statement being run lives on this object. The tracer fires after SQLite prepared the
statement and before it runs, which is the moment to cut the journal at DDL.
"""

from __future__ import annotations

import apsw

from .errors import (
    EntryTooLarge,
    InvalidText,
    LimitExceeded,
    ReadOnly,
    SandboxViolation,
    SqlError,
    Unreplicable,
)
from .exactness import MARK, conflict_clause, table_key
from .recorder import Recorder
from .results import Statement, StatementResult
from .sandbox import Limits, Sandbox, StatementFlags
from .schema import reserved_name_clash

# SQLite and APSW raise these for bad SQL or bad bindings; all become SqlError (HTTP 400).
_BAD_INPUT = (apsw.Error, TypeError, OverflowError, ValueError)


class StatementRunner:
    def __init__(self, conn: apsw.Connection, sandbox: Sandbox) -> None:
        self._conn = conn
        self._sandbox = sandbox
        self._cursor = self._new_cursor()
        self._recorder: Recorder | None = None
        self._flags = StatementFlags()
        self._columns: list[str] = []
        self._started = False

    def _new_cursor(self) -> apsw.Cursor:
        cursor = self._conn.cursor()
        cursor.exec_trace = self._on_statement
        return cursor

    def _check_table(self, table: str | None) -> None:
        """Refuse, when it is made, a table whose rows could never replicate exactly."""
        if table is None:
            return
        key = table_key(self._conn, table)
        if key is not None and key.ambiguous:
            raise Unreplicable(f"table {table!r} cannot be replicated: {key.ambiguous}")
        if conflict_clause(self._conn, table):
            raise Unreplicable(
                f"table {table!r}: a constraint with its own ON CONFLICT REPLACE, IGNORE or "
                "ROLLBACK clause cannot be replicated exactly (a replica applies rows with "
                "plain INSERTs, which would replace, skip or roll back rows on their own); "
                "drop the clause and write INSERT OR REPLACE, INSERT OR IGNORE or an UPSERT "
                "where you need it")

    def _on_statement(self, cursor: apsw.Cursor, sql: str, _bindings: object) -> bool:
        if self._started:
            return False  # a second statement hidden in one item: abort
        self._started = True
        self._columns = [d[0] for d in cursor.get_description()]
        if self._flags.ddl and self._recorder is not None:
            with self._sandbox.internal():
                self._recorder.before_ddl(sql)
        return True

    def run(self, recorder: Recorder, stmt: Statement, limits: Limits,
            read_only: bool = False) -> StatementResult:
        flags = self._flags = self._sandbox.begin_statement(limits, read_only)
        self._recorder = recorder
        self._started = False
        self._columns = []
        rows: list[list] = []
        size = 0
        finished = False
        try:
            for row in self._cursor.execute(stmt.sql, stmt.params, can_cache=False):
                rows.append(list(row))
                size += _row_size(row)
                if len(rows) > limits.max_result_rows or size > limits.max_result_bytes:
                    raise LimitExceeded(
                        f"result is larger than the limit of {limits.max_result_rows} rows "
                        f"or {limits.max_result_bytes} bytes; add a LIMIT or page with WHERE")
            finished = True
        except apsw.ExecTraceAbort:
            raise SqlError("each statement item must hold exactly one SQL statement; "
                           "send the others as separate items") from None
        except apsw.TooBigError:
            # The length limit is the entry limit (sandbox.py): a write that makes such a
            # value could never commit; a read just asked for too much.
            error = EntryTooLarge if flags.dml or flags.ddl else LimitExceeded
            raise error(f"a value would be larger than {_mib(limits.max_entry_bytes)}, the "
                        "most one statement may make and one transaction may write; store "
                        "large content as a file") from None
        except apsw.InterruptError:
            raise LimitExceeded(f"statement ran longer than {limits.statement_seconds:g}s "
                                "and was stopped") from None
        except KeyError as err:  # a named parameter the params object lacks
            raise SqlError(f"the statement uses the parameter :{err.args[0]}, which params "
                           "does not have; add it, or null for NULL") from None
        except UnicodeDecodeError:
            raise InvalidText("a result value is TEXT that is not valid UTF-8 (made with "
                              "CAST(x'…' AS TEXT)), which JSON cannot carry; select "
                              "CAST(column AS BLOB) or hex(column) to read it") from None
        except UnicodeEncodeError:
            raise SqlError("a text parameter is not valid Unicode (it holds a lone "
                           "surrogate such as \\ud800); send bytes as {\"$blob\": …}") from None
        except _BAD_INPUT as err:
            # A denial surfaces as AuthError or, for functions, as a plain SQLError.
            if flags.wrote:
                raise ReadOnly("this replica only serves reads; send writes to the "
                               "primary") from None
            if flags.denied or isinstance(err, apsw.AuthError):
                raise SandboxViolation(flags.denied or str(err)) from None
            if str(err).startswith(MARK):  # a guard trigger refused the write
                raise Unreplicable(str(err)[len(MARK):]) from None
            raise SqlError(str(err)) from None
        finally:
            if not finished:
                # A statement stopped mid-way (a limit, text that is not UTF-8 in RETURNING
                # rows) is still open: close it, or the engine's own next statement on this
                # connection fails with "SQL statements in progress" (a fuzzer finding).
                self._cursor.close(force=True)
                self._cursor = self._new_cursor()
            self._sandbox.end_statement()
            self._recorder = None
        if flags.ddl:
            clash = reserved_name_clash(self._conn)
            if clash:
                raise SandboxViolation(f"the name {clash!r} is reserved for Tandem")
            self._check_table(flags.created)
            self._check_table(flags.altered)
            recorder.after_ddl()
        if recorder.size > limits.max_entry_bytes:
            raise EntryTooLarge(
                f"this transaction writes about {_mib(recorder.size)}, more than the "
                f"{_mib(limits.max_entry_bytes)} one journal entry may carry; split it into "
                "smaller transactions, or store large content as files")
        affected = self._conn.changes() if flags.dml else 0
        rowid = self._conn.last_insert_rowid() if flags.inserts else None
        return StatementResult(self._columns, rows, affected, rowid)


def _row_size(row: tuple) -> int:
    return sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
