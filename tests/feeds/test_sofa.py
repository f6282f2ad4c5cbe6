"""SOFA: its feeds and BSI history add CVEs, supersession and board ids to Apple's catalogue."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bsi.domain.catalog import Catalog, Release, Supersession, Supplement
from bsi.domain.versions import Build, ProductVersion, SupplementVersion
from bsi.errors import FeedError
from bsi.feeds.sofa import parse_sofa, parse_sofa_history

MACOS = "macos_data_feed.json"
IOS = "ios_data_feed.json"
HISTORY = "bsi_history.ndjson"


def supplement(catalog: Catalog, platform: str, build: str) -> Supplement:
    found = catalog.supplement_by_build(platform, Build.parse(build))
    assert found is not None, f"{platform} {build} not in the catalogue"
    return found


def releases_of(catalog: Catalog, version: str) -> list[Release]:
    return [r for r in catalog.releases if r.version == ProductVersion.parse(version)]


# -- v2 feeds: supplements ---------------------------------------------------


def test_macos_supplements_carry_cves_and_supersession(macos_feed: Any) -> None:
    catalog = parse_sofa(macos_feed, source=MACOS)

    universal = supplement(catalog, "macOS", "25D771280a")
    assert universal.version == SupplementVersion.parse("26.3.1 (a)")
    assert universal.prerequisite_build == Build.parse("25D2128")
    assert "J413AP" in universal.supported_devices
    assert universal.cves == ("CVE-2026-20643",)
    assert universal.security_info == "https://support.apple.com/en-us/126604"
    assert universal.posted == date(2026, 3, 17)
    assert universal.superseded_by == Supersession(
        version=ProductVersion.parse("26.4"), build=None, released=date(2026, 3, 24)
    )

    neo = supplement(catalog, "macOS", "25D771400a")
    assert neo.version == SupplementVersion.parse("26.3.2 (a)")
    assert neo.prerequisite_build == Build.parse("25D2140")
    assert neo.supported_devices == frozenset({"J700AP"})
    assert neo.cves == ("CVE-2026-20643",)


def test_ios_supplement_is_superseded_by_a_known_build(ios_feed: Any) -> None:
    catalog = parse_sofa(ios_feed, source=IOS)

    (ios,) = catalog.supplements
    assert ios.platform == "iOS"
    assert ios.version == SupplementVersion.parse("26.3.1 (a)")
    assert ios.prerequisite_build == Build.parse("23D8133")
    assert ios.superseded_by == Supersession(
        version=ProductVersion.parse("26.5"),
        build=Build.parse("23T6570"),
        released=date(2026, 5, 11),
    )
    # SOFA's iOS entry lists neither CVEs nor SecurityInfo in this snapshot.
    assert ios.cves == ()
    assert ios.security_info is None


# -- v2 feeds: releases and devices -----------------------------------------


def test_a_release_sofa_knows_no_build_for_keeps_the_build_unknown(macos_feed: Any) -> None:
    catalog = parse_sofa(macos_feed, source=MACOS)

    (tahoe_26_4,) = releases_of(catalog, "26.4")
    assert tahoe_26_4.build is None
    assert tahoe_26_4.posted == date(2026, 3, 24)
    assert len(tahoe_26_4.cves) == 86


def test_a_release_with_a_build(macos_feed: Any) -> None:
    catalog = parse_sofa(macos_feed, source=MACOS)

    (tahoe,) = releases_of(catalog, "26.6.1")
    assert tahoe.build == Build.parse("25G76")
    assert tahoe.posted == date(2026, 8, 6)
    assert tahoe.expires == date(2026, 11, 15)


def test_supported_devices_missing_from_a_release_come_from_latest(macos_feed: Any) -> None:
    catalog = parse_sofa(macos_feed, source=MACOS)

    (latest,) = releases_of(catalog, "26.6.2")
    assert {"J413AP", "J700AP"} <= latest.supported_devices
    (older,) = releases_of(catalog, "26.6.1")
    assert older.supported_devices == frozenset()


def test_every_build_of_a_release_is_a_release(ios_feed: Any) -> None:
    catalog = parse_sofa(ios_feed, source=IOS)

    builds = [r.build for r in releases_of(catalog, "26.6")]
    assert builds == [
        Build.parse(b) for b in ("23U67", "23U6067", "23L773", "23L6773", "23G71", "23G6071")
    ]
    assert len({r.cves for r in releases_of(catalog, "26.6")}) == 1


def test_a_release_sofa_lists_twice_is_one_release(ios_feed: Any) -> None:
    catalog = parse_sofa(ios_feed, source=IOS)

    assert len(releases_of(catalog, "18.7.7")) == 1


def test_board_ids_are_indexed_by_model_identifier(macos_feed: Any, ios_feed: Any) -> None:
    macs = parse_sofa(macos_feed, source=MACOS)

    assert "J413AP" in macs.device_ids_by_model["Mac14,2"]
    assert macs.known_device_ids("Mac14,2", None) == ["Mac14,2", "J413AP"]
    # iOS devices are listed by model identifier already; there is nothing to map.
    assert parse_sofa(ios_feed, source=IOS).device_ids_by_model == {}


# -- v2 feeds: platform -------------------------------------------------------


def test_platform_is_told_from_content(macos_feed: Any, ios_feed: Any) -> None:
    assert parse_sofa(macos_feed, source=MACOS).platforms() == frozenset({"macOS"})
    assert parse_sofa(ios_feed, source=IOS).platforms() == frozenset({"iOS"})


def test_a_feed_that_does_not_tell_its_platform_needs_it_named(ios_feed: Any) -> None:
    anonymous = copy.deepcopy(ios_feed)
    for os_version in anonymous["OSVersions"]:
        del os_version["Latest"]["ProductName"]

    with pytest.raises(FeedError, match="pass the platform"):
        parse_sofa(anonymous, source=IOS)
    assert parse_sofa(anonymous, source=IOS, platform="iOS") == parse_sofa(ios_feed, source=IOS)


def test_an_explicit_platform_wins(ios_feed: Any) -> None:
    catalog = parse_sofa(ios_feed, source=IOS, platform="iPadOS")

    assert catalog.platforms() == frozenset({"iPadOS"})


# -- v2 feeds: strictness -----------------------------------------------------


def test_unknown_fields_are_ignored(macos_feed: Any) -> None:
    extended = copy.deepcopy(macos_feed)
    extended["SomethingNew"] = [1, 2, 3]
    extended["BackgroundSecurityImprovements"]["26"][0]["Tomorrow"] = {"x": None}
    extended["OSVersions"][0]["SecurityReleases"][0]["NewCount"] = 7

    assert parse_sofa(extended, source=MACOS) == parse_sofa(macos_feed, source=MACOS)


@pytest.mark.parametrize(
    ("edit", "path", "expected"),
    [
        (
            lambda f: f["BackgroundSecurityImprovements"]["26"][1].update(PrerequisiteBuild=""),
            "BackgroundSecurityImprovements.26[1].PrerequisiteBuild",
            "'' is not a build",
        ),
        (
            lambda f: f["BackgroundSecurityImprovements"]["26"][0].pop("Build"),
            "BackgroundSecurityImprovements.26[0].Build",
            "required field is missing",
        ),
        (
            lambda f: f["BackgroundSecurityImprovements"]["26"][0]["SupersededBy"].update(
                ReleaseDate="next Tuesday"
            ),
            "BackgroundSecurityImprovements.26[0].SupersededBy.ReleaseDate",
            "'next Tuesday' is not a date",
        ),
        (
            lambda f: f["BackgroundSecurityImprovements"]["26"][0].update(CVEs="CVE-2026-20643"),
            "BackgroundSecurityImprovements.26[0].CVEs",
            "expected a list, found 'CVE-2026-20643'",
        ),
        (
            lambda f: f["OSVersions"][0]["SecurityReleases"][2].update(AllBuilds=["25G72", ""]),
            "OSVersions[0].SecurityReleases[2].AllBuilds[1]",
            "'' is not a build",
        ),
        (
            lambda f: f["OSVersions"][1]["SecurityReleases"][0].update(ProductVersion=15.7),
            "OSVersions[1].SecurityReleases[0].ProductVersion",
            "expected a string, found 15.7",
        ),
        (lambda f: f.pop("OSVersions"), "OSVersions", "required field is missing"),
        (lambda f: f.update(Devices=["J413AP"]), "Devices", "expected an object"),
    ],
)
def test_a_broken_field_refuses_the_whole_feed(
    macos_feed: Any, edit: Any, path: str, expected: str
) -> None:
    broken = copy.deepcopy(macos_feed)
    edit(broken)

    with pytest.raises(FeedError) as refused:
        parse_sofa(broken, source=MACOS)

    assert str(refused.value).startswith(f"{MACOS}: {path}: ")
    assert expected in str(refused.value)


def test_a_feed_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(FeedError, match=r"top level: expected an object, found \[\]"):
        parse_sofa([], source=MACOS)


# -- BSI history ----------------------------------------------------------------


@pytest.fixture
def history(sofa_dir: Path) -> str:
    return (sofa_dir / HISTORY).read_text()


def test_history_has_the_supplements_and_their_prerequisite_releases(history: str) -> None:
    catalog = parse_sofa_history(history, source=HISTORY)

    universal = supplement(catalog, "macOS", "25D771280a")
    assert universal.version == SupplementVersion.parse("26.3.1 (a)")
    assert universal.prerequisite_build == Build.parse("25D2128")
    assert supplement(catalog, "iOS", "23D771330a").prerequisite_build == Build.parse("23D8133")
    # GDMF has dropped the prerequisite release; SOFA's feed lists it without a build.
    prerequisite = [r for r in catalog.releases if r.build == Build.parse("25D2128")]
    assert [r.version for r in prerequisite] == [ProductVersion.parse("26.3.1")]
    assert catalog.device_ids_by_model["Mac17,5"] == frozenset({"J700AP"})


def test_history_joins_the_device_groups_of_one_build(history: str) -> None:
    catalog = parse_sofa_history(history, source=HISTORY)

    (split,) = [r for r in catalog.releases if r.build == Build.parse("22H6352")]
    assert len(split.supported_devices) == 88


def test_a_broken_history_line_is_refused_with_its_number(history: str) -> None:
    lines = history.splitlines()
    row = json.loads(lines[2])
    row["prerequisite_build"] = "23D 8133"
    lines[2] = json.dumps(row)

    with pytest.raises(FeedError, match=r"line 3\.prerequisite_build: '23D 8133' is not a build"):
        parse_sofa_history("\n".join(lines), source=HISTORY)
    with pytest.raises(FeedError, match=r"line 2: not JSON"):
        parse_sofa_history(lines[0] + "\n{oops\n", source=HISTORY)
