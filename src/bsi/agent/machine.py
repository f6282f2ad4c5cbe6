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


class InstallState(StrEnum):
    """DDM ``softwareupdate.install-state`` values the agent reports."""

    NONE = "none"
    DOWNLOADING = "downloading"
    PREPARED = "prepared"
    INSTALLING = "installing"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DiskState:
    """What the agent finds on the host before deciding."""

    active_build: Build | None = None
    active_prerequisite: Build | None = None
    staged: frozenset[Build] = frozenset()
    restart_pending: bool = False
    failed_builds: frozenset[Build] = frozenset()


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[tuple[Step, Build | None], ...]
    decision: Decision | None
    target: Supplement | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def install_state(self) -> InstallState:
        kinds = {step for step, _ in self.steps}
        if Step.DOWNLOAD in kinds:
            return InstallState.DOWNLOADING
        if Step.ACTIVATE in kinds:
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
) -> Plan:
    """The steps that bring the host to what the rules say it should run."""
    steps: list[tuple[Step, Build | None]] = []
    reasons: list[str] = []
    active = disk.active_build
    if active is not None and disk.active_prerequisite not in (None, facts.build):
        # A new OS release replaced the base: the supplement's files are gone with it.
        steps.append((Step.DISCARD, active))
        reasons.append(f"the OS moved from {disk.active_prerequisite} to {facts.build}")
        active = None
    facts = _with_active(facts, active)
    if active is not None:
        running = catalog.supplement_by_build(facts.platform, active)
        if running is not None and running.state_at(now) is SupplementState.WITHDRAWN:
            steps.append((Step.ROLL_BACK, active))
            reasons.append(f"{running.display()} was withdrawn")
            facts = _with_active(facts, None)
            active = None

    decision = decide(facts, catalog, policy, now, rules)
    target = decision.supplement
    installing = decision.outcome in (Outcome.INSTALL, Outcome.ENFORCED) and target is not None
    if installing and target is not None and target.build in disk.failed_builds:
        reasons.append(f"{target.display()} failed its health check here before; not retried")
        installing = False
    if installing and target is not None:
        if active is not None and active != target.build:
            steps.append((Step.ROLL_BACK, active))  # a later letter replaces the earlier
        if target.build not in disk.staged:
            steps += [(Step.DOWNLOAD, target.build), (Step.STAGE, target.build)]
        steps += [
            (Step.ACTIVATE, target.build),
            (Step.RELAUNCH, target.build),
            (Step.HEALTH_CHECK, target.build),
        ]
    elif disk.restart_pending and active is not None:
        steps.append((Step.RELAUNCH, active))
    return Plan(tuple(steps), decision, target if installing else None, tuple(reasons))


def _with_active(facts: DeviceFacts, active: Build | None) -> DeviceFacts:
    return replace(facts, supplemental_build=active, supplemental_extra=None)
