"""Image prerequisites: a supplement for a container image, by digest and/or by its base."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.containers import (
    CONTAINERS_ITEM,
    ContainerFacts,
    container_items,
    read_container_items,
)
from bsi.domain.eligibility import Outcome, Reason, decide
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import (
    ImageBase,
    ImageFacts,
    Match,
    PackageManager,
    PackageVersion,
    Prerequisite,
    dump_base,
    place,
    place_image,
    read_base,
)
from bsi.domain.status import DeviceState
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput, InvalidStatusReport

NOW = datetime(2026, 11, 30, tzinfo=UTC)
DPKG = PackageManager.DPKG
DIGEST = "sha256:" + "5f" * 32
OTHER = "sha256:" + "0a" * 32
LIBSSL = PackageVersion("libssl3", "3.0.19-1~deb12u2", "amd64")
LIBSSL_DOCUMENT = {"package": "libssl3", "version": "3.0.19-1~deb12u2"}


def image(**changes: object) -> ImageFacts:
    fields: dict[str, object] = {
        "digests": frozenset({DIGEST}),
        "os_id": "debian",
        "os_version_id": "12",
        "manager": DPKG,
        "packages": (LIBSSL,),
    }
    fields.update(changes)
    return ImageFacts(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base", "facts", "expected"),
    [
        (ImageBase(digest=DIGEST), image(), Match.MET),
        (ImageBase(digest=DIGEST), image(digests=frozenset({OTHER})), Match.ABSENT),
        (ImageBase(os_id="debian", os_version_id="12"), image(digests=frozenset()), Match.MET),
        (ImageBase(os_id="debian", os_version_id="12"), image(os_version_id="13"), Match.NOT_MET),
        (ImageBase(os_id="debian"), image(os_id="alpine"), Match.ABSENT),
        (ImageBase(os_id="debian"), image(os_id=None), Match.UNKNOWN),
        (
            ImageBase(os_id="debian", manager=DPKG, packages=(LIBSSL,)),
            image(packages=(PackageVersion("libssl3", "3.0.20-1", "amd64"),)),
            Match.NOT_MET,
        ),
        (ImageBase(os_id="debian", manager=DPKG, packages=(LIBSSL,)), image(), Match.MET),
        (
            ImageBase(os_id="debian", manager=DPKG, packages=(LIBSSL,)),
            image(packages=None),
            Match.UNKNOWN,
        ),
        # Both named: both must hold.
        (
            ImageBase(digest=DIGEST, os_id="debian", os_version_id="12"),
            image(os_version_id="11"),
            Match.NOT_MET,
        ),
    ],
)
def test_an_image_is_placed_by_digest_and_or_base(
    base: ImageBase, facts: ImageFacts, expected: Match
) -> None:
    placement = place_image(base, facts)
    assert placement.match is expected
    assert (placement.message == "") == (expected is Match.MET)


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (None, Match.ABSENT),  # not a container host
        ((), Match.ABSENT),  # a container host with no container running
        ((image(digests=frozenset({OTHER})), image()), Match.MET),  # one of them is on it
        ((image(digests=frozenset({OTHER})),), Match.ABSENT),
    ],
)
def test_a_host_is_placed_by_its_containers_base_images(
    images: tuple[ImageFacts, ...] | None, expected: Match
) -> None:
    placement = place(
        Prerequisite(image=ImageBase(digest=DIGEST)),
        build=None,
        manager=DPKG,
        packages=(LIBSSL,),
        files={},
        images=images,
    )
    assert placement.match is expected


@pytest.mark.parametrize(
    "base",
    [
        ImageBase(digest=DIGEST),
        ImageBase(os_id="debian", os_version_id="12", manager=DPKG, packages=(LIBSSL,)),
        ImageBase(digest=DIGEST, os_id="debian"),
    ],
)
def test_the_document_form_round_trips_through_read_base(base: ImageBase) -> None:
    document = dump_base(Prerequisite(image=base), ())
    assert read_base(document) == (Prerequisite(image=base), ())


@pytest.mark.parametrize(
    ("document", "names"),
    [
        ({"image": {}}, "digest, its os-release"),
        ({"image": {"digest": "5f" * 32}}, "is not an image digest"),
        ({"image": {"digest": DIGEST, "tag": "latest"}}, "unknown field 'tag'"),
        ({"image": {"os_release": {"version_id": "12"}}}, "'id' is missing"),
        ({"image": {"os_release": {"id": "Debian!"}}}, "not an os-release ID"),
        (
            {"image": {"digest": DIGEST, "manager": "dpkg", "packages": []}},
            "names packages",
        ),
        (
            {"image": {"digest": DIGEST, "manager": "dpkg", "packages": [LIBSSL_DOCUMENT]}},
            "names the image's os-release too",
        ),
        ({"image": {"digest": DIGEST}, "build": "12A100"}, "not build and image"),
    ],
)
def test_bad_image_documents_are_refused_naming_what_is_wrong(
    document: dict[str, object], names: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        read_base({"prerequisite": document})
    assert names in str(raised.value)
    assert str(raised.value).startswith("prerequisite")


def test_eligibility_offers_the_supplement_to_a_host_with_a_container_on_the_image() -> None:
    supplement = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12), ExtraVersion("a")),
        build=Build.parse("12C1000a"),
        prerequisite=Prerequisite(image=ImageBase(digest=DIGEST)),
    )
    catalog = Catalog(supplements=(supplement,))

    def host(*bases: str) -> DeviceFacts:
        return DeviceFacts(
            platform="debian",
            product_version=ProductVersion(12),
            build=Build.parse("12A100"),
            containers=tuple(ContainerFacts(f"c{i}", b, b) for i, b in enumerate(bases)),
        )

    on_base = decide(host(OTHER, DIGEST), catalog, SoftwareUpdatePolicy(), NOW)
    assert on_base.outcome is Outcome.INSTALL
    assert on_base.supplement == supplement
    other = decide(host(OTHER), catalog, SoftwareUpdatePolicy(), NOW)
    assert other.outcome is Outcome.UP_TO_DATE
    assert other.reason is Reason.NO_SUPPLEMENT


def test_the_containers_status_item_round_trips_and_refuses_a_bad_entry() -> None:
    containers = (
        ContainerFacts("web1", OTHER, DIGEST, "debian", "12", Build.parse("12C1000a"),
                       ExtraVersion("a")),
        ContainerFacts("db", DIGEST, DIGEST),
    )  # fmt: skip
    items = container_items(containers)
    assert read_container_items(items) == containers
    assert read_container_items({}) is None
    with pytest.raises(InvalidInput, match=r"bsi.agent.containers\[0\]: .*image digest"):
        read_container_items({CONTAINERS_ITEM: [{"name": "x", "image": "latest",
                                                 "base_image": DIGEST}]})  # fmt: skip


def test_a_malformed_containers_item_is_a_bad_report_and_a_good_one_places_the_host() -> None:
    with pytest.raises(InvalidStatusReport, match=r"bsi.agent.containers\[0\]"):
        DeviceState({CONTAINERS_ITEM: [{"name": "web1", "image": DIGEST}]})
    state = DeviceState(
        {
            "device.operating-system.family": "debian",
            "device.operating-system.version": "12.5",
            "device.operating-system.build-version": "12A100",
            **container_items((ContainerFacts("web1", OTHER, DIGEST),)),
        }
    )
    assert state.facts().containers == (ContainerFacts("web1", OTHER, DIGEST),)
