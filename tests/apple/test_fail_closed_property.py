"""No code path yields ``up-to-date`` for a device bsi cannot place (DESIGN rule 7).

Hypothesis draws random inventories (platforms in any case, versions,
builds, models, missing items, installed supplements, restart pending) from
the real catalogue's own vocabulary plus values it has never seen, and decides
for each against the real merged catalogue at several instants. Every
``up-to-date`` device must be on a build the catalogue lists for its version,
or on a catalogued release that folds a supplement in; every installed
supplement it claims must be catalogued; nothing undecidable is ``up-to-date``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bsi.domain.catalog import Catalog
from bsi.domain.eligibility import Outcome, Reason, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import Build, ProductVersion
from bsi.feeds import load_catalogs
from realdata import shared_data_path

INSTANTS = [
    datetime(2026, 3, 16, tzinfo=UTC),
    datetime(2026, 3, 20, 12, tzinfo=UTC),
    datetime(2026, 4, 1, tzinfo=UTC),
    datetime(2026, 8, 22, tzinfo=UTC),
]


def _real_catalog() -> Catalog:
    sofa = shared_data_path("sofa")
    return load_catalogs(
        [sofa / "gdmf_cached.json", sofa / "macos_data_feed.json", sofa / "ios_data_feed.json"]
    )


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return _real_catalog()


def inventories(catalog: Catalog) -> st.SearchStrategy[DeviceFacts]:
    """Devices built from the catalogue's own platforms, versions, builds and models, and strays."""
    platforms = [*sorted(catalog.platforms()), "iPadOS", "debian", "Debian", "tvOS"]
    versions = sorted({r.version for r in catalog.releases} | {ProductVersion(26, 3, 5)})
    builds = sorted(
        {r.build for r in catalog.releases if r.build}
        | {s.prerequisite_build for s in catalog.supplements}
        | {Build.parse(b) for b in ("25D9999", "23D9999", "12C300")}
    )
    supplemental = sorted({s.build for s in catalog.supplements} | {Build.parse("25D771289z")})
    ids = sorted(
        {d for r in catalog.releases for d in r.supported_devices}
        | {d for s in catalog.supplements for d in s.supported_devices}
        | {"J999AP", "iPhone99,9"}
    )
    models = [*sorted(catalog.device_ids_by_model), "Mac99,1"]
    return st.builds(
        DeviceFacts,
        platform=st.sampled_from(platforms),
        product_version=st.sampled_from(versions),
        build=st.sampled_from(builds),
        supplemental_build=st.none() | st.sampled_from(supplemental),
        model_identifier=st.none() | st.sampled_from(models),
        software_update_device_id=st.none() | st.sampled_from(ids),
        restart_pending=st.booleans(),
    )


def _placed(facts: DeviceFacts, catalog: Catalog) -> bool:
    """Independently of the engine: a catalogued build of the version, or a catalogued
    release of the version when the catalogue lists no build for it (SOFA's older entries)."""
    same_version = [
        r
        for r in catalog.releases
        if r.platform == facts.platform and r.version == facts.product_version
    ]
    prerequisites = {
        s.prerequisite_build
        for s in catalog.supplements
        if s.platform == facts.platform and s.version.product == facts.product_version
    }
    builds = {r.build for r in same_version if r.build} | prerequisites
    if builds:
        return facts.build in builds
    return bool(same_version)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_up_to_date_only_for_devices_the_catalogue_places(
    catalog: Catalog, data: st.DataObject
) -> None:
    facts = data.draw(inventories(catalog))
    now = data.draw(st.sampled_from(INSTANTS))
    decision = decide(facts, catalog, SoftwareUpdatePolicy(), now)
    if decision.outcome is not Outcome.UP_TO_DATE:
        if facts.platform not in catalog.platforms():
            assert decision.reason is Reason.UNKNOWN_PLATFORM
        return
    assert facts.platform in catalog.platforms()
    assert _placed(facts, catalog), (facts, decision.message)
    if facts.supplemental_build is not None:
        installed = catalog.supplement_by_build(facts.platform, facts.supplemental_build)
        assert installed is not None, decision.message
    assert not facts.restart_pending or decision.reason is not Reason.SUPPLEMENT_INSTALLED
    if decision.reason is Reason.INCLUDED_IN_RELEASE:
        assert any(
            s.platform == facts.platform
            and s.superseded_by is not None
            and s.superseded_by.version <= facts.product_version
            for s in catalog.supplements
        )
    ids = catalog.known_device_ids(facts.model_identifier, facts.software_update_device_id)
    assert catalog.lists_device(facts.platform, ids) is not False
