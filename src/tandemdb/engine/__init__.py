"""The environment engine: one tenant environment on one node, with its journal.

Entry point: `Environment`. See docs/engine.md for how the journal, DDL capture, files,
apply and rewind work.
"""

from .blobstore import BlobStore, LocalBlobStore
from .checksum import Checksum
from .environment import Environment
from .errors import (
    ApplyConflict,
    DivergentHistory,
    EngineError,
    EntryTooLarge,
    FileNotFound,
    InvalidPath,
    InvalidText,
    JournalGap,
    JournalTruncated,
    LimitExceeded,
    MissingBlobs,
    ReadOnly,
    RewindImpossible,
    SandboxViolation,
    SqlError,
    StaleEpoch,
)
from .files import FileInfo, normalise_path
from .journal import JournalEntry
from .results import Statement, StatementResult, TxResult
from .sandbox import Limits
from .snapshot import Snapshot

__all__ = [
    "ApplyConflict", "BlobStore", "Checksum", "DivergentHistory", "EngineError", "EntryTooLarge",
    "Environment", "FileInfo", "FileNotFound", "InvalidPath", "InvalidText", "JournalEntry",
    "JournalGap", "JournalTruncated", "LimitExceeded", "Limits", "LocalBlobStore", "MissingBlobs",
    "ReadOnly", "RewindImpossible", "SandboxViolation", "Snapshot", "SqlError", "StaleEpoch",
    "Statement", "StatementResult", "TxResult", "normalise_path",
]
