"""A real server hosting a TUF repository, and a process mapping a library: for host tests.

The stock-host tests (Debian with dpkg, Fedora with rpm) share this: the
server is the real app on a free loopback port (uvicorn in a thread) serving
``repo``; :func:`holding` starts a process that maps a library, which the
supplement's relaunch command restarts (``HOLDER``/``RESTART``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from test_agent_end_to_end import HOLDER, RESTART, pid_of

from agent_support import running_app
from bsi.server.app import ServerSettings
from bsi.server.service import BsiService


@dataclass
class Served:
    url: str
    admin: httpx.Client
    admin_key: str
    token: str
    service: BsiService

    def device(self, device_id: str) -> dict[str, object]:
        """The server's view of one device (decision, supplement, status items)."""
        device: dict[str, object] = self.admin.get(f"/v1/admin/devices/{device_id}").json()
        return device


@contextlib.contextmanager
def serving(data_dir: Path, repo: Path | None) -> Iterator[Served]:
    """The real server on ``repo`` (watching it), an admin client and an enrollment token."""
    with running_app(ServerSettings(data_dir=data_dir, tuf_repo_dir=repo)) as (url, service):
        admin_key = service.create_api_key("real", "admin")
        token = service.create_enrollment_token("default", timedelta(hours=1), None)[0]
        admin = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        )
        try:
            yield Served(url, admin, admin_key, token, service)
        finally:
            admin.close()


@contextlib.contextmanager
def holding(library: Path, scripts: Path, pidfile: Path) -> Iterator[list[str]]:
    """A process mapping ``library``; yields the command that relaunches it (for a spec)."""
    scripts.mkdir(exist_ok=True)
    (scripts / "holder.py").write_text(HOLDER)
    (scripts / "restart.py").write_text(RESTART)
    holder = subprocess.Popen([sys.executable, scripts / "holder.py", library, pidfile])
    deadline = time.monotonic() + 20
    while not pidfile.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        yield [
            sys.executable, str(scripts / "restart.py"), str(scripts / "holder.py"),
            str(library), str(pidfile),
        ]  # fmt: skip
    finally:
        for pid in {holder.pid, pid_of(pidfile)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        holder.wait(timeout=10)
