"""Running a simulated fleet against a real server: setup, publish, measure.

One run goes through these stages, in order:

1. **setup** — the groups (``sim`` with an ``AlwaysOn`` policy, ``sim-always-off``
   with an ``AlwaysOff`` one), enrollment tokens, and a device root per device;
2. **enroll** — every device spends a token over ``POST /v1/enroll``;
3. **baseline** — every device checks in once and reports its release, as a
   fleet does before a supplement exists; the ``offline`` devices then drop off;
4. **settle** — every online device goes back to waiting: holding the wake-up
   long poll (``--wake``) or sleeping until its next poll (``--no-wake``; the
   first poll of each device falls uniformly within one interval, as in a fleet
   whose devices started at different times);
5. **publish** — the sample supplement is signed into the TUF repository the
   server hosts and ``POST /v1/admin/catalog/sync-repository`` puts it into
   the catalogue (which wakes every waiting device). The publish instant is
   taken just *before* that request is sent, so it includes the sync itself;
6. **roll-out** — devices check in, decide and install; the run ends when
   every online device has completed a check-in begun after the sync (one
   begun before may have read the old catalogue) and every device the
   rules let install has installed (offline devices included, once they are
   back), or at ``timeout``. With a rollout ``plan`` the run also ends once
   the rollout halted and every online device has checked in since (the
   halt wakes them: whatever was in flight has reported).

A ``plan`` is set as the platform's default rollout plan before the
publish, so the sync starts the supplement's rollout with it; ``unhealthy``
is the fraction of light devices (a draw of their name) on which the
supplement fails its health check (:class:`~bsi.sim.recorded.RecordedAgent`).

Two patch-window measures are kept per device, both from the publish
instant: *server* — the time the server recorded for the device's first
report of the new supplemental build (``GET /v1/admin/patch-windows
?per_device=true``, ``installed_at``); *device* — when the server
acknowledged that report to the device. Percentiles are over the *eligible
online* devices: those the rules let install that were online at the publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from bsi.agent.schedule import Schedule
from bsi.domain.declarations import software_update_settings
from bsi.domain.patch_window import PERCENTILES
from bsi.domain.policy import InstallSecurityUpdate
from bsi.domain.rollout import draw
from bsi.errors import InvalidInput, ServerUnavailable
from bsi.sim.devices import DeviceStatus, FullDevice, LightDevice, Phase, SimDevice
from bsi.sim.fleet import (
    DEFAULT_MIX,
    GROUP,
    GROUP_ALWAYS_OFF,
    PLATFORM,
    DeviceSpec,
    Kind,
    plan_fleet,
    write_device_root,
)
from bsi.sim.http import Connection
from bsi.sim.sample import BASE_FILES, SUPPLEMENTAL_BUILD, Publisher
from bsi.sim.server import Admin

ROLLOUT_PATH = f"/v1/admin/supplements/{PLATFORM}/{SUPPLEMENTAL_BUILD}/rollout"

UNHEALTHY_DRAW = "sim-health-check"
"""The seed of the draw that picks the devices a supplement breaks (independent of waves)."""
AUTOMATIC_POLICY = "sim.softwareupdate.automatic"
ALWAYS_OFF_POLICY = "sim.softwareupdate.always-off"


@dataclass(frozen=True, slots=True)
class SimOptions:
    """What one run simulates. Times are seconds."""

    devices: int = 24
    full: int = 0
    """How many devices (one of each kind first) run the real agent; the rest are light."""
    mix: Mapping[Kind, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    wake: bool = True
    poll_interval: float = 60.0
    jitter: float = 0.1
    offline_seconds: float | None = 10.0
    """How long after the publish the offline devices come back; None: not during the run."""
    timeout: float = 120.0
    """How long after the publish to wait for the roll-out to finish."""
    concurrency: int = 256
    """Check-ins in flight at once, fleet-wide (long polls are not counted)."""
    publish: bool = True
    seed: int = 2026
    plan: Mapping[str, Any] | None = None
    """A rollout plan (``PUT /v1/admin/rollout-plans/{platform}``'s body) set before the
    publish; None: the supplement goes to every device at once."""
    unhealthy: float = 0.0
    """The fraction of light devices the supplement breaks (its health check fails)."""

    def breaks(self, spec: DeviceSpec) -> bool:
        """Whether the supplement fails its health check on ``spec`` (light devices only)."""
        return not spec.full and draw(UNHEALTHY_DRAW, spec.name) < self.unhealthy


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The fleet at one instant, for the live progress display."""

    stage: str
    phases: Mapping[Phase, int]
    installed: int
    expected: int
    since_publish: float | None
    devices: int


@dataclass(frozen=True, slots=True)
class DeviceResult:
    spec: DeviceSpec
    status: DeviceStatus
    server: Mapping[str, Any]
    """The admin API's record of the device (``GET /v1/admin/devices``)."""
    server_installed_at: float | None
    """When the server recorded its first report of the sample supplement (epoch seconds)."""

    @property
    def offline(self) -> bool:
        return self.spec.profile.offline


@dataclass(frozen=True, slots=True)
class SimResult:
    options: SimOptions
    server_url: str
    devices: list[DeviceResult]
    published_at: float | None
    sync_seconds: float | None
    ended_at: float
    completed: bool
    stage_seconds: Mapping[str, float]
    supplements: list[dict[str, Any]]
    cves: list[dict[str, Any]]
    rollout: dict[str, Any] | None = None
    """``GET .../rollout`` at the end (None without a plan)."""
    activations: list[dict[str, Any]] = field(default_factory=list)
    """The ``device-installed`` and ``device-failed`` events of the supplement, oldest first."""
    halts: list[dict[str, Any]] = field(default_factory=list)
    """The ``rollout-halted`` events of the supplement."""

    def measured(self) -> list[DeviceResult]:
        """The eligible online devices: what the patch-window percentiles are over."""
        return [d for d in self.devices if d.spec.profile.expects_install and not d.offline]

    def windows(self, source: Literal["server", "device"]) -> list[float | None]:
        """Seconds from the publish to each eligible online device's install (None: not yet)."""
        if self.published_at is None:
            return []
        found: list[float | None] = []
        for device in self.measured():
            at = device.server_installed_at if source == "server" else device.status.installed_at
            found.append(None if at is None else max(at - self.published_at, 0.0))
        return found

    def percentiles(self, source: Literal["server", "device"]) -> dict[int, float | None]:
        return percentiles(self.windows(source))

    def mismatches(self) -> list[DeviceResult]:
        """Devices whose own decision differs from what their kind should get."""
        wrong = []
        for device in self.devices:
            profile, status = device.spec.profile, device.status
            if device.offline and not status.online:
                continue
            if profile.expects_install:
                if status.active_build != SUPPLEMENTAL_BUILD:
                    wrong.append(device)
            elif (status.outcome, status.reason) != (
                profile.expected_outcome.value,
                profile.expected_reason.value,
            ) or status.active_build:
                wrong.append(device)
        return wrong


def percentiles(values: Sequence[float | None]) -> dict[int, float | None]:
    """Nearest-rank p50/p90/p99 over every value; None where that rank has not arrived yet."""
    arrived = sorted(v for v in values if v is not None)
    result: dict[int, float | None] = {}
    for p in PERCENTILES:
        rank = max(1, math.ceil(p / 100 * len(values))) if values else 0
        result[p] = arrived[rank - 1] if 0 < rank <= len(arrived) else None
    return result


@dataclass
class _Tracked:
    device: SimDevice
    offline: bool
    idle: bool = False
    settled: bool = False


class Simulation:
    """One run of one fleet against one server (see the module's description)."""

    def __init__(
        self,
        server_url: str,
        admin: Admin,
        options: SimOptions,
        devices_dir: Path,
        *,
        publisher: Publisher | None = None,
        trust_anchor: Path | None = None,
        on_progress: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.server_url = server_url
        self.admin = admin
        self.options = options
        self.devices_dir = devices_dir
        self.publisher = publisher
        self.trust_anchor = trust_anchor or (publisher.trust_anchor if publisher else None)
        self.on_progress = on_progress or (lambda _snapshot: None)
        self.stage = "setup"
        self.stage_seconds: dict[str, float] = {}
        self.published_at: float | None = None
        self.sync_seconds: float | None = None
        self.synced_at: float | None = None
        """When the catalogue held the supplement: a check-in begun after it decides with it."""
        self._tracked: list[_Tracked] = []
        self._published = asyncio.Event()
        self._gate = asyncio.Semaphore(max(1, options.concurrency))
        self.halted_at: float | None = None
        """When the server halted the rollout (epoch seconds)."""

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> SimResult:
        options = self.options
        started = time.monotonic()
        specs = plan_fleet(options.devices, options.mix, self.devices_dir, full=options.full)
        if any(s.full for s in specs) and self.trust_anchor is None:
            raise InvalidInput(
                "full-mode devices need the TUF trust anchor (the repository's 1.root.json)",
                hint="give --tuf-repo-dir, or run light devices only",
            )
        await asyncio.to_thread(_write_roots, specs)
        bundle = (
            await asyncio.to_thread(self.publisher.build)
            if self.publisher and options.publish
            else None
        )
        tokens = await self._setup_server(specs)
        self._mark("setup", started)

        full_count = sum(1 for s in specs if s.full)
        executor = ThreadPoolExecutor(max_workers=min(16, full_count)) if full_count else None
        self._tracked = [
            _Tracked(self._device(spec, executor), spec.profile.offline) for spec in specs
        ]
        tasks: list[asyncio.Task[None]] = []
        reporter = asyncio.create_task(self._report_progress())
        completed = False
        try:
            self.stage = "enroll"
            begin = time.monotonic()
            await self._each(lambda t: t.device.enroll(tokens[t.device.spec.profile.group]))
            self._mark("enroll", begin)

            self.stage = "baseline"
            begin = time.monotonic()
            for tracked in self._tracked:
                tracked.device.status.online = True
            await self._each(self._check_in)
            for tracked in self._tracked:
                if tracked.offline:
                    tracked.device.status.online = False
            self._mark("baseline", begin)

            self.stage = "settle"
            begin = time.monotonic()
            tasks = [asyncio.create_task(self._life(i, t)) for i, t in enumerate(self._tracked)]
            await self._settle()
            self._mark("settle", begin)

            if bundle is not None and self.publisher is not None:
                self.stage = "publish"
                await asyncio.to_thread(self.publisher.sign, bundle, datetime.now(UTC).date())
                self.published_at = time.time()
                await self.admin.sync_repository()
                self.synced_at = time.time()
                self.sync_seconds = self.synced_at - self.published_at
            else:
                self.published_at = self.synced_at = time.time()
            self._published.set()

            self.stage = "roll-out"
            deadline = time.monotonic() + options.timeout
            looked = 0.0
            while time.monotonic() < deadline:
                if options.plan is not None and time.monotonic() - looked > 0.5:
                    looked = time.monotonic()
                    await self._look_at_rollout()
                if self._done():
                    completed = True
                    break
                await asyncio.sleep(0.1)
            self._mark("roll-out", deadline - options.timeout)
            self.stage = "done" if completed else "timed out"
        finally:
            ended = time.time()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # Answer the long polls the server still holds for the devices that are gone:
            # uvicorn's graceful shutdown would otherwise wait out their timeouts.
            with contextlib.suppress(Exception):
                await self.admin.call("POST", "/v1/admin/wake")
            self._emit()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            for tracked in self._tracked:
                await tracked.device.aclose()
            if executor is not None:
                executor.shutdown(wait=True)
        return await self._result(ended, completed)

    def _mark(self, stage: str, began: float) -> None:
        self.stage_seconds[stage] = time.monotonic() - began

    def _device(self, spec: DeviceSpec, executor: ThreadPoolExecutor | None) -> SimDevice:
        http = Connection(self.server_url)
        if spec.full:
            assert executor is not None
            assert self.trust_anchor is not None
            return FullDevice(
                spec,
                http,
                server_url=self.server_url,
                trust_anchor=self.trust_anchor,
                admin=self.admin,
                executor=executor,
            )
        return LightDevice(spec, http, unhealthy=self.options.breaks(spec))

    async def _setup_server(self, specs: Sequence[DeviceSpec]) -> dict[str, str]:
        """Groups, their policies, and an enrollment token per group."""
        admin = self.admin
        policies = {
            GROUP: software_update_settings(
                AUTOMATIC_POLICY,
                install_security_update=InstallSecurityUpdate.ALWAYS_ON,
                rsr_enable=True,
            ),
            GROUP_ALWAYS_OFF: software_update_settings(
                ALWAYS_OFF_POLICY, install_security_update=InstallSecurityUpdate.ALWAYS_OFF
            ),
        }
        tokens = {}
        for group, declaration in policies.items():
            await admin.ensure_group(group)
            await admin.put_declaration(declaration.to_json(), group)
            uses = sum(1 for s in specs if s.profile.group == group)
            tokens[group] = await admin.enrollment_token(group, uses)
        if self.options.plan is not None:
            await admin.call("PUT", f"/v1/admin/rollout-plans/{PLATFORM}", json=self.options.plan)
        return tokens

    async def _look_at_rollout(self) -> None:
        """Note when the server halted the rollout (its event's instant: the halt woke the
        devices, and their check-ins may come before this look)."""
        if self.halted_at is None:
            halts = await self.admin.events(("rollout-halted",), SUPPLEMENTAL_BUILD)
            if halts:
                self.halted_at = datetime.fromisoformat(halts[0]["at"]).timestamp()

    async def _each(self, work: Callable[[_Tracked], Any]) -> None:
        async def bounded(tracked: _Tracked) -> None:
            async with self._gate:
                await work(tracked)

        await asyncio.gather(*(bounded(t) for t in self._tracked))

    async def _check_in(self, tracked: _Tracked) -> bool:
        """One check-in; False when the server was unavailable (the agent then backs off).

        Failures are counted and shown, and never end the device's life.
        """
        status = tracked.device.status
        began = time.time()
        try:
            await tracked.device.check_in()
        except asyncio.CancelledError:
            raise
        except ServerUnavailable as error:
            status.errors += 1
            status.last_error = str(error)
            return False
        except Exception as error:  # a simulator shows every failure, and goes on
            status.errors += 1
            status.failure = status.last_error = f"{type(error).__name__}: {error}"
            return True
        status.checked_in += 1
        status.last_check_in = began
        return True

    async def _life(self, index: int, tracked: _Tracked) -> None:
        """A device's days: (offline for a while,) then wait or poll, and check in."""
        options = self.options
        rng = random.Random(options.seed * 1_000_003 + index)
        device = tracked.device
        if tracked.offline:
            await self._published.wait()
            if options.offline_seconds is None:
                return
            await asyncio.sleep(options.offline_seconds)
            device.status.online = True
            async with self._gate:
                await self._check_in(tracked)
        schedule = Schedule(interval=options.poll_interval, jitter=options.jitter)
        cadence = schedule.start()
        interval = schedule.first_check_in(rng.random())  # fleets start at different times
        while True:
            tracked.idle = True
            try:
                if options.wake:
                    generation = await self._wait(tracked, schedule, interval, cadence.generation)
                    cadence = replace(cadence, generation=generation)
                else:
                    tracked.settled = True
                    await asyncio.sleep(interval)
            finally:
                tracked.idle = False
            async with self._gate:
                reached = await self._check_in(tracked)
            interval, cadence = schedule.after_check_in(cadence, reached=reached, draw=rng.random())

    async def _wait(
        self, tracked: _Tracked, schedule: Schedule, seconds: float, generation: int
    ) -> int:
        """As ``bsi agent run`` does: until the next poll is due or the server wakes us."""
        wait = schedule.wait(seconds, generation, time.monotonic())
        while (timeout := wait.next_poll(time.monotonic())) is not None:
            tracked.settled = tracked.settled or wait.generation != 0
            try:
                wait.answered(*await tracked.device.wait(wait.generation, timeout))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                tracked.device.status.errors += 1
                tracked.device.status.last_error = f"{type(error).__name__}: {error}"
                await asyncio.sleep(wait.failed(time.monotonic()))
                continue
            tracked.settled = True
        return wait.generation

    async def _settle(self) -> None:
        """Until every online device waits (with a known wake-up generation) or sleeps."""
        deadline = time.monotonic() + 30 + len(self._tracked) / 100
        while time.monotonic() < deadline:
            if all(t.idle and t.settled for t in self._tracked if not t.offline):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let the last long polls reach the server

    def _done(self) -> bool:
        assert self.synced_at is not None
        if self.halted_at is not None:
            # Halted: done once every online device checked in after it (the halt wakes them).
            return all(
                t.device.status.last_check_in is not None
                and t.device.status.last_check_in >= self.halted_at
                for t in self._tracked
                if t.device.status.online
            )
        for tracked in self._tracked:
            status = tracked.device.status
            if not status.online:
                if tracked.offline and self.options.offline_seconds is not None:
                    return False
                continue
            # A check-in begun before the sync may have read the old catalogue.
            if status.last_check_in is None or status.last_check_in < self.synced_at:
                return False
            # A device the supplement breaks is done once it reported its failure.
            broken = self.options.breaks(tracked.device.spec) and status.failure
            waiting = tracked.device.spec.profile.expects_install and not status.installed_at
            if waiting and not broken:
                return False
        return True

    # -- progress ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        phases: Counter[Phase] = Counter()
        installed = expected = 0
        away = self.options.offline_seconds is None  # the offline devices never come back
        for tracked in self._tracked:
            status = tracked.device.status
            phases[status.phase()] += 1
            if tracked.device.spec.profile.expects_install and not (away and tracked.offline):
                expected += 1
                installed += status.active_build is not None
        since = None if self.published_at is None else time.time() - self.published_at
        return Snapshot(self.stage, dict(phases), installed, expected, since, len(self._tracked))

    def _emit(self) -> None:
        self.on_progress(self.snapshot())

    async def _report_progress(self) -> None:
        every = 0.25 if len(self._tracked) <= 2000 else 1.0  # a snapshot looks at every device
        while True:
            self._emit()
            await asyncio.sleep(every)

    # -- results -----------------------------------------------------------------------

    async def _result(self, ended: float, completed: bool) -> SimResult:
        admin = self.admin
        records: dict[str, dict[str, Any]] = {}
        for group in (GROUP, GROUP_ALWAYS_OFF):
            for record in await admin.devices(group):
                records[record["device_id"]] = record
        installed_at: dict[str, float] = {}
        for row in await admin.patch_windows():
            if row["supplement_build"] == SUPPLEMENTAL_BUILD:
                at = datetime.fromisoformat(row["installed_at"]).timestamp()
                installed_at[row["device_id"]] = at
        devices = [
            DeviceResult(
                t.device.spec,
                t.device.status,
                records.get(t.device.status.device_id, {}),
                installed_at.get(t.device.status.device_id),
            )
            for t in self._tracked
        ]
        return SimResult(
            options=self.options,
            server_url=self.server_url,
            devices=devices,
            published_at=self.published_at,
            sync_seconds=self.sync_seconds,
            ended_at=ended,
            completed=completed,
            stage_seconds=dict(self.stage_seconds),
            supplements=await admin.supplement_compliance(),
            cves=await admin.cve_compliance(),
            rollout=None if self.options.plan is None else await admin.call("GET", ROLLOUT_PATH),
            activations=await admin.events(
                ("device-installed", "device-failed"), SUPPLEMENTAL_BUILD
            ),
            halts=await admin.events(("rollout-halted",), SUPPLEMENTAL_BUILD),
        )


def _write_roots(specs: Sequence[DeviceSpec]) -> None:
    for spec in specs:
        write_device_root(spec.root, spec.profile, BASE_FILES if spec.full else None)
