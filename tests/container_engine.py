"""A real container engine for tests: Podman's Docker-compatible API on a private socket.

``.ci/run`` installs Debian's ``podman``, ``runc`` and ``busybox-static``.
On these machines crun fails on cgroups, so the engine runs with ``runc`` and
the ``cgroupfs`` manager (a ``containers.conf`` given through
``CONTAINERS_CONF``), and with its own storage under the test's temporary
directory (``CONTAINERS_STORAGE_CONF``: the ``vfs`` driver, which needs no
kernel overlay support), so tests never see or touch the machine's own
images and containers. No image registry is reachable: test images are made
from a root file system built here (``busybox-static`` plus the files a test
names) and ``podman import``-ed.

Without podman the tests skip; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
tmp_dir = "{tmp}"
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_config_dir = "{networks}"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{root}"
runroot = "{runroot}"
"""

#: A test image's process: it waits until ``SIGTERM`` and then exits, as a real service
#: does. A bare ``sleep`` as process 1 has no handler for it, so every ``stop`` would
#: wait out its whole timeout (10 s by default) before the engine kills it.
UNTIL_STOPPED = "trap 'exit 0' TERM; sleep 100000 & wait"
RUNS_UNTIL_STOPPED = ("CMD " + json.dumps(["/bin/sh", "-c", UNTIL_STOPPED]),)

BUSYBOX = Path("/bin/busybox")
#: The busybox applets test images link, so that a shell script can run in them.
APPLETS = ("sh", "sleep", "cat", "grep", "ls", "test", "true", "false", "kill", "wget", "echo")


def require_podman() -> str:
    """The path of podman; skips (fails under CI=true) without podman, runc and busybox."""
    missing = [
        f"{tool} (Debian package {package})"
        for tool, package in (("podman", "podman"), ("runc", "runc"), ("busybox", "busybox-static"))
        if shutil.which(tool) is None
    ]
    if missing:
        message = "not installed: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run must install them")
        pytest.skip(message)
    return str(shutil.which("podman"))


@dataclass(frozen=True, slots=True)
class Engine:
    """One running ``podman system service``: its socket, environment and storage."""

    socket: Path
    env: Mapping[str, str]
    home: Path

    @property
    def url(self) -> str:
        """The Docker SDK's ``base_url`` for this engine."""
        return f"unix://{self.socket}"

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def podman(self, *args: str, input: bytes | None = None) -> str:
        """Run the podman CLI against this engine's storage; its stdout, or a clear failure."""
        done = subprocess.run(
            ["podman", *args], env=dict(self.env), input=input, capture_output=True, timeout=120
        )
        if done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr.decode()}"
            )
        return done.stdout.decode().strip()

    def import_image(
        self,
        reference: str,
        files: Mapping[str, bytes],
        *,
        modes: Mapping[str, int] | None = None,
        changes: tuple[str, ...] = RUNS_UNTIL_STOPPED,
    ) -> str:
        """``reference`` built from busybox + ``files`` (paths below /); returns its image ID."""
        image_id = self.podman(
            "import",
            *(arg for change in changes for arg in ("--change", change)),
            "-",
            reference,
            input=rootfs_tar(files, modes),
        ).splitlines()[-1]
        return image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"


def rootfs_tar(files: Mapping[str, bytes], modes: Mapping[str, int] | None = None) -> bytes:
    """A root file system as a tar: busybox with its applets, /etc/os-release, ``files``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for directory in ("bin", "etc", "tmp", "proc", "sys", "dev", "run", "var"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        add("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        all_files = {"etc/os-release": b'ID=debian\nVERSION_ID="12"\n', **files}
        for name, data in sorted(all_files.items()):
            add(name.lstrip("/"), data, (modes or {}).get(name, 0o644))
    return buffer.getvalue()


@contextmanager
def podman_service(home: Path) -> Iterator[Engine]:
    """Start ``podman system service`` on ``<home>/podman.sock``; stop it (by pid) after."""
    podman = require_podman()
    home.mkdir(parents=True, exist_ok=True)
    (home / "containers.conf").write_text(
        CONTAINERS_CONF.format(tmp=home / "libpod", networks=home / "networks")
    )
    (home / "storage.conf").write_text(
        STORAGE_CONF.format(root=home / "storage", runroot=home / "run")
    )
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(home / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(home / "storage.conf"),
        # The service's temporary files and lock files stay under home.
        "TMPDIR": str(home),
        "XDG_RUNTIME_DIR": str(home / "xdg"),
    }
    (home / "xdg").mkdir(exist_ok=True)
    socket = home / "podman.sock"
    log = (home / "service.log").open("wb")
    process = subprocess.Popen(
        [podman, "system", "service", "--time=0", f"unix://{socket}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(socket, env, home)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"podman system service exited ({process.returncode}): "
                    + (home / "service.log").read_text(errors="replace")
                )
            if socket.exists():
                try:
                    engine.client(timeout=5).ping()
                    break
                except docker.errors.DockerException:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError("podman system service did not answer within 30 s")
            time.sleep(0.1)
        yield engine
    finally:
        try:
            # Containers die with their conmon; remove them so storage unmounts cleanly.
            subprocess.run(
                [podman, "rm", "--all", "--force", "--time=0"],
                env=env,
                capture_output=True,
                timeout=60,
            )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
            _kill_left_behind(home)


def _kill_left_behind(home: Path) -> None:
    """Kill, by pid, the conmon monitors this engine started (an exec's lingers 5 minutes)."""
    marker = str(home).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if command.split(b"\0")[0].endswith(b"conmon") and marker in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
