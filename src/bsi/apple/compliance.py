"""``bsi apple compliance``: the fleet's BSI coverage as a table, JSON or CSV.

Glue between the fleet reader, the pure compliance summary and the three
output formats. Formatting lives here, not in the domain, so the server's
admin API can reuse ``report_to_json`` and ``report_to_csv`` unchanged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from bsi.apple.fleet import Fleet, UnreadableDevice
from bsi.domain.catalog import Catalog
from bsi.domain.compliance import ComplianceReport, DeviceCompliance, assess_fleet
from bsi.domain.eligibility import DEFAULT_RULES, Outcome, Rules
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.errors import BsiError

CSV_COLUMNS = (
    "device_id",
    "platform",
    "product_version",
    "build",
    "supplement",
    "supplemental_build",
    "outcome",
    "reason",
    "target_supplement",
    "target_build",
    "install_first",
    "message",
)


def assess_apple_fleet(
    fleet: Fleet,
    catalog: Catalog,
    policy: SoftwareUpdatePolicy,
    now: datetime,
    rules: Rules = DEFAULT_RULES,
) -> tuple[ComplianceReport, tuple[UnreadableDevice, ...]]:
    """Decide for every device whose reports name its OS; list the others as unreadable."""
    devices: list[tuple[str, DeviceFacts]] = []
    unreadable = list(fleet.unreadable)
    for device_id, state in sorted(fleet.states.items()):
        try:
            devices.append((device_id, state.facts()))
        except BsiError as error:
            unreadable.append(UnreadableDevice(device_id, device_id, error.message))
    report = assess_fleet(devices, catalog, lambda _device: policy, now, rules)
    return report, tuple(unreadable)


def device_record(row: DeviceCompliance) -> dict[str, str]:
    facts, decision = row.facts, row.decision
    target = decision.supplement
    return {
        "device_id": row.device_id,
        "platform": facts.platform,
        "product_version": str(facts.product_version),
        "build": str(facts.build),
        "supplement": _installed_supplement(row),
        "supplemental_build": str(facts.supplemental_build or ""),
        "outcome": decision.outcome.value,
        "reason": decision.reason.value,
        "target_supplement": str(target.version) if target else "",
        "target_build": str(target.build) if target else "",
        "install_first": decision.install_first or "",
        "message": decision.message,
    }


def _installed_supplement(row: DeviceCompliance) -> str:
    """``26.3.1 (a)``, from the catalogue when it knows the build, else from the report."""
    facts = row.facts
    if row.installed is not None:
        return str(row.installed.version)
    if facts.supplemental_extra is not None:
        return f"{facts.product_version} {facts.supplemental_extra}"
    return str(facts.supplemental_build or "")


def report_to_json(
    report: ComplianceReport, unreadable: Sequence[UnreadableDevice] = ()
) -> dict[str, Any]:
    return {
        "as_of": report.as_of.isoformat(),
        "devices": [device_record(row) for row in report.devices],
        "supplements": [
            {
                "platform": s.supplement.platform,
                "supplement": str(s.supplement.version),
                "build": str(s.supplement.build),
                "prerequisite_build": str(s.supplement.prerequisite_build),
                "state": s.supplement.state_at(report.as_of).value,
                "cves": list(s.supplement.cves),
                "installed": len(s.installed),
                "pending": len(s.pending),
                "blocked": {reason.value: count for reason, count in sorted(s.blocked.items())},
            }
            for s in report.supplements
        ],
        "cves": [
            {"cve": e.cve, "supplements": sorted(e.supplements), "exposed_devices": e.exposed}
            for e in report.cves
        ],
        "unreadable": [
            {"device_id": u.device_id, "location": u.location, "error": u.error} for u in unreadable
        ],
    }


def report_to_csv(report: ComplianceReport) -> str:
    """One row per device: the form spreadsheets and ticket systems ingest."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report.devices:
        writer.writerow(device_record(row))
    return buffer.getvalue()


_OUTCOME_STYLE = {
    Outcome.UP_TO_DATE: "green",
    Outcome.INSTALL: "cyan",
    Outcome.ENFORCED: "magenta",
    Outcome.DEFERRED: "yellow",
    Outcome.BLOCKED: "red",
}


def render_table(
    report: ComplianceReport, unreadable: Sequence[UnreadableDevice], console: Console
) -> None:
    devices = Table(title=f"Devices as of {report.as_of:%Y-%m-%d %H:%M %Z}", show_lines=False)
    for column in ("device", "OS", "build", "supplement", "decision", "why"):
        devices.add_column(column, overflow="fold")
    for row in report.devices:
        record = device_record(row)
        style = _OUTCOME_STYLE[row.decision.outcome]
        devices.add_row(
            record["device_id"],
            f"{record['platform']} {record['product_version']}",
            record["build"],
            record["supplement"] or "-",
            f"[{style}]{record['outcome']}[/{style}]\n{record['reason']}",
            record["message"],
        )
    console.print(devices)

    supplements = Table(title="Supplements")
    for column in ("supplement", "build", "prerequisite", "state", "installed", "pending"):
        supplements.add_column(column)
    supplements.add_column("blocked (by reason)", overflow="fold")
    for s in report.supplements:
        blocked = ", ".join(f"{reason.value}: {n}" for reason, n in sorted(s.blocked.items()))
        supplements.add_row(
            s.supplement.display(),
            str(s.supplement.build),
            str(s.supplement.prerequisite_build),
            s.supplement.state_at(report.as_of).value,
            str(len(s.installed)),
            str(len(s.pending)),
            blocked or "-",
        )
    console.print(supplements)

    cves = Table(title="CVEs: devices still exposed")
    for column in ("CVE", "fixed by", "exposed"):
        cves.add_column(column)
    cves.add_column("devices", overflow="fold")
    for exposure in report.cves:
        cves.add_row(
            exposure.cve,
            ", ".join(sorted(exposure.supplements)),
            str(len(exposure.exposed)),
            ", ".join(exposure.exposed),
        )
    console.print(cves)

    if unreadable:
        console.print(f"[red]{len(unreadable)} device(s) could not be assessed:[/red]")
        for item in unreadable:
            console.print(f"  {item.device_id} ({item.location}): {item.error}")
