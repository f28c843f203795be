"""File paths of an environment's namespace: the one rule for what a path may be.

Paths are untrusted input and become keys, URLs and, on some backends, object names, so the
gateway checks them before it forwards a call (a 400 costs no node a request) and the engine
checks them again where it stores them (docs/api.md, files).
"""

from __future__ import annotations

import unicodedata

from .errors import CodedError

MAX_PATH_LENGTH = 1024


class InvalidPath(CodedError):
    """A file path is absolute, contains `..`, NUL, or empty segments."""

    code = "invalid_path"
    status = 400


def normalise_path(path: str) -> str:
    """NFC-normalise a relative path; reject absolute paths, `.`/`..`, NUL, empty segments."""
    if not isinstance(path, str) or not path:
        raise InvalidPath("file path is empty")
    if "\x00" in path:
        raise InvalidPath("file path contains NUL")
    path = unicodedata.normalize("NFC", path)
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidPath(f"file path is longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/") or "\\" in path:
        raise InvalidPath(f"file path {path!r} must be relative and use '/' separators")
    for segment in path.split("/"):
        if segment == "":
            raise InvalidPath(f"file path {path!r} has an empty segment")
        if segment in (".", ".."):
            raise InvalidPath(f"file path {path!r} may not contain '.' or '..' segments")
        if any(ord(c) < 32 for c in segment):
            raise InvalidPath(f"file path {path!r} contains a control character")
    return path


def normalise_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a path (a trailing '/' is allowed)."""
    if not prefix:
        return ""
    trailing = prefix.endswith("/")
    clean = normalise_path(prefix.rstrip("/") if trailing else prefix)
    return clean + "/" if trailing else clean
