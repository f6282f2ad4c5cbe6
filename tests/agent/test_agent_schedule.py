"""The check-in schedule both the daemon and the simulator follow: pure, no clock."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bsi.agent.config import load_config
from bsi.agent.runner import Agent, LocalState
from bsi.agent.schedule import FIRST_BACKOFF, MAX_LONG_POLL, Cadence, Schedule
from bsi.cli import app
from bsi.sim.fleet import PROFILES, Kind, write_device_root

SCHEDULE = Schedule(interval=60.0, jitter=0.1)


@pytest.mark.parametrize(("draw", "seconds"), [(0.0, 54.0), (0.5, 60.0), (0.999999, 66.0)])
def test_a_reached_check_in_is_followed_by_one_interval_spread_by_the_jitter(
    draw: float, seconds: float
) -> None:
    wait, cadence = SCHEDULE.after_check_in(Cadence(40.0, 7), reached=True, draw=draw)
    assert wait == pytest.approx(seconds, abs=1e-4)
    assert cadence == Cadence(FIRST_BACKOFF, 7)  # backoff reset, generation kept


def test_an_unreachable_server_is_retried_with_doubling_backoff_capped_by_the_interval() -> None:
    cadence, waits = Cadence(FIRST_BACKOFF, 3), []
    for _ in range(6):
        wait, cadence = SCHEDULE.after_check_in(cadence, reached=False, draw=0.9)
        waits.append(wait)
        assert cadence.generation == 0  # the server may have restarted: its generation is gone
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    wait, cadence = SCHEDULE.after_check_in(cadence, reached=True, draw=0.5)
    assert (wait, cadence.backoff) == (60.0, FIRST_BACKOFF)


def test_first_check_in_falls_within_one_interval() -> None:
    assert SCHEDULE.first_check_in(0.0) == 0.0
    assert SCHEDULE.first_check_in(0.5) == 30.0


def test_the_long_poll_is_held_until_due_at_most_the_servers_limit_at_a_time() -> None:
    wait = Schedule(interval=900).wait(700.0, 4, now=1000.0)
    assert wait.next_poll(1000.0) == MAX_LONG_POLL
    wait.answered(5, False)  # the poll timed out: nothing new
    assert wait.generation == 5
    assert wait.next_poll(1300.0) == MAX_LONG_POLL
    assert wait.next_poll(1650.0) == pytest.approx(50.0)
    assert wait.next_poll(1700.0) is None  # due


def test_a_wake_up_ends_the_wait_at_once() -> None:
    wait = SCHEDULE.wait(60.0, 0, now=0.0)
    wait.answered(9, True)
    assert wait.next_poll(1.0) is None
    assert wait.generation == 9


def test_a_failed_long_poll_sleeps_until_the_check_in_is_due() -> None:
    wait = SCHEDULE.wait(60.0, 2, now=100.0)
    assert wait.failed(now=130.0) == 30.0
    assert wait.next_poll(130.0) is None
    assert SCHEDULE.wait(1.0, 0, now=0.0).failed(now=5.0) == 0.0


def test_the_daemon_backs_off_and_says_so_while_the_server_is_down(tmp_path: Path) -> None:
    """``bsi agent run`` over a server that is not there: no crash, a retry after the backoff."""
    root = tmp_path / "device"
    write_device_root(root, PROFILES[Kind.ELIGIBLE_X86_64])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    state = LocalState(server_url=f"http://127.0.0.1:{port}", device_id="d", credential="c")
    Agent(root, load_config(root)).save_state(state)
    started = time.monotonic()
    result = CliRunner().invoke(
        app, ["agent", "run", "--root", str(root), "--interval", "1", "--cycles", "2"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("server unavailable, retrying in 1 s") == 2
    assert "cannot reach" in result.output
    assert time.monotonic() - started >= 1.0  # waited out the backoff between the two cycles
