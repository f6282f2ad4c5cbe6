"""Fleet summaries: installed / pending / blocked per supplement, exposure per CVE."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime

from bsi.domain.catalog import Catalog, Release, Supplement
from bsi.domain.compliance import (
    FleetGroup,
    Standing,
    assess_fleet,
    cve_json,
    summarize,
    supplement_json,
)
from bsi.domain.eligibility import Outcome, Reason, unknown
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion

NOW = datetime(2026, 3, 20, tzinfo=UTC)
A = Supplement(
    platform="macOS",
    version=SupplementVersion(ProductVersion(26, 3, 1), ExtraVersion("a")),
    build=Build.parse("25D771280a"),
    prerequisite=Prerequisite.of_build(Build.parse("25D2128")),
    supported_devices=frozenset({"J413AP"}),
    cves=("CVE-2026-20643",),
    posted=date(2026, 3, 17),
)
CATALOG = Catalog(
    supplements=(A,),
    releases=(
        Release(
            "macOS",
            ProductVersion(26, 2),
            Build.parse("25C56"),
            supported_devices=frozenset({"J413AP", "J700AP"}),
        ),
    ),
)
BASE = DeviceFacts(
    platform="macOS",
    product_version=ProductVersion(26, 3, 1),
    build=Build.parse("25D2128"),
    software_update_device_id="J413AP",
    architecture="arm64",
)
FLEET = [
    ("has-a", replace(BASE, supplemental_build=A.build)),
    ("needs-a", BASE),
    ("low-battery", replace(BASE, on_battery=True, battery_percent=3.0)),
    ("old-minor", replace(BASE, product_version=ProductVersion(26, 2), build=Build.parse("25C56"))),
    ("unsupported", replace(BASE, software_update_device_id="J700AP")),
    ("too-old", replace(BASE, product_version=ProductVersion(15, 7), build=Build.parse("24G84"))),
]


def test_summary_per_supplement_counts_each_device_once() -> None:
    report = assess_fleet(FLEET, CATALOG, lambda _: SoftwareUpdatePolicy(), NOW)
    (summary,) = report.supplements
    assert summary.supplement == A
    assert summary.installed.devices == ["has-a"]
    assert sorted(summary.pending.devices) == ["low-battery", "needs-a"]
    assert dict(summary.blocked) == {Reason.NOT_LATEST_MINOR: 1, Reason.UNSUPPORTED_DEVICE: 1}
    outcomes = {row.device_id: row.decision.outcome for row in report.devices}
    assert outcomes["too-old"] is Outcome.BLOCKED
    assert outcomes["has-a"] is Outcome.UP_TO_DATE


def test_cve_exposure_lists_devices_lacking_the_fix() -> None:
    report = assess_fleet(FLEET, CATALOG, lambda _: SoftwareUpdatePolicy(), NOW)
    (exposure,) = report.cves
    assert exposure.cve == "CVE-2026-20643"
    assert sorted(exposure.exposed.devices) == [
        "low-battery",
        "needs-a",
        "old-minor",
        "unsupported",
    ]
    assert exposure.supplements == {"macOS 26.3.1 (a)"}


def test_policy_is_asked_per_device() -> None:
    off = SoftwareUpdatePolicy(install_security_update=InstallSecurityUpdate.ALWAYS_OFF)
    report = assess_fleet(
        FLEET,
        CATALOG,
        lambda device: off if device == "needs-a" else SoftwareUpdatePolicy(),
        NOW,
    )
    (summary,) = report.supplements
    assert summary.blocked[Reason.POLICY_ALWAYS_OFF] == 1
    assert "needs-a" not in summary.pending.devices


def test_unknown_and_restart_pending_are_counted_apart_never_fixed() -> None:
    """Hand count for CVE-2026-20643: 4 exposed, 3 unknown, 1 restart pending, 1 fixed."""
    fleet = [
        *FLEET,
        ("ghost-build", replace(BASE, build=Build.parse("25D9999"))),
        ("stray-model", replace(BASE, software_update_device_id="J999AP")),
        ("on-disk", replace(BASE, supplemental_build=A.build, restart_pending=True)),
    ]
    silent = [("silent", unknown(Reason.NOT_REPORTED, "no report yet"))]
    report = assess_fleet(fleet, CATALOG, lambda _: SoftwareUpdatePolicy(), NOW, unplaced=silent)
    (exposure,) = report.cves
    assert sorted(exposure.exposed.devices) == [
        "low-battery",
        "needs-a",
        "old-minor",
        "unsupported",
    ]
    assert sorted(exposure.unknown.devices) == ["ghost-build", "silent", "stray-model"]
    assert exposure.devices(Standing.RESTART_PENDING).devices == ["on-disk"]
    assert exposure.fixed.devices == ["has-a"]
    (summary,) = report.supplements
    assert summary.installed.devices == ["has-a"]
    assert summary.restart_pending.devices == ["on-disk"]
    assert sorted(summary.unknown.devices) == ["ghost-build", "silent", "stray-model"]
    outcomes = {row.device_id: row.decision.outcome for row in report.devices}
    assert outcomes["silent"] is Outcome.UNKNOWN
    assert not any(
        outcomes[d] is Outcome.UP_TO_DATE for d in ("ghost-build", "stray-model", "on-disk")
    )


def test_devices_counted_in_groups_give_the_same_summary_as_one_by_one() -> None:
    """The server counts stored decisions in groups, the offline report device by device:
    one summary, so the same fleet prints the same JSON either way (less the device ids)."""
    fleet = [
        *FLEET,
        ("ghost-build", replace(BASE, build=Build.parse("25D9999"))),
        ("on-disk", replace(BASE, supplemental_build=A.build, restart_pending=True)),
        ("then-needs-a", BASE),
    ]
    silent = [("silent", unknown(Reason.NOT_REPORTED, "no report yet"))]
    report = assess_fleet(fleet, CATALOG, lambda _: SoftwareUpdatePolicy(), NOW, unplaced=silent)
    one_by_one = summarize((FleetGroup.of_device(row) for row in report.devices), CATALOG)
    grouped = Counter(replace(FleetGroup.of_device(row), devices=()) for row in report.devices)
    assert max(grouped.values()) == 2  # needs-a and then-needs-a share a group
    counted = summarize((replace(g, count=n) for g, n in grouped.items()), CATALOG)

    assert [supplement_json(s, NOW) for s in counted.supplements] == [
        supplement_json(s, NOW) for s in one_by_one.supplements
    ]
    assert [cve_json(e) for e in counted.cves] == [cve_json(e) for e in one_by_one.cves]
    (row,) = [cve_json(e, devices=True) for e in one_by_one.cves]
    assert [cve_json(e, devices=True) for e in report.cves] == [row]  # grouped, ids sorted
    assert [s.unknown.devices for s in report.supplements] == [
        s.unknown.devices for s in one_by_one.supplements
    ]
    assert (row["exposed"], row["unknown"], row["restart_pending"], row["fixed"]) == (5, 2, 1, 1)
    assert row["unknown_devices"] == ["ghost-build", "silent"]
    (entry,) = [supplement_json(s, NOW) for s in one_by_one.supplements]
    assert entry["blocked_by_reason"] == {"not-latest-minor": 1, "unsupported-device": 1}
    assert (entry["installed"], entry["pending"], entry["restart_pending"], entry["unknown"]) == (
        1,
        3,
        1,
        2,
    )


def test_an_unknown_device_is_never_counted_installed_even_when_it_reports_a_build() -> None:
    """Fail closed: a device bsi cannot place counts as unknown for the supplement, not as
    having it, whatever supplemental build it names."""
    group = FleetGroup("macOS", None, A, Outcome.UNKNOWN, "status-invalid", None, count=3)
    (summary,) = summarize([group], CATALOG).supplements
    assert (summary.installed.count, summary.unknown.count) == (0, 3)


def test_a_restart_pending_device_is_never_counted_installed_even_without_a_target() -> None:
    """Fail closed: a restart-pending decision that names no supplement (a stored one whose
    supplement build the catalogue no longer lists) still counts apart, never as installed."""
    group = FleetGroup("macOS", None, A, Outcome.RESTART_PENDING, "old-content-running", None)
    (summary,) = summarize([group], CATALOG).supplements
    assert (summary.installed.count, summary.restart_pending.count) == (0, 1)
