"""The error base that knows its HTTP answer, shared by every layer.

An error raised deep down (the engine's, a path check in the gateway) carries its own stable
`code` and HTTP `status`, so `common.http` answers `{"error": {"code", "message"}}` for all
of them with one handler, without importing the layers that raise them.
"""

from __future__ import annotations


class CodedError(Exception):
    """An error with a stable `code` and the HTTP `status` the services answer it with."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
