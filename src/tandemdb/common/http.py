"""The HTTP contract every Tandem service keeps (docs/design.md, "The public contract").

Errors are `{"error": {"code": …, "message": …}}` with a fitting status, whatever raised
them: an `ApiError`, a `CodedError` (the engine's errors, a bad file path), a validation
failure or an unknown route. Bodies over
the limit get 413 before they are read whole, and JSON bodies nested deeper than
`MAX_JSON_DEPTH` get 400 before they are parsed. Internal endpoints need the cluster secret
(`X-Tandem-Secret`); public ones the admin token (`Authorization: Bearer …`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandemdb.common import values
from tandemdb.common.errors import CodedError

SECRET_HEADER = "x-tandem-secret"
# How long a client keeps an idle connection: below uvicorn's 5 s keep-alive timeout, so no
# request is written onto a connection the server is closing (httpx's default is also 5 s:
# the two race, and the request fails with RemoteProtocolError).
KEEPALIVE_SECONDS = 2.0
# Arrays and objects inside each other. Tandem's bodies nest under 8 deep; Python's parser
# recurses once per level, and a body 5,000 deep would end in RecursionError (a 500).
MAX_JSON_DEPTH = 32
log = logging.getLogger("tandem.http")

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes and all
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class ApiError(Exception):
    """An error with its HTTP status and stable code; message says what to do next."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(CodedError)
    async def _coded(_: Request, exc: CodedError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(400, "bad_request",
                              f"invalid request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # uvicorn closes the connection after an unhandled exception: say so, so that no
        # client (the gateway's pool above all) sends its next request onto it.
        return error_response(500, "internal", f"internal error: {type(exc).__name__}: {exc}",
                              {"Connection": "close"})


async def read_json(request: Request, allow_empty: bool = False) -> Any:
    """The request body as JSON (BLOBs tagged as in `values`); 400 when it is not JSON.

    `allow_empty`: an empty body reads as None (calls whose fields all have defaults)."""
    raw = await request.body()
    if allow_empty and not raw.strip():
        return None
    return parse_json(raw)


def parse_json(raw: bytes, tagged: bool = True) -> Any:
    """A JSON request body, BLOBs tagged as in `values` unless not `tagged`; 400 when it is
    not JSON or nests deeper than MAX_JSON_DEPTH (checked before parsing)."""
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(400, "bad_request",
                       f"the request body nests arrays and objects more than {MAX_JSON_DEPTH} "
                       "deep; send it flatter (SQL params are one list or object of values)")
    try:
        return values.loads(raw) if tagged else json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad_request", f"the request body is not valid JSON: {exc}") from None


def json_depth(raw: bytes, stop_at: int = MAX_JSON_DEPTH + 1) -> int:
    """How deep arrays and objects nest in `raw`, brackets in strings aside, as far as the
    limit needs: it reaches `stop_at` exactly when the depth does (below, it may count
    high). No parsing: a hostile body costs a scan, mostly at C speed."""
    opening = raw.count(b"[") + raw.count(b"{")
    if opening < stop_at:
        return opening  # the common case: it cannot nest deeper than that
    depth = deepest = 0
    for byte in _STRING.sub(b"", raw).translate(None, _NOT_BRACKET):
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest >= stop_at:
                    break
        else:
            depth -= 1
    return deepest


def check_secret(request: Request, secret: str) -> None:
    """Internal endpoints: the cluster secret shared by gateway, controller and nodes."""
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong cluster secret")


def check_token(request: Request, token: str) -> None:
    """Public endpoints: `Authorization: Bearer <admin token>`."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise ApiError(401, "unauthorized",
                       "missing or wrong token: send 'Authorization: Bearer <token>' "
                       "(tandem up prints it; the CLI reads it from the data dir)")


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413, by header or as they stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, "body_too_large",
                                   f"request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "body_too_large",
                                  f"request body is over the limit of {self.max_bytes} bytes")
        await response(scope, receive, send)
