"""The web console at ``/``: the fleet at a glance, supplements with their patch-window
curves and rollouts (waves, health, halt reasons), CVEs, devices and their history, and
(for admin keys) pause / resume / withdraw and a rollout's resume / advance / abort.

Server-rendered HTML (Jinja2 templates shipped in this package, autoescaped),
charts as server-side SVG (:mod:`.curve`), one stylesheet inline: nothing is
loaded from anywhere else and no script runs. Every number comes from the
same service calls as the admin API (``compliance``,
``patch_windows``, ``decision_counts``, ``rollouts.status``, ``rollouts.events``), so
the console and ``/v1/admin`` cannot disagree.

Sign-in and CSRF: :mod:`.session`. A ``read-only`` key sees no write
controls, and its forged ``POST`` is refused (403) like the admin API's.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from bsi import __version__
from bsi.domain.compliance import ComplianceSummary, cve_json, supplement_json
from bsi.domain.eligibility import Outcome
from bsi.domain.events import EventKind
from bsi.domain.rollout import RolloutState
from bsi.errors import BsiError, Forbidden, InvalidInput, NotFound, Unauthorized
from bsi.server.admin.catalog import STATE_FOR_ACTION, SupplementAction
from bsi.server.admin.common import Role
from bsi.server.console.curve import patch_window_svg
from bsi.server.console.session import COOKIE, LIFETIME, check_csrf, csrf_token, open_session
from bsi.server.console.session import session_key as read_session
from bsi.server.http import status_for
from bsi.server.rollouts import Action, rollout_summary
from bsi.server.service import BsiService
from bsi.server.webhooks import event_body
from bsi.store.rollouts import EventFilter, StoredEvent
from bsi.store.store import DecisionCounts, DeviceFilter

OUTCOME_ORDER = tuple(o.value for o in Outcome)
MAX_FORM_BYTES = 16 * 1024
DEVICE_PAGE = 200
HISTORY_PAGE = 50
"""Events per page of a device's history and of a supplement's."""
ROLLOUT_ACTIONS = (Action.ADVANCE, Action.HALT, Action.RESUME, Action.ABORT)
"""In the order the console shows their buttons."""
_OPENED = frozenset({EventKind.ROLLOUT_STARTED.value, EventKind.WAVE_ADVANCED.value})

_templates = Environment(
    loader=PackageLoader("bsi.server.console", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is signed in: their key's role, and the CSRF token their forms carry."""

    role: Role
    csrf: str

    @property
    def can_write(self) -> bool:
        return self.role is Role.ADMIN


def console_router(service: BsiService) -> APIRouter:
    """The console's pages; not in the OpenAPI document (it is not an API)."""
    router = APIRouter(include_in_schema=False)

    def page(
        request: Request, name: str, viewer: Viewer | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = _templates.get_template(name).render(
            viewer=viewer, path=request.url.path, version=__version__, **context
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def signed_in(request: Request) -> Viewer:
        cookie = request.cookies.get(COOKIE)
        key = read_session(service.credential_key, cookie, service.clock())
        role = await run_in_threadpool(service.api_key_role, key)
        if role is None:
            raise Unauthorized("this API key is unknown or revoked; sign in again")
        assert cookie is not None
        return Viewer(Role(role), csrf_token(service.credential_key, cookie))

    async def signed_in_or_redirected(request: Request) -> Viewer:
        """A page's viewer; anyone else is sent to the sign-in page (303)."""
        try:
            return await signed_in(request)
        except Unauthorized:
            raise HTTPException(303, headers={"Location": "/login"}) from None

    SignedIn = Annotated[Viewer, Depends(signed_in_or_redirected)]  # noqa: N806 - a type

    def to_login(request: Request, error: BsiError) -> Response:
        response = page(request, "login.html", None, status=401, error=error.message)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- sign in and out ---------------------------------------------------

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return page(request, "login.html", None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        key = form.get("api_key", "").strip()
        role = await run_in_threadpool(service.api_key_role, key) if key else None
        if role is None:
            return page(
                request,
                "login.html",
                None,
                status=401,
                error="unknown or revoked API key" if key else "enter an API key",
            )
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            open_session(service.credential_key, key, service.clock()),
            max_age=int(LIFETIME.total_seconds()),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages ---------------------------------------------------------------

    def counts_and_compliance() -> tuple[DecisionCounts, ComplianceSummary]:
        """One read of the decision counts, for the overview's cards and its summary."""
        counts = service.decision_counts()
        return counts, service.compliance(counts)

    @router.get("/")
    async def overview(request: Request, viewer: SignedIn) -> Response:
        counts, summary = await run_in_threadpool(counts_and_compliance)
        by_reason = counts.by_decision()
        by_outcome: dict[str, int] = dict.fromkeys(OUTCOME_ORDER, 0)
        for (outcome, _), n in by_reason.items():
            # an outcome this bsi does not know is unknown, as in the compliance summary
            by_outcome[outcome if outcome in by_outcome else Outcome.UNKNOWN.value] += n
        now = service.clock()
        supplements = [supplement_json(s, now) for s in summary.supplements]
        reasons = sorted(by_reason.items(), key=lambda kv: (kv[0][0] != "unknown", -kv[1]))
        halted = await run_in_threadpool(
            service.rollouts.by_state, frozenset({RolloutState.HALTED})
        )
        return page(
            request,
            "overview.html",
            viewer,
            halted=halted,
            total=sum(by_outcome.values()),
            by_outcome=by_outcome,
            reasons=reasons,
            supplements=supplements,
        )

    @router.get("/supplements")
    async def supplements(request: Request, viewer: SignedIn) -> Response:
        return await supplements_page(request, viewer)

    async def supplements_page(
        request: Request, viewer: Viewer, status: int = 200, **context: Any
    ) -> Response:
        summary = await run_in_threadpool(service.compliance)
        now = service.clock()
        rows = [supplement_json(s, now) for s in summary.supplements]
        curves = await run_in_threadpool(patch_window_curves, summary)
        stored = await run_in_threadpool(service.rollouts.by_state)
        rollouts = {(r.platform, r.rollout.build): r.rollout for r in stored}
        return page(
            request,
            "supplements.html",
            viewer,
            status=status,
            rows=rows,
            curves=curves,
            rollouts=rollouts,
            **context,
        )

    def patch_window_curves(summary: ComplianceSummary) -> dict[str, Markup]:
        """Each supplement's patch-window curve (SVG), by build."""
        windows = service.patch_windows()
        curves = {}
        for entry in summary.supplements:
            build = str(entry.supplement.build)
            durations = [w.duration for w in windows.get(build, (None, []))[1]]
            curves[build] = Markup(patch_window_svg(durations, entry.total))
        return curves

    def supplement_detail(platform: str, build: str) -> dict[str, Any]:
        """One supplement's card, curve, rollout (None: it has none) and events, newest
        first; :class:`NotFound` when the catalogue has no such supplement."""
        summary = service.compliance()
        found = [
            s
            for s in summary.supplements
            if s.supplement.platform == platform and str(s.supplement.build) == build
        ]
        if not found:
            raise NotFound(f"no supplement {platform}/{build} in the catalogue")
        try:
            rollout: dict[str, Any] | None = service.rollouts.status(platform, build)
        except NotFound:
            rollout = None
        history = service.rollouts.events(
            EventFilter(build=build, newest_first=True, limit=HISTORY_PAGE)
        )
        if rollout is not None:
            names = [w["name"] for w in rollout["waves"]]  # unique in a plan
            rollout["current"] = names.index(rollout["current_wave"])
            rollout["opened"] = wave_openings(
                service.rollouts.events(EventFilter(kinds=_OPENED, build=build, limit=1000))
            )
        return {
            "row": supplement_json(found[0], service.clock()),
            "curve": patch_window_curves(summary)[build],
            "rollout": rollout,
            "events": [event_body(e) for e in history],
        }

    async def supplement_page(
        request: Request,
        viewer: Viewer,
        platform: str,
        build: str,
        status: int = 200,
        **context: Any,
    ) -> Response:
        try:
            detail = await run_in_threadpool(supplement_detail, platform, build)
        except NotFound as error:
            return page(request, "error.html", viewer, status=404, error=error.message)
        return page(
            request,
            "supplement.html",
            viewer,
            status=status,
            actions=ROLLOUT_ACTIONS,
            **detail,
            **context,
        )

    @router.get("/supplements/{platform}/{build}")
    async def supplement(request: Request, viewer: SignedIn, platform: str, build: str) -> Response:
        return await supplement_page(request, viewer, platform, build)

    async def writer(request: Request, viewer: Viewer) -> str:
        """The actor of a console write: the signed-in key's name (``GET
        /v1/admin/events``). :class:`Forbidden` without this session's CSRF token, or for
        a read-only key."""
        form = await _form(request)
        cookie = request.cookies.get(COOKIE, "")
        if not check_csrf(service.credential_key, cookie, form.get("csrf")):
            raise Forbidden(
                "this form is not one this console served (CSRF token missing or wrong)",
                hint="reload the page and try again",
            )
        if not viewer.can_write:
            raise Forbidden("this API key is read-only")
        key = read_session(service.credential_key, cookie, service.clock())
        return await run_in_threadpool(service.rollouts.actor, key)

    async def console_write(
        request: Request, change: Callable[[str], str], shown: Callable[..., Awaitable[Response]]
    ) -> Response:
        """A form's write: sign-in, CSRF token and role checked (:func:`writer`), then
        ``change(actor)`` (its notice), decisions recomputed, and the page
        ``shown(viewer, **context)`` with the notice, or with the refusal's message, hint
        and status (nothing changed)."""
        try:
            viewer = await signed_in(request)
        except Unauthorized as error:
            return to_login(request, error)
        try:
            actor = await writer(request, viewer)
            notice = await run_in_threadpool(change, actor)
            await run_in_threadpool(service.recompute_changed)
        except BsiError as error:
            return await shown(
                viewer, status=status_for(error), error=error.message, hint=error.hint
            )
        return await shown(viewer, notice=notice)

    @router.post("/supplements/{platform}/{build}/rollout/{action}")
    async def steer_rollout(request: Request, platform: str, build: str, action: str) -> Response:
        def change(actor: str) -> str:
            if action not in ROLLOUT_ACTIONS:
                raise NotFound(f"no rollout action {action!r}", hint=", ".join(ROLLOUT_ACTIONS))
            now = rollout_summary(service.rollouts.act(platform, build, action, actor))
            return (
                f"rollout of {platform} {build}: {action} done; {now['state']}, "
                f"wave {now['current_wave']!r}"
            )

        async def shown(viewer: Viewer, **context: Any) -> Response:
            return await supplement_page(request, viewer, platform, build, **context)

        return await console_write(request, change, shown)

    @router.post("/supplements/{platform}/{build}/{action}")
    async def steer(request: Request, platform: str, build: str, action: str) -> Response:
        def change(actor: str) -> str:
            try:
                state = STATE_FOR_ACTION[SupplementAction(action)]
            except ValueError:
                raise NotFound(
                    f"no supplement action {action!r}", hint="pause, resume, withdraw"
                ) from None
            service.set_supplement_state(platform, build, state, actor)
            return f"{platform} {build} is now {state.value}"

        async def shown(viewer: Viewer, **context: Any) -> Response:
            return await supplements_page(request, viewer, **context)

        return await console_write(request, change, shown)

    @router.get("/cves")
    async def cves(request: Request, viewer: SignedIn) -> Response:
        summary = await run_in_threadpool(service.compliance)
        rows = [{**cve_json(e), "fixes": sorted(e.fixes)} for e in summary.cves]
        return page(request, "cves.html", viewer, rows=rows)

    @router.get("/devices")
    async def devices(
        request: Request,
        viewer: SignedIn,
        outcome: str | None = None,
        reason: str | None = None,
        target: str | None = None,
    ) -> Response:
        """Devices, filtered by decision outcome, reason and ``target`` (the supplement build
        the decision is about: a CVE's devices are those of the supplements that fix it)."""
        filters = DeviceFilter(
            decision_outcome=outcome or None,
            decision_reason=reason or None,
            decision_supplement_build=target or None,
        )
        rows = await run_in_threadpool(
            lambda: service.list_devices(filters, after=None, limit=DEVICE_PAGE)
        )
        return page(
            request, "devices.html", viewer, rows=rows, outcome=outcome, reason=reason,
            target=target, limit=DEVICE_PAGE,
        )  # fmt: skip

    @router.get("/devices/{device_id}")
    async def device(
        request: Request, viewer: SignedIn, device_id: str, before: int | None = None
    ) -> Response:
        """A device's facts, decision, status items and history (its events, newest
        first, :data:`HISTORY_PAGE` a page; ``before`` an event id: the page older than it)."""
        where = EventFilter(
            device_id=device_id, newest_first=True, before=before, limit=HISTORY_PAGE
        )
        try:
            record, items, detail = await run_in_threadpool(service.device, device_id)
        except NotFound as error:
            return page(request, "error.html", viewer, status=404, error=error.message)
        history = await run_in_threadpool(service.rollouts.events, where)
        return page(
            request, "device.html", viewer, record=record, items=sorted(items.items()),
            detail=detail, events=[event_body(e) for e in history], before=before,
            older=history[-1].id if len(history) == HISTORY_PAGE else None,
        )  # fmt: skip

    return router


def device_link(device_id: str) -> str:
    return "/devices/" + quote(device_id, safe="")


def supplement_link(platform: str, build: str) -> str:
    return f"/supplements/{quote(platform, safe='')}/{quote(build, safe='')}"


def wave_openings(opened: list[StoredEvent]) -> dict[int, str]:
    """When each wave first opened, by index, from a rollout's ``rollout-started`` (wave
    0) and ``wave-advanced`` events (``detail.wave``: the wave it opened)."""
    found: dict[int, str] = {}
    for stored in opened:
        event = stored.event
        detail = event.detail or {}
        wave = 0 if event.kind == EventKind.ROLLOUT_STARTED else detail.get("wave")
        if isinstance(wave, int):
            found.setdefault(wave, event.at.isoformat())
    return found


def when(iso: str | None) -> str:
    """An ISO 8601 instant as the console shows times: ``2026-03-20 13:00 UTC``."""
    if not iso:
        return "—"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


_templates.globals["device_link"] = device_link
_templates.globals["supplement_link"] = supplement_link
_templates.filters["when"] = when


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the console's forms), first values."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidInput("form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidInput(f"unreadable form: {error}") from None
    return {name: values[0] for name, values in fields.items()}
