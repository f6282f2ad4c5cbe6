"""Image prerequisites: a supplement for a container image, by digest and/or by its base."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bsi.domain.catalog import Catalog, Supplement
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
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput

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


def test_a_host_is_not_a_container_so_an_image_supplement_is_not_for_it() -> None:
    placement = place(
        Prerequisite(image=ImageBase(digest=DIGEST)),
        build=None,
        manager=DPKG,
        packages=(LIBSSL,),
        files={},
    )
    assert placement.match is Match.ABSENT


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


def test_eligibility_offers_the_supplement_to_a_container_on_the_image_only() -> None:
    supplement = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12), ExtraVersion("a")),
        build=Build.parse("12C1000a"),
        prerequisite=Prerequisite(image=ImageBase(digest=DIGEST)),
    )
    catalog = Catalog(supplements=(supplement,))

    def container(facts: ImageFacts | None) -> DeviceFacts:
        return DeviceFacts(
            platform="debian", product_version=ProductVersion(12), build=None, image=facts
        )

    on_base = decide(container(image()), catalog, SoftwareUpdatePolicy(), NOW)
    assert on_base.outcome is Outcome.INSTALL
    assert on_base.supplement == supplement
    other = decide(
        container(image(digests=frozenset({OTHER}))), catalog, SoftwareUpdatePolicy(), NOW
    )
    assert other.outcome is Outcome.UP_TO_DATE
    assert other.reason is Reason.NO_SUPPLEMENT
