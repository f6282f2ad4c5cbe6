"""Rollouts on the real server: waves held and opened, halts, abort, windows, events."""

from __future__ import annotations

import importlib.util
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bsi.domain.declarations import enforcement_specific
from bsi.domain.rollout import DAYS, advance
from bsi.errors import Conflict
from bsi.server.service import _Coalesced
from reports import macos_report, supplemental_report
from server_support import RunningServer


def _apple_schema() -> Any:
    """tests/domain/apple_schema.py: the independent reading of Apple's declaration schemas."""
    path = Path(__file__).parents[1] / "domain" / "apple_schema.py"
    spec = importlib.util.spec_from_file_location("apple_schema", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apple_schema = _apple_schema()
BUILD = "25D771280a"  # macOS 26.3.1 (a), for devices on 25D2128
ROLLOUT = f"/v1/admin/supplements/macOS/{BUILD}/rollout"
PLAN = {
    "waves": [
        {"name": "canary", "percent": 25, "soak_hours": 1},
        {"name": "everyone", "percent": 100, "soak_hours": 0},
    ],
    "halt": {"max_failures": 1, "silence_hours": 6},
}


def fleet(server: RunningServer, shared_data: Path, n: int = 4) -> list[tuple[str, httpx.Client]]:
    for name in ("gdmf_cached.json", "macos_data_feed.json"):
        body = (shared_data / "sofa" / name).read_bytes()
        response = server.admin.post("/v1/admin/catalog", params={"source": name}, content=body)
        assert response.status_code == 200, response.text
    devices = []
    for _ in range(n):
        device_id, client = server.device()
        assert client.put("/v1/ddm/status", json=macos_report()).status_code == 200
        devices.append((device_id, client))
    return devices


def decision(server: RunningServer, device_id: str) -> tuple[str, str, str]:
    body = server.reader.get(f"/v1/admin/devices/{device_id}").json()
    return body["decision_outcome"], body["decision_reason"], body["decision_message"]


def events(server: RunningServer, **params: Any) -> list[dict[str, Any]]:
    response = server.reader.get("/v1/admin/events", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return found


def waves(server: RunningServer) -> dict[str, dict[str, Any]]:
    body = server.reader.get(ROLLOUT).json()
    return {w["name"]: w for w in body["waves"]}


def failed_report(
    reason: str = "health-check-failed: 26.3.1 (a) failed its health check (exit 1)",
) -> dict[str, Any]:
    """A macOS status report: installing the supplement failed for ``reason``."""
    failed = macos_report()
    failed["StatusItems"]["softwareupdate"] = {
        "install-state": "failed",
        "pending-version": {"os-version": "26.3.1 (a)", "build-version": BUILD},
        "failure-reason": {"reason": reason, "count": 1, "timestamp": "2026-03-20T12:10:00Z"},
    }
    return failed


def test_a_good_supplement_advances_through_its_waves(
    server: RunningServer, shared_data: Path
) -> None:
    devices = fleet(server, shared_data)
    started = server.admin.put(ROLLOUT, json=PLAN)
    assert started.status_code == 201, started.text
    body = started.json()
    assert body["state"] == "running"
    assert [(w["name"], w["devices"], w["state"]) for w in body["waves"]] == [
        ("canary", 1, "open"),
        ("everyone", 3, "waiting"),
    ]
    outcomes = {d: decision(server, d) for d, _ in devices}
    # macOS: the device drawn into the open wave is served its enforcement (a deadline).
    canary = [d for d, (outcome, _, _) in outcomes.items() if outcome == "enforced"]
    assert len(canary) == 1
    waiting = [d for d in outcomes if d not in canary]
    for device_id in waiting:
        outcome, reason, message = outcomes[device_id]
        assert (outcome, reason) == ("deferred", "rollout-wave")
        assert "'everyone', which is waiting" in message
        assert "2026-03-20 13:00" in message

    # The agent reads the same gate from the catalogue, with no other request.
    client = dict(devices)[waiting[0]]
    section = client.get("/v1/ddm/catalog", params={"platform": "macOS"}).json()["device"]
    assert section["gates"] == [
        {
            "build": BUILD,
            "open": False,
            "wave": 1,
            "wave_name": "everyone",
            "state": "waiting",
            "earliest": "2026-03-20T13:00:00+00:00",
        }
    ]

    report = supplemental_report(BUILD)
    assert dict(devices)[canary[0]].put("/v1/ddm/status", json=report).status_code == 200
    assert server.service.rollouts.tick() == 0  # soaking: an hour from the start
    server.clock.advance(hours=1)
    assert server.service.rollouts.tick() == 1
    assert waves(server)["everyone"]["state"] == "open"
    assert all(decision(server, d)[0] == "enforced" for d in waiting)
    for device_id in waiting:
        assert dict(devices)[device_id].put("/v1/ddm/status", json=report).status_code == 200
    assert server.service.rollouts.tick() == 1
    assert server.reader.get(ROLLOUT).json()["state"] == "completed"
    kinds = [(e["kind"], e["actor"]) for e in events(server, supplement=BUILD)]
    assert kinds[0] == ("rollout-started", "test-admin")
    assert ("wave-advanced", "automatic") in kinds
    assert kinds.count(("device-installed", "automatic")) == 4
    assert kinds[-1] == ("rollout-completed", "automatic")


def test_a_failing_supplement_halts_in_the_first_wave_and_abort_withdraws_it(
    server: RunningServer, shared_data: Path
) -> None:
    devices = fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    (canary,) = [d for d, _ in devices if decision(server, d)[0] == "enforced"]
    assert dict(devices)[canary].put("/v1/ddm/status", json=failed_report()).status_code == 200
    # Halted as the failure was stored, not at the next tick: no other device's check-in
    # in between finds the next wave's gate open.
    body = server.reader.get(ROLLOUT).json()
    assert body["state"] == "halted"
    server.clock.advance(hours=2)  # soaked: only the failure keeps the next wave shut
    assert server.service.rollouts.tick() == 0
    assert f"1 health-check-rollback ({canary})" in body["halted_because"]
    assert body["failures"] == [
        {
            "device": canary,
            "failure": "health-check-rollback",
            "detail": f"failed to install {BUILD}: "
            "health-check-failed: 26.3.1 (a) failed its health check (exit 1)",
        }
    ]
    assert [w["state"] for w in body["waves"]] == ["halted", "waiting"]
    others = [d for d, _ in devices if d != canary]
    for device_id in others:
        outcome, reason, _message = decision(server, device_id)
        assert (outcome, reason) == ("deferred", "rollout-wave")
    (halt,) = events(server, kind="rollout-halted")
    assert halt["actor"] == "automatic"
    assert canary in halt["reason"]
    assert events(server, kind="device-failed", device=canary)[0]["supplement"] == BUILD

    # Abort = withdraw: the supplement is withdrawn and the admin is the actor.
    aborted = server.admin.post(f"{ROLLOUT}/abort")
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["state"] == "aborted"
    rows = {s["build"]: s for s in server.reader.get("/v1/admin/supplements").json()}
    assert rows[BUILD]["state"] == "withdrawn"
    (withdrawn,) = events(server, kind="supplement-withdrawn")
    assert withdrawn["actor"] == "test-admin"
    again = server.admin.post(f"{ROLLOUT}/abort")
    assert again.status_code == 409
    assert "already aborted" in again.json()["message"]


def test_a_failure_in_a_wave_not_yet_opened_halts_the_rollout(
    server: RunningServer, shared_data: Path
) -> None:
    """Fail closed: a device of the waiting wave that installed another way (Apple's own
    ramp, a user's click) and failed counts; its wave's being shut does not hide it."""
    devices = fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    waiting = [d for d, _ in devices if decision(server, d)[0] == "deferred"]
    assert len(waiting) == 3
    assert dict(devices)[waiting[0]].put("/v1/ddm/status", json=failed_report()).is_success
    body = server.reader.get(ROLLOUT).json()
    assert body["state"] == "halted"
    assert f"1 health-check-rollback ({waiting[0]})" in body["halted_because"]
    assert [(w["state"], w["failed"]) for w in body["waves"]] == [("halted", 0), ("waiting", 1)]


def test_resume_and_advance_by_hand(server: RunningServer, shared_data: Path) -> None:
    fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    refused = server.admin.post(f"{ROLLOUT}/resume")
    assert refused.status_code == 409
    assert "not halted" in refused.json()["message"]
    assert server.reader.post(f"{ROLLOUT}/advance").status_code == 403
    advanced = server.admin.post(f"{ROLLOUT}/advance")
    assert advanced.status_code == 200, advanced.text
    assert [w["state"] for w in advanced.json()["waves"]] == ["passed", "open"]
    last = server.admin.post(f"{ROLLOUT}/advance")
    assert last.status_code == 409
    assert "last wave" in last.json()["message"]
    assert server.admin.post(f"{ROLLOUT}/explode").status_code == 422


def test_a_change_decided_before_another_never_overwrites_it(
    server: RunningServer, shared_data: Path
) -> None:
    """Another worker's tick (or an admin) read the rollout before an abort: its advance
    is refused and the abort stays; the tick of a process reading stale state changes
    nothing."""
    fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    rollouts = server.service.rollouts
    read_before = rollouts.get("macOS", BUILD)
    assert server.admin.post(f"{ROLLOUT}/abort").status_code == 200
    stale = advance(read_before.rollout, read_before.rollout.started_at)
    with pytest.raises(Conflict):
        rollouts.store.save_rollout(read_before, stale, [])
    body = server.reader.get(ROLLOUT).json()
    assert body["state"] == "aborted"
    assert body["current_wave"] == "canary"


@pytest.mark.parametrize(
    ("plan", "says"),
    [
        (
            {"waves": [{"name": "a", "percent": 50}, {"name": "b", "percent": 90}]},
            "not 100 %",
        ),
        (
            {"waves": [{"name": "a", "percent": 50}, {"name": "b", "percent": 40}]},
            "not above the wave before",
        ),
        (
            {
                "waves": [
                    {"name": "a", "percent": 10, "groups": ["default"]},
                    {"name": "b", "percent": 100, "groups": ["default"]},
                ]
            },
            "already in wave 'a'",
        ),
        ({"waves": [{"name": "a", "percent": 100, "groups": ["nope"]}]}, "no group 'nope'"),
        ({"waves": []}, "at least one wave"),
        ({"waves": [{"name": "a", "percent": 100, "soak": 1}]}, "unknown field 'soak'"),
    ],
)
def test_bad_plans_are_refused_and_change_nothing(
    server: RunningServer, shared_data: Path, plan: dict[str, Any], says: str
) -> None:
    devices = fleet(server, shared_data, n=1)
    refused = server.admin.put(ROLLOUT, json=plan)
    assert refused.status_code == 422, refused.text
    assert says in refused.json()["message"]
    assert server.reader.get(ROLLOUT).status_code == 404
    assert server.admin.put("/v1/admin/rollout-plans/macOS", json=plan).status_code == 422
    assert server.reader.get("/v1/admin/rollout-plans/macOS").status_code == 404
    assert events(server, kind=["rollout-started", "plan-changed"]) == []
    assert decision(server, devices[0][0])[0] == "install"


def test_a_rollout_needs_a_known_supplement_and_starts_once(
    server: RunningServer, shared_data: Path
) -> None:
    fleet(server, shared_data, n=1)
    missing = server.admin.put("/v1/admin/supplements/macOS/25D999999a/rollout", json=PLAN)
    assert missing.status_code == 404
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    twice = server.admin.put(ROLLOUT, json=PLAN)
    assert twice.status_code == 409
    assert "already has a rollout" in twice.json()["message"]


def test_a_platform_default_plan_starts_a_new_supplements_rollout(
    server: RunningServer, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put = server.admin.put("/v1/admin/rollout-plans/macOS", json=PLAN)
    assert put.status_code == 200, put.text
    assert server.reader.get("/v1/admin/rollout-plans/macOS").json()["waves"][0]["name"] == "canary"
    # The rollout exists before the catalogue lists the supplement: a device checking in
    # between the two would find it with no gate and install (seen at 10,000 devices).
    catalogue = server.service._catalogue
    listed = catalogue.replace_catalog
    rollout_when_listed = []

    def replace(catalog: Any, origin: str) -> None:
        rollout_when_listed.append(server.service.rollouts.store.rollout("macOS", BUILD))
        listed(catalog, origin)

    monkeypatch.setattr(catalogue, "replace_catalog", replace)
    fleet(server, shared_data)
    assert rollout_when_listed  # the first feed lists the supplement: already gated then
    assert all(found is not None for found in rollout_when_listed)
    body = server.reader.get(ROLLOUT).json()
    assert body["state"] == "running"
    assert body["plan"]["waves"][1]["name"] == "everyone"
    (started,) = events(server, kind="rollout-started", supplement=BUILD)
    assert started["actor"] == "automatic"


def test_a_maintenance_window_defers_activation(server: RunningServer, shared_data: Path) -> None:
    (device,) = fleet(server, shared_data, n=1)
    window = "/v1/admin/groups/default/maintenance-window"
    # 2026-03-20 12:00 UTC is a Friday, 13:00 in Berlin: outside 22:00-04:00.
    shut = {"days": ["fri"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"}
    put = server.admin.put(window, json=shut)
    assert put.status_code == 200, put.text
    outcome, reason, message = decision(server, device[0])
    assert (outcome, reason) == ("deferred", "maintenance-window")
    assert "opens at 2026-03-20 21:00 UTC" in message
    section = device[1].get("/v1/ddm/catalog", params={"platform": "macOS"}).json()["device"]
    assert section == {"gates": [], "window": shut}
    server.clock.advance(hours=9, minutes=30)
    server.recompute()
    assert decision(server, device[0])[0] == "install"
    assert server.admin.delete(window).status_code == 204
    assert "device" not in device[1].get("/v1/ddm/catalog", params={"platform": "macOS"}).json()
    assert [e["kind"] for e in events(server, kind=["window-changed", "window-removed"])] == [
        "window-changed",
        "window-removed",
    ]


@pytest.mark.parametrize(
    ("window", "says"),
    [
        ({"days": ["mon"], "start": "10:00", "end": "10:00", "timezone": "UTC"}, "no hours"),
        ({"days": [], "start": "10:00", "end": "11:00", "timezone": "UTC"}, "window.days"),
        ({"days": ["mon"], "start": "25:00", "end": "11:00", "timezone": "UTC"}, "window.start"),
        ({"days": ["mon"], "start": "10:00", "end": "11:00", "timezone": "Mars/Base"}, "time zone"),
    ],
)
def test_bad_windows_are_refused_and_change_nothing(
    server: RunningServer, window: dict[str, Any], says: str
) -> None:
    path = "/v1/admin/groups/default/maintenance-window"
    refused = server.admin.put(path, json=window)
    assert refused.status_code == 422
    assert says in refused.json()["message"]
    assert server.reader.get(path).status_code == 404
    elsewhere = server.admin.put("/v1/admin/groups/nope/maintenance-window", json=window)
    assert elsewhere.status_code == 422  # the window is read first: nothing is looked up


def test_events_filter_and_page(server: RunningServer, shared_data: Path) -> None:
    devices = fleet(server, shared_data, n=3)
    for _, client in devices:
        assert client.put("/v1/ddm/status", json=supplemental_report(BUILD)).status_code == 200
    pages, after = [], 0
    while True:
        body = server.reader.get(
            "/v1/admin/events", params={"kind": "device-installed", "limit": 2, "after": after}
        ).json()
        pages.append([e["device"] for e in body["events"]])
        if body["next"] is None:
            break
        after = body["next"]
    assert sorted(d for page in pages for d in page) == sorted(d for d, _ in devices)
    assert events(server, device=devices[0][0])[0]["reason"] == f"now runs {BUILD}"
    assert events(server, since="2026-03-21T00:00:00Z") == []
    bad = server.reader.get("/v1/admin/events", params={"kind": "made-up"})
    assert bad.status_code == 400
    assert "made-up" in bad.json()["message"]
    naive = server.reader.get("/v1/admin/events", params={"since": "2026-03-21T00:00:00"})
    assert naive.status_code == 400
    assert server.client().get("/v1/admin/events").status_code == 401


def test_a_passed_enforcement_deadline_is_an_event_once(server: RunningServer) -> None:
    declaration = enforcement_specific("enforce-a", "26.3.1", datetime(2026, 3, 20, 13, 0), BUILD)
    put = server.admin.put("/v1/admin/declarations/enforce-a", json=declaration.to_json())
    assert put.is_success, put.text
    server.service.rollouts.tick()
    assert events(server, kind="enforcement-deadline-passed") == []
    server.clock.advance(hours=1)
    server.service.rollouts.tick()
    server.service.rollouts.tick()
    (passed,) = events(server, kind="enforcement-deadline-passed")
    assert passed["supplement"] == BUILD
    assert (
        "2026-03-20 13:00 (device-local) of enforce-a for 26.3.1 (25D771280a)" in passed["reason"]
    )


APPLE_PLAN = {
    "waves": [
        {"name": "canary", "percent": 50, "groups": ["canary"], "soak_hours": 1},
        {"name": "rest", "percent": 100, "groups": ["rest"], "soak_hours": 0},
    ],
    "halt": {"max_failures": 1},
}
WAVE_0, WAVE_1 = f"bsi.rollout.{BUILD}.0", f"bsi.rollout.{BUILD}.1"


def apple_fleet(server: RunningServer, shared_data: Path) -> tuple[httpx.Client, httpx.Client]:
    fleet(server, shared_data, n=0)
    clients = []
    for group in ("canary", "rest"):
        assert server.admin.post("/v1/admin/groups", json={"name": group}).status_code == 201
        _, client = server.device(group)
        assert client.put("/v1/ddm/status", json=macos_report()).status_code == 200
        clients.append(client)
    return clients[0], clients[1]


def served(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """The device's bsi rollout declarations, each as served."""
    items = client.get("/v1/ddm/declaration-items").json()["Declarations"]["Configurations"]
    found = {}
    for item in items:
        if item["Identifier"].startswith("bsi.rollout."):
            path = f"/v1/ddm/declaration/configuration/{item['Identifier']}"
            found[item["Identifier"]] = client.get(path).json()
    return found


def test_an_apple_plan_issues_staggered_enforcements_wave_by_wave(
    server: RunningServer, shared_data: Path
) -> None:
    canary, rest = apple_fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=APPLE_PLAN).status_code == 201
    first = served(canary)
    assert set(first) == {WAVE_0}
    assert first[WAVE_0]["Type"] == "com.apple.configuration.softwareupdate.enforcement.specific"
    assert first[WAVE_0]["Payload"] == {
        "TargetOSVersion": "26.3.1",
        "TargetBuildVersion": BUILD,
        "TargetLocalDateTime": "2026-03-21T12:00:00",
    }
    assert apple_schema.problems(first[WAVE_0]) == []
    assert served(rest) == {}  # the next wave's declaration waits for the canary

    assert canary.put("/v1/ddm/status", json=supplemental_report(BUILD)).status_code == 200
    server.clock.advance(hours=1, minutes=30)
    assert server.service.rollouts.tick() == 1
    second = served(rest)
    assert set(second) == {WAVE_1}
    assert second[WAVE_1]["Payload"]["TargetLocalDateTime"] == "2026-03-21T13:30:00"
    assert apple_schema.problems(second[WAVE_1]) == []
    assert set(served(canary)) == {WAVE_0}  # a passed wave keeps its declaration

    # Deadlines in local time: a group with a window gets the same instant in its zone.
    window = {"days": list(DAYS), "start": "00:00", "end": "23:59", "timezone": "Europe/Berlin"}
    path = "/v1/admin/groups/canary/maintenance-window"
    assert server.admin.put(path, json=window).status_code == 200
    berlin = served(canary)[WAVE_0]
    assert berlin["Payload"]["TargetLocalDateTime"] == "2026-03-21T13:00:00"  # CET, UTC+1
    assert apple_schema.problems(berlin) == []
    assert served(rest)[WAVE_1]["Payload"]["TargetLocalDateTime"] == "2026-03-21T13:30:00"
    assert server.admin.delete(path).status_code == 204
    assert served(canary)[WAVE_0]["Payload"]["TargetLocalDateTime"] == "2026-03-21T12:00:00"


PERCENT_PLAN = {
    "waves": [
        {"name": "first", "percent": 50, "soak_hours": 1},
        {"name": "rest", "percent": 100, "soak_hours": 0},
    ],
    "halt": {"max_failures": 1},
}


def drawn(
    server: RunningServer, shared_data: Path
) -> tuple[list[tuple[str, httpx.Client]], list[tuple[str, httpx.Client]]]:
    """Four macOS devices in one group, a percent-only plan started: (first wave, rest)."""
    devices = fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=PERCENT_PLAN).status_code == 201
    first = [(d, c) for d, c in devices if decision(server, d)[0] != "deferred"]
    return first, [(d, c) for d, c in devices if (d, c) not in first]


def test_an_apple_plan_of_percentages_serves_each_drawn_device_its_waves_deadline(
    server: RunningServer, shared_data: Path
) -> None:
    first, rest = drawn(server, shared_data)
    assert (len(first), len(rest)) == (2, 2)
    # The server decides as the device is told: its own wave's deadline enforces the build.
    outcome, _, message = decision(server, first[0][0])
    assert outcome == "enforced", message
    assert decision(server, rest[0][0])[:2] == ("deferred", "rollout-wave")
    for _, client in first:
        got = served(client)
        assert set(got) == {WAVE_0}
        assert got[WAVE_0]["Payload"] == {
            "TargetOSVersion": "26.3.1",
            "TargetBuildVersion": BUILD,
            "TargetLocalDateTime": "2026-03-21T12:00:00",
        }
        assert apple_schema.problems(got[WAVE_0]) == []
    assert all(served(client) == {} for _, client in rest)  # not drawn into an open wave

    for _, client in first:
        assert client.put("/v1/ddm/status", json=supplemental_report(BUILD)).status_code == 200
    server.clock.advance(hours=1, minutes=30)
    assert server.service.rollouts.tick() == 1
    for _, client in rest:
        got = served(client)
        assert set(got) == {WAVE_1}
        assert got[WAVE_1]["Payload"]["TargetLocalDateTime"] == "2026-03-21T13:30:00"
        assert apple_schema.problems(got[WAVE_1]) == []
    assert all(set(served(client)) == {WAVE_0} for _, client in first)

    # The group's window time zone: New York is on EDT (UTC-4) from 8 March 2026.
    window = {"days": list(DAYS), "start": "22:00", "end": "04:00", "timezone": "America/New_York"}
    path = "/v1/admin/groups/default/maintenance-window"
    assert server.admin.put(path, json=window).status_code == 200
    local = served(first[0][1])[WAVE_0]
    assert local["Payload"]["TargetLocalDateTime"] == "2026-03-21T08:00:00"
    assert apple_schema.problems(local) == []
    assert served(rest[0][1])[WAVE_1]["Payload"]["TargetLocalDateTime"] == "2026-03-21T09:30:00"

    # A completed rollout's devices keep their waves' declarations, as pinned groups do.
    for _, client in rest:
        assert client.put("/v1/ddm/status", json=supplemental_report(BUILD)).status_code == 200
    assert server.service.rollouts.tick() == 1
    assert server.reader.get(ROLLOUT).json()["state"] == "completed"
    server.service.rollouts.forget()
    assert set(served(rest[1][1])) == {WAVE_1}
    assert set(served(first[1][1])) == {WAVE_0}


def test_an_apple_plan_of_percentages_stops_at_a_failing_wave(
    server: RunningServer, shared_data: Path
) -> None:
    first, rest = drawn(server, shared_data)
    assert all(set(served(client)) == {WAVE_0} for _, client in first)
    failed = macos_report()
    failed["StatusItems"]["softwareupdate"] = {
        "install-state": "failed",
        "pending-version": {"os-version": "26.3.1 (a)", "build-version": BUILD},
        "failure-reason": {"reason": "download failed", "count": 1},
    }
    assert first[0][1].put("/v1/ddm/status", json=failed).status_code == 200
    assert server.reader.get(ROLLOUT).json()["state"] == "halted"
    assert all(served(client) == {} for _, client in first)  # the halted wave's is taken back
    server.clock.advance(hours=2)
    assert server.service.rollouts.tick() == 0
    assert all(served(client) == {} for _, client in rest)  # the next wave never gets one


def test_an_apple_plan_stops_at_a_failing_wave(server: RunningServer, shared_data: Path) -> None:
    canary, rest = apple_fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=APPLE_PLAN).status_code == 201
    assert set(served(canary)) == {WAVE_0}
    assert canary.put("/v1/ddm/status", json=failed_report("download failed")).status_code == 200
    server.clock.advance(hours=2)
    assert server.service.rollouts.tick() == 0  # halted as the failure was stored
    body = server.reader.get(ROLLOUT).json()
    assert body["state"] == "halted"
    assert "1 install-failed" in body["halted_because"]
    assert served(canary) == {}  # the halted wave's enforcement is taken back
    assert served(rest) == {}  # and the next wave never gets one
    assert server.service.rollouts.tick() == 0
    assert served(rest) == {}


def test_decision_passes_asked_for_during_one_run_once_more_after_it() -> None:
    """A halt on a status report asks for a decision pass in the background: a burst of
    halts costs the running pass and one more, never a queue; a failed pass is logged and
    the next request runs again."""
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def work() -> None:
        runs.append(len(runs))
        started.set()
        release.wait(10)
        if len(runs) == 2:
            raise RuntimeError("database went away")

    passes = _Coalesced(work, "test pass")
    passes.request()
    assert started.wait(10)
    for _ in range(5):
        passes.request()
    release.set()
    passes.wait(10)
    assert runs == [0, 1]
    passes.request()
    passes.wait(10)
    assert runs == [0, 1, 2]
