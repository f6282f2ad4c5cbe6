"""Running the commands a supplement names: its health check, and relaunch commands.

After activation and relaunch the agent runs the manifest's health check;
if it fails, the agent rolls the supplement back and reports *why* in DDM's
``softwareupdate.failure-reason``. That reason is all an administrator sees
of a device that refused a supplement, so a failure here always says what
happened: the exit status or signal, a timeout, or a command that could not
start, with the last lines the command printed.

Commands are the publisher's (signed) argv, run without a shell. Each gets
its own process group, so that a timeout kills everything it started, not
just the first process; its output goes to an unlinked temporary file rather
than a pipe, so that a command which leaves a daemon behind (a relaunch
command restarting a service) neither blocks the agent on the pipe nor sees
the daemon die of SIGPIPE once the agent stops reading.

The environment is a small fixed one plus what the caller adds, never the
agent's own, which may carry the device's credentials.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bsi.cryptex.manifest import HealthCheck

TAIL_BYTES = 4096
"""How much of a command's output is kept: the end, where the error usually is."""

REASON_TAIL_CHARS = 400
"""How much of that output goes into a failure reason, which travels in status reports."""

KILL_GRACE_SECONDS = 2.0
"""Time between SIGTERM and SIGKILL for a command that ran out of time."""

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How one command ended.

    Exactly one of these describes the end: ``start_error`` (it never ran),
    ``timed_out`` (it was killed for taking too long), ``signal`` (it died of
    one), or ``exit_code``.
    """

    argv: tuple[str, ...]
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    start_error: str | None = None
    output_tail: str = ""
    duration_seconds: float = 0.0
    timeout_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.start_error is None

    def ending(self) -> str:
        """How it ended, in a few words: ``exited with status 3``."""
        if self.start_error is not None:
            return f"could not start: {self.start_error}"
        if self.timed_out:
            return f"timed out after {self.timeout_seconds:g} s and was killed"
        if self.signal is not None:
            return f"was killed by {_signal_name(self.signal)}"
        return f"exited with status {self.exit_code}"

    def describe(self) -> str:
        """One line for a log or a failure reason: command, ending, last output."""
        text = f"{_show(self.argv)} {self.ending()}"
        tail = _one_line(self.output_tail)
        if tail:
            if len(tail) > REASON_TAIL_CHARS:
                tail = "…" + tail[-REASON_TAIL_CHARS:]
            text += f"; last output: {tail}"
        return text


def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    tail_bytes: int = TAIL_BYTES,
) -> CommandOutcome:
    """Run ``argv`` to completion or for ``timeout`` seconds, whichever is first.

    On timeout the whole process group gets SIGTERM, then SIGKILL after a
    grace period. Processes the command moved to a session of their own (a
    restarted daemon) are not in that group and are left alone.
    """
    command = tuple(argv)
    environment = {**BASE_ENV, **(env or {})}
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=environment,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            return CommandOutcome(
                command,
                start_error=error.strerror or str(error),
                timeout_seconds=timeout,
            )
        timed_out = False
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = _kill_group(process)
        duration = time.monotonic() - started
        tail = _read_tail(output, tail_bytes)
    if timed_out:
        return CommandOutcome(
            command,
            timed_out=True,
            output_tail=tail,
            duration_seconds=duration,
            timeout_seconds=timeout,
        )
    return CommandOutcome(
        command,
        exit_code=returncode if returncode >= 0 else None,
        signal=-returncode if returncode < 0 else None,
        output_tail=tail,
        duration_seconds=duration,
        timeout_seconds=timeout,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the command's process group, then SIGKILL; the leader's return code."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            return process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return process.wait()  # pragma: no cover - SIGKILL cannot be refused


def _read_tail(output: IO[bytes], limit: int) -> str:
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - limit))
    return output.read(limit).decode("utf-8", errors="replace")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _show(argv: Sequence[str]) -> str:
    return repr(" ".join(argv))


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


# -- the health check ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HealthResult:
    """The outcome of a supplement's health check, and what to report if it failed.

    ``reason`` is ``None`` when the check passed, else the sentence for
    ``softwareupdate.failure-reason``. A supplement without a health check
    passes (:func:`passed_without_check`).
    """

    ok: bool
    reason: str | None
    outcome: CommandOutcome | None

    @property
    def exit_code(self) -> int | None:
        return self.outcome.exit_code if self.outcome else None

    @property
    def timed_out(self) -> bool:
        return self.outcome.timed_out if self.outcome else False

    @property
    def output_tail(self) -> str:
        return self.outcome.output_tail if self.outcome else ""


def passed_without_check() -> HealthResult:
    return HealthResult(ok=True, reason=None, outcome=None)


def health_result(outcome: CommandOutcome) -> HealthResult:
    """Judge an outcome: only exit status 0 within the time limit is healthy."""
    if outcome.ok:
        return HealthResult(ok=True, reason=None, outcome=outcome)
    return HealthResult(ok=False, reason=f"health check {outcome.describe()}", outcome=outcome)


def run_health_check(
    check: HealthCheck, *, root: Path, env: Mapping[str, str] | None = None
) -> HealthResult:
    """Run the manifest's health check in ``root`` with ``env`` added to a fixed base.

    ``BSI_ROOT`` tells the check which tree it is checking, so the same
    script works on a live host (``/``) and against a ``--root``.
    """
    outcome = run_bounded(
        check.command,
        timeout=check.timeout,
        cwd=root,
        env={"BSI_ROOT": str(root), **(env or {})},
    )
    return health_result(outcome)
