"""Rollouts: a supplement reaches the fleet in waves, halts on failures, waits for windows.

Pure: no I/O and no clock (every instant is a parameter, UTC-aware).

A :class:`RolloutPlan` is a list of :class:`Wave` s, each the *cumulative*
share of eligible devices reached once it opens (``1 -> 10 -> 50 -> 100``),
optionally with device groups pinned to it (a ``canary`` group in the first
wave), a minimum soak time and the plan's halt rule. ``all_now`` skips the
waves: it is for a supplement whose CVE is actively exploited.

Membership is decided once, when the rollout starts, by a deterministic draw
from ``(supplemental build, device id)`` (:func:`draw`), ranked so every
wave's size is within one device of its share (:func:`assign_waves`). A
device that appears later is placed by its draw alone (:func:`late_wave`),
so no device ever moves from one wave to another: the draw depends only on
the build and the device. This is Ubuntu's phased-update idea (a
per-machine draw seeded by what is being rolled out) with Nebraska's brake:
a wave whose failures pass the halt rule halts the rollout (:func:`step`).

:class:`MaintenanceWindow` is when activation and relaunch may happen on a
group's devices (days, local hours, an IANA time zone).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bsi.domain.declarations import ENFORCEMENT_SPECIFIC, Declaration, enforcement_specific
from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.errors import InvalidPolicy

#: Days of the week as a window names them (ISO order: Monday is 0).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WAVES = 20


class RolloutState(StrEnum):
    RUNNING = "running"
    HALTED = "halted"
    COMPLETED = "completed"
    ABORTED = "aborted"


class WaveState(StrEnum):
    PASSED = "passed"  # opened, soaked and healthy: the next one opened
    OPEN = "open"  # its devices may install now
    WAITING = "waiting"  # opens after the earlier waves pass
    HALTED = "halted"  # the open wave, when its failures halted the rollout


class FailureKind(StrEnum):
    """What counts against a wave's health (issue: install failures, health-check
    rollbacks, fallbacks to an earlier letter, devices that stop reporting)."""

    INSTALL_FAILED = "install-failed"
    HEALTH_CHECK_ROLLBACK = "health-check-rollback"
    FELL_BACK = "fell-back"
    STOPPED_REPORTING = "stopped-reporting"


@dataclass(frozen=True, slots=True)
class Wave:
    """One step of a plan: ``percent`` is cumulative, in (0, 100]."""

    name: str
    percent: float
    groups: frozenset[str] = frozenset()
    soak: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class HaltRule:
    """When the open wave's failures halt the rollout.

    ``max_failures``: halt when failures reach this count (``None``: no
    count limit). ``max_failure_rate``: halt when failures over the wave's
    devices reach this fraction (``None``: no rate limit). ``silence``: a
    device that installed and then sends no status report for this long
    counts as a failure (it may not have come back from its relaunch).
    """

    max_failures: int | None = 1
    max_failure_rate: float | None = None
    silence: timedelta = timedelta(hours=6)

    def tripped(self, failures: int, devices: int) -> bool:
        if failures == 0:
            return False
        if self.max_failures is not None and failures >= self.max_failures:
            return True
        rate = self.max_failure_rate
        return rate is not None and devices > 0 and failures / devices >= rate


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """Waves, the halt rule and what a wave needs before the next opens.

    ``min_success_rate``: the fraction of the open wave's devices that must
    report the supplement installed before the next wave opens (0: soak time
    alone). ``all_now``: every eligible device at once, no waves (actively
    exploited CVEs); the halt rule still applies to the whole fleet.
    """

    waves: tuple[Wave, ...] = (Wave("all", 100.0, soak=timedelta(0)),)
    halt: HaltRule = field(default_factory=HaltRule)
    min_success_rate: float = 0.0
    all_now: bool = False

    @property
    def effective_waves(self) -> tuple[Wave, ...]:
        return (Wave("all", 100.0, soak=timedelta(0)),) if self.all_now else self.waves


ALL_NOW = RolloutPlan(all_now=True)


# -- reading and writing a plan ---------------------------------------------------


def read_plan(document: object, *, known_groups: Iterable[str]) -> RolloutPlan:
    """The plan in an admin's JSON document; :class:`~bsi.errors.InvalidPolicy` names what is wrong.

    Shape (every field but ``waves`` optional; ``waves`` omitted with
    ``all_now: true``)::

        {"waves": [{"name": "canary", "percent": 1, "groups": ["canary"],
                    "soak_hours": 24},
                   {"name": "broad", "percent": 100, "soak_hours": 0}],
         "halt": {"max_failures": 3, "max_failure_rate": 0.05, "silence_hours": 6},
         "min_success_rate": 0.9,
         "all_now": false}

    Refused: no waves, a percentage not above the one before, a last wave
    below 100 (the shares must reach every device), a group in two waves or
    not known, a negative soak, a rate outside [0, 1], unknown fields.
    """
    doc = _fields(document, "plan", {"waves", "halt", "min_success_rate", "all_now"})
    all_now = _boolean(doc.get("all_now", False), "plan.all_now")
    halt = _halt(doc.get("halt", {}))
    min_success = _fraction(doc.get("min_success_rate", 0.0), "plan.min_success_rate")
    if all_now:
        if doc.get("waves"):
            raise InvalidPolicy(
                "plan: all_now and waves together",
                hint="all_now sends the supplement to every device at once; drop the waves",
            )
        return RolloutPlan(halt=halt, min_success_rate=min_success, all_now=True)
    raw_waves = doc.get("waves")
    if not isinstance(raw_waves, list) or not raw_waves:
        raise InvalidPolicy(
            "plan.waves: a plan needs at least one wave",
            hint='e.g. [{"name": "canary", "percent": 1}, {"name": "all", "percent": 100}], '
            "or all_now: true",
        )
    if len(raw_waves) > MAX_WAVES:
        raise InvalidPolicy(f"plan.waves: {len(raw_waves)} waves; at most {MAX_WAVES}")
    waves = tuple(_wave(w, f"plan.waves[{i}]") for i, w in enumerate(raw_waves))
    check_waves(waves, frozenset(known_groups))
    return RolloutPlan(waves=waves, halt=halt, min_success_rate=min_success)


def check_waves(waves: Sequence[Wave], known_groups: frozenset[str]) -> None:
    """Refuse waves that overlap, do not grow, do not reach 100 % or name unknown groups."""
    names: set[str] = set()
    pinned: dict[str, str] = {}
    previous = 0.0
    for i, wave in enumerate(waves):
        where = f"plan.waves[{i}]"
        if wave.name in names:
            raise InvalidPolicy(f"{where}.name: {wave.name!r} names two waves")
        names.add(wave.name)
        if not previous < wave.percent <= 100:
            raise InvalidPolicy(
                f"{where}.percent: {wave.percent:g} is not above the wave before ({previous:g}) "
                "and at most 100",
                hint="percent is cumulative: the share of devices reached once the wave opens",
            )
        previous = wave.percent
        for group in sorted(wave.groups):
            if group not in known_groups:
                raise InvalidPolicy(
                    f"{where}.groups: no group {group!r}",
                    hint="known groups: " + (", ".join(sorted(known_groups)) or "none"),
                )
            if group in pinned:
                raise InvalidPolicy(
                    f"{where}.groups: {group!r} is already in wave {pinned[group]!r}",
                    hint="a group belongs to one wave",
                )
            pinned[group] = wave.name
    if previous != 100:
        raise InvalidPolicy(
            f"plan.waves: the last wave reaches {previous:g} %, not 100 %",
            hint="the last wave's percent must be 100, so every eligible device is reached",
        )


def dump_plan(plan: RolloutPlan) -> dict[str, object]:
    """``plan`` as :func:`read_plan` reads it."""
    halt = plan.halt
    return {
        "waves": []
        if plan.all_now
        else [
            {
                "name": w.name,
                "percent": w.percent,
                "groups": sorted(w.groups),
                "soak_hours": w.soak.total_seconds() / 3600,
            }
            for w in plan.waves
        ],
        "halt": {
            "max_failures": halt.max_failures,
            "max_failure_rate": halt.max_failure_rate,
            "silence_hours": halt.silence.total_seconds() / 3600,
        },
        "min_success_rate": plan.min_success_rate,
        "all_now": plan.all_now,
    }


def _wave(value: object, where: str) -> Wave:
    doc = _fields(value, where, {"name", "percent", "groups", "soak_hours"})
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64:
        raise InvalidPolicy(f"{where}.name: expected a name of 1 to 64 characters, found {name!r}")
    groups = doc.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidPolicy(f"{where}.groups: expected a list of group names, found {groups!r}")
    return Wave(
        name=name,
        percent=_number(doc.get("percent"), f"{where}.percent"),
        groups=frozenset(groups),
        soak=_hours(doc.get("soak_hours", 24), f"{where}.soak_hours"),
    )


def _halt(value: object) -> HaltRule:
    doc = _fields(value, "plan.halt", {"max_failures", "max_failure_rate", "silence_hours"})
    count = doc.get("max_failures", 1)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise InvalidPolicy(
            f"plan.halt.max_failures: expected a whole number of at least 1 or null, found "
            f"{count!r}"
        )
    rate = doc.get("max_failure_rate")
    return HaltRule(
        max_failures=count,
        max_failure_rate=None if rate is None else _fraction(rate, "plan.halt.max_failure_rate"),
        silence=_hours(doc.get("silence_hours", 6), "plan.halt.silence_hours"),
    )


def _fields(value: object, where: str, allowed: set[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise InvalidPolicy(f"{where}: expected an object, found {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidPolicy(
            f"{where}: unknown field {unknown[0]!r}", hint="known: " + ", ".join(sorted(allowed))
        )
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidPolicy(f"{where}: expected a number, found {value!r}")
    return float(value)


def _fraction(value: object, where: str) -> float:
    number = _number(value, where)
    if not 0 <= number <= 1:
        raise InvalidPolicy(f"{where}: {number:g} is not a fraction", hint="a number from 0 to 1")
    return number


def _hours(value: object, where: str) -> timedelta:
    number = _number(value, where)
    if not 0 <= number <= 24 * 366:
        raise InvalidPolicy(f"{where}: {number:g} hours", hint="from 0 to 8784 hours (a year)")
    return timedelta(hours=number)


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidPolicy(f"{where}: expected true or false, found {value!r}")
    return value


# -- membership ----------------------------------------------------------------


def draw(build: str, device_id: str) -> float:
    """The device's draw for ``build``, in [0, 1): SHA-256 of both, the same everywhere."""
    digest = hashlib.sha256(f"{build}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_waves(plan: RolloutPlan, build: str, devices: Mapping[str, str]) -> dict[str, int]:
    """Each eligible device's wave index when the rollout starts.

    ``devices`` maps device id to its group. A device in a group a wave names
    is in that wave; the others are ranked by :func:`draw` and fill each wave
    up to ``round(percent * len(devices) / 100)`` devices in all (counting
    those pinned to it and to earlier waves), so each wave holds its share
    within one device while pinned groups do not exceed it.
    """
    waves = plan.effective_waves
    pinned_to = {g: i for i, w in enumerate(waves) for g in w.groups}
    assigned = {d: pinned_to[g] for d, g in devices.items() if g in pinned_to}
    ranked = sorted((d for d in devices if d not in assigned), key=lambda d: (draw(build, d), d))
    total, taken = len(devices), 0
    pinned_so_far = 0
    for i, wave in enumerate(waves):
        pinned_so_far += sum(1 for w in assigned.values() if w == i)
        target = total if i == len(waves) - 1 else round(wave.percent * total / 100)
        while taken < len(ranked) and pinned_so_far + taken < target:
            assigned[ranked[taken]] = i
            taken += 1
    return assigned


def late_wave(plan: RolloutPlan, build: str, device_id: str, group: str) -> int:
    """The wave of a device that became eligible after the rollout started: its draw's."""
    waves = plan.effective_waves
    for i, wave in enumerate(waves):
        if group in wave.groups:
            return i
    share = draw(build, device_id) * 100
    return next(i for i, wave in enumerate(waves) if share < wave.percent or i == len(waves) - 1)


# -- progress ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rollout:
    """Where one supplement's rollout stands.

    ``current`` is the index of the open wave; ``opened_at`` when it opened.
    ``halted_because`` says why a halt happened (which devices, which failures).
    """

    build: str
    plan: RolloutPlan
    started_at: datetime
    current: int = 0
    opened_at: datetime | None = None
    state: RolloutState = RolloutState.RUNNING
    halted_because: str | None = None

    def wave_state(self, index: int) -> WaveState:
        if index < self.current or self.state is RolloutState.COMPLETED:
            return WaveState.PASSED
        if index > self.current:
            return WaveState.WAITING
        return WaveState.HALTED if self.state is RolloutState.HALTED else WaveState.OPEN

    def earliest_opening(self, index: int) -> datetime | None:
        """When wave ``index`` can open at the earliest (its own soak-time chain); None when
        it is open or passed, or the rollout is halted or aborted (it opens by hand then)."""
        if (
            self.wave_state(index) is not WaveState.WAITING
            or self.state is not RolloutState.RUNNING
        ):
            return None
        waves = self.plan.effective_waves
        opened = self.opened_at or self.started_at
        return opened + sum((waves[i].soak for i in range(self.current, index)), timedelta(0))


def start(plan: RolloutPlan, build: str, now: datetime) -> Rollout:
    return Rollout(build=build, plan=plan, started_at=now, opened_at=now)


@dataclass(frozen=True, slots=True)
class DeviceProgress:
    """One device of the open wave, as its status reports show it.

    ``installed_at``: when it first reported the supplement active (None: not
    yet); ``last_report_at``: its latest status report; ``failure``: what
    went wrong with this supplement on it, if anything; ``wave``: its wave.
    """

    device_id: str
    installed_at: datetime | None = None
    last_report_at: datetime | None = None
    failure: FailureKind | None = None
    detail: str = ""
    wave: int = 0


@dataclass(frozen=True, slots=True)
class WaveHealth:
    """The opened waves' ``devices``, ``installed`` and ``failures``; ``open_devices``
    and ``open_first_install`` are the open wave's own: how many devices it has, and
    when the first of them reported the supplement running (None: none yet)."""

    devices: int
    installed: int
    failures: tuple[DeviceProgress, ...]
    open_devices: int = 0
    open_first_install: datetime | None = None

    def explain(self) -> str:
        """Which devices failed and how, for a halt's reason (at most ten named)."""
        by_kind: dict[str, list[str]] = {}
        for p in self.failures:
            by_kind.setdefault(str(p.failure), []).append(p.device_id)
        parts = [
            f"{len(ids)} {kind} ({', '.join(sorted(ids)[:10])}{', ...' if len(ids) > 10 else ''})"
            for kind, ids in sorted(by_kind.items())
        ]
        return f"{len(self.failures)} of {self.devices} devices failed: " + "; ".join(parts)


def wave_health(
    progress: Iterable[DeviceProgress], silence: timedelta, now: datetime, open_wave: int = 0
) -> WaveHealth:
    """The rollout's health at ``now`` (``progress``: its devices, each with its wave;
    ``open_wave``: the open one's index): installs, and failures including silent devices.

    The opened waves (up to ``open_wave``) count whole. A device of a wave not yet
    opened counts only when it failed (it installed by another way, or its gate was
    read before a halt): fail closed, its failure counts towards the halt and never
    hides because its wave had not opened.
    """
    devices, installed, failures, in_open = 0, 0, [], []
    for p in progress:
        failed = _failed(p, silence, now)
        if p.wave > open_wave and failed is None:
            continue
        devices += 1
        if failed is not None:
            failures.append(failed)
        if p.installed_at is not None and p.failure is None:
            installed += 1
        if p.wave == open_wave:
            in_open.append(p)
    first = min(
        (p.installed_at for p in in_open if p.installed_at is not None and p.failure is None),
        default=None,
    )
    return WaveHealth(devices, installed, tuple(failures), len(in_open), first)


def _failed(p: DeviceProgress, silence: timedelta, now: datetime) -> DeviceProgress | None:
    """``p`` as a failure (its own, or stopped-reporting: installed, then silent for
    ``silence``), or None when it has not failed."""
    if p.failure is not None:
        return p
    last = p.last_report_at or p.installed_at
    if p.installed_at is not None and last is not None and last + silence <= now:
        return replace(
            p,
            failure=FailureKind.STOPPED_REPORTING,
            detail=f"no status report since {last:%Y-%m-%dT%H:%M:%SZ}",
        )
    return None


class Change(StrEnum):
    """What :func:`step` or an admin did to a rollout (event kinds)."""

    STARTED = "rollout-started"
    WAVE_ADVANCED = "wave-advanced"
    HALTED = "rollout-halted"
    RESUMED = "rollout-resumed"
    COMPLETED = "rollout-completed"
    ABORTED = "rollout-aborted"


def step(rollout: Rollout, health: WaveHealth, now: datetime) -> tuple[Rollout, Change | None]:
    """The rollout after looking at the open wave's health at ``now``.

    Halts when the halt rule trips (the reason names the devices and
    failures); opens the next wave when the open one has soaked and enough of
    it installed; completes after the last wave soaks healthy. Otherwise it is
    unchanged and the change is ``None``.

    The soak is the time the supplement has *run* in the open wave: it counts
    from the later of the wave's opening and its first install. A wave with
    devices none of which runs the supplement yet has shown nothing, so it
    never passes on time alone (a slow fleet would otherwise let every wave
    open before any device could fail: the whole fleet exposed at once); a
    wave whose devices cannot install at all waits for the admin's advance.
    """
    if rollout.state is not RolloutState.RUNNING:
        return rollout, None
    plan = rollout.plan
    if plan.halt.tripped(len(health.failures), health.devices):
        halted = replace(rollout, state=RolloutState.HALTED, halted_because=health.explain())
        return halted, Change.HALTED
    wave = plan.effective_waves[rollout.current]
    opened = rollout.opened_at or rollout.started_at
    if health.open_devices:
        if health.open_first_install is None:
            return rollout, None
        opened = max(opened, health.open_first_install)
    if now < opened + wave.soak:
        return rollout, None
    if health.devices and health.installed / health.devices < plan.min_success_rate:
        return rollout, None
    if rollout.current == len(plan.effective_waves) - 1:
        return replace(rollout, state=RolloutState.COMPLETED), Change.COMPLETED
    return replace(rollout, current=rollout.current + 1, opened_at=now), Change.WAVE_ADVANCED


def halt(rollout: Rollout, reason: str) -> Rollout:
    """An admin's halt of a running rollout: its open wave stops taking new devices (as
    an automatic halt) until resumed, advanced or aborted; ``reason`` says who and why."""
    if rollout.state is not RolloutState.RUNNING:
        raise InvalidPolicy(
            f"the rollout of {rollout.build} is {rollout.state.value}, not running",
            hint="only a running rollout halts",
        )
    return replace(rollout, state=RolloutState.HALTED, halted_because=reason)


def resume(rollout: Rollout, now: datetime) -> Rollout:
    """An admin's resume of a halted rollout: the same wave opens again, its soak anew."""
    if rollout.state is not RolloutState.HALTED:
        raise InvalidPolicy(
            f"the rollout of {rollout.build} is {rollout.state.value}, not halted",
            hint="only a halted rollout resumes",
        )
    return replace(rollout, state=RolloutState.RUNNING, halted_because=None, opened_at=now)


def advance(rollout: Rollout, now: datetime) -> Rollout:
    """An admin opens the next wave now, whatever the soak time and health say."""
    if rollout.state not in (RolloutState.RUNNING, RolloutState.HALTED):
        raise InvalidPolicy(f"the rollout of {rollout.build} is {rollout.state.value}")
    if rollout.current >= len(rollout.plan.effective_waves) - 1:
        raise InvalidPolicy(
            f"the rollout of {rollout.build} is in its last wave",
            hint="there is no next wave to open",
        )
    return replace(
        rollout,
        current=rollout.current + 1,
        opened_at=now,
        state=RolloutState.RUNNING,
        halted_because=None,
    )


def abort(rollout: Rollout) -> Rollout:
    """An admin's abort: the supplement is withdrawn, devices return to the last good letter."""
    if rollout.state in (RolloutState.ABORTED, RolloutState.COMPLETED):
        raise InvalidPolicy(f"the rollout of {rollout.build} is already {rollout.state.value}")
    return replace(rollout, state=RolloutState.ABORTED)


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether a device in wave ``wave`` may install now, and if not why and until when."""

    open: bool
    wave: int
    wave_name: str
    state: WaveState
    earliest: datetime | None = None

    def sentence(self) -> str:
        if self.open:
            return f"wave {self.wave_name!r} is open"
        when = (
            f"; it opens at the earliest at {self.earliest:%Y-%m-%d %H:%M} UTC"
            if self.earliest
            else ""
        )
        return f"in rollout wave {self.wave_name!r}, which is {self.state.value}{when}"


def gate(rollout: Rollout, wave: int) -> Gate:
    """The gate for a device in ``wave`` of ``rollout``."""
    state = rollout.wave_state(wave)
    name = rollout.plan.effective_waves[wave].name
    is_open = state in (WaveState.PASSED, WaveState.OPEN) and rollout.state in (
        RolloutState.RUNNING,
        RolloutState.COMPLETED,
    )
    return Gate(is_open, wave, name, state, rollout.earliest_opening(wave))


# -- maintenance windows ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """When a group's devices may activate and relaunch: ``days`` (0 = Monday) and local
    hours ``start``..``end`` in ``timezone``; an ``end`` at or before ``start`` runs past
    midnight into the next day (the day named is the day the window starts)."""

    days: frozenset[int]
    start: time
    end: time
    timezone: str

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        clock = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.days and self.start <= clock < self.end
        today = local.weekday() in self.days and clock >= self.start
        yesterday = (local.weekday() - 1) % 7 in self.days and clock < self.end
        return today or yesterday

    def next_opening(self, now: datetime) -> datetime:
        """The first instant at or after ``now`` inside the window (UTC-aware)."""
        if self.contains(now):
            return now
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opening = datetime.combine(day, self.start, tzinfo=zone)
            if opening >= local:
                return opening.astimezone(now.tzinfo)
        raise AssertionError("a window with days opens within a week")  # pragma: no cover


def read_window(document: object) -> MaintenanceWindow:
    """A window from ``{"days": ["mon", ...], "start": "22:00", "end": "04:00",
    "timezone": "Europe/Berlin"}``; :class:`~bsi.errors.InvalidPolicy` names what is wrong."""
    doc = _fields(document, "window", {"days", "start", "end", "timezone"})
    days = doc.get("days")
    if not isinstance(days, list) or not days or not all(d in DAYS for d in days):
        raise InvalidPolicy(
            f"window.days: expected a non-empty list of {', '.join(DAYS)}, found {days!r}"
        )
    start, end = _clock(doc.get("start"), "window.start"), _clock(doc.get("end"), "window.end")
    if start == end:
        raise InvalidPolicy(
            f"window: starts and ends at {start:%H:%M}, so it has no hours",
            hint="give a start and an end that differ (an end before the start runs past midnight)",
        )
    zone = doc.get("timezone")
    try:
        if not isinstance(zone, str):
            raise ZoneInfoNotFoundError(zone)
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidPolicy(
            f"window.timezone: {zone!r} is not a time zone",
            hint="an IANA name such as 'Europe/Berlin' or 'UTC'",
        ) from None
    return MaintenanceWindow(frozenset(DAYS.index(d) for d in days), start, end, zone)


def dump_window(window: MaintenanceWindow) -> dict[str, object]:
    return {
        "days": [DAYS[d] for d in sorted(window.days)],
        "start": f"{window.start:%H:%M}",
        "end": f"{window.end:%H:%M}",
        "timezone": window.timezone,
    }


def _clock(value: object, where: str) -> time:
    if isinstance(value, str) and len(value) == 5 and value[2] == ":":
        try:
            return time(int(value[:2]), int(value[3:]))
        except ValueError:
            pass
    raise InvalidPolicy(f"{where}: expected a local time HH:MM, found {value!r}")


# -- the decision, held back ---------------------------------------------------------


def hold(
    decision: Decision,
    wave_gate: Gate | None,
    window: MaintenanceWindow | None,
    now: datetime,
) -> Decision:
    """``decision`` after the rollout and the maintenance window have their say.

    Only an ``install`` is held: to ``deferred / rollout-wave`` while the
    device's wave is not open (with the wave, its state and the earliest time
    it can open), then to ``deferred / maintenance-window`` outside its
    group's window (with the next opening). An enforcement deadline
    (``enforced``) passes both, and its message says which it overrode.
    """
    if decision.outcome is Outcome.ENFORCED:
        overridden = []
        if wave_gate is not None and not wave_gate.open:
            overridden.append(f"rollout wave {wave_gate.wave_name!r} ({wave_gate.state.value})")
        if window is not None and not window.contains(now):
            overridden.append("the maintenance window")
        if overridden:
            return replace(
                decision, message=f"{decision.message} (overrides {' and '.join(overridden)})"
            )
        return decision
    if decision.outcome is not Outcome.INSTALL:
        return decision
    supplement = decision.supplement
    what = supplement.display() if supplement is not None else "the supplement"
    if wave_gate is not None and not wave_gate.open:
        return replace(
            decision,
            outcome=Outcome.DEFERRED,
            reason=Reason.ROLLOUT_WAVE,
            message=f"{what} waits: this device is {wave_gate.sentence()}",
            deadline=None,
        )
    if window is not None and not window.contains(now):
        opening = window.next_opening(now)
        return replace(
            decision,
            outcome=Outcome.DEFERRED,
            reason=Reason.MAINTENANCE_WINDOW,
            message=f"{what} waits for the maintenance window, which opens at "
            f"{opening:%Y-%m-%d %H:%M} UTC",
            deadline=None,
        )
    return decision


# -- what a device is told --------------------------------------------------------

HEALTH_CHECK_FAILED = "health-check-failed"
"""The failure reason a bsi agent reports (``softwareupdate.failure-reason``'s
``reason`` starts with it) when a supplement failed its health check and the
agent fell back to the last good letter."""


def failure_kind(reason: str) -> FailureKind:
    """What a device's reported ``softwareupdate.failure-reason`` counts as in a wave."""
    if reason.startswith(HEALTH_CHECK_FAILED):
        return FailureKind.HEALTH_CHECK_ROLLBACK
    return FailureKind.INSTALL_FAILED


@dataclass(frozen=True, slots=True)
class DeviceHolds:
    """What holds one device back: its gate per supplemental build and its group's window.

    The server computes it (the device's wave in each rollout, its group's
    window) and sends it with the catalogue; the server's stored decision and
    the agent's own both pass through :meth:`apply`, so they defer alike.
    """

    gates: Mapping[str, Gate] = field(default_factory=dict)
    window: MaintenanceWindow | None = None

    def apply(self, decision: Decision, now: datetime) -> Decision:
        build = str(decision.supplement.build) if decision.supplement is not None else ""
        return hold(decision, self.gates.get(build), self.window, now)


NO_HOLDS = DeviceHolds()


def dump_holds(holds: DeviceHolds) -> dict[str, object]:
    """``holds`` as the catalogue response's ``device`` section (:func:`read_holds`)."""
    return {
        "gates": [
            {
                "build": build,
                "open": g.open,
                "wave": g.wave,
                "wave_name": g.wave_name,
                "state": g.state.value,
                "earliest": None if g.earliest is None else g.earliest.isoformat(),
            }
            for build, g in sorted(holds.gates.items())
        ],
        "window": None if holds.window is None else dump_window(holds.window),
    }


def read_holds(document: object) -> DeviceHolds:
    """The ``device`` section of a catalogue response (:class:`~bsi.errors.InvalidPolicy`
    names what is wrong). A response without one (an older server) holds nothing back."""
    if document is None:
        return NO_HOLDS
    doc = _fields(document, "device", {"gates", "window"})
    raw = doc.get("gates", [])
    if not isinstance(raw, list):
        raise InvalidPolicy(f"device.gates: expected a list, found {type(raw).__name__}")
    gates = {}
    for i, item in enumerate(raw):
        where = f"device.gates[{i}]"
        g = _fields(item, where, {"build", "open", "wave", "wave_name", "state", "earliest"})
        build, wave, name = g.get("build"), g.get("wave"), g.get("wave_name")
        if not isinstance(build, str) or not isinstance(name, str):
            raise InvalidPolicy(f"{where}: build and wave_name must be text")
        if isinstance(wave, bool) or not isinstance(wave, int) or wave < 0:
            raise InvalidPolicy(f"{where}.wave: expected a wave index, found {wave!r}")
        try:
            state = WaveState(str(g.get("state")))
        except ValueError:
            raise InvalidPolicy(f"{where}.state: {g.get('state')!r} is not a wave state") from None
        earliest = g.get("earliest")
        try:
            when = None if earliest is None else datetime.fromisoformat(str(earliest))
        except ValueError:
            when = None
        if earliest is not None and (when is None or when.tzinfo is None):
            raise InvalidPolicy(f"{where}.earliest: {earliest!r} is not an ISO 8601 UTC instant")
        gates[build] = Gate(_boolean(g.get("open"), f"{where}.open"), wave, name, state, when)
    window = doc.get("window")
    return DeviceHolds(gates, None if window is None else read_window(window))


# -- Apple fleets: waves as enforcement declarations ---------------------------------

ENFORCEMENT_GRACE = timedelta(hours=24)
"""How long after its wave opens an Apple device has to install: its deadline."""


WAVE_PREFIX = "bsi.rollout."
"""The identifiers of bsi's wave declarations (``bsi.`` is bsi's own namespace)."""


def wave_identifier(build: str, wave: int) -> str:
    """The identifier of wave ``wave``'s ``enforcement.specific``."""
    return f"{WAVE_PREFIX}{build}.{wave}"


def wave_enforcement(
    rollout: Rollout, target_os_version: str, grace: timedelta = ENFORCEMENT_GRACE
) -> Declaration | None:
    """The ``softwareupdate.enforcement.specific`` bsi issues when a wave of an Apple
    supplement's rollout opens, as stored: the deadline is the UTC instant.

    bsi cannot ship Apple's bits; it steers them: when a wave opens, its
    devices — those of the groups pinned to it and those drawn into it — are
    told to install the supplemental build (``TargetBuildVersion``) by the
    opening plus ``grace``. Waves open one after another, so the deadlines
    are staggered, and a wave's declaration exists only once the wave before
    it passed (its devices report ``supplemental.build-version`` and no
    failure, :func:`step`). Stored with the deadline as UTC wall time; each
    device is served it in its own local time (:func:`localized`). None while
    the rollout is not running.
    """
    if rollout.state is not RolloutState.RUNNING:
        return None
    opened = rollout.opened_at or rollout.started_at
    deadline = (opened + grace).astimezone(UTC).replace(tzinfo=None, microsecond=0)
    return enforcement_specific(
        wave_identifier(rollout.build, rollout.current),
        target_os_version,
        deadline,
        rollout.build,
    )


def is_wave_declaration(declaration: Declaration) -> bool:
    """Whether ``declaration`` is one of bsi's wave enforcements (:func:`wave_enforcement`)."""
    return declaration.type == ENFORCEMENT_SPECIFIC and declaration.identifier.startswith(
        WAVE_PREFIX
    )


def localized(declaration: Declaration, timezone: str | None) -> Declaration:
    """A wave enforcement as a device in ``timezone`` is served it.

    Apple's ``TargetLocalDateTime`` has no zone: the device reads it as its
    own local time (the schema: "the local date time value that specifies
    when to force install the software update"). bsi stores the deadline as
    the UTC instant and serves each device the wall time of that instant in
    its group's maintenance-window time zone (an IANA name), so every device
    meets the same instant. Without a window (``None``) the UTC wall time is
    served unchanged: a device in another zone reads it as its own local
    time, so it installs up to its UTC offset earlier (east) or later (west)
    than the instant. Other declarations are returned as they are.
    """
    if timezone is None or not is_wave_declaration(declaration):
        return declaration
    payload = declaration.payload
    instant = datetime.fromisoformat(str(payload["TargetLocalDateTime"])).replace(tzinfo=UTC)
    local = instant.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)
    return enforcement_specific(
        declaration.identifier,
        str(payload["TargetOSVersion"]),
        local,
        None if payload.get("TargetBuildVersion") is None else str(payload["TargetBuildVersion"]),
        None if payload.get("DetailsURL") is None else str(payload["DetailsURL"]),
    )
