"""Admin routes for compliance: per supplement, per CVE, and patch windows (JSON or CSV)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from bsi.domain.compliance import CVE_COLUMNS, SUPPLEMENT_COLUMNS, cve_json, supplement_json
from bsi.server.admin.common import Access, Format, Role, csv_response
from bsi.server.service import BsiService, window_percentiles


def compliance_routes(router: APIRouter, service: BsiService, access: Access) -> None:
    """Registers its routes on ``router`` (the admin router: each route analysed once)."""
    Read = Annotated[Role, Depends(access.read)]  # noqa: N806 - a type, named as one

    @router.get("/compliance/supplements", response_model=None)
    async def supplement_compliance(_: Read, format: Format = Format.JSON) -> Response | list[Any]:
        """Per supplement: devices installed, pending, restart-pending, blocked (by reason)
        and unknown: the shape of ``bsi apple compliance --json``'s ``supplements``."""
        summary = await run_in_threadpool(service.compliance)
        now = service.clock()
        rows = [supplement_json(s, now) for s in summary.supplements]
        return csv_response(SUPPLEMENT_COLUMNS, rows) if format is Format.CSV else rows

    @router.get("/compliance/cves", response_model=None)
    async def cve_compliance(_: Read, format: Format = Format.JSON) -> Response | list[Any]:
        """Per CVE: devices exposed, unknown, restart-pending and fixed (counts): the shape
        of ``bsi apple compliance --json``'s ``cves`` without the device lists."""
        summary = await run_in_threadpool(service.compliance)
        rows = [cve_json(e) for e in summary.cves]
        if format is Format.CSV:
            flat = [
                {**row, "supplements": " ".join(sorted(e.supplements))}
                for row, e in zip(rows, summary.cves, strict=True)
            ]
            return csv_response(CVE_COLUMNS, flat)
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
        summary = await run_in_threadpool(service.compliance)
        standing = {str(s.supplement.build): s for s in summary.supplements}
        return [
            {
                "platform": supplement.platform,
                "supplement": str(supplement.version),
                "build": build,
                "devices": len(device_windows),
                "seconds": window_percentiles(device_windows),
                "restart_pending": (
                    standing[build].restart_pending.count if build in standing else 0
                ),
                "unknown": standing[build].unknown.count if build in standing else 0,
            }
            for build, (supplement, device_windows) in sorted(windows.items())
        ]
