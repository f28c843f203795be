"""Content-addressed storage for file contents.

`BlobStore` is the seam (local directory now, S3-compatible later), in the way Litestream's
`ReplicaClient` separates destinations. Digests are SHA-256 hex; a blob is durable (fsynced
and renamed into place) before `put` returns, so a file row that references it may commit.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Reject anything that is not a SHA-256 hex digest (it becomes a path)."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError(f"not a blob digest: {digest!r}")
    return digest


class BlobStore(ABC):
    """Where file contents live, addressed by digest."""

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store durably; return the digest."""

    @abstractmethod
    def get(self, digest: str) -> bytes:
        """The content; KeyError if absent."""

    @abstractmethod
    def has(self, digest: str) -> bool: ...

    @abstractmethod
    def delete(self, digest: str) -> None: ...

    @abstractmethod
    def digests(self) -> Iterator[str]: ...


class LocalBlobStore(BlobStore):
    """Blobs as files `root/ab/abcdef…`, written to a temp file, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(exist_ok=True)
        write_durably(path, data)
        return digest

    def get(self, digest: str) -> bytes:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None

    def has(self, digest: str) -> bool:
        return self._path(digest).exists()

    def delete(self, digest: str) -> None:
        self._path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for sub in self.root.iterdir():
            if sub.is_dir():
                for f in sub.iterdir():
                    if _DIGEST.match(f.name):
                        yield f.name


def write_durably(path: Path, data: bytes) -> None:
    """Write a whole file so that after a crash it is either all there or not there:
    a temporary file in the same directory, fsynced, renamed into place, and the
    directory fsynced (blobs, replica records, lost-writes bundles)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable only once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
