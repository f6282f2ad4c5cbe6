"""Where the server is wired together: settings, database, store, service, routes.

``create_app`` is the one place that knows every part. The embedded default
(a SQLite file and local storage in a data directory) migrates itself on
start; an external database must be migrated with ``bsi db upgrade`` first,
so several server processes never race to change one schema.
"""

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bsi import __version__, durable
from bsi.errors import InvalidInput, Unavailable
from bsi.server import decision_process
from bsi.server.admin import admin_router
from bsi.server.console import console_router
from bsi.server.ddm import (
    DDM_PREFIX,
    SLASHLESS_PREFIX,
    CatalogAnswers,
    DeviceCatalogs,
    LongPolls,
    StatusReports,
    UnchangedCheckins,
    ddm_router,
)
from bsi.server.http import (
    RETRY_AFTER_SECONDS,
    BodyLimit,
    Deadline,
    StrictRoute,
    install_error_handlers,
)
from bsi.server.metrics import RequestMetrics, metrics_router, watch_database
from bsi.server.nanomdm import DDM_ENDPOINTS, SignResponses
from bsi.server.nanomdm_webhook import webhook_router
from bsi.server.service import BsiService
from bsi.server.settings import ServerSettings as ServerSettings
from bsi.server.tuf_hosting import (
    mount_repository,
    refresh_forever,
    targets_fingerprint,
    watch_repository,
)
from bsi.server.wakeup import Wakeups
from bsi.store.database import (
    CHECKPOINT_SECONDS,
    DatabaseError,
    database_backend,
    database_cause,
    open_engine,
    require_current_schema,
    upgrade,
)
from bsi.store.protocols import Stores
from bsi.store.store import DEFAULT_GROUP, Store

log = logging.getLogger("bsi.server")

ADMIN_KEY_FILE = "admin-api-key"


def utc_now() -> datetime:
    return datetime.now(UTC)


def prepare(settings: ServerSettings, clock: Callable[[], datetime] = utc_now) -> BsiService:
    """Open (and for the embedded default, create and migrate) the database."""
    if settings.embedded:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file in its place, no permission
            raise InvalidInput(
                f"--data-dir {settings.data_dir}: {error.strerror}",
                hint="give a directory bsi may create and write (BSI_DATA_DIR)",
            ) from None
    engine = open_engine(settings.resolved_database_url())
    if settings.embedded:
        upgrade(engine)
    else:
        require_current_schema(engine)
    watch_database(engine)  # the server's statements, timed for /metrics
    store = Store(engine)
    store.ensure_group(DEFAULT_GROUP, clock())
    if settings.embedded and not store.has_api_keys():
        _bootstrap_admin_key(store, settings.data_dir, clock())
    service = BsiService(
        Stores.sharing(store),
        clock,
        cache_seconds=settings.cache_seconds,
        identity_seconds=settings.identity_seconds,
        status_burst=settings.status_burst,
        status_per_second=settings.status_per_second,
    )
    service.decide_elsewhere = functools.partial(
        decision_process.decide_in_child, settings.resolved_database_url(), settings.cache_seconds
    )
    service.decide_elsewhere_from = settings.decision_process_devices
    assert service.credential_key  # load (or create) the shared key before serving
    service.revocations.refresh()  # no revoked device is served, not even at start
    if settings.tuf_repo_dir is not None and (settings.tuf_repo_dir / "metadata").is_dir():
        service.repository_seen = targets_fingerprint(settings.tuf_repo_dir)
        service.sync_repository(settings.tuf_repo_dir)
    return service


def _bootstrap_admin_key(store: Store, data_dir: Path, now: datetime) -> None:
    """First start of the embedded default: one admin key, readable only by its owner."""
    key = store.create_api_key("bootstrap-admin", "admin", now)
    path = data_dir / ADMIN_KEY_FILE
    durable.write_atomic(path, f"{key}\n".encode(), mode=0o600)
    log.warning("created the first admin API key in %s", path)


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str


NO_FRAMEWORK_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's native OpenTelemetry spans, metrics and logs, all off (see :func:`create_app`)."""


def create_app(service: BsiService, settings: ServerSettings) -> FastAPI:
    wakeups = Wakeups(
        service.stores.generations, settings.wakeup_poll_seconds, service.changed_elsewhere
    )
    service.on_change = wakeups.bump

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await wakeups.start()
        tasks = [
            asyncio.create_task(wakeups.follow()),
            asyncio.create_task(catch_up_decisions(service)),
            asyncio.create_task(
                run_every(settings.last_seen_flush_seconds, service.flush_last_seen, "last-seen")
            ),
            asyncio.create_task(
                run_every(
                    settings.revocation_poll_seconds, service.revocations.refresh, "revocation"
                )
            ),
            asyncio.create_task(
                run_every(settings.rollout_tick_seconds, service.rollouts.tick, "rollout")
            ),
            asyncio.create_task(
                run_every(settings.webhook_seconds, service.webhooks.deliver, "webhook")
            ),
        ]
        if database_backend(settings.resolved_database_url()) == "sqlite":
            tasks.append(
                asyncio.create_task(
                    run_every(CHECKPOINT_SECONDS, service.checkpoint_database, "checkpoint")
                )
            )
        if settings.tuf_repo_dir and settings.tuf_keys_dir:
            tasks.append(
                asyncio.create_task(
                    refresh_forever(
                        settings.tuf_repo_dir, settings.tuf_keys_dir, settings.tuf_refresh_seconds
                    )
                )
            )
        repo = settings.tuf_repo_dir
        if repo is not None:

            def on_publish() -> None:
                service.sync_repository(repo)
                service.recompute_changed()

            tasks.append(
                asyncio.create_task(
                    watch_repository(
                        repo, on_publish, settings.tuf_watch_seconds, seen=service.repository_seen
                    )
                )
            )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await run_in_threadpool(service.flush_last_seen)

    app = FastAPI(
        title="bsi",
        version=__version__,
        description="Background Security Improvements: DDM endpoints for devices, "
        "enrollment, and the admin API.",
        lifespan=lifespan,
        # bsi's metrics are Prometheus's (GET /metrics). FastAPI's own OpenTelemetry
        # hook looked for configured global providers on every request (3.7 us, about
        # 3 % of an unchanged check-in), and bsi configures none.
        telemetry=NO_FRAMEWORK_TELEMETRY,
    )
    install_error_handlers(app)
    catalog_answers = CatalogAnswers()  # one encoder for the route and its fast path
    app.include_router(
        ddm_router(service, settings.forwarding, wakeups, settings.max_body_bytes, catalog_answers)
    )
    app.include_router(webhook_router(service, settings.webhook))
    app.include_router(admin_router(service, wakeups, settings.tuf_repo_dir))
    app.include_router(enroll_router(service))
    app.include_router(metrics_router(service))
    app.include_router(console_router(service))

    if settings.tuf_repo_dir is not None:
        mount_repository(app, settings.tuf_repo_dir)

    @app.get("/healthz", tags=["health"])
    async def health() -> Health:
        """Liveness: the process answers. It reads nothing, so a database outage
        does not make an orchestrator restart healthy processes."""
        return Health(status="ok", version=__version__)

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"description": "database unreachable or schema not current"}},
    )
    async def ready() -> Health:
        """Readiness: the database answers and its schema is the one this bsi needs."""
        try:
            await run_in_threadpool(service.require_current_schema)
        except DatabaseError as error:
            raise Unavailable(error.message, retry_after=RETRY_AFTER_SECONDS) from error
        return Health(status="ready", version=__version__)

    app.add_middleware(StatusReports, service=service, max_body=settings.max_body_bytes)
    app.add_middleware(Deadline, seconds=settings.request_timeout_seconds, exempt=(LongPolls.PATH,))
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        larger={"/v1/admin/": settings.max_admin_body_bytes},
    )
    app.add_middleware(UnchangedCheckins, service=service)
    app.add_middleware(DeviceCatalogs, service=service, answers=catalog_answers)
    app.add_middleware(LongPolls, service=service, wakeups=wakeups)
    app.add_middleware(RequestMetrics)  # outside the limits: their refusals are counted
    if settings.response_key is not None:
        # Outermost, so that a body-limit refusal or a 500 is signed too.
        app.add_middleware(
            SignResponses,
            key=settings.response_key,
            prefixes=[DDM_PREFIX + "/", *(f"{SLASHLESS_PREFIX}/{e}" for e in DDM_ENDPOINTS)],
        )
    return app


async def catch_up_decisions(service: BsiService) -> None:
    """:meth:`BsiService.catch_up_decisions` off the event loop as the server starts; a
    failure is logged (the next change's pass decides its devices, and the next server
    to start tries again: the decided generation stays behind until a pass completes)."""
    try:
        await asyncio.to_thread(service.catch_up_decisions)
    except Exception:
        log.exception("could not decide again the devices a change left behind")


async def run_every(seconds: float, work: Callable[[], object], what: str) -> None:
    """Run ``work`` in a thread every ``seconds``; a failure is logged
    (:class:`FailureLog`) and retried at the next beat."""
    failures = FailureLog(what, asyncio.get_running_loop().time)
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(work)
        except Exception as error:  # the database may be briefly away; keep serving
            failures.failed(error)
        else:
            failures.succeeded()


REPEATED_FAILURE_LOG_SECONDS = 60.0
"""How often a background task's failure of one kind is told again."""


class FailureLog:
    """The log of one background task's failures: an outage is told, not repeated at
    every beat (the SQLite checkpoint runs twice a second, so a database away for an
    hour logged 7,200 tracebacks).

    A failure is of a kind: its type and its database's own message (a SQLAlchemy
    error's text also holds the statement's parameters, which change at every beat).
    A kind is logged with its traceback, then not again for
    :data:`REPEATED_FAILURE_LOG_SECONDS`; after that, within the same outage, as one
    line with how often the task failed. The first success after a told failure says
    the task works again. A task that fails and works in turn (flapping) is told at
    most once per kind and window. ``clock``: seconds, monotonic.
    """

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self._what = what
        self._clock = clock
        self._told: dict[tuple[type[BaseException], str], float] = {}
        """When each kind of failure was last logged."""
        self._failures = 0
        """Failures since the last success."""
        self._outage_told = False

    def failed(self, error: Exception) -> None:
        """Call from the ``except`` block that caught ``error`` (its traceback is logged)."""
        self._failures += 1
        now = self._clock()
        kind = (type(error), str(database_cause(error)))
        told_at = self._told.get(kind)
        if told_at is not None and now - told_at < REPEATED_FAILURE_LOG_SECONDS:
            return
        self._told = {k: t for k, t in self._told.items() if now - t < REPEATED_FAILURE_LOG_SECONDS}
        self._told[kind] = now
        if told_at is not None and self._outage_told:
            log.error(
                "%s update still failing (%d times so far): %s: %s",
                self._what,
                self._failures,
                type(error).__name__,
                kind[1],
            )
        else:
            log.exception("%s update failed; will retry", self._what)
        self._outage_told = True

    def succeeded(self) -> None:
        if self._outage_told:
            log.warning("%s update works again after %d failures", self._what, self._failures)
        self._failures, self._outage_told = 0, False


class EnrollIn(BaseModel):
    token: str = Field(min_length=1, max_length=256)


def enroll_router(service: BsiService) -> APIRouter:
    router = APIRouter(tags=["enrollment"], route_class=StrictRoute)

    @router.post("/v1/enroll", status_code=201)
    async def enroll(body: EnrollIn) -> dict[str, str]:
        """Spend an enrollment token; the credential is shown once and stored only hashed."""
        device_id, credential = await run_in_threadpool(service.enroll, body.token)
        return {"device_id": device_id, "credential": credential, "ddm_url": "/v1/ddm/"}

    return router
