"""Package and file prerequisites, ``fixed_in``, and the eligibility rule that reads them.

Versions are ordered by the package managers' own rules (python-debian for
dpkg, rpm-version for rpm); the cases below are the ones those rules exist
for: ``~`` before everything, epochs, security-update revisions.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.eligibility import Outcome, Reason, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import (
    FileDigest,
    Match,
    PackageManager,
    PackageVersion,
    Prerequisite,
    compare_versions,
    dump_base,
    package_items,
    place,
    read_base,
    read_package_items,
)
from bsi.domain.status import DeviceState
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput, InvalidStatusReport

NOW = datetime(2026, 11, 29, tzinfo=UTC)
DPKG = PackageManager.DPKG
BASE = "3.0.19-1~deb12u2"
FIXED = "3.0.20-1~deb12u2"
SHA_A, SHA_B = "a" * 64, "b" * 64


def openssl(letter: str = "a", build: str = "12L1000a", **changes: object) -> Supplement:
    made = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12), ExtraVersion(letter)),
        build=Build.parse(build),
        prerequisite=Prerequisite(
            manager=DPKG, packages=(PackageVersion("libssl3", BASE, "amd64"),)
        ),
        fixed_in=(PackageVersion("libssl3", FIXED),),
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def host(version: str | None = BASE, arch: str = "amd64", **changes: object) -> DeviceFacts:
    packages = () if version is None else (PackageVersion("libssl3", version, arch),)
    made = DeviceFacts(
        platform="debian",
        product_version=ProductVersion(12),
        build=None,
        package_manager=DPKG,
        packages=packages,
    )
    return replace(made, **changes)  # type: ignore[arg-type]


CATALOG = Catalog(supplements=(openssl(),))


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (BASE, FIXED, -1),
        ("3.0.20-1~deb12u2", "3.0.20-1", -1),  # ~ sorts before everything (policy 5.6.12)
        ("1:1.0-1", "2.0-1", 1),  # the epoch wins
        (FIXED, FIXED, 0),
    ],
)
def test_debian_versions_order_by_dpkg_rules(left: str, right: str, expected: int) -> None:
    assert compare_versions(DPKG, left, right) == expected


def test_rpm_versions_order_by_rpmvercmp() -> None:
    rpm = PackageManager.RPM
    assert compare_versions(rpm, "3.0.7-27.el9", "3.0.7-28.el9") == -1
    assert compare_versions(rpm, "1.0~rc1-1", "1.0-1") == -1
    assert compare_versions(rpm, "2:1.0-1", "1:9.9-1") == 1


def test_host_on_the_base_version_is_offered_the_supplement() -> None:
    decision = decide(host(), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.INSTALL, Reason.OFFERED)


def test_host_on_another_version_is_blocked_naming_both_versions() -> None:
    decision = decide(host("3.0.17-1~deb12u1"), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.PREREQUISITE_MISMATCH)
    assert BASE in decision.message
    assert "3.0.17-1~deb12u1" in decision.message
    assert decision.exposed


def test_host_on_another_architecture_is_blocked_naming_both() -> None:
    decision = decide(host(arch="arm64"), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert decision.reason is Reason.PREREQUISITE_MISMATCH
    assert "amd64" in decision.message
    assert "arm64" in decision.message


@pytest.mark.parametrize("version", [FIXED, "3.0.21-1", "1:3.0.0-1"])
def test_host_at_or_past_fixed_in_has_it_folded_in(version: str) -> None:
    decision = decide(host(version), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.INCLUDED_IN_RELEASE)
    assert version in decision.message
    assert "debian 12.0 (a)" in decision.message


def test_fold_in_wins_over_an_installed_supplement_whose_package_moved_on() -> None:
    facts = host(FIXED, supplemental_build=Build.parse("12L1000a"))
    assert decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW).reason is Reason.INCLUDED_IN_RELEASE


def test_host_without_the_package_needs_nothing() -> None:
    decision = decide(host(None), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.NO_SUPPLEMENT)
    assert decision.message == (
        "no supplement published for debian applies to the packages this device runs"
    )


def test_a_package_the_host_was_not_asked_about_is_unknown_not_absent() -> None:
    """A supplement published since the host's last report names a package its agent did
    not look up: its absence from the report says nothing (fail closed)."""
    asked_other = host(None, packages_asked=frozenset({"openssh-server"}))
    decision = decide(asked_other, CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.PREREQUISITE_UNKNOWN)
    assert "not yet said whether libssl3 is installed" in decision.message
    asked = host(None, packages_asked=frozenset({"libssl3", "openssh-server"}))
    decision = decide(asked, CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.NO_SUPPLEMENT)
    installed = host(packages_asked=frozenset())  # reported installed: asked or not
    assert decide(installed, CATALOG, SoftwareUpdatePolicy(), NOW).outcome is Outcome.INSTALL


def test_host_that_reports_no_packages_is_not_up_to_date() -> None:
    decision = decide(host(packages=None), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UNKNOWN, Reason.PREREQUISITE_UNKNOWN)


def test_installed_supplement_is_up_to_date_and_a_later_letter_replaces_it() -> None:
    facts = host(supplemental_build=Build.parse("12L1000a"))
    installed = decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW)
    assert installed.reason is Reason.SUPPLEMENT_INSTALLED
    assert installed.message.endswith("the newest supplement for the packages this device runs")
    later = Catalog(supplements=(openssl(), openssl("b", "12L1000b")))
    decision = decide(facts, later, SoftwareUpdatePolicy(), NOW)
    assert decision.outcome is Outcome.INSTALL
    assert decision.supplement is not None
    assert str(decision.supplement.build) == "12L1000b"


def test_rpm_host_is_not_placed_on_a_dpkg_prerequisite() -> None:
    facts = host(package_manager=PackageManager.RPM)
    assert decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW).reason is Reason.NO_SUPPLEMENT


def test_file_digest_prerequisite() -> None:
    prerequisite = Prerequisite(files=(FileDigest("usr/sbin/app", SHA_A),))
    placed = {
        digest: place(prerequisite, build=None, manager=None, packages=None, files=digests).match
        for digest, digests in (
            ("same", {"usr/sbin/app": SHA_A}),
            ("other", {"usr/sbin/app": SHA_B}),
            ("missing", {"usr/sbin/app": None}),
            ("unreported", None),
        )
    }
    assert placed == {
        "same": Match.MET,
        "other": Match.NOT_MET,
        "missing": Match.ABSENT,
        "unreported": Match.UNKNOWN,
    }


@pytest.mark.parametrize(
    "prerequisite",
    [
        Prerequisite.of_build(Build.parse("12A100")),
        Prerequisite(manager=DPKG, packages=(PackageVersion("libssl3", BASE, "amd64"),)),
        Prerequisite(files=(FileDigest("usr/lib/libssl.so.3", SHA_A),)),
    ],
)
def test_document_form_round_trips(prerequisite: Prerequisite) -> None:
    fixed = (PackageVersion("libssl3", FIXED),) if prerequisite.packages else ()
    assert read_base(dump_base(prerequisite, fixed)) == (prerequisite, fixed)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "required field 'prerequisite' is missing"),
        (
            {"prerequisite_build": "12A100", "prerequisite": {"build": "12A100"}},
            "names both prerequisite_build and prerequisite",
        ),
        ({"prerequisite": {"packages": []}}, "required field 'manager' is missing"),
        (
            {"prerequisite": {"manager": "apt", "packages": []}},
            "prerequisite.manager: 'apt' is not a package manager",
        ),
        (
            {"prerequisite": {"manager": "dpkg", "packages": [{"package": "libssl3"}]}},
            "prerequisite.packages[0]: required field 'version' is missing",
        ),
        (
            {"prerequisite": {"manager": "dpkg", "packages": [{"pakage": "x", "version": "1"}]}},
            "prerequisite.packages[0]: unknown field 'pakage'",
        ),
        (
            {"prerequisite": {"manager": "dpkg", "packages": [{"package": "x", "version": "a b"}]}},
            "is not a Debian package version",
        ),
        (
            {"prerequisite": {"manager": "dpkg", "packages": [{"package": "x", "version": 3.0}]}},
            "prerequisite.packages[0].version: expected a string",
        ),
        (
            {"prerequisite": {"build": "12A100", "files": [{"path": "a", "sha256": SHA_A}]}},
            "exactly one of build, packages, files or image",
        ),
        (
            {"prerequisite": {"files": [{"path": "a", "sha256": "abc"}]}},
            "'abc' is not a SHA-256",
        ),
        (
            {"prerequisite_build": "12A100", "fixed_in": [{"package": "x", "version": "1"}]},
            "only a supplement with a package prerequisite",
        ),
    ],
)
def test_bad_documents_are_refused_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        read_base(fields)
    assert message in str(refused.value)


def test_package_status_items_round_trip_and_place_a_device_without_build() -> None:
    packages = (PackageVersion("libssl3", BASE, "amd64"),)
    items = package_items(
        DPKG, packages, {"usr/bin/x": None, "usr/bin/y": SHA_A}, frozenset({"libssl3", "zlib1g"})
    )
    assert read_package_items(items) == (DPKG, packages, {"usr/bin/x": None, "usr/bin/y": SHA_A})
    assert items["bsi.agent.packages-asked"] == ["libssl3", "zlib1g"]
    state = DeviceState(
        {
            "device.operating-system.family": "debian",
            "device.operating-system.version": "12",
            **items,
        }
    )
    facts = state.facts()
    assert (facts.build, facts.packages) == (None, packages)
    assert facts.packages_asked == {"libssl3", "zlib1g"}
    assert decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW).outcome is Outcome.INSTALL


def test_a_malformed_package_item_is_a_bad_report() -> None:
    with pytest.raises(InvalidStatusReport, match=r"bsi.agent.packages\[0\]"):
        DeviceState({"bsi.agent.packages": [{"package": "libssl3"}]})
    with pytest.raises(InvalidStatusReport, match=r"bsi.agent.packages-asked\[1\]"):
        DeviceState({"bsi.agent.packages-asked": ["libssl3", 7]})
