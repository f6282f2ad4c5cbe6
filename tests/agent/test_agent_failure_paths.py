"""The agent's failure paths end to end: real server, real agent, real processes.

A later letter that fails its health check returns the host to the last good
letter (not the baseline) and is reported; a kill during the health check is
re-verified at the next cycle and ends on the last good letter; a withdrawal
relaunches onto the baseline; an administrator's rollback is allowed again
from the server; a delta letter whose base was changed behind bsi is refused
with nothing staged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_agent_end_to_end import (
    HEALTHY,
    World,
    enrolled,
    maps_inode,
    pid_of,
    publish_letter,
    snapshot,
)

from bsi.agent.config import AgentConfig
from bsi.agent.ddm_client import DdmClient
from bsi.agent.protocol import RETRIES_PATH, Reply, Request, drive
from bsi.agent.runner import Agent
from bsi.errors import InvalidInput
from cryptex_support import PATCHED_FILES

PATCHED_B = {**PATCHED_FILES, "usr/lib/libssl.so.3": b"libssl 3.0.2-fixed-again " * 4000}
FAILING = ["sh", "-c", "echo 'service answers 500' >&2; exit 1"]


def publish_b(world: World, tmp_path: Path, health_check: list[str]) -> None:
    publish_letter(tmp_path, "b", PATCHED_B, health_check, world.relaunch)
    synced = world.admin.post("/v1/admin/catalog/sync-repository")
    assert synced.is_success, synced.text


def device_items(world: World, device_id: str) -> dict[str, object]:
    items: dict[str, object] = world.admin.get(f"/v1/admin/devices/{device_id}").json()[
        "status_items"
    ]
    return items


def on_a(world: World, device_id: str) -> dict[str, tuple[str, int]]:
    report = world.agent.once()
    assert report.failure is None, report.failure
    assert report.active == "12A100a"
    return snapshot(world.root)


def assert_relaunched_onto_current(world: World, before: int) -> None:
    now = pid_of(world.pidfile)
    assert now != before
    assert maps_inode(now, world.library) == world.library.stat().st_ino


def test_a_failing_later_letter_returns_the_host_to_the_last_good_letter(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    tree_a = on_a(world, device_id)
    publish_b(world, tmp_path, FAILING)
    pid = pid_of(world.pidfile)

    report = world.agent.once()
    assert report.failure is not None
    assert "12.5 (b)" in report.failure
    assert "back on the last good letter" in report.failure
    assert report.active == "12A100a"
    assert snapshot(world.root) == tree_a  # (a), byte for byte, not the baseline
    assert_relaunched_onto_current(world, pid)

    status = world.agent.status()
    assert status["last_good"] == "12A100a"
    assert status["pending_commit"] is None
    assert list(status["failed_builds"]) == ["12A100b"]
    assert status["last_failure"] is not None
    assert status["staged"] == ["12A100a"]  # the failed letter is not kept
    device = world.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert device["supplemental_build"] == "12A100a"
    items = device_items(world, device_id)
    assert items["softwareupdate.install-state"] == "failed"
    failure = items["softwareupdate.failure-reason"]
    assert isinstance(failure, dict)
    assert "health check" in failure["reason"]

    # not retried on its own ...
    again = world.agent.once()
    assert again.steps == ()
    assert again.decision.startswith("not installing debian 12.5 (b)"), again.decision
    assert "failed its health check here" in again.decision
    assert snapshot(world.root) == tree_a
    # ... until the server allows it again: then it is tried (and fails) once more
    allowed = world.admin.post("/v1/admin/supplements/debian/12A100b/allow-retry")
    assert allowed.status_code == 201, allowed.text
    retried = world.agent.once()
    assert "activate 12A100b" in retried.steps
    assert retried.active == "12A100a"
    assert world.agent.once().steps == ()


def test_a_kill_during_the_health_check_is_verified_again_and_ends_on_the_last_good_letter(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    tree_a = on_a(world, device_id)
    started, slow = tmp_path / "check-started", tmp_path / "slow"
    slow.touch()
    check = (
        f"if [ -e {slow} ]; then touch {started}; sleep 60; fi; "
        "echo 'service answers 500' >&2; exit 1"
    )
    publish_b(world, tmp_path, ["sh", "-c", check])

    agent = subprocess.Popen(
        [sys.executable, "-m", "bsi", "agent", "once", "--root", str(world.root)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not started.exists():
        assert agent.poll() is None, "the agent ended before its health check"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    slow.unlink()

    # killed mid-check: (b) is live but not committed, and says so
    status = world.agent.status()
    assert "12.5 (b)" in status["active_supplement"]
    assert status["pending_commit"] == "12A100b"
    assert status["last_good"] == "12A100a"

    report = world.agent.once()
    assert report.steps[:2] == ("relaunch 12A100b", "health-check 12A100b")
    assert report.failure is not None
    assert "back on the last good letter" in report.failure
    assert report.active == "12A100a"
    assert snapshot(world.root) == tree_a
    assert world.agent.status()["pending_commit"] is None
    items = device_items(world, device_id)
    assert items["softwareupdate.install-state"] == "failed"
    assert world.agent.once().steps == ()


def test_withdrawing_the_only_letter_relaunches_onto_the_baseline(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    on_a(world, device_id)
    pid = pid_of(world.pidfile)
    withdrawn = world.admin.post("/v1/admin/supplements/debian/12A100a/withdraw")
    assert withdrawn.is_success, withdrawn.text

    report = world.agent.once()
    assert report.steps == ("roll-back 12A100a", "relaunch 12A100a")
    assert report.failure is None
    assert snapshot(world.root) == world.baseline
    assert_relaunched_onto_current(world, pid)
    assert world.agent.status()["restart_pending"] is False
    assert world.agent.status()["staged"] == []


def test_an_administrators_rollback_is_allowed_again_from_the_server(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    tree_a = on_a(world, device_id)
    assert world.agent.rollback() == "12A100a"
    assert snapshot(world.root) == world.baseline
    status = world.agent.status()
    assert status["failed_builds"]["12A100a"]["kind"] == "removed"
    assert status["last_good"] is None
    assert world.agent.once().steps == ()

    other = world.admin.post(
        "/v1/admin/supplements/debian/12A100a/allow-retry", params={"device_id": "nobody"}
    )
    assert other.status_code == 404
    assert world.agent.once().steps == ()  # an allowance for nobody changes nothing here

    mine = world.admin.post(
        "/v1/admin/supplements/debian/12A100a/allow-retry", params={"device_id": device_id}
    )
    assert mine.status_code == 201, mine.text
    report = world.agent.once()
    assert report.failure is None
    assert report.active == "12A100a"
    assert snapshot(world.root) == tree_a
    assert world.agent.status()["failed_builds"] == {}


def test_a_rollback_killed_mid_way_is_finished_by_the_next_cycle_not_undone(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    on_a(world, device_id)
    # What 'bsi agent rollback' leaves when killed before its deactivation
    # committed: the removal is recorded (first), the files are still (a)'s.
    state = world.agent.load_state()
    state.failures["12A100a"] = {
        "kind": "removed",
        "reason": "removed by an administrator (bsi agent rollback)",
        "at": "2026-11-29T00:00:00+00:00",
    }
    state.last_good = None
    world.agent.save_state(state)
    pid = pid_of(world.pidfile)

    report = world.agent.once()
    assert report.steps == ("roll-back 12A100a", "relaunch 12A100a")
    assert snapshot(world.root) == world.baseline
    assert_relaunched_onto_current(world, pid)
    device = world.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert device["supplemental_build"] is None  # the server is told
    assert world.agent.once().steps == ()


def test_a_rollback_killed_after_its_relaunch_leaves_nothing_staged_after_the_next_cycle(
    world: World, tmp_path: Path
) -> None:
    """Found by the random kills of ``test_agent_rollback_kill`` under CI load."""
    device_id = enrolled(world, tmp_path)
    on_a(world, device_id)
    cryptexes = world.agent.layout.cryptexes
    kept = tmp_path / "kept-12A100a"
    shutil.copytree(cryptexes / "12A100a", kept)
    assert world.agent.rollback() == "12A100a"
    assert world.agent.status()["staged"] == []
    # What a kill between the relaunch (recorded) and the prune leaves: the
    # rollback is complete but (a) is still staged; and a removal killed mid-way.
    shutil.copytree(kept, cryptexes / "12A100a")
    shutil.copytree(kept, cryptexes / ".12A100b.discarded")
    assert world.agent.status()["staged"] == ["12A100a"]

    report = world.agent.once()
    assert report.steps == (), report  # nothing to roll back or relaunch ...
    assert world.agent.status()["staged"] == []  # ... and nothing left staged
    assert sorted(p.name for p in cryptexes.iterdir()) == []
    assert snapshot(world.root) == world.baseline


@pytest.mark.parametrize("content", ["[]", '"text"', '{"server_url": "x", "unknown_field": 1}'])
def test_a_state_file_that_is_not_the_agents_is_a_clear_error(tmp_path: Path, content: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    agent = Agent(root, AgentConfig())
    agent.state_file.parent.mkdir(parents=True)
    agent.state_file.write_text(content)
    with pytest.raises(InvalidInput, match="is not this agent's state"):
        agent.load_state()
    assert agent.state_file.read_text() == content


def cycle_asking(world: World) -> list[str]:
    """One check-in cycle of ``world``'s agent over the real server; the paths it asked."""
    agent = world.agent
    asked: list[str] = []
    with agent.cycle_lock():
        state = agent.load_state()
        client = DdmClient(state.server_url, state.credential)

        def send(request: Request) -> Reply:
            asked.append(request.path)
            return client.send(request)

        try:
            drive(agent.cycle(state, client.conversation), send)
        finally:
            client.close()
    return asked


def test_retry_allowances_are_asked_for_only_with_a_failure_and_never_lift_a_later_one(
    world: World, tmp_path: Path
) -> None:
    """The catalogue names the newest allowance; a device with no failure passes it
    without asking ``/retries`` (one request less per check-in), and an allowance given
    before a failure never lifts that failure: only one given after it does."""
    device_id = enrolled(world, tmp_path)
    tree_a = on_a(world, device_id)
    assert RETRIES_PATH not in cycle_asking(world)  # nothing allowed, nothing failed

    early = world.admin.post("/v1/admin/supplements/debian/12A100a/allow-retry")
    assert early.status_code == 201, early.text
    assert RETRIES_PATH not in cycle_asking(world)  # allowed, but nothing here failed

    assert world.agent.rollback() == "12A100a"  # now 12A100a is a failure ("removed")
    assert snapshot(world.root) == world.baseline
    asked = cycle_asking(world)
    assert RETRIES_PATH not in asked  # the early allowance is older than the cursor
    assert snapshot(world.root) == world.baseline  # ... and did not lift the removal

    late = world.admin.post("/v1/admin/supplements/debian/12A100a/allow-retry")
    assert late.status_code == 201, late.text
    assert RETRIES_PATH in cycle_asking(world)  # a failure and a newer allowance: asked
    assert snapshot(world.root) == tree_a
    assert world.agent.status()["failed_builds"] == {}


LIBCRYPTO = "usr/lib/libcrypto.so.3"
CRYPTO_BASE = hashlib.shake_256(b"libcrypto base").digest(200_000)  # incompressible, like a .so
CRYPTO_B = CRYPTO_BASE[:9000] + b"fixed in (b)" + CRYPTO_BASE[9012:]


def test_a_base_changed_behind_bsi_refuses_a_delta_letter_with_nothing_staged(
    world: World, tmp_path: Path
) -> None:
    """(b) carries libcrypto as a delta against its base; something else changed the
    device's copy: the cycle fails as wrong-prerequisite, nothing of (b) is staged, the
    host stays on (a) and reports the failure. With the base back, (b) installs."""
    for root in (tmp_path / "base", world.root):
        (root / LIBCRYPTO).write_bytes(CRYPTO_BASE)
    device_id = enrolled(world, tmp_path)
    tree_a = on_a(world, device_id)
    publish_letter(tmp_path, "b", {**PATCHED_B, LIBCRYPTO: CRYPTO_B}, HEALTHY, world.relaunch)
    assert world.admin.post("/v1/admin/catalog/sync-repository").is_success
    (world.root / LIBCRYPTO).write_bytes(CRYPTO_BASE[:-4] + b"EDIT")
    changed = snapshot(world.root)
    assert changed != tree_a

    report = world.agent.once()
    assert report.failure is not None
    assert f"/{LIBCRYPTO} travels as a delta against sha256" in report.failure
    assert report.active == "12A100a"
    assert snapshot(world.root) == changed
    assert not list(world.agent.layout.cryptexes.glob("*12A100b*"))
    items = device_items(world, device_id)
    assert items["softwareupdate.install-state"] == "failed"

    (world.root / LIBCRYPTO).write_bytes(CRYPTO_BASE)
    report = world.agent.once()
    assert (report.failure, report.active) == (None, "12A100b")
    assert (world.root / LIBCRYPTO).read_bytes() == CRYPTO_B
