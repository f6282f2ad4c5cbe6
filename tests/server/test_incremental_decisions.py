"""Decisions made again after a change only for the devices it can affect, in the
background, safely against status reports that land meanwhile (SQLite and PostgreSQL).

Every stored decision is stamped first; a device the pass decided again loses the
stamp, one it left alone keeps it. The scope is checked both ways: what the change
can alter must be decided again (an iPad reports ``iPadOS`` and is decided against
Apple's ``iOS`` catalogue), and what it cannot is left alone.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import text
from test_admin import import_real_catalogue
from test_outages import engine_of

from bsi.domain.affected import EVERYONE, Affected
from bsi.domain.catalog import SupplementState
from bsi.domain.declarations import software_update_settings
from bsi.domain.rollout import DeviceHolds
from bsi.server import decision_process
from bsi.server.app import ServerSettings, create_app, prepare
from bsi.server.decision_process import DecisionPassFailed
from bsi.server.service import BsiService
from inprocess import InProcessApp
from reports import macos_report, supplemental_report
from server_support import RunningServer

STAMP = "stamped by the test"
IOS_A = "23D771330a"


def apple_report(family: str, model: str) -> dict[str, Any]:
    """A full report of an iPhone or iPad on iOS 26.3.1 (23D8133), no supplement."""
    report = macos_report(build="23D8133", device_id=model)
    report["StatusItems"]["device"]["operating-system"]["family"] = family
    report["StatusItems"]["device"]["model"] = {"identifier": model, "family": family[:4]}
    return report


def stamp(server: RunningServer) -> None:
    with engine_of(server).begin() as connection:
        connection.execute(text("UPDATE devices SET decision_message = :m"), {"m": STAMP})


def decided_again(server: RunningServer, *device_ids: str) -> dict[str, bool]:
    found = {}
    for device_id in device_ids:
        device = server.reader.get(f"/v1/admin/devices/{device_id}").json()
        found[device_id] = device["decision_message"] != STAMP
    return found


def reason(server: RunningServer, device_id: str) -> str:
    answer: str = server.reader.get(f"/v1/admin/devices/{device_id}").json()["decision_reason"]
    return answer


@dataclass
class Fleet:
    ids: dict[str, str]
    clients: dict[str, httpx.Client]

    def __getitem__(self, name: str) -> str:
        return self.ids[name]


@pytest.fixture
def fleet(server: RunningServer, shared_data: Path) -> Fleet:
    """A Mac, an iPhone and an iPad (in group ``lab``), reported and decided once."""
    import_real_catalogue(server, shared_data)
    assert server.admin.post("/v1/admin/groups", json={"name": "lab"}).status_code == 201
    found = Fleet({}, {})
    for name, group, report in (
        ("mac", "default", macos_report()),
        ("iphone", "default", apple_report("iOS", "iPhone17,1")),
        ("ipad", "lab", apple_report("iPadOS", "iPad13,18")),
    ):
        device_id, device = server.device(group)
        assert device.put("/v1/ddm/status", json=report).status_code == 200
        found.ids[name], found.clients[name] = device_id, device
    server.recompute()  # every device: what a change is compared with from now on
    assert reason(server, found["ipad"]) == reason(server, found["iphone"]) == "offered-to-user"
    stamp(server)
    return found


@pytest.fixture
def during_pass(server: RunningServer) -> Iterator[Callable[[Callable[[str], None]], None]]:
    """``during_pass(act)``: ``act(device_id)`` runs once, as the next pass decides its
    first device (after the pass read that device's state, before it writes)."""
    rollouts = server.service.rollouts
    real = rollouts.holds
    acts: list[Callable[[str], None]] = []

    def holds(device_id: str, group_id: int, platform: str | None) -> DeviceHolds:
        if acts:
            acts.pop()(device_id)
        return real(device_id, group_id, platform)

    rollouts.holds = holds  # type: ignore[method-assign]
    yield acts.append
    rollouts.holds = real  # type: ignore[method-assign]


def test_a_supplement_change_decides_again_every_device_of_its_platform_and_no_other(
    server: RunningServer, fleet: Fleet
) -> None:
    """Pausing iOS's (a) reaches the iPhone and the iPad (iPadOS is decided against the
    iOS catalogue); the Mac is not read or written."""
    assert_pausing_decides_the_iphone_and_the_ipad(server, fleet)
    assert server.service.recompute_changed() == 0  # nothing changed since
    assert server.reader.get("/v1/admin/decisions/recompute").json() == {"recomputing": None}


def assert_pausing_decides_the_iphone_and_the_ipad(server: RunningServer, fleet: Fleet) -> None:
    """Pause iOS's (a) through the admin API: the iPhone and the iPad are decided again
    (``supplement-paused``), the Mac is not."""
    paused = server.admin.post(f"/v1/admin/supplements/iOS/{IOS_A}/pause")
    assert paused.status_code == 200, paused.text
    server.service.recompute_changed()  # after the route's own pass, if it is still running
    assert decided_again(server, *fleet.ids.values()) == {
        fleet["mac"]: False,
        fleet["iphone"]: True,
        fleet["ipad"]: True,
    }
    assert reason(server, fleet["ipad"]) == reason(server, fleet["iphone"]) == "supplement-paused"


def test_a_policy_change_decides_again_its_groups_devices(
    server: RunningServer, fleet: Fleet
) -> None:
    """A declaration assigned to ``lab`` that turns supplements off reaches its iPad;
    the devices of the other group are left alone. Unassigning reaches it too."""
    admin = server.admin
    policy = software_update_settings("lab-auto", rsr_enable=False).to_json()
    assert admin.put("/v1/admin/declarations/lab-auto", json=policy).status_code == 200
    server.service.recompute_changed()
    assert not any(decided_again(server, *fleet.ids.values()).values())  # in no group yet
    assert admin.put("/v1/admin/declarations/lab-auto/groups/lab").status_code == 204
    server.service.recompute_changed()
    assert decided_again(server, *fleet.ids.values()) == {
        fleet["mac"]: False,
        fleet["iphone"]: False,
        fleet["ipad"]: True,
    }
    automatic = reason(server, fleet["ipad"])
    assert automatic != "offered-to-user"
    stamp(server)
    assert admin.delete("/v1/admin/declarations/lab-auto/groups/lab").status_code == 204
    server.service.recompute_changed()
    assert decided_again(server, *fleet.ids.values())[fleet["ipad"]]
    assert reason(server, fleet["ipad"]) == "offered-to-user"


def test_a_device_that_reports_during_the_pass_keeps_the_decision_of_its_new_state(
    server: RunningServer, fleet: Fleet, during_pass: Callable[[Callable[[str], None]], None]
) -> None:
    """The pass reads the iPhone's state, the iPhone reports (a) installed, the pass
    writes: the decision made from the older state (the paused offer) must not land
    over the report's; the device is decided again from what it reported."""

    def report(device_id: str) -> None:
        assert device_id == fleet["iphone"]  # iOS comes first, then iPadOS
        done = fleet.clients["iphone"].put("/v1/ddm/status", json=supplemental_report(IOS_A))
        assert done.status_code == 200, done.text

    during_pass(report)
    server.service.set_supplement_state("iOS", IOS_A, SupplementState.PAUSED)
    assert server.service.recompute_changed() == 2
    device = server.reader.get(f"/v1/admin/devices/{fleet['iphone']}").json()
    assert device["supplemental_build"] == IOS_A
    assert device["decision_reason"] == "supplement-installed"
    assert reason(server, fleet["ipad"]) == "supplement-paused"


def test_changes_during_a_pass_are_decided_by_one_more_pass_shown_in_the_admin_api(
    server: RunningServer, fleet: Fleet, during_pass: Callable[[Callable[[str], None]], None]
) -> None:
    """While a pass for iOS runs, the admin API shows it with the devices left; a macOS
    pause and a policy change arrive, two callers wait for a pass and one asks without
    waiting: the running pass's thread decides both changes in one more pass (the Mac
    for its platform, the iPad for its group), and the waiting callers find nothing."""
    service = server.service
    seen: dict[str, Any] = {}
    results: list[int] = []
    waiting = [
        threading.Thread(target=lambda: results.append(service.recompute_changed()))
        for _ in range(2)
    ]

    def meanwhile(_device_id: str) -> None:
        seen.update(server.reader.get("/v1/admin/decisions/recompute").json()["recomputing"])
        service.set_supplement_state("macOS", "25D771280a", SupplementState.PAUSED)
        for thread in waiting:
            thread.start()
        policy = software_update_settings("lab-auto", rsr_enable=False)
        service.put_declaration(policy.to_json())
        service.assign("lab-auto", "lab", assigned=True)
        assert service.recompute_changed(wait=False) == 0  # the running pass's thread will
        assert service.recomputing()["queued"] is True  # type: ignore[index]

    during_pass(meanwhile)
    service.set_supplement_state("iOS", IOS_A, SupplementState.PAUSED)
    assert service.recompute_changed() == 2 + 2  # and one more: the Mac (its platform), the iPad
    for thread in waiting:
        thread.join(30)
    assert seen == {
        "affects": "platforms iOS",
        "devices": 2,
        "devices_left": 2,
        "started_at": seen["started_at"],
        "queued": False,
    }
    assert results == [0, 0]  # nothing left for the passes that waited
    assert reason(server, fleet["mac"]) == "supplement-paused"
    assert service.recomputing() is None


def test_an_ios_rollout_holds_an_ipad_as_it_holds_an_iphone(
    server: RunningServer, fleet: Fleet
) -> None:
    """An iPad reports ``iPadOS`` and is decided against the iOS catalogue, so an iOS
    supplement's rollout gates it as it gates an iPhone: a wave not yet open defers
    both, and the change decides both again (and not the Mac)."""
    plan = {
        "waves": [
            {"name": "pilot", "percent": 1, "groups": ["mac-lab"], "soak_hours": 1},
            {"name": "everyone", "percent": 100, "soak_hours": 0},
        ]
    }
    assert server.admin.post("/v1/admin/groups", json={"name": "mac-lab"}).status_code == 201
    started = server.admin.put(f"/v1/admin/supplements/iOS/{IOS_A}/rollout", json=plan)
    assert started.status_code == 201, started.text
    server.service.recompute_changed()
    assert decided_again(server, *fleet.ids.values())[fleet["mac"]] is False
    outcomes = {
        name: server.reader.get(f"/v1/admin/devices/{fleet[name]}").json()["decision_outcome"]
        for name in ("iphone", "ipad")
    }
    assert outcomes == {"iphone": "deferred", "ipad": "deferred"}


def test_a_maintenance_window_decides_again_its_groups_devices(
    server: RunningServer, fleet: Fleet
) -> None:
    """A window closed now (Friday 13:00 in Berlin) on ``lab`` defers its iPad; the
    devices of the other group are left alone."""
    shut = {"days": ["fri"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"}
    put = server.admin.put("/v1/admin/groups/lab/maintenance-window", json=shut)
    assert put.status_code == 200, put.text
    server.service.recompute_changed()
    assert decided_again(server, *fleet.ids.values()) == {
        fleet["mac"]: False,
        fleet["iphone"]: False,
        fleet["ipad"]: True,
    }
    assert reason(server, fleet["ipad"]) == "maintenance-window"


def test_an_ios_rollouts_waves_count_the_ipad_and_its_failure_halts_them(
    server: RunningServer, fleet: Fleet
) -> None:
    """An iOS rollout's members are the iPhone and the iPad (stored as ``iPadOS``), so
    an iPad that fails to install counts towards the halt, as an iPhone would."""
    rollout = f"/v1/admin/supplements/iOS/{IOS_A}/rollout"
    plan = {
        "waves": [{"name": "everyone", "percent": 100, "soak_hours": 1}],
        "halt": {"max_failures": 1, "silence_hours": 6},
    }
    started = server.admin.put(rollout, json=plan)
    assert started.status_code == 201, started.text
    assert [w["devices"] for w in started.json()["waves"]] == [2]
    failed = apple_report("iPadOS", "iPad13,18")
    failed["StatusItems"]["softwareupdate"] = {
        "install-state": "failed",
        "pending-version": {"os-version": "26.3.1 (a)", "build-version": IOS_A},
        "failure-reason": {"reason": "download failed", "count": 1},
    }
    assert fleet.clients["ipad"].put("/v1/ddm/status", json=failed).status_code == 200
    body = server.reader.get(rollout).json()
    assert body["state"] == "halted", body


def test_a_pass_is_shown_from_its_start_while_it_reads_and_counts_its_devices(
    server: RunningServer, fleet: Fleet
) -> None:
    """Before its first batch a pass reads what changed and counts the devices it
    affects: seconds at a million devices, during which the admin API said no pass was
    under way (and the publish benchmark took the pass for done)."""
    devices = server.service.stores.devices
    seen: list[Any] = []

    def counting(**filters: Any) -> int:
        seen.append(server.reader.get("/v1/admin/decisions/recompute").json()["recomputing"])
        return type(devices).count_device_states(devices, **filters)  # type: ignore[arg-type]

    devices.count_device_states = counting  # type: ignore[method-assign]
    try:
        paused = server.admin.post(f"/v1/admin/supplements/iOS/{IOS_A}/pause")
        assert paused.status_code == 200, paused.text
        server.service.recompute_changed()  # after the route's own pass
    finally:
        del devices.count_device_states  # type: ignore[attr-defined]
    assert seen[0] == {"affects": "what changed", "queued": True}
    assert decided_again(server, fleet["iphone"])[fleet["iphone"]] is True
    assert server.service.recomputing() is None


@pytest.mark.server_settings(decision_process_devices=1)
def test_a_pass_over_many_devices_runs_in_a_process_of_its_own_and_decides_alike(
    server: RunningServer, fleet: Fleet
) -> None:
    """With every pass over the threshold (one device), the fleet's first pass and the
    change's run in ``python -m bsi.server.decision_process``, and decide what the
    server's thread decides (the fixture's reasons, and the pause's, as above)."""
    passes: list[Affected] = []
    real = server.service.decide_elsewhere
    assert real is not None

    def recorded(affected: Affected, now: datetime, decided: Callable[[int], None]) -> Any:
        passes.append(affected)
        return real(affected, now, decided)

    server.service.decide_elsewhere = recorded
    assert_pausing_decides_the_iphone_and_the_ipad(server, fleet)
    assert passes
    assert passes[-1].platforms == {"iOS"}


@pytest.mark.server_settings(decision_process_devices=1)
def test_a_pass_whose_process_dies_is_refused_and_its_devices_wait_for_the_next(
    server: RunningServer, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that ends without its answer fails the pass (503, with its exit status);
    nothing is written, and the next pass decides the change's devices."""
    pause_through_a_failing_child(
        server, monkeypatch, (sys.executable, "-c", "raise SystemExit(3)"), 3
    )
    assert not any(decided_again(server, *fleet.ids.values()).values())
    assert_the_next_pass_decides_the_pause(server, fleet, monkeypatch)
    assert reason(server, fleet["iphone"]) == "supplement-paused"


def pause_through_a_failing_child(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], status: int
) -> None:
    """Pause iOS 26.3.1 (a) with ``command`` as the decision pass's process, which must end
    with exit ``status``: the pass is refused (503, naming that status)."""
    monkeypatch.setattr(decision_process, "COMMAND", command)
    server.service.set_supplement_state("iOS", IOS_A, SupplementState.PAUSED)
    refused = server.admin.post("/v1/admin/decisions/recompute")
    assert refused.status_code == 503, refused.text
    assert f"exit status {status}" in refused.json()["message"]


def assert_the_next_pass_decides_the_pause(
    server: RunningServer, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real child back, the next pass decides the iPhone and the iPad again."""
    monkeypatch.undo()
    server.service.recompute_changed()
    assert decided_again(server, fleet["iphone"], fleet["ipad"]) == {
        fleet["iphone"]: True,
        fleet["ipad"]: True,
    }


@contextlib.contextmanager
def next_server(server: RunningServer, tmp_path: Path) -> Iterator[BsiService]:
    """Another server started on ``server``'s database (as after a restart, or beside
    it): its own service and app, its lifespan run; yields its service."""
    engine = engine_of(server)
    embedded = engine.dialect.name == "sqlite"
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        database_url=None if embedded else engine.url.render_as_string(hide_password=False),
    )
    service = prepare(settings, server.clock)
    answering = InProcessApp(create_app(service, settings)).start()
    try:
        yield service
    finally:
        answering.stop()
        service.close()


def wait_until(done: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        time.sleep(0.05)


@pytest.mark.server_settings(decision_process_devices=1)
def test_a_change_no_pass_completed_after_is_decided_by_the_next_server_to_start(
    server: RunningServer, fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A server that stopped between a change and the end of its pass (here the pass's
    process dies) leaves the stored decisions behind the change; the next server to
    start decides every device again, unasked, and compliance shows the change."""
    pause_through_a_failing_child(
        server, monkeypatch, (sys.executable, "-c", "raise SystemExit(3)"), 3
    )
    monkeypatch.undo()
    assert reason(server, fleet["iphone"]) == "offered-to-user"  # behind the pause
    generations = server.service.stores.generations
    assert generations.decided() < generations.current()
    with next_server(server, tmp_path) as restarted:
        wait_until(lambda: all(decided_again(server, *fleet.ids.values()).values()))
        wait_until(lambda: restarted.recomputing() is None)
    assert reason(server, fleet["iphone"]) == reason(server, fleet["ipad"]) == "supplement-paused"
    assert generations.decided() == generations.current()


def test_a_server_that_starts_with_no_change_left_behind_decides_nothing(
    server: RunningServer, fleet: Fleet, tmp_path: Path
) -> None:
    """The fleet fixture's last pass completed: a restart costs no pass (the stamps stay),
    and a change made through the running server is decided by its own pass."""
    assert server.admin.post(f"/v1/admin/supplements/iOS/{IOS_A}/pause").status_code == 200
    wait_until(lambda: all(decided_again(server, fleet["iphone"], fleet["ipad"]).values()))
    wait_until(lambda: server.service.recomputing() is None)
    stamp(server)
    generations = server.service.stores.generations
    assert generations.decided() == generations.current()
    with next_server(server, tmp_path) as restarted:
        time.sleep(1)  # time for a pass that should not start
        assert restarted.catch_up_decisions() == 0
    assert not any(decided_again(server, *fleet.ids.values()).values())


KILLED_AFTER_ITS_FIRST_BATCH = (
    sys.executable,
    "-c",
    "import os, sys\n"
    "from bsi.server import decision_process\n"
    "from bsi.server.service import BsiService\n"
    "real = BsiService.decide_here\n"
    "def killed(self, affected, decided, catalog=None):\n"
    "    return real(self, affected, lambda count: os._exit(9), catalog)\n"
    "BsiService.decide_here = killed\n"
    "sys.exit(decision_process.main())\n",
)
"""The real child, killed (``os._exit``: no cleanup, no answer) once its first batch
of decisions is committed."""


@pytest.mark.server_settings(decision_process_devices=1)
def test_a_child_killed_after_writing_fails_the_pass_and_the_next_decides_again(
    server: RunningServer, fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a killed child wrote stands (each decision a compare-and-set), but its pass
    is not taken as done: 503, and the next pass decides the change's devices again."""
    pause_through_a_failing_child(server, monkeypatch, KILLED_AFTER_ITS_FIRST_BATCH, 9)
    assert reason(server, fleet["iphone"]) == "supplement-paused"  # its batch was committed
    stamp(server)
    assert_the_next_pass_decides_the_pause(server, fleet, monkeypatch)


ONE_DEVICE_A_BATCH = (
    sys.executable,
    "-c",
    "import sys\n"
    "from bsi.server import decision_process, service\n"
    "service.RECOMPUTE_BATCH = 1\n"
    "sys.exit(decision_process.main())\n",
)
"""The real child, deciding one device per batch (three batches for the fleet)."""


def test_a_child_whose_parent_is_gone_stops_after_its_batch(
    server: RunningServer, fleet: Fleet
) -> None:
    """A parent that ends (here a launcher that hands the child its request and exits at
    once, unread) leaves a child that stops at its first batch's end: of the fleet's
    three batches, one is decided."""
    request = {
        "database_url": engine_of(server).url.render_as_string(hide_password=False),
        "cache_seconds": 2.0,
        "now": datetime.now(UTC).isoformat(),
        "affected": decision_process.affected_to_json(EVERYONE),
    }
    launcher = (
        "import json, subprocess, sys\n"
        f"child = subprocess.Popen({list(ONE_DEVICE_A_BATCH)!r}, stdin=subprocess.PIPE, "
        "stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)\n"
        f"child.stdin.write({json.dumps(request)!r} + '\\n')\n"
        "child.stdin.close()\n"
        "print(child.pid)\n"
    )
    launched = subprocess.run(
        [sys.executable, "-c", launcher], capture_output=True, text=True, check=True
    )
    child = psutil.Process(int(launched.stdout))
    with contextlib.suppress(psutil.NoSuchProcess):
        deadline = time.monotonic() + 60
        while child.status() != psutil.STATUS_ZOMBIE:  # an orphan may stay unreaped
            assert time.monotonic() < deadline, "the orphaned child kept running"
            time.sleep(0.05)
    assert sum(decided_again(server, *fleet.ids.values()).values()) == 1


def test_a_child_that_cannot_decide_says_why(tmp_path: Path) -> None:
    """The child's own refusal (here: a database with no bsi schema) is the pass's error."""
    with pytest.raises(DecisionPassFailed, match="the decision pass failed: ") as refused:
        decision_process.decide_in_child(
            f"sqlite:///{tmp_path / 'empty.db'}", 2.0, EVERYONE, datetime.now(UTC), print
        )
    assert refused.value.hint
