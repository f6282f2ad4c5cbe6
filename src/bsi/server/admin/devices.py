"""Admin routes for devices: lists, detail, imports (enrollments, inventory), lifecycle, wake."""

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bsi.apple.fleet import InventoryFormat, inventory_reports
from bsi.domain.ddm import ENROLLMENT_ID_MAX
from bsi.domain.eligibility import Outcome, Reason
from bsi.errors import BsiError, InvalidInput
from bsi.server.admin.common import Access, Format, Role, csv_response, recompute_later
from bsi.server.http import json_body
from bsi.server.paths import MAX_PAGE, MAX_STALE_HOURS
from bsi.server.service import BsiService
from bsi.server.wakeup import Wakeups
from bsi.store.store import DeviceFilter, DeviceRecord, NewEnrollment
from bsi.strict import read_json_lines, read_plist


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


class Lifecycle(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    DECOMMISSIONED = "decommissioned"


def device_routes(router: APIRouter, service: BsiService, access: Access, wakeups: Wakeups) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    Read = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one
    Write = Annotated[Role, Depends(access.write)]  # noqa: N806

    @router.post("/wake", summary="Tell every waiting device to check in now")
    async def wake(_: Write) -> dict[str, int]:
        """Devices waiting on any server process are answered (see ``bsi.server.wakeup``)."""
        return {"generation": await run_in_threadpool(wakeups.advance)}

    @router.post("/decisions/recompute", summary="Decide again for every device, now")
    async def recompute(_: Write) -> dict[str, int]:
        return {"devices": await run_in_threadpool(service.recompute_decisions)}

    @router.get("/decisions/recompute", summary="The decision pass under way, if any")
    async def recomputing(_: Read) -> dict[str, Any]:
        """``{"recomputing": null}`` when no pass runs or waits in this process; else
        ``{"recomputing": {"affects", "devices", "devices_left", "started_at", "queued"}}``
        (:meth:`~bsi.server.service.BsiService.recomputing`): decisions are made again
        in the background after a change, only for the devices it can affect."""
        return {"recomputing": service.recomputing()}

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
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
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
            lambda: service.list_devices(filters, after=after, limit=limit)
        )
        if format is Format.CSV:
            return csv_response(DEVICE_COLUMNS, (_device_json(r) for r in rows))
        return {
            "devices": [_device_json(r) for r in rows],
            "next": rows[-1].device_id if len(rows) == limit else None,
        }

    @router.get("/devices/{device_id}")
    async def get_device(device_id: str, _: Read) -> dict[str, Any]:
        record, items, detail = await run_in_threadpool(service.device, device_id)
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
        created = await run_in_threadpool(service.import_inventory, entries, group)
        recompute_later(service, tasks)
        return {"devices": len({device_id for device_id, _, _ in entries}), "created": created}

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
