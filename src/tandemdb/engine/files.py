"""An environment's file namespace: path rules and the `_tandem_files` table.

File metadata rows live in the environment database (replicated like any table), contents in
the BlobStore. Paths are untrusted input and become keys, URLs and, on some backends, object
names, so they are normalised and strictly checked (tandemdb.common.paths, the rule the
gateway checks too).
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from tandemdb.common.paths import normalise_path as normalise_path
from tandemdb.common.paths import normalise_prefix as normalise_prefix


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    hash: str
    size: int
    modified_at: float

    def to_dict(self) -> dict:
        return {"path": self.path, "hash": self.hash, "size": self.size,
                "modified_at": self.modified_at}


class FileTable:
    """SQL over `_tandem_files`; the caller holds the connection and the transaction."""

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def lookup(self, path: str) -> FileInfo | None:
        row = self._conn.execute(
            "SELECT path, hash, size, modified_at FROM _tandem_files WHERE path = ?",
            (path,)).fetchone()
        return FileInfo(*row) if row else None

    def upsert(self, info: FileInfo) -> None:
        self._conn.execute(
            "INSERT INTO _tandem_files(path, hash, size, modified_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET hash = excluded.hash, size = excluded.size, "
            "modified_at = excluded.modified_at",
            (info.path, info.hash, info.size, info.modified_at))

    def remove(self, path: str) -> None:
        self._conn.execute("DELETE FROM _tandem_files WHERE path = ?", (path,))

    def list(self, prefix: str = "") -> list[FileInfo]:
        # Range scan on the primary key rather than LIKE, so '%' and '_' in names are literal.
        if prefix:
            rows = self._conn.execute(
                "SELECT path, hash, size, modified_at FROM _tandem_files "
                "WHERE path >= ? AND path < ? ORDER BY path", (prefix, prefix + "\U0010ffff"))
        else:
            rows = self._conn.execute(
                "SELECT path, hash, size, modified_at FROM _tandem_files ORDER BY path")
        return [FileInfo(*r) for r in rows]

    def digests(self) -> set[str]:
        return {h for (h,) in self._conn.execute("SELECT DISTINCT hash FROM _tandem_files")}
