"""Admin routes for rollouts, maintenance windows and the event history.

Same keys as the rest of the admin API (:class:`~bsi.server.admin.common.Access`);
the admin key's name is the actor of the events its changes cause. Bad input (a
plan or window :mod:`bsi.domain.rollout` refuses) is a 422 naming what is wrong,
and changes nothing.
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from bsi.domain.ddm import ENROLLMENT_ID_MAX
from bsi.domain.events import EventKind
from bsi.domain.rollout import RolloutState
from bsi.errors import InvalidInput, InvalidPolicy
from bsi.server.admin.common import Access, Role, recompute_later
from bsi.server.http import json_body
from bsi.server.rollouts import Action, rollout_summary
from bsi.server.service import BsiService
from bsi.server.webhooks import event_body, shown
from bsi.store.rollouts import MAX_EVENTS_PAGE, EventFilter
from bsi.strict import MAX_INT32


def rollout_routes(router: APIRouter, service: BsiService, access: Access) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    rollouts = service.rollouts
    Reader = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one
    Actor = Annotated[str, Depends(access.actor)]  # noqa: N806

    # -- rollouts ----------------------------------------------------------------

    @router.put(
        "/supplements/{platform}/{build}/rollout",
        status_code=201,
        summary="Start a supplement's rollout with a plan (waves, halt rule)",
    )
    async def start_rollout(
        platform: str, build: str, request: Request, tasks: BackgroundTasks, actor: Actor
    ) -> dict[str, Any]:
        document = await json_body(request)
        await run_in_threadpool(rollouts.start, platform, build, document, actor)
        recompute_later(service, tasks)
        return await run_in_threadpool(rollouts.status, platform, build)

    @router.get("/rollouts", summary="Every rollout: state and wave, newest first")
    async def list_rollouts(
        _: Reader, state: Annotated[list[RolloutState] | None, Query(max_length=8)] = None
    ) -> list[dict[str, Any]]:
        """``state`` (repeatable: running, halted, completed, aborted) filters. Each
        item as ``GET .../rollout`` has it, without the waves' device counts (ask that
        for one rollout)."""
        chosen = frozenset(state) if state else None
        found = await run_in_threadpool(rollouts.by_state, chosen)
        return [rollout_summary(s) for s in reversed(found)]

    @router.get("/supplements/{platform}/{build}/rollout", summary="A rollout's waves and health")
    async def rollout_status(platform: str, build: str, _: Reader) -> dict[str, Any]:
        return await run_in_threadpool(rollouts.status, platform, build)

    @router.post(
        "/supplements/{platform}/{build}/rollout/{action}",
        summary="halt (a running rollout, by hand), resume (a halted rollout), advance "
        "(open the next wave now), abort (withdraw the supplement)",
    )
    async def steer_rollout(
        platform: str, build: str, action: str, tasks: BackgroundTasks, actor: Actor
    ) -> dict[str, Any]:
        if action not in Action.ALL:
            raise InvalidPolicy(f"{action!r} is not a rollout action", hint=", ".join(Action.ALL))
        await run_in_threadpool(rollouts.act, platform, build, action, actor)
        recompute_later(service, tasks)
        return await run_in_threadpool(rollouts.status, platform, build)

    @router.put("/rollout-plans/{platform}", summary="A platform's default plan")
    async def set_default_plan(platform: str, request: Request, actor: Actor) -> dict[str, Any]:
        document = await json_body(request)
        await run_in_threadpool(rollouts.set_default, platform, document, actor)
        return await run_in_threadpool(rollouts.default, platform)

    @router.get("/rollout-plans/{platform}")
    async def default_plan(platform: str, _: Reader) -> dict[str, Any]:
        return await run_in_threadpool(rollouts.default, platform)

    @router.delete("/rollout-plans/{platform}", status_code=204)
    async def delete_default_plan(platform: str, actor: Actor) -> None:
        await run_in_threadpool(rollouts.set_default, platform, None, actor)

    # -- maintenance windows ----------------------------------------------------------

    @router.put("/groups/{group}/maintenance-window", summary="When a group's devices activate")
    async def set_window(
        group: str, request: Request, tasks: BackgroundTasks, actor: Actor
    ) -> dict[str, Any]:
        document = await json_body(request)
        await run_in_threadpool(rollouts.set_window, group, document, actor)
        recompute_later(service, tasks)
        return await run_in_threadpool(rollouts.window, group)

    @router.get("/groups/{group}/maintenance-window")
    async def window(group: str, _: Reader) -> dict[str, Any]:
        return await run_in_threadpool(rollouts.window, group)

    @router.delete("/groups/{group}/maintenance-window", status_code=204)
    async def delete_window(group: str, tasks: BackgroundTasks, actor: Actor) -> None:
        await run_in_threadpool(rollouts.set_window, group, None, actor)
        recompute_later(service, tasks)

    # -- events -------------------------------------------------------------------

    @router.get("/events", summary="The event history, oldest first, paged by id")
    async def events(
        _: Reader,
        kind: Annotated[list[str] | None, Query(max_length=32)] = None,
        device: Annotated[str | None, Query(max_length=ENROLLMENT_ID_MAX)] = None,
        supplement: Annotated[str | None, Query(max_length=16)] = None,
        since: datetime | None = None,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
        newest_first: bool = False,
        before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    ) -> dict[str, Any]:
        """``kind`` (repeatable), ``device``, ``supplement`` (a build) and ``since`` (an
        ISO 8601 instant with its offset) filter; ``next`` is the ``after`` of the next
        page, null on the last. With ``newest_first=true`` the newest come first and
        ``next`` is the ``before`` of the next (older) page."""
        if before is not None and not newest_first:
            raise InvalidInput(
                "before: pages the newest-first order only", hint="add newest_first=true"
            )
        known = {k.value for k in EventKind}
        unknown = sorted(set(kind or ()) - known)
        if unknown:
            raise InvalidInput(
                f"kind: no event kind {unknown[0]!r}", hint="known: " + ", ".join(sorted(known))
            )
        if since is not None and since.tzinfo is None:
            raise InvalidInput(
                f"since: {since.isoformat()} has no UTC offset",
                hint="e.g. 2026-11-30T04:00:00Z",
            )
        where = EventFilter(
            frozenset(kind or ()), device, supplement, since, after, limit, newest_first, before
        )
        found = await run_in_threadpool(rollouts.events, where)
        return {
            "events": [event_body(e) for e in found],
            "next": found[-1].id if len(found) == limit else None,
        }

    # -- webhooks ----------------------------------------------------------------

    @router.post("/webhooks", status_code=201, summary="POST signed events of some kinds to a URL")
    async def add_webhook(request: Request, actor: Actor) -> dict[str, Any]:
        """Body ``{"url", "secret", "kinds": [...]}``; events from now on are sent."""
        document = await json_body(request)
        hook = await run_in_threadpool(service.webhooks.add, document, actor)
        return shown([hook])[0]

    @router.get("/webhooks")
    async def list_webhooks(_: Reader) -> list[dict[str, Any]]:
        return shown(await run_in_threadpool(service.webhooks.list))

    @router.delete("/webhooks/{webhook_id}", status_code=204)
    async def remove_webhook(
        webhook_id: Annotated[int, Path(ge=1, le=MAX_INT32)], _: Actor
    ) -> None:
        await run_in_threadpool(service.webhooks.remove, webhook_id)
