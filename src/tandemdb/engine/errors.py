"""Engine errors. Each carries a stable `code` and the HTTP status the services map it to,
so that a bad request is reported the same way wherever it is caught."""

from __future__ import annotations

from tandemdb.common.errors import CodedError
from tandemdb.common.paths import InvalidPath as InvalidPath  # the path rule is common's


class EngineError(CodedError):
    """Base class: something about one environment's request or state is wrong.

    Each error class is one shape: its stable `code` and HTTP `status` as class keywords,
    `class SqlError(EngineError, code="sql_error", status=400)`, and a docstring."""

    code = "engine_error"
    status = 500

    def __init_subclass__(cls, *, code: str = "", status: int = 0, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = code or cls.code
        cls.status = status or cls.status


class SqlError(EngineError, code="sql_error", status=400):
    """The tenant's SQL is malformed or failed (constraint, type, syntax)."""


class SandboxViolation(EngineError, code="forbidden", status=403):
    """Tenant SQL tried something the sandbox denies (ATTACH, extensions, system tables …)."""


class ReadOnly(EngineError, code="read_only", status=409):
    """A write reached a replica that only serves reads (a secondary)."""


class LimitExceeded(EngineError, code="limit_exceeded", status=400):
    """A statement ran too long or returned too much."""


class FileNotFound(EngineError, code="file_not_found", status=404):
    """No file at that path in this environment."""


class StaleEpoch(EngineError, code="stale_epoch", status=409):
    """Entries or requests from an epoch older than the one this replica knows (fencing)."""


class JournalGap(EngineError, code="journal_gap", status=409):
    """An entry arrived out of order: applying it would skip lsns."""


class DivergentHistory(EngineError, code="divergent_history", status=409):
    """The same lsn exists here with a different epoch: histories forked and need a rewind."""


class JournalTruncated(EngineError, code="journal_truncated", status=410):
    """The journal no longer holds entries after the lsn asked for: seed from a snapshot."""


class ApplyConflict(EngineError, code="apply_conflict", status=409):
    """A changeset did not apply cleanly on a replica; names the table and key."""

    def __init__(self, message: str, table: str = "", key: tuple | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.key = key


class MissingBlobs(EngineError, code="missing_blobs", status=409):
    """An entry or file row references blobs this replica does not hold yet."""

    def __init__(self, digests: list[str]) -> None:
        shown = ", ".join(d[:12] for d in digests[:5])
        more = f" and {len(digests) - 5} more" if len(digests) > 5 else ""
        super().__init__(f"{len(digests)} blob(s) missing: {shown}{more}; fetch them first")
        self.digests = digests


class RewindImpossible(EngineError, code="rewind_impossible", status=409):
    """A rewind cannot be done from the journal alone; a full copy (snapshot) is needed."""


class EntryTooLarge(LimitExceeded, code="entry_too_large", status=413):
    """A transaction writes more than one journal entry may carry (Limits.max_entry_bytes);
    refused before it commits, so nothing is written that could not be replicated."""


class InvalidText(EngineError, code="invalid_text", status=422):
    """A result holds TEXT that is not valid UTF-8 (made with CAST(x'…' AS TEXT)): JSON
    cannot carry it. The data is intact; read it as a BLOB instead."""


class Unreplicable(EngineError, code="unreplicable_write", status=400):
    """A write the journal could not carry exactly (a NULL in a primary key, a key changed to
    a collation-equal spelling): refused before it commits, never acknowledged and lost."""
