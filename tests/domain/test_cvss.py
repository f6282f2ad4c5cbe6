"""CVSS 3.x scores of CVEs: read from a catalogue or signed fields, merged across
listings (the higher score wins), and shown in the one CVE JSON shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.compliance import CVE_COLUMNS, cve_json, summarize
from bsi.domain.cves import merge_cvss_vectors, read_cvss_vectors
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, SupplementVersion
from bsi.errors import InvalidInput

CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"  # 5.4
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def supplement(build: str, cvss: dict[str, str], cves: tuple[str, ...]) -> Supplement:
    return Supplement(
        platform="debian",
        version=SupplementVersion.parse("12.5 (a)"),
        build=Build.parse(build),
        prerequisite=Prerequisite.of_build(Build.parse("12A100")),
        cves=cves,
        cvss=read_cvss_vectors(cvss, cves, "cvss"),
    )


def test_vectors_are_read_in_clean_form_and_must_name_a_listed_cve() -> None:
    read = read_cvss_vectors({"cve-2026-0001": MEDIUM[len("CVSS:3.1/") :]}, ["CVE-2026-0001"], "x")
    assert read == (("CVE-2026-0001", MEDIUM),)
    with pytest.raises(InvalidInput, match="not among the CVEs listed"):
        read_cvss_vectors({"CVE-2026-0002": MEDIUM}, ["CVE-2026-0001"], "x")
    with pytest.raises(InvalidInput, match=r"x\.CVE-2026-0001: .* is not a CVSS 3\.x vector"):
        read_cvss_vectors({"CVE-2026-0001": "AV:Q"}, ["CVE-2026-0001"], "x")
    with pytest.raises(InvalidInput, match="must be an object"):
        read_cvss_vectors(["CVE-2026-0001"], ["CVE-2026-0001"], "x")


def test_two_listings_of_a_cve_keep_the_higher_score() -> None:
    low, high = (("CVE-2026-0001", MEDIUM),), (("CVE-2026-0001", CRITICAL),)
    assert merge_cvss_vectors(low, high) == merge_cvss_vectors(high, low) == high
    a = supplement("12A100a", {"CVE-2026-0001": MEDIUM}, ("CVE-2026-0001",))
    same_build = supplement("12A100a", {"CVE-2026-0001": CRITICAL}, ("CVE-2026-0001",))
    (merged,) = Catalog(supplements=(a,)).merged(Catalog(supplements=(same_build,))).supplements
    assert merged.cvss == high


def test_a_cve_is_scored_by_its_worst_supplement_and_unscored_without_a_vector() -> None:
    catalog = Catalog(
        supplements=(
            supplement("12A100a", {"CVE-2026-0001": MEDIUM}, ("CVE-2026-0001", "CVE-2026-0002")),
            supplement("12A100b", {"CVE-2026-0001": CRITICAL}, ("CVE-2026-0001",)),
        )
    )
    rows = {row["cve"]: row for row in (cve_json(e) for e in summarize([], catalog).cves)}
    assert (rows["CVE-2026-0001"]["cvss_score"], rows["CVE-2026-0001"]["severity"]) == (
        9.8,
        "Critical",
    )
    assert rows["CVE-2026-0001"]["cvss"] == CRITICAL
    assert (rows["CVE-2026-0002"]["cvss_score"], rows["CVE-2026-0002"]["severity"]) == (None, None)
    assert {"cvss_score", "severity"} <= set(CVE_COLUMNS)
