"""Catalogue fidelity on Apple's real feeds: device families, order-free merging, withdrawal.

GDMF files tvOS, watchOS and HomePod releases under its ``iOS`` key and SOFA's
iOS feed inherits the mix (its iOS 26.6 lists the Apple TV build 23L773 and the
Watch build 23U67 among its builds). Merging must not depend on the order of
``--catalog``, and a supplement Apple withdrew stays withdrawn whatever is
merged later.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bsi.domain.catalog import Catalog, SupplementState, classify, device_family
from bsi.domain.eligibility import Outcome, Reason, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import Build, ProductVersion
from bsi.feeds import load_catalog

FEEDS = ("gdmf_cached.json", "macos_data_feed.json", "ios_data_feed.json", "bsi_history.ndjson")


@pytest.fixture(scope="module")
def feeds() -> dict[str, Catalog]:
    from realdata import shared_data_path

    sofa = shared_data_path("sofa")
    return {name: load_catalog(sofa / name) for name in FEEDS}


def merge(catalogs: list[Catalog]) -> Catalog:
    return functools.reduce(Catalog.merged, catalogs)


def test_gdmf_files_each_build_under_its_device_family(feeds: dict[str, Catalog]) -> None:
    by_build = {str(r.build): r.platform for r in feeds["gdmf_cached.json"].releases}
    assert by_build["23L773"] == "tvOS"
    assert by_build["23U67"] == "watchOS"
    assert by_build["23G83"] == "iOS"
    assert device_family("AudioAccessory6,1") == "audioOS"
    assert device_family("RealityDevice14,1") == "visionOS"
    assert device_family("J413AP") is None


def test_a_mixed_device_list_keeps_only_the_ios_family(feeds: dict[str, Catalog]) -> None:
    iphone = next(r for r in feeds["gdmf_cached.json"].releases if r.platform == "iOS")
    mixed = replace(iphone, supported_devices=iphone.supported_devices | {"AppleTV14,1"})
    assert classify(mixed).supported_devices == iphone.supported_devices


def test_the_real_feeds_merged_in_every_order_give_one_catalogue(
    feeds: dict[str, Catalog],
) -> None:
    orders = list(itertools.permutations(FEEDS))
    first = merge([feeds[name] for name in orders[0]])
    for order in orders[1:]:
        assert merge([feeds[name] for name in order]) == first, order
    # and no iOS release keeps another family's build
    foreign = {r.build for r in first.releases if r.platform in ("tvOS", "watchOS", "audioOS")}
    assert foreign
    assert not [r for r in first.releases if r.platform == "iOS" and r.build in foreign]


@pytest.mark.parametrize("order", [FEEDS[:3], tuple(reversed(FEEDS[:3]))])
def test_an_iphone_is_never_sent_to_an_apple_tv_build(
    feeds: dict[str, Catalog], order: tuple[str, ...]
) -> None:
    catalog = merge([feeds[name] for name in order])
    iphone = DeviceFacts(
        platform="iOS",
        product_version=ProductVersion(26, 3, 1),
        build=Build.parse("23D8133"),
        software_update_device_id="iPhone14,2",
    )
    decision = decide(iphone, catalog, SoftwareUpdatePolicy(), datetime(2026, 8, 1, tzinfo=UTC))
    assert (decision.outcome, decision.reason) == (Outcome.BLOCKED, Reason.NOT_LATEST_MINOR)
    assert decision.install_first == "iOS 26.6 (23G71)"


def _withdrawn(catalog: Catalog, build: str) -> SupplementState:
    (found,) = [s for s in catalog.supplements if str(s.build) == build]
    return found.published_state


def test_a_supplement_live_gdmf_stops_listing_is_withdrawn_and_stays_so(
    feeds: dict[str, Catalog],
) -> None:
    gdmf = feeds["gdmf_cached.json"]
    pulled = next(s for s in gdmf.supplements if str(s.build) == "25D771280a")
    later = replace(gdmf, supplements=tuple(s for s in gdmf.supplements if s != pulled))

    catalog = gdmf.merged(later)
    assert _withdrawn(catalog, "25D771280a") is SupplementState.WITHDRAWN
    assert _withdrawn(catalog, "25D771400a") is SupplementState.PUBLISHED

    # History-only sources and feeds that still list it never re-publish it,
    for other in (feeds["bsi_history.ndjson"], feeds["macos_data_feed.json"], gdmf):
        assert _withdrawn(catalog.merged(other), "25D771280a") is SupplementState.WITHDRAWN
        assert _withdrawn(other.merged(catalog), "25D771280a") is SupplementState.WITHDRAWN

    # and a Mac on its prerequisite build is not offered it.
    mac = DeviceFacts(
        platform="macOS",
        product_version=ProductVersion(26, 3, 1),
        build=Build.parse("25D2128"),
        software_update_device_id="J413AP",
    )
    now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    decision = decide(mac, catalog, SoftwareUpdatePolicy(), now)
    assert decision.reason is Reason.SUPPLEMENT_WITHDRAWN


def test_history_may_add_supplements_never_seen_live(feeds: dict[str, Catalog]) -> None:
    """A live listing that never had iOS 26.3.1 (a), then SOFA's history: it is added, live."""
    gdmf = feeds["gdmf_cached.json"]
    seen = replace(gdmf, supplements=tuple(s for s in gdmf.supplements if s.platform != "iOS"))
    merged = seen.merged(feeds["bsi_history.ndjson"])
    added = merged.supplement_by_build("iOS", Build.parse("23D771330a"))
    assert added is not None
    assert added.published_state is SupplementState.PUBLISHED
    assert not added.listed_live


def test_the_first_sofa_only_catalogue_is_not_withdrawn_by_itself(
    shared_data: Path,
) -> None:
    """Only a live listing withdraws: SOFA feeds and history never do."""
    sofa = shared_data / "sofa"
    catalog = load_catalog(sofa / "macos_data_feed.json").merged(
        load_catalog(sofa / "bsi_history.ndjson")
    )
    assert all(s.published_state is SupplementState.PUBLISHED for s in catalog.supplements)
