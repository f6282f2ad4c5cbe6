"""``bsi apple compliance``: the fleet's BSI coverage as a table, JSON or CSV.

Glue between the fleet reader, the pure compliance summary and the three
output formats. The JSON of each supplement and CVE is the domain's
(:func:`~bsi.domain.compliance.supplement_json`, :func:`~bsi.domain.compliance.cve_json`),
the one shape the admin API's compliance routes print too.
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
from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.compliance import (
    ComplianceReport,
    DeviceCompliance,
    Standing,
    assess_fleet,
    cve_json,
    supplement_json,
)
from bsi.domain.eligibility import DEFAULT_RULES, Decision, Outcome, Reason, Rules, unknown
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
    """Decide for every device; those bsi cannot read are ``unknown`` rows and listed.

    A device whose reports were refused (``--skip-invalid``) is
    ``unknown`` / ``status-invalid``; one whose reports never name its OS is
    ``unknown`` / ``not-reported``.
    """
    devices: list[tuple[str, DeviceFacts]] = []
    unreadable = list(fleet.unreadable)
    unplaced: list[tuple[str, Decision]] = [
        (u.device_id, unknown(Reason.STATUS_INVALID, f"{u.location}: {u.error}"))
        for u in fleet.unreadable
    ]
    for device_id, state in sorted(fleet.states.items()):
        try:
            devices.append((device_id, state.facts()))
        except BsiError as error:
            unreadable.append(UnreadableDevice(device_id, device_id, error.message))
            unplaced.append((device_id, unknown(Reason.NOT_REPORTED, error.message)))
    report = assess_fleet(devices, catalog, lambda _device: policy, now, rules, unplaced)
    return report, tuple(unreadable)


def device_record(row: DeviceCompliance) -> dict[str, str]:
    facts, decision = row.facts, row.decision
    target = decision.supplement
    return {
        "device_id": row.device_id,
        "platform": facts.platform if facts else "",
        "product_version": str(facts.product_version) if facts else "",
        "build": str(facts.build) if facts else "",
        "supplement": _installed_supplement(row),
        "supplemental_build": str(facts.supplemental_build or "") if facts else "",
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
    if facts is None:
        return ""
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
        "supplements": [supplement_json(s, report.as_of) for s in report.supplements],
        "cves": [cve_json(e, devices=True) for e in report.cves],
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
    Outcome.UNKNOWN: "bold red",
    Outcome.RESTART_PENDING: "yellow",
}


def _base(supplement: Supplement) -> str:
    """The prerequisite as the table shows it: the bare build, or what else it names."""
    prerequisite = supplement.prerequisite
    return str(prerequisite.build) if prerequisite.build else prerequisite.display()


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
            f"{record['platform']} {record['product_version']}".strip() or "-",
            record["build"],
            record["supplement"] or "-",
            f"[{style}]{record['outcome']}[/{style}]\n{record['reason']}",
            record["message"],
        )
    console.print(devices)

    supplements = Table(title="Supplements")
    for column in ("supplement", "build", "prerequisite", "state", "installed", "pending"):
        supplements.add_column(column)
    supplements.add_column("restart pending")
    supplements.add_column("blocked (by reason)", overflow="fold")
    supplements.add_column("unknown")
    # a container host's running containers, when the fleet has any (image supplements)
    with_containers = any(s.containers.total for s in report.supplements)
    if with_containers:
        supplements.add_column("containers", overflow="fold")
    for s in report.supplements:
        blocked = ", ".join(f"{reason}: {n}" for reason, n in sorted(s.blocked.items()))
        c = s.containers
        shown = (
            f"{c.affected} affected: {c.installed.count} installed, {c.pending.count} pending, "
            f"{c.restart_pending.count} restart pending, {sum(c.blocked.values())} blocked; "
            f"{c.unknown.count} unknown"
        )
        supplements.add_row(
            s.supplement.display(),
            str(s.supplement.build),
            _base(s.supplement),
            s.supplement.state_at(report.as_of).value,
            str(s.installed.count),
            str(s.pending.count),
            str(s.restart_pending.count),
            blocked or "-",
            str(s.unknown.count),
            *([shown] if with_containers else []),
        )
    console.print(supplements)

    cves = Table(title="CVEs: exposed, unknown, restart pending, fixed")
    cves.add_column("CVE")
    cves.add_column("fixed by")
    for which in Standing:
        cves.add_column(which.value)
    cves.add_column("exposed or unknown devices", overflow="fold")
    with_containers = any(e.containers.counted for e in report.cves)
    if with_containers:
        cves.add_column("containers", overflow="fold")
    for exposure in report.cves:
        counts = ", ".join(
            f"{exposure.containers.devices(which).count} {which.value}" for which in Standing
        )
        cves.add_row(
            exposure.cve,
            ", ".join(sorted(exposure.supplements)),
            *(str(exposure.devices(which).count) for which in Standing),
            ", ".join([*exposure.exposed.devices, *exposure.unknown.devices]),
            *([counts] if with_containers else []),
        )
    console.print(cves)

    if unreadable:
        console.print(f"[red]{len(unreadable)} device(s) could not be assessed:[/red]")
        for item in unreadable:
            console.print(f"  {item.device_id} ({item.location}): {item.error}")
