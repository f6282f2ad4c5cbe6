"""HTTP plumbing shared by every route: errors, body limits, JSON bodies, credentials.

Every :class:`~bsi.errors.BsiError` becomes a JSON 4xx with the message and
hint; anything else is a 500 that logs the traceback and says nothing more.
No input may produce a 5xx, and the tests send bad input to every route.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bsi.errors import (
    BsiError,
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidPolicy,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from bsi.strict import check_text, read_json

log = logging.getLogger("bsi.server")

_STATUS = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidPolicy, 422),
    (InvalidInput, 400),
    (TooManyRequests, 429),
    (Unavailable, 503),
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


def error_response(error: Exception, method: str, path: str) -> JSONResponse | None:
    """How every endpoint answers ``error``: a :class:`~bsi.errors.BsiError` as a JSON 4xx
    (``401`` with ``WWW-Authenticate: Bearer``, RFC 6750; ``429``/``503`` with
    ``Retry-After``), a database that is away (:data:`DATABASE_AWAY`) as ``503``; None
    for anything else (a bug: the caller lets it become a logged 500). The framework's
    exception handlers and the raw fast paths (``bsi.server.ddm``) both answer with it."""
    if isinstance(error, DATABASE_AWAY):
        log.warning("database unavailable for %s %s: %s", method, path, error)
        error = unavailable(error)
    if not isinstance(error, BsiError):
        return None
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else {}
    if isinstance(error, TooManyRequests | Unavailable):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(error_body(error), status_code=status_for(error), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def known_error(request: Request, error: Exception) -> JSONResponse:
        response = error_response(error, request.method, request.url.path)
        assert response is not None  # registered for these kinds only
        return response

    async def validation_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()
        ]
        return JSONResponse(
            {"error": "InvalidInput", "message": "; ".join(problems)}, status_code=422
        )

    app.add_exception_handler(RequestValidationError, validation_error)
    known: tuple[type[Exception], ...] = (BsiError, *DATABASE_AWAY)
    for kind in known:
        app.add_exception_handler(kind, known_error)


DATABASE_AWAY: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    concurrent.futures.TimeoutError,
)
"""Failures that mean the database is away, locked or frozen, not that the request
was bad: answered ``503`` with ``Retry-After``, never a bare 500."""
RETRY_AFTER_SECONDS = 5


def unavailable(error: Exception) -> Unavailable:
    return Unavailable(
        f"the database is unavailable ({type(error).__name__}); nothing was changed",
        retry_after=RETRY_AFTER_SECONDS,
        hint=f"send the same request again in {RETRY_AFTER_SECONDS} s",
    )


class Deadline:
    """Answer ``503`` + ``Retry-After`` when a request is not answered in ``seconds``.

    The last guard against a frozen database: a connection already open to a
    stopped PostgreSQL hangs without any error (the kernel still acknowledges
    TCP), so no driver timeout fires. Paths under an ``exempt`` prefix (the
    long poll) keep their own bounds.
    """

    def __init__(self, app: ASGIApp, seconds: float, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.seconds = seconds
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):  # no task of its own, as wait_for has
                await self.app(scope, receive, watched)
        except TimeoutError:
            if started:
                raise
            error = Unavailable(
                f"no answer within {self.seconds:g} s: the database is slow or away",
                retry_after=RETRY_AFTER_SECONDS,
                hint=f"send the same request again in {RETRY_AFTER_SECONDS} s",
            )
            log.warning("request %s %s timed out", scope.get("method"), scope["path"])
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                    ],
                }
            )
            await send(
                {"type": "http.response.body", "body": json.dumps(error_body(error)).encode()}
            )


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


def strict_json(raw: bytes) -> object:
    """An untrusted JSON body read by :func:`bsi.strict.read_json`, or InvalidInput (400).

    A key written twice in one object is refused (RFC 8259 4): which one wins differs
    between parsers, so a proxy, NanoMDM and bsi could each read a different report."""
    return read_json(raw, source="request body", unique_keys=True)


class StrictRequest(Request):
    """A request whose ``json()`` is :func:`strict_json`: FastAPI's body models read it."""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            self._strict_json = strict_json(await self.body())
        return self._strict_json


class StrictRoute(APIRoute):
    """Every route reads bodies strictly and refuses control characters in path and query.

    A route with a body model has its body checked up front, so a bad one gets
    bsi's own 400 naming the problem; routes reading the body themselves call
    :func:`json_body` after checking who is asking.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        has_body_model = self.body_field is not None

        async def handler(request: Request) -> Response:
            strict = StrictRequest(request.scope, request.receive)
            check_text(strict.url.path, "the URL path", limit=4096)
            _check_controls(strict.url.path, "the URL path")
            for name, value in strict.query_params.multi_items():
                check_text(value, f"query parameter {name}", limit=4096)
                _check_controls(value, f"query parameter {name}")
            if has_body_model and await strict.body():
                await strict.json()
            return await original(strict)

        return handler


def _check_controls(value: str, what: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidInput(f"{what} contains a control character ({value[:40]!r})")


async def json_body(request: Request) -> object:
    """The request body as strict JSON (:func:`strict_json`), or a 400 that says why not."""
    if isinstance(request, StrictRequest):
        return await request.json()
    return strict_json(await request.body())


def bearer(request: Request) -> str | None:
    """The credential of ``Authorization: Bearer <credential>`` (RFC 6750), or None."""
    return bearer_of(request.headers.get("authorization", ""))


def bearer_of(header: str) -> str | None:
    """The credential in an ``Authorization`` header's value, or None when it is not
    ``Bearer`` with a value (the scheme is case-insensitive, RFC 7235 section 2.1)."""
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
