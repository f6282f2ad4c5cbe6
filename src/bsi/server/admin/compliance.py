"""Admin routes for compliance: per supplement, per CVE, and patch windows (JSON or CSV)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from bsi.server.admin.common import Access, Format, Role, csv_response
from bsi.server.http import StrictRoute
from bsi.server.service import BsiService, window_percentiles


def compliance_routes(service: BsiService, access: Access) -> APIRouter:
    router = APIRouter(route_class=StrictRoute)
    Read = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one

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
            return csv_response(columns, rows)
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
            return csv_response(tuple(CVE_COLUMNS), flat)
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
                return csv_response(tuple(rows[0]) if rows else ("device_id",), rows)
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
