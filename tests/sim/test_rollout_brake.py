"""The brake end to end: the real server (``bsi serve``), light devices running the agent's
cycle, a supplement that fails its health check on some of them, and a rollout plan.

The rollout tick is an hour here, so nothing but the failing report itself can halt the
rollout: the halt is decided as the report is stored, and no device outside the first
wave ever activates the supplement.
"""

from __future__ import annotations

from pathlib import Path

from bsi.sim.engine import SimOptions, SimResult
from bsi.sim.fleet import Kind
from bsi.sim.local import Workspace, local_server, run_async, simulate

DEVICES = 30
ELIGIBLE_ONLY = {Kind.ELIGIBLE_ARM64: 1.0}
PLAN = {
    "waves": [
        {"name": "first", "percent": 20, "soak_hours": 0},
        {"name": "rest", "percent": 100, "soak_hours": 0},
    ],
    "halt": {"max_failures": 1},
}


def run(tmp_path: Path, unhealthy: float) -> SimResult:
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    options = SimOptions(
        devices=DEVICES,
        mix=ELIGIBLE_ONLY,
        offline_seconds=None,
        timeout=60,
        plan=PLAN,
        unhealthy=unhealthy,
    )
    with local_server(workspace, options=("--rollout-tick-seconds", "3600")) as server:
        return run_async(
            lambda: simulate(
                server.url,
                server.admin_key(),
                options,
                workspace.devices_dir,
                publisher=workspace.publisher,
            )
        )


def test_a_bad_supplement_halts_in_the_first_wave_as_its_failure_is_reported(
    tmp_path: Path,
) -> None:
    result = run(tmp_path, unhealthy=1.0)
    assert result.completed
    rollout = result.rollout
    assert rollout is not None
    assert rollout["state"] == "halted"
    first, rest = rollout["waves"]
    assert (first["devices"], rest["devices"]) == (6, 24)
    assert first["state"] == "halted"
    assert first["failed"] >= 1
    assert (rest["installed"], rest["failed"]) == (0, 0)
    assert "health-check-rollback" in rollout["halted_because"]
    activated = {e["device"] for e in result.activations}
    assert 1 <= len(activated) <= first["devices"]
