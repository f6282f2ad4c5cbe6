"""Health checks run as real processes: exit codes, timeouts, output tails, reasons."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from bsi.agent.health import REASON_TAIL_CHARS, run_bounded, run_health_check
from bsi.cryptex.manifest import HealthCheck


def script(tmp_path: Path, body: str) -> tuple[str, ...]:
    path = tmp_path / "check.py"
    path.write_text(body)
    return (sys.executable, str(path))


def test_passing_check(tmp_path: Path) -> None:
    command = script(tmp_path, "print('all good')\n")
    result = run_health_check(HealthCheck(command, timeout=30), root=tmp_path)
    assert result.ok
    assert result.reason is None
    assert result.exit_code == 0
    assert result.output_tail.strip() == "all good"


def test_failing_check_reports_status_and_last_output(tmp_path: Path) -> None:
    command = script(
        tmp_path,
        "import sys\n"
        "for i in range(5000): print('noise', i)\n"
        "sys.stdout.flush()\n"
        "print('nginx: [emerg] SSL_CTX_use_certificate failed', file=sys.stderr)\n"
        "sys.exit(3)\n",
    )
    result = run_health_check(HealthCheck(command, timeout=30), root=tmp_path)
    assert not result.ok
    assert result.exit_code == 3
    assert result.reason is not None
    assert result.reason.startswith("health check '")
    assert "exited with status 3" in result.reason
    assert result.reason.endswith("nginx: [emerg] SSL_CTX_use_certificate failed")
    assert "noise 0 " not in result.output_tail  # only the tail is kept
    assert len(result.reason) < REASON_TAIL_CHARS + 300


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    command = script(
        tmp_path,
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('waiting for a backend that never answers', flush=True)\n"
        "time.sleep(600)\n",
    )
    started = time.monotonic()
    result = run_health_check(HealthCheck(command, timeout=1), root=tmp_path)
    assert time.monotonic() - started < 10
    assert not result.ok
    assert result.timed_out
    assert result.exit_code is None
    assert result.reason is not None
    assert "timed out after 1 s and was killed" in result.reason
    assert "waiting for a backend that never answers" in result.reason
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the check's own child survived the timeout"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_command_that_cannot_start(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-check")
    result = run_health_check(HealthCheck((missing,), timeout=5), root=tmp_path)
    assert not result.ok
    assert result.reason == f"health check {missing!r} could not start: No such file or directory"


def test_killed_by_signal(tmp_path: Path) -> None:
    command = script(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)\n")
    result = run_health_check(HealthCheck(command, timeout=10), root=tmp_path)
    assert not result.ok
    assert result.reason is not None
    assert "was killed by SIGSEGV" in result.reason


def test_environment_is_fixed_plus_root_and_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BSI_DEVICE_TOKEN", "secret")
    command = script(
        tmp_path,
        "import os, sys\n"
        "assert 'BSI_DEVICE_TOKEN' not in os.environ, 'agent environment leaked'\n"
        "assert os.environ['BSI_ROOT'] == os.getcwd(), os.environ['BSI_ROOT']\n"
        "assert os.environ['EXTRA'] == 'yes'\n"
        "assert '/usr/bin' in os.environ['PATH']\n",
    )
    result = run_health_check(HealthCheck(command, timeout=10), root=tmp_path, env={"EXTRA": "yes"})
    assert result.ok, result.reason


def test_daemon_left_behind_does_not_block(tmp_path: Path) -> None:
    # A relaunch command may start a daemon that keeps stdout open; the runner
    # must return when the command itself exits.
    pid_file = tmp_path / "daemon.pid"
    command = script(
        tmp_path,
        "import subprocess, sys\n"
        "d = subprocess.Popen([sys.executable, '-c', "
        "'import time, sys\\nwhile True: print(1, flush=True); time.sleep(0.1)'], "
        "start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(d.pid))\n"
        "print('started')\n",
    )
    started = time.monotonic()
    outcome = run_bounded(command, timeout=20)
    try:
        assert outcome.ok
        assert time.monotonic() - started < 10
        time.sleep(0.3)
        assert _alive(int(pid_file.read_text())), "the daemon died (SIGPIPE?)"
    finally:
        os.kill(int(pid_file.read_text()), 9)
