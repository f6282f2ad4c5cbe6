"""The eligibility rules on Apple's real BSI catalogue, as GDMF and SOFA publish it.

Apple posted the first Background Security Improvements on 2026-03-17; on
2026-03-24 macOS 26.4 folded them in. The clock is a parameter, so each case
says which moment it decides at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsi.domain.catalog import Catalog
from bsi.domain.eligibility import Decision, Outcome, Reason, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import Build, ProductVersion
from bsi.feeds import load_catalog, load_catalogs

WEEK_OF_POSTING = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
FEED_DATE = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["gdmf", "sofa", "merged"])
def catalog(request: pytest.FixtureRequest, shared_data: Path) -> Catalog:
    sofa = shared_data / "sofa"
    locations = {
        "gdmf": [sofa / "gdmf_cached.json"],
        "sofa": [sofa / "macos_data_feed.json", sofa / "ios_data_feed.json"],
        "merged": [
            sofa / "gdmf_cached.json",
            sofa / "macos_data_feed.json",
            sofa / "ios_data_feed.json",
        ],
    }[request.param]
    return load_catalogs(locations)


@pytest.fixture
def sofa_catalog(shared_data: Path) -> Catalog:
    sofa = shared_data / "sofa"
    return load_catalogs([sofa / "macos_data_feed.json", sofa / "ios_data_feed.json"])


def device(
    platform: str, version: str, build: str, device_id: str, model: str | None = None
) -> DeviceFacts:
    return DeviceFacts(
        platform=platform,
        product_version=ProductVersion.parse(version),
        build=Build.parse(build),
        software_update_device_id=device_id,
        model_identifier=model,
    )


def decide_at(facts: DeviceFacts, catalog: Catalog, now: datetime) -> Decision:
    return decide(facts, catalog, SoftwareUpdatePolicy(), now)


def assert_gets(decision: Decision, version: str, build: str) -> None:
    assert decision.outcome is Outcome.INSTALL, decision.message
    assert decision.supplement is not None
    assert (str(decision.supplement.version), str(decision.supplement.build)) == (version, build)


def test_mac_j413ap_on_25d2128_gets_26_3_1_a(catalog: Catalog) -> None:
    decision = decide_at(device("macOS", "26.3.1", "25D2128", "J413AP"), catalog, WEEK_OF_POSTING)
    assert_gets(decision, "26.3.1 (a)", "25D771280a")


def test_macbook_neo_j700ap_on_25d2140_gets_26_3_2_a(catalog: Catalog) -> None:
    decision = decide_at(device("macOS", "26.3.2", "25D2140", "J700AP"), catalog, WEEK_OF_POSTING)
    assert_gets(decision, "26.3.2 (a)", "25D771400a")


def test_iphone_on_23d8133_gets_23d771330a(catalog: Catalog) -> None:
    decision = decide_at(device("iOS", "26.3.1", "23D8133", "iPhone14,2"), catalog, WEEK_OF_POSTING)
    assert_gets(decision, "26.3.1 (a)", "23D771330a")


def test_macbook_neo_is_not_offered_the_other_macs_supplement(catalog: Catalog) -> None:
    decision = decide_at(device("macOS", "26.3.1", "25D2128", "J700AP"), catalog, WEEK_OF_POSTING)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.UNSUPPORTED_DEVICE)


def test_mac_on_an_older_minor_is_blocked_with_the_release_to_install_first(
    catalog: Catalog,
) -> None:
    decision = decide_at(device("macOS", "26.2", "25C56", "J413AP"), catalog, WEEK_OF_POSTING)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.NOT_LATEST_MINOR)
    assert decision.install_first == "macOS 26.3.1 (25D2128)"


def test_mac_on_the_minor_named_in_superseded_by_needs_nothing(sofa_catalog: Catalog) -> None:
    decision = decide_at(
        device("macOS", "26.4", "25E246", "J413AP"), sofa_catalog, datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert (decision.outcome, decision.reason) == (Outcome.UP_TO_DATE, Reason.INCLUDED_IN_RELEASE)
    assert not decision.exposed


def test_iphone_on_the_superseding_26_5_needs_nothing(sofa_catalog: Catalog) -> None:
    decision = decide_at(device("iOS", "26.5", "23F77", "iPhone14,2"), sofa_catalog, FEED_DATE)
    assert decision.outcome is Outcome.UP_TO_DATE


def test_after_supersession_a_mac_left_on_26_3_1_must_update_to_the_latest(
    sofa_catalog: Catalog,
) -> None:
    decision = decide_at(device("macOS", "26.3.1", "25D2128", "J413AP"), sofa_catalog, FEED_DATE)
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.NOT_LATEST_MINOR)
    assert decision.install_first == "macOS 26.6.2 (25G83)"
    assert decision.exposed
    assert decision.supplement is not None
    assert "CVE-2026-20643" in decision.supplement.cves


def test_a_mac_reporting_only_its_model_is_matched_through_sofa_board_ids(
    sofa_catalog: Catalog,
) -> None:
    facts = DeviceFacts(
        platform="macOS",
        product_version=ProductVersion(26, 3, 1),
        build=Build.parse("25D2128"),
        model_identifier="Mac14,2",
    )
    assert_gets(decide_at(facts, sofa_catalog, WEEK_OF_POSTING), "26.3.1 (a)", "25D771280a")


def test_bsi_history_knows_the_prerequisite_releases(shared_data: Path) -> None:
    history = load_catalog(shared_data / "sofa" / "bsi_history.ndjson")
    decision = decide_at(device("macOS", "26.3.1", "25D2128", "J413AP"), history, WEEK_OF_POSTING)
    assert_gets(decision, "26.3.1 (a)", "25D771280a")
