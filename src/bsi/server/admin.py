"""The admin API: enrollment tokens, catalogue, declarations, devices, compliance.

Authenticated by API key (``Authorization: Bearer``). ``read-only`` keys may
use every GET; everything that changes state needs an ``admin`` key. Device
credentials are not API keys: a device calling here gets 401.
"""

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bsi.apple.fleet import InventoryFormat, inventory_reports
from bsi.domain.catalog import SupplementState
from bsi.domain.ddm import ENROLLMENT_ID_MAX
from bsi.domain.eligibility import Outcome, Reason
from bsi.domain.prerequisite import dump_base
from bsi.errors import BsiError, Forbidden, InvalidInput, NotFound, Unauthorized
from bsi.feeds import dump_bsi_catalog
from bsi.feeds.load import parse_document, read_catalog
from bsi.server.http import StrictRoute, bearer, json_body
from bsi.server.paths import ADMIN_PREFIX, SYNC_REPOSITORY_PATH
from bsi.server.service import BsiService, window_percentiles
from bsi.server.wakeup import Wakeups
from bsi.store.store import DeviceFilter, DeviceRecord, NewEnrollment
from bsi.strict import MAX_INT32, read_json_lines, read_plist

CSV = "text/csv; charset=utf-8"
MAX_STALE_HOURS = 24 * 365 * 100
"""``stale_hours`` beyond a century would only overflow the date arithmetic."""


class Role(StrEnum):
    ADMIN = "admin"
    READ_ONLY = "read-only"


class GroupIn(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,31}$", description="1-32 of a-z 0-9 . _ -")


class EnrollmentTokenIn(BaseModel):
    group: str = "default"
    expires_in_hours: float = Field(24.0, gt=0, le=24 * 365)
    max_uses: int | None = Field(None, ge=1, le=MAX_INT32)


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role


class EnrollmentIn(BaseModel):
    enrollment_id: str = Field(min_length=1, max_length=ENROLLMENT_ID_MAX)
    enrollment_type: str | None = Field(
        None, max_length=32, description="NanoMDM's type: Device, User, Shared iPad, ..."
    )
    parent_id: str | None = Field(
        None, max_length=ENROLLMENT_ID_MAX, description="a user channel's device enrollment id"
    )
    udid: str | None = Field(None, max_length=64)
    serial_number: str | None = Field(None, max_length=64)
    group: str | None = Field(None, max_length=32, description="for a new device; default")


class EnrollmentsIn(BaseModel):
    enrollments: list[EnrollmentIn] = Field(max_length=100_000)


class SupplementAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    WITHDRAW = "withdraw"


_STATE_FOR_ACTION = {
    SupplementAction.PAUSE: SupplementState.PAUSED,
    SupplementAction.RESUME: SupplementState.PUBLISHED,
    SupplementAction.WITHDRAW: SupplementState.WITHDRAWN,
}


class Lifecycle(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    DECOMMISSIONED = "decommissioned"


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"


def admin_router(
    service: BsiService, wakeups: Wakeups, tuf_repo_dir: Path | None = None
) -> APIRouter:
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["admin"], route_class=StrictRoute)
    store = service.store

    async def role_of(request: Request) -> Role:
        key = bearer(request)
        if key is None:
            raise Unauthorized(
                "an admin API key is required", hint="send 'Authorization: Bearer <key>'"
            )
        role = await run_in_threadpool(store.api_key_role, key)
        if role is None:
            raise Unauthorized("unknown or revoked API key")
        return Role(role)

    async def reader(role: Annotated[Role, Depends(role_of)]) -> Role:
        return role

    async def writer(role: Annotated[Role, Depends(role_of)]) -> Role:
        if role is not Role.ADMIN:
            raise Forbidden("this API key is read-only")
        return role

    Read = Annotated[Role, Depends(reader)]  # noqa: N806 - a type, named as one
    Write = Annotated[Role, Depends(writer)]  # noqa: N806

    def recompute_later(tasks: BackgroundTasks) -> None:
        tasks.add_task(run_in_threadpool, service.recompute_decisions)

    # -- groups and enrollment ---------------------------------------------

    @router.get("/groups")
    async def list_groups(_: Read) -> list[str]:
        return sorted((await run_in_threadpool(store.groups)).values())

    @router.post("/groups", status_code=201)
    async def create_group(body: GroupIn, _: Write) -> dict[str, str]:
        await run_in_threadpool(store.ensure_group, body.name, service.clock())
        return {"name": body.name}

    @router.post("/enrollment-tokens", status_code=201)
    async def create_enrollment_token(body: EnrollmentTokenIn, _: Write) -> dict[str, Any]:
        now = service.clock()
        expires = now + timedelta(hours=body.expires_in_hours)
        token = await run_in_threadpool(
            store.create_enrollment_token, body.group, expires, body.max_uses, now
        )
        return {
            "token": token,
            "group": body.group,
            "expires_at": expires.isoformat(),
            "max_uses": body.max_uses,
        }

    @router.post("/api-keys", status_code=201)
    async def create_api_key(body: ApiKeyIn, _: Write) -> dict[str, str]:
        key = await run_in_threadpool(
            store.create_api_key, body.name, body.role.value, service.clock()
        )
        return {"name": body.name, "role": body.role.value, "key": key}

    # -- catalogue ---------------------------------------------------------

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
        recompute_later(tasks)
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
        recompute_later(tasks)
        return {"supplements": len(merged.supplements)}

    @router.get("/catalog", summary="The whole catalogue as a bsi catalogue document")
    async def get_catalog(_: Read) -> dict[str, object]:
        return dump_bsi_catalog(await run_in_threadpool(service.catalog))

    @router.get("/supplements")
    async def list_supplements(_: Read) -> list[dict[str, Any]]:
        rows = await run_in_threadpool(service.supplement_compliance)
        return [
            {
                "platform": r.supplement.platform,
                "supplement": str(r.supplement.version),
                "build": str(r.supplement.build),
                **dump_base(r.supplement.prerequisite, r.supplement.fixed_in),
                "state": r.state.value,
                "posted": r.supplement.posted.isoformat() if r.supplement.posted else None,
                "cves": list(r.supplement.cves),
            }
            for r in rows
        ]

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
        ident = await run_in_threadpool(
            store.allow_retry, platform, build, device_id, service.clock()
        )
        wakeups.bump()
        return {"id": ident, "platform": platform, "build": build, "device_id": device_id}

    @router.post("/supplements/{platform}/{build}/{action}")
    async def steer_supplement(
        platform: str, build: str, action: SupplementAction, tasks: BackgroundTasks, _: Write
    ) -> dict[str, str]:
        state = _STATE_FOR_ACTION[action]
        await run_in_threadpool(service.set_supplement_state, platform, build, state)
        recompute_later(tasks)
        return {"platform": platform, "build": build, "state": state.value}

    # -- declarations ------------------------------------------------------

    @router.get("/declarations")
    async def list_declarations(_: Read) -> list[dict[str, Any]]:
        rows = await run_in_threadpool(store.declarations)
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
        recompute_later(tasks)
        return declaration.to_json()

    @router.delete("/declarations/{identifier}", status_code=204)
    async def delete_declaration(identifier: str, tasks: BackgroundTasks, _: Write) -> Response:
        await run_in_threadpool(service.delete_declaration, identifier)
        recompute_later(tasks)
        return Response(status_code=204)

    @router.put("/declarations/{identifier}/groups/{group}", status_code=204)
    async def assign(identifier: str, group: str, tasks: BackgroundTasks, _: Write) -> Response:
        await run_in_threadpool(lambda: service.assign(identifier, group, assigned=True))
        recompute_later(tasks)
        return Response(status_code=204)

    @router.delete("/declarations/{identifier}/groups/{group}", status_code=204)
    async def unassign(identifier: str, group: str, tasks: BackgroundTasks, _: Write) -> Response:
        await run_in_threadpool(lambda: service.assign(identifier, group, assigned=False))
        recompute_later(tasks)
        return Response(status_code=204)

    @router.post("/wake", summary="Tell every waiting device to check in now")
    async def wake(_: Write) -> dict[str, int]:
        wakeups.bump()
        return {"generation": wakeups.generation + 1}

    @router.post("/decisions/recompute", summary="Decide again for every device, now")
    async def recompute(_: Write) -> dict[str, int]:
        return {"devices": await run_in_threadpool(service.recompute_decisions)}

    # -- devices and compliance --------------------------------------------

    @router.get("/devices", response_model=None)
    async def list_devices(
        _: Read,
        group: str | None = None,
        platform: str | None = None,
        product_version: str | None = None,
        build: str | None = None,
        supplemental_build: str | None = None,
        extra_version: Annotated[str | None, Query(description="e.g. (a)")] = None,
        reason: Annotated[Reason | None, Query(description="decision reason code")] = None,
        outcome: Annotated[
            Outcome | None, Query(description="unknown includes enrolled devices never reported")
        ] = None,
        target_build: Annotated[str | None, Query(description="decision's supplement")] = None,
        seen_before: datetime | None = None,
        seen_after: datetime | None = None,
        stale_hours: Annotated[
            float | None,
            Query(gt=0, le=MAX_STALE_HOURS, description="not seen for this many hours (or never)"),
        ] = None,
        after: Annotated[str | None, Query(description="cursor: last device id seen")] = None,
        lifecycle: Annotated[
            Lifecycle | None, Query(description="default: active and revoked devices")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        format: Format = Format.JSON,
    ) -> Response | dict[str, Any]:
        stale_before = (
            service.clock() - timedelta(hours=stale_hours) if stale_hours is not None else None
        )
        filters = DeviceFilter(
            group=group,
            platform=platform,
            product_version=product_version,
            build=build,
            supplemental_build=supplemental_build,
            supplemental_extra=f"({extra_version.strip('()')})" if extra_version else None,
            decision_reason=reason.value if reason else None,
            decision_outcome=outcome.value if outcome else None,
            decision_supplement_build=target_build,
            seen_before=_aware(seen_before),
            seen_after=_aware(seen_after),
            stale_before=stale_before,
            lifecycle=lifecycle.value if lifecycle else None,
        )
        rows = await run_in_threadpool(
            lambda: store.list_devices(filters, after=after, limit=limit)
        )
        if format is Format.CSV:
            return _csv(DEVICE_COLUMNS, (_device_json(r) for r in rows))
        return {
            "devices": [_device_json(r) for r in rows],
            "next": rows[-1].device_id if len(rows) == limit else None,
        }

    @router.get("/devices/{device_id}")
    async def get_device(device_id: str, _: Read) -> dict[str, Any]:
        record, items = await run_in_threadpool(store.get_device, device_id)
        detail = await run_in_threadpool(store.device_detail, device_id)
        return {**_device_json(record), "status_items": items, **detail}

    @router.post("/enrollments", summary="Import enrollment ids NanoMDM forwards DDM for")
    async def import_enrollments(body: EnrollmentsIn, _: Write) -> dict[str, int]:
        """Make enrollments known without NanoMDM's webhook: devices first, then channels.

        All or nothing: one unknown group, bad id or unknown parent refuses the batch.
        """
        entries = [
            NewEnrollment(
                e.enrollment_id,
                enrollment_type=e.enrollment_type,
                parent_id=e.parent_id,
                udid=e.udid,
                serial_number=e.serial_number,
                group=e.group,
                enrolled_by="import",
            )
            for e in sorted(body.enrollments, key=lambda e: e.parent_id is not None)
        ]
        created = await run_in_threadpool(service.register_enrollments, entries)
        return {"created": created, "refreshed": len(entries) - created}

    @router.post(
        "/inventory",
        summary="Import devices from MDM DeviceInformation results or osquery rows (or DDM "
        "reports): JSON (one record or an array), plist, or NDJSON (application/x-ndjson)",
    )
    async def import_inventory(
        request: Request,
        tasks: BackgroundTasks,
        _: Write,
        format: InventoryFormat = InventoryFormat.AUTO,
        group: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, int]:
        """Devices not on DDM still show up (and count): each record becomes its DDM items.

        A malformed record refuses the whole upload, naming ``body[i]`` or the line.
        """
        records = await _inventory_records(request)
        entries = list(inventory_reports(records, format, where="body"))
        for _device, location, report in entries:
            if isinstance(report, BsiError):
                raise InvalidInput(f"{location}: {report.message}", hint=report.hint)
        pairs = [(device_id, report) for device_id, _location, report in entries]
        created = await run_in_threadpool(service.import_inventory, pairs, group)
        recompute_later(tasks)
        return {"devices": len(dict(pairs)), "created": created}

    @router.get("/security-events", summary="Refused impersonation attempts, newest first")
    async def security_events(
        _: Read, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        events = await run_in_threadpool(store.security_events, limit)
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

    @router.post("/devices/{device_id}/revoke", summary="Refuse the device's credential")
    async def revoke_device(device_id: str, _: Write) -> dict[str, str]:
        """Every server process refuses it within ``revocation_poll_seconds`` (1 s)."""
        await run_in_threadpool(service.revoke_device, device_id)
        return {"device_id": device_id, "lifecycle": "revoked"}

    @router.delete("/devices/{device_id}", status_code=204, summary="Decommission a device")
    async def decommission_device(device_id: str, _: Write) -> Response:
        """Revoked, and left out of lists and compliance; its history is kept."""
        await run_in_threadpool(service.decommission_device, device_id)
        return Response(status_code=204)

    @router.post("/devices/{device_id}/re-enroll", status_code=201, summary="New credential")
    async def reenroll_device(device_id: str, _: Write) -> dict[str, str]:
        """A new credential, shown once; every earlier one of the device is refused."""
        credential = await run_in_threadpool(service.reenroll_device, device_id)
        return {"device_id": device_id, "credential": credential, "ddm_url": "/v1/ddm/"}

    @router.get("/compliance/supplements", response_model=None)
    async def supplement_compliance(_: Read, format: Format = Format.JSON) -> Response | list[Any]:
        rows = [
            {
                "platform": r.supplement.platform,
                "supplement": str(r.supplement.version),
                "build": str(r.supplement.build),
                "state": r.state.value,
                "installed": r.installed,
                "pending": r.pending,
                "restart_pending": r.restart_pending,
                "blocked": sum(r.blocked.values()),
                "blocked_by_reason": r.blocked,
                "unknown": r.unknown,
            }
            for r in await run_in_threadpool(service.supplement_compliance)
        ]
        if format is Format.CSV:
            columns = (
                "platform",
                "supplement",
                "build",
                "state",
                "installed",
                "pending",
                "restart_pending",
                "blocked",
                "unknown",
            )
            return _csv(columns, rows)
        return rows

    @router.get("/compliance/cves", response_model=None)
    async def cve_compliance(_: Read, format: Format = Format.JSON) -> Response | list[Any]:
        exposures = await run_in_threadpool(service.cve_compliance)
        rows = [
            {
                "cve": c.cve,
                "supplements": c.supplements,
                "exposed_devices": c.exposed,
                "unknown_devices": c.unknown,
                "restart_pending_devices": c.restart_pending,
                "fixed_devices": c.fixed,
            }
            for c in exposures
        ]
        if format is Format.CSV:
            flat = [
                {**row, "supplements": " ".join(c.supplements)}
                for row, c in zip(rows, exposures, strict=True)
            ]
            return _csv(tuple(CVE_COLUMNS), flat)
        return rows

    @router.get("/patch-windows", response_model=None)
    async def patch_windows(
        _: Read, per_device: bool = False, format: Format = Format.JSON
    ) -> Response | list[Any]:
        windows = await run_in_threadpool(service.patch_windows)
        if format is Format.CSV or per_device:
            rows = [
                {
                    "device_id": w.device_id,
                    "supplement_build": w.supplement_build,
                    "posted_at": w.posted_at.isoformat(),
                    "installed_at": w.installed_at.isoformat(),
                    "seconds": w.duration.total_seconds(),
                }
                for _supplement, device_windows in windows.values()
                for w in device_windows
            ]
            if format is Format.CSV:
                return _csv(tuple(rows[0]) if rows else ("device_id",), rows)
            return rows
        # Devices that have not arrived yet, or cannot be placed, are counted beside the windows.
        standing = {
            str(r.supplement.build): r
            for r in await run_in_threadpool(service.supplement_compliance)
        }
        return [
            {
                "platform": supplement.platform,
                "supplement": str(supplement.version),
                "build": build,
                "devices": len(device_windows),
                "seconds": window_percentiles(device_windows),
                "restart_pending": standing[build].restart_pending if build in standing else 0,
                "unknown": standing[build].unknown if build in standing else 0,
            }
            for build, (supplement, device_windows) in sorted(windows.items())
        ]

    return router


CVE_COLUMNS = (
    "cve",
    "supplements",
    "exposed_devices",
    "unknown_devices",
    "restart_pending_devices",
    "fixed_devices",
)

DEVICE_COLUMNS = (
    "device_id",
    "group",
    "platform",
    "product_version",
    "build",
    "supplemental_build",
    "supplemental_extra",
    "model_identifier",
    "last_seen_at",
    "enrolled_at",
    "decision_outcome",
    "decision_reason",
    "decision_supplement_build",
    "decision_message",
    "lifecycle",
)


async def _inventory_records(request: Request) -> list[object]:
    """The upload's records: a JSON record or array, a plist, or NDJSON lines."""
    kind = request.headers.get("content-type", "")
    if "plist" in kind or "xml" in kind:
        document: object = read_plist(await request.body(), source="request body")
    elif "ndjson" in kind:
        body = await request.body()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidInput(
                f"request body is not UTF-8 (byte {error.start}: {error.reason})"
            ) from None
        document = [line for _, line in read_json_lines(text, source="request body")]
    else:
        document = await json_body(request)
    return document if isinstance(document, list) else [document]


def _device_json(record: DeviceRecord) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(record, name) for name in DEVICE_COLUMNS}
    for key in ("last_seen_at", "enrolled_at"):
        row[key] = row[key].isoformat() if row[key] else None
    return row


def _aware(value: datetime | None) -> datetime | None:
    """A query instant in UTC; one that has no UTC form (year 1 at +23:59) is a 400."""
    if value is None:
        return value
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError as error:
        raise InvalidInput(f"instant {value.isoformat()} is out of range") from error


def _csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return Response(buffer.getvalue(), media_type=CSV)
