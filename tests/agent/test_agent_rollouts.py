"""Rollouts end to end with the real agent and the real server: the agent learns its gate
and window from the catalogue and defers as the server does; a failing letter halts its
rollout in the first wave; an abort takes devices back to their last good letter."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_agent_end_to_end import (  # the world: a published 12A100a, a server, a device
    HEALTHY,
    World,
    enrolled,
    fake_battery,
    publish_letter,
    reported_decision,
    snapshot,
)

from bsi.domain.status import nest_status_items
from cryptex_support import PATCHED_FILES

LETTER_B = {**PATCHED_FILES, "usr/lib/libnew.so": b"letter b\n"}
FAILS = ["sh", "-c", "exit 3"]
TICK = pytest.mark.server_settings(rollout_tick_seconds=0.2)


def group_token(world: World, group: str) -> str:
    assert world.admin.post("/v1/admin/groups", json={"name": group}).status_code == 201
    response = world.admin.post("/v1/admin/enrollment-tokens", json={"group": group})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def rollout(world: World, build: str) -> dict[str, Any]:
    response = world.admin.get(f"/v1/admin/supplements/debian/{build}/rollout")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def until(world: World, build: str, done: Any, seconds: float = 20) -> dict[str, Any]:
    """The rollout once ``done(rollout)`` holds (the server steps it every 0.2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        body = rollout(world, build)
        if done(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def device(world: World, device_id: str) -> dict[str, Any]:
    body: dict[str, Any] = world.admin.get(f"/v1/admin/devices/{device_id}").json()
    return body


def publish_b(world: World, tmp_path: Path, health_check: list[str]) -> None:
    publish_letter(tmp_path, "b", LETTER_B, health_check, world.relaunch)
    synced = world.admin.post("/v1/admin/catalog/sync-repository")
    assert synced.status_code == 200, synced.text


def canary_plan(soak_hours: float = 1, **extra: Any) -> dict[str, Any]:
    """The canary group first; the rest after ``soak_hours``."""
    return {
        "waves": [
            {"name": "canary", "percent": 50, "groups": ["canary"], "soak_hours": soak_hours},
            {"name": "rest", "percent": 100, "soak_hours": 0},
        ],
        "halt": {"max_failures": 1},
        **extra,
    }


@TICK
def test_the_agent_waits_for_its_wave_and_installs_once_it_opens(
    world: World, tmp_path: Path
) -> None:
    # The device reports once (held back by its battery), so the rollout knows it.
    fake_battery(world.root, 5)
    device_id = enrolled(world, tmp_path)
    assert world.agent.once().steps == ()
    for supply in ("AC", "BAT0"):
        for entry in (world.root / "sys/class/power_supply" / supply).iterdir():
            entry.unlink()
        (world.root / "sys/class/power_supply" / supply).rmdir()
    # A canary device (its report made from this one's) must install before the rest.
    canary_client = httpx.Client(base_url=world.server_url)
    enrolled_canary = canary_client.post("/v1/enroll", json={"token": group_token(world, "canary")})
    canary_id, credential = (
        enrolled_canary.json()["device_id"],
        enrolled_canary.json()["credential"],
    )
    canary_client.headers["Authorization"] = f"Bearer {credential}"
    items = {
        k: v
        for k, v in device(world, device_id)["status_items"].items()
        if not k.startswith(("bsi.", "power."))
    }
    report = {"StatusItems": nest_status_items(items), "Errors": [], "FullReport": True}
    assert canary_client.put("/v1/ddm/status", json=report).status_code == 200

    plan = canary_plan(soak_hours=0, min_success_rate=1.0)
    started = world.admin.put("/v1/admin/supplements/debian/12A100a/rollout", json=plan)
    assert started.status_code == 201, started.text
    assert [(w["name"], w["devices"]) for w in started.json()["waves"]] == [
        ("canary", 1),
        ("rest", 1),
    ]

    held = world.agent.once()
    assert held.steps == ()
    assert snapshot(world.root) == world.baseline
    decision = reported_decision(world, device_id)
    assert decision["reason"] == "rollout-wave"
    assert "rollout wave 'rest', which is waiting" in decision["message"]
    assert device(world, device_id)["decision_reason"] == "rollout-wave"

    items["device.operating-system.supplemental.build-version"] = "12A100a"
    items["device.operating-system.supplemental.extra-version"] = "(a)"
    installed = {"StatusItems": nest_status_items(items), "Errors": [], "FullReport": True}
    assert canary_client.put("/v1/ddm/status", json=installed).status_code == 200
    canary_client.close()
    until(world, "12A100a", lambda r: r["state"] == "completed" or r["current_wave"] == "rest")

    report_after = world.agent.once()
    assert report_after.failure is None, report_after.failure
    assert report_after.active == "12A100a"
    until(world, "12A100a", lambda r: r["state"] == "completed")
    events = world.admin.get("/v1/admin/events", params={"supplement": "12A100a"}).json()
    kinds = [e["kind"] for e in events["events"]]
    assert kinds[0] == "rollout-started"
    assert "wave-advanced" in kinds
    assert kinds[-1] == "rollout-completed"
    assert canary_id != device_id


@TICK
def test_a_failing_letter_halts_its_rollout_in_the_first_wave(world: World, tmp_path: Path) -> None:
    anchor = tmp_path / "repo" / "metadata" / "1.root.json"
    device_id = world.agent.enroll(world.server_url, group_token(world, "canary"), anchor)
    assert world.agent.once().active == "12A100a"
    plan = world.admin.put("/v1/admin/rollout-plans/debian", json=canary_plan())
    assert plan.status_code == 200, plan.text

    publish_b(world, tmp_path, FAILS)
    assert rollout(world, "12A100b")["state"] == "running"
    report = world.agent.once()
    assert report.failure is not None
    assert "failed its health check" in report.failure
    assert report.active == "12A100a"  # back on the last good letter

    halted = until(world, "12A100b", lambda r: r["state"] == "halted")
    assert f"1 health-check-rollback ({device_id})" in halted["halted_because"]
    assert [w["state"] for w in halted["waves"]] == ["halted", "waiting"]
    (failure,) = halted["failures"]
    assert failure["device"] == device_id
    assert "exit" in failure["detail"] or "status 3" in failure["detail"]
    events = world.admin.get("/v1/admin/events", params={"kind": "rollout-halted"}).json()
    assert events["events"][0]["actor"] == "automatic"


@TICK
def test_abort_returns_devices_to_the_last_good_letter(world: World, tmp_path: Path) -> None:
    anchor = tmp_path / "repo" / "metadata" / "1.root.json"
    device_id = world.agent.enroll(world.server_url, group_token(world, "canary"), anchor)
    assert world.agent.once().active == "12A100a"
    on_a = snapshot(world.root)
    assert world.admin.put("/v1/admin/rollout-plans/debian", json=canary_plan()).is_success
    publish_b(world, tmp_path, HEALTHY)
    assert world.agent.once().active == "12A100b"
    assert (world.root / "usr/lib/libnew.so").read_bytes() == b"letter b\n"

    aborted = world.admin.post("/v1/admin/supplements/debian/12A100b/rollout/abort")
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["state"] == "aborted"
    back = world.agent.once()
    assert back.failure is None, back.failure
    assert back.active == "12A100a"
    assert snapshot(world.root) == on_a
    assert device(world, device_id)["supplemental_build"] == "12A100a"
    kinds = {
        e["kind"]: e
        for e in world.admin.get("/v1/admin/events", params={"device": device_id}).json()["events"]
    }
    assert kinds["device-withdrawn"]["supplement"] == "12A100b"


def test_a_maintenance_window_defers_activation_with_its_reason(
    world: World, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    start, end = now + timedelta(hours=3), now + timedelta(hours=4)
    window = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": f"{start:%H:%M}",
        "end": f"{end:%H:%M}",
        "timezone": "UTC",
    }
    path = "/v1/admin/groups/default/maintenance-window"
    assert world.admin.put(path, json=window).status_code == 200
    device_id = enrolled(world, tmp_path)
    assert world.agent.once().steps == ()
    assert snapshot(world.root) == world.baseline
    decision = reported_decision(world, device_id)
    assert decision["reason"] == "maintenance-window"
    assert f"opens at {start:%Y-%m-%d %H:%M} UTC" in decision["message"]

    assert world.admin.delete(path).status_code == 204
    assert world.agent.once().active == "12A100a"
