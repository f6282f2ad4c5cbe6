"""The event history's vocabulary: what changed, who changed it.

Every change of a supplement, a rollout, a wave, a policy (plan, maintenance
window) and every device state transition the server sees in a status
report is one event, kept in the database (``GET /v1/admin/events``) and
sent to the webhooks that asked for its kind. Kinds are wire names: never
rename one.
"""

from __future__ import annotations

from enum import StrEnum

from bsi.domain.rollout import Change

AUTOMATIC = "automatic"
"""The actor of what the server did by itself (a wave advanced, a rollout halted)."""


class EventKind(StrEnum):
    # supplements
    SUPPLEMENT_PAUSED = "supplement-paused"
    SUPPLEMENT_RESUMED = "supplement-resumed"
    SUPPLEMENT_WITHDRAWN = "supplement-withdrawn"
    # rollouts and waves (bsi.domain.rollout.Change)
    ROLLOUT_STARTED = Change.STARTED.value
    WAVE_ADVANCED = Change.WAVE_ADVANCED.value
    ROLLOUT_HALTED = Change.HALTED.value
    ROLLOUT_RESUMED = Change.RESUMED.value
    ROLLOUT_COMPLETED = Change.COMPLETED.value
    ROLLOUT_ABORTED = Change.ABORTED.value
    ENFORCEMENT_DEADLINE_PASSED = "enforcement-deadline-passed"
    # policy
    PLAN_CHANGED = "plan-changed"
    WINDOW_CHANGED = "window-changed"
    WINDOW_REMOVED = "window-removed"
    # devices
    DEVICE_INSTALLED = "device-installed"
    DEVICE_FAILED = "device-failed"
    DEVICE_ROLLED_BACK = "device-rolled-back"
    DEVICE_WITHDRAWN = "device-withdrawn"
    DEVICE_RESTART_PENDING = "device-restart-pending"
    DEVICE_DRIFT = "device-drift"
