"""Engine errors. Each carries a stable `code` and the HTTP status the services map it to,
so that a bad request is reported the same way wherever it is caught."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: something about one environment's request or state is wrong."""

    code = "engine_error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SqlError(EngineError):
    """The tenant's SQL is malformed or failed (constraint, type, syntax)."""

    code = "sql_error"
    status = 400


class SandboxViolation(EngineError):
    """Tenant SQL tried something the sandbox denies (ATTACH, extensions, system tables …)."""

    code = "forbidden"
    status = 403


class ReadOnly(EngineError):
    """A write reached a replica that only serves reads (a secondary)."""

    code = "read_only"
    status = 409


class LimitExceeded(EngineError):
    """A statement ran too long or returned too much."""

    code = "limit_exceeded"
    status = 400


class InvalidPath(EngineError):
    """A file path is absolute, contains `..`, NUL, or empty segments."""

    code = "invalid_path"
    status = 400


class FileNotFound(EngineError):
    code = "file_not_found"
    status = 404


class StaleEpoch(EngineError):
    """Entries or requests from an epoch older than the one this replica knows (fencing)."""

    code = "stale_epoch"
    status = 409


class JournalGap(EngineError):
    """An entry arrived out of order: applying it would skip lsns."""

    code = "journal_gap"
    status = 409


class DivergentHistory(EngineError):
    """The same lsn exists here with a different epoch: histories forked and need a rewind."""

    code = "divergent_history"
    status = 409


class JournalTruncated(EngineError):
    """The journal no longer holds entries after the lsn asked for: seed from a snapshot."""

    code = "journal_truncated"
    status = 410


class ApplyConflict(EngineError):
    """A changeset did not apply cleanly on a replica; names the table and key."""

    code = "apply_conflict"
    status = 409

    def __init__(self, message: str, table: str = "", key: tuple | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class MissingBlobs(EngineError):
    """An entry or file row references blobs this replica does not hold yet."""

    code = "missing_blobs"
    status = 409

    def __init__(self, digests: list[str]) -> None:
        shown = ", ".join(d[:12] for d in digests[:5])
        more = f" and {len(digests) - 5} more" if len(digests) > 5 else ""
        super().__init__(f"{len(digests)} blob(s) missing: {shown}{more}; fetch them first")
        self.digests = digests


class RewindImpossible(EngineError):
    """A rewind cannot be done from the journal alone; a full copy (snapshot) is needed."""

    code = "rewind_impossible"
    status = 409


class EntryTooLarge(LimitExceeded):
    """A transaction writes more than one journal entry may carry (Limits.max_entry_bytes);
    refused before it commits, so nothing is written that could not be replicated."""

    code = "entry_too_large"
    status = 413


class InvalidText(EngineError):
    """A result holds TEXT that is not valid UTF-8 (made with CAST(x'…' AS TEXT)): JSON
    cannot carry it. The data is intact; read it as a BLOB instead."""

    code = "invalid_text"
    status = 422


class Unreplicable(EngineError):
    """A write the journal could not carry exactly (a NULL in a primary key, a key changed to
    a collation-equal spelling): refused before it commits, never acknowledged and lost."""

    code = "unreplicable_write"
    status = 400
