"""bsi's own catalogue format: what is dumped reads back equal, and nothing broken is read."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from bsi.domain.catalog import Catalog, Release, Supersession, Supplement, SupplementState
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ProductVersion, SupplementVersion
from bsi.errors import FeedError
from bsi.feeds.bsi_catalog import FORMAT, dump_bsi_catalog, parse_bsi_catalog
from bsi.feeds.gdmf import parse_gdmf
from bsi.feeds.sofa import parse_sofa

SOURCE = "catalog.json"

OPENSSL = Supplement(
    platform="debian",
    version=SupplementVersion.parse("12.7 (b)"),
    build=Build.parse("12D4071b"),
    prerequisite=Prerequisite.of_build(Build.parse("12D407")),
    supported_devices=frozenset({"web-1", "web-2"}),
    cves=("CVE-2026-1001", "CVE-2026-1002"),
    cvss=(("CVE-2026-1002", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"),),
    posted=date(2026, 6, 1),
    expires=date(2026, 9, 1),
    published_state=SupplementState.PAUSED,
    superseded_by=Supersession(ProductVersion.parse("12.8"), Build.parse("12E1"), date(2026, 7, 1)),
    security_info="https://example.org/advisories/1",
    target_sha256="ab" * 32,
)
BOOKWORM = Release(platform="debian", version=ProductVersion.parse("12.7"), build=None)


def through_json(catalog: Catalog) -> Catalog:
    """A dump written as JSON text and read back, as it travels between machines."""
    text = json.dumps(dump_bsi_catalog(catalog))
    return parse_bsi_catalog(json.loads(text), source=catalog.source)


def test_a_hand_built_catalogue_round_trips() -> None:
    catalog = Catalog(
        releases=(BOOKWORM,),
        supplements=(OPENSSL,),
        device_ids_by_model={"Mac14,2": frozenset({"J413AP"})},
        source=SOURCE,
    )

    assert through_json(catalog) == catalog


def test_the_real_apple_catalogue_round_trips(
    gdmf_document: Any, macos_feed: Any, ios_feed: Any
) -> None:
    catalog = (
        parse_gdmf(gdmf_document, source="gdmf")
        .merged(parse_sofa(macos_feed, source="macos"))
        .merged(parse_sofa(ios_feed, source="ios"))
    )

    assert through_json(catalog) == catalog


def test_the_dump_is_plain_and_stable() -> None:
    catalog = Catalog(supplements=(OPENSSL,), device_ids_by_model={"b": frozenset({"2", "1"})})

    document = dump_bsi_catalog(catalog)

    assert document["format"] == FORMAT
    assert document["device_models"] == {"b": ["1", "2"]}
    assert document["supplements"] == [
        {
            "platform": "debian",
            "version": "12.7 (b)",
            "build": "12D4071b",
            "prerequisite_build": "12D407",
            "supported_devices": ["web-1", "web-2"],
            "cves": ["CVE-2026-1001", "CVE-2026-1002"],
            "cvss": {"CVE-2026-1002": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"},
            "posted": "2026-06-01",
            "expires": "2026-09-01",
            "state": "paused",
            "superseded_by": {"version": "12.8", "build": "12E1", "released": "2026-07-01"},
            "security_info": "https://example.org/advisories/1",
            "target_sha256": "ab" * 32,
        }
    ]


def test_only_identity_fields_are_required() -> None:
    document = {
        "format": FORMAT,
        "releases": [{"platform": "debian", "version": "12.7"}],
        "supplements": [
            {
                "platform": "debian",
                "version": "12.7 (a)",
                "build": "12D4071a",
                "prerequisite_build": "12D407",
            }
        ],
    }

    catalog = parse_bsi_catalog(document, source=SOURCE)

    assert catalog.releases == (BOOKWORM,)
    (only,) = catalog.supplements
    assert only.published_state is SupplementState.PUBLISHED
    assert only.supported_devices == frozenset()
    assert only.superseded_by is None
    assert catalog.device_ids_by_model == {}


def test_unknown_fields_are_ignored() -> None:
    catalog = Catalog(releases=(BOOKWORM,), supplements=(OPENSSL,), source=SOURCE)
    document = dump_bsi_catalog(catalog)
    document["signed_by"] = "someone"
    document["supplements"][0]["rollout"] = {"wave": 2}  # type: ignore[index]

    assert parse_bsi_catalog(document, source=SOURCE) == catalog


def test_a_derived_state_is_not_written_down() -> None:
    expired = Catalog(supplements=(replace(OPENSSL, published_state=SupplementState.EXPIRED),))

    with pytest.raises(ValueError, match="expired"):
        dump_bsi_catalog(expired)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="bsi-catalog/2"), "format: 'bsi-catalog/2' is not a catalogue"),
        (lambda d: d.pop("format"), "format: required field is missing"),
        (
            lambda d: d["supplements"][0].update(version="12.7"),
            "supplements[0].version: '12.7' is not a supplement version",
        ),
        (
            lambda d: d["supplements"][0].update(state="expired"),
            "supplements[0].state: 'expired' is not a state a publisher sets",
        ),
        (
            lambda d: d["supplements"][0]["superseded_by"].update(released="2026-7-1"),
            "supplements[0].superseded_by.released: '2026-7-1' is not a date",
        ),
        (
            lambda d: d["supplements"][0].pop("prerequisite_build"),
            "supplements[0]: required field 'prerequisite' is missing",
        ),
        (
            lambda d: d["releases"][0].update(build="12.7"),
            "releases[0].build: '12.7' is not a build",
        ),
        (
            lambda d: d["releases"][0].update(supported_devices=[1]),
            "releases[0].supported_devices[0]: expected a string, found 1",
        ),
        (
            lambda d: d.update(device_models={"Mac14,2": "J413AP"}),
            "device_models.Mac14,2: expected a list, found 'J413AP'",
        ),
        (lambda d: d.update(releases={}), "releases: expected a list, found {}"),
        (
            lambda d: d["supplements"][0].update(cvss={"CVE-2026-9999": "AV:N"}),
            "supplements[0].cvss: 'CVE-2026-9999' has a vector but is not among the CVEs",
        ),
        (
            lambda d: d["supplements"][0].update(cvss={"CVE-2026-1001": "AV:N/AC:Q"}),
            "supplements[0].cvss.CVE-2026-1001: 'AV:N/AC:Q' is not a CVSS 3.x vector",
        ),
        (
            lambda d: d["supplements"][0].update(target_sha256="AB" * 32),
            "supplements[0].target_sha256: 'ABAB",
        ),
        (
            lambda d: d["supplements"][0].update(target_sha256=12),
            "supplements[0].target_sha256: expected a string, found 12",
        ),
    ],
)
def test_a_broken_catalogue_is_refused_whole(edit: Any, message: str) -> None:
    document = copy.deepcopy(
        dump_bsi_catalog(Catalog(releases=(BOOKWORM,), supplements=(OPENSSL,)))
    )
    edit(document)

    with pytest.raises(FeedError) as refused:
        parse_bsi_catalog(document, source=SOURCE)

    assert str(refused.value).startswith(f"{SOURCE}: {message}")


def test_a_linux_platform_in_another_case_is_refused_with_the_id_to_use() -> None:
    document = {
        "format": "bsi-catalog/1",
        "releases": [{"platform": "Debian", "version": "12.5", "build": "12C301"}],
    }
    with pytest.raises(FeedError, match=r"releases\[0\]\.platform: platform 'Debian'") as refused:
        parse_bsi_catalog(document, source="cat.json")
    assert "'debian'" in (refused.value.hint or "")
