"""Detection through the real server and the real agent: scripts and mount namespaces.

The supplement replaces the scripts of two interpreted daemons (a Python one
and a shell one: neither maps its script, an interpreter reads it and runs
the old code from memory) and the device's libssl. Running when it goes live:

* the two daemons, which the ``app`` component's command restarts (no systemd
  here: the agent restarts through the command; with systemd it would restart
  their units, tested in test_agent_detection.py);
* a process in its own mount namespace (``unshare -m``) that sees the host's
  libssl: stale, and nothing restarts it, so it is reported restart-pending
  with its pid, to the server too, without a wait;
* a process in its own mount namespace with its own copy of the library
  directory at the same path: not the host's file, never reported.

Then the administrator restarts the reported process by hand, and the next
cycle clears restart-pending on the device and on the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_agent_detection import namespaces_unavailable
from test_agent_end_to_end import HEALTHY, publish_letter, snapshot

from agent_support import HOLDER, baseline_device, serving, wait_for
from bsi.agent.config import AgentConfig
from bsi.agent.runner import Agent
from bsi.domain.status import RESTART_PENDING
from cryptex_support import BASE_FILES, PATCHED_FILES

PY_DAEMON = """\
import os, sys, time
VERSION = {version}
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(f"{{os.getpid()}} {{VERSION}}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(0.1)
"""

SH_DAEMON = """\
VERSION={version}
echo "$$ $VERSION" > "$1.tmp" && mv "$1.tmp" "$1"
while :; do sleep 0.1; done
"""

# The app component's relaunch command: restart both daemons of the device in $BSI_ROOT.
RESTART_APPS = """\
import os, signal, subprocess, sys, time
root = os.environ["BSI_ROOT"]
daemons = {"py": [sys.executable, "usr/lib/app/daemon.py"],
           "sh": ["/bin/sh", "usr/lib/app/daemon.sh"]}
for name, (interpreter, script) in daemons.items():
    pidfile = os.path.join(root, "..", name + ".pid")
    old = int(open(pidfile).read().split()[0])
    os.kill(old, signal.SIGKILL)
    os.unlink(pidfile)
    subprocess.Popen([interpreter, os.path.join(root, script), pidfile], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not os.path.exists(pidfile) and time.time() < deadline:
        time.sleep(0.02)
"""

BASE = {
    **BASE_FILES,
    "usr/lib/app/daemon.py": PY_DAEMON.format(version=1).encode(),
    "usr/lib/app/daemon.sh": SH_DAEMON.format(version=1).encode(),
}
PATCHED = {
    **PATCHED_FILES,
    "usr/lib/app/daemon.py": PY_DAEMON.format(version=2).encode(),
    "usr/lib/app/daemon.sh": SH_DAEMON.format(version=2).encode(),
}


def _gone(pid: int) -> bool:
    """Exited (a zombie until its parent reaps it holds no files)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _pid_and_version(pidfile: Path) -> tuple[int, int]:
    pid, version = pidfile.read_text().split()
    return int(pid), int(version)


@contextlib.contextmanager
def _running(argv: list[object], pidfile: Path) -> Iterator[int]:
    """``argv`` in a session of its own, once it wrote ``pidfile``; killed after."""
    process = subprocess.Popen([str(a) for a in argv], start_new_session=True)
    try:
        wait_for(lambda: pidfile.exists() or process.poll() is not None, 20)
        assert process.poll() is None, argv
        yield int(pidfile.read_text().split()[0])
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, OSError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_scripts_are_relaunched_and_each_namespace_is_judged_by_its_own_file(
    tmp_path: Path,
) -> None:
    reason = namespaces_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    work = tmp_path / "server"
    with serving(work) as served:
        scripts = work / "scripts"
        (scripts / "restart_apps.py").write_text(RESTART_APPS)
        components: dict[str, object] = {
            "app": {
                "paths": ["/usr/lib/app"],
                "relaunch": {"command": [sys.executable, str(scripts / "restart_apps.py")]},
            },
            "openssl": {"paths": ["/usr/lib/libssl.so.3"]},  # nothing restarts it
            "other": {"paths": ["/usr"]},
        }
        publish_letter(work, "a", PATCHED, HEALTHY, [], components=components, base_files=BASE)
        assert served.admin.post("/v1/admin/catalog/sync-repository").is_success

        device = tmp_path / "device"
        root = device / "root"
        baseline_device(root)
        for path, data in BASE.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        library = root / "usr/lib/libssl.so.3"
        own = tmp_path / "container-lib"  # a container's own /usr/lib
        own.mkdir()
        (own / "libssl.so.3").write_bytes(b"the container's own libssl " * 1000)
        (tmp_path / "holder.py").write_text(HOLDER)

        def in_namespace(bind: bool, pidfile: Path) -> list[object]:
            mount = f"mount --bind {own} {library.parent} && " if bind else ""
            holder = f"{sys.executable} {tmp_path / 'holder.py'} {root} {pidfile}"
            return [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"{mount}exec {holder}",
            ]

        py_pid, sh_pid = device / "py.pid", device / "sh.pid"
        shared_pid, private_pid = device / "shared.pid", device / "private.pid"
        with (
            _running([sys.executable, root / "usr/lib/app/daemon.py", py_pid], py_pid) as py_old,
            _running(["/bin/sh", root / "usr/lib/app/daemon.sh", sh_pid], sh_pid) as sh_old,
            _running(in_namespace(False, shared_pid), shared_pid) as shared,
            _running(in_namespace(True, private_pid), private_pid) as private,
        ):
            agent = Agent(root, AgentConfig())
            device_id = agent.enroll(served.url, served.token, served.anchor)
            started = time.monotonic()
            report = agent.once()
            took = time.monotonic() - started
            assert report.failure is None, report
            assert report.active == "12A100a"
            assert snapshot(root) == snapshot(work / "patched-a")

            # the daemons were restarted by the app's command, onto the new scripts
            assert _pid_and_version(py_pid) != (py_old, 1)
            assert _pid_and_version(py_pid)[1] == 2
            assert _pid_and_version(sh_pid)[1] == 2
            assert _pid_and_version(sh_pid)[0] != sh_old

            # the namespace that sees the host's libssl is reported, the other never
            status = agent.status()
            assert status["restart_pending"] is True
            pending = status["restart_pending_processes"]
            assert [line for line in pending if f"(pid {shared}" in line], pending
            assert not [line for line in pending if f"(pid {private}" in line], pending
            assert len(pending) == 1, pending  # the daemons are not pending: restarted
            assert took < 25, "no silent wait for a process nothing restarts"
            items = served.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
            assert items[RESTART_PENDING] is True
            assert items["bsi.agent.restart-pending-processes"] == pending

            # restarted by hand: the next cycle clears it, here and on the server
            os.kill(shared, signal.SIGKILL)
            wait_for(lambda: _gone(shared), 10)
            again = agent.once()
            assert again.steps == ("relaunch 12A100a",), again
            status = agent.status()
            assert status["restart_pending"] is False
            assert status["restart_pending_processes"] == []
            items = served.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
            assert items[RESTART_PENDING] is False
            assert "bsi.agent.restart-pending-processes" not in items
            assert Path(f"/proc/{private}").exists()  # never touched
