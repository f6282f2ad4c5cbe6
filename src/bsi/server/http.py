"""HTTP plumbing shared by every route: errors, body limits, JSON bodies, credentials.

Every :class:`~bsi.errors.BsiError` becomes a JSON 4xx with the message and
hint; anything else is a 500 that logs the traceback and says nothing more.
No input may produce a 5xx, and the tests send bad input to every route.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bsi.errors import (
    BsiError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
)

log = logging.getLogger("bsi.server")

_STATUS = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 400),
)


class BodyTooLarge(InvalidInput):
    """A request body over the configured limit."""


def error_body(error: BsiError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(error).__name__, "message": error.message}
    if error.hint:
        body["hint"] = error.hint
    for extra in ("path", "rule"):
        if hasattr(error, extra):
            body[extra] = getattr(error, extra)
    return body


def status_for(error: BsiError) -> int:
    if isinstance(error, BodyTooLarge):
        return 413
    return next((code for kind, code in _STATUS if isinstance(error, kind)), 400)


def install_error_handlers(app: FastAPI) -> None:
    async def bsi_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, BsiError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
        return JSONResponse(error_body(error), status_code=status_for(error), headers=headers)

    async def validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()
        ]
        return JSONResponse(
            {"error": "InvalidInput", "message": "; ".join(problems)}, status_code=422
        )

    app.add_exception_handler(BsiError, bsi_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class BodyLimit:
    """Refuse request bodies over a limit before they are read into memory.

    Checks ``Content-Length`` first, then counts streamed chunks, so a client
    that lies or streams without a length is stopped too. Devices get
    ``max_bytes``; paths under a prefix in ``larger`` (the admin API, which
    takes whole catalogue feeds) get their own limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.larger.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await self._refuse(send, limit)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(self._message(limit))
            return message

        await self.app(scope, counted, send)

    @staticmethod
    def _message(limit: int) -> str:
        return f"request body is over the limit of {limit} bytes"

    async def _refuse(self, send: Send, limit: int) -> None:
        message = self._message(limit)
        body = json.dumps({"error": "BodyTooLarge", "message": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


MAX_JSON_DEPTH = 64


async def json_body(request: Request) -> object:
    """The request body as JSON, or a 400 that says why it is not.

    Nesting is capped: no DDM document is more than a dozen levels deep, and
    a deeper one would only exhaust the recursion of whatever reads it next.
    """
    raw = await request.body()
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"request body is not JSON: {error}") from error
    except RecursionError as error:
        raise InvalidInput(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from error
    if _depth(document) > MAX_JSON_DEPTH:
        raise InvalidInput(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    return document


def _depth(document: object) -> int:
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)
    return deepest


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def verify_hmac(key: bytes, body: bytes, signature: str | None) -> None:
    """NanoMDM's ``X-Hmac-Signature``: base64 HMAC-SHA256 of the body."""
    if not signature:
        raise Unauthorized("X-Hmac-Signature is required with X-Enrollment-ID")
    try:
        given = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as error:
        raise Unauthorized("X-Hmac-Signature is not base64") from error
    expected = hmac.new(key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("X-Hmac-Signature does not match the request body")


def sign_hmac(key: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
