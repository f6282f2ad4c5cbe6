"""The agent's pure state machine: what to do next, from what is true now.

Given the device's facts, the catalogue, the policy, the clock and what is on
disk (the active supplement, staged ones, a pending relaunch, past health
failures), :func:`next_steps` answers with an ordered list of steps and the
DDM install state to report. It decides with the same eligibility code the
server and the Apple report use; the runner (``runner.py``) carries the
steps out and is the only part that touches the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from bsi.domain.catalog import Catalog, Supplement, SupplementState
from bsi.domain.eligibility import DEFAULT_RULES, Decision, Outcome, Rules, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.rollout import NO_HOLDS, DeviceHolds
from bsi.domain.status import InstallState
from bsi.domain.versions import Build


class Step(StrEnum):
    """One thing the runner does, in the order given."""

    DISCARD = "discard"  # forget a supplement for a base the OS has left (files are the OS's)
    ROLL_BACK = "roll-back"  # restore the baseline byte for byte
    DOWNLOAD = "download"  # fetch and verify through TUF
    STAGE = "stage"  # unpack into preboot/cryptexes/<build>, verified and read-only
    ACTIVATE = "activate"
    RELAUNCH = "relaunch"
    HEALTH_CHECK = "health-check"


@dataclass(frozen=True, slots=True)
class DiskState:
    """What the agent finds on the host before deciding.

    ``last_good`` is the newest letter that passed its relaunch and health
    check here (committed, see DESIGN "commit"); ``uncommitted`` is the
    active build when its activation has not been committed yet (the agent
    stopped between activation and a passing health check). ``failed_builds``
    failed their health check here and ``removed_builds`` were removed by an
    administrator (``bsi agent rollback``); neither is installed again until
    the server allows it (``POST /v1/admin/supplements/.../allow-retry``) or
    a newer letter appears.
    """

    active_build: Build | None = None
    active_prerequisite: Build | None = None
    active_folded_in: str | None = None
    """What now carries the active supplement's fix (``libssl3 3.0.20-1``): it is forgotten."""
    staged: frozenset[Build] = frozenset()
    restart_pending: bool = False
    failed_builds: frozenset[Build] = frozenset()
    removed_builds: frozenset[Build] = frozenset()
    last_good: Build | None = None
    uncommitted: Build | None = None
    relaunching: Build | None = None
    """The build whose files last changed, while processes may still use the old ones."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The steps of one cycle, and why.

    ``target`` is the supplement the plan activates (``None``: it activates
    nothing); ``verifying`` is the build an ``uncommitted`` activation whose
    relaunch and health check the plan runs again.
    """

    steps: tuple[tuple[Step, Build | None], ...]
    decision: Decision | None
    target: Supplement | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    verifying: Build | None = None

    @property
    def install_state(self) -> InstallState:
        kinds = {step for step, _ in self.steps}
        if Step.DOWNLOAD in kinds:
            return InstallState.DOWNLOADING
        if Step.ACTIVATE in kinds or Step.HEALTH_CHECK in kinds:
            return InstallState.INSTALLING
        if Step.STAGE in kinds:
            return InstallState.PREPARED
        return InstallState.NONE


def next_steps(
    facts: DeviceFacts,
    catalog: Catalog,
    policy: SoftwareUpdatePolicy,
    now: datetime,
    disk: DiskState,
    rules: Rules = DEFAULT_RULES,
    holds: DeviceHolds = NO_HOLDS,
) -> Plan:
    """The steps that bring the host to what the rules say it should run.

    Rules (DESIGN rules 6-9): a supplement for a base the OS left is
    discarded; a withdrawn one is rolled back; an uncommitted activation is
    verified again (relaunch + health check), or, if it already failed,
    replaced by the last good letter; a later letter replaces the active
    one; a letter that failed here (or that an administrator removed) is
    not installed again, and the host returns to the last good letter
    instead of staying on the baseline. Every change of what runs is
    followed by a relaunch. An install is held back by ``holds`` (the
    device's rollout wave and maintenance window, as the server sent them):
    the decision is then ``deferred`` with the reason.
    """
    steps: list[tuple[Step, Build | None]] = []
    reasons: list[str] = []
    active = disk.active_build
    if active is not None and disk.active_prerequisite not in (None, facts.build):
        # A new OS release replaced the base: the supplement's files are gone with it.
        steps.append((Step.DISCARD, active))
        reasons.append(f"the OS moved from {disk.active_prerequisite} to {facts.build}")
        active = None
    if active is not None and disk.active_folded_in is not None:
        # The distribution's own update carries the fix: the files are the package's now.
        steps.append((Step.DISCARD, active))
        reasons.append(f"{disk.active_folded_in} now carries the fix of {active}")
        active = None
    rolled_back: Build | None = None
    if active is not None:
        running = catalog.supplement_by_build(facts.platform, active)
        if running is not None and running.state_at(now) is SupplementState.WITHDRAWN:
            steps.append((Step.ROLL_BACK, active))
            reasons.append(f"{running.display()} was withdrawn")
            rolled_back, active = active, None
    refused = disk.failed_builds | disk.removed_builds
    if active is not None and active == disk.uncommitted and active not in refused:
        reasons.append(
            f"{active} was activated but not committed (the agent stopped before its "
            "health check passed); verifying it again"
        )
        decision = decide(_with_active(facts, active), catalog, policy, now, rules)
        steps += [(Step.RELAUNCH, active), (Step.HEALTH_CHECK, active)]
        return Plan(tuple(steps), decision, None, tuple(reasons), verifying=active)

    decision = holds.apply(decide(_with_active(facts, active), catalog, policy, now, rules), now)
    target = decision.supplement
    want = active
    installing = decision.outcome in (Outcome.INSTALL, Outcome.ENFORCED) and target is not None
    fall_back = False
    if installing and target is not None and target.build in refused:
        reasons.append(_not_retried(target.display(), target.build in disk.removed_builds))
        installing, fall_back = False, True
    if installing and target is not None:
        want = target.build
    elif active is not None and active in refused:
        # Still live though refused: the agent stopped mid-fallback or mid-rollback.
        why = (
            "was removed by an administrator"
            if active in disk.removed_builds
            else "failed its health check here"
        )
        reasons.append(f"{active} {why}; taking it back")
        want, fall_back = None, True
    if fall_back:
        fallback = _last_good(facts, catalog, now, disk, refused)
        if fallback is not None:
            if fallback.build != active:
                reasons.append(f"returning to the last good letter, {fallback.display()}")
            target, want = fallback, fallback.build
    if want != active:
        # Download and stage before taking the active letter back: a bundle that fails its
        # TUF check or staging policy then leaves the host on that letter (DESIGN rule 8).
        if want is not None and target is not None and want not in disk.staged:
            steps += [(Step.DOWNLOAD, want), (Step.STAGE, want)]
        if active is not None:
            steps.append((Step.ROLL_BACK, active))
            rolled_back = active
        if want is not None and target is not None:
            steps += [(Step.ACTIVATE, want), (Step.RELAUNCH, want), (Step.HEALTH_CHECK, want)]
            return Plan(tuple(steps), decision, target, tuple(reasons))
    if rolled_back is not None:
        # Back on the baseline: the processes still run the removed content.
        steps.append((Step.RELAUNCH, rolled_back))
    elif disk.restart_pending and (disk.relaunching in disk.staged or active is not None):
        # Still on old content, or the agent stopped after files moved (a kill
        # mid-rollback leaves no active build): relaunch with the changed build.
        changed = disk.relaunching if disk.relaunching in disk.staged else active
        steps.append((Step.RELAUNCH, changed))
    return Plan(tuple(steps), decision, None, tuple(reasons))


def _not_retried(name: str, removed: bool) -> str:
    why = (
        "was removed by an administrator here (bsi agent rollback)"
        if removed
        else "failed its health check here"
    )
    return (
        f"{name} {why}; not installed again until the server allows it "
        "(allow-retry) or a newer letter appears"
    )


def _last_good(
    facts: DeviceFacts,
    catalog: Catalog,
    now: datetime,
    disk: DiskState,
    refused: frozenset[Build],
) -> Supplement | None:
    """The last good letter, if the host may return to it: same base, not withdrawn or refused."""
    if disk.last_good is None or disk.last_good in refused:
        return None
    found = catalog.supplement_by_build(facts.platform, disk.last_good)
    if found is None or found.prerequisite_build != facts.build:
        return None
    if found.state_at(now) is SupplementState.WITHDRAWN:
        return None
    return found


def _with_active(facts: DeviceFacts, active: Build | None) -> DeviceFacts:
    return replace(facts, supplemental_build=active, supplemental_extra=None)
