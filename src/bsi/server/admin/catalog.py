"""Admin routes for the catalogue: imports, the hosted TUF repository, steering supplements."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from bsi.domain.catalog import SupplementState
from bsi.domain.compliance import newest_first, supplement_entry
from bsi.domain.ddm import ENROLLMENT_ID_MAX
from bsi.errors import NotFound
from bsi.feeds import dump_bsi_catalog
from bsi.feeds.load import parse_document, read_catalog
from bsi.server.admin.common import Access, Role, recompute_later
from bsi.server.http import json_body
from bsi.server.paths import ADMIN_PREFIX, SYNC_REPOSITORY_PATH
from bsi.server.service import BsiService
from bsi.server.wakeup import Wakeups


class SupplementAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    WITHDRAW = "withdraw"


STATE_FOR_ACTION = {
    SupplementAction.PAUSE: SupplementState.PAUSED,
    SupplementAction.RESUME: SupplementState.PUBLISHED,
    SupplementAction.WITHDRAW: SupplementState.WITHDRAWN,
}
"""What each supplement action sets (the admin API's and the console's)."""


def catalog_routes(
    router: APIRouter,
    service: BsiService,
    access: Access,
    wakeups: Wakeups,
    tuf_repo_dir: Path | None,
) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    Read = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one
    Write = Annotated[Role, Depends(access.write)]  # noqa: N806
    Actor = Annotated[str, Depends(access.actor)]  # noqa: N806

    @router.post(
        "/catalog",
        summary="Import a GDMF, SOFA or bsi catalogue document, or SOFA's BSI history "
        "(NDJSON, sent as application/x-ndjson)",
    )
    async def import_catalog(
        request: Request,
        tasks: BackgroundTasks,
        _: Write,
        source: Annotated[str, Query(max_length=128)] = "upload",
    ) -> dict[str, int]:
        if "ndjson" in request.headers.get("content-type", ""):
            raw = await request.body()
            catalog = await run_in_threadpool(read_catalog, raw, source=source)
        else:
            document = await json_body(request)
            catalog = await run_in_threadpool(parse_document, document, source=source)
        merged = await run_in_threadpool(service.import_catalog, catalog, source)
        recompute_later(service, tasks)
        return {
            "imported_supplements": len(catalog.supplements),
            "imported_releases": len(catalog.releases),
            "supplements": len(merged.supplements),
            "releases": len(merged.releases),
        }

    @router.post(
        SYNC_REPOSITORY_PATH.removeprefix(ADMIN_PREFIX),
        summary="Re-read the hosted TUF repository",
    )
    async def sync_repository(tasks: BackgroundTasks, _: Write) -> dict[str, int]:
        if tuf_repo_dir is None:
            raise NotFound("this server hosts no TUF repository", hint="bsi serve --tuf-repo-dir")
        merged = await run_in_threadpool(service.sync_repository, tuf_repo_dir)
        recompute_later(service, tasks)
        return {"supplements": len(merged.supplements)}

    @router.get("/catalog", summary="The whole catalogue as a bsi catalogue document")
    async def get_catalog(_: Read) -> dict[str, object]:
        return dump_bsi_catalog(await run_in_threadpool(service.catalog))

    @router.get("/supplements")
    async def list_supplements(_: Read) -> list[dict[str, Any]]:
        """The catalogue's supplements, newest first per platform, with their state now."""
        catalog = await run_in_threadpool(service.catalog)
        now = service.clock()
        return [supplement_entry(s, now) for s in newest_first(catalog.supplements)]

    @router.post(
        "/supplements/{platform}/{build}/allow-retry",
        status_code=201,
        summary="Allow a supplement that failed (or was removed) on devices again",
    )
    async def allow_retry(
        platform: str,
        build: str,
        _: Write,
        device_id: Annotated[str | None, Query(max_length=ENROLLMENT_ID_MAX)] = None,
    ) -> dict[str, Any]:
        """Devices forget their failure of ``build`` at their next check-in and try it again.

        Without ``device_id`` every device; with it, that one. Agents never
        retry a failed health check or an administrator's rollback on their own.
        """
        ident = await run_in_threadpool(service.allow_retry, platform, build, device_id)
        await run_in_threadpool(wakeups.bump)
        return {"id": ident, "platform": platform, "build": build, "device_id": device_id}

    @router.post("/supplements/{platform}/{build}/{action}")
    async def steer_supplement(
        platform: str, build: str, action: SupplementAction, tasks: BackgroundTasks, actor: Actor
    ) -> dict[str, str]:
        state = STATE_FOR_ACTION[action]
        await run_in_threadpool(service.set_supplement_state, platform, build, state, actor)
        recompute_later(service, tasks)
        return {"platform": platform, "build": build, "state": state.value}
