"""Containers counted in compliance: each a sub-device of its host, against image supplements."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bsi.domain.catalog import Catalog, Release, Supplement
from bsi.domain.compliance import assess_fleet, cve_json, supplement_json
from bsi.domain.containers import (
    CONTAINERS_ITEM,
    ContainerFacts,
    container_items,
    left_behind,
    read_container_items,
)
from bsi.domain.eligibility import Outcome, Reason, decide, unknown, with_containers
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import (
    ImageBase,
    PackageManager,
    PackageVersion,
    Prerequisite,
)
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput

NOW = datetime(2026, 11, 30, tzinfo=UTC)
BASE = "sha256:" + "5f" * 32
PATCHED_A = "sha256:" + "a1" * 32
PATCHED_B = "sha256:" + "b1" * 32
FOREIGN = "sha256:" + "0a" * 32
LIBSSL = PackageVersion("libssl3", "3.0.19-1~deb12u2", "amd64")


def image_letter(letter: str, cve: str) -> Supplement:
    return Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12), ExtraVersion(letter)),
        build=Build.parse(f"12C1000{letter}"),
        prerequisite=Prerequisite(image=ImageBase(digest=BASE)),
        cves=(cve,),
    )


A = image_letter("a", "CVE-2026-0001")
B = image_letter("b", "CVE-2026-0002")
HOST_PACKAGES = Supplement(
    platform="debian",
    version=SupplementVersion(ProductVersion(12), ExtraVersion("b")),  # the host's own line
    build=Build.parse("12L1000b"),
    prerequisite=Prerequisite(manager=PackageManager.DPKG, packages=(LIBSSL,)),
    cves=("CVE-2026-0001",),
)
CATALOG = Catalog(
    releases=(Release("debian", ProductVersion(12), None),),
    supplements=(A, HOST_PACKAGES),
)


def container(name: str, base: str, letter: str | None = None) -> ContainerFacts:
    if letter is None:
        return ContainerFacts(name, base, base, "debian", "12")
    image = PATCHED_A if letter == "a" else PATCHED_B
    build = Build.parse(f"12C1000{letter}")
    return ContainerFacts(name, image, base, "debian", "12", build, ExtraVersion(letter))


def host(
    *containers: ContainerFacts, active: str | None = None, platform: str = "debian"
) -> DeviceFacts:
    return DeviceFacts(
        platform=platform,
        product_version=ProductVersion(12),
        build=None,
        supplemental_build=Build.parse(active) if active else None,
        package_manager=PackageManager.DPKG,
        packages=(LIBSSL,),
        containers=containers,
    )


MIXED = host(container("web1", BASE, "a"), container("web2", BASE), container("db", FOREIGN))


def summary_of(*devices: DeviceFacts, catalog: Catalog = CATALOG) -> tuple[dict, dict]:  # type: ignore[type-arg]
    report = assess_fleet(
        [(f"host{i}", d) for i, d in enumerate(devices)],
        catalog,
        lambda _: SoftwareUpdatePolicy(),
        NOW,
    )
    supplements = {s.supplement.build: supplement_json(s, NOW) for s in report.supplements}
    cves = {e.cve: cve_json(e) for e in report.cves}
    return supplements, cves


def test_patched_unpatched_and_foreign_base_containers_count_on_the_image_supplement() -> None:
    supplements, cves = summary_of(MIXED)
    a = supplements[A.build]
    assert (a["containers_affected"], a["containers_installed"], a["containers_pending"]) == (
        2,
        1,
        1,
    )
    assert a["containers_unknown"] == a["containers_restart_pending"] == 0
    # the host's own package supplement counts the host, never its containers
    packages = supplements[HOST_PACKAGES.build]
    assert packages["pending"] == 1
    assert packages["containers_affected"] == packages["containers_unknown"] == 0
    cve = cves["CVE-2026-0001"]
    assert (cve["containers_exposed"], cve["containers_fixed"], cve["containers_unknown"]) == (
        1,
        1,
        0,
    )
    assert cve["exposed"] == 1  # the host itself lacks the package supplement


def test_a_later_letter_fixes_the_earlier_letters_cve_and_leaves_the_base_pending() -> None:
    catalog = Catalog(releases=CATALOG.releases, supplements=(A, B))
    supplements, cves = summary_of(
        host(container("web1", BASE, "b"), container("web2", BASE, "a"), container("web3", BASE)),
        catalog=catalog,
    )
    assert supplements[B.build]["containers_installed"] == 1
    assert supplements[B.build]["containers_pending"] == 2  # (a) and the base both need (b)
    assert supplements[A.build]["containers_installed"] == 1
    assert cves["CVE-2026-0001"]["containers_fixed"] == 2  # (b) is cumulative
    assert cves["CVE-2026-0001"]["containers_exposed"] == 1
    assert cves["CVE-2026-0002"]["containers_fixed"] == 1
    assert cves["CVE-2026-0002"]["containers_exposed"] == 2


def test_a_host_bsi_cannot_place_makes_its_containers_unknown_never_fixed() -> None:
    lost = host(container("web1", BASE, "a"), container("web2", BASE), platform="alpine")
    supplements, cves = summary_of(lost)
    a = supplements[A.build]
    assert a["containers_unknown"] == 2
    assert a["containers_affected"] == a["containers_installed"] == 0
    assert cves["CVE-2026-0001"]["containers_unknown"] == 2
    assert cves["CVE-2026-0001"]["containers_fixed"] == 0
    # a host that gave no usable facts: its last known containers are unknown alike
    decision = with_containers(
        unknown(Reason.STATUS_INVALID, "refused"),
        MIXED.containers,
        None,
        CATALOG,
        SoftwareUpdatePolicy(),
        NOW,
    )
    assert [c.decision.outcome for c in decision.containers] == [Outcome.UNKNOWN] * 3
    assert {c.decision.reason for c in decision.containers} == {Reason.STATUS_INVALID}


def test_a_container_on_a_base_the_catalogue_cannot_tie_to_its_letter_is_unknown() -> None:
    stray = ContainerFacts(
        "web1", PATCHED_A, BASE, "debian", "12", Build.parse("12C1000z"), ExtraVersion("z")
    )
    supplements, _ = summary_of(host(stray))
    assert supplements[A.build]["containers_unknown"] == 1
    assert supplements[A.build]["containers_installed"] == 0


def test_a_container_left_on_the_base_while_the_hosts_letter_is_active_is_restart_pending() -> None:
    facts = host(container("web1", BASE, "a"), container("late", BASE), active=str(A.build))
    decision = with_containers(
        decide(facts, CATALOG, SoftwareUpdatePolicy(), NOW),
        facts.containers,
        facts,
        CATALOG,
        SoftwareUpdatePolicy(),
        NOW,
    )
    outcomes = {c.name: c.decision.outcome for c in decision.containers}
    assert outcomes == {"web1": Outcome.UP_TO_DATE, "late": Outcome.RESTART_PENDING}
    supplements, cves = summary_of(facts)
    assert supplements[A.build]["containers_restart_pending"] == 1
    assert supplements[A.build]["containers_installed"] == 1
    assert cves["CVE-2026-0001"]["containers_restart_pending"] == 1
    assert cves["CVE-2026-0001"]["containers_fixed"] == 1


def test_a_host_without_containers_counts_none() -> None:
    supplements, cves = summary_of(host())
    assert supplements[HOST_PACKAGES.build]["pending"] == 1
    assert all(v == 0 for k, v in supplements[HOST_PACKAGES.build].items() if "containers" in k)
    assert cves["CVE-2026-0001"]["containers_exposed"] == 0


def test_the_hosts_report_names_its_restart_pending_containers() -> None:
    late = ContainerFacts("late", BASE, BASE, "debian", "12", restart_pending=True)
    items = container_items((late, container("web1", BASE, "a")))
    assert [c.get("restart_pending") for c in items[CONTAINERS_ITEM]] == [True, None]  # type: ignore[attr-defined]
    assert read_container_items(items) == (late, container("web1", BASE, "a"))
    with pytest.raises(InvalidInput, match=r"containers\[0\]\.restart_pending: expected true"):
        read_container_items({CONTAINERS_ITEM: [{"name": "x", "image": BASE, "base_image": BASE,
                                                 "restart_pending": "yes"}]})  # fmt: skip
    # the agent flags a container of a base its active letter patched that does not run it
    assert left_behind(BASE, None, "12C1000a", {BASE})
    assert left_behind(BASE, "12C0999a", "12C1000a", {BASE})
    assert not left_behind(BASE, "12C1000a", "12C1000a", {BASE})
    assert not left_behind(FOREIGN, None, "12C1000a", {BASE})
    assert not left_behind(BASE, None, None, {BASE})
    supplements, _ = summary_of(host(late, active=str(A.build)))
    assert supplements[A.build]["containers_restart_pending"] == 1
    # a flag without an active letter the catalogue knows changes nothing: pending
    supplements, _ = summary_of(host(late))
    assert supplements[A.build]["containers_pending"] == 1
