"""Detection that matches reality: interpreted programs, mount namespaces, systemd units.

Real processes: a Python daemon and a shell-script daemon whose scripts a
supplement replaces (neither maps its script: an interpreter reads it and
runs the old code from memory), processes in their own mount namespaces
(``unshare``) with and without their own copy of a replaced library, and the
relaunch plan that maps stale processes to their systemd units.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bsi.agent.relaunch import (
    ProcessUse,
    boot_clock,
    file_ids,
    plan_relaunch,
    processes_using,
    relaunch,
    script_of,
    wait_until_relaunched,
)
from bsi.cryptex.manifest import Action, Component, FileEntry, Relaunch

HOLDER = """\
import mmap, os, sys, time
with open(sys.argv[1], "rb") as handle:
    mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
with open(sys.argv[2] + ".tmp", "w") as out:
    out.write(str(os.getpid()))
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    time.sleep(0.1)
"""

PY_DAEMON = """\
import os, sys, time
with open(sys.argv[1] + ".tmp", "w") as out:
    out.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    time.sleep(0.1)
"""

SH_DAEMON = """\
echo $$ > "$1.tmp" && mv "$1.tmp" "$1"
while :; do sleep 0.1; done
"""


def test_the_script_an_interpreter_runs_comes_from_its_command_line() -> None:
    assert script_of(["/usr/bin/python3.11", "-u", "/srv/app.py", "--port", "8"]) == "/srv/app.py"
    assert script_of(["python3", "-W", "ignore", "app.py"]) == "app.py"
    assert script_of(["python3", "-m", "http.server"]) is None
    assert script_of(["python3", "-c", "print()"]) is None
    assert script_of(["perl", "-w", "/usr/sbin/daemon.pl"]) == "/usr/sbin/daemon.pl"
    assert script_of(["perl", "-e", "1"]) is None
    assert script_of(["ruby", "-I", "lib", "bin/server.rb"]) == "bin/server.rb"
    assert script_of(["node", "--require", "x", "/app/index.js"]) == "/app/index.js"
    assert script_of(["/bin/sh", "/etc/init.d/thing", "start"]) == "/etc/init.d/thing"
    assert script_of(["bash", "-c", "sleep 1"]) is None
    assert script_of(["/usr/sbin/nginx", "-g", "daemon off;"]) is None
    # a renamed argv[0] ("gunicorn: master") is read by the executable's name
    assert script_of(["gunicorn: master", "/srv/app.py"], "/usr/bin/python3") == "/srv/app.py"


@contextlib.contextmanager
def started(argv: list[str], pidfile: Path) -> Iterator[int]:
    process = subprocess.Popen(argv, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not pidfile.exists():
            assert process.poll() is None, argv
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield int(pidfile.read_text())
    finally:
        with contextlib.suppress(ProcessLookupError, ValueError, OSError):
            os.killpg(os.getpgid(int(pidfile.read_text())), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def swap_in(path: Path, data: str) -> None:
    """Replace ``path`` as the swap activator does: a new file renamed over it."""
    temp = path.with_name(f".{path.name}.new")
    temp.write_text(data)
    os.chmod(temp, 0o755)
    os.replace(temp, path)


@pytest.mark.parametrize(
    ("interpreter", "source", "name"),
    [([sys.executable], PY_DAEMON, "daemon.py"), (["/bin/sh"], SH_DAEMON, "daemon.sh")],
    ids=["python", "shell"],
)
def test_an_interpreted_daemon_whose_script_was_replaced_is_stale_until_relaunched(
    tmp_path: Path, interpreter: list[str], source: str, name: str
) -> None:
    script = tmp_path / "root/usr/lib/app" / name
    script.parent.mkdir(parents=True)
    script.write_text(source)
    pidfile = tmp_path / "daemon.pid"
    argv = [*interpreter, str(script), str(pidfile)]
    before = boot_clock()
    with started(argv, pidfile) as pid:
        # the script last changed before the daemon started: it runs the current code
        assert processes_using([script], since=before) == []
        swap_in(script, source + "\n# patched\n")
        since = boot_clock()
        (use,) = [u for u in processes_using([script], since=since) if u.pid == pid]
        assert "script" in use.via
        assert use.files[-1] == str(script)

        # restarted by the component's command: the new process is not stale
        restart = (
            "kill $(cat {p}); rm -f {p}; "
            "setsid {argv} >/dev/null 2>&1 < /dev/null & "
            "while [ ! -s {p} ]; do sleep 0.05; done"
        ).format(p=pidfile, argv=" ".join(argv))
        component = Component(
            "app", (entry(f"usr/lib/app/{name}"),), Relaunch(command=("sh", "-c", restart))
        )
        result = relaunch(component, [use], systemd_available=False, root=tmp_path / "root")
        assert result.ok, result.failures
        assert wait_until_relaunched([script], since=since, timeout=10) == []
        new_pid = int(pidfile.read_text())
        assert new_pid != pid
        os.killpg(os.getpgid(new_pid), signal.SIGKILL)


def namespaces_unavailable() -> str | None:
    """Why mount namespaces cannot be made here, or ``None``."""
    tool = shutil.which("unshare")
    if tool is None or os.geteuid() != 0:
        return "needs root and unshare(1) (util-linux) to make mount namespaces"
    probe = subprocess.run([tool, "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare -m is refused here: {probe.stderr.decode().strip()}"
    return None


def test_each_process_is_judged_by_the_file_it_sees_in_its_mount_namespace(
    tmp_path: Path,
) -> None:
    reason = namespaces_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    holder = tmp_path / "holder.py"
    holder.write_text(HOLDER)
    lib_dir = tmp_path / "root/usr/lib"
    lib_dir.mkdir(parents=True)
    library = lib_dir / "libssl.so.3"
    library.write_bytes(b"old libssl " * 1000)
    own = tmp_path / "container-lib"
    own.mkdir()
    (own / "libssl.so.3").write_bytes(b"the container's own libssl " * 1000)
    python = sys.executable

    def in_namespace(bind: bool, pidfile: Path) -> list[str]:
        mount = f"mount --bind {own} {lib_dir} && " if bind else ""
        return [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"{mount}exec {python} {holder} {library} {pidfile}",
        ]

    host, shared, private = (tmp_path / f"{n}.pid" for n in ("host", "shared", "private"))
    with (
        started([python, str(holder), str(library), str(host)], host) as host_pid,
        started(in_namespace(False, shared), shared) as shared_pid,
        started(in_namespace(True, private), private) as private_pid,
    ):
        old = file_ids([library])
        swap_in(library, "new libssl " * 1000)
        uses = processes_using([library], old_inodes=old, kept_under=[tmp_path / "state"])
        stale = {use.pid for use in uses}
        assert host_pid in stale
        assert shared_pid in stale  # another namespace, but it sees (and maps) the host's file
        assert private_pid not in stale  # its own copy at the same path: not ours


def entry(path: str) -> FileEntry:
    return FileEntry(
        path, Action.CHANGE, sha256="0" * 64, base_sha256="1" * 64, size=1, mode=0o644, uid=0, gid=0
    )


def use(pid: int, unit: str | None) -> ProcessUse:
    return ProcessUse(pid, "svc", "/usr/sbin/svc", unit, ("/usr/lib/libssl.so.3",), ("map",))


def test_stale_processes_are_restarted_through_their_own_systemd_units() -> None:
    component = Component("openssl", (entry("usr/lib/libssl.so.3"),), Relaunch())
    uses = [
        use(10, "nginx.service"),
        use(11, "nginx.service"),
        use(12, "postfix@-.service"),
        use(13, "session-3.scope"),  # a login session: not restarted, reported
        use(14, "bsi-agent.service"),  # the agent's own unit: never restarted mid-cycle
        use(15, None),
    ]
    plan = plan_relaunch(component, uses, systemd_available=True, own_unit="bsi-agent.service")
    assert [step.unit for step in plan.steps] == ["nginx.service", "postfix@-.service"]
    assert all(step.argv[:2] == ("systemctl", "restart") for step in plan.steps)
    assert [u.pid for u in plan.unmanaged] == [13, 14, 15]
    without = plan_relaunch(component, uses, systemd_available=False)
    assert without.steps == ()
    assert len(without.unmanaged) == len(uses)
