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
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from test_agent_end_to_end import HEALTHY, OS_RELEASE, maps_inode, pid_of, publish_letter, snapshot
from test_agent_failure_paths import PATCHED_B

from bsi.agent.config import AgentConfig
from bsi.agent.runner import Agent
from bsi.server.app import ServerSettings, create_app, prepare, utc_now
from bsi.trust import init_keys
from cryptex_support import BASE_FILES, PATCHED_FILES, write_tree
from pgcluster import free_port

RUNS = int(os.environ.get("BSI_COMMIT_CRASH_RUNS", "200" if os.environ.get("CI") else "12"))
WORKERS = 3
SEED = 20261129

HOLDER = """\
import mmap, os, sys, time
root = sys.argv[1]
with open(os.path.join(root, "usr/lib/libssl.so.3"), "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
pidfile = os.path.join(root, "..", "holder.pid")
with open(pidfile + ".tmp", "w") as out:
    out.write(str(os.getpid()))
os.replace(pidfile + ".tmp", pidfile)
while True:
    time.sleep(0.1)
"""

# The component's relaunch command: restarts the holder of the device in $BSI_ROOT.
# Like "systemctl restart", restarts are serialised (a killed agent's restart may
# still run when the next cycle restarts) and stop every instance of the service.
RESTART = """\
import fcntl, os, signal, subprocess, sys, time
root = os.environ["BSI_ROOT"]
with open(os.path.join(root, "..", "relaunch-started"), "a") as marker:
    marker.write("x\\n")
lock = open(os.path.join(root, "..", "restart.lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX)
pidfile = os.path.join(root, "..", "holder.pid")
old = int(open(pidfile).read())
try:
    os.kill(old, signal.SIGKILL)
except ProcessLookupError:
    pass
for entry in os.listdir("/proc"):
    try:
        argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\\0")
    except OSError:
        continue
    if len(argv) > 2 and argv[1] == sys.argv[1].encode() and argv[2] == root.encode():
        try:
            os.kill(int(entry), signal.SIGKILL)
        except ProcessLookupError:
            pass
subprocess.Popen([sys.executable, sys.argv[1], root], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.time() + 20
while time.time() < deadline:
    try:
        if int(open(pidfile).read()) != old:
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.02)
"""

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
    scripts = work / "scripts"
    scripts.mkdir()
    (scripts / "holder.py").write_text(HOLDER)
    (scripts / "restart.py").write_text(RESTART)
    init_keys(work / "keys", work / "repo")
    relaunch: list[object] = [sys.executable, scripts / "restart.py", scripts / "holder.py"]
    publish_letter(work, "a", PATCHED_FILES, HEALTHY, relaunch)

    # Every run is a copy of one enrolled device, so hundreds of runs are one
    # device to the server: lift its per-device status rate limit (tested on
    # its own in tests/server/test_hardening.py) out of the way.
    settings = ServerSettings(
        data_dir=work / "data",
        tuf_repo_dir=work / "repo",
        tuf_keys_dir=work / "keys",
        status_burst=1_000_000,
        status_per_second=1_000_000,
    )
    service = prepare(settings)
    admin_key = service.store.create_api_key("crash", "admin", utc_now())
    token = service.store.create_enrollment_token(
        "default", utc_now() + timedelta(hours=4), None, utc_now()
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, settings), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    try:
        device = work / "template" / "root"
        write_tree(device, BASE_FILES)
        (device / "etc").mkdir(exist_ok=True)
        (device / "etc/os-release").write_text(OS_RELEASE)
        agent = Agent(device, AgentConfig())
        agent.enroll(url, token, work / "repo" / "metadata" / "1.root.json")
        report = agent.once()  # nothing maps the library yet: no relaunch needed
        assert report.active == "12A100a", report
        tree_a = snapshot(device)
        publish_letter(work, "b", PATCHED_B, ["sh", "-c", CHECK_B], relaunch)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}) as admin:
            assert admin.post("/v1/admin/catalog/sync-repository").is_success
        tree_b = {**tree_a, "usr/lib/libssl.so.3": _sha(PATCHED_B["usr/lib/libssl.so.3"])}
        yield Fleet(device.parent, tree_a, tree_b, scripts / "holder.py", work / "pycache")
    finally:
        server.should_exit = True
        thread.join(timeout=20)


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
    holder = subprocess.Popen(
        [sys.executable, fleet.holder, root],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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
        with contextlib.suppress(OSError, ValueError):
            os.kill(pid_of(pidfile), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        shutil.rmtree(device, ignore_errors=True)


def run_once(root: Path, env: dict[str, str]) -> str:
    """One uninterrupted ``bsi agent once``; its output (it exits 1 after a failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "bsi", "agent", "once", "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.stdout + done.stderr


def lines_in(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except OSError:
        return 0


def wait_for(condition: object, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


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
