"""Snapshots: consistent copies of an environment database, and seeding a replica from one.

A snapshot is a plain SQLite file made with the backup API while the environment's lock is
held, so it holds exactly the state at its lsn, journal and epoch history included. A replica
restored from it continues from the journal at that lsn. Blobs are not inside the file: a
snapshot kept under the environment's `snapshots/` folder pins the blobs it references.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

from .blobstore import BlobStore, LocalBlobStore, fsync_path
from .journal import Journal
from .schema import DB_FILE, FILES_TABLE

SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    lsn: int
    epoch: int


def take(conn: apsw.Connection, env_dir: Path, lsn: int, epoch: int,
         dest: Path | None) -> Snapshot:
    """Copy the database page by page; the caller holds the environment lock."""
    if dest is None:
        (env_dir / SNAPSHOT_DIR).mkdir(exist_ok=True)
        dest = env_dir / SNAPSHOT_DIR / f"lsn-{lsn:012d}-epoch-{epoch}.sqlite"
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _copy_database(conn, tmp)
    fsync_path(tmp)
    os.replace(tmp, dest)
    fsync_path(dest.parent)
    return Snapshot(dest, lsn, epoch)


def _copy_database(source: apsw.Connection, dest: Path) -> None:
    target = apsw.Connection(str(dest))
    try:
        with target.backup("main", source, "main") as backup:
            while not backup.done:
                backup.step(1024)
        # A snapshot is one self-contained file: no WAL beside it.
        target.execute("PRAGMA journal_mode=DELETE")
    finally:
        target.close()


def blob_refs(db_path: Path) -> set[str]:
    """Blobs a database file needs: its file rows and its retained journal entries."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        refs = {h for (h,) in conn.execute(f"SELECT hash FROM {FILES_TABLE}")}
        return refs | Journal(conn).blob_refs()
    finally:
        conn.close()


def kept_blob_refs(env_dir: Path) -> set[str]:
    refs: set[str] = set()
    folder = env_dir / SNAPSHOT_DIR
    if folder.is_dir():
        for snap in folder.glob("*.sqlite"):
            refs |= blob_refs(snap)
    return refs


def restore(snapshot_path: Path, env_dir: Path, fetch_blob: Callable[[str], bytes],
            blobs: BlobStore | None = None) -> None:
    """Make `env_dir` a replica at the snapshot's state.

    Blobs are fetched (and verified against their digest) before the database file appears,
    so an interrupted restore never leaves file rows without content.
    """
    env_dir.mkdir(parents=True, exist_ok=True)
    db = env_dir / DB_FILE
    if db.exists():
        raise FileExistsError(f"{db} exists: restore only into an empty environment directory")
    store = blobs or LocalBlobStore(env_dir / "blobs")
    for digest in sorted(blob_refs(snapshot_path)):
        if not store.has(digest):
            got = store.put(fetch_blob(digest))
            if got != digest:
                store.delete(got)
                raise ValueError(f"fetched blob for {digest[:12]} has digest {got[:12]}")
    source = apsw.Connection(str(snapshot_path), flags=apsw.SQLITE_OPEN_READONLY)
    tmp = env_dir / (DB_FILE + ".restoring")
    tmp.unlink(missing_ok=True)
    try:
        _copy_database(source, tmp)
    finally:
        source.close()
    conn = apsw.Connection(str(tmp))
    try:
        # Consumers belong to the primary the snapshot came from, not to this replica.
        conn.execute("DELETE FROM _tandem_consumers")
    finally:
        conn.close()
    fsync_path(tmp)
    os.replace(tmp, db)
    fsync_path(env_dir)

