"""One device state from every inventory form (bsi.domain.inventory), one test per form.

The DDM forms are read from real reports in ``../shared/data/ddm-status-samples``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.eligibility import Outcome, Reason, decide
from bsi.domain.inventory import (
    check_platform_id,
    normalise,
    platform_name,
    reported_spellings,
    resolve,
)
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput, InvalidVersion

NOW = datetime(2026, 3, 20, 12, tzinfo=UTC)
A = Supplement(
    platform="macOS",
    version=SupplementVersion(ProductVersion(26, 3, 1), ExtraVersion("a")),
    build=Build.parse("25D771280a"),
    prerequisite=Prerequisite.of_build(Build.parse("25D2128")),
    posted=date(2026, 3, 17),
)
CATALOG = Catalog(supplements=(A,))


def state_of(path: Path) -> DeviceState:
    return merge_status(None, parse_status_report(json.loads(path.read_text())))


def test_real_first_report_with_only_the_extra_version(shared_data: Path) -> None:
    """kmfddm's first report from 13.3.1 (a): "(a)", no supplemental build."""
    state = state_of(shared_data / "ddm-status-samples" / "macos-13.3.1a-first-extra-only.json")
    facts = state.facts()
    assert (str(facts.build), facts.supplemental_build) == ("22E261", None)
    assert facts.supplemental_extra == ExtraVersion("a")
    # Never "offer (a)" to a device that says it runs (a): below 26.1 it is blocked,
    decision = decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW)
    assert decision.reason is Reason.BELOW_MINIMUM_VERSION
    # and where the catalogue cannot say which (a) it is, it is unknown.
    on_26 = replace(facts, product_version=ProductVersion(26, 3, 1), build=A.prerequisite_build)
    other = Catalog(supplements=(replace(A, version=replace(A.version, extra=ExtraVersion("b"))),))
    assert decide(on_26, other, SoftwareUpdatePolicy(), NOW).reason is Reason.UNKNOWN_BUILD


def test_extra_version_without_build_is_resolved_through_the_catalogue() -> None:
    facts = normalise(platform="macOS", version="26.3.1", build="25D2128", supplemental_extra="(a)")
    resolved = resolve(facts, CATALOG)
    assert resolved.supplemental_build == A.build
    decision = decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW)
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.SUPPLEMENT_INSTALLED)


def test_real_full_report_with_build_and_extra(shared_data: Path) -> None:
    state = state_of(shared_data / "ddm-status-samples" / "zentral-macos-13.3.1a-full.json")
    facts = state.facts()
    assert (str(facts.build), str(facts.supplemental_build)) == ("22E261", "22E772610a")
    assert facts.supplemental_extra == ExtraVersion("a")
    assert facts.model_identifier == "Macmini9,1"


def test_supplemental_build_equal_to_the_base_build_means_none() -> None:
    facts = normalise(
        platform="macOS",
        version="26.3.1",
        build="25D2128",
        supplemental_build="25D2128",
        supplemental_extra="",
    )
    assert (facts.supplemental_build, facts.supplemental_extra) == (None, None)


def test_ddm_report_with_supplemental_equal_to_base_stores_no_supplement() -> None:
    report = {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "family": "macOS",
                    "version": "26.3.1",
                    "build-version": "25D2128",
                    "supplemental": {"build-version": "25D2128", "extra-version": ""},
                }
            }
        }
    }
    state = merge_status(None, parse_status_report(report))
    assert state.supplemental_build is None
    decision = decide(state.facts(), CATALOG, SoftwareUpdatePolicy(), NOW)
    assert decision.outcome is Outcome.INSTALL


@pytest.mark.parametrize("extra", ["(a)", "a", " (a) "])
def test_extra_version_with_or_without_parentheses(extra: str) -> None:
    facts = normalise(
        platform="macOS",
        version="26.3.1",
        build="25D2128",
        supplemental_build="25D771280a",
        supplemental_extra=extra,
    )
    assert facts.supplemental_extra == ExtraVersion("a")


def test_version_string_carrying_the_letter() -> None:
    facts = normalise(
        platform="macOS", version="26.3.1 (a)", build="25D2128", supplemental_build="25D771280a"
    )
    assert (facts.product_version, facts.supplemental_extra) == (
        ProductVersion(26, 3, 1),
        ExtraVersion("a"),
    )
    with pytest.raises(InvalidVersion, match="says \\(a\\) but the extra version is \\(b\\)"):
        normalise(platform="macOS", version="26.3.1 (a)", build="25D2128", supplemental_extra="b")


def test_ddm_version_item_carrying_the_letter_is_read() -> None:
    report = {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "family": "macOS",
                    "version": "26.3.1 (a)",
                    "build-version": "25D2128",
                    "supplemental": {"build-version": "25D771280a"},
                }
            }
        }
    }
    facts = merge_status(None, parse_status_report(report)).facts()
    assert facts.supplemental_extra == ExtraVersion("a")
    assert facts.product_version == ProductVersion(26, 3, 1)


def test_supplemental_build_reported_as_the_build_itself() -> None:
    """sw_vers prints the supplemental build as BuildVersion while (a) is installed."""
    facts = normalise(
        platform="macOS", version="26.3.1", build="25D771280a", supplemental_extra="a"
    )
    resolved = resolve(facts, CATALOG)
    assert (str(resolved.build), str(resolved.supplemental_build)) == ("25D2128", "25D771280a")
    decision = decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW)
    assert decision.reason is Reason.SUPPLEMENT_INSTALLED


@pytest.mark.parametrize(
    ("reported", "platform"),
    [
        ("macOS", "macOS"),
        ("macos", "macOS"),
        ("MACOS", "macOS"),
        ("iPadOS", "iOS"),
        ("ipados", "iOS"),
        ("iOS", "iOS"),
        ("Debian", "debian"),
        ("flatcar", "flatcar"),
    ],
)
def test_platform_names_in_another_case(reported: str, platform: str) -> None:
    assert platform_name(reported) == platform


def test_publishers_platform_ids_must_be_canonical() -> None:
    assert check_platform_id("debian") == "debian"
    assert check_platform_id("macOS") == "macOS"
    with pytest.raises(InvalidInput, match="'Debian' would match no device") as refused:
        check_platform_id("Debian")
    assert "'debian'" in (refused.value.hint or "")
    with pytest.raises(InvalidInput, match="'macos'"):
        check_platform_id("macos")


def test_reported_spellings_invert_platform_name_on_apples_spellings() -> None:
    assert reported_spellings("iOS") == ("iOS", "iPadOS")
    assert reported_spellings("macOS") == ("macOS",)
    assert reported_spellings("debian") == ("debian",)
    for platform in ("iOS", "macOS", "tvOS", "debian"):
        assert {platform_name(p) for p in reported_spellings(platform)} == {platform}
