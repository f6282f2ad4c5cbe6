"""A whole simulation on this machine: a data directory, the publisher, the server, the fleet.

Layout of the data directory (``bsi demo --data-dir``)::

    server/        the server's SQLite database, admin-api-key and server.log
    tuf/keys/      the publisher's keys (offline root and targets, online
                   snapshot and timestamp, which the server uses)
    tuf/repo/      the TUF repository the server hosts at /tuf/
    publisher/     the supplement's spec, base and patched trees, the bundle
    devices/NAME/  one small device root per simulated device
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live

from bsi.errors import InvalidInput
from bsi.sim.engine import SimOptions, SimResult, Simulation, Snapshot
from bsi.sim.report import progress_view
from bsi.sim.sample import Publisher
from bsi.sim.server import Admin, ServerProcess

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path

    @property
    def server_dir(self) -> Path:
        return self.root / "server"

    @property
    def devices_dir(self) -> Path:
        return self.root / "devices"

    @property
    def publisher(self) -> Publisher:
        return Publisher(
            self.root / "tuf" / "keys", self.root / "tuf" / "repo", self.root / "publisher"
        )

    def create(self) -> None:
        """A fresh workspace; refuses a directory that holds anything already."""
        if self.root.exists() and any(self.root.iterdir()):
            raise InvalidInput(
                f"{self.root} is not empty",
                hint="give a new or empty --data-dir (a simulation creates keys and devices)",
            )
        self.root.mkdir(parents=True, exist_ok=True)
        publisher = self.publisher
        publisher.work_dir.mkdir(parents=True)
        publisher.init()


@contextlib.contextmanager
def local_server(
    workspace: Workspace, port: int = 0, options: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    """``bsi serve`` (with ``options``) for the workspace, hosting its TUF repository;
    stopped on exit."""
    publisher = workspace.publisher
    server = ServerProcess(
        workspace.server_dir,
        tuf_repo_dir=publisher.repo_dir,
        tuf_keys_dir=publisher.keys_dir,
        port=port,
        options=options,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop when it is installed (it is, with uvicorn[standard]), else asyncio."""
    try:
        uvloop: Any = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


class Progress:
    """Live counts on a terminal; a line per stage (and every few seconds) elsewhere."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.live: Live | None = None
        self._stage = ""
        self._printed = 0.0

    def __enter__(self) -> Progress:
        if not self.quiet and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, snapshot: Snapshot) -> None:
        if self.quiet:
            return
        view = progress_view(snapshot)
        if self.live is not None:
            self.live.update(view)
            return
        now = time.monotonic()
        if snapshot.stage != self._stage or now - self._printed > 5:
            self._stage, self._printed = snapshot.stage, now
            self.console.print(view)


async def simulate(
    server_url: str,
    admin_key: str,
    options: SimOptions,
    devices_dir: Path,
    *,
    publisher: Publisher | None,
    trust_anchor: Path | None = None,
    on_progress: Callable[[Snapshot], None] | None = None,
) -> SimResult:
    admin = Admin(server_url, admin_key)
    try:
        simulation = Simulation(
            server_url,
            admin,
            options,
            devices_dir,
            publisher=publisher,
            trust_anchor=trust_anchor,
            on_progress=on_progress,
        )
        return await simulation.run()
    finally:
        await admin.aclose()
