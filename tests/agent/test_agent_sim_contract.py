"""Contract: a light simulated device and the real agent send identical status reports.

Both check in with the real server (the ``world`` fixture: a signed
supplement, a TUF repository, a process using the file it replaces) from
device roots with the same facts, and both run :meth:`Agent.cycle` — the real
agent with its swap activator, TUF download, relaunch and health check; the
light device as :class:`~bsi.sim.recorded.RecordedAgent` (record-only
activator, facts probed once, state in memory). Every status report each
sends (``PUT /v1/ddm/status``) is captured at the transport and compared,
byte for byte once parsed. The server's ``Date`` and both clocks are pinned
to one instant so the clock-skew item is the same for both.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from test_agent_end_to_end import World, fake_battery, snapshot

from bsi.agent.config import AgentConfig
from bsi.agent.ddm_client import DdmClient
from bsi.agent.protocol import STATUS_PATH, Request, drive
from bsi.agent.runner import Agent, CycleReport
from bsi.sim.recorded import RecordedAgent

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Pinned:
    status: int
    headers: Mapping[str, str]
    body: bytes


def cycle(agent: Agent) -> tuple[CycleReport, list[dict[str, Any]]]:
    """One cycle of ``agent`` as :meth:`Agent.once` runs it, capturing its status reports."""
    reports: list[dict[str, Any]] = []
    with agent.cycle_lock():
        agent.activator.recover()
        state = agent.load_state()
        client = DdmClient(state.server_url, state.credential)

        def send(request: Request) -> Pinned:
            reply = client.send(request)
            if request.path == STATUS_PATH:
                reports.append(request.json)
            headers = {name.lower(): value for name, value in reply.headers.items()}
            headers["date"] = format_datetime(NOW, usegmt=True)
            return Pinned(reply.status, headers, reply.body)

        try:
            result = drive(agent.cycle(state, client.conversation), send)
        finally:
            client.close()
    return result, reports


def pair(world: World, tmp_path: Path) -> tuple[Agent, RecordedAgent]:
    """The world's real agent and a light device on a copy of its root, both enrolled."""
    light_root = tmp_path / "light-device"
    shutil.copytree(world.root, light_root, symlinks=True)
    real = Agent(world.root, AgentConfig(), clock=lambda: NOW)
    light = RecordedAgent(light_root, AgentConfig(), clock=lambda: NOW)
    anchor = tmp_path / "repo" / "metadata" / "1.root.json"
    for agent in (real, light):
        agent.enroll(world.server_url, world.enrollment_token, anchor)
    return real, light


def test_an_install_is_reported_identically(world: World, tmp_path: Path) -> None:
    real, light = pair(world, tmp_path)
    sent = []
    for _ in range(2):  # the install, then a check-in with nothing to do
        real_result, real_reports = cycle(real)
        light_result, light_reports = cycle(light)
        assert real_result.failure is None, real_result.failure
        assert light_reports == real_reports
        sent.append(real_reports)
        assert (light_result.active, light_result.decision, light_result.failure) == (
            real_result.active,
            real_result.decision,
            real_result.failure,
        )
    assert real_result.active == "12A100a"
    (before, after), (again,) = sent  # before the steps, after them; then the final one only
    system = before["StatusItems"]["softwareupdate"]
    assert system["pending-version"]["build-version"] == "12A100a"
    assert system["install-state"] != "none"
    supplemental = after["StatusItems"]["device"]["operating-system"]["supplemental"]
    assert supplemental == {"build-version": "12A100a", "extra-version": "(a)"}
    assert again["StatusItems"]["device"] == after["StatusItems"]["device"]
    assert again["StatusItems"]["bsi"]["agent"]["decision"]["reason"] == "supplement-installed"
    assert real_result.steps == light_result.steps == ()
    assert snapshot(world.root) != world.baseline  # the real one did swap its files
    assert snapshot(light.root) == world.baseline  # the light one recorded it only


def test_a_deferral_is_reported_identically(world: World, tmp_path: Path) -> None:
    fake_battery(world.root, 5)
    real, light = pair(world, tmp_path)
    real_result, real_reports = cycle(real)
    light_result, light_reports = cycle(light)
    assert light_reports == real_reports
    assert real_result.outcome is not None
    assert real_result.outcome.reason.value == "battery-low"
    assert light_result.outcome == real_result.outcome
    assert real_result.steps == light_result.steps == ()
