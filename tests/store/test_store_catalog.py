"""CatalogStore conformance: the catalogue, steering supplements and retry allowances."""

from __future__ import annotations

from datetime import date

import pytest
from store_facts import NOW, enrolled

from bsi.domain.catalog import Catalog, SupplementState
from bsi.errors import Conflict, NotFound
from bsi.feeds import parse_bsi_catalog
from bsi.store.protocols import CatalogStore, DeviceStore


def test_catalogue_round_trips_and_supplements_can_be_paused(catalogue: CatalogStore) -> None:
    catalog = parse_bsi_catalog(
        {
            "format": "bsi-catalog/1",
            "releases": [{"platform": "macOS", "version": "26.3.1", "build": "25D2128"}],
            "supplements": [
                {
                    "platform": "macOS",
                    "version": "26.3.1 (a)",
                    "build": "25D771280a",
                    "prerequisite_build": "25D2128",
                    "supported_devices": ["J413AP"],
                    "cves": ["CVE-2026-20643"],
                    "posted": "2026-03-17",
                    "superseded_by": {"version": "26.4", "released": "2026-03-24"},
                }
            ],
            "device_models": {"Mac14,2": ["J413AP"]},
        },
        source="test",
    )
    catalogue.replace_catalog(catalog, "test")
    stored = catalogue.catalog()
    assert stored.supplements == catalog.supplements
    assert stored.releases == catalog.releases
    assert stored.device_ids_by_model == catalog.device_ids_by_model
    catalogue.set_supplement_state("macOS", "25D771280a", SupplementState.PAUSED)
    (paused,) = catalogue.catalog().supplements
    assert paused.published_state is SupplementState.PAUSED
    assert paused.posted == date(2026, 3, 17)
    with pytest.raises(NotFound):
        catalogue.set_supplement_state("macOS", "25D000000z", SupplementState.PAUSED)
    catalogue.set_supplement_state("macOS", "25D771280a", SupplementState.WITHDRAWN)
    for state in (SupplementState.PUBLISHED, SupplementState.PAUSED):
        with pytest.raises(Conflict, match="withdrawn is final"):
            catalogue.set_supplement_state("macOS", "25D771280a", state)
    (withdrawn,) = catalogue.catalog().supplements
    assert withdrawn.published_state is SupplementState.WITHDRAWN
    catalogue.replace_catalog(Catalog(), "empty")
    assert catalogue.catalog().supplements == ()


def test_retry_allowances_reach_every_device_or_one(
    catalogue: CatalogStore, devices: DeviceStore
) -> None:
    catalogue.replace_catalog(
        parse_bsi_catalog(
            {
                "format": "bsi-catalog/1",
                "supplements": [
                    {
                        "platform": "debian",
                        "version": "12.5 (a)",
                        "build": "12A100a",
                        "prerequisite_build": "12A100",
                    }
                ],
            },
            source="test",
        ),
        "test",
    )
    one, other = enrolled(devices, "one", "other")
    assert catalogue.latest_retries().of(one) == 0
    everyone = catalogue.allow_retry("debian", "12A100a", None, NOW)
    mine = catalogue.allow_retry("debian", "12A100a", one, NOW)
    assert mine > everyone
    assert catalogue.retries_after(one, 0) == [
        (everyone, "debian", "12A100a"),
        (mine, "debian", "12A100a"),
    ]
    assert catalogue.retries_after(other, 0) == [(everyone, "debian", "12A100a")]
    assert catalogue.retries_after(one, mine) == []
    latest = catalogue.latest_retries()
    assert (latest.of(one), latest.of(other), latest.everyone) == (mine, everyone, everyone)
    with pytest.raises(NotFound):
        catalogue.allow_retry("debian", "12A100z", None, NOW)
    with pytest.raises(NotFound):
        catalogue.allow_retry("debian", "12A100a", "no-such-device", NOW)
    assert catalogue.retries_after(other, everyone) == []
