"""Simulated devices: ``light`` and ``full``; both run the agent's own cycle.

Both kinds read their facts with the agent's own probes from their device
root, check in over the real DDM endpoints with the agent's conversation
(:mod:`bsi.agent.protocol`), decide and report with the agent's cycle
(:meth:`bsi.agent.runner.Agent.cycle`), and hold the real wake-up long poll
on the agent's schedule (:mod:`bsi.agent.schedule`). They differ in what the
cycle does to the device:

* :class:`FullDevice` *is* the agent: :class:`bsi.agent.runner.Agent` on a
  small device root, run in a worker thread. It downloads the bundle and
  verifies it through TUF, stages it, swaps the files in (journaled), scans
  ``/proc`` for processes to relaunch, runs the health check and reports.
  Each cycle costs tens of milliseconds and a thread, so it suits the demo
  and small fleets.
* :class:`LightDevice` runs the same cycle as a
  :class:`~bsi.sim.recorded.RecordedAgent`: a record-only activator, facts
  probed once, state in memory (copied to ``var/lib/bsi/sim-state.json``),
  no payload transfer and no file work; the cycle is driven by the
  simulator's async transport (:mod:`bsi.sim.protocol`, over
  :mod:`bsi.sim.http`). What the server sees is the same protocol and the
  same reports (``tests/agent/test_agent_sim_contract.py`` holds it to that). That
  is what lets ten thousand of them run on two cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from bsi.agent.config import load_config
from bsi.agent.runner import Agent, LocalState
from bsi.domain.eligibility import Decision
from bsi.domain.status import AGENT_DECISION
from bsi.sim.fleet import DeviceSpec
from bsi.sim.http import Connection
from bsi.sim.protocol import DeviceSession, enroll
from bsi.sim.recorded import RecordedAgent
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
    """When the last completed check-in began (``time.time()``)."""
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


# -- light ---------------------------------------------------------------------------


class LightDevice:
    """The agent's own cycle (:class:`~bsi.sim.recorded.RecordedAgent`) over the real
    protocol, driven by the simulator's async transport; activation is recorded."""

    def __init__(
        self, spec: DeviceSpec, connection: Connection, *, unhealthy: bool = False
    ) -> None:
        self.spec = spec
        self.connection = connection
        self.status = DeviceStatus()
        self.agent = RecordedAgent(spec.root, load_config(spec.root), unhealthy=unhealthy)
        self._session: DeviceSession | None = None

    @property
    def state_file(self) -> Path:
        return self.spec.root / STATE_FILE

    def save(self) -> None:
        """A copy of the agent's state for inspection (not durable: a run is never resumed)."""
        path = self.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {"state": asdict(self.agent.state), "active": self.agent.recorder.active()}, handle
            )
        os.replace(temporary, path)
        self.agent.changed = False

    @property
    def session(self) -> DeviceSession:
        assert self._session is not None, "enroll first"
        return self._session

    async def enroll(self, token: str) -> None:
        enrollment = await enroll(self.connection, token)
        self.agent.state = LocalState(
            server_url=self.connection.base_url,
            device_id=enrollment.device_id,
            credential=enrollment.credential,
        )
        self.status.device_id = enrollment.device_id
        self._session = DeviceSession(self.connection, enrollment.credential)
        self.save()

    async def check_in(self) -> None:
        """One agent cycle (:meth:`Agent.cycle`), over this device's connection."""
        agent = self.agent
        report = await self.session.run(agent.cycle(agent.state, self.session.conversation))
        acknowledged = time.time()
        if agent.changed:
            self.save()
        status = self.status
        status.decided(report.outcome)
        status.active_build = report.active
        if report.active and status.installed_at is None:
            status.installed_at = acknowledged
        status.failure = report.failure

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


def light_state(root: Path) -> LocalState | None:
    """A light device's agent state (``sim-state.json``), for tests and inspection."""
    path = root / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return LocalState.read(
        data,
        source=str(path),
        key="state",
        hint="the simulator rewrites it after each check-in: run it again, or delete the file",
    )


__all__ = [
    "DeviceStatus",
    "FullDevice",
    "LightDevice",
    "Phase",
    "SimDevice",
    "light_state",
    "reported_decision",
]
