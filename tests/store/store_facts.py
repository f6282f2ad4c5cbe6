"""What the store conformance tests share: the instants, a status report, enrolled devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.errors import BsiError
from bsi.store.protocols import DeviceStore
from bsi.store.store import DecisionCounts, DecisionGroup, NewEnrollment, StatusWrite

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
OFFERED = Decision(Outcome.INSTALL, Reason.OFFERED, "offer")


def report(
    build: str = "25D2128", supplemental: str = "", platform: str = "macOS"
) -> dict[str, object]:
    return {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "family": platform,
                    "version": "26.3.1",
                    "build-version": build,
                    "supplemental": {"build-version": supplemental, "extra-version": ""},
                },
                "model": {"identifier": "Mac14,2"},
            },
            "softwareupdate": {"device-id": "J413AP"},
            "vendor": {"custom-item": 7},
        },
        "Errors": [],
    }


def save(
    devices: DeviceStore, device_id: str, body: dict[str, object], when: datetime
) -> DeviceState:
    """Store one report as the status writer would, with nothing racing it."""
    stored = devices.stored_status(device_id)
    state = merge_status(stored.state, parse_status_report(body))
    if stored.holds(state, OFFERED):
        return state
    (result,) = devices.write_device_states(
        [StatusWrite(device_id, stored.version, stored.state, state, OFFERED)], when
    )
    if isinstance(result, BsiError):
        raise result
    assert result is not None, "nothing else writes here"
    return result


def enrolled(devices: DeviceStore, *device_ids: str) -> tuple[str, ...]:
    """Devices known to bsi (as NanoMDM's webhook or an admin import makes them)."""
    devices.register_enrollments([NewEnrollment(d) for d in device_ids], NOW)
    return device_ids


def counted(engine: Engine) -> DecisionCounts:
    """Live devices per decision group and live hosts' containers, counted from their
    rows (as compliance did before the database kept counts): the reference."""
    found = DecisionCounts()
    with engine.connect() as connection:
        for *key, n in connection.execute(
            text(
                "SELECT platform, product_version, decision_supplement_build, decision_outcome, "
                "decision_reason, supplemental_build, count(*) FROM devices "
                "WHERE decommissioned_at IS NULL GROUP BY 1, 2, 3, 4, 5, 6"
            )
        ):
            found.by_group[DecisionGroup(*key)] = n
        for platform, *key, n in connection.execute(
            text(
                "SELECT d.platform, c.supplement_build, c.outcome, c.reason, c.installed_build, "
                "sum(c.count) FROM container_decisions AS c JOIN devices AS d "
                "ON d.id = c.device_id WHERE d.decommissioned_at IS NULL GROUP BY 1, 2, 3, 4, 5"
            )
        ):
            found.containers[DecisionGroup(platform, None, *key)] = n
    return found
