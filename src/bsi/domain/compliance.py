"""Fleet compliance: decisions for many devices, summarised per supplement and per CVE.

Pure: the caller has already read the status reports and the catalogue and
chosen the instant; this module only counts. It answers the admin's question
"which devices run 26.3.1 (a), which cannot get it, and why?".

Fail closed (DESIGN rule 7): devices bsi cannot place (``unknown``) and
devices whose supplement is on disk but not live (``restart-pending``) are
counted apart, never as fixed, wherever counts appear.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.eligibility import DEFAULT_RULES, Decision, Outcome, Reason, Rules, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.inventory import resolve
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import ProductVersion

PENDING = frozenset({Outcome.INSTALL, Outcome.ENFORCED, Outcome.DEFERRED})


class Standing(StrEnum):
    """Where one device stands against one CVE."""

    EXPOSED = "exposed"
    UNKNOWN = "unknown"
    RESTART_PENDING = "restart-pending"
    FIXED = "fixed"


def covers(installed: Supplement, fix: Supplement) -> bool:
    """Whether ``installed`` carries ``fix``: the same one, or a later (cumulative) letter."""
    return (
        installed.platform == fix.platform
        and installed.prerequisite_build == fix.prerequisite_build
        and installed.version >= fix.version
    )


def concerns(platform: str | None, supplement: Supplement, known_platforms: frozenset[str]) -> bool:
    """Whether a device on ``platform`` (``None``: not reported) may need ``supplement``.

    A device whose platform bsi does not know might need any supplement, so it
    concerns every one: it is unknown for each, never silently left out.
    """
    return platform is None or platform == supplement.platform or platform not in known_platforms


def standing(
    fixes: Sequence[Supplement],
    *,
    platform: str | None,
    product_version: ProductVersion | None,
    outcome: Outcome,
    target: Supplement | None,
    known_platforms: frozenset[str],
) -> Standing | None:
    """One device's standing against a CVE fixed by ``fixes``; ``None`` when it does not concern it.

    ``outcome`` and ``target`` are the device's decision and the supplement it is
    about (to install, lacking, or installed). A device on a release that folded
    a fix in is fixed. The server calls this per group of devices, the offline
    report per device, so both count alike.
    """
    if outcome is Outcome.UNKNOWN:
        relevant = any(concerns(platform, fix, known_platforms) for fix in fixes)
        return Standing.UNKNOWN if relevant else None
    if target is not None and any(covers(target, fix) for fix in fixes):
        if outcome is Outcome.RESTART_PENDING:
            return Standing.RESTART_PENDING
        if outcome is Outcome.UP_TO_DATE:
            return Standing.FIXED
        return Standing.EXPOSED
    if outcome is Outcome.UP_TO_DATE and product_version is not None:
        folded = any(
            fix.platform == platform
            and fix.superseded_by is not None
            and fix.superseded_by.version <= product_version
            for fix in fixes
        )
        return Standing.FIXED if folded else None
    return None


@dataclass(frozen=True, slots=True)
class DeviceCompliance:
    """One device's row: its facts (``None`` when it gave none usable), supplement, decision."""

    device_id: str
    facts: DeviceFacts | None
    installed: Supplement | None
    decision: Decision


@dataclass(slots=True)
class SupplementSummary:
    """How one supplement stands across the fleet."""

    supplement: Supplement
    installed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    blocked: Counter[Reason] = field(default_factory=Counter)
    unknown: list[str] = field(default_factory=list)
    restart_pending: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CveExposure:
    """Devices per standing against ``cve``: exposed, unknown, restart-pending, fixed."""

    cve: str
    supplements: set[str] = field(default_factory=set)
    exposed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    restart_pending: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)

    def devices(self, which: Standing) -> list[str]:
        return {
            Standing.EXPOSED: self.exposed,
            Standing.UNKNOWN: self.unknown,
            Standing.RESTART_PENDING: self.restart_pending,
            Standing.FIXED: self.fixed,
        }[which]


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
    unplaced: Iterable[tuple[str, Decision]] = (),
) -> ComplianceReport:
    """Decide for every device, then summarise per supplement and per CVE.

    ``unplaced`` are devices without usable facts (no report yet, an invalid
    one) with their ``unknown`` decision: they are rows and counts like any other.
    """
    rows = [DeviceCompliance(device_id, None, None, decision) for device_id, decision in unplaced]
    for device_id, reported in devices:
        facts = resolve(reported, catalog)
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
        supplements=tuple(_per_supplement(rows, catalog)),
        cves=tuple(_per_cve(rows, catalog)),
    )


def _per_supplement(rows: list[DeviceCompliance], catalog: Catalog) -> list[SupplementSummary]:
    summaries = {(s.platform, str(s.build)): SupplementSummary(s) for s in catalog.supplements}
    known = catalog.platforms()

    def summary(supplement: Supplement) -> SupplementSummary:
        key = (supplement.platform, str(supplement.build))
        return summaries.setdefault(key, SupplementSummary(supplement))

    for row in rows:
        outcome, target = row.decision.outcome, row.decision.supplement
        if outcome is Outcome.UNKNOWN:
            platform = row.facts.platform if row.facts else None
            for entry in summaries.values():
                if concerns(platform, entry.supplement, known):
                    entry.unknown.append(row.device_id)
            continue
        if outcome is Outcome.RESTART_PENDING and target is not None:
            summary(target).restart_pending.append(row.device_id)
            continue
        if row.installed is not None:
            summary(row.installed).installed.append(row.device_id)
        if target is None or target == row.installed:
            continue
        if outcome in PENDING:
            summary(target).pending.append(row.device_id)
        elif outcome is Outcome.BLOCKED:
            summary(target).blocked[row.decision.reason] += 1
    return sorted(
        (s for s in summaries.values() if _counted(s)),
        key=lambda s: (s.supplement.platform, s.supplement.version),
        reverse=True,
    )


def _counted(summary: SupplementSummary) -> bool:
    return bool(
        summary.installed
        or summary.pending
        or summary.blocked
        or summary.unknown
        or summary.restart_pending
    )


def fixes_by_cve(catalog: Catalog) -> dict[str, list[Supplement]]:
    """Each CVE the catalogue's supplements fix, with the supplements that fix it."""
    fixes: dict[str, list[Supplement]] = {}
    for supplement in catalog.supplements:
        for cve in supplement.cves:
            fixes.setdefault(cve, []).append(supplement)
    return fixes


def _per_cve(rows: list[DeviceCompliance], catalog: Catalog) -> list[CveExposure]:
    known = catalog.platforms()
    exposures = []
    for cve, fixes in fixes_by_cve(catalog).items():
        exposure = CveExposure(cve, {fix.display() for fix in fixes})
        for row in rows:
            found = standing(
                fixes,
                platform=row.facts.platform if row.facts else None,
                product_version=row.facts.product_version if row.facts else None,
                outcome=row.decision.outcome,
                target=row.decision.supplement,
                known_platforms=known,
            )
            if found is not None:
                exposure.devices(found).append(row.device_id)
        if exposure.exposed or exposure.unknown or exposure.restart_pending or exposure.fixed:
            exposures.append(exposure)
    return sorted(exposures, key=lambda e: (-len(e.exposed), -len(e.unknown), e.cve))
