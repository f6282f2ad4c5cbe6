"""Crash harness for commit semantics: SIGKILL the real agent during relaunch and health check.

A module-wide server publishes ``(a)`` and then ``(b)``; a template device is
enrolled and committed on ``(a)``. Each run copies the template, starts a
process that maps the device's libssl (a "service" the relaunch restarts),
runs ``bsi agent once`` as its own process group and SIGKILLs the group at a
random instant inside one phase — the first relaunch, ``(b)``'s health check,
or the relaunch of the fallback — then runs one uninterrupted cycle. ``(b)``'s
health check fails on half the runs (a file in the device decides) and passes
on the others. Every run must end:

* failing ``(b)``: on ``(a)`` byte for byte, ``(a)`` the last good letter,
  ``(b)`` recorded as failed, nothing pending commit;
* passing ``(b)``: on ``(b)`` byte for byte, committed;

and in both, the service relaunched onto the content on disk (no restart
pending). A run where the kill left ``(b)`` live but uncommitted counts as
"uncommitted after the kill"; none may remain so after the next cycle.

Runs: ``BSI_COMMIT_CRASH_RUNS`` (default 12; 200 under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import hashlib
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

import pytest
from test_agent_end_to_end import HEALTHY, maps_inode, pid_of, publish_letter, snapshot
from test_agent_failure_paths import PATCHED_B

from agent_support import (
    baseline_device,
    lines_in,
    run_once,
    serving,
    start_holder,
    stop_holder,
    wait_for,
)
from bsi.agent.config import AgentConfig
from bsi.agent.runner import Agent
from cryptex_support import PATCHED_FILES

RUNS = int(os.environ.get("BSI_COMMIT_CRASH_RUNS", "200" if os.environ.get("CI") else "12"))
WORKERS = 3
SEED = 20261129

# (b)'s health check: marks its start, takes a moment, fails when the device says so.
CHECK_B = (
    'echo x >> "$BSI_ROOT/../check-started"; sleep 0.3; '
    'if [ -e "$BSI_ROOT/../fail" ]; then echo "service answers 500" >&2; exit 1; fi'
)


@dataclass(frozen=True)
class Fleet:
    template: Path
    tree_a: dict[str, tuple[str, int]]
    tree_b: dict[str, tuple[str, int]]
    holder: Path
    pycache: Path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("commit-crash")
    with serving(work) as served:
        publish_letter(work, "a", PATCHED_FILES, HEALTHY, served.relaunch)
        assert served.admin.post("/v1/admin/catalog/sync-repository").is_success
        device = work / "template" / "root"
        baseline_device(device)
        agent = Agent(device, AgentConfig())
        agent.enroll(served.url, served.token, served.anchor)
        report = agent.once()  # nothing maps the library yet: no relaunch needed
        assert report.active == "12A100a", report
        tree_a = snapshot(device)
        publish_letter(work, "b", PATCHED_B, ["sh", "-c", CHECK_B], served.relaunch)
        assert served.admin.post("/v1/admin/catalog/sync-repository").is_success
        tree_b = {**tree_a, "usr/lib/libssl.so.3": _sha(PATCHED_B["usr/lib/libssl.so.3"])}
        yield Fleet(device.parent, tree_a, tree_b, work / "scripts" / "holder.py", work / "pycache")


def _sha(data: bytes) -> tuple[str, int]:
    return (hashlib.sha256(data).hexdigest(), 0o644)


@dataclass(frozen=True)
class Run:
    number: int
    fail: bool
    phase: str  # "relaunch", "health-check" or "fallback-relaunch"
    fraction: float  # where in the phase's expected length the kill lands


@dataclass(frozen=True)
class Ending:
    ended: str  # "a" or "b"
    uncommitted_after_kill: bool
    killed: bool  # the kill landed before the cycle ended by itself
    relaunched_again: bool  # a process was still on old content after the cycle


PHASE_MARKERS = {
    "relaunch": ("relaunch-started", 1, 0.4),
    "health-check": ("check-started", 1, 0.35),
    "fallback-relaunch": ("relaunch-started", 2, 0.4),
}


def one_run(fleet: Fleet, base: Path, run: Run) -> Ending:
    device = base / f"run-{run.number}"
    shutil.copytree(fleet.template, device, symlinks=True)
    root = device / "root"
    if run.fail:
        (device / "fail").touch()
    holder = start_holder(fleet.holder, root)
    pidfile = device / "holder.pid"
    try:
        wait_for(lambda: pidfile.exists(), 20)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(fleet.pycache)
        agent = subprocess.Popen(
            [sys.executable, "-m", "bsi", "agent", "once", "--root", str(root)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        marker, count, length = PHASE_MARKERS[run.phase]
        wait_for(lambda: lines_in(device / marker) >= count or agent.poll() is not None, 60)
        time.sleep(run.fraction * length)
        killed = agent.poll() is None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()

        after_kill = Agent(root, AgentConfig())
        uncommitted = after_kill.load_state().pending_commit == "12A100b"
        # The next cycle is a real agent process too (and no thread of this
        # one forks while it holds the activator's lock).
        report = run_once(root, env)
        status = after_kill.status()
        again = bool(status["restart_pending"])
        if again:  # reported, and relaunched at the next cycle
            assert status["restart_pending_processes"], (run, status, report)
            assert f"relaunch {status['last_good']}" in run_once(root, env), run
            status = after_kill.status()
        tree = snapshot(root)
        assert status["pending_commit"] is None, (run, status)
        assert status["restart_pending"] is False, (run, status["restart_pending_processes"])
        library = root / "usr/lib/libssl.so.3"
        holder_pid = pid_of(pidfile)
        assert maps_inode(holder_pid, library) == library.stat().st_ino, run
        if run.fail:
            assert tree == fleet.tree_a, (run, report)
            assert status["last_good"] == "12A100a", (run, status)
            assert "12A100b" in status["failed_builds"], (run, status)
            ended = "a"
        else:
            assert tree == fleet.tree_b, (run, report)
            assert status["last_good"] == "12A100b", (run, status)
            ended = "b"
        return Ending(ended, uncommitted, killed, again)
    finally:
        stop_holder(holder, pidfile)
        shutil.rmtree(device, ignore_errors=True)


def test_a_kill_during_relaunch_or_health_check_ends_committed_or_on_the_last_good_letter(
    fleet: Fleet, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    runs = []
    for number in range(RUNS):
        fail = number % 2 == 0
        phases = ["relaunch", "health-check"] + (["fallback-relaunch"] if fail else [])
        runs.append(Run(number, fail, phases[number // 2 % len(phases)], rng.random()))
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        endings = list(pool.map(lambda run: one_run(fleet, tmp_path, run), runs))
    by = Counter(
        (run.phase, "fails" if run.fail else "passes", e.ended)
        for run, e in zip(runs, endings, strict=True)
    )
    killed = sum(e.killed for e in endings)
    uncommitted = sum(e.uncommitted_after_kill for e in endings)
    print(
        f"\ncommit crash harness: {len(runs)} runs, {killed} killed mid-cycle, "
        f"{uncommitted} left (b) live and uncommitted by the kill, 0 after the next cycle; "
        f"ended on (a): {sum(e.ended == 'a' for e in endings)}, "
        f"on (b) committed: {sum(e.ended == 'b' for e in endings)}; "
        f"{sum(e.relaunched_again for e in endings)} needed a second relaunch; "
        f"{time.monotonic() - started:.1f} s"
    )
    for key in sorted(by):
        print(f"  killed in {key[0]:18} (b) {key[1]:6} -> ended on ({key[2]}): {by[key]}")
    assert killed > len(runs) // 2
    assert uncommitted > 0
