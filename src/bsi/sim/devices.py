"""Simulated devices: ``light`` (the agent's decision and protocol) and ``full`` (the agent).

Both kinds read their facts with the agent's own probes from their device
root, check in over the real DDM endpoints, and hold the real wake-up long
poll. They differ in what happens once the rules say "install":

* :class:`FullDevice` *is* the agent: :class:`bsi.agent.runner.Agent` on a
  small device root, run in a worker thread. It downloads the bundle and
  verifies it through TUF, stages it, swaps the files in (journaled), scans
  ``/proc`` for processes to relaunch, runs the health check and reports.
  Each cycle costs tens of milliseconds and a thread, so it suits the demo
  and small fleets.
* :class:`LightDevice` runs the agent's cycle step for step — facts,
  sync-token check-in, declarations, catalogue, :func:`next_steps`,
  :func:`status_report` before and after — but carries out ``activate`` by
  writing the supplement into its own small state file
  (``var/lib/bsi/sim-state.json``) instead of fetching and swapping files.
  What the server sees is the same protocol and the same reports; what is
  skipped is the payload transfer and the file work on the device. It also
  probes its facts once rather than every cycle (nothing changes its root
  during a run), and talks HTTP through :mod:`bsi.sim.http`. That is what
  lets ten thousand of them run on two cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from bsi.agent.config import load_config
from bsi.agent.facts import read_facts
from bsi.agent.machine import DiskState, InstallState, Step, next_steps
from bsi.agent.report import status_report
from bsi.agent.runner import Agent
from bsi.domain.declarations import effective_policy
from bsi.domain.eligibility import DEFAULT_RULES, Decision
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.status import AGENT_DECISION
from bsi.domain.versions import Build, ExtraVersion
from bsi.sim.fleet import DeviceSpec
from bsi.sim.http import Connection
from bsi.sim.protocol import DeviceSession, enroll
from bsi.sim.server import Admin

STATE_FILE = Path("var/lib/bsi/sim-state.json")


class Phase(StrEnum):
    """Where a device stands, as the progress display counts it."""

    OFFLINE = "offline"
    STARTING = "starting"
    INSTALLED = "installed"
    PENDING = "pending"
    DEFERRED = "deferred"
    BLOCKED = "blocked"
    UP_TO_DATE = "up-to-date"
    FAILED = "failed"


_PHASE_OF_OUTCOME = {
    "install": Phase.PENDING,
    "enforced": Phase.PENDING,
    "deferred": Phase.DEFERRED,
    "blocked": Phase.BLOCKED,
    "up-to-date": Phase.UP_TO_DATE,
}


@dataclass
class DeviceStatus:
    """What the simulator knows about one device; updated after every check-in.

    ``installed_at`` is the wall-clock instant (``time.time()``) at which the
    server acknowledged (HTTP 200) the first status report that carried an
    active supplement: the device-side measure of its patch window.
    """

    device_id: str = ""
    online: bool = False
    checked_in: int = 0
    last_check_in: float | None = None
    outcome: str | None = None
    reason: str | None = None
    message: str | None = None
    active_build: str | None = None
    installed_at: float | None = None
    failure: str | None = None
    errors: int = 0
    last_error: str | None = None

    def phase(self) -> Phase:
        if not self.online:
            return Phase.OFFLINE
        if self.failure:
            return Phase.FAILED
        if self.active_build:
            return Phase.INSTALLED
        if self.outcome is None:
            return Phase.STARTING
        return _PHASE_OF_OUTCOME.get(self.outcome, Phase.STARTING)

    def decided(self, decision: Decision | None) -> None:
        if decision is not None:
            self.outcome = decision.outcome.value
            self.reason = decision.reason.value
            self.message = decision.message


class SimDevice(Protocol):
    spec: DeviceSpec
    status: DeviceStatus

    async def enroll(self, token: str) -> None: ...

    async def check_in(self) -> None: ...

    async def wait(self, generation: int, timeout: float) -> tuple[int, bool]: ...

    async def aclose(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


# -- light ---------------------------------------------------------------------------


@dataclass
class LightState:
    """``sim-state.json``: the credential, the declarations, and the "active" supplement."""

    device_id: str = ""
    credential: str = ""
    declarations_token: str | None = None
    declarations: list[dict[str, Any]] = field(default_factory=list)
    active_build: str | None = None
    active_prerequisite: str | None = None
    active_extra: str | None = None


class LightDevice:
    """The agent's cycle over the real protocol; activation is recorded, not performed."""

    def __init__(self, spec: DeviceSpec, connection: Connection) -> None:
        self.spec = spec
        self.connection = connection
        self.status = DeviceStatus()
        self.config = load_config(spec.root)
        self.state = LightState()
        self._policy = SoftwareUpdatePolicy()
        self._session: DeviceSession | None = None
        self._probed: DeviceFacts | None = None

    @property
    def state_file(self) -> Path:
        return self.spec.root / STATE_FILE

    def save(self) -> None:
        path = self.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self.state), handle)
        os.replace(temporary, path)

    @property
    def session(self) -> DeviceSession:
        assert self._session is not None, "enroll first"
        return self._session

    async def enroll(self, token: str) -> None:
        enrollment = await enroll(self.connection, token)
        self.state = LightState(enrollment.device_id, enrollment.credential)
        self.status.device_id = enrollment.device_id
        self._session = DeviceSession(self.connection, enrollment.credential)
        self.save()

    def facts(self) -> DeviceFacts:
        """The agent's probes of the device root, run once: nothing changes the root during
        a run, and probing every check-in cost 0.75 ms of the simulator's CPU each time."""
        if self._probed is None:
            self._probed = read_facts(self.spec.root, self.config)
        facts = self._probed
        active = self.state.active_build
        return replace(
            facts,
            supplemental_build=Build.parse(active) if active else None,
            supplemental_extra=ExtraVersion.parse(self.state.active_extra)
            if self.state.active_extra
            else None,
        )

    async def check_in(self) -> None:
        """One agent cycle (see ``Agent._cycle``), with activation kept in the state file."""
        state = self.state
        facts = self.facts()
        token = await self.session.run(
            self.session.conversation.declarations_token(state.declarations_token)
        )
        if token is not None:
            declarations = await self.session.run(self.session.conversation.declarations())
            state.declarations = [d.to_json() for d in declarations]
            state.declarations_token = token
            self._policy = effective_policy(declarations)
            self.save()
        catalog = await self.session.run(self.session.conversation.catalog(facts.platform))
        active = Build.parse(state.active_build) if state.active_build else None
        disk = DiskState(
            active_build=active,
            active_prerequisite=(
                Build.parse(state.active_prerequisite) if state.active_prerequisite else None
            ),
            staged=frozenset({active}) if active else frozenset(),
        )
        rules = self.config.rules(DEFAULT_RULES, facts.platform)
        plan = next_steps(facts, catalog, self._policy, utc_now(), disk, rules)
        target = plan.target
        if plan.steps:
            await self._report(
                status_report(
                    facts,
                    active_extra=facts.supplemental_extra,
                    install_state=plan.install_state,
                    pending=target.version if target else None,
                    pending_build=str(target.build) if target else None,
                    decision=plan.decision,
                )
            )
        changed = False
        for step, build in plan.steps:
            if step in (Step.DISCARD, Step.ROLL_BACK):
                state.active_build = state.active_prerequisite = state.active_extra = None
                changed = True
            elif step is Step.ACTIVATE and target is not None:
                state.active_build = str(build)
                state.active_prerequisite = str(facts.build)
                state.active_extra = str(target.version.extra)
                changed = True
            # DOWNLOAD, STAGE, RELAUNCH, HEALTH_CHECK: no content in light mode.
        if changed:
            self.save()
            facts = self.facts()
        await self._report(
            status_report(
                facts,
                active_extra=facts.supplemental_extra,
                install_state=InstallState.NONE,
                decision=plan.decision,
            )
        )
        acknowledged = time.time()
        status = self.status
        status.decided(plan.decision)
        status.active_build = state.active_build
        if state.active_build and status.installed_at is None:
            status.installed_at = acknowledged
        status.failure = None

    async def _report(self, report: dict[str, Any]) -> None:
        await self.session.run(self.session.conversation.report(report))

    async def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        return await self.session.wait(generation, timeout)

    async def aclose(self) -> None:
        self.connection.close()


# -- full ------------------------------------------------------------------------------


class FullDevice:
    """The real agent on the device's root, one cycle at a time in a worker thread.

    The agent's own report carries its decision (``bsi.agent.decision``); the
    simulator reads it back through the admin API, as an operator would,
    rather than reaching into the agent.
    """

    def __init__(
        self,
        spec: DeviceSpec,
        connection: Connection,
        *,
        server_url: str,
        trust_anchor: Path,
        admin: Admin,
        executor: Executor,
    ) -> None:
        self.spec = spec
        self.connection = connection
        self.status = DeviceStatus()
        self.server_url = server_url
        self.trust_anchor = trust_anchor
        self.admin = admin
        self.executor = executor
        self.agent = Agent(spec.root, load_config(spec.root))
        self._session: DeviceSession | None = None

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def enroll(self, token: str) -> None:
        device_id = await self._in_thread(
            self.agent.enroll, self.server_url, token, self.trust_anchor
        )
        self.status.device_id = str(device_id)
        credential = self.agent.load_state().credential
        self._session = DeviceSession(self.connection, credential)

    async def check_in(self) -> None:
        report = await self._in_thread(self.agent.once)
        acknowledged = time.time()
        status = self.status
        status.active_build = report.active
        if report.active and status.installed_at is None:
            status.installed_at = acknowledged
        status.failure = report.failure
        device = await self.admin.device(status.device_id)
        decision = reported_decision(device.get("status_items") or {})
        status.outcome = decision.get("outcome")
        status.reason = decision.get("reason")
        status.message = decision.get("message")

    async def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        assert self._session is not None, "enroll first"
        return await self._session.wait(generation, timeout)

    async def aclose(self) -> None:
        self.connection.close()


def reported_decision(items: dict[str, Any]) -> dict[str, str]:
    """The agent's own decision (:data:`~bsi.domain.status.AGENT_DECISION`) from its
    status items, nested as reported or flattened to dotted names."""
    node: Any = items
    for part in AGENT_DECISION.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        return {str(k): str(v) for k, v in node.items()}
    prefix = AGENT_DECISION + "."
    found = {k[len(prefix) :]: str(v) for k, v in items.items() if k.startswith(prefix)}
    whole = items.get(AGENT_DECISION)
    if isinstance(whole, dict):
        found.update({str(k): str(v) for k, v in whole.items()})
    return found


def light_state(root: Path) -> LightState | None:
    """A light device's state file, for tests and inspection."""
    try:
        return LightState(**json.loads((root / STATE_FILE).read_text()))
    except FileNotFoundError:
        return None


__all__ = [
    "DeviceStatus",
    "FullDevice",
    "LightDevice",
    "LightState",
    "Phase",
    "SimDevice",
    "light_state",
    "reported_decision",
]
