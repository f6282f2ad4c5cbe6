"""Admin routes for credentials: enrollment tokens and API keys (each secret shown once)."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bsi.server.admin.common import Access, Role
from bsi.server.paths import MAX_TOKEN_HOURS
from bsi.server.service import BsiService
from bsi.strict import MAX_INT32


class EnrollmentTokenIn(BaseModel):
    group: str = "default"
    expires_in_hours: float = Field(24.0, gt=0, le=MAX_TOKEN_HOURS)
    max_uses: int | None = Field(None, ge=1, le=MAX_INT32)


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role


def credential_routes(router: APIRouter, service: BsiService, access: Access) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    Write = Annotated[Role, Depends(access.write)]  # noqa: N806 - a type, named as one

    @router.post("/enrollment-tokens", status_code=201)
    async def create_enrollment_token(body: EnrollmentTokenIn, _: Write) -> dict[str, Any]:
        valid_for = timedelta(hours=body.expires_in_hours)
        token, expires = await run_in_threadpool(
            service.create_enrollment_token, body.group, valid_for, body.max_uses
        )
        return {
            "token": token,
            "group": body.group,
            "expires_at": expires.isoformat(),
            "max_uses": body.max_uses,
        }

    @router.post("/api-keys", status_code=201)
    async def create_api_key(body: ApiKeyIn, _: Write) -> dict[str, str]:
        key = await run_in_threadpool(service.create_api_key, body.name, body.role.value)
        return {"name": body.name, "role": body.role.value, "key": key}
