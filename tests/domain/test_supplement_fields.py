"""The signed supplement fields: the writer's document reads back, and every bad document
is refused naming the field and how to fix it."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from bsi.domain.prerequisite import PackageManager, PackageVersion, Prerequisite
from bsi.domain.supplement_fields import SupplementFields, read_supplement_fields
from bsi.domain.versions import Build, SupplementVersion
from bsi.errors import InvalidInput

SOURCE = "target 'debian/12A100a.cryptex'"


def fields(**changes: Any) -> SupplementFields:
    values: dict[str, Any] = {
        "platform": "debian",
        "version": SupplementVersion.parse("12.5 (a)"),
        "prerequisite": Prerequisite.of_build(Build.parse("12A100")),
        "supplemental_build": Build.parse("12A100a"),
        "cves": ("CVE-2026-20643",),
        "posted": date(2026, 3, 1),
    }
    return SupplementFields(**{**values, **changes})


def document(**changes: object) -> dict[str, object]:
    """The writer's document with ``changes``; a change to ``None`` drops the field."""
    written = {**fields().document(), **changes}
    return {key: value for key, value in written.items() if value is not None}


def test_the_writers_document_reads_back() -> None:
    assert read_supplement_fields(fields().document(), source=SOURCE) == fields()
    assert fields().document() == {
        "platform": "debian",
        "product_version": "12.5",
        "extra_version": "(a)",
        "prerequisite_build": "12A100",
        "supplemental_build": "12A100a",
        "cves": ["CVE-2026-20643"],
        "posted": "2026-03-01",
    }


def test_cvss_vectors_are_signed_only_when_known_and_read_back() -> None:
    vector = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"
    scored = fields(cvss=(("CVE-2026-20643", vector),))
    assert scored.document()["cvss"] == {"CVE-2026-20643": vector}
    assert read_supplement_fields(scored.document(), source=SOURCE) == scored
    assert scored.supplement().cvss == scored.cvss
    assert "cvss" not in fields().document()  # unscored: the document signed before


def test_a_package_base_with_fixed_in_reads_back_and_so_does_no_posting_day() -> None:
    packages = Prerequisite(
        manager=PackageManager.DPKG,
        packages=(PackageVersion("libssl3", "3.0.19-1~deb12u2", "amd64"),),
    )
    written = fields(
        prerequisite=packages,
        fixed_in=(PackageVersion("libssl3", "3.0.20-1~deb12u2"),),
        posted=None,
        cves=(),
    )
    assert "posted" not in written.document()
    assert read_supplement_fields(written.document(), source=SOURCE) == written


def test_the_device_fields_are_what_a_device_compares() -> None:
    assert fields().device_document() == {
        "platform": "debian",
        "prerequisite_build": "12A100",
        "supplemental_build": "12A100a",
    }


def test_the_catalogue_entry_carries_every_field_and_the_signed_digest() -> None:
    supplement = fields().supplement(target_sha256="ab" * 32)
    assert (supplement.platform, str(supplement.version), str(supplement.build)) == (
        "debian",
        "12.5 (a)",
        "12A100a",
    )
    assert supplement.prerequisite_build == Build.parse("12A100")
    assert supplement.cves == ("CVE-2026-20643",)
    assert supplement.posted == date(2026, 3, 1)
    assert supplement.target_sha256 == "ab" * 32


@pytest.mark.parametrize(
    ("bad", "field", "problem"),
    [
        ([], "custom.bsi", "expected an object"),
        (None, "custom.bsi", "expected an object"),
        (document(product_version=None), "custom.bsi", "'product_version' is missing"),
        (document(supplemental_build=None), "custom.bsi", "'supplemental_build' is missing"),
        (document(prerequisite_build=None), "custom.bsi", "'prerequisite' is missing"),
        (document(platform=7), "custom.bsi.platform", "expected a string"),
        (document(product_version=12.5), "custom.bsi.product_version", "expected a string"),
        (document(extra_version="a)"), "custom.bsi.extra_version", "'a)'"),
        (document(supplemental_build=["x"]), "custom.bsi.supplemental_build", "expected a string"),
        (document(cves="CVE-2026-20643"), "custom.bsi.cves", "expected a list"),
        (document(cves=["CVE-26"]), "custom.bsi.cves[0]", "not a CVE id"),
        (document(posted="yesterday"), "custom.bsi.posted", "not a date"),
        (document(posted=20260301), "custom.bsi.posted", "expected a string"),
        (document(platform="Debian"), "custom.bsi.platform", "would match no device"),
        (document(supported_devices=["J413AP"]), "custom.bsi", "unknown field 'supported_devices'"),
        (
            document(prerequisite={"build": "12A100"}),
            "custom.bsi",
            "names both prerequisite_build and prerequisite",
        ),
        (document(supplemental_build="12A100"), "supplemental build", "is the prerequisite build"),
        (
            document(cvss={"CVE-2026-20643": "CVSS:3.1/AV:X"}),
            "custom.bsi.cvss.CVE-2026-20643",
            "is not a CVSS 3.x vector",
        ),
        (document(cvss={"CVE-2026-1": "AV:N"}), "custom.bsi.cvss", "is not a CVE id"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field_and_the_fix(
    bad: object, field: str, problem: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        read_supplement_fields(bad, source=SOURCE)
    message = caught.value.message
    assert message.startswith(f"{SOURCE}: signed supplement fields: ")
    assert field in message
    assert problem in message
    assert caught.value.hint is not None
    assert "bsi supplement publish" in caught.value.hint
