"""A rollback really SIGKILLed at random instants around its deactivation.

A module-wide server publishes ``(a)``; a template device is enrolled and
committed on ``(a)``. Each run copies the template under a fresh identity
(``enroll --force``; the server records it on ``(a)``), starts a process that
maps the device's libssl (a "service" the relaunch command restarts), runs
``bsi agent rollback`` as its own process group and, once the removal is
recorded in ``agent.json``, SIGKILLs the group after a random delay spread
over the deactivation and the relaunch that follows it. Then one
uninterrupted ``bsi agent once``; every run must end:

* on the baseline byte for byte (the rollback finished, never undone);
* the service relaunched onto the baseline's file, nothing restart-pending;
* the server told: the device's record has no supplemental build;
* ``(a)`` recorded as removed, nothing pending commit, and a further cycle
  changes nothing.

Kills: ``BSI_ROLLBACK_KILLS`` (default 6; 20 under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_agent_end_to_end import HEALTHY, maps_inode, pid_of, publish_letter, snapshot

from agent_support import baseline_device, lines_in, serving, start_holder, stop_holder, wait_for
from bsi.agent.config import AgentConfig
from bsi.agent.runner import REMOVED, Agent
from cryptex_support import PATCHED_FILES

KILLS = int(os.environ.get("BSI_ROLLBACK_KILLS", "20" if os.environ.get("CI") else "6"))
WORKERS = 2
SEED = 20261130


@dataclass(frozen=True)
class Fleet:
    url: str
    admin: httpx.Client
    token: str
    anchor: Path
    template: Path
    baseline: dict[str, tuple[str, int]]
    tree_a: dict[str, tuple[str, int]]
    holder: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("rollback-kill")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    with serving(work) as served:
        publish_letter(work, "a", PATCHED_FILES, HEALTHY, served.relaunch)
        assert served.admin.post("/v1/admin/catalog/sync-repository").is_success
        device = work / "template" / "root"
        baseline_device(device)
        baseline = snapshot(device)
        agent = Agent(device, AgentConfig())
        agent.enroll(served.url, served.token, served.anchor)
        assert agent.once().active == "12A100a"  # nothing maps the library yet
        yield Fleet(
            served.url,
            served.admin,
            served.token,
            served.anchor,
            device.parent,
            baseline,
            snapshot(device),
            work / "scripts" / "holder.py",
            env,
        )


@dataclass(frozen=True)
class Ending:
    at: str  # where the kill found the rollback
    relaunched_at_once: bool  # the next cycle had to relaunch the service


def _where(fleet: Fleet, device: Path, root: Path, finished: bool, relaunches: int) -> str:
    if finished:
        return "after it finished"
    if lines_in(device / "relaunch-started") > relaunches:
        return "during the relaunch"
    tree = snapshot(root)
    if tree == fleet.tree_a:
        return "before the files moved"
    if tree == fleet.baseline:
        return "after the files moved"
    return "amid the files moving"


def one_kill(fleet: Fleet, base: Path, number: int, delay: float) -> Ending:
    device = base / f"kill-{number}"
    shutil.copytree(fleet.template, device, symlinks=True)
    root = device / "root"
    agent = Agent(root, AgentConfig())
    device_id = agent.enroll(fleet.url, fleet.token, fleet.anchor, force=True)
    assert agent.once().steps == ()  # the server now has this device on (a)
    record = fleet.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert record["supplemental_build"] == "12A100a", record
    holder = start_holder(fleet.holder, root)
    pidfile = device / "holder.pid"
    try:
        wait_for(lambda: pidfile.exists(), 20)
        rollback = subprocess.Popen(
            [sys.executable, "-m", "bsi", "agent", "rollback", "--root", str(root)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=fleet.env,
        )
        state_file = agent.state_file
        wait_for(lambda: REMOVED in state_file.read_text() or rollback.poll() is not None, 60)
        time.sleep(delay)
        finished = rollback.poll() is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rollback.pid, signal.SIGKILL)
        rollback.wait()
        at = _where(fleet, device, root, finished, 0)
        relaunches = lines_in(device / "relaunch-started")

        report = agent.once()  # the next cycle (in this process: nothing kills it)
        output = str(report)
        assert snapshot(root) == fleet.baseline, (at, output)
        status = agent.status()
        assert status["active_supplement"] is None, (at, status)
        assert status["failed_builds"]["12A100a"]["kind"] == REMOVED, (at, status)
        assert status["pending_commit"] is None, (at, status)
        assert status["last_good"] is None, (at, status)
        assert status["restart_pending"] is False, (at, status, output)
        assert status["staged"] == [], (at, status)
        library = root / "usr/lib/libssl.so.3"
        assert maps_inode(pid_of(pidfile), library) == library.stat().st_ino, (at, output)
        record = fleet.admin.get(f"/v1/admin/devices/{device_id}").json()
        assert record["supplemental_build"] is None, (at, record)  # the server is told
        again = agent.once()
        assert again.steps == (), (at, again)  # nothing rolled back, activated or relaunched
        assert again.decision.startswith("not installing debian 12.5 (a)"), again.decision
        assert "removed by an administrator" in again.decision, again.decision
        assert snapshot(root) == fleet.baseline, (at, again)
        return Ending(at, lines_in(device / "relaunch-started") > relaunches)
    finally:
        stop_holder(holder, pidfile)
        shutil.rmtree(device, ignore_errors=True)


def _window(fleet: Fleet, base: Path) -> float:
    """Seconds from the removal being recorded to the end of an uninterrupted rollback."""
    device = base / "timing"
    shutil.copytree(fleet.template, device, symlinks=True)
    root = device / "root"
    holder = start_holder(fleet.holder, root)
    try:
        wait_for(lambda: (device / "holder.pid").exists(), 20)
        state_file = Agent(root, AgentConfig()).state_file
        rollback = subprocess.Popen(
            [sys.executable, "-m", "bsi", "agent", "rollback", "--root", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=fleet.env,
        )
        wait_for(lambda: REMOVED in state_file.read_text() or rollback.poll() is not None, 60)
        started = time.monotonic()
        assert rollback.wait(timeout=120) == 0
        return time.monotonic() - started
    finally:
        stop_holder(holder, device / "holder.pid")
        shutil.rmtree(device, ignore_errors=True)


def test_a_rollback_killed_at_any_instant_is_finished_relaunched_and_reported(
    fleet: Fleet, tmp_path: Path
) -> None:
    started = time.monotonic()
    window = _window(fleet, tmp_path)
    rng = random.Random(SEED)
    # Most kills land in the first part (the deactivation); the rest in the relaunch.
    delays = [
        rng.uniform(0, window * 0.3) if n % 3 else rng.uniform(0, window) for n in range(KILLS)
    ]
    with ThreadPoolExecutor(WORKERS) as pool:
        endings = list(pool.map(lambda n: one_kill(fleet, tmp_path, n, delays[n]), range(KILLS)))
    by = Counter(e.at for e in endings)
    killed = sum(e.at != "after it finished" for e in endings)
    print(
        f"\nrollback kills: {KILLS} runs over a {window:.2f} s rollback, {killed} killed "
        f"mid-rollback; every one finished by the next cycle on the baseline, relaunched "
        f"and reported; {sum(e.relaunched_at_once for e in endings)} relaunched by that cycle; "
        f"0 undone; {time.monotonic() - started:.1f} s"
    )
    for where in sorted(by):
        print(f"  killed {where:24}: {by[where]}")
    assert killed > KILLS // 2
