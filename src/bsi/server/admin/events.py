"""Admin routes for security events: refused impersonation attempts, kept for review."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from bsi.server.admin.common import Access, Role
from bsi.server.paths import MAX_PAGE
from bsi.server.service import BsiService


def event_routes(router: APIRouter, service: BsiService, access: Access) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    Read = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one

    @router.get("/security-events", summary="Refused impersonation attempts, newest first")
    async def security_events(
        _: Read, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100
    ) -> list[dict[str, Any]]:
        events = await run_in_threadpool(service.security_events, limit)
        return [
            {
                "at": e.at.isoformat(),
                "kind": e.kind,
                "enrollment_id": e.enrollment_id,
                "source": e.source,
                "detail": e.detail,
            }
            for e in events
        ]
