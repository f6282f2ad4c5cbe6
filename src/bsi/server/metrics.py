"""``GET /metrics``: the server in Prometheus' text format (``prometheus_client``).

Protected like the admin API: any API key (a ``read-only`` one is enough) as
``Authorization: Bearer``; Prometheus sends it with ``authorization:
{credentials_file: ...}`` in its scrape config. One listen address keeps one
TLS and firewall story; a scrape without a key gets 401.

What is counted where:

- per request (:class:`RequestMetrics`, an ASGI middleware, so no route needs
  to know): ``bsi_http_requests_total`` and ``bsi_http_request_duration_seconds``
  by route template, method and status; ``bsi_checkins_total{result}`` for
  ``GET /v1/ddm/tokens`` (``304`` nothing changed, ``200`` new tokens,
  ``error`` anything else); ``bsi_status_reports_total{result}`` for ``PUT
  /v1/ddm/status`` (``accepted`` / ``refused``); ``bsi_long_poll_waiters``,
  devices waiting on ``/v1/ddm/wait`` now;
- per database statement (:func:`watch_database`, SQLAlchemy cursor events):
  ``bsi_database_query_duration_seconds``;
- at scrape time, from the database (:class:`FleetCollector`), so every worker
  answers the same: ``bsi_devices{outcome,reason}`` (never-reported devices
  are ``unknown``/``not-reported``; decommissioned ones are not counted),
  ``bsi_containers{outcome,reason}`` (the running containers of container
  hosts, each with its own decision; those of an unknown host are
  ``unknown``), ``bsi_supplements{state}``, ``bsi_rollouts{state}`` and
  ``bsi_rollout_waves{state}`` (``passed``, ``open``, ``waiting``, ``halted``).

Several workers (``bsi serve --workers N``): ``bsi serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before any worker starts;
each worker writes its counters there and a scrape, answered by any worker,
sums them (``prometheus_client.multiprocess``). Waiters are summed over live
workers only (``livesum``).
"""

import os
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bsi.domain.rollout import RolloutState, WaveState
from bsi.server.admin.common import Access, Role
from bsi.server.service import BsiService

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/metrics"
CHECKIN_PATH = "/v1/ddm/tokens"
STATUS_PATH = "/v1/ddm/status"
WAIT_PATH = "/v1/ddm/wait"

REQUESTS = Counter("bsi_http_requests", "HTTP requests answered", ("route", "method", "status"))
LATENCY = Histogram(
    "bsi_http_request_duration_seconds",
    "Time to answer an HTTP request (long polls included: they wait on purpose)",
    ("route", "method"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CHECKINS = Counter(
    "bsi_checkins", "Device check-ins (GET tokens): 304 unchanged, 200 new, error", ("result",)
)
STATUS_REPORTS = Counter("bsi_status_reports", "DDM status reports", ("result",))
WAITERS = Gauge(
    "bsi_long_poll_waiters", "Devices waiting on the wake-up long poll", multiprocess_mode="livesum"
)
DATABASE = Histogram(
    "bsi_database_query_duration_seconds",
    "Time of one database statement",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)


def checkin_result(status: int) -> str:
    return "304" if status == 304 else "200" if status == 200 else "error"


class RequestMetrics:
    """Counts and times every request; the route label is the matched template
    (``/v1/admin/devices/{device_id}``), never a raw path, so labels stay few.

    A request is counted just before its last byte is sent, so a scrape made once
    the client has its answer counts it (with ``--workers``, the scrape may reach
    another process); one that ends without an answer is counted as it ends.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        status = 500
        started = time.perf_counter()
        counted = False

        def count() -> None:
            nonlocal counted
            if counted:
                return
            counted = True
            template = route_template(scope)
            REQUESTS.labels(template, method, str(status)).inc()
            LATENCY.labels(template, method).observe(time.perf_counter() - started)
            if path == CHECKIN_PATH and method == "GET":
                CHECKINS.labels(checkin_result(status)).inc()
            elif path == STATUS_PATH and method == "PUT":
                STATUS_REPORTS.labels("accepted" if status < 300 else "refused").inc()

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                count()
            await send(message)

        waiting = path == WAIT_PATH
        if waiting:
            WAITERS.inc()
        try:
            await self.app(scope, receive, sent)
        finally:
            if waiting:
                WAITERS.dec()
            count()


def route_template(scope: Scope) -> str:
    """The request's path with each path parameter put back as ``{name}``; ``unmatched``
    when no route took it (so a scanner's paths never become labels)."""
    if scope.get("route") is None:
        return "unmatched"
    values = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    path: str = scope["path"]
    return "/".join(f"{{{values[part]}}}" if part in values else part for part in path.split("/"))


def watch_database(engine: Engine) -> None:
    """Time every statement ``engine`` runs into :data:`DATABASE`."""

    @event.listens_for(engine, "before_cursor_execute")
    def before(_conn: Any, _cursor: Any, _sql: Any, _params: Any, context: Any, _many: Any) -> None:
        context._bsi_started = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def after(_conn: Any, _cursor: Any, _sql: Any, _params: Any, context: Any, _many: Any) -> None:
        started = getattr(context, "_bsi_started", None)
        if started is not None:
            DATABASE.observe(time.perf_counter() - started)


class FleetCollector(Collector):
    """Devices and hosts' containers by decision, supplements by state, rollouts and their
    waves by state, read from the database at scrape time."""

    def __init__(self, service: BsiService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        devices = GaugeMetricFamily(
            "bsi_devices", "Devices by decision outcome and reason", labels=("outcome", "reason")
        )
        counts = self.service.decision_counts()
        for (outcome, reason), n in sorted(counts.by_decision().items()):
            devices.add_metric((outcome, reason), n)
        yield devices
        containers = GaugeMetricFamily(
            "bsi_containers",
            "Running containers of Docker and Podman hosts by their decision outcome and reason",
            labels=("outcome", "reason"),
        )
        for (outcome, reason), n in sorted(counts.by_decision(containers=True).items()):
            containers.add_metric((outcome, reason), n)
        yield containers
        supplements = GaugeMetricFamily(
            "bsi_supplements", "Supplements by state", labels=("state",)
        )
        by_state: dict[str, int] = {}
        now = self.service.clock()
        for supplement in self.service.catalog().supplements:
            state = supplement.state_at(now).value
            by_state[state] = by_state.get(state, 0) + 1
        for state, n in sorted(by_state.items()):
            supplements.add_metric((state,), n)
        yield supplements
        yield from self._rollouts()

    def _rollouts(self) -> Iterator[GaugeMetricFamily]:
        """Rollouts by state and their waves by state (every state listed, 0 when none)."""
        rollouts = {state.value: 0 for state in RolloutState}
        waves = {state.value: 0 for state in WaveState}
        for stored in self.service.rollouts.by_state():
            rollout = stored.rollout
            rollouts[rollout.state.value] += 1
            for index in range(len(rollout.plan.effective_waves)):
                waves[rollout.wave_state(index).value] += 1
        for name, help_text, counts in (
            ("bsi_rollouts", "Supplement rollouts by state", rollouts),
            ("bsi_rollout_waves", "Rollout waves by state", waves),
        ):
            family = GaugeMetricFamily(name, help_text, labels=("state",))
            for state, n in sorted(counts.items()):
                family.add_metric((state,), n)
            yield family


def exposition(service: BsiService) -> tuple[bytes, str]:
    """The scrape's body and content type: this process's (or every worker's) metrics
    and the fleet's gauges."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    registry.register(FleetCollector(service))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_router(service: BsiService) -> APIRouter:
    """``GET /metrics`` for any API key (see the module docstring for why a key)."""
    router = APIRouter(tags=["health"])
    access = Access(service)

    @router.get(
        METRICS_PATH,
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        summary="Prometheus metrics (any API key)",
    )
    async def metrics(_: Annotated[Role, Depends(access.read)]) -> Response:
        body, kind = await run_in_threadpool(exposition, service)
        return Response(body, media_type=kind)

    return router
