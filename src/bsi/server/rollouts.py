"""Rollouts on the server: plans, frozen waves, automatic advance and halt, windows, events.

The rules are :mod:`bsi.domain.rollout`'s; this module stores what they
decide (:mod:`bsi.store.rollouts`) and tells devices their gate:

* a plan PUT for a supplement starts its rollout at once: every live device
  of the platform is placed in a wave by :func:`~bsi.domain.rollout.assign_waves`
  and that membership is kept (a device enrolled later is placed by its draw
  alone, :func:`~bsi.domain.rollout.late_wave`); a supplement first imported
  for a platform with a default plan starts with that plan;
* :meth:`Rollouts.tick` (every ``rollout_tick_seconds`` in the server) reads
  each running rollout's opened waves from stored device states — installs,
  the failures devices reported, devices that fell back, devices gone
  silent — and applies :func:`~bsi.domain.rollout.step`;
* :meth:`Rollouts.holds` is what holds one device back (its gate per build,
  its group's window): the server's stored decision and the catalogue the
  agent decides from both carry it;
* for an Apple supplement, each opened wave has an ``enforcement.specific``
  (:func:`~bsi.domain.rollout.wave_enforcement`, stored with the UTC
  deadline): its pinned groups have it assigned, the devices drawn into it
  are served it by :meth:`Rollouts.wave_declarations`, and every device gets
  the deadline in its group's window time zone (:func:`~bsi.domain.rollout.localized`).

Every change is an event (:mod:`bsi.domain.events`), with its actor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bsi.domain.catalog import Catalog, SupplementState
from bsi.domain.declarations import ENFORCEMENT_SPECIFIC, Declaration
from bsi.domain.events import AUTOMATIC, EventKind
from bsi.domain.inventory import APPLE_PLATFORMS, platform_name
from bsi.domain.rollout import (
    NO_HOLDS,
    DeviceHolds,
    DeviceProgress,
    FailureKind,
    MaintenanceWindow,
    Rollout,
    RolloutState,
    WaveHealth,
    abort,
    advance,
    assign_waves,
    dump_plan,
    dump_window,
    failure_kind,
    gate,
    halt,
    is_wave_declaration,
    late_wave,
    localized,
    read_plan,
    read_window,
    resume,
    start,
    step,
    wave_enforcement,
    wave_health,
    wave_identifier,
)
from bsi.domain.status import AGENT_DRIFT, DeviceState, InstallState
from bsi.domain.versions import Build
from bsi.errors import Conflict, InvalidInput, InvalidPolicy, NotFound
from bsi.store.events import NewEvent
from bsi.store.rollouts import (
    MAX_EVENTS_PAGE,
    EventFilter,
    FleetDevice,
    RolloutStore,
    StoredEvent,
    StoredRollout,
)

Clock = Callable[[], datetime]
HELD = frozenset({RolloutState.RUNNING, RolloutState.HALTED, RolloutState.ABORTED})
"""Rollouts whose gates hold devices back (a completed one holds nobody)."""
STEERED = HELD | {RolloutState.COMPLETED}
"""Rollouts whose Apple wave declarations may still be served (a completed one's stay;
a completed Linux rollout is not read at all)."""
FAILURE_EVENTS = frozenset({EventKind.DEVICE_FAILED.value, EventKind.DEVICE_ROLLED_BACK.value})
_DEADLINES_PASSED = EventFilter(
    kinds=frozenset({EventKind.ENFORCEMENT_DEADLINE_PASSED.value}), limit=MAX_EVENTS_PAGE
)
_SUPPLEMENT_EVENT = {
    SupplementState.PAUSED: EventKind.SUPPLEMENT_PAUSED,
    SupplementState.PUBLISHED: EventKind.SUPPLEMENT_RESUMED,
    SupplementState.WITHDRAWN: EventKind.SUPPLEMENT_WITHDRAWN,
}


class Action:
    HALT = "halt"
    RESUME = "resume"
    ADVANCE = "advance"
    ABORT = "abort"
    ALL = (HALT, RESUME, ADVANCE, ABORT)


@dataclass(slots=True)
class _Snapshot:
    """The rollouts and windows holds are computed from, re-read every ``seconds``."""

    rollouts: list[tuple[StoredRollout, dict[str, int]]]
    windows: dict[int, MaintenanceWindow]
    groups: dict[int, str]
    expires: float
    waves: dict[str, Declaration] = field(default_factory=dict)
    """The stored wave enforcements (:func:`~bsi.domain.rollout.wave_enforcement`) by
    identifier, when an Apple rollout has devices drawn into its waves."""

    def timezone(self, group_id: int) -> str | None:
        """The time zone of ``group_id``'s maintenance window (None: it has none)."""
        window = self.windows.get(group_id)
        return None if window is None else window.timezone

    def holds(self, device_id: str, group_id: int, platform: str | None) -> DeviceHolds:
        """:meth:`Rollouts.holds` as this snapshot has them."""
        window = self.windows.get(group_id)
        gates = {}
        decided_as = platform_name(platform) if platform is not None else None
        for stored, members in self.rollouts:
            if stored.platform != decided_as or stored.rollout.state not in HELD:
                continue
            rollout = stored.rollout
            wave = members.get(device_id)
            if wave is None:
                wave = late_wave(
                    rollout.plan, rollout.build, device_id, self.groups.get(group_id, "")
                )
            gates[rollout.build] = gate(rollout, wave)
        if not gates and window is None:
            return NO_HOLDS
        return DeviceHolds(gates, window)

    def wave_declarations(self, device_id: str, group_id: int) -> tuple[Declaration, ...]:
        """:meth:`Rollouts.wave_declarations` as this snapshot has them."""
        if not self.waves:
            return ()
        group = self.groups.get(group_id, "")
        found = []
        for stored, members in self.rollouts:
            wave = members.get(device_id)
            if wave is None or group in stored.rollout.plan.effective_waves[wave].groups:
                continue
            declaration = self.waves.get(wave_identifier(stored.rollout.build, wave))
            if declaration is not None:
                found.append(localized(declaration, self.timezone(group_id)))
        return tuple(found)


@dataclass(frozen=True, slots=True)
class RolloutInputs:
    """What holds devices back, by what it concerns: per rollout platform (as the
    catalogue spells it) its rollouts, each with its stored wave declarations, and per
    group id its maintenance window. (A device's late wave is also drawn by its group's
    name: the caller compares the group names.)"""

    by_platform: dict[str, tuple[object, ...]]
    windows: dict[int, MaintenanceWindow]


class Rollouts:
    """The rollout service. ``catalog`` gives the served catalogue; ``set_state`` changes a
    supplement's published state (an abort withdraws); ``changed`` is called after any
    change that alters what devices should run (devices are woken). ``recompute`` decides
    again for every device: :meth:`tick` calls it after a change; :meth:`react` runs on a
    device's status report, so it asks ``recompute_soon`` (in the background); an admin's
    change is on a request path too, so its route decides again once the response is sent
    (:func:`bsi.server.admin.common.recompute_later`), as other admin changes do."""

    def __init__(
        self,
        store: RolloutStore,
        clock: Clock,
        catalog: Callable[[], Catalog],
        set_state: Callable[[str, str, SupplementState, str], None],
        changed: Callable[[], None],
        *,
        recompute: Callable[[], object] = lambda: None,
        recompute_soon: Callable[[], object] = lambda: None,
        declarations: Callable[[], Iterable[Declaration]] = tuple,
        issue: Callable[[Declaration, frozenset[str]], None] = lambda _d, _g: None,
        retract: Callable[[str], None] = lambda _i: None,
        redeclare: Callable[[], None] = lambda: None,
        cache_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self._catalog = catalog
        self._set_state = set_state
        self._changed = changed
        self._recompute = recompute
        self._recompute_soon = recompute_soon
        self._declarations = declarations
        self._issue = issue
        self._retract = retract
        self._redeclare = redeclare
        self._cache_seconds = cache_seconds
        self._snapshot: _Snapshot | None = None
        self._members: dict[int, dict[str, int]] = {}
        self._lock = threading.Lock()

    # -- what holds a device back --------------------------------------------

    def _fresh(self) -> _Snapshot | None:
        """The snapshot in memory while it is younger than its cache time, else None."""
        snapshot = self._snapshot
        return snapshot if snapshot is not None and snapshot.expires > time.monotonic() else None

    def _current(self) -> _Snapshot:
        """The fresh snapshot, or a new one read from the store."""
        snapshot = self._fresh()
        if snapshot is not None:
            return snapshot
        with self._lock:
            held = [
                (s, self._membership(s.id))
                for s in self.by_state(STEERED)
                if s.rollout.state in HELD or s.platform in APPLE_PLATFORMS.values()
            ]
            windows = {g: read_window(w) for g, w in self.store.windows().items()}
            groups = self.store.group_names() if held else {}
            apple = any(s.platform in APPLE_PLATFORMS.values() for s, _ in held)
            waves = (
                {d.identifier: d for d in self._declarations() if is_wave_declaration(d)}
                if apple
                else {}
            )
            snapshot = _Snapshot(
                held, windows, groups, time.monotonic() + self._cache_seconds, waves
            )
            self._snapshot = snapshot
            return snapshot

    def _membership(self, rollout_id: int) -> dict[str, int]:
        """A rollout's membership: frozen at its start, so read once per process."""
        found = self._members.get(rollout_id)
        if found is None:
            found = self._members[rollout_id] = self.store.members(rollout_id)
        return found

    def forget(self) -> None:
        """Drop the cached rollouts and windows (after a change through this process)."""
        self._snapshot = None

    def holds(self, device_id: str, group_id: int, platform: str | None) -> DeviceHolds:
        """What holds ``device_id`` back: its gate in each of its platform's rollouts
        (running, halted or aborted) and its group's maintenance window. ``platform`` as
        the device reported it: its rollouts are those of the catalogue platform it is
        decided against (:func:`~bsi.domain.inventory.platform_name`: an iPad's are iOS's)."""
        return self._current().holds(device_id, group_id, platform)

    def cached_holds(
        self, device_id: str, group_id: int, platform: str | None
    ) -> DeviceHolds | None:
        """:meth:`holds` from the snapshot in memory, or None when there is none current
        (no I/O: the event loop may ask, as :meth:`cached_wave_declarations`)."""
        snapshot = self._fresh()
        return None if snapshot is None else snapshot.holds(device_id, group_id, platform)

    def decision_inputs(self) -> RolloutInputs:
        """What :meth:`holds` and :meth:`wave_declarations` read, as values to compare
        between two instants (:meth:`bsi.server.service.BsiService.recompute_changed`)."""
        snapshot = self._current()
        by_platform: dict[str, list[object]] = {}
        for stored, _members in snapshot.rollouts:
            build = stored.rollout.build
            waves = [
                snapshot.waves.get(wave_identifier(build, wave))
                for wave in range(len(stored.rollout.plan.effective_waves))
            ]
            by_platform.setdefault(stored.platform, []).append((stored.id, stored.rollout, waves))
        return RolloutInputs(
            {platform: tuple(found) for platform, found in by_platform.items()},
            dict(snapshot.windows),
        )

    def wave_declarations(self, device_id: str, group_id: int) -> tuple[Declaration, ...]:
        """The wave enforcements served to ``device_id`` itself: that of each Apple
        rollout wave it was drawn into (not pinned to by its group, which has it
        assigned), once the wave opened and while its declaration stands, with the
        deadline in its group's window time zone. Empty for any other device. Reads
        the rollouts when the snapshot of them is older than its cache time."""
        return self._current().wave_declarations(device_id, group_id)

    def cached_wave_declarations(
        self, device_id: str, group_id: int
    ) -> tuple[Declaration, ...] | None:
        """:meth:`wave_declarations` from the snapshot in memory, or None when there is
        none current: no I/O and no wait for another thread's read, so the event loop
        may ask (a refresh there would hold every request behind the database)."""
        snapshot = self._fresh()
        return None if snapshot is None else snapshot.wave_declarations(device_id, group_id)

    def timezone(self, group_id: int) -> str | None:
        """The time zone of ``group_id``'s maintenance window (None: it has none)."""
        return self._current().timezone(group_id)

    def actor(self, secret: str | None) -> str:
        """The name of the API key ``secret`` (the actor of an admin's change)."""
        found = self.store.api_key(secret) if secret else None
        return found[0] if found else AUTOMATIC

    def by_state(self, states: frozenset[RolloutState] | None = None) -> list[StoredRollout]:
        """The rollouts in ``states`` (None: all), oldest first."""
        return self.store.rollouts(states)

    # -- plans -----------------------------------------------------------------

    def _known_groups(self) -> frozenset[str]:
        return frozenset(self.store.group_names().values())

    def start(self, platform: str, build: str, document: object, actor: str) -> StoredRollout:
        """Start ``platform/build``'s rollout with the plan in ``document``.

        Raises :class:`InvalidInput` for a bad plan, :class:`NotFound` for a
        supplement the catalogue does not have, :class:`~bsi.errors.Conflict`
        when it has a rollout already; nothing changes then.
        """
        plan = read_plan(document, known_groups=self._known_groups())
        supplement = self._catalog().supplement_by_build(platform, Build.parse(build))
        if supplement is None:
            raise NotFound(
                f"no supplement {platform}/{build} in the catalogue",
                hint="GET /v1/admin/supplements lists them",
            )
        return self._start(platform, build, start(plan, build, self.clock()), actor)

    def _start(self, platform: str, build: str, rollout: Rollout, actor: str) -> StoredRollout:
        devices = {d.device_id: d.group for d in self.store.fleet(platform, build)}
        members = assign_waves(rollout.plan, build, devices)
        sizes = plan_sizes(members, len(rollout.plan.effective_waves))
        now = rollout.started_at
        stored = self.store.start_rollout(
            platform,
            rollout,
            members,
            [
                NewEvent(
                    EventKind.ROLLOUT_STARTED,
                    actor,
                    f"rollout of {platform}/{build} started: {len(members)} devices in waves "
                    + ", ".join(
                        f"{w.name} {n}"
                        for w, n in zip(rollout.plan.effective_waves, sizes, strict=True)
                    ),
                    now,
                    platform=platform,
                    build=build,
                    detail={"plan": dump_plan(rollout.plan), "wave_sizes": sizes},
                )
            ],
        )
        self._steer_apple(platform, None, rollout)
        self._after_change()
        return stored

    def started_with_default(self, platform: str, build: str) -> StoredRollout | None:
        """Start ``platform/build``'s rollout with its platform's default plan, if any."""
        document = self.store.rollout_default(platform)
        if document is None or self.store.rollout(platform, build) is not None:
            return None
        named = {g for wave in document.get("waves") or [] for g in wave.get("groups", [])}
        plan = read_plan(document, known_groups=named)
        try:
            return self._start(platform, build, start(plan, build, self.clock()), AUTOMATIC)
        except Conflict:
            return None  # another process (or the repository watcher) started it first

    def set_default(self, platform: str, document: object | None, actor: str) -> None:
        """Set (``None``: remove) ``platform``'s default plan (:class:`InvalidInput`: bad)."""
        plan = None if document is None else read_plan(document, known_groups=self._known_groups())
        if plan is None and self.store.rollout_default(platform) is None:
            raise NotFound(f"{platform} has no default rollout plan")
        reason = (
            f"default rollout plan of {platform} removed"
            if plan is None
            else f"default rollout plan of {platform} set"
        )
        self.store.set_rollout_default(
            platform,
            None if plan is None else dump_plan(plan),
            NewEvent(
                EventKind.PLAN_CHANGED,
                actor,
                reason,
                self.clock(),
                platform=platform,
                detail=None if plan is None else {"plan": dump_plan(plan)},
            ),
        )

    def default(self, platform: str) -> dict[str, Any]:
        found = self.store.rollout_default(platform)
        if found is None:
            raise NotFound(
                f"{platform} has no default rollout plan",
                hint=f"PUT /v1/admin/rollout-plans/{platform}",
            )
        return found

    # -- admin actions --------------------------------------------------------

    def get(self, platform: str, build: str) -> StoredRollout:
        found = self.store.rollout(platform, build)
        if found is None:
            raise NotFound(
                f"{platform}/{build} has no rollout",
                hint=f"PUT /v1/admin/supplements/{platform}/{build}/rollout with a plan",
            )
        return found

    def act(self, platform: str, build: str, action: str, actor: str) -> StoredRollout:
        """An admin's halt, resume, advance or abort (abort withdraws the supplement)."""
        stored = self.get(platform, build)
        now = self.clock()
        rollout = stored.rollout
        try:
            changed = self._acted(rollout, action, now, actor)
        except InvalidInput as error:
            raise Conflict(error.message, hint=error.hint) from None
        if action == Action.HALT:
            kind = EventKind.ROLLOUT_HALTED
            reason = f"rollout of {platform}/{build} {changed.halted_because}"
        elif action == Action.RESUME:
            kind = EventKind.ROLLOUT_RESUMED
            reason = f"rollout of {platform}/{build} resumed in wave {self._wave(rollout)!r}"
        elif action == Action.ADVANCE:
            kind = EventKind.WAVE_ADVANCED
            reason = f"wave {self._wave(changed)!r} of {platform}/{build} opened by hand"
        else:
            kind = EventKind.ROLLOUT_ABORTED
            reason = (
                f"rollout of {platform}/{build} aborted: the supplement is withdrawn, devices "
                "return to their last good letter"
            )
        self.store.save_rollout(
            stored,
            changed,
            [
                NewEvent(
                    kind,
                    actor,
                    reason,
                    now,
                    platform=platform,
                    build=build,
                    detail={"wave": changed.current},
                )
            ],
        )
        if action == Action.ABORT:
            self._set_state(platform, build, SupplementState.WITHDRAWN, actor)
        self._steer_apple(platform, rollout, changed)
        self._after_change()
        return StoredRollout(stored.id, stored.platform, changed)

    def steer(self, stored: StoredRollout) -> None:
        """Issue a just-started rollout's first Apple wave declaration (its supplement is
        now in the catalogue: it was started before the catalogue listed it)."""
        self._steer_apple(stored.platform, None, stored.rollout)

    def _steer_apple(self, platform: str, before: Rollout | None, after: Rollout) -> None:
        """For an Apple supplement, the open wave gets its ``enforcement.specific``
        (:func:`~bsi.domain.rollout.wave_enforcement`) when it opens or resumes: stored,
        assigned to its pinned groups and served to the devices drawn into it
        (:meth:`wave_declarations`); a halt takes the halted wave's back, an abort every
        wave's."""
        if platform not in APPLE_PLATFORMS.values():
            return
        self.forget()  # devices woken by the change must be served the new declarations
        if after.state is RolloutState.ABORTED or after.state is RolloutState.HALTED:
            first = 0 if after.state is RolloutState.ABORTED else after.current
            for wave in range(first, after.current + 1):
                self._retract(wave_identifier(after.build, wave))
            return
        opened = (
            before is None
            or before.state is not RolloutState.RUNNING
            or before.current != after.current
        )
        supplement = self._catalog().supplement_by_build(platform, Build.parse(after.build))
        if after.state is not RolloutState.RUNNING or not opened or supplement is None:
            return
        declaration = wave_enforcement(after, str(supplement.version.product))
        if declaration is not None:
            self._issue(declaration, after.plan.effective_waves[after.current].groups)

    @classmethod
    def _acted(cls, rollout: Rollout, action: str, now: datetime, actor: str) -> Rollout:
        if action == Action.HALT:
            return halt(rollout, f"halted by hand by {actor} in wave {cls._wave(rollout)!r}")
        if action == Action.RESUME:
            return resume(rollout, now)
        if action == Action.ADVANCE:
            return advance(rollout, now)
        if action == Action.ABORT:
            return abort(rollout)
        raise InvalidPolicy(f"{action!r} is not a rollout action", hint=", ".join(Action.ALL))

    @staticmethod
    def _wave(rollout: Rollout) -> str:
        return rollout.plan.effective_waves[rollout.current].name

    def _after_change(self) -> None:
        self.forget()
        self._changed()

    # -- automatic advance and halt -------------------------------------------------

    def health(self, stored: StoredRollout, now: datetime) -> tuple[WaveHealth, list[WaveCount]]:
        """The rollout's health (every wave up to the open one, and the failures of any
        device of a later wave: :func:`~bsi.domain.rollout.wave_health`) and each wave's
        counts."""
        rollout = stored.rollout
        members = self._membership(stored.id)
        failures = self._failures(stored)
        waves = rollout.plan.effective_waves
        counts = [WaveCount() for _ in waves]
        rows = []
        for device in self.store.fleet(stored.platform, rollout.build):
            wave = members.get(device.device_id)
            if wave is None:
                wave = late_wave(rollout.plan, rollout.build, device.device_id, device.group)
            progress = _progress(device, rollout, failures.get(device.device_id), wave)
            count = counts[wave]
            count.devices += 1
            if progress.installed_at is not None and progress.failure is None:
                count.installed += 1
            if progress.failure is not None:
                count.failed += 1
            rows.append(progress)
        health = wave_health(rows, rollout.plan.halt.silence, now, rollout.current)
        return health, counts

    def _failures(self, stored: StoredRollout) -> dict[str, tuple[FailureKind, str]]:
        """Each device's latest failure with the rollout's build since it started."""
        found: dict[str, tuple[FailureKind, str]] = {}
        after = 0
        while True:
            page = self.store.events(
                EventFilter(
                    kinds=FAILURE_EVENTS,
                    build=stored.rollout.build,
                    since=stored.rollout.started_at,
                    after=after,
                    limit=1000,
                )
            )
            for e in page:
                if e.event.device_id is None or e.event.platform not in (None, stored.platform):
                    continue
                kind = (
                    FailureKind.FELL_BACK
                    if e.event.kind == EventKind.DEVICE_ROLLED_BACK
                    else failure_kind(str((e.event.detail or {}).get("failure-reason", "")))
                )
                found[e.event.device_id] = (kind, e.event.reason)
            if len(page) < 1000:
                return found
            after = page[-1].id

    def deadlines(self, now: datetime) -> int:
        """Record ``enforcement-deadline-passed`` once per ``enforcement.specific``
        declaration (and deadline) whose ``TargetLocalDateTime`` has passed, read as UTC
        (devices west of UTC reach it later); returns how many were recorded."""
        passed = []
        for declaration in self._declarations():
            if declaration.type != ENFORCEMENT_SPECIFIC:
                continue
            payload = declaration.payload
            try:
                deadline = datetime.fromisoformat(str(payload.get("TargetLocalDateTime")))
            except ValueError:
                continue
            if deadline.replace(tzinfo=UTC) > now:
                continue
            build = payload.get("TargetBuildVersion")
            key = {"declaration": declaration.identifier, "deadline": deadline.isoformat()}
            seen = self.store.events(
                EventFilter(
                    kinds=frozenset({EventKind.ENFORCEMENT_DEADLINE_PASSED.value}), limit=1000
                )
            )
            if any(e.event.detail == key for e in seen):
                continue
            target = f"{payload.get('TargetOSVersion')}" + (f" ({build})" if build else "")
            passed.append(
                NewEvent(
                    EventKind.ENFORCEMENT_DEADLINE_PASSED,
                    AUTOMATIC,
                    f"the enforcement deadline {deadline:%Y-%m-%d %H:%M} (device-local) of "
                    f"{declaration.identifier} for {target} has passed",
                    now,
                    build=str(build)[:16] if isinstance(build, str) else None,
                    detail=key,
                )
            )
        self.record(passed)
        return len(passed)

    def tick(self) -> int:
        """Step every running rollout once and note passed enforcement deadlines;
        returns how many rollouts changed."""
        now = self.clock()
        self.deadlines(now)
        return self._step_running(now, lambda _stored: True)

    def react(self, transitions: Iterable[NewEvent]) -> int:
        """Step, at once, the running rollouts of the builds a status report just failed.

        Called as a device's failure (``device-failed``, ``device-rolled-back``)
        is stored, so a halt closes the gates before any other device fetches
        its catalogue: waiting for the next :meth:`tick` (``rollout_tick_seconds``)
        let every device that checked in meanwhile install a supplement whose
        halt was already due. Returns how many rollouts changed (0 when the
        report failed nothing under a running rollout, without a query).
        """
        failed = {
            (e.platform, e.build)
            for e in transitions
            if e.kind in FAILURE_EVENTS and e.build is not None
        }
        if not failed:
            return 0
        return self._step_running(
            self.clock(),
            lambda stored: (
                (stored.platform, stored.rollout.build) in failed
                or (None, stored.rollout.build) in failed
            ),
            self._recompute_soon,
        )

    def _step_running(
        self,
        now: datetime,
        which: Callable[[StoredRollout], bool],
        recompute: Callable[[], object] | None = None,
    ) -> int:
        """Apply :func:`~bsi.domain.rollout.step` to the running rollouts ``which`` selects;
        after a change the gates are re-read, devices woken and decisions made again
        (by ``recompute``, default: at once)."""
        changed = 0
        for stored in self.by_state(frozenset({RolloutState.RUNNING})):
            if which(stored) and self._step_one(stored, now):
                changed += 1
        if changed:
            self.forget()  # before deciding again: the decisions read the new gates
            self._changed()  # wake devices first: a halt must reach them before anything
            (recompute or self._recompute)()
        return changed

    def _step_one(self, stored: StoredRollout, now: datetime) -> bool:
        """Step one rollout and store what changed with its event; False when nothing did
        (or another process changed it since it was read)."""
        health, _ = self.health(stored, now)
        rollout, change = step(stored.rollout, health, now)
        if change is None:
            return False
        build, platform = rollout.build, stored.platform
        if change.value == EventKind.ROLLOUT_HALTED:
            reason = f"rollout of {platform}/{build} halted in wave {self._wave(rollout)!r}: "
            reason += rollout.halted_because or ""
        elif change.value == EventKind.WAVE_ADVANCED:
            reason = f"wave {self._wave(rollout)!r} of {platform}/{build} opened: " + (
                f"{health.installed} of {health.devices} devices installed, "
                f"{len(health.failures)} failed"
            )
        else:
            reason = f"rollout of {platform}/{build} completed"
        detail = {
            "wave": rollout.current,
            "devices": health.devices,
            "installed": health.installed,
            "failures": [
                {"device": p.device_id, "failure": str(p.failure), "detail": p.detail}
                for p in health.failures[:100]
            ],
        }
        try:
            self.store.save_rollout(
                stored,
                rollout,
                [
                    NewEvent(
                        EventKind(change.value),
                        AUTOMATIC,
                        reason,
                        now,
                        platform=platform,
                        build=build,
                        detail=detail,
                    )
                ],
            )
        except Conflict:
            return False  # another worker's tick or an admin changed it since it was read
        self._steer_apple(platform, stored.rollout, rollout)
        return True

    def status(self, platform: str, build: str) -> dict[str, Any]:
        """The rollout as ``GET .../rollout`` shows it: plan, state, each wave's counts."""
        stored = self.get(platform, build)
        rollout = stored.rollout
        health, counts = self.health(stored, self.clock())
        return {
            **rollout_summary(stored),
            "plan": dump_plan(rollout.plan),
            "waves": [
                {
                    "name": wave.name,
                    "percent": wave.percent,
                    "groups": sorted(wave.groups),
                    "state": rollout.wave_state(i).value,
                    "earliest_opening": _iso(rollout.earliest_opening(i)),
                    "devices": counts[i].devices,
                    "installed": counts[i].installed,
                    "failed": counts[i].failed,
                }
                for i, wave in enumerate(rollout.plan.effective_waves)
            ],
            "failures": [
                {"device": p.device_id, "failure": str(p.failure), "detail": p.detail}
                for p in health.failures
            ],
        }

    # -- maintenance windows ----------------------------------------------------------

    def set_window(
        self, group: str, document: object | None, actor: str
    ) -> MaintenanceWindow | None:
        """Set (``None``: remove) ``group``'s window; :class:`InvalidInput` for a bad one."""
        window = None if document is None else read_window(document)
        now = self.clock()
        if window is None:
            event = NewEvent(
                EventKind.WINDOW_REMOVED, actor, f"maintenance window of {group} removed", now
            )
        else:
            shown = dump_window(window)
            event = NewEvent(
                EventKind.WINDOW_CHANGED,
                actor,
                f"maintenance window of {group}: {', '.join(shown['days'])} "  # type: ignore[arg-type]
                f"{shown['start']}-{shown['end']} {window.timezone}",
                now,
                detail={"group": group, "window": shown},
            )
        self.store.set_window(group, None if window is None else dump_window(window), event)
        self.forget()
        self._redeclare()  # the wave deadlines its devices are served are in its time zone
        self._after_change()
        return window

    def window(self, group: str) -> dict[str, Any]:
        names = self.store.group_names()
        ids = [i for i, name in names.items() if name == group]
        if not ids:
            raise NotFound(f"no group {group!r}", hint="GET /v1/admin/groups lists them")
        found = self.store.windows().get(ids[0])
        if found is None:
            raise NotFound(f"group {group!r} has no maintenance window")
        return found

    # -- events --------------------------------------------------------------------

    def record(self, events: Iterable[NewEvent]) -> None:
        self.store.record_events(list(events))

    def events(self, where: EventFilter) -> list[StoredEvent]:
        return self.store.events(where)

    def supplement_changed(
        self, platform: str, build: str, state: SupplementState, actor: str
    ) -> None:
        kind = _SUPPLEMENT_EVENT.get(state)
        if kind is not None:
            self.record(
                [
                    NewEvent(
                        kind,
                        actor,
                        f"{platform}/{build} {state.value}",
                        self.clock(),
                        platform=platform,
                        build=build,
                    )
                ]
            )


@dataclass(slots=True)
class WaveCount:
    devices: int = 0
    installed: int = 0
    failed: int = 0


def rollout_summary(stored: StoredRollout) -> dict[str, Any]:
    """A rollout's state, as ``GET rollouts`` lists it and ``GET .../rollout`` starts:
    the open wave's name (``current_wave``), when the rollout started and the open wave
    opened (ISO 8601), and why it halted."""
    rollout = stored.rollout
    return {
        "platform": stored.platform,
        "build": rollout.build,
        "state": rollout.state.value,
        "current_wave": Rollouts._wave(rollout),
        "started_at": rollout.started_at.isoformat(),
        "opened_at": _iso(rollout.opened_at),
        "halted_because": rollout.halted_because,
    }


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _progress(
    device: FleetDevice, rollout: Rollout, failure: tuple[FailureKind, str] | None, wave: int
) -> DeviceProgress:
    installed = device.installed_at if device.supplemental_build == rollout.build else None
    if failure is None and device.installed_at is not None and installed is None:
        # It ran the build and left it without a reported failure: it fell back.
        failure = (
            FailureKind.FELL_BACK,
            f"ran {rollout.build}, now runs {device.supplemental_build or 'no supplement'}",
        )
    return DeviceProgress(
        device.device_id,
        installed_at=installed,
        last_report_at=device.last_seen_at,
        failure=None if failure is None else failure[0],
        detail="" if failure is None else failure[1],
        wave=wave,
    )


def device_events(
    device_id: str,
    previous: DeviceState | None,
    state: DeviceState,
    catalog: Catalog,
    now: datetime,
) -> list[NewEvent]:
    """The transitions one status report shows (installed, failed, rolled back,
    withdrawn, restart-pending, drift), as events of the device, under the catalogue
    platform the device is decided as (an iPad's are iOS's, as its supplements are)."""
    events = []
    platform = platform_name(state.platform) if state.platform else None

    def event(kind: EventKind, reason: str, build: str | None, **detail: Any) -> None:
        events.append(
            NewEvent(
                kind,
                AUTOMATIC,
                reason,
                now,
                device_id=device_id,
                platform=platform,
                build=build,
                detail=detail or None,
            )
        )

    before = previous.supplemental_build if previous else None
    after = state.supplemental_build
    if before != after:
        if after is not None:
            event(EventKind.DEVICE_INSTALLED, f"now runs {after}", str(after))
        if before is not None and (after is None or after < before):
            left = catalog.supplement_by_build(platform or "", before)
            withdrawn = left is not None and left.state_at(now) is SupplementState.WITHDRAWN
            event(
                EventKind.DEVICE_WITHDRAWN if withdrawn else EventKind.DEVICE_ROLLED_BACK,
                f"left {before} for {after or 'no supplement'}"
                + (" (withdrawn)" if withdrawn else ""),
                str(before),
            )
    failure = state.failure_reason
    if (
        state.install_state == InstallState.FAILED
        and failure is not None
        and (previous is None or previous.failure_reason != failure)
    ):
        reason = str(failure.get("reason", ""))
        event(
            EventKind.DEVICE_FAILED,
            f"failed to install {state.pending_build_version or 'a pending update'}: {reason}",
            state.pending_build_version,
            **{"failure-reason": reason, "count": failure.get("count")},
        )
    if state.restart_pending and not (previous and previous.restart_pending):
        event(
            EventKind.DEVICE_RESTART_PENDING,
            "old content still runs",
            str(after) if after else None,
        )
    drift = state.items.get(AGENT_DRIFT)
    if drift and drift != (previous.items.get(AGENT_DRIFT) if previous else None):
        lines = drift if isinstance(drift, list) else [drift]
        event(
            EventKind.DEVICE_DRIFT,
            f"{len(lines)} managed files changed behind bsi",
            str(after) if after else None,
            files=[str(line) for line in lines[:20]],
        )
    return events


def plan_sizes(members: Mapping[str, int], waves: int) -> list[int]:
    return [sum(1 for w in members.values() if w == i) for i in range(waves)]
