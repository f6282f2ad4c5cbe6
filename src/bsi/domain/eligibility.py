"""The eligibility engine: one device, one catalogue, one policy, one instant.

``decide`` is the single place the BSI rules live. The server, the Linux agent
and the Apple compliance report all call it, so a rule is written once:

1. A supplement installs only on its prerequisite (a build; on stock Linux
   hosts installed package versions or file digests, see
   :mod:`bsi.domain.prerequisite`), on a supported device, at or above the
   platform's minimum version (26.1 for Apple).
2. A later letter for the same prerequisite is cumulative and replaces an
   earlier one; a newer minor release folds supplements in, and so does a
   package at or past the supplement's ``fixed_in`` version.
3. On battery a device needs a minimum charge, by architecture.
4. ``InstallSecurityUpdate`` and ``RapidSecurityResponse.Enable`` steer
   whether it installs; an ``enforcement.specific`` for the supplement's build
   forces it by a local-time deadline even where ``Enable`` is false.
5. Fail closed (DESIGN rule 7): a device bsi cannot place in the catalogue
   (platform, build, model, installed supplement) is ``unknown`` with the
   reason, never ``up-to-date``.

Every decision carries a stable :class:`Reason` code for machines and a
sentence for people.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from bsi.domain.catalog import Catalog, Release, Supplement, SupplementState
from bsi.domain.containers import ContainerFacts, images
from bsi.domain.facts import DeviceFacts
from bsi.domain.inventory import resolve
from bsi.domain.policy import Enforcement, InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.domain.prerequisite import Match, Placement, folded_in, place, place_image
from bsi.domain.versions import Build, ProductVersion


class Outcome(StrEnum):
    INSTALL = "install"
    ENFORCED = "enforced"
    UP_TO_DATE = "up-to-date"
    DEFERRED = "deferred"
    BLOCKED = "blocked"
    UNKNOWN = "unknown"
    RESTART_PENDING = "restart-pending"


class Reason(StrEnum):
    """Stable, machine-readable reason codes. Never rename one: reports key on them."""

    # install / enforced
    AUTOMATIC = "automatic"
    OFFERED = "offered-to-user"
    ENFORCEMENT_DEADLINE = "enforcement-deadline"
    # up to date
    SUPPLEMENT_INSTALLED = "supplement-installed"
    INCLUDED_IN_RELEASE = "included-in-release"
    NO_SUPPLEMENT = "no-supplement"
    # restart pending: the supplement is on disk, old content still runs
    OLD_CONTENT_RUNNING = "old-content-running"
    # deferred
    BATTERY_LOW = "battery-low"
    ROLLOUT_WAVE = "rollout-wave"  # its wave of the supplement's rollout is not open
    MAINTENANCE_WINDOW = "maintenance-window"  # outside its group's window
    # blocked
    NOT_LATEST_MINOR = "not-latest-minor"
    BELOW_MINIMUM_VERSION = "below-minimum-version"
    UNSUPPORTED_DEVICE = "unsupported-device"
    POLICY_ALWAYS_OFF = "policy-always-off"
    USER_OFFER_DISABLED = "user-offer-disabled"
    SUPPLEMENT_PAUSED = "supplement-paused"
    SUPPLEMENT_WITHDRAWN = "supplement-withdrawn"
    SUPPLEMENT_EXPIRED = "supplement-expired"
    # unknown: bsi cannot place the device, so it cannot say it is protected
    UNKNOWN_PLATFORM = "unknown-platform"
    UNKNOWN_BUILD = "unknown-build"
    UNKNOWN_MODEL = "unknown-model"
    NOT_REPORTED = "not-reported"
    STATUS_INVALID = "status-invalid"
    PREREQUISITE_MISMATCH = "prerequisite-mismatch"  # another package version or file content
    PREREQUISITE_UNKNOWN = "prerequisite-unknown"  # packages or digests not reported


@dataclass(frozen=True, slots=True)
class Rules:
    """The tunable constants of the engine, per platform.

    ``battery_minimum_percent`` maps a platform to an architecture to the least
    charge needed on battery; the ``"*"`` platform is the default for any
    platform not named.
    """

    minimum_versions: Mapping[str, ProductVersion] = field(
        default_factory=lambda: {
            "macOS": ProductVersion(26, 1),
            "iOS": ProductVersion(26, 1),
            "iPadOS": ProductVersion(26, 1),
        }
    )
    battery_minimum_percent: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {"*": {"arm64": 10.0, "aarch64": 10.0, "x86_64": 20.0}}
    )
    # Apple's schema marks AutomaticActions.InstallSecurityUpdate "n/a" on iOS:
    # there only RapidSecurityResponse.Enable and enforcements steer supplements.
    install_security_update_ignored_on: frozenset[str] = frozenset({"iOS", "iPadOS"})

    def battery_threshold(self, platform: str, architecture: str | None) -> float | None:
        table = self.battery_minimum_percent.get(
            platform, self.battery_minimum_percent.get("*", {})
        )
        if architecture is None:
            return max(table.values(), default=None)
        return table.get(architecture)


DEFAULT_RULES = Rules()


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer for one device.

    ``supplement`` is the supplement the decision is about (the one to install,
    or the one the device lacks and why); ``install_first`` names the release
    to install before any supplement can apply; ``deadline`` is the local-time
    enforcement deadline when one applies. ``containers`` are the decisions for a
    Docker or Podman host's running containers (:func:`with_containers`), empty
    for any other device.
    """

    outcome: Outcome
    reason: Reason
    message: str
    supplement: Supplement | None = None
    install_first: str | None = None
    deadline: datetime | None = None
    containers: tuple[ContainerDecision, ...] = ()

    @property
    def exposed(self) -> bool:
        """True when the device lacks a supplement that applies to its line.

        An ``unknown`` device is neither exposed nor fixed: it is counted apart.
        """
        return self.supplement is not None and self.outcome not in _NOT_EXPOSED


_NOT_EXPOSED = frozenset({Outcome.UP_TO_DATE, Outcome.UNKNOWN, Outcome.RESTART_PENDING})


@dataclass(frozen=True, slots=True)
class ContainerDecision:
    """One running container's decision, a sub-device of its host
    (:mod:`bsi.domain.containers`): its name, the supplemental build its image
    carries (``None``: the base image), and what it needs."""

    name: str
    installed_build: Build | None
    decision: Decision


def unknown(reason: Reason, message: str) -> Decision:
    """The decision for a device bsi cannot place (no report, an invalid one, ...)."""
    return Decision(Outcome.UNKNOWN, reason, message)


def decide(
    facts: DeviceFacts,
    catalog: Catalog,
    policy: SoftwareUpdatePolicy,
    now: datetime,
    rules: Rules = DEFAULT_RULES,
) -> Decision:
    """Decide what ``facts``' device should do about supplements at ``now`` (UTC-aware).

    Never ``up-to-date`` for a device the catalogue cannot place: see :func:`_place`.
    """
    if not catalog.knows_platform(facts.platform):
        known = ", ".join(sorted(catalog.platforms())) or "none"
        return unknown(
            Reason.UNKNOWN_PLATFORM,
            f"the catalogue has nothing for platform {facts.platform!r} (it knows: {known}); "
            "import a catalogue for it, or check the platform name the device reports",
        )
    facts = resolve(facts, catalog)
    minimum = rules.minimum_versions.get(facts.platform)
    if minimum is not None and facts.product_version < minimum:
        return Decision(
            Outcome.BLOCKED,
            Reason.BELOW_MINIMUM_VERSION,
            f"{facts.platform} {facts.product_version} is below {minimum}, the first version "
            f"that receives Background Security Improvements; update to {facts.platform} "
            f"{minimum} or later",
            install_first=f"{facts.platform} {minimum} or later",
        )

    device_ids = catalog.known_device_ids(facts.model_identifier, facts.software_update_device_id)
    unplaced = _unplaced(facts, catalog, device_ids)
    if unplaced is not None:
        return unplaced
    decision = _decide_placed(facts, catalog, policy, now, rules, device_ids)
    if decision.outcome is not Outcome.UP_TO_DATE:
        return decision
    decision = _confirm_up_to_date(facts, catalog, decision)
    if facts.restart_pending and decision.reason is Reason.SUPPLEMENT_INSTALLED:
        installed = decision.supplement
        shown = installed.display() if installed else f"supplement {facts.supplemental_build}"
        return Decision(
            Outcome.RESTART_PENDING,
            Reason.OLD_CONTENT_RUNNING,
            f"{shown} is installed, but some affected processes still run the old content "
            "until they relaunch: fixed on disk, not live",
            supplement=installed,
        )
    return decision


def _unplaced(facts: DeviceFacts, catalog: Catalog, device_ids: list[str]) -> Decision | None:
    """``unknown`` when the catalogue lists the device's version or models and not this device."""
    builds = catalog.builds_of(facts.platform, facts.product_version)
    if builds and facts.build not in builds:
        listed = ", ".join(str(b) for b in sorted(builds))
        return unknown(
            Reason.UNKNOWN_BUILD,
            f"build {facts.build} is not a {facts.platform} {facts.product_version} build the "
            f"catalogue knows ({listed}); update the catalogue, or check what the device reports",
        )
    if facts.supplemental_extra is not None and facts.supplemental_build is None:
        return unknown(
            Reason.UNKNOWN_BUILD,
            f"the device reports supplement {facts.supplemental_extra} without its supplemental "
            f"build, and the catalogue lists no such supplement for build {facts.build}",
        )
    if catalog.lists_device(facts.platform, device_ids) is False:
        shown = ", ".join(device_ids) if device_ids else "no model or device id reported"
        return unknown(
            Reason.UNKNOWN_MODEL,
            f"no {facts.platform} release or supplement in the catalogue lists this device "
            f"({shown}); import a catalogue that knows it (SOFA maps models to board ids)",
        )
    return None


def _confirm_up_to_date(facts: DeviceFacts, catalog: Catalog, decision: Decision) -> Decision:
    """``up-to-date`` stands only on a catalogued release and a catalogued supplement."""
    if catalog.builds_of(facts.platform, facts.product_version) is None:
        return unknown(
            Reason.UNKNOWN_BUILD,
            f"the catalogue lists no {facts.platform} {facts.product_version} release, so bsi "
            f"cannot tell whether build {facts.build} carries the fixes; update the catalogue",
        )
    installed = facts.supplemental_build
    if installed is not None and catalog.supplement_by_build(facts.platform, installed) is None:
        return unknown(
            Reason.UNKNOWN_BUILD,
            f"supplemental build {installed} is not in the catalogue for {facts.platform}; "
            "update the catalogue, or check what the device reports",
        )
    return decision


def _decide_placed(
    facts: DeviceFacts,
    catalog: Catalog,
    policy: SoftwareUpdatePolicy,
    now: datetime,
    rules: Rules,
    device_ids: list[str],
) -> Decision:
    """The BSI rules for a device whose platform, build and model the catalogue knows."""
    on_platform = catalog.supplements_for(facts.platform)
    placements = {s.build: placement(s, facts) for s in on_platform}
    met = [s for s in on_platform if placements[s.build].match is Match.MET]
    if not met:
        return _without_own_supplement(facts, on_platform, placements, device_ids, now)
    # One line per device, as on Apple's: the letters of the newest met prerequisite.
    line_of = max(met, key=lambda s: s.version).prerequisite
    own_line = [s for s in met if s.prerequisite == line_of]

    current = _newest(own_line, now)
    if current is None:
        return _no_live_supplement(facts, own_line, device_ids, catalog, now)
    if not current.supports(device_ids):
        return _unsupported(facts, current, device_ids)
    if facts.supplemental_build is not None and facts.supplemental_build >= current.build:
        installed = catalog.supplement_by_build(facts.platform, facts.supplemental_build)
        shown = installed.version if installed else facts.supplemental_build
        return Decision(
            Outcome.UP_TO_DATE,
            Reason.SUPPLEMENT_INSTALLED,
            f"runs {facts.platform} {shown}, the newest supplement for {_runs(facts)}",
            supplement=installed,
        )
    return _apply_policy(facts, current, own_line, policy, now, rules)


def _newest(line: list[Supplement], now: datetime) -> Supplement | None:
    """The newest letter that is live now; a later letter is cumulative."""
    live = [s for s in line if s.state_at(now) is SupplementState.PUBLISHED]
    return max(live, key=lambda s: s.version, default=None)


def placement(supplement: Supplement, facts: DeviceFacts) -> Placement:
    """How ``facts``' device stands against ``supplement``'s prerequisite."""
    return place(
        supplement.prerequisite,
        build=facts.build,
        manager=facts.package_manager,
        packages=facts.packages,
        files=facts.file_digests,
        images=images(facts.containers),
        asked=facts.packages_asked,
    )


def _without_own_supplement(
    facts: DeviceFacts,
    on_platform: list[Supplement],
    placements: Mapping[Build, Placement],
    device_ids: list[str],
    now: datetime,
) -> Decision:
    """No supplement's prerequisite is met: newer release needed, folded in, or nothing to do."""
    by_packages = [
        (s, reached)
        for s in on_platform
        if (
            reached := folded_in(
                s.fixed_in, facts.package_manager, s.prerequisite.manager, facts.packages
            )
        )
    ]
    if by_packages:
        supplements = sorted({s for s, _ in by_packages}, key=lambda s: s.version)
        carriers = sorted({p.display() for _, reached in by_packages for p in reached})
        return Decision(
            Outcome.UP_TO_DATE,
            Reason.INCLUDED_IN_RELEASE,
            f"runs {', '.join(carriers)}, which includes the fixes of "
            + ", ".join(s.display() for s in supplements),
        )
    live = [
        s
        for s in on_platform
        if s.prerequisite.build is None
        and s.state_at(now) is SupplementState.PUBLISHED
        and s.supports(device_ids)
    ]
    for match, outcome, reason in (
        (Match.NOT_MET, Outcome.BLOCKED, Reason.PREREQUISITE_MISMATCH),
        (Match.UNKNOWN, Outcome.UNKNOWN, Reason.PREREQUISITE_UNKNOWN),
    ):
        stopped = [s for s in live if placements[s.build].match is match]
        if stopped:
            target = max(stopped, key=lambda s: s.version)
            return Decision(
                outcome,
                reason,
                f"{target.display()} {placements[target.build].message}",
                supplement=target,
            )
    newer = [
        s
        for s in on_platform
        if s.prerequisite.build is not None
        and s.version.product > facts.product_version
        and s.version.product.major == facts.product_version.major
        and s.state_at(now) is SupplementState.PUBLISHED
        and s.supports(device_ids)
    ]
    if newer:
        target = max(newer, key=lambda s: s.version)
        release = f"{facts.platform} {target.version.product} ({target.prerequisite_build})"
        return Decision(
            Outcome.BLOCKED,
            Reason.NOT_LATEST_MINOR,
            f"{target.display()} needs {release}; the device runs "
            f"{facts.product_version} ({facts.build}): install {release} first",
            supplement=target,
            install_first=release,
        )
    folded = [
        s
        for s in on_platform
        if s.superseded_by is not None and s.superseded_by.version <= facts.product_version
    ]
    if folded:
        return Decision(
            Outcome.UP_TO_DATE,
            Reason.INCLUDED_IN_RELEASE,
            f"runs {facts.platform} {facts.product_version}, which includes the fixes of "
            + ", ".join(str(s.version) for s in sorted(folded, key=lambda s: s.version)),
        )
    if facts.build:
        message = f"no supplement is published for {facts.platform} build {facts.build}"
    else:
        message = f"no supplement published for {facts.platform} applies to {_runs(facts)}"
    return Decision(Outcome.UP_TO_DATE, Reason.NO_SUPPLEMENT, message)


def _runs(facts: DeviceFacts) -> str:
    """What a device runs as a decision's message names it: its build, or, for a host
    placed by its installed packages (no build), those."""
    return f"build {facts.build}" if facts.build else "the packages this device runs"


def _no_live_supplement(
    facts: DeviceFacts,
    line: list[Supplement],
    device_ids: list[str],
    catalog: Catalog,
    now: datetime,
) -> Decision:
    """Supplements exist for the build but none is live: say which rule stops them."""
    newest = max(line, key=lambda s: s.version)
    if facts.supplemental_build is not None and facts.supplemental_build >= newest.build:
        return Decision(
            Outcome.UP_TO_DATE,
            Reason.SUPPLEMENT_INSTALLED,
            f"runs {facts.platform} {newest.version}",
            supplement=catalog.supplement_by_build(facts.platform, facts.supplemental_build),
        )
    state = newest.state_at(now)
    if state is SupplementState.SUPERSEDED and newest.superseded_by is not None:
        latest = catalog.latest_release(
            facts.platform, device_ids, facts.product_version.major, now
        )
        target = _install_first(facts.platform, newest, latest)
        return Decision(
            Outcome.BLOCKED,
            Reason.NOT_LATEST_MINOR,
            f"{newest.display()} was folded into {facts.platform} "
            f"{newest.superseded_by.version}, and the device is still on "
            f"{facts.product_version} ({facts.build}): install {target} first",
            supplement=newest,
            install_first=target,
        )
    reason, wording = {
        SupplementState.PAUSED: (Reason.SUPPLEMENT_PAUSED, "is paused by its publisher"),
        SupplementState.WITHDRAWN: (Reason.SUPPLEMENT_WITHDRAWN, "was withdrawn by its publisher"),
        SupplementState.EXPIRED: (Reason.SUPPLEMENT_EXPIRED, f"expired on {newest.expires}"),
    }.get(state, (Reason.NO_SUPPLEMENT, "is not posted yet"))
    if reason is Reason.NO_SUPPLEMENT:
        return Decision(
            Outcome.UP_TO_DATE,
            reason,
            f"{newest.display()} is not posted yet (posting date {newest.posted})",
        )
    return Decision(Outcome.BLOCKED, reason, f"{newest.display()} {wording}", supplement=newest)


def _install_first(platform: str, supplement: Supplement, latest: Release | None) -> str:
    superseding = supplement.superseded_by
    assert superseding is not None
    if latest is not None and latest.version >= superseding.version:
        return latest.display()
    build = f" ({superseding.build})" if superseding.build else ""
    return f"{platform} {superseding.version}{build} or later"


def _unsupported(facts: DeviceFacts, supplement: Supplement, device_ids: list[str]) -> Decision:
    known = ", ".join(device_ids) if device_ids else "no model or device id reported"
    return Decision(
        Outcome.BLOCKED,
        Reason.UNSUPPORTED_DEVICE,
        f"{supplement.display()} does not list this device ({known}) among its supported devices",
        supplement=supplement,
    )


def _apply_policy(
    facts: DeviceFacts,
    supplement: Supplement,
    line: list[Supplement],
    policy: SoftwareUpdatePolicy,
    now: datetime,
    rules: Rules,
) -> Decision:
    """Policy first (it may forbid), then the battery (it may only delay)."""
    enforcement = _enforcement_for(supplement, line, policy.enforcements)
    deadline = enforcement.deadline if enforcement else None
    automatic = policy.install_security_update
    if facts.platform in rules.install_security_update_ignored_on:
        automatic = InstallSecurityUpdate.ALLOWED
    if enforcement is not None and deadline is not None:
        local_now = (now + timedelta(minutes=facts.utc_offset_minutes)).replace(tzinfo=None)
        due = "now: the deadline has passed" if local_now >= deadline else f"by {deadline} local"
        outcome, reason = Outcome.ENFORCED, Reason.ENFORCEMENT_DEADLINE
        message = f"install {supplement.display()} {due} (enforced by {enforcement.identifier})"
    elif automatic is InstallSecurityUpdate.ALWAYS_OFF:
        return Decision(
            Outcome.BLOCKED,
            Reason.POLICY_ALWAYS_OFF,
            f"policy sets InstallSecurityUpdate to AlwaysOff, so {supplement.display()} "
            "is not installed",
            supplement=supplement,
        )
    elif automatic is InstallSecurityUpdate.ALWAYS_ON:
        outcome, reason = Outcome.INSTALL, Reason.AUTOMATIC
        message = f"install {supplement.display()} ({supplement.build}) automatically"
    elif not policy.rapid_security_response_enable:
        return Decision(
            Outcome.BLOCKED,
            Reason.USER_OFFER_DISABLED,
            f"policy sets RapidSecurityResponse.Enable to false, so {supplement.display()} "
            "is not offered to the user",
            supplement=supplement,
        )
    else:
        outcome, reason = Outcome.INSTALL, Reason.OFFERED
        message = f"offer {supplement.display()} ({supplement.build}) to the user"

    threshold = rules.battery_threshold(facts.platform, facts.architecture)
    if (
        facts.on_battery
        and threshold is not None
        and facts.battery_percent is not None
        and facts.battery_percent < threshold
    ):
        return Decision(
            Outcome.DEFERRED,
            Reason.BATTERY_LOW,
            f"{supplement.display()} waits for power: on battery at "
            f"{facts.battery_percent:g} %, below the {threshold:g} % needed on "
            f"{facts.architecture or 'this architecture'}",
            supplement=supplement,
            deadline=deadline,
        )
    return Decision(outcome, reason, message, supplement=supplement, deadline=deadline)


def _enforcement_for(
    supplement: Supplement, line: list[Supplement], enforcements: tuple[Enforcement, ...]
) -> Enforcement | None:
    """The earliest enforcement that targets ``supplement`` or an earlier letter of its line.

    Letters are cumulative, so forcing ``(a)`` is satisfied by installing ``(b)``.
    ``TargetOSVersion`` may be written ``26.3.1`` or ``26.3.1 (a)``: Apple lets
    the OS version win over an inconsistent build, so both must agree.
    """
    covered = {str(s.build) for s in line if s.version <= supplement.version}
    product = str(supplement.version.product)
    matching = [
        e
        for e in enforcements
        if e.target_build_version in covered and e.target_os_version.split(" ")[0] == product
    ]
    return min(matching, key=lambda e: e.deadline, default=None)


def with_containers(
    host: Decision,
    containers: Sequence[ContainerFacts] | None,
    facts: DeviceFacts | None,
    catalog: Catalog,
    policy: SoftwareUpdatePolicy,
    now: datetime,
    rules: Rules = DEFAULT_RULES,
    then: Callable[[Decision], Decision] = lambda decision: decision,
) -> Decision:
    """``host``'s decision with one for each of its running ``containers``.

    Each container is decided by :func:`decide` as the host would be if it ran
    only that container, with the container's own supplement (its image's
    labels), against the catalogue's image supplements only
    (:meth:`~bsi.domain.catalog.Catalog.for_containers`): the host's policy,
    release and rollout (``then``, e.g. its rollout holds) apply to it. A
    container still on its base image while the host's active letter is for
    that base is ``restart-pending`` (the letter is on the host, the container
    does not run it), as is one the host's report says is. Fail closed (DESIGN
    rule 7): when the host is ``unknown`` (``facts`` ``None``: not placed at
    all) every container is ``unknown`` with the host's reason, never fixed.
    """
    if not containers:
        return host
    if facts is None or host.outcome is Outcome.UNKNOWN:
        message = f"its host is unknown: {host.message}"
        decisions = tuple(
            ContainerDecision(c.name, c.supplemental_build, unknown(host.reason, message))
            for c in containers
        )
        return replace(host, containers=decisions)
    images_only = catalog.for_containers()
    active = (
        images_only.supplement_by_build(facts.platform, facts.supplemental_build)
        if facts.supplemental_build is not None
        else None
    )
    decided = []
    for container in containers:
        alone = replace(
            facts,
            supplemental_build=container.supplemental_build,
            supplemental_extra=container.extra_version,
            restart_pending=False,
            package_manager=None,
            packages=None,
            file_digests=None,
            containers=(container,),
        )
        decision = then(decide(alone, images_only, policy, now, rules))
        if (
            active is not None
            and decision.outcome is not Outcome.UNKNOWN
            and (container.restart_pending or _left_behind(container, active))
        ):
            decision = Decision(
                Outcome.RESTART_PENDING,
                Reason.OLD_CONTENT_RUNNING,
                f"{active.display()} is active on its host, but container {container.name} "
                "still runs an image without it until bsi recreates it: not yet fixed",
                supplement=active,
            )
        decided.append(ContainerDecision(container.name, container.supplemental_build, decision))
    return replace(host, containers=tuple(decided))


def _left_behind(container: ContainerFacts, active: Supplement) -> bool:
    """Whether ``container`` is on ``active``'s base image but runs an image without it."""
    if active.prerequisite.image is None:
        return False
    on_base = place_image(active.prerequisite.image, container.base_facts()).match is Match.MET
    installed = container.supplemental_build
    return on_base and (installed is None or installed < active.build)
