"""What every admin route module shares: who may call (API key roles) and table output.

Authenticated by API key (``Authorization: Bearer``). ``read-only`` keys may
use every GET; everything that changes state needs an ``admin`` key. Device
credentials are not API keys: a device calling here gets 401.
"""

import csv
import io
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from fastapi import BackgroundTasks, Request, Response
from starlette.concurrency import run_in_threadpool

from bsi.errors import Forbidden, Unauthorized
from bsi.server.http import bearer
from bsi.server.service import BsiService

CSV = "text/csv; charset=utf-8"


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read-only"


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


class Access:
    """The role dependencies of the admin routes: ``read`` (any key) and ``write`` (admin).

    Raises :class:`Unauthorized` (401) without a known, unrevoked API key and
    :class:`Forbidden` (403) when a read-only key asks to change something.
    """

    def __init__(self, service: BsiService) -> None:
        self._service = service

    async def role(self, request: Request) -> Role:
        key = bearer(request)
        if key is None:
            raise Unauthorized(
                "an admin API key is required", hint="send 'Authorization: Bearer <key>'"
            )
        role = await run_in_threadpool(self._service.api_key_role, key)
        if role is None:
            raise Unauthorized("unknown or revoked API key")
        return Role(role)

    async def read(self, request: Request) -> Role:
        return await self.role(request)

    async def write(self, request: Request) -> Role:
        role = await self.role(request)
        if role is not Role.ADMIN:
            raise Forbidden("this API key is read-only")
        return role

    async def actor(self, request: Request) -> str:
        """Like :meth:`write`, giving the admin key's name: the actor of the events its
        change causes (``GET /v1/admin/events``)."""
        await self.write(request)
        return await run_in_threadpool(self._service.rollouts.actor, bearer(request))


def recompute_later(service: BsiService, tasks: BackgroundTasks) -> None:
    """Decide again, once the response is sent, for the devices the change can affect
    (:meth:`~bsi.server.service.BsiService.recompute_changed`)."""
    tasks.add_task(run_in_threadpool, lambda: service.recompute_changed(wait=False))


def csv_response(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return Response(buffer.getvalue(), media_type=CSV)
