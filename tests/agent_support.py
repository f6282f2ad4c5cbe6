"""Pieces the agent's crash, kill and power-cut harnesses share.

A real server on loopback hosting a signed test repository; a device root
with the prerequisite build; a "service" (``HOLDER``) that maps the device's
libssl and the relaunch command (``RESTART``) that restarts it; and the
small waits and counts the harnesses use.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import uvicorn

from bsi.server.app import ServerSettings, create_app, prepare
from bsi.server.service import BsiService
from bsi.trust import init_keys
from cryptex_support import BASE_FILES, write_tree
from migrated import sqlite_copy
from pgcluster import free_port

OS_RELEASE = 'ID=debian\nVERSION_ID="12.5"\nBUILD_ID=12A100\nPRETTY_NAME="Debian (bsi test)"\n'

HOLDER = """\
import mmap, os, sys, time
root = sys.argv[1]
with open(os.path.join(root, "usr/lib/libssl.so.3"), "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
pidfile = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "..", "holder.pid")
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


@dataclass(frozen=True)
class Served:
    """The running server: its URL, an admin client, a many-use enrollment token."""

    url: str
    admin: httpx.Client
    token: str
    anchor: Path  # the repository's 1.root.json, the devices' trust anchor
    relaunch: list[object]  # the components' relaunch command (RESTART)


@contextlib.contextmanager
def serving(work: Path) -> Iterator[Served]:
    """Keys and an empty repository under ``work``, and the real server hosting them.

    Harness runs are copies of one enrolled device, so hundreds of runs are
    one device to the server: its per-device status rate limit (tested on
    its own in tests/server/test_hardening.py) is lifted out of the way.
    """
    scripts = work / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "holder.py").write_text(HOLDER)
    (scripts / "restart.py").write_text(RESTART)
    init_keys(work / "keys", work / "repo")
    settings = ServerSettings(
        data_dir=work / "data",
        tuf_repo_dir=work / "repo",
        tuf_keys_dir=work / "keys",
        status_burst=1_000_000,
        status_per_second=1_000_000,
    )
    relaunch: list[object] = [sys.executable, scripts / "restart.py", scripts / "holder.py"]
    with running_app(settings) as (url, service):
        admin_key = service.create_api_key("harness", "admin")
        token = service.create_enrollment_token("default", timedelta(hours=4), None)[0]
        admin = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        )
        try:
            yield Served(url, admin, token, work / "repo" / "metadata" / "1.root.json", relaunch)
        finally:
            admin.close()


@contextlib.contextmanager
def running_app(settings: ServerSettings) -> Iterator[tuple[str, BsiService]]:
    """The real app for ``settings`` on a free loopback port (uvicorn in a thread): URL, service.

    The embedded default starts from a migrated copy (tests/migrated.py)."""
    if settings.embedded and not (settings.data_dir / "bsi.db").exists():
        sqlite_copy(settings.data_dir)
    service = prepare(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, settings), host="127.0.0.1", port=free_port(), log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}", service
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        service.close()


def baseline_device(root: Path) -> None:
    """A device root holding the prerequisite build 12A100."""
    write_tree(root, BASE_FILES)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/os-release").write_text(OS_RELEASE)


def start_holder(holder: Path, root: Path) -> subprocess.Popen[bytes]:
    """The service of the device at ``root``, in a session of its own."""
    return subprocess.Popen(
        [sys.executable, holder, root],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_holder(holder: subprocess.Popen[bytes], pidfile: Path) -> None:
    """Kill the service: the instance ``pidfile`` names (a restart's) and the first one."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()


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
