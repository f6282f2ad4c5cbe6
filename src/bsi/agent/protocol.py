"""The device side of the DDM conversation, without I/O: one module, any transport.

Every request a bsi device sends — enrollment, the sync-token check-in,
declaration items and declarations, the platform's catalogue, retry
allowances, the wake-up long poll, status reports — is built here, and every
answer is read here, including the failure mapping. A transport only moves a
:class:`Request` to the server and hands back what came back as a
:class:`Reply`; the agent's transport is httpx, synchronous
(:class:`bsi.agent.ddm_client.DdmClient`); the simulator's is its own
keep-alive HTTP/1.1 client, asynchronous (:mod:`bsi.sim.protocol`). This is
the shape of python-tuf's ``FetcherInterface`` and of h11: the protocol is
written once and tested without a network.

A conversation step is an :data:`Exchange`: a generator that yields the
requests to send, is sent each one's reply, and returns the result. Steps
compose with ``yield from``, so a whole agent cycle can itself be an
exchange that any transport drives (:func:`drive`).

The rules kept here:

* **304 rule** (DESIGN "a check-in where nothing changed must cost one token
  comparison"): ``GET /v1/ddm/tokens`` carries the last ``DeclarationsToken``
  in ``If-None-Match`` (RFC 9110 13.1.2); a 304 means the declarations did
  not change and has no body.
* **Failure mapping**, into :mod:`bsi.errors`: no answer, a 5xx or an
  unreadable body is :class:`~bsi.errors.ServerUnavailable` (the daemon backs
  off and retries); 401 is :class:`~bsi.errors.Unauthorized`; any other 4xx
  is :class:`~bsi.errors.ServerRefused` carrying the server's ``message``.
* **Server clock**: each reply's ``Date`` header (RFC 9110 6.6.1, 1 s
  resolution) is kept as :attr:`Conversation.server_date`, so the agent can
  decide at the server's time when its own clock is off.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

from bsi.domain.catalog import Catalog
from bsi.domain.declarations import Declaration, validate_declaration
from bsi.domain.rollout import DeviceHolds, read_holds
from bsi.errors import (
    BsiError,
    FeedError,
    InvalidInput,
    ServerRefused,
    ServerUnavailable,
    Unauthorized,
)
from bsi.feeds import parse_bsi_catalog
from bsi.feeds.bsi_catalog import LATEST_RETRY
from bsi.strict import read_json as strict_json

T = TypeVar("T")

ENROLL_PATH = "/v1/enroll"
TOKENS_PATH = "/v1/ddm/tokens"
DECLARATION_ITEMS_PATH = "/v1/ddm/declaration-items"
DECLARATION_PATH = "/v1/ddm/declaration/configuration/{identifier}"
CATALOG_PATH = "/v1/ddm/catalog"
WAIT_PATH = "/v1/ddm/wait"
RETRIES_PATH = "/v1/ddm/retries"
STATUS_PATH = "/v1/ddm/status"

WAIT_GRACE_SECONDS = 30.0
"""How much longer than the long poll's own timeout a device waits for its answer."""
MIN_WAIT_SECONDS = 0.001
"""The shortest long poll asked for (the server refuses a timeout of 0)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, as any transport sends it.

    ``path`` is relative to the server's base URL; ``params`` the query;
    ``json`` the body (``None``: no body); ``timeout`` in seconds, ``None``
    for the transport's default.
    """

    method: str
    path: str
    params: Mapping[str, str | int | float] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    timeout: float | None = None

    def describe(self) -> str:
        return f"{self.method} {self.path}"


class Reply(Protocol):
    """What a transport got back: status code, headers (``get`` by lower-case name), body."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


Exchange = Generator[Request, Reply, T]
"""A conversation step: yields requests, is sent their replies, returns a ``T``."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """The identity ``POST /v1/enroll`` issues: the device id and its bearer credential."""

    device_id: str
    credential: str


@dataclass(frozen=True, slots=True)
class DeviceCatalog:
    """``GET /v1/ddm/catalog`` read: the platform's catalogue, what holds this device
    back, and the newest retry allowance's id for it (``None``: a server that does not
    say, so the agent asks :data:`RETRIES_PATH` every cycle as before)."""

    catalog: Catalog
    holds: DeviceHolds
    latest_retry: int | None


def unreachable(base_url: str, request: Request, error: BaseException) -> ServerUnavailable:
    """The error for a request that got no complete answer (refused, reset, timed out)."""
    return ServerUnavailable(f"{request.describe()}: cannot reach {base_url}: {error}")


def check(request: Request, reply: Reply) -> Reply:
    """``reply`` when it is a success (2xx, or 304); else the error it maps to."""
    status = reply.status
    if status >= 500:
        raise ServerUnavailable(f"{request.describe()}: server error {status}")
    if status == 401:
        raise Unauthorized(f"{request.describe()}: {_message(reply)}")
    if status >= 400:
        raise ServerRefused(f"{request.describe()}: {_message(reply)}")
    return reply


def read_json(request: Request, reply: Reply) -> Any:
    """The reply's JSON body, read by :mod:`bsi.strict`'s rules; :class:`ServerUnavailable`
    when it is not (strict) JSON."""
    return strict_json(
        reply.body, source=f"{request.describe()}: the server's answer", error=ServerUnavailable
    )


def _message(reply: Reply) -> str:
    """The server's own explanation of a refusal (its ``message``), or the start of the body."""
    try:
        body = strict_json(reply.body, source="")
    except BsiError:
        return reply.body.decode("utf-8", errors="replace")[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)


@contextlib.contextmanager
def _reading(request: Request) -> Iterator[None]:
    """Turn a body of the wrong shape into :class:`ServerUnavailable` naming the request."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ServerUnavailable(
            f"{request.describe()}: the server's answer is not what the DDM protocol says "
            f"({type(error).__name__}: {error})"
        ) from None


def server_date(reply: Reply) -> datetime | None:
    """The reply's ``Date`` header (RFC 9110 6.6.1), or ``None`` when absent or unreadable."""
    with contextlib.suppress(TypeError, ValueError):
        return parsedate_to_datetime(reply.headers.get("date", ""))
    return None


class CatalogCache:
    """Parsed catalogues by response body: devices fetching the same bytes parse them once.

    Same bytes, same (immutable) :class:`~bsi.domain.catalog.Catalog`, so
    every decision is unchanged; a simulated fleet of thousands shares one
    parse. Bounded (least recently used first out).
    """

    def __init__(self, size: int = 16) -> None:
        self._parsed: OrderedDict[bytes, Catalog] = OrderedDict()
        self._size = size

    def parse(self, body: bytes, source: str) -> Catalog:
        found = self._parsed.get(body)
        if found is None:
            found = parse_bsi_catalog(
                strict_json(body, source=source, error=FeedError), source=source
            )
            self._parsed[body] = found
            if len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(body)
        return found


CATALOGS = CatalogCache()


class Conversation:
    """One device's DDM conversation with one server; builds requests, reads replies.

    ``base_url`` only names the server in messages (the transport owns the
    connection); ``credential`` is the bearer credential issued at
    enrollment (``None`` before it).
    """

    def __init__(
        self,
        base_url: str,
        credential: str | None = None,
        *,
        catalogs: CatalogCache = CATALOGS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {credential}"} if credential else {}
        self._catalogs = catalogs
        self.server_date: datetime | None = None
        """The server's clock at its last reply (``Date``; 1 s resolution)."""

    def _ask(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Exchange[tuple[Request, Reply]]:
        request = Request(method, path, params, {**self._auth, **(headers or {})}, body, timeout)
        reply = yield request
        date = server_date(reply)
        if date is not None:
            self.server_date = date
        return request, check(request, reply)

    def _ask_json(self, method: str, path: str, **kwargs: Any) -> Exchange[tuple[Request, Any]]:
        request, reply = yield from self._ask(method, path, **kwargs)
        return request, read_json(request, reply)

    def enroll(self, token: str) -> Exchange[Enrollment]:
        """Spend an enrollment token (``POST /v1/enroll``) for an identity."""
        request, body = yield from self._ask_json("POST", ENROLL_PATH, body={"token": token})
        with _reading(request):
            return Enrollment(str(body["device_id"]), str(body["credential"]))

    def declarations_token(self, known: str | None) -> Exchange[str | None]:
        """The current ``DeclarationsToken``, or ``None`` when it is still ``known`` (a 304)."""
        headers = {"If-None-Match": known} if known else {}
        request, reply = yield from self._ask("GET", TOKENS_PATH, headers=headers)
        if reply.status == 304:
            return None
        body = read_json(request, reply)
        with _reading(request):
            return str(body["SyncTokens"]["DeclarationsToken"])

    def declarations(self) -> Exchange[list[Declaration]]:
        """Every configuration the server serves this device, each validated against
        Apple's schema (:class:`~bsi.errors.InvalidDeclaration` when one breaks it)."""
        request, items = yield from self._ask_json("GET", DECLARATION_ITEMS_PATH)
        with _reading(request):
            identifiers = [str(i["Identifier"]) for i in items["Declarations"]["Configurations"]]
        found = []
        for identifier in identifiers:
            path = DECLARATION_PATH.format(identifier=identifier)
            _, body = yield from self._ask_json("GET", path)
            found.append(validate_declaration(body))
        return found

    def catalog(self, platform: str) -> Exchange[Catalog]:
        """The server's catalogue for ``platform`` (``GET /v1/ddm/catalog``), parsed strictly."""
        found = yield from self.device_catalog(platform)
        return found.catalog

    def device_catalog(self, platform: str) -> Exchange[DeviceCatalog]:
        """The catalogue for ``platform``, what holds this device back (the response's
        ``device`` section: its rollout wave per build and its group's maintenance window;
        see :class:`bsi.domain.rollout.DeviceHolds`) and the newest retry allowance's id
        (:data:`LATEST_RETRY`), in the one request."""
        request, reply = yield from self._ask("GET", CATALOG_PATH, params={"platform": platform})
        document = read_json(request, reply)
        catalog = self._catalogs.parse(reply.body, f"{self.base_url} catalogue")
        section = document.get("device") if isinstance(document, dict) else None
        latest = document.get(LATEST_RETRY) if isinstance(document, dict) else None
        if latest is not None and (type(latest) is not int or latest < 0):
            raise FeedError(
                f"{self.base_url} catalogue: {LATEST_RETRY} is {latest!r}, not an allowance id"
            )
        try:
            return DeviceCatalog(catalog, read_holds(section), latest)
        except InvalidInput as error:
            raise FeedError(
                f"{self.base_url} catalogue: {error.message}", hint=error.hint
            ) from None

    def wait(self, generation: int, timeout: float) -> Exchange[tuple[int, bool]]:
        """Hold the wake-up long poll; (new generation, whether to check in now).

        ``timeout`` is in seconds (rounded to milliseconds); the transport
        waits :data:`WAIT_GRACE_SECONDS` longer for the answer.
        """
        request, body = yield from self._ask_json(
            "GET",
            WAIT_PATH,
            params={"generation": generation, "timeout": max(round(timeout, 3), MIN_WAIT_SECONDS)},
            timeout=timeout + WAIT_GRACE_SECONDS,
        )
        with _reading(request):
            return int(body["generation"]), bool(body["check_in"])

    def retries(self, after: int) -> Exchange[list[tuple[int, str]]]:
        """``(id, supplemental build)`` of each retry the server allowed since id ``after``.

        An administrator allows a failed or removed supplement again
        (``POST /v1/admin/supplements/{platform}/{build}/allow-retry``), for
        every device or one; ids only grow, so the agent keeps the highest
        one it has seen.
        """
        request, body = yield from self._ask_json("GET", RETRIES_PATH, params={"after": after})
        with _reading(request):
            return [(int(item["id"]), str(item["build"])) for item in body["retries"]]

    def report(self, report: Mapping[str, Any]) -> Exchange[None]:
        """Send a DDM status report (``PUT /v1/ddm/status``)."""
        yield from self._ask("PUT", STATUS_PATH, body=report)


def drive(exchange: Exchange[T], send: Callable[[Request], Reply]) -> T:
    """Run ``exchange`` to its result over a synchronous transport ``send``.

    ``send`` raises :class:`~bsi.errors.ServerUnavailable` (see
    :func:`unreachable`) when a request gets no answer; that error is raised
    inside the exchange, at the ``yield`` that sent the request, exactly as
    if the exchange had called the transport itself.
    """
    try:
        request = next(exchange)
        while True:
            try:
                reply = send(request)
            except BsiError as error:
                request = exchange.throw(error)
            else:
                request = exchange.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


async def drive_async(exchange: Exchange[T], send: Callable[[Request], Awaitable[Reply]]) -> T:
    """:func:`drive` over an asynchronous transport (the simulator's)."""
    try:
        request = next(exchange)
        while True:
            try:
                reply = await send(request)
            except BsiError as error:
                request = exchange.throw(error)
            else:
                request = exchange.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
