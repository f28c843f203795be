"""The SDK's one error type, and how an HTTP answer becomes one (api.py and gateways.py)."""

from __future__ import annotations

import httpx


class TandemError(Exception):
    """A call that failed: HTTP status (0 when no answer came), stable code, message."""

    def __init__(self, status: int, code: str, message: str,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"error {self.status} {self.code}" if self.status else f"error {self.code}"
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"TandemError({self.status!r}, {self.code!r}, {self.message!r})"


def error_from(response: httpx.Response) -> TandemError:
    """The contract's `{"error": {"code", "message"}}`, or the best that can be said."""
    retry = response.headers.get("retry-after")
    retry_after = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    try:
        error = response.json()["error"]
        return TandemError(response.status_code, str(error["code"]), str(error["message"]),
                           retry_after)
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:300] or response.reason_phrase
        return TandemError(response.status_code, "http_error", text, retry_after)
