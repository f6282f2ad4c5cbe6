"""Fleet compliance: decisions for many devices, summarised per supplement and per CVE.

Pure: the caller has already read the status reports and the catalogue and
chosen the instant; this module only counts. It answers the admin's question
"which devices run 26.3.1 (a), which cannot get it, and why?".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.eligibility import DEFAULT_RULES, Decision, Outcome, Reason, Rules, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy

PENDING = frozenset({Outcome.INSTALL, Outcome.ENFORCED, Outcome.DEFERRED})


@dataclass(frozen=True, slots=True)
class DeviceCompliance:
    """One device's row: its facts, its installed supplement and the decision."""

    device_id: str
    facts: DeviceFacts
    installed: Supplement | None
    decision: Decision


@dataclass(slots=True)
class SupplementSummary:
    """How one supplement stands across the fleet."""

    supplement: Supplement
    installed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    blocked: Counter[Reason] = field(default_factory=Counter)


@dataclass(slots=True)
class CveExposure:
    """Devices that lack a supplement fixing ``cve``."""

    cve: str
    supplements: set[str] = field(default_factory=set)
    exposed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    as_of: datetime
    devices: tuple[DeviceCompliance, ...]
    supplements: tuple[SupplementSummary, ...]
    cves: tuple[CveExposure, ...]


PolicyFor = Callable[[str], SoftwareUpdatePolicy]


def assess_fleet(
    devices: Iterable[tuple[str, DeviceFacts]],
    catalog: Catalog,
    policy_for: PolicyFor,
    now: datetime,
    rules: Rules = DEFAULT_RULES,
) -> ComplianceReport:
    """Decide for every device, then summarise per supplement and per CVE."""
    rows = []
    for device_id, facts in devices:
        installed = (
            catalog.supplement_by_build(facts.platform, facts.supplemental_build)
            if facts.supplemental_build is not None
            else None
        )
        decision = decide(facts, catalog, policy_for(device_id), now, rules)
        rows.append(DeviceCompliance(device_id, facts, installed, decision))
    rows.sort(key=lambda row: row.device_id)
    return ComplianceReport(
        as_of=now,
        devices=tuple(rows),
        supplements=tuple(_per_supplement(rows)),
        cves=tuple(_per_cve(rows)),
    )


def _per_supplement(rows: list[DeviceCompliance]) -> list[SupplementSummary]:
    summaries: dict[tuple[str, str], SupplementSummary] = {}

    def summary(supplement: Supplement) -> SupplementSummary:
        key = (supplement.platform, str(supplement.build))
        return summaries.setdefault(key, SupplementSummary(supplement))

    for row in rows:
        if row.installed is not None:
            summary(row.installed).installed.append(row.device_id)
        target = row.decision.supplement
        if target is None or target == row.installed:
            continue
        if row.decision.outcome in PENDING:
            summary(target).pending.append(row.device_id)
        elif row.decision.outcome is Outcome.BLOCKED:
            summary(target).blocked[row.decision.reason] += 1
    return sorted(
        summaries.values(),
        key=lambda s: (s.supplement.platform, s.supplement.version),
        reverse=True,
    )


def _per_cve(rows: list[DeviceCompliance]) -> list[CveExposure]:
    exposures: dict[str, CveExposure] = {}
    for row in rows:
        target = row.decision.supplement
        if target is None or not row.decision.exposed:
            continue
        for cve in target.cves:
            exposure = exposures.setdefault(cve, CveExposure(cve))
            exposure.supplements.add(target.display())
            exposure.exposed.append(row.device_id)
    return sorted(exposures.values(), key=lambda e: (-len(e.exposed), e.cve))
