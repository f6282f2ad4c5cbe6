"""Admin routes for declarations and the device groups they are assigned to."""

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bsi.errors import InvalidInput
from bsi.server.admin.common import Access, Role, recompute_later
from bsi.server.http import json_body
from bsi.server.service import BsiService


class GroupIn(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$", description="1-32 of a-z 0-9 . _ -")


def declaration_routes(router: APIRouter, service: BsiService, access: Access) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    Read = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one
    Write = Annotated[Role, Depends(access.write)]  # noqa: N806

    @router.get("/groups")
    async def list_groups(_: Read) -> list[str]:
        return await run_in_threadpool(service.group_names)

    @router.post("/groups", status_code=201)
    async def create_group(body: GroupIn, _: Write) -> dict[str, str]:
        await run_in_threadpool(service.create_group, body.name)
        return {"name": body.name}

    @router.get("/declarations")
    async def list_declarations(_: Read) -> list[dict[str, Any]]:
        rows = await run_in_threadpool(service.declarations)
        return [{**d.to_json(), "groups": groups} for d, groups in rows]

    @router.put("/declarations/{identifier}")
    async def put_declaration(
        identifier: str, request: Request, tasks: BackgroundTasks, _: Write
    ) -> dict[str, Any]:
        body = await json_body(request)
        if isinstance(body, dict) and body.get("Identifier") != identifier:
            raise InvalidInput(
                f"body Identifier {body.get('Identifier')!r} "
                f"does not match the URL's {identifier!r}"
            )
        declaration = await run_in_threadpool(service.put_declaration, body)
        recompute_later(service, tasks)
        return declaration.to_json()

    @router.delete("/declarations/{identifier}", status_code=204)
    async def delete_declaration(identifier: str, tasks: BackgroundTasks, _: Write) -> Response:
        await run_in_threadpool(service.delete_declaration, identifier)
        recompute_later(service, tasks)
        return Response(status_code=204)

    @router.put("/declarations/{identifier}/groups/{group}", status_code=204)
    async def assign(identifier: str, group: str, tasks: BackgroundTasks, _: Write) -> Response:
        await run_in_threadpool(lambda: service.assign(identifier, group, assigned=True))
        recompute_later(service, tasks)
        return Response(status_code=204)

    @router.delete("/declarations/{identifier}/groups/{group}", status_code=204)
    async def unassign(identifier: str, group: str, tasks: BackgroundTasks, _: Write) -> Response:
        await run_in_threadpool(lambda: service.assign(identifier, group, assigned=False))
        recompute_later(service, tasks)
        return Response(status_code=204)
