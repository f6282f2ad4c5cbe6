"""GDMF: Apple's real document becomes releases and supplements; a broken one is refused whole."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest

from bsi.domain.catalog import Catalog, Release, Supplement
from bsi.domain.versions import Build, ProductVersion, SupplementVersion
from bsi.errors import FeedError
from bsi.feeds.gdmf import parse_gdmf

SOURCE = "gdmf_cached.json"
BSI = "PublicBackgroundSecurityImprovements"


def supplement(catalog: Catalog, platform: str, build: str) -> Supplement:
    found = catalog.supplement_by_build(platform, Build.parse(build))
    assert found is not None, f"{platform} {build} not in the catalogue"
    return found


def release(catalog: Catalog, platform: str, build: str) -> Release:
    found = [
        r for r in catalog.releases if r.platform == platform and r.build == Build.parse(build)
    ]
    assert len(found) == 1, f"{platform} {build}: {found}"
    return found[0]


def test_macos_supplements_match_apple(gdmf_document: Any) -> None:
    catalog = parse_gdmf(gdmf_document, source=SOURCE)

    universal = supplement(catalog, "macOS", "25D771280a")
    assert universal.version == SupplementVersion.parse("26.3.1 (a)")
    assert universal.prerequisite_build == Build.parse("25D2128")
    assert "J413AP" in universal.supported_devices
    assert universal.posted == date(2026, 3, 17)
    assert universal.expires == date(2026, 11, 20)

    neo = supplement(catalog, "macOS", "25D771400a")
    assert neo.version == SupplementVersion.parse("26.3.2 (a)")
    assert neo.prerequisite_build == Build.parse("25D2140")
    assert neo.supported_devices == frozenset({"J700AP"})


def test_ios_supplement_matches_apple(gdmf_document: Any) -> None:
    catalog = parse_gdmf(gdmf_document, source=SOURCE)

    ios = supplement(catalog, "iOS", "23D771330a")
    assert ios.version == SupplementVersion.parse("26.3.1 (a)")
    assert ios.prerequisite_build == Build.parse("23D8133")
    assert "iPhone17,1" in ios.supported_devices
    assert len(catalog.supplements) == 3


def test_public_asset_sets_are_releases(gdmf_document: Any) -> None:
    catalog = parse_gdmf(gdmf_document, source=SOURCE)

    tahoe = release(catalog, "macOS", "25G83")
    assert tahoe.version == ProductVersion.parse("26.6.2")
    assert tahoe.posted == date(2026, 8, 17)
    assert tahoe.expires == date(2026, 11, 20)
    assert {"J413AP", "J700AP"} <= tahoe.supported_devices
    assert release(catalog, "iOS", "23G83").version == ProductVersion.parse("26.6.1")
    assert release(catalog, "visionOS", "23O780").supported_devices == frozenset(
        {"RealityDevice14,1", "RealityDevice17,1"}
    )
    # GDMF's iOS key holds Apple TV, HomePod and Watch builds too: filed by their devices.
    assert catalog.platforms() == frozenset({"macOS", "iOS", "visionOS", "tvOS", "watchOS"})
    assert catalog.source == SOURCE


def test_asset_sets_for_managed_devices_are_left_out(gdmf_document: Any) -> None:
    # 15.7.7 (24G720) is listed only under AssetSets in this snapshot.
    catalog = parse_gdmf(gdmf_document, source=SOURCE)

    assert not any(r.build == Build.parse("24G720") for r in catalog.releases)


def test_bare_document_reads_like_the_cached_one(gdmf_document: Any) -> None:
    cached = parse_gdmf(gdmf_document, source=SOURCE)
    bare = parse_gdmf(gdmf_document["data"], source=SOURCE)

    assert bare == cached


def test_rapid_security_responses_is_the_same_section_by_its_old_name(
    gdmf_document: Any,
) -> None:
    renamed = copy.deepcopy(gdmf_document)
    renamed["data"]["PublicRapidSecurityResponses"] = renamed["data"].pop(BSI)

    assert parse_gdmf(renamed, source=SOURCE) == parse_gdmf(gdmf_document, source=SOURCE)


def test_unknown_fields_are_ignored(gdmf_document: Any) -> None:
    extended = copy.deepcopy(gdmf_document)
    extended["data"]["PublicFutureThings"] = {"macOS": [{"Anything": 1}]}
    extended["data"][BSI]["macOS"][0]["DocumentationID"] = {"nested": [1, 2]}
    extended["data"]["PublicAssetSets"]["iOS"][0]["NewField"] = None

    assert parse_gdmf(extended, source=SOURCE) == parse_gdmf(gdmf_document, source=SOURCE)


def test_a_build_listed_twice_is_offered_to_both_device_groups() -> None:
    # Apple splits device groups this way (SOFA's history shows 22H6352 so).
    entry = {"ProductVersion": "18.7.8", "Build": "22H6352", "PostingDate": "2026-04-22"}
    document = {
        "PublicAssetSets": {
            "iOS": [
                {**entry, "SupportedDevices": ["iPhone10,1"]},
                {**entry, "SupportedDevices": ["iPad7,5"]},
            ]
        }
    }

    (only,) = parse_gdmf(document, source=SOURCE).releases
    assert only.supported_devices == frozenset({"iPhone10,1", "iPad7,5"})


def _corrupt(document: Any, path: tuple[str | int, ...], value: object) -> Any:
    """A deep copy of ``document`` with the field at ``path`` set to ``value`` (or removed)."""
    broken = copy.deepcopy(document)
    parent = broken
    for key in path[:-1]:
        parent = parent[key]
    if value is _REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return broken


_REMOVE = object()


def _json_path(path: tuple[str | int, ...]) -> str:
    """``("data", "X", 1, "Y")`` written as the importers write it: ``data.X[1].Y``."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            ("data", BSI, "macOS", 1, "PrerequisiteBuild"),
            _REMOVE,
            "required field is missing",
        ),
        (("data", BSI, "macOS", 1, "PrerequisiteBuild"), "25D 2128", "'25D 2128' is not a build"),
        (("data", BSI, "macOS", 1, "Build"), None, "required field is null"),
        (("data", BSI, "iOS", 0, "ProductVersionExtra"), "(A)", "'(A)' is not an extra version"),
        (("data", BSI, "iOS", 0, "ProductVersion"), "26.x", "'26.x' is not a product version"),
        (("data", BSI, "macOS", 0, "PostingDate"), "2026-02-30", "'2026-02-30' is not a date"),
        (
            ("data", BSI, "macOS", 0, "ExpirationDate"),
            20261120,
            "expected a string, found 20261120",
        ),
        (
            ("data", BSI, "macOS", 0, "SupportedDevices"),
            "J700AP",
            "expected a list, found 'J700AP'",
        ),
        (("data", "PublicAssetSets", "macOS", 3, "Build"), "", "'' is not a build"),
        (("data", "PublicAssetSets", "visionOS"), {"ProductVersion": "26"}, "expected a list"),
        (("data", BSI), ["macOS"], "expected an object, found ['macOS']"),
    ],
)
def test_a_broken_field_refuses_the_whole_document(
    gdmf_document: Any, path: tuple[str | int, ...], value: object, expected: str
) -> None:
    broken = _corrupt(gdmf_document, path, value)

    with pytest.raises(FeedError) as refused:
        parse_gdmf(broken, source=SOURCE)

    message = str(refused.value)
    assert message.startswith(f"{SOURCE}: {_json_path(path)}: ")
    assert expected in message


def test_the_example_path_from_the_design_is_named_in_full(gdmf_document: Any) -> None:
    broken = _corrupt(gdmf_document, ("data", BSI, "macOS", 1, "PrerequisiteBuild"), "nope")

    with pytest.raises(FeedError, match=r"PublicBackgroundSecurityImprovements\.macOS\[1\]"):
        parse_gdmf(broken, source=SOURCE)


@pytest.mark.parametrize(
    "document",
    [
        [],
        "PublicAssetSets",
        {},
        {"etag": "x", "data": {"AssetSets": {}}},
        {"etag": "x", "data": []},
    ],
)
def test_a_document_that_is_not_gdmf_is_refused(document: object) -> None:
    with pytest.raises(FeedError, match=SOURCE):
        parse_gdmf(document, source=SOURCE)
