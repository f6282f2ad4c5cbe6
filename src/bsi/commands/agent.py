"""``bsi agent …``: the device side on a Linux host (or a ``--root`` for tests and demos)."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bsi.agent.config import load_config
from bsi.agent.runner import Agent, CycleReport
from bsi.agent.schedule import Schedule
from bsi.agent.textfile import UNKNOWN, AgentGauges, CycleResult, write_textfile
from bsi.agent.unit import UNIT_PATH, render_unit
from bsi.commands.arguments import MAX_SECONDS
from bsi.durable import write_atomic
from bsi.errors import BsiError, ServerUnavailable
from bsi.strict import MAX_INT32

agent_app = typer.Typer(
    help="The device agent: stage, activate, relaunch and roll back supplements.",
    no_args_is_help=True,
)
console = Console(stderr=True, highlight=False)

Root = Annotated[
    Path, typer.Option("--root", help="The device root to manage (tests and demos use a folder).")
]
Config = Annotated[
    Path | None, typer.Option("--config", help="agent.yaml (default <root>/etc/bsi/agent.yaml).")
]


def _agent(root: Path, config: Path | None) -> Agent:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return Agent(root.resolve(), load_config(root.resolve(), config))


@agent_app.command("enroll")
def enroll(
    server: Annotated[str, typer.Option(help="The bsi server's URL.")],
    token: Annotated[str, typer.Option(help="An enrollment token from the admin.")],
    trust_anchor: Annotated[
        Path, typer.Option(help="The supplement repository's root.json (1.root.json).")
    ],
    root: Root = Path("/"),
    config: Config = None,
    force: Annotated[
        bool, typer.Option(help="Replace this device's identity if it is already enrolled.")
    ] = False,
) -> None:
    """Enroll this device and store the TUF trust anchor (nothing is written on failure)."""
    device_id = _agent(root, config).enroll(server, token, trust_anchor, force=force)
    console.print(f"enrolled as {device_id}")


Textfile = Annotated[
    Path | None,
    typer.Option(
        "--textfile",
        help="After each cycle, write node-exporter's textfile-collector file here "
        "(e.g. /var/lib/node_exporter/textfile/bsi.prom): active supplement, last cycle "
        "time and result, restart-pending processes.",
    ),
]


def _cycle(agent: Agent, textfile: Path | None) -> CycleReport:
    """``agent.once()``; with ``textfile``, its outcome written there, whatever it was."""
    if textfile is None:
        return agent.once()
    result, active = CycleResult.ERROR, None
    try:
        report = agent.once()
        result = CycleResult.FAILED if report.failure else CycleResult.OK
        active = report.active
        return report
    except ServerUnavailable:
        result = CycleResult.UNREACHABLE
        raise
    finally:
        pending: int | None = None  # unreadable: not known, never 0
        with contextlib.suppress(BsiError, OSError):
            pending = len(agent.load_state().restart_pending_processes)
        if active is None and result is not CycleResult.OK:
            active = UNKNOWN  # unreadable: never the baseline
            with contextlib.suppress(BsiError, OSError):
                running = agent.facts()[1]
                active = str(running.supplemental_build) if running else None
        gauges = AgentGauges(datetime.now(UTC), result, active, pending)
        write_textfile(textfile, gauges)


@agent_app.command("once")
def once(root: Root = Path("/"), config: Config = None, textfile: Textfile = None) -> None:
    """One check-in cycle: decide, stage, activate, relaunch, health-check, report."""
    report = _cycle(_agent(root, config), textfile)
    console.print(f"decision: {report.decision}")
    for step in report.steps:
        console.print(f"  {step}")
    console.print(f"active supplement: {report.active or 'none (baseline)'}")
    if report.failure:
        console.print(f"[red]failed:[/] {report.failure}")
        raise typer.Exit(1)


@agent_app.command("run")
def run(
    root: Root = Path("/"),
    config: Config = None,
    interval: Annotated[
        float,
        typer.Option(min=1, max=MAX_SECONDS, help="Seconds between check-ins."),
    ] = 900,
    jitter: Annotated[
        float,
        typer.Option(min=0, max=1, help="Spread check-ins by ± this fraction."),
    ] = 0.1,
    cycles: Annotated[
        int | None, typer.Option(min=1, max=MAX_INT32, help="Stop after this many cycles.")
    ] = None,
    wake: Annotated[
        bool, typer.Option(help="Between check-ins, hold the server's wake-up long poll.")
    ] = True,
    textfile: Textfile = None,
) -> None:
    """Check in every --interval seconds (with jitter), or at once when the server wakes us.

    Backs off (5 s, doubling, up to the interval) while the server is down.
    """
    agent = _agent(root, config)
    schedule = Schedule(interval=interval, jitter=jitter)
    cadence, done = schedule.start(), 0
    while cycles is None or done < cycles:
        unavailable: ServerUnavailable | None = None
        try:
            _cycle(agent, textfile)
        except ServerUnavailable as error:
            unavailable = error
        reached = unavailable is None
        wait, cadence = schedule.after_check_in(cadence, reached=reached, draw=random.random())
        if unavailable is not None:
            console.print(f"server unavailable, retrying in {wait:.0f} s: {unavailable}")
        done += 1
        if cycles is not None and done >= cycles:
            break
        if wake:
            cadence = replace(cadence, generation=_wait(agent, schedule, wait, cadence.generation))
        else:
            time.sleep(wait)


def _wait(agent: Agent, schedule: Schedule, seconds: float, generation: int) -> int:
    """Until the next check-in is due or the server says to check in now."""
    wait = schedule.wait(seconds, generation, time.monotonic())
    while (timeout := wait.next_poll(time.monotonic())) is not None:
        try:
            wait.answered(*agent.wait(wait.generation, timeout))
        except ServerUnavailable:
            time.sleep(wait.failed(time.monotonic()))
    return wait.generation


@agent_app.command("status")
def status(root: Root = Path("/"), config: Config = None) -> None:
    """What this device runs, what is staged, and the last failure."""
    typer.echo(json.dumps(_agent(root, config).status(), indent=2))


@agent_app.command("recover")
def recover(root: Root = Path("/"), config: Config = None) -> None:
    """Settle the device offline: finish or undo an interrupted transaction, verify or
    roll back an uncommitted activation. Run before the network (the unit's ExecStartPre)."""
    typer.echo(json.dumps(_agent(root, config).recover(), indent=2))


@agent_app.command("install-unit")
def install_unit(
    root: Root = Path("/"),
    config: Config = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Where to write it (default <root>/etc/systemd/system/bsi-agent.service)."
        ),
    ] = None,
) -> None:
    """Write the systemd unit, running this very bsi (its Python and module path).

    Then: systemctl daemon-reload && systemctl enable --now bsi-agent
    """
    agent = _agent(root, config)
    target = output if output is not None else root / UNIT_PATH
    write_atomic(target, render_unit(agent.config.activator).encode(), mode=0o644)
    console.print(f"wrote {target}")


@agent_app.command("rollback")
def rollback(
    root: Root = Path("/"),
    config: Config = None,
    force: Annotated[
        bool, typer.Option(help="Roll back even where policy sets EnableRollback to false.")
    ] = False,
) -> None:
    """Remove the active supplement: files return byte for byte to the baseline."""
    removed = _agent(root, config).rollback(force=force)
    console.print(f"rolled back {removed}" if removed else "no supplement is active")
