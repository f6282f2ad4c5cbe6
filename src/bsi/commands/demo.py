"""``bsi sim`` and ``bsi demo``: a simulated fleet against the real server on loopback.

``bsi demo`` is the five-minute tour: it starts the server, builds and signs a
real supplement (``26.3.1 (a)``, component ``webkit``, CVE-2026-20643),
runs a small mixed fleet with live progress, shows who has the supplement and
why the others do not, the patch-window percentiles, and leaves the server
running for a look at the admin API. ``bsi sim`` is the same machinery with
every knob, for larger fleets and for a server started elsewhere.

:mod:`bsi.cli` loads them from here when ``bsi sim`` or ``bsi demo`` is asked for.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bsi.commands.arguments import MAX_PORT, MAX_SECONDS
from bsi.errors import InvalidInput
from bsi.sim.engine import SimOptions, SimResult
from bsi.sim.fleet import DEFAULT_MIX, format_mix, parse_mix
from bsi.sim.local import Progress, Workspace, local_server, run_async, simulate
from bsi.sim.report import render_result
from bsi.sim.sample import CVE, Publisher

MODES_HELP = (
    "light: each device runs the agent's own check-in cycle (sync-token check-in, "
    "declarations, catalogue, decision, commit, status reports, wake-up long poll) from its "
    "own small device root with a record-only activator: no download, no file swap — this "
    "is what scales to 10,000 devices. full: each "
    "device runs the real agent (TUF download and verification, staging, swap activation, "
    "relaunch scan, health check) on its device root — a thread and tens of ms per cycle, "
    "for small fleets."
)


class Mode(StrEnum):
    LIGHT = "light"
    FULL = "full"


MAX_DEVICES = 100_000
"""Simulated devices (and check-ins in flight): far beyond what one machine simulates."""
Devices = Annotated[
    int,
    typer.Option("--devices", min=1, max=MAX_DEVICES, help="How many simulated devices."),
]
Full = Annotated[
    int | None,
    typer.Option(
        "--full",
        min=0,
        max=MAX_DEVICES,
        help="Run this many devices (one of each kind first) with the full agent, the rest "
        "light. Default: all when --mode full, else none.",
    ),
]
ModeOption = Annotated[Mode, typer.Option("--mode", help=MODES_HELP)]
Wake = Annotated[
    bool,
    typer.Option(
        "--wake/--no-wake",
        help="Hold the server's wake-up long poll between check-ins (the default), or poll only.",
    ),
]
PollInterval = Annotated[
    float,
    typer.Option(
        "--poll-interval",
        min=1,
        max=MAX_SECONDS,
        help="Seconds between polls (± --jitter); with --wake, the fallback check-in.",
    ),
]
Jitter = Annotated[float, typer.Option("--jitter", min=0, max=1, help="Poll spread, ± fraction.")]
MixOption = Annotated[
    str,
    typer.Option(
        "--mix",
        help="Device kinds and weights, laid over the default "
        f"({format_mix(DEFAULT_MIX)}); e.g. 'offline=0,always-off=20'.",
    ),
]
OfflineSeconds = Annotated[
    float,
    typer.Option(
        "--offline-seconds",
        min=-MAX_SECONDS,
        max=MAX_SECONDS,
        help="The offline devices come back this long after the publish; negative: not "
        "during the run.",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=1,
        max=MAX_SECONDS,
        help="Give the roll-out at most this long after publishing. Default: 120 s with "
        "--wake, two poll intervals and a minute without.",
    ),
]
Concurrency = Annotated[
    int,
    typer.Option(
        "--concurrency",
        min=1,
        max=MAX_DEVICES,
        help="Check-ins in flight at once (fleet-wide).",
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="An empty directory for the server, keys, repository and device roots "
        "(kept). Default: a temporary directory, removed at the end.",
    ),
]
Port = Annotated[
    int, typer.Option("--port", min=0, max=MAX_PORT, help="Server port on 127.0.0.1; 0: any.")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No live progress.")]


def _options(
    devices: int,
    mode: Mode,
    full: int | None,
    wake: bool,
    poll_interval: float,
    jitter: float,
    mix: str,
    offline_seconds: float,
    timeout: float | None,
    concurrency: int,
    *,
    publish: bool = True,
) -> SimOptions:
    if full is None:
        full = devices if mode is Mode.FULL else 0
    if timeout is None:
        timeout = 120.0 if wake else 2 * poll_interval + 60.0
    return SimOptions(
        devices=devices,
        full=min(full, devices),
        mix=parse_mix(mix),
        wake=wake,
        poll_interval=poll_interval,
        jitter=jitter,
        offline_seconds=offline_seconds if offline_seconds >= 0 else None,
        timeout=timeout,
        concurrency=concurrency,
        publish=publish,
    )


def _run_local(
    workspace: Workspace,
    options: SimOptions,
    console: Console,
    *,
    port: int,
    quiet: bool,
    keep_running: bool,
    per_device: bool,
) -> SimResult:
    workspace.create()
    console.print(f"data: {workspace.root}", highlight=False)
    with local_server(workspace, port) as server:
        console.print(
            f"server: {server.url} (admin API key in {server.admin_key_file})", highlight=False
        )
        publisher = workspace.publisher
        console.print(
            f"publisher: TUF repository {publisher.repo_dir}, supplement "
            f"bsi-appliance 26.3.1 (a) (25D771280a) fixing {CVE}",
            highlight=False,
        )
        with Progress(console, quiet=quiet) as progress:
            result = run_async(
                lambda: simulate(
                    server.url,
                    server.admin_key(),
                    options,
                    workspace.devices_dir,
                    publisher=publisher,
                    on_progress=progress,
                )
            )
        render_result(result, console, per_device=per_device)
        if keep_running:
            console.print(
                f"\nThe server keeps running at [bold]{server.url}[/bold] "
                f"(API docs {server.url}/docs).\nAdmin API key: {server.admin_key_file}\n"
                f'Try: curl -s -H "Authorization: Bearer $(cat {server.admin_key_file})" '
                f"{server.url}/v1/admin/compliance/supplements\nPress Ctrl-C to stop.",
                highlight=False,
                soft_wrap=True,
            )
            _stop_on_signals()
            try:
                while server.process is not None and server.process.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("stopping the server")
    return result


def _interrupt(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C and ``kill`` both stop the demo and, with it, the server it started.

    SIGINT is set explicitly because a shell starting the demo in the
    background leaves it ignored, and SIGTERM would otherwise end this process
    without stopping the server.
    """
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def _console() -> Console:
    """stdout; at least 150 columns when it is not a terminal (logs, CI, pipes)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, 150)
    return console


def _workspace(data_dir: Path | None) -> tuple[Workspace, bool]:
    """The workspace, and whether it is a temporary one to remove at the end."""
    if data_dir is not None:
        return Workspace(data_dir.resolve()), False
    return Workspace(Path(tempfile.mkdtemp(prefix="bsi-sim-"))), True


def sim_command(
    devices: Devices = 100,
    mode: ModeOption = Mode.LIGHT,
    full: Full = None,
    wake: Wake = True,
    poll_interval: PollInterval = 60.0,
    jitter: Jitter = 0.1,
    mix: MixOption = "",
    offline_seconds: OfflineSeconds = 10.0,
    timeout: Timeout = None,
    concurrency: Concurrency = 256,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Simulate against this running bsi server (loopback) instead of starting one.",
        ),
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option("--admin-key", envvar="BSI_ADMIN_KEY", help="With --server: an admin key."),
    ] = None,
    admin_key_file: Annotated[
        Path | None, typer.Option("--admin-key-file", help="With --server: a file holding it.")
    ] = None,
    tuf_repo_dir: Annotated[
        Path | None,
        typer.Option(
            "--tuf-repo-dir",
            help="With --server: the repository it hosts (--tuf-repo-dir of bsi serve); the "
            "sample supplement is signed into it and published. Full devices trust its root.",
        ),
    ] = None,
    tuf_keys_dir: Annotated[
        Path | None,
        typer.Option("--tuf-keys-dir", help="With --server: the keys that sign that repository."),
    ] = None,
    data_dir: DataDir = None,
    port: Port = 0,
    per_device: Annotated[
        bool, typer.Option("--per-device", help="Print the per-device compliance table.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Run N simulated devices with the real agent code against a real bsi server.

    Without --server it starts its own (bsi serve on 127.0.0.1, embedded SQLite),
    publishes the sample supplement and measures the roll-out. Device kinds:
    eligible arm64 / x86_64, on battery just above or below the threshold, an
    older minor release, policy AlwaysOff, hardware no supplement is built for,
    and devices offline for a while. Prints the compliance summary and the
    patch-window percentiles (publish to the supplement reported).
    """
    console = _console()
    if server is None:
        options = _options(
            devices, mode, full, wake, poll_interval, jitter, mix, offline_seconds, timeout,
            concurrency,
        )  # fmt: skip
        workspace, temporary = _workspace(data_dir)
        try:
            _run_local(
                workspace,
                options,
                console,
                port=port,
                quiet=quiet,
                keep_running=False,
                per_device=per_device or devices <= 60,
            )
        finally:
            if temporary:
                shutil.rmtree(workspace.root, ignore_errors=True)
        return

    key = admin_key or (admin_key_file.read_text().strip() if admin_key_file else None)
    if not key:
        raise InvalidInput("--server needs --admin-key or --admin-key-file")
    publisher = None
    workspace, temporary = _workspace(data_dir)
    workspace.root.mkdir(parents=True, exist_ok=True)
    if tuf_repo_dir is not None:
        if tuf_keys_dir is None:
            raise InvalidInput("--tuf-repo-dir needs --tuf-keys-dir to sign the supplement")
        publisher = Publisher(tuf_keys_dir, tuf_repo_dir, workspace.root / "publisher")
        publisher.work_dir.mkdir(parents=True, exist_ok=True)
    options = _options(
        devices, mode, full, wake, poll_interval, jitter, mix, offline_seconds, timeout,
        concurrency, publish=publisher is not None,
    )  # fmt: skip
    try:
        with Progress(console, quiet=quiet) as progress:
            result = run_async(
                lambda: simulate(
                    server,
                    key,
                    options,
                    workspace.root / "devices",
                    publisher=publisher,
                    trust_anchor=publisher.trust_anchor if publisher else None,
                    on_progress=progress,
                )
            )
        render_result(result, console, per_device=per_device or devices <= 60)
    finally:
        if temporary:
            shutil.rmtree(workspace.root, ignore_errors=True)


def demo_command(
    devices: Devices = 24,
    full: Annotated[
        int,
        typer.Option(
            "--full",
            min=0,
            max=MAX_DEVICES,
            help="How many devices run the full agent (real download, TUF, staging, swap, "
            "health check); the rest run light. " + MODES_HELP,
        ),
    ] = 6,
    data_dir: DataDir = None,
    port: Port = 0,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running/--exit",
            help="Leave the server running after the report (until Ctrl-C), or exit.",
        ),
    ] = True,
    offline_seconds: OfflineSeconds = 5.0,
    timeout: Timeout = None,
    quiet: Quiet = False,
) -> None:
    """Start the server, publish a sample supplement, roll it out to a simulated fleet.

    The supplement is bsi-appliance 26.3.1 (a), build 25D771280a on prerequisite
    25D2128, component webkit, fixing CVE-2026-20643: built as a real cryptex and
    signed into a real TUF repository that the server hosts. Devices wake up
    through the server's long poll. The report shows each device's decision and
    reason, the server's compliance view and the patch-window percentiles; then
    the server keeps running, with its address and admin key printed.
    """
    console = _console()
    options = SimOptions(
        devices=devices,
        full=min(full, devices),
        wake=True,
        poll_interval=60.0,
        offline_seconds=offline_seconds if offline_seconds >= 0 else None,
        timeout=timeout or 90.0,
    )
    workspace, temporary = _workspace(data_dir)
    try:
        _run_local(
            workspace,
            options,
            console,
            port=port,
            quiet=quiet,
            keep_running=keep_running,
            per_device=True,
        )
    finally:
        if temporary:
            shutil.rmtree(workspace.root, ignore_errors=True)
