"""Logical checksum of an environment: rows per table in key order, schema, and files.

Two replicas have equal checksums exactly when their logical contents are equal, whatever
their page layout, free space or local bookkeeping (journal, meta). Values are encoded with
msgpack, which keeps int, float, blob and NULL distinct. TEXT is read as its bytes, in a
column of its own, so it stays distinct from BLOB and is never decoded: a tenant may store
text that is not valid UTF-8 (`CAST(x'ff' AS TEXT)`), and two such strings must still differ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import apsw
import msgpack

from .blobstore import BlobStore
from .errors import MissingBlobs
from .schema import FILES_TABLE, user_tables


@dataclass(frozen=True)
class Checksum:
    total: str
    tables: dict[str, str]
    schema: str
    files: str

    def to_dict(self) -> dict:
        return {"total": self.total, "tables": self.tables, "schema": self.schema,
                "files": self.files}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _exact(column: str) -> str:
    """Two result columns per table column: its TEXT as bytes, and any other value."""
    return (f"iif(typeof({column}) = 'text', CAST({column} AS BLOB), NULL), "
            f"iif(typeof({column}) = 'text', NULL, {column})")


def _table_digest(conn: apsw.Connection, table: str) -> str:
    cols = list(conn.execute(f"PRAGMA table_info({_quote(table)})"))
    pk = [c[1] for c in sorted((c for c in cols if c[5]), key=lambda c: c[5])]
    names = ", ".join(_exact(_quote(c[1])) for c in cols)
    if pk:
        order = ", ".join(_quote(c) for c in pk)
        sql = f"SELECT {names} FROM {_quote(table)} ORDER BY {order}"
    else:
        # No declared key: the session extension keys these rows by rowid, so rowid is content.
        sql = f"SELECT rowid, {names} FROM {_quote(table)} ORDER BY rowid"
    h = hashlib.sha256()
    for row in conn.execute(sql):
        h.update(msgpack.packb(row, use_bin_type=True))
    return h.hexdigest()


def compute(conn: apsw.Connection, blobs: BlobStore) -> Checksum:
    """Compute inside one read transaction so the figure is of one consistent state."""
    with conn:
        schema = hashlib.sha256()
        for row in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "AND name NOT LIKE '\\_tandem\\_%' ESCAPE '\\' "
                "AND tbl_name NOT LIKE '\\_tandem\\_%' ESCAPE '\\' ORDER BY type, name"):
            schema.update(msgpack.packb(row))
        tables = {t: _table_digest(conn, t) for t in user_tables(conn)}
        files = hashlib.sha256()
        missing = []
        for path, digest, size in conn.execute(
                f"SELECT path, hash, size FROM {FILES_TABLE} ORDER BY path"):
            files.update(msgpack.packb([path, digest, size]))
            if not blobs.has(digest):
                missing.append(digest)
    if missing:
        # Invariant 6: a committed file row's content exists on every replica that applied it.
        raise MissingBlobs(missing)
    total = hashlib.sha256(msgpack.packb(
        [schema.hexdigest(), sorted(tables.items()), files.hexdigest()])).hexdigest()
    return Checksum(total, tables, schema.hexdigest(), files.hexdigest())
