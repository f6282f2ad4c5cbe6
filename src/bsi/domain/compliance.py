"""Fleet compliance: decisions for many devices, summarised per supplement and per CVE.

Pure: the caller has already read the status reports and the catalogue and
chosen the instant; this module only counts. It answers the admin's question
"which devices run 26.3.1 (a), which cannot get it, and why?".

Fail closed (DESIGN rule 7): devices bsi cannot place (``unknown``) and
devices whose supplement is on disk but not live (``restart-pending``) are
counted apart, never as fixed, wherever counts appear.

The running containers of Docker and Podman hosts are sub-devices of their
host (:mod:`bsi.domain.containers`): each has its own decision
(:func:`~bsi.domain.eligibility.with_containers`) and is counted beside the
devices, against image supplements only, in ``containers`` (the same
standings); a host bsi cannot place makes its containers ``unknown``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.cves import CvssScore, merge_cvss_vectors, score_cvss
from bsi.domain.eligibility import (
    DEFAULT_RULES,
    ContainerDecision,
    Decision,
    Outcome,
    Rules,
    decide,
    with_containers,
)
from bsi.domain.facts import DeviceFacts
from bsi.domain.inventory import resolve
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import dump_base
from bsi.domain.versions import Build, ProductVersion

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
    installed: Supplement | None = None,
) -> Standing | None:
    """One device's standing against a CVE fixed by ``fixes``; ``None`` when it does not concern it.

    ``outcome`` and ``target`` are the device's decision and the supplement it is
    about (to install, lacking, or installed), ``installed`` the supplement it runs. A
    device that runs a fix (or a later letter of it) is fixed, even with a later letter
    pending; so is a device on a release that folded a fix in. The server calls this
    per group of devices, the offline report per device, so both count alike.
    """
    if outcome is Outcome.UNKNOWN:
        relevant = any(concerns(platform, fix, known_platforms) for fix in fixes)
        return Standing.UNKNOWN if relevant else None
    if target is not None and any(covers(target, fix) for fix in fixes):
        if outcome is Outcome.RESTART_PENDING:
            return Standing.RESTART_PENDING
        if installed is not None and any(covers(installed, fix) for fix in fixes):
            return Standing.FIXED
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


@dataclass(frozen=True, slots=True)
class FleetGroup:
    """Devices that share everything the summary reads: platform, version, the supplement
    they run, and their decision (outcome, reason, the supplement it is about).

    The server counts its stored decisions in such groups (``count`` devices, ids not
    read); the offline report makes one group per device (``devices`` its id). Both are
    summarised by :func:`summarize`, so both count alike. With ``containers`` the group
    counts hosts' running containers (sub-devices, no ids) instead of devices: they
    count against image supplements only, in each summary's ``containers``.
    """

    platform: str | None
    product_version: ProductVersion | None
    installed: Supplement | None
    outcome: Outcome
    reason: str
    target: Supplement | None
    count: int = 1
    devices: tuple[str, ...] = ()
    containers: bool = False

    @classmethod
    def of_container(
        cls, platform: str | None, container: ContainerDecision, catalog: Catalog
    ) -> FleetGroup:
        """One container of a host on ``platform`` (no release: a container is not on it)."""
        installed = container.installed_build
        return cls(
            platform=platform,
            product_version=None,
            installed=(
                catalog.supplement_by_build(platform, installed)
                if platform is not None and installed is not None
                else None
            ),
            outcome=container.decision.outcome,
            reason=container.decision.reason.value,
            target=container.decision.supplement,
            containers=True,
        )

    @classmethod
    def of_device(cls, row: DeviceCompliance) -> FleetGroup:
        facts = row.facts
        return cls(
            platform=facts.platform if facts else None,
            product_version=facts.product_version if facts else None,
            installed=row.installed,
            outcome=row.decision.outcome,
            reason=row.decision.reason.value,
            target=row.decision.supplement,
            devices=(row.device_id,),
        )


@dataclass(slots=True)
class Tally:
    """How many devices, and which when the caller read them one by one (else ``[]``)."""

    count: int = 0
    devices: list[str] = field(default_factory=list)

    def add(self, group: FleetGroup) -> None:
        self.count += group.count
        self.devices.extend(group.devices)


@dataclass(slots=True)
class Standings:
    """Devices (or containers) per standing against one supplement; ``blocked`` by reason."""

    installed: Tally = field(default_factory=Tally)
    pending: Tally = field(default_factory=Tally)
    blocked: Counter[str] = field(default_factory=Counter)
    unknown: Tally = field(default_factory=Tally)
    restart_pending: Tally = field(default_factory=Tally)

    @property
    def affected(self) -> int:
        """Counted on it and placed: installed, pending, restart-pending or blocked."""
        return (
            self.installed.count
            + self.pending.count
            + self.restart_pending.count
            + sum(self.blocked.values())
        )

    @property
    def total(self) -> int:
        """Counted for it in any standing (an unknown device counts for every
        supplement that may concern it)."""
        return self.affected + self.unknown.count


@dataclass(slots=True)
class SupplementSummary(Standings):
    """How one supplement stands across the fleet: its devices, and in ``containers``
    the running containers of hosts (image supplements only)."""

    supplement: Supplement = field(kw_only=True)
    containers: Standings = field(default_factory=Standings)

    @property
    def counted(self) -> bool:
        """Whether any device or container is counted for it (a supplement nothing
        concerns is not)."""
        return self.total > 0 or self.containers.total > 0


@dataclass(slots=True)
class Exposure:
    """Devices (or containers) per standing against a CVE: exposed, unknown,
    restart-pending, fixed."""

    exposed: Tally = field(default_factory=Tally)
    unknown: Tally = field(default_factory=Tally)
    restart_pending: Tally = field(default_factory=Tally)
    fixed: Tally = field(default_factory=Tally)

    def devices(self, which: Standing) -> Tally:
        tally: Tally = getattr(self, _key(which))
        return tally

    @property
    def counted(self) -> bool:
        return any(self.devices(which).count for which in Standing)


@dataclass(slots=True)
class CveExposure(Exposure):
    """Devices per standing against ``cve``, and hosts' running containers in
    ``containers`` (against the CVE's image supplements)."""

    cve: str = field(kw_only=True)
    supplements: set[str] = field(default_factory=set, kw_only=True)
    containers: Exposure = field(default_factory=Exposure)
    cvss: CvssScore | None = field(default=None, kw_only=True)
    """The CVE's CVSS 3.x score, the highest its supplements' vectors give (None: unscored)."""
    fixes: frozenset[tuple[str, str]] = field(default=frozenset(), kw_only=True)
    """``(platform, build)`` of each supplement that fixes it (the console links their devices)."""

    @property
    def counted(self) -> bool:
        return any(
            self.devices(which).count or self.containers.devices(which).count for which in Standing
        )


@dataclass(frozen=True, slots=True)
class ComplianceSummary:
    """Every supplement (newest first per platform) and every CVE the catalogue's
    supplements fix (most exposed first), with the devices per standing."""

    supplements: tuple[SupplementSummary, ...]
    cves: tuple[CveExposure, ...]


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    """The offline report: each device's row, and the supplements and CVEs that concern
    at least one device."""

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
    """Decide for every device, then summarise per supplement and per CVE (:func:`summarize`).

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
        policy = policy_for(device_id)
        decision = with_containers(
            decide(facts, catalog, policy, now, rules),
            facts.containers,
            facts,
            catalog,
            policy,
            now,
            rules,
        )
        rows.append(DeviceCompliance(device_id, facts, installed, decision))
    rows.sort(key=lambda row: row.device_id)
    summary = summarize(_groups(rows, catalog), catalog)
    for tally in _tallies(summary):
        tally.devices.sort()
    return ComplianceReport(
        as_of=now,
        devices=tuple(rows),
        supplements=tuple(s for s in summary.supplements if s.counted),
        cves=tuple(e for e in summary.cves if e.counted),
    )


def _groups(rows: Iterable[DeviceCompliance], catalog: Catalog) -> Iterable[FleetGroup]:
    """The rows in :class:`FleetGroup` objects, devices sharing what the summary reads in one
    (a fleet has few distinct cases, so the summary runs per case, not per device), then
    their containers, counted alike.

    Supplements are compared by identity (the catalogue's objects): two equal ones
    that are distinct objects only make two groups that count alike.
    """
    groups: dict[tuple[object, ...], tuple[DeviceCompliance, list[str]]] = {}
    containers: Counter[FleetGroup] = Counter()
    for row in rows:
        facts, decision = row.facts, row.decision
        platform = facts.platform if facts else None
        containers.update(
            FleetGroup.of_container(platform, c, catalog) for c in decision.containers
        )
        key = (
            facts.platform if facts else None,
            facts.product_version if facts else None,
            id(row.installed),
            decision.outcome,
            decision.reason,
            id(decision.supplement),
        )
        found = groups.get(key)
        if found is None:
            groups[key] = (row, [row.device_id])
        else:
            found[1].append(row.device_id)
    for first, devices in groups.values():
        yield replace(FleetGroup.of_device(first), count=len(devices), devices=tuple(devices))
    for group, count in containers.items():
        yield replace(group, count=count)


def _tallies(summary: ComplianceSummary) -> Iterable[Tally]:
    """Every tally that lists device ids (the offline report prints them sorted)."""
    for s in summary.supplements:
        yield from (s.installed, s.pending, s.restart_pending, s.unknown)
    for exposure in summary.cves:
        yield from (exposure.devices(which) for which in Standing)


def summarize(groups: Iterable[FleetGroup], catalog: Catalog) -> ComplianceSummary:
    """The one compliance summary: per supplement, devices installed / pending /
    restart-pending / blocked by reason / unknown; per CVE, devices exposed / unknown /
    restart-pending / fixed (:func:`standing`).

    Fail closed (DESIGN rule 7): an ``unknown`` group is unknown for every supplement
    and CVE that may concern it (:func:`concerns`), never installed or fixed; a
    ``restart-pending`` one is counted apart, never as installed.
    """
    known = catalog.platforms()
    fixes = fixes_by_cve(catalog)
    image_fixes = {
        cve: [s for s in supplements if s.prerequisite.image is not None]
        for cve, supplements in fixes.items()
    }
    summaries = {
        (s.platform, s.build): SupplementSummary(supplement=s) for s in catalog.supplements
    }
    exposures = {
        cve: CveExposure(
            cve=cve,
            supplements={fix.display() for fix in supplements},
            cvss=_cvss(cve, supplements),
            fixes=frozenset((fix.platform, str(fix.build)) for fix in supplements),
        )
        for cve, supplements in fixes.items()
    }
    for group in groups:
        _count_supplements(group, summaries, known)
        for cve, supplements in (image_fixes if group.containers else fixes).items():
            if not supplements:
                continue
            found = standing(
                supplements,
                platform=group.platform,
                product_version=group.product_version,
                outcome=group.outcome,
                target=group.target,
                known_platforms=known,
                installed=group.installed,
            )
            if found is not None:
                exposure = exposures[cve]
                (exposure.containers if group.containers else exposure).devices(found).add(group)
    return ComplianceSummary(
        supplements=tuple(
            summaries[(s.platform, s.build)]
            for s in newest_first(entry.supplement for entry in summaries.values())
        ),
        cves=tuple(
            sorted(exposures.values(), key=lambda e: (-e.exposed.count, -e.unknown.count, e.cve))
        ),
    )


def _count_supplements(
    group: FleetGroup,
    summaries: dict[tuple[str, Build], SupplementSummary],
    known: frozenset[str],
) -> None:
    def summary(supplement: Supplement) -> Standings:
        found = summaries.get((supplement.platform, supplement.build))
        if found is None:
            found = summaries[(supplement.platform, supplement.build)] = SupplementSummary(
                supplement=supplement
            )
        return found.containers if group.containers else found

    outcome, target = group.outcome, group.target
    if outcome is Outcome.UNKNOWN:
        for entry in summaries.values():
            if concerns(group.platform, entry.supplement, known) and (
                not group.containers or entry.supplement.prerequisite.image is not None
            ):
                summary(entry.supplement).unknown.add(group)
        return
    if outcome is Outcome.RESTART_PENDING:
        # never installed: on disk, not live (about the supplement it runs when the
        # decision names none, as a server whose catalogue lost it stores)
        about = target or group.installed
        if about is not None:
            summary(about).restart_pending.add(group)
        return
    if group.installed is not None:
        summary(group.installed).installed.add(group)
    if target is None or target == group.installed:
        return
    if outcome in PENDING:
        summary(target).pending.add(group)
    elif outcome is Outcome.BLOCKED:
        summary(target).blocked[group.reason] += group.count


def _cvss(cve: str, supplements: Iterable[Supplement]) -> CvssScore | None:
    """``cve``'s score from its supplements' vectors, the highest where they differ."""
    vector = dict(merge_cvss_vectors(*(s.cvss for s in supplements))).get(cve)
    return None if vector is None else score_cvss(vector)


def fixes_by_cve(catalog: Catalog) -> dict[str, list[Supplement]]:
    """Each CVE the catalogue's supplements fix, with the supplements that fix it."""
    fixes: dict[str, list[Supplement]] = {}
    for supplement in catalog.supplements:
        for cve in supplement.cves:
            fixes.setdefault(cve, []).append(supplement)
    return fixes


# -- the one JSON shape (CLI ``--format json`` and the admin API) -----------

SUPPLEMENT_COLUMNS: tuple[str, ...] = (
    "platform",
    "supplement",
    "build",
    "state",
    "installed",
    "pending",
    "restart_pending",
    "blocked",
    "unknown",
    "containers_affected",
    "containers_installed",
    "containers_pending",
    "containers_restart_pending",
    "containers_blocked",
    "containers_unknown",
)
"""The CSV columns of a supplement's summary (a subset of :func:`supplement_json`'s keys)."""
CVE_COLUMNS: tuple[str, ...] = (
    "cve",
    "cvss_score",
    "severity",
    "supplements",
    "exposed",
    "unknown",
    "restart_pending",
    "fixed",
    "containers_exposed",
    "containers_unknown",
    "containers_restart_pending",
    "containers_fixed",
)
"""The CSV columns of a CVE's exposure (``supplements`` joined by spaces)."""


def supplement_entry(supplement: Supplement, as_of: datetime) -> dict[str, object]:
    """A supplement as every listing prints it (``GET /v1/admin/supplements`` and the
    compliance summaries): identity, base as the catalogue writes it, state at ``as_of``,
    posting day (ISO 8601, ``None`` when unknown), CVEs."""
    return {
        "platform": supplement.platform,
        "supplement": str(supplement.version),
        "build": str(supplement.build),
        **dump_base(supplement.prerequisite, supplement.fixed_in),
        "state": supplement.state_at(as_of).value,
        "posted": supplement.posted.isoformat() if supplement.posted else None,
        "cves": list(supplement.cves),
    }


def newest_first(supplements: Iterable[Supplement]) -> list[Supplement]:
    """Supplements by platform, newest version first: the order every listing uses."""
    return sorted(supplements, key=lambda s: (s.platform, s.version), reverse=True)


def supplement_json(summary: SupplementSummary, as_of: datetime) -> dict[str, object]:
    """One supplement's summary as ``bsi apple compliance --format json`` and
    ``GET /v1/admin/compliance/supplements`` both print it: :func:`supplement_entry`,
    device counts, and hosts' running containers as ``containers_affected`` (placed on
    it: installed + pending + restart-pending + blocked), ``containers_installed``,
    ``containers_pending``, ``containers_restart_pending``, ``containers_blocked``,
    ``containers_unknown``."""
    containers = summary.containers
    return {
        **supplement_entry(summary.supplement, as_of),
        "installed": summary.installed.count,
        "pending": summary.pending.count,
        "restart_pending": summary.restart_pending.count,
        "blocked": sum(summary.blocked.values()),
        "blocked_by_reason": dict(sorted(summary.blocked.items())),
        "unknown": summary.unknown.count,
        "containers_affected": containers.affected,
        "containers_installed": containers.installed.count,
        "containers_pending": containers.pending.count,
        "containers_restart_pending": containers.restart_pending.count,
        "containers_blocked": sum(containers.blocked.values()),
        "containers_unknown": containers.unknown.count,
    }


def cve_json(exposure: CveExposure, *, devices: bool = False) -> dict[str, object]:
    """One CVE's exposure as both print it: its CVSS 3.x ``cvss`` vector, ``cvss_score``
    and ``severity`` (all ``None`` when no supplement's source scored it: Apple's feeds
    do not), device counts per standing, hosts' running
    containers per standing (``containers_exposed``, ``containers_unknown``,
    ``containers_restart_pending``, ``containers_fixed``) and, with ``devices`` (the
    offline report, which reads each device), the device ids as ``exposed_devices``,
    ``unknown_devices``, ``restart_pending_devices``, ``fixed_devices``."""
    cvss = exposure.cvss
    document: dict[str, object] = {
        "cve": exposure.cve,
        "cvss": cvss.vector if cvss else None,
        "cvss_score": cvss.base_score if cvss else None,
        "severity": cvss.severity if cvss else None,
        "supplements": sorted(exposure.supplements),
        **{_key(which): exposure.devices(which).count for which in Standing},
        **{
            f"containers_{_key(which)}": exposure.containers.devices(which).count
            for which in Standing
        },
    }
    if devices:
        for which in Standing:
            document[f"{_key(which)}_devices"] = list(exposure.devices(which).devices)
    return document


def _key(which: Standing) -> str:
    """``exposed``, ``unknown``, ``restart_pending``, ``fixed``."""
    return which.value.replace("-", "_")
