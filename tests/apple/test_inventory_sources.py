"""MDM DeviceInformation and osquery inventories for ``bsi apple compliance --reports``.

Records are written as MDM servers and ``osqueryi --json`` write them (plist or
JSON; arrays of string-valued rows; osqueryd's results log), decided against
Apple's real catalogue, and counted for CVE-2026-20643 beside DDM reports.
"""

from __future__ import annotations

import json
import plistlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bsi.apple.compliance import assess_apple_fleet
from bsi.apple.fleet import InventoryFormat, load_fleet
from bsi.domain.catalog import Catalog
from bsi.domain.eligibility import Outcome, Reason
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.errors import InvalidStatusReport
from bsi.feeds import load_catalogs
from reports import macos_report

WEEK_OF_POSTING = datetime(2026, 3, 20, 12, tzinfo=UTC)


def device_information(**answers: str) -> dict[str, Any]:
    """An MDM DeviceInformation command result, as the device sends it."""
    return {
        "CommandUUID": "0001",
        "Status": "Acknowledged",
        "UDID": answers.get("UDID", "00008112-AAAA"),
        "QueryResponses": answers,
    }


MAC_ON_A = {
    "OSVersion": "26.3.1",
    "BuildVersion": "25D2128",
    "SupplementalBuildVersion": "25D771280a",
    "SupplementalOSVersionExtra": "(a)",
    "ProductName": "MacBookPro18,1",
    "ModelName": "MacBook Pro",
    "SerialNumber": "QX4V7M2P9R",
    "UDID": "00008112-QX4V7M2P9R",
}
# Apple reports the base build as the supplemental one when none is installed.
MAC_WITHOUT = {
    "OSVersion": "26.3.1",
    "BuildVersion": "25D2128",
    "SupplementalBuildVersion": "25D2128",
    "SupplementalOSVersionExtra": "",
    "ProductName": "Mac14,2",
    "UDID": "00008112-BBBB",
}
OSQUERY_ROWS = [
    {  # sw_vers-style: the supplemental build as the build, the letter in extra
        "name": "macOS",
        "version": "26.3.1",
        "major": "26",
        "minor": "3",
        "patch": "1",
        "build": "25D771280a",
        "extra": "(a)",
        "platform": "darwin",
        "platform_like": "darwin",
        "arch": "arm64",
        "uuid": "4C4C4544-0001",
        "hardware_model": "Mac14,2",
        "hardware_serial": "C02XXXXX1",
        "hostname": "studio.local",
    },
    {
        "name": "macOS",
        "version": "26.3.1",
        "major": "26",
        "minor": "3",
        "patch": "1",
        "build": "25D9999",
        "extra": "",
        "platform": "darwin",
        "uuid": "4C4C4544-0002",
        "hardware_model": "Mac14,2",
        "hostname": "ghost.local",
    },
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    from realdata import shared_data_path

    sofa = shared_data_path("sofa")
    return load_catalogs(
        [sofa / "gdmf_cached.json", sofa / "macos_data_feed.json", sofa / "ios_data_feed.json"]
    )


def decide_fleet(path: Path, catalog: Catalog, **options: Any) -> dict[str, Any]:
    fleet = load_fleet(path, **options)
    report, _ = assess_apple_fleet(fleet, catalog, SoftwareUpdatePolicy(), WEEK_OF_POSTING)
    return {row.device_id: row for row in report.devices} | {"_report": report}


def test_mdm_plist_and_json_results(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "mbp.plist").write_bytes(plistlib.dumps(device_information(**MAC_ON_A)))
    (tmp_path / "mini.json").write_text(json.dumps(MAC_WITHOUT))  # QueryResponses alone
    rows = decide_fleet(tmp_path, catalog)
    assert rows["mbp"].decision.reason is Reason.SUPPLEMENT_INSTALLED
    assert rows["mbp"].facts.model_identifier == "MacBookPro18,1"
    assert rows["mini"].facts.supplemental_build is None
    assert rows["mini"].decision.outcome is Outcome.INSTALL


def test_mdm_ipad_reports_as_ipados_and_is_placed_under_ios(
    tmp_path: Path, catalog: Catalog
) -> None:
    ipad = {"OSVersion": "26.3.1", "BuildVersion": "23D8133", "ProductName": "iPad13,18"}
    (tmp_path / "ipad.json").write_text(json.dumps(device_information(**ipad)))
    rows = decide_fleet(tmp_path, catalog)
    assert rows["ipad"].facts.platform == "iOS"
    assert rows["ipad"].decision.outcome is Outcome.INSTALL


def test_osquery_array_as_osqueryi_prints_it(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "hosts.json").write_text(json.dumps(OSQUERY_ROWS))
    rows = decide_fleet(tmp_path, catalog, form=InventoryFormat.OSQUERY)
    studio = rows["4C4C4544-0001"]
    assert (str(studio.facts.build), str(studio.facts.supplemental_build)) == (
        "25D2128",
        "25D771280a",
    )
    assert studio.decision.reason is Reason.SUPPLEMENT_INSTALLED
    ghost = rows["4C4C4544-0002"]
    assert (ghost.decision.outcome, ghost.decision.reason) == (
        Outcome.UNKNOWN,
        Reason.UNKNOWN_BUILD,
    )


def test_osqueryd_results_log_lines(tmp_path: Path, catalog: Catalog) -> None:
    log = tmp_path / "osqueryd.results.log"
    lines = [
        {"name": "pack_bsi_os", "hostIdentifier": f"host-{i}", "columns": row, "action": "added"}
        for i, row in enumerate(OSQUERY_ROWS)
    ]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    rows = decide_fleet(log, catalog)
    assert rows["4C4C4544-0001"].decision.reason is Reason.SUPPLEMENT_INSTALLED


def test_debian_row_reads_version_from_major_minor(tmp_path: Path, catalog: Catalog) -> None:
    row = {"name": "Debian GNU/Linux", "version": "12 (bookworm)", "major": "12", "minor": "5",
           "patch": "0", "build": "", "platform": "debian", "uuid": "deb-1"}  # fmt: skip
    (tmp_path / "deb.json").write_text(json.dumps([row]))
    rows = decide_fleet(tmp_path, catalog)
    # no build reported: bsi cannot place it
    assert rows["deb-1"].decision.reason is Reason.NOT_REPORTED


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (device_information(OSVersion="26.3.1", ProductName="Mac14,2"), "BuildVersion"),
        (device_information(**{**MAC_ON_A, "ProductName": "Toaster1,1"}), "Toaster1,1"),
        (device_information(**{**MAC_ON_A, "BuildVersion": "25d2128"}), "build-version"),
        ([{**OSQUERY_ROWS[0], "build": 25}], "column 'build'"),
    ],
)
def test_a_malformed_record_is_refused_with_its_file(
    tmp_path: Path, catalog: Catalog, content: Any, expected: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(InvalidStatusReport) as refused:
        load_fleet(tmp_path)
    assert str(bad) in refused.value.message
    assert expected in refused.value.message
    fleet = load_fleet(tmp_path, skip_invalid=True)
    assert [u.location.split("[")[0] for u in fleet.unreadable] == [str(bad)]


def test_mixed_fleet_on_the_command_line(tmp_path: Path, real_catalogue: list[str]) -> None:
    """DDM + MDM + osquery in one folder: CVE-2026-20643 counted by hand.

    Exposed: mini (MDM, no supplement), air (DDM, on 25D2128). Fixed: mbp (MDM),
    4C4C4544-0001 (osquery). Unknown: 4C4C4544-0002 (build 25D9999) and bad
    (an unreadable record, listed with --skip-invalid).
    """
    (tmp_path / "mbp.plist").write_bytes(plistlib.dumps(device_information(**MAC_ON_A)))
    (tmp_path / "mini.json").write_text(json.dumps(device_information(**MAC_WITHOUT)))
    (tmp_path / "air.json").write_text(json.dumps(macos_report()))
    (tmp_path / "hosts.json").write_text(json.dumps(OSQUERY_ROWS))
    (tmp_path / "bad.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "bsi", "apple", "compliance", *real_catalogue,
         "--reports", str(tmp_path), "--at", "2026-03-20T12:00:00Z", "--skip-invalid", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    (cve,) = [c for c in document["cves"] if c["cve"] == "CVE-2026-20643"]
    assert sorted(cve["exposed_devices"]) == ["air", "mini"]
    assert sorted(cve["fixed_devices"]) == ["4C4C4544-0001", "mbp"]
    assert sorted(cve["unknown_devices"]) == ["4C4C4544-0002", "bad"]
    assert cve["restart_pending_devices"] == []
    assert (cve["exposed"], cve["fixed"], cve["unknown"], cve["restart_pending"]) == (2, 2, 2, 0)
    outcomes = {d["device_id"]: (d["outcome"], d["reason"]) for d in document["devices"]}
    assert outcomes["bad"] == ("unknown", "status-invalid")

    refused = subprocess.run(
        [sys.executable, "-m", "bsi", "apple", "compliance", *real_catalogue,
         "--reports", str(tmp_path), "--reports-format", "mdm", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "air.json" in refused.stderr
