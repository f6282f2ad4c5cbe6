"""Operating the agent: enrollment safety, the trust anchor and a torn TUF cache, the
cycle lock, clock skew, offline recovery, the systemd unit and the activator choice.

Real server, real agent, real files (the ``world`` fixture of the end-to-end tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from test_agent_end_to_end import (
    OS_RELEASE,
    World,
    enrolled,
    pid_of,
    snapshot,
)
from test_agent_failure_paths import publish_b
from test_agent_overlay import _probe

from bsi.agent.activators import StateLayout, TransactionPending, state_lock
from bsi.agent.activators.overlay import OverlayActivator
from bsi.agent.config import AgentConfig, AgentConfigError, parse_config
from bsi.agent.runner import Agent
from bsi.agent.unit import render_unit
from bsi.errors import BsiError, Conflict, InvalidInput
from bsi.server.app import utc_now
from bsi.trust.errors import MetadataExpired, UntrustedMetadata
from cryptex_support import write_tree


def anchor_of(tmp_path: Path) -> Path:
    return tmp_path / "repo" / "metadata" / "1.root.json"


# -- enrollment ---------------------------------------------------------------


def test_enrollment_refuses_a_missing_root_and_writes_nothing(world: World, tmp_path: Path) -> None:
    ghost = tmp_path / "no-such-root"
    agent = Agent(ghost, AgentConfig())
    with pytest.raises(InvalidInput, match="does not exist"):
        agent.enroll(world.server_url, world.enrollment_token, anchor_of(tmp_path))
    assert not ghost.exists()


def test_a_failed_enrollment_writes_nothing(world: World, tmp_path: Path) -> None:
    state = world.agent.layout.state
    bad = tmp_path / "not-a-root.json"
    bad.write_text("{}")
    with pytest.raises(UntrustedMetadata):
        world.agent.enroll(world.server_url, world.enrollment_token, bad)
    assert not state.exists()
    with pytest.raises(BsiError):
        world.agent.enroll(world.server_url, "wrong-token", anchor_of(tmp_path))
    assert not state.exists()  # not even the trust anchor


def test_enrolling_again_needs_force_and_keeps_what_is_installed(
    world: World, tmp_path: Path
) -> None:
    first = enrolled(world, tmp_path)
    assert world.agent.once().active == "12A100a"
    with pytest.raises(Conflict, match=f"already enrolled as {first}"):
        world.agent.enroll(world.server_url, world.enrollment_token, anchor_of(tmp_path))
    assert world.agent.load_state().device_id == first
    second = world.agent.enroll(
        world.server_url, world.enrollment_token, anchor_of(tmp_path), force=True
    )
    assert second != first
    status = world.agent.status()
    assert status["device_id"] == second
    assert status["last_good"] == "12A100a"
    assert world.agent.once().steps == ()


# -- trust anchor and TUF cache ---------------------------------------------------


def test_a_torn_tuf_cache_is_refetched_and_the_anchor_never_rewritten(
    world: World, tmp_path: Path
) -> None:
    enrolled(world, tmp_path)
    anchor = world.agent.anchor_file.read_bytes()
    assert anchor == anchor_of(tmp_path).read_bytes()
    assert world.agent.once().active == "12A100a"
    cached = [p for p in world.agent.tuf_dir.rglob("*") if p.is_file() and not p.is_symlink()]
    assert cached
    for n, path in enumerate(cached):  # a power cut's leftovers: empty, half, garbage
        data = path.read_bytes()
        path.write_bytes([b"", data[: len(data) // 2], b"\0" * 64][n % 3])
    publish_b(world, tmp_path, ["true"])
    report = world.agent.once()
    assert report.failure is None, report.failure
    assert report.active == "12A100b"
    assert world.agent.anchor_file.read_bytes() == anchor


# -- one cycle at a time ------------------------------------------------------------


def test_a_second_cycle_exits_with_a_clear_message(world: World, tmp_path: Path) -> None:
    enrolled(world, tmp_path)
    other = Agent(world.root, AgentConfig())
    with world.agent.cycle_lock():
        with pytest.raises(
            Conflict, match=rf"another bsi agent cycle is running .*pid {os.getpid()}"
        ):
            other.once()
        with pytest.raises(Conflict):
            other.rollback()
    assert snapshot(world.root) == world.baseline
    assert other.once().active == "12A100a"


def test_a_cycle_waits_a_moment_for_a_lock_that_is_being_let_go(
    world: World, tmp_path: Path
) -> None:
    """A lock can outlive its holder's close by a moment (a child forked by another
    thread shares it until it execs); a cycle started then runs instead of refusing."""
    enrolled(world, tmp_path)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with world.agent.cycle_lock():
            holding.set()
            release.wait(5)
            time.sleep(0.3)  # still held when the cycle starts

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    release.set()
    try:
        assert Agent(world.root, AgentConfig()).once().active == "12A100a"
    finally:
        holder.join()


def test_an_activator_transaction_waits_a_moment_for_the_state_lock_then_refuses(
    tmp_path: Path,
) -> None:
    """The activators' state lock is the same kind of lock as the cycle's: one being let
    go is waited for; one held on is refused as busy."""
    layout = StateLayout.for_root(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def hold(after_release: float) -> None:
        with state_lock(layout):
            holding.set()
            release.wait(5)
            time.sleep(after_release)

    holder = threading.Thread(target=hold, args=(0.3,))
    holder.start()
    assert holding.wait(5)
    release.set()
    with state_lock(layout):
        pass
    holder.join()

    holding.clear()
    release.clear()
    holder = threading.Thread(target=hold, args=(0,))
    holder.start()
    assert holding.wait(5)
    try:
        with (
            pytest.raises(TransactionPending, match="another bsi process holds"),
            state_lock(layout),
        ):
            pass
    finally:
        release.set()
        holder.join()


# -- clock ------------------------------------------------------------------------


def test_a_clock_behind_is_reported_and_does_not_hold_back_the_supplement(
    world: World, tmp_path: Path
) -> None:
    device_id = enrolled(world, tmp_path)
    # Posted today; a clock ten days behind would call it not yet posted.
    late = Agent(world.root, AgentConfig(), clock=lambda: utc_now() - timedelta(days=10))
    report = late.once()
    assert report.active == "12A100a", report
    assert late.clock_skew is not None
    assert late.clock_skew == pytest.approx(-10 * 86400, abs=60)
    items = world.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    assert items["bsi.agent.clock-skew-seconds"] == pytest.approx(-10 * 86400, abs=60)


def test_an_expiry_error_names_a_clock_that_is_ahead() -> None:
    agent = Agent(Path("/nonexistent"), AgentConfig())
    expired = MetadataExpired("timestamp.json is expired", hint="a frozen or stale mirror")
    assert agent._clock_blamed(expired) is expired
    agent.clock_skew = 2 * 86400.0
    blamed = agent._clock_blamed(expired)
    assert "clock is 172800 s ahead" in str(blamed)
    assert blamed.hint is not None
    assert "clock" in blamed.hint


# -- offline recovery ----------------------------------------------------------------


def test_recover_settles_a_kill_during_the_health_check_without_the_network(
    world: World, tmp_path: Path
) -> None:
    enrolled(world, tmp_path)
    assert world.agent.once().active == "12A100a"
    tree_a = snapshot(world.root)
    started, slow = tmp_path / "check-started", tmp_path / "slow"
    slow.touch()
    check = f"if [ -e {slow} ]; then touch {started}; sleep 60; fi; exit 1"
    publish_b(world, tmp_path, ["sh", "-c", check])
    agent = subprocess.Popen(
        [sys.executable, "-m", "bsi", "agent", "once", "--root", str(world.root)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not started.exists():
        assert agent.poll() is None
    os.killpg(agent.pid, 9)
    agent.wait()
    slow.unlink()
    world.admin.close()  # the network is not needed: point the agent at nothing
    state = world.agent.load_state()
    state.server_url = "http://127.0.0.1:9"
    world.agent.save_state(state)

    done = subprocess.run(
        [sys.executable, "-m", "bsi", "agent", "recover", "--root", str(world.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"uncommitted": "12A100b"' in done.stdout
    assert '"result": "rolled-back:' in done.stdout
    assert snapshot(world.root) == tree_a
    status = world.agent.status()
    assert status["pending_commit"] is None
    assert status["last_good"] == "12A100a"
    assert "12A100b" in status["failed_builds"]
    assert "back on the last good letter" in str(status["last_failure"])


# -- the systemd unit -------------------------------------------------------------------


def test_install_unit_writes_a_unit_that_runs_this_bsi(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "root", {"etc/os-release": OS_RELEASE.encode()})
    done = subprocess.run(
        [sys.executable, "-m", "bsi", "agent", "install-unit", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    unit = (root / "etc/systemd/system/bsi-agent.service").read_text()
    assert f"ExecStart={sys.executable} -m bsi agent run --root /" in unit
    assert f"ExecStartPre={sys.executable} -m bsi agent recover --root /" in unit
    assert "After=local-fs.target\n" in unit  # recovery does not wait for the network
    for hardening in ("ProtectHome=read-only", "PrivateTmp=yes", "NoNewPrivileges=yes"):
        assert hardening in unit
    assert "KillMode=process" in unit
    # overlay mounts must reach the host: no private mount namespace
    overlay = render_unit("overlay")
    assert "PrivateTmp" not in overlay
    assert "ProtectHome" not in overlay
    assert "NoNewPrivileges=yes" in overlay

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is required in CI (Debian package systemd)")
        pytest.skip("systemd-analyze is not installed; install Debian's systemd to verify")
    for text in (unit, overlay):
        path = tmp_path / "bsi-agent.service"
        path.write_text(text)
        verified = subprocess.run(
            [analyze, "verify", str(path)], capture_output=True, text=True, check=False
        )
        assert verified.returncode == 0, verified.stderr
        assert "bsi-agent.service" not in verified.stderr, verified.stderr


# -- the activator ---------------------------------------------------------------------------


def test_agent_yaml_chooses_the_activator() -> None:
    assert parse_config("activator: overlay\n").activator == "overlay"
    assert parse_config("{}\n").activator == "swap"
    with pytest.raises(AgentConfigError, match="unknown activator 'sysext'"):
        parse_config("activator: sysext\n")
    container = parse_config("activator: container\ncontainer_engine: unix:///run/p.sock\n")
    assert (container.activator, container.container_engine) == ("container", "unix:///run/p.sock")
    assert parse_config("{}\n").container_engine == "unix:///var/run/docker.sock"
    with pytest.raises(AgentConfigError, match="not a container engine address"):
        parse_config("container_engine: /var/run/docker.sock\n")


def test_agent_yaml_sets_the_container_timeouts_and_refuses_bad_ones(tmp_path: Path) -> None:
    config = parse_config(
        "activator: container\ncontainer_engine: unix:///run/p.sock\n"
        "container_health_timeout: 2.5\ncontainer_stop_timeout: 0\n"
    )
    activator = Agent(tmp_path, config).activator  # the docker SDK connects lazily
    assert (activator.health_timeout, activator.stop_timeout) == (2.5, 0)  # type: ignore[attr-defined]
    defaults = Agent(tmp_path, parse_config("activator: container\n")).activator
    assert (defaults.health_timeout, defaults.stop_timeout) == (60, 10)  # type: ignore[attr-defined]
    for line, message in (
        ("container_health_timeout: 0", r"0 is outside 1\.\.3600 seconds"),
        ("container_health_timeout: soon", "expected a number of seconds, found 'soon'"),
        ("container_stop_timeout: 1.5", "expected whole seconds, found 1.5"),
        ("container_stop_timeout: -1", r"-1 is outside 0\.\.3600 seconds"),
        ("container_stop_timeout: true", "expected a number of seconds, found True"),
    ):
        with pytest.raises(AgentConfigError, match=message) as refused:
            parse_config(line + "\n", source="agent.yaml")
        assert line.split(":")[0] in str(refused.value)


def test_the_overlay_activator_runs_a_whole_cycle(world: World, tmp_path: Path) -> None:
    reason = _probe(tmp_path)
    if reason:
        pytest.skip(reason)
    enrolled(world, tmp_path)
    agent = Agent(world.root, AgentConfig(activator="overlay"))
    assert isinstance(agent.activator, OverlayActivator)
    old_pid = pid_of(world.pidfile)
    try:
        report = agent.once()
        assert report.failure is None, report.failure
        assert report.active == "12A100a"
        assert (
            hashlib.sha256(world.library.read_bytes()).hexdigest()
            == hashlib.sha256(PATCHED_A_LIBSSL).hexdigest()
        )
        assert pid_of(world.pidfile) != old_pid
        assert agent.status()["last_good"] == "12A100a"
    finally:
        agent.rollback(force=True)
    assert snapshot(world.root) == world.baseline


PATCHED_A_LIBSSL = b"libssl 3.0.2-fixed " * 4000
