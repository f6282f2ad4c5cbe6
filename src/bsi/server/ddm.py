"""The DDM endpoints devices talk to: tokens, declaration-items, declaration, status.

Shaped as Apple's protocol schemas and compatible with NanoMDM's ``-dm``
forwarding: a device is identified either by the bsi device credential it was
issued at enrollment (``Authorization: Bearer``), or, when the server has a
NanoMDM HMAC key, by ``X-Enrollment-ID`` with the body signed in
``X-Hmac-Signature``. Sending both with different devices is refused: nobody
reads or writes another device's state.

``GET tokens`` honours ``If-None-Match``: a device that already holds the
current token gets ``304`` and no body, which keeps a check-in where nothing
changed at one token comparison. Most check-ins are such, so
:class:`UnchangedCheckins` answers them in front of the framework when
everything it needs is in memory (the same rules: :func:`admit_credential`,
:func:`holds_current`), and hands every other request to the route.
:class:`StatusReports` serves ``PUT status`` there too, with the route's own
function (:func:`accept_status`).
"""

import asyncio
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from bsi.domain.catalog import Catalog
from bsi.domain.ddm import declaration_items_response
from bsi.domain.rollout import NO_HOLDS, dump_holds
from bsi.domain.status import state_to_report
from bsi.errors import BsiError, Forbidden, NotFound, Unauthorized, Unavailable
from bsi.feeds import dump_bsi_catalog
from bsi.feeds.bsi_catalog import LATEST_RETRY
from bsi.server.http import (
    RETRY_AFTER_SECONDS,
    StrictRequest,
    StrictRoute,
    bearer,
    bearer_of,
    error_response,
    json_body,
)
from bsi.server.nanomdm import HMAC_HEADER, ForwardingTrust
from bsi.server.service import STATUS_WRITE_TIMEOUT, BsiService, DeviceCatalog, GroupView
from bsi.server.status_writer import outcome
from bsi.server.wakeup import Wakeups
from bsi.store.store import DeviceIdentity
from bsi.strict import MAX_INT32

JSON = "application/json"
Endpoint = Callable[..., Any]
REVOKED = "this device is revoked or decommissioned, or its credential was replaced"
REVOKED_HINT = "an admin can re-enrol it: POST /v1/admin/devices/<device id>/re-enroll"


DDM_PREFIX = "/v1/ddm"
"""Where devices (and NanoMDM's ``-dm`` URL, ``http://bsi:8080/v1/ddm/``) find the endpoints."""
SLASHLESS_PREFIX = "/v1"
"""Where NanoMDM lands when its ``-dm`` URL lacks the final slash: RFC 3986 resolution
of ``tokens`` against ``.../v1/ddm`` replaces the last segment, giving ``/v1/tokens``."""
TOKENS = "/tokens"
STATUS = "/status"
CATALOG = "/catalog"
WAIT = "/wait"
MAX_WAIT_SECONDS = 300
"""The longest long poll a device may ask for (``timeout``)."""


def admit_credential(
    service: BsiService, identity: DeviceIdentity | None, enrollment_id: str | None
) -> DeviceIdentity:
    """The device a bearer credential proved, once admitted: raises
    :class:`~bsi.errors.Unauthorized` for an unknown credential or a revoked,
    decommissioned or re-enrolled device, :class:`~bsi.errors.Forbidden` when
    ``X-Enrollment-ID`` names another device."""
    if identity is None:
        raise Unauthorized("unknown device credential")
    if service.admitted(identity) is None:
        raise Unauthorized(REVOKED, hint=REVOKED_HINT)
    if enrollment_id is not None and enrollment_id != identity.device_id:
        raise Forbidden("X-Enrollment-ID names another device than the credential")
    return identity


def etag_of(view: GroupView) -> str:
    """The ``ETag`` of a served view: its declarations' token, quoted (RFC 9110 8.8.3)."""
    return f'"{view.declarations.token}"'


def holds_current(view: GroupView, if_none_match: str | None) -> bool:
    """Whether the device's ``If-None-Match`` names the current token (quoted as an ETag,
    or bare, as Apple's clients send ``ServerToken`` values): then ``304``."""
    return if_none_match is not None and if_none_match in (view.declarations.token, etag_of(view))


def cached_identity(service: BsiService, headers: Headers) -> DeviceIdentity | None:
    """The device a bearer credential proves, when that is known without I/O and the
    device is admitted (:func:`admit_credential`); None for anything else, which the
    fast paths leave to the route (it applies the same rules and renders the refusal)."""
    credential = bearer_of(headers.get("authorization", ""))
    if credential is None:
        return None
    known, identity = service.cached_device_for_credential(credential)
    if not known:
        return None
    try:
        return admit_credential(service, identity, headers.get("x-enrollment-id"))
    except BsiError:
        return None


class UnchangedCheckins:
    """``GET tokens`` with the current token in ``If-None-Match``, answered ``304`` below
    the framework (routing, dependencies and request objects cost three to four times
    the answer itself).

    It answers only when the credential's identity and the device's served view are
    already in memory (no I/O, no thread hop) and the device is admitted; anything
    else (a changed token, an error to render, a NanoMDM-forwarded request, a cache
    miss) goes to the route unchanged, which applies the same functions. It sits
    inside the metrics and response-signing middlewares, so its answers are counted
    and signed as the route's are.
    """

    PATHS = frozenset({DDM_PREFIX + TOKENS, SLASHLESS_PREFIX + TOKENS})

    def __init__(self, app: ASGIApp, service: BsiService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and scope["path"] in self.PATHS
            and await self._answered(scope, receive, send)
        ):
            return
        await self.app(scope, receive, send)

    async def _answered(self, scope: Scope, receive: Receive, send: Send) -> bool:
        headers = Headers(scope=scope)
        if_none_match = headers.get("if-none-match")
        if if_none_match is None:
            return False
        service = self.service
        identity = cached_identity(service, headers)
        if identity is None:
            return False
        view = service.cached_group_view(identity)
        if view is None or not holds_current(view, if_none_match):
            return False
        service.saw(identity.device_id)
        scope["route"] = self  # so metrics label it by its path, as a matched route
        await Response(status_code=304, headers={"ETag": etag_of(view)})(scope, receive, send)
        return True


async def accept_status(
    service: BsiService, request: Request, identity: DeviceIdentity, max_body: int
) -> Response:
    """``PUT status`` once the device is identified: the per-device rate limit (before
    the body is read), the strict JSON body, then the report stored (a device channel's
    through the status writer, at most :data:`STATUS_WRITE_TIMEOUT` s, then
    ``TimeoutError``: 503). Raises what refuses it; the route and
    :class:`StatusReports` both serve reports with it."""
    length = request.headers.get("content-length", "")
    service.admit_status(identity.device_id, int(length) if length.isdecimal() else max_body)
    body = await json_body(request)
    source = request.client.host if request.client else None
    if identity.channel is not None:  # stored on that channel alone, not batched
        await run_in_threadpool(service.report_status, identity, body, source)
    else:  # validated here; the status writer merges and stores it with its batch
        stored = service.submit_status(identity, body, source)
        try:
            async with asyncio.timeout(STATUS_WRITE_TIMEOUT):  # cancels (withdraws) it
                await outcome(stored)
        except TimeoutError:
            raise _not_stored_in_time(withdrawn=stored.cancel()) from None
    return Response(status_code=200)


def _not_stored_in_time(*, withdrawn: bool) -> Unavailable:
    """The 503 for a report the status writer did not answer within
    :data:`STATUS_WRITE_TIMEOUT`: withdrawn when the writer had not taken it yet;
    otherwise it may still be stored, and the answer must not say it was not."""
    if withdrawn:
        fate = "it was withdrawn: nothing was changed"
    else:
        fate = "the writer had taken it, so it may still be stored"
    return Unavailable(
        f"the status report was not stored within {STATUS_WRITE_TIMEOUT:g} s; {fate}",
        retry_after=RETRY_AFTER_SECONDS,
        hint=f"send the report again in {RETRY_AFTER_SECONDS} s (a report stored twice "
        "leaves the same state)",
    )


class StatusReports:
    """``PUT status`` from a device whose credential is known without I/O, served below
    the framework by :func:`accept_status`, as the route serves it: a status report's
    own work is a fraction of a millisecond, and routing, dependencies and the
    middleware stack of the framework cost about as much again (issue 18).

    It takes a request only when :func:`cached_identity` admits its credential and it
    has no query string (the route refuses control characters there); anything else
    reaches the route with its body unread. A refusal is rendered by
    :func:`~bsi.server.http.error_response`, as the route's exception handlers render
    it. It sits inside the body limit and the request deadline, as the route does.
    """

    PATHS = frozenset({DDM_PREFIX + STATUS, SLASHLESS_PREFIX + STATUS})

    def __init__(self, app: ASGIApp, service: BsiService, max_body: int) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        identity = None
        if (
            scope["type"] == "http"
            and scope["method"] == "PUT"
            and scope["path"] in self.PATHS
            and not scope["query_string"]
        ):
            identity = cached_identity(self.service, Headers(scope=scope))
        if identity is None:
            await self.app(scope, receive, send)
            return
        self.service.saw(identity.device_id)
        try:
            request = StrictRequest(scope, receive)
            response: Response = await accept_status(self.service, request, identity, self.max_body)
        except Exception as error:
            refusal = error_response(error, scope["method"], scope["path"])
            if refusal is None:
                raise
            response = refusal
        scope["route"] = self  # so metrics label it by its path, as a matched route
        await response(scope, receive, send)


class CatalogAnswers:
    """The bodies of devices' catalogue answers (``GET catalog``).

    The platform's part of the served catalogue is most of a body and the same for
    every device of the platform, so it is encoded once per catalogue and platform;
    each device's holds and newest retry allowance are added to that text. Used from
    the event loop only.
    """

    MAX_PLATFORMS = 64
    """Encoded platforms kept at most (the platform is whatever the device asks for)."""

    def __init__(self) -> None:
        self._encoded: dict[str, tuple[Catalog, str]] = {}

    def body(self, platform: str, found: DeviceCatalog) -> str:
        """The JSON text of ``found`` for ``platform``: the catalogue's ``supplements``
        and ``releases`` of that platform (:func:`~bsi.feeds.dump_bsi_catalog`), the
        device's holds under ``device`` (absent when nothing holds it) and
        ``latest_retry``."""
        encoded = self._encoded.get(platform)
        if encoded is None or encoded[0] is not found.catalog:
            catalog = found.catalog
            mine = Catalog(
                supplements=tuple(s for s in catalog.supplements if s.platform == platform),
                releases=tuple(r for r in catalog.releases if r.platform == platform),
                source=catalog.source,
            )
            encoded = (catalog, json.dumps(dump_bsi_catalog(mine)))
            if len(self._encoded) >= self.MAX_PLATFORMS:
                self._encoded.clear()
            self._encoded[platform] = encoded
        own: dict[str, object] = {}
        if found.holds is not NO_HOLDS:
            own["device"] = dump_holds(found.holds)
        own[LATEST_RETRY] = found.latest_retry
        text, added = encoded[1], json.dumps(own)
        return f"{text[:-1]}, {added[1:]}"  # the catalogue's text always has keys


_PLAIN_PLATFORM = re.compile(rb"platform=([A-Za-z0-9._-]{1,64})")
"""A catalogue request's query string :class:`DeviceCatalogs` takes: one platform
parameter whose value needs no decoding and no check the route would make."""


Asked = TypeVar("Asked")
"""What a fast path's query asks (:meth:`_DeviceQueries.plain`)."""


class _DeviceQueries(Generic[Asked]):
    """Base of the fast paths for a device's ``GET`` of :attr:`PATH` with a query string:
    it takes a request whose query :meth:`plain` reads and whose credential
    :func:`cached_identity` admits, and serves it with :meth:`answer` (which marks the
    device seen when it answers, as the route's ``identify`` does); anything else, and
    anything :meth:`answer` declines, reaches the route unchanged."""

    PATH: str

    def __init__(self, app: ASGIApp, service: BsiService) -> None:
        self.app = app
        self.service = service

    def plain(self, query: bytes) -> Asked | None:
        """What the query asks, when the route would read it so; None: leave it to the route."""
        raise NotImplementedError

    async def answer(self, identity: DeviceIdentity, asked: Asked) -> Response | None:
        """The answer; None leaves the request to the route."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.PATH:
            asked = self.plain(scope["query_string"])
            identity = (
                None if asked is None else cached_identity(self.service, Headers(scope=scope))
            )
            response = None
            if asked is not None and identity is not None:
                response = await self.answer(identity, asked)
            if response is not None:
                scope["route"] = self  # so metrics label it by its path, as a matched route
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class DeviceCatalogs(_DeviceQueries[str]):
    """``GET catalog`` from a device whose credential is known without I/O, answered
    below the framework when what the answer is made of is in memory
    (:meth:`~bsi.server.service.BsiService.cached_device_catalog`), with the route's own
    :class:`CatalogAnswers`: an agent asks for it at every check-in.

    Anything else reaches the route unchanged: a query string other than a plain
    ``platform=``, a credential not known in memory (or not admitted: the route
    renders the refusal), and a cache miss (the route reads in a worker thread).
    """

    PATH = DDM_PREFIX + CATALOG

    def __init__(self, app: ASGIApp, service: BsiService, answers: CatalogAnswers) -> None:
        super().__init__(app, service)
        self.answers = answers

    def plain(self, query: bytes) -> str | None:
        plain = _PLAIN_PLATFORM.fullmatch(query)
        return None if plain is None else plain[1].decode()

    async def answer(self, identity: DeviceIdentity, asked: str) -> Response | None:
        found = self.service.cached_device_catalog(identity, asked)
        if found is None:
            return None
        self.service.saw(identity.device_id)
        return Response(self.answers.body(asked, found), media_type=JSON)


async def wait_answer(wakeups: Wakeups, generation: int, timeout: float) -> Response:
    """The long poll's answer once the device is identified: when a generation above
    ``generation`` is announced, or after ``timeout`` s; ``check_in`` says whether
    something changed. The route and :class:`LongPolls` both answer with it."""
    now = await wakeups.wait(generation, timeout)
    return Response(json.dumps({"generation": now, "check_in": now != generation}), media_type=JSON)


def plain_wait_query(query: bytes) -> tuple[int, float] | None:
    """``(generation, timeout)`` of a long poll's query string when it is plain: each of
    ``generation`` (digits) and ``timeout`` (digits, with up to six decimals) at most once,
    in range, the route's defaults for one left out; None for anything else (the route
    reads it, or refuses it)."""
    asked: dict[bytes, bytes] = {}
    for part in query.split(b"&") if query else ():
        plain = _PLAIN_WAIT_PARAMETER.fullmatch(part)
        if plain is None or plain[1] in asked:
            return None
        asked[plain[1]] = plain[2]
    generation = asked.get(b"generation", b"0")
    if b"." in generation:
        return None
    timeout = float(asked.get(b"timeout", b"60"))
    if not 0 < timeout <= MAX_WAIT_SECONDS:
        return None
    return int(generation), timeout


_PLAIN_WAIT_PARAMETER = re.compile(rb"(generation|timeout)=([0-9]{1,18}(?:\.[0-9]{1,6})?)")


class LongPolls(_DeviceQueries[tuple[int, float]]):
    """``GET wait`` from a device whose credential is known without I/O, held below the
    framework with the route's own :func:`wait_answer`: every waiting device holds one,
    and a wake-up answers them all at once, so each costs the framework's work again.

    It takes a request only when :func:`cached_identity` admits its credential and its
    query is plain (:func:`plain_wait_query`); anything else reaches the route unchanged.
    """

    PATH = DDM_PREFIX + WAIT

    def __init__(self, app: ASGIApp, service: BsiService, wakeups: Wakeups) -> None:
        super().__init__(app, service)
        self.wakeups = wakeups

    def plain(self, query: bytes) -> tuple[int, float] | None:
        return plain_wait_query(query)

    async def answer(self, identity: DeviceIdentity, asked: tuple[int, float]) -> Response:
        self.service.saw(identity.device_id)  # when the poll starts, as the route's
        generation, timeout = asked
        return await wait_answer(self.wakeups, generation, timeout)


def ddm_router(
    service: BsiService,
    forwarding: ForwardingTrust,
    wakeups: Wakeups,
    max_body: int,
    catalog_answers: CatalogAnswers,
) -> APIRouter:
    router = APIRouter(tags=["DDM (devices)"], route_class=StrictRoute)

    def apple(method: str, path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
        """Register one of Apple's endpoints under both prefixes NanoMDM may use."""

        def register(endpoint: Endpoint) -> Endpoint:
            router.add_api_route(DDM_PREFIX + path, endpoint, methods=[method], summary=summary)
            router.add_api_route(
                SLASHLESS_PREFIX + path, endpoint, methods=[method], include_in_schema=False
            )
            return endpoint

        return register

    def bsi(method: str, path: str, summary: str) -> Callable[[Endpoint], Endpoint]:
        """Register an endpoint of bsi's own agents (not part of Apple's protocol)."""

        def register(endpoint: Endpoint) -> Endpoint:
            router.add_api_route(DDM_PREFIX + path, endpoint, methods=[method], summary=summary)
            return endpoint

        return register

    async def identify(request: Request) -> DeviceIdentity:
        credential = bearer(request)
        enrollment_id = request.headers.get("x-enrollment-id")
        if credential is not None:
            known, identity = service.cached_device_for_credential(credential)
            if not known:
                identity = await run_in_threadpool(service.device_for_credential, credential)
            identity = admit_credential(service, identity, enrollment_id)
        elif enrollment_id is not None:
            source = request.client.host if request.client else None
            forwarding.check(await request.body(), request.headers.get(HMAC_HEADER), source)
            identity = await run_in_threadpool(
                service.identify_forwarded,
                enrollment_id,
                request.headers.get("x-enrollment-type"),
                request.headers.get("x-enrollment-parentid"),
                source,
            )
            if service.admitted(identity, by_credential=False) is None:
                raise Unauthorized(REVOKED, hint=REVOKED_HINT)
        else:
            raise Unauthorized(
                "a device credential is required",
                hint="send 'Authorization: Bearer <credential>' as issued by POST /v1/enroll",
            )
        service.saw(identity.device_id)
        return identity

    async def group_view(identity: DeviceIdentity) -> GroupView:
        cached = service.cached_group_view(identity)
        if cached is not None:
            return cached
        return await run_in_threadpool(service.identity_view, identity)

    @apple("GET", TOKENS, "Sync tokens (Apple TokensResponse)")
    async def tokens(request: Request) -> Response:
        identity = await identify(request)
        view = await group_view(identity)
        etag = etag_of(view)
        if holds_current(view, request.headers.get("if-none-match")):
            return Response(status_code=304, headers={"ETag": etag})
        return Response(view.tokens_body, media_type=JSON, headers={"ETag": etag})

    @apple("GET", "/declaration-items", "Declaration items (Apple DeclarationItemsResponse)")
    async def declaration_items(request: Request) -> Response:
        identity = await identify(request)
        view = await group_view(identity)
        body = json.dumps(declaration_items_response(view.declarations))
        return Response(body, media_type=JSON)

    @apple("GET", "/declaration/{kind}/{identifier}", "One declaration")
    async def declaration(request: Request, kind: str, identifier: str) -> Response:
        identity = await identify(request)
        view = await group_view(identity)
        category = kind.lower()
        found = view.declarations.find_in_category(category, identifier)
        if found is None:
            raise NotFound(f"no {category} declaration {identifier!r} for this device")
        return Response(json.dumps(found.to_json()), media_type=JSON)

    @bsi("GET", CATALOG, "bsi agents: the supplements of one platform")
    async def catalog(request: Request, platform: str) -> Response:
        """The platform's catalogue and, under ``device``, what holds this device back
        (its rollout wave per build, its group's maintenance window), so the agent
        defers as the server does without another request; and the newest retry
        allowance's id for it (``latest_retry``), so it asks ``/retries`` only then."""
        identity = await identify(request)
        found = service.cached_device_catalog(identity, platform)
        if found is None:  # something to read first: in a worker thread
            found = await run_in_threadpool(service.device_catalog, identity, platform)
        return Response(catalog_answers.body(platform, found), media_type=JSON)

    @bsi("GET", "/retries", "bsi agents: failed supplements allowed again")
    async def retries(
        request: Request, after: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0
    ) -> Response:
        """The admin's ``allow-retry`` rows for this device (or all devices) above ``after``."""
        identity = await identify(request)
        rows = await run_in_threadpool(service.retries_after, identity.device_id, after)
        body = {"retries": [{"id": i, "platform": p, "build": b} for i, p, b in rows]}
        return Response(json.dumps(body), media_type=JSON)

    @bsi("GET", WAIT, "Long poll: answers when the device should check in")
    async def wait(
        request: Request,
        generation: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        timeout: Annotated[float, Query(gt=0, le=MAX_WAIT_SECONDS)] = 60,
    ) -> Response:
        """The counterpart of Apple's push: hold this open; check in when it answers."""
        await identify(request)
        return await wait_answer(wakeups, generation, timeout)

    @apple("PUT", STATUS, "Status report (full or partial)")
    async def status(request: Request) -> Response:
        return await accept_status(service, request, await identify(request), max_body)

    @bsi("GET", STATUS, "The device's own merged status, as a full report")
    async def own_status(request: Request) -> Response:
        identity = await identify(request)
        state = await run_in_threadpool(service.device_state, identity.device_id)
        body = state_to_report(state) if state else {"StatusItems": {}, "Errors": []}
        return Response(json.dumps(body), media_type=JSON)

    return router
