"""A catalogue change names every device whose decision it alters (never fewer).

Hypothesis draws devices as they report themselves (``iPadOS``, ``macos``, strays)
and a change of Apple's real catalogue (a supplement paused, withdrawn or dropped,
a release dropped, a supplement's supported devices cut, a platform added); any
device whose decision differs before and after must be covered by
:func:`~bsi.domain.affected.catalogue_change`. A scope computed from the reported
spelling instead of the catalogue platform (an iPad reports ``iPadOS``, the
catalogue lists it under ``iOS``) fails here.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fail_closed_property import INSTANTS, _real_catalog, inventories

from bsi.domain.affected import EVERYONE, NOBODY, Affected, catalogue_change
from bsi.domain.catalog import Catalog, Release, SupplementState
from bsi.domain.eligibility import decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.inventory import platform_name
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import Build, ProductVersion

FLATCAR = Release("flatcar", ProductVersion(4081, 2), Build.parse("40A1234"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return _real_catalog()


def changes(catalog: Catalog, chosen: int) -> st.SearchStrategy[Catalog]:
    """A change of supplement ``chosen`` (or of any), or of the releases."""
    supplements = list(catalog.supplements)
    releases = list(catalog.releases)
    some = st.just(chosen) | st.sampled_from(range(len(supplements)))

    def with_state(i: int, state: SupplementState) -> Catalog:
        changed = replace(supplements[i], published_state=state)
        return replace(catalog, supplements=(*supplements[:i], changed, *supplements[i + 1 :]))

    def without_devices(i: int) -> Catalog:
        s = supplements[i]
        cut = frozenset(sorted(s.supported_devices)[: len(s.supported_devices) // 2])
        changed = replace(s, supported_devices=cut)
        return replace(catalog, supplements=(*supplements[:i], changed, *supplements[i + 1 :]))

    return st.one_of(
        st.builds(with_state, some, st.sampled_from(list(SupplementState))),
        st.builds(without_devices, some),
        st.builds(lambda i: catalog.without([supplements[i]]), some),
        st.builds(
            lambda i: replace(catalog, releases=(*releases[:i], *releases[i + 1 :])),
            st.sampled_from(range(len(releases))),
        ),
        st.just(replace(catalog, releases=(*releases, FLATCAR))),
    )


def on_prerequisite(catalog: Catalog, chosen: int) -> st.SearchStrategy[DeviceFacts]:
    """A device on supplement ``chosen``'s prerequisite, reporting its platform as
    devices do: an iOS supplement's device may be an iPad that says ``iPadOS``."""
    s = catalog.supplements[chosen]
    spellings = [s.platform, s.platform.lower(), *(["iPadOS"] if s.platform == "iOS" else [])]
    return st.builds(
        DeviceFacts,
        platform=st.sampled_from(spellings),
        product_version=st.just(s.version.product),
        build=st.just(s.prerequisite_build),
        supplemental_build=st.none() | st.just(s.build),
        model_identifier=st.none(),
        software_update_device_id=st.sampled_from(sorted(s.supported_devices) or [None]),
        restart_pending=st.booleans(),
    )


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_device_a_catalogue_change_decides_otherwise_is_covered(
    catalog: Catalog, data: st.DataObject
) -> None:
    chosen = data.draw(st.sampled_from(range(len(catalog.supplements))))
    # its platform as the device spelled it
    reported = data.draw(inventories(catalog) | on_prerequisite(catalog, chosen))
    facts = replace(reported, platform=platform_name(reported.platform))
    after = data.draw(changes(catalog, chosen))
    now = data.draw(st.sampled_from(INSTANTS))
    policy = SoftwareUpdatePolicy()
    if decide(facts, catalog, policy, now) != decide(facts, after, policy, now):
        assert catalogue_change(catalog, after).covers(reported.platform, 0, "device")


def test_the_scope_is_by_catalogue_platform_and_widens_when_in_doubt(catalog: Catalog) -> None:
    ios = next(s for s in catalog.supplements if s.platform == "iOS")
    paused = catalog.without([ios])
    affected = catalogue_change(catalog, paused)
    assert affected == Affected(platforms=frozenset({"iOS"}))
    assert affected.covers("iPadOS", 1, "d")
    assert affected.covers("ios", 1, "d")
    assert not affected.covers("macOS", 1, "d")
    assert not affected.covers(None, 1, "d")
    assert affected.reported_platforms(["iPadOS", "iOS", "macOS", "debian"]) == ["iOS", "iPadOS"]
    assert catalogue_change(None, catalog) == EVERYONE  # nothing decided against yet
    assert catalogue_change(catalog, catalog) == NOBODY
    grown = replace(catalog, releases=(*catalog.releases, FLATCAR))
    assert catalogue_change(catalog, grown) == EVERYONE  # unknown-platform names the known
    models = replace(catalog, device_ids_by_model={})
    assert catalogue_change(catalog, models) == EVERYONE
    assert (affected | Affected(groups=frozenset({3}))).describe() == "platforms iOS; 1 group(s)"
    assert EVERYONE.covers(None, 0, "d")
    assert (affected | EVERYONE) == EVERYONE
