"""Relaunch with real processes: find who maps replaced files, restart them, see it done.

A "service" here is a real Python process that opens and memory-maps a file
from a temporary root, as a daemon maps its libraries. The file is replaced
by rename, as the swap activator does; the scan must find the process, the
component's configured command (a small script that stops the process by
its pid file and starts it again) relaunches it, and afterwards the new
process maps the new inode and nothing is pending.
"""

from __future__ import annotations

import contextlib
import mmap
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
    MapEntry,
    OpenFile,
    ProcessInfo,
    ProcessUse,
    Watch,
    file_id,
    file_ids,
    parse_maps,
    plan_relaunch,
    processes_using,
    read_process,
    refusal,
    relaunch,
    restart_pending,
    systemd_running,
    unit_from_cgroup,
    unit_refusal,
    uses_old_content,
    wait_until_relaunched,
)
from bsi.cryptex.manifest import Action, Component, FileEntry, Relaunch

SERVICE = """\
import mmap, os, signal, sys, time
path, pid_file = sys.argv[1], sys.argv[2]
handle = open(path, "rb")
mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
temp = pid_file + ".tmp"
with open(temp, "w") as out:
    out.write(str(os.getpid()))
os.replace(temp, pid_file)  # ready: the file is open and mapped
while True:
    time.sleep(60)
"""

# The component's configured relaunch command: stop the running instance by
# its pid file, wait until it is gone, start a fresh one in its own session
# and wait until it has mapped the file.
RESTART = """\
import os, signal, subprocess, sys, time
service, path, pid_file = sys.argv[1:4]

def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

old = None
if os.path.exists(pid_file):
    old = int(open(pid_file).read())
    os.kill(old, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while running(old):
        if time.monotonic() > deadline:
            sys.exit("old instance did not stop")
        time.sleep(0.02)
    os.unlink(pid_file)
subprocess.Popen(
    [sys.executable, service, path, pid_file],
    start_new_session=True,
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
deadline = time.monotonic() + 10
while not os.path.exists(pid_file):
    if time.monotonic() > deadline:
        sys.exit("new instance did not come up")
    time.sleep(0.02)
print("restarted", old, "as", open(pid_file).read())
"""


class Service:
    """A real mmap'ing process under a temporary root, and the scripts that manage it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.library = self.root / "usr/lib/libdemo.so.1"
        self.library.parent.mkdir(parents=True)
        self.library.write_bytes(b"old content " * 1000)
        self.scripts = tmp_path / "scripts"
        self.scripts.mkdir()
        self.service = self.scripts / "service.py"
        self.service.write_text(SERVICE)
        self.restart_script = self.scripts / "restart.py"
        self.restart_script.write_text(RESTART)
        self.pid_file = tmp_path / "service.pid"

    @property
    def command(self) -> tuple[str, ...]:
        return (
            sys.executable,
            str(self.restart_script),
            str(self.service),
            str(self.library),
            str(self.pid_file),
        )

    def start(self) -> int:
        subprocess.run(self.command, check=True, capture_output=True, timeout=30)
        return self.pid

    @property
    def pid(self) -> int:
        return int(self.pid_file.read_text())

    def replace(self, *, keep_original: Path | None = None) -> None:
        """Replace the library by rename; keep the original under another name, or drop it."""
        new = self.library.with_name(".libdemo.new")
        new.write_bytes(b"new content " * 1000)
        if keep_original is not None:
            os.rename(self.library, keep_original)
        os.replace(new, self.library)

    def component(self, **relaunch: tuple[str, ...]) -> Component:
        entry = FileEntry(
            "usr/lib/libdemo.so.1",
            Action.CHANGE,
            sha256="0" * 64,
            base_sha256="1" * 64,
            size=12000,
            mode=0o644,
            uid=0,
            gid=0,
        )
        return Component("demo", (entry,), Relaunch(**relaunch))

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    demo = Service(tmp_path)
    try:
        yield demo
    finally:
        demo.stop()


def mine(uses: list[ProcessUse], pid: int) -> ProcessUse:
    found = [use for use in uses if use.pid == pid]
    assert len(found) == 1, uses
    return found[0]


# -- real processes --------------------------------------------------------


def test_replaced_library_is_found_relaunched_and_cleared(service: Service) -> None:
    old_pid = service.start()
    paths = [service.library]
    assert processes_using(paths) == []  # nothing replaced yet: nothing pending

    old_inodes = file_ids(paths)  # what the activator records before replacing
    backup = service.root / "var/lib/bsi/rollback/libdemo.so.1"
    backup.parent.mkdir(parents=True)
    service.replace(keep_original=backup)  # swap-style: the original lives on

    kept = [backup.parent]  # the agent passes its state directory
    use = mine(processes_using(paths, old_inodes=old_inodes, kept_under=kept), old_pid)
    assert use.name == "python3" or use.name.startswith("python")
    assert set(use.via) == {"map", "fd"}
    assert use.files == (str(backup),)
    assert processes_using(paths, old_inodes=old_inodes, kept_under=kept)

    component = service.component(command=service.command)
    result = relaunch(component, [use], systemd_available=False, root=service.root)
    assert result.ok, result.failures
    assert result.unmanaged == ()
    assert [outcome.argv for outcome in result.outcomes] == [service.command]

    new_pid = service.pid
    assert new_pid != old_pid
    assert wait_until_relaunched(paths, old_inodes=old_inodes, timeout=10, kept_under=kept) == []
    assert not processes_using(paths, old_inodes=old_inodes, kept_under=kept)
    new_id = file_id(service.library)
    assert new_id is not None
    mapped = {(entry.device, entry.inode) for entry in read_process(new_pid).maps}
    assert new_id in mapped
    assert not old_inodes & mapped


def test_deleted_original_is_found_without_recorded_inodes(service: Service) -> None:
    pid = service.start()
    service.replace()  # the original is unlinked: the kernel says "(deleted)"
    use = mine(processes_using([service.library]), pid)
    assert use.files == (str(service.library),)
    assert "map" in use.via


def test_replaced_executable_is_found(tmp_path: Path) -> None:
    sleeper = tmp_path / "root/usr/bin/sleepy"
    sleeper.parent.mkdir(parents=True)
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", sleeper)
    process = subprocess.Popen([str(sleeper), "600"])
    try:
        deadline = time.monotonic() + 10
        while read_process(process.pid).executable is None or not str(
            read_process(process.pid).executable.path  # type: ignore[union-attr]
        ).endswith("sleepy"):
            assert time.monotonic() < deadline, "sleep did not start"
            time.sleep(0.02)
        replacement = sleeper.with_name(".sleepy.new")
        shutil.copy2(sleeper, replacement)
        os.replace(replacement, sleeper)
        use = mine(processes_using([sleeper]), process.pid)
        assert "exe" in use.via
        assert use.executable == str(sleeper)
    finally:
        process.kill()
        process.wait()


def test_processes_using_unrelated_files_are_not_reported(service: Service) -> None:
    pid = service.start()
    other = service.root / "usr/lib/other.so"
    other.write_bytes(b"x")
    os.replace(service.root / "usr/lib/other.so", service.root / "usr/lib/other2.so")
    assert all(use.pid != pid for use in processes_using([other]))


def test_failing_command_is_reported_and_nothing_is_killed(service: Service) -> None:
    pid = service.start()
    service.replace()
    uses = [mine(processes_using([service.library]), pid)]
    failing = (sys.executable, "-c", "import sys; print('reload refused'); sys.exit(4)")
    result = relaunch(
        service.component(command=failing), uses, systemd_available=False, root=service.root
    )
    assert not result.ok
    assert result.failures == (
        f"relaunch of demo: {' '.join(failing)!r} exited with status 4; "
        "last output: reload refused",
    )
    assert service.pid == pid
    assert Path(f"/proc/{pid}").exists()
    assert restart_pending([service.library])


def test_component_without_a_way_to_relaunch_reports_instead_of_killing(
    service: Service,
) -> None:
    pid = service.start()
    service.replace()
    uses = processes_using([service.library])
    result = relaunch(
        service.component(systemd=("demo.service",), processes=("python3",)),
        uses,
        systemd_available=False,
        root=service.root,
    )
    assert result.outcomes == ()
    assert result.plan.skipped_units == ("demo.service",)
    assert mine(list(result.unmanaged), pid).pid == pid
    lines = result.describe()
    assert "relaunch of demo: systemd is not running, did not restart demo.service" in lines
    assert any(line.startswith("restart by hand: ") and f"pid {pid}" in line for line in lines)
    assert Path(f"/proc/{pid}").exists()


# -- a fake /proc: vanished and unreadable processes -----------------------


def test_scan_tolerates_vanished_and_unreadable_processes(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    watched = tmp_path / "root/usr/lib/libx.so"
    watched.parent.mkdir(parents=True)
    watched.write_bytes(b"new")
    full = proc / "100"
    full.mkdir(parents=True)
    (full / "comm").write_text("nginx\n")
    (full / "cgroup").write_text("0::/system.slice/nginx.service\n")
    (full / "maps").write_text(
        f"7f00-7f01 r-xp 00000000 fe:00 4242                       {watched} (deleted)\n"
    )
    (proc / "101").mkdir()  # exited between listing and reading: nothing inside
    (proc / "102").mkdir()
    (proc / "102/maps").mkdir()  # unreadable as a file
    (proc / "self").mkdir()  # not a pid
    uses = processes_using([watched], proc=proc, exclude_pids=())
    assert uses == [
        ProcessUse(
            pid=100,
            name="nginx",
            executable=None,
            unit="nginx.service",
            files=(str(watched),),
            via=("map",),
        )
    ]
    assert processes_using([watched], proc=tmp_path / "no-proc") == []


# -- pure parts ------------------------------------------------------------


def test_parse_maps() -> None:
    text = (
        "55d0-55d1 r--p 00000000 fd:01 1311 /usr/sbin/nginx\n"
        "55d1-55d2 r-xp 00001000 fd:01 1311 /usr/sbin/nginx\n"
        "7f00-7f01 r--p 00000000 fd:01 77   /usr/lib/with space/libssl.so.3 (deleted)\n"
        "7f01-7f02 rw-p 00000000 00:00 0 \n"
        "7ffd-7ffe rw-p 00000000 00:00 0    [stack]\n"
        "garbage\n"
    )
    assert parse_maps(text) == [
        MapEntry(os.makedev(0xFD, 1), 1311, "/usr/sbin/nginx"),
        MapEntry(os.makedev(0xFD, 1), 77, "/usr/lib/with space/libssl.so.3", deleted=True),
    ]


def test_unit_from_cgroup() -> None:
    assert unit_from_cgroup("0::/system.slice/nginx.service\n") == "nginx.service"
    assert unit_from_cgroup("0::/system.slice/php-fpm.service/pool-www\n") == "php-fpm.service"
    v1 = "12:cpu:/x\n1:name=systemd:/system.slice/sshd.service\n"
    assert unit_from_cgroup(v1) == "sshd.service"
    assert unit_from_cgroup("0::/user.slice/user-0.slice/session-3.scope\n") == "session-3.scope"
    assert unit_from_cgroup("0::/\n") is None
    assert unit_from_cgroup("") is None


def test_watch_rules() -> None:
    watch = Watch(old_inodes=frozenset({(1, 10)}), current={"/lib/a": (1, 20), "/lib/b": None})
    info = ProcessInfo(
        pid=7,
        name="svc",
        executable=OpenFile("/usr/bin/svc", (1, 5)),
        maps=(
            MapEntry(1, 10, "/backup/a"),  # recorded old inode, wherever it lives now
            MapEntry(1, 20, "/lib/a"),  # the new file: fine
            MapEntry(9, 30, "/lib/a"),  # same path, another inode: old content
        ),
        fds=(OpenFile("/lib/b", (1, 40), deleted=True),),  # removed file still open
    )
    use = uses_old_content(info, watch)
    assert use is not None
    assert use.files == ("/backup/a", "/lib/a", "/lib/b")
    assert use.via == ("map", "fd")
    assert uses_old_content(ProcessInfo(pid=8, maps=(MapEntry(1, 20, "/lib/a"),)), watch) is None


def test_plan_with_systemd_restarts_units_and_reports_the_rest() -> None:
    component = Component(
        "nginx",
        (
            FileEntry(
                "usr/sbin/nginx",
                Action.CHANGE,
                sha256="0" * 64,
                base_sha256="1" * 64,
                size=1,
                mode=0o755,
                uid=0,
                gid=0,
            ),
        ),
        Relaunch(systemd=("nginx.service",), processes=("nginx",)),
    )
    in_unit = ProcessUse(1, "nginx", "/usr/sbin/nginx", "nginx.service", ("/usr/sbin/nginx",), ())
    stray = ProcessUse(2, "nginx", "/usr/sbin/nginx", "session-3.scope", ("/usr/sbin/nginx",), ())
    plan = plan_relaunch(component, [in_unit, stray], systemd_available=True)
    assert [step.argv for step in plan.steps] == [("systemctl", "restart", "--", "nginx.service")]
    assert plan.unmanaged == (stray,)
    without = plan_relaunch(component, [in_unit], systemd_available=False)
    assert without.steps == ()
    assert without.skipped_units == ("nginx.service",)
    assert without.unmanaged == (in_unit,)


def test_command_covers_only_the_processes_it_names() -> None:
    entry = FileEntry(
        "usr/lib/x.so",
        Action.CHANGE,
        sha256="0" * 64,
        base_sha256="1" * 64,
        size=1,
        mode=0o644,
        uid=0,
        gid=0,
    )
    named = Component(
        "x", (entry,), Relaunch(processes=("/usr/sbin/named", "worker"), command=("reload-x",))
    )
    by_path = ProcessUse(1, "named", "/tmp/r/usr/sbin/named", None, ("f",), ())
    by_comm = ProcessUse(2, "worker", "/opt/w", None, ("f",), ())
    other = ProcessUse(3, "cron", "/usr/sbin/cron", None, ("f",), ())
    plan = plan_relaunch(
        named, [by_path, by_comm, other], systemd_available=False, root=Path("/tmp/r")
    )
    assert plan.unmanaged == (other,)
    catch_all = Component("x", (entry,), Relaunch(command=("reload-x",)))
    assert plan_relaunch(catch_all, [other], systemd_available=False).unmanaged == ()


# -- never restart the host ------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("reboot",),
        ("/sbin/shutdown", "-r", "now"),
        ("systemctl", "reboot"),
        ("systemctl", "--force", "poweroff"),
        ("systemctl", "isolate", "rescue.target"),
        ("systemctl", "restart", "reboot.target"),
        ("/usr/bin/systemctl", "restart", "nginx.service", "-.mount"),
        ("loginctl", "poweroff"),
        ("init", "6"),
    ],
)
def test_host_restarts_are_refused(argv: tuple[str, ...]) -> None:
    assert refusal(argv) is not None


def test_ordinary_commands_pass_the_guard() -> None:
    assert refusal(("systemctl", "restart", "nginx.service")) is None
    assert refusal(("/usr/sbin/nginx", "-s", "reload")) is None
    assert unit_refusal("nginx.service") is None
    assert unit_refusal("graphical.target") is not None


def test_refused_steps_never_run(tmp_path: Path) -> None:
    entry = FileEntry(
        "usr/lib/x.so",
        Action.CHANGE,
        sha256="0" * 64,
        base_sha256="1" * 64,
        size=1,
        mode=0o644,
        uid=0,
        gid=0,
    )
    component = Component(
        "x", (entry,), Relaunch(systemd=("reboot.target",), command=("systemctl", "reboot"))
    )

    def forbidden(argv: tuple[str, ...]) -> object:
        raise AssertionError(f"ran {argv}")

    result = relaunch(component, [], systemd_available=True, root=tmp_path, runner=forbidden)  # type: ignore[arg-type]
    assert not result.ok
    assert len(result.failures) == 2
    assert all("refused" in failure for failure in result.failures)


def test_systemd_detection(tmp_path: Path) -> None:
    assert not systemd_running(tmp_path)
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    assert systemd_running(tmp_path)


def test_a_recorded_inode_reused_by_another_file_is_not_old_content(tmp_path: Path) -> None:
    # An old file that was unlinked frees its inode number; another file that
    # gets it is not the old content. Stand-in: the recorded id *is* another
    # live file's, which the process maps through that file's own path.
    other = tmp_path / "elsewhere" / "libssl.so.3"
    other.parent.mkdir()
    other.write_bytes(b"someone else's library" * 100)
    watched = tmp_path / "root/usr/lib/libssl.so.3"
    watched.parent.mkdir(parents=True)
    watched.write_bytes(b"the live library" * 100)
    recorded = file_ids([other])
    with other.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            found = processes_using([watched], old_inodes=recorded, exclude_pids=())
            assert [use.pid for use in found] == []
            # ... but where the agent keeps originals, the same id is old content
            kept = processes_using(
                [watched], old_inodes=recorded, exclude_pids=(), kept_under=[other.parent]
            )
            assert [use.pid for use in kept] == [os.getpid()]
        finally:
            mapped.close()


def test_the_file_at_a_watched_path_now_is_not_old_even_with_a_recorded_number() -> None:
    # An unlinked old file's inode number, reused by the new file at the same path.
    watch = Watch(old_inodes=frozenset({(1, 10)}), current={"/lib/a": (1, 10)})
    current = ProcessInfo(pid=7, maps=(MapEntry(1, 10, "/lib/a"),))
    assert uses_old_content(current, watch) is None
    deleted = ProcessInfo(pid=8, maps=(MapEntry(1, 10, "/lib/a", deleted=True),))
    assert uses_old_content(deleted, watch) is not None
