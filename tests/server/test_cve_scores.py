"""CVSS scores end to end: a catalogue naming vectors is stored (SQLite and PostgreSQL),
the admin API's CVE compliance and the console's CVE page show each CVE's score and
severity, an unscored CVE says so, and a catalogue with a bad vector changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

from test_console import signed_in
from test_rollouts import BUILD, fleet

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, SupplementVersion
from bsi.feeds import dump_bsi_catalog
from server_support import RunningServer

CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
OPENSSL = Supplement(
    platform="debian",
    version=SupplementVersion.parse("12.5 (a)"),
    build=Build.parse("12A100a"),
    prerequisite=Prerequisite.of_build(Build.parse("12A100")),
    cves=("CVE-2026-0001", "CVE-2026-0002"),
    cvss=(("CVE-2026-0001", CRITICAL),),
)


def test_cve_scores_are_stored_and_shown_in_the_api_and_the_console(
    server: RunningServer,
) -> None:
    document = dump_bsi_catalog(Catalog(supplements=(OPENSSL,)))
    assert server.admin.post("/v1/admin/catalog", json=document).status_code == 200

    rows = {r["cve"]: r for r in server.reader.get("/v1/admin/compliance/cves").json()}
    assert (rows["CVE-2026-0001"]["cvss_score"], rows["CVE-2026-0001"]["severity"]) == (
        9.8,
        "Critical",
    )
    assert rows["CVE-2026-0001"]["cvss"] == CRITICAL
    assert rows["CVE-2026-0002"]["cvss_score"] is None
    csv = server.reader.get("/v1/admin/compliance/cves", params={"format": "csv"}).text
    assert csv.splitlines()[0].startswith("cve,cvss_score,severity,")

    page = signed_in(server, server.reader_key).get("/cves").text
    cells = re.findall(r"<td data-cvss>(.*?)</td>", page, re.S)
    assert len(cells) == 2
    scored = next(c for c in cells if "9.8" in c)
    assert "Critical" in scored
    assert any("not scored" in c for c in cells)

    broken = dump_bsi_catalog(Catalog(supplements=(OPENSSL,)))
    broken["supplements"][0]["cvss"] = {"CVE-2026-0002": "CVSS:3.1/AV:N/AC:Z"}
    refused = server.admin.post("/v1/admin/catalog", json=broken)
    assert refused.status_code == 400, refused.text
    assert "cvss.CVE-2026-0002" in refused.json()["message"]
    after = {r["cve"]: r for r in server.reader.get("/v1/admin/compliance/cves").json()}
    assert after == rows  # nothing changed


def test_a_cves_devices_are_one_click_away(server: RunningServer, shared_data: Path) -> None:
    """Each CVE row links the devices of each supplement that fixes it: the console's
    device list filtered by the supplement their decision is about."""
    devices = [device_id for device_id, _ in fleet(server, shared_data, n=2)]
    console = signed_in(server, server.reader_key)
    page = console.get("/cves").text
    row = next(r for r in page.split("<tr>") if "CVE-2026-20643" in r)
    assert f'href="/devices?target={BUILD}"' in row
    listed = console.get("/devices", params={"target": BUILD}).text
    assert all(device_id in listed for device_id in devices)
    other = console.get("/devices", params={"target": "25D9999999a"}).text
    assert not any(device_id in other for device_id in devices)
