"""What the store conformance tests share: the instants, a status report, enrolled devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.store.protocols import DeviceStore
from bsi.store.store import NewEnrollment

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
OFFERED = Decision(Outcome.INSTALL, Reason.OFFERED, "offer")


def report(build: str = "25D2128", supplemental: str = "") -> dict[str, object]:
    return {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "family": "macOS",
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
    parsed = parse_status_report(body)
    return devices.save_device_state(
        device_id, lambda previous: (merge_status(previous, parsed), OFFERED), when
    )


def enrolled(devices: DeviceStore, *device_ids: str) -> tuple[str, ...]:
    """Devices known to bsi (as NanoMDM's webhook or an admin import makes them)."""
    devices.register_enrollments([NewEnrollment(d) for d in device_ids], NOW)
    return device_ids
