"""The admin API on the real server: catalogue, steering, devices, compliance, exports."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

from bsi.apple.sample import fleet_path
from bsi.domain.declarations import software_update_settings
from reports import macos_report, supplemental_report
from running import run_bsi
from server_support import RunningServer

NDJSON = {"content-type": "application/x-ndjson"}


REAL_CATALOGUE = ("gdmf_cached.json", "macos_data_feed.json", "ios_data_feed.json")


def import_real_catalogue(server: RunningServer, shared_data: Path) -> None:
    for name in REAL_CATALOGUE:
        response = server.admin.post(
            "/v1/admin/catalog",
            params={"source": name},
            content=(shared_data / "sofa" / name).read_bytes(),
        )
        assert response.status_code == 200, response.text


def report_sample_fleet(server: RunningServer) -> dict[str, str]:
    """Enroll one device per sample report and send its reports; returns name -> device id."""
    ids = {}
    for path in sorted(fleet_path().glob("*.json")):
        device_id, device = server.device()
        reports = json.loads(path.read_text())
        for report in reports if isinstance(reports, list) else [reports]:
            assert device.put("/v1/ddm/status", json=report).status_code == 200
        ids[path.stem] = device_id
    return ids


def test_compliance_on_apples_real_catalogue(server: RunningServer, shared_data: Path) -> None:
    import_real_catalogue(server, shared_data)
    ids = report_sample_fleet(server)
    server.recompute()
    reader = server.reader

    air = reader.get(f"/v1/admin/devices/{ids['mbair-m2-ops01']}").json()
    assert (air["decision_outcome"], air["decision_supplement_build"]) == ("install", "25D771280a")
    neo = reader.get(f"/v1/admin/devices/{ids['macbook-neo-03']}").json()
    assert neo["decision_supplement_build"] == "25D771400a"

    rows = {r["build"]: r for r in reader.get("/v1/admin/compliance/supplements").json()}
    macos_a = rows["25D771280a"]
    assert (macos_a["installed"], macos_a["pending"]) == (1, 2)
    assert macos_a["blocked_by_reason"] == {"not-latest-minor": 1}
    assert rows["23D771330a"]["installed"] == 1

    (cve,) = [
        c for c in reader.get("/v1/admin/compliance/cves").json() if c["cve"] == "CVE-2026-20643"
    ]
    assert cve["exposed"] == 4

    blocked = reader.get("/v1/admin/devices", params={"reason": "not-latest-minor"}).json()
    assert [d["device_id"] for d in blocked["devices"]] == [ids["macmini-m2-build04"]]

    # The offline report on the same fleet and catalogue, at the server's instant, prints
    # each supplement and CVE in the same shape with the same counts.
    catalogs = [f"--catalog={shared_data / 'sofa' / name}" for name in REAL_CATALOGUE]
    at = server.clock().isoformat()
    offline = run_bsi(
        "apple", "compliance", *catalogs, "--reports", fleet_path(), "--at", at, "--json"
    )
    assert offline.returncode == 0, offline.stderr
    document = json.loads(offline.stdout)
    assert len(document["supplements"]) >= 3
    assert {r["build"]: r for r in document["supplements"]}.items() <= rows.items()
    served = {c["cve"]: c for c in reader.get("/v1/admin/compliance/cves").json()}
    for exposure in document["cves"]:
        counts = {k: v for k, v in exposure.items() if not k.endswith("_devices")}
        assert served[exposure["cve"]] == counts
        assert len(exposure["exposed_devices"]) == counts["exposed"]
    on_a = reader.get("/v1/admin/devices", params={"extra_version": "a"}).json()["devices"]
    assert {d["device_id"] for d in on_a} == {ids["mbp-m1-dev02"], ids["iphone16-07"]}


def test_pausing_a_supplement_blocks_it_and_resuming_offers_it_again(
    server: RunningServer, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    device_id, device = server.device()
    device.put("/v1/ddm/status", json=macos_report())
    admin = server.admin
    assert admin.post("/v1/admin/supplements/macOS/25D771280a/pause").status_code == 200
    server.recompute()
    assert (
        admin.get(f"/v1/admin/devices/{device_id}").json()["decision_reason"] == "supplement-paused"
    )
    listed = {s["build"]: s["state"] for s in admin.get("/v1/admin/supplements").json()}
    assert listed["25D771280a"] == "paused"
    # a later import of Apple's feed keeps the admin's pause
    import_real_catalogue(server, shared_data)
    listed = {s["build"]: s["state"] for s in admin.get("/v1/admin/supplements").json()}
    assert listed["25D771280a"] == "paused"
    assert admin.post("/v1/admin/supplements/macOS/25D771280a/resume").status_code == 200
    server.recompute()
    assert (
        admin.get(f"/v1/admin/devices/{device_id}").json()["decision_reason"] == "offered-to-user"
    )
    assert admin.post("/v1/admin/supplements/macOS/25D771280a/withdraw").status_code == 200
    server.recompute()
    assert admin.get(f"/v1/admin/devices/{device_id}").json()["decision_reason"] == (
        "supplement-withdrawn"
    )
    # withdrawn is final: no resume, no re-publishing by a later import of any feed
    refused = admin.post("/v1/admin/supplements/macOS/25D771280a/resume")
    assert refused.status_code == 409, refused.text
    assert "withdrawn is final" in refused.json()["message"]
    import_real_catalogue(server, shared_data)
    history = (shared_data / "sofa" / "bsi_history.ndjson").read_bytes()
    assert admin.post("/v1/admin/catalog", content=history, headers=NDJSON).status_code == 200
    listed = {s["build"]: s["state"] for s in admin.get("/v1/admin/supplements").json()}
    assert listed["25D771280a"] == "withdrawn"


def test_a_supplement_live_gdmf_stops_listing_is_withdrawn_on_import(
    server: RunningServer, shared_data: Path
) -> None:
    gdmf = json.loads((shared_data / "sofa" / "gdmf_cached.json").read_text())
    admin = server.admin
    assert admin.post("/v1/admin/catalog", json=gdmf).status_code == 200
    macos = gdmf["data"]["PublicBackgroundSecurityImprovements"]["macOS"]
    gdmf["data"]["PublicBackgroundSecurityImprovements"]["macOS"] = [
        entry for entry in macos if entry["Build"] != "25D771280a"
    ]
    assert admin.post("/v1/admin/catalog", json=gdmf).status_code == 200
    listed = {s["build"]: s["state"] for s in admin.get("/v1/admin/supplements").json()}
    assert (listed["25D771280a"], listed["25D771400a"]) == ("withdrawn", "published")
    history = (shared_data / "sofa" / "bsi_history.ndjson").read_bytes()
    assert admin.post("/v1/admin/catalog", content=history, headers=NDJSON).status_code == 200
    listed = {s["build"]: s["state"] for s in admin.get("/v1/admin/supplements").json()}
    assert listed["25D771280a"] == "withdrawn"


def test_group_policy_steers_decisions(server: RunningServer, shared_data: Path) -> None:
    import_real_catalogue(server, shared_data)
    admin = server.admin
    admin.post("/v1/admin/groups", json={"name": "frozen"})
    declaration = software_update_settings("no-bsi", install_security_update="AlwaysOff")
    admin.put("/v1/admin/declarations/no-bsi", json=declaration.to_json())
    admin.put("/v1/admin/declarations/no-bsi/groups/frozen")
    frozen_id, frozen = server.device("frozen")
    normal_id, normal = server.device()
    for device in (frozen, normal):
        device.put("/v1/ddm/status", json=macos_report())
    reasons = {
        d["device_id"]: d["decision_reason"]
        for d in admin.get("/v1/admin/devices").json()["devices"]
    }
    assert reasons == {frozen_id: "policy-always-off", normal_id: "offered-to-user"}
    listed = admin.get("/v1/admin/declarations").json()
    assert [(d["Identifier"], d["groups"]) for d in listed] == [("no-bsi", ["frozen"])]


def test_patch_window_percentiles_from_posting_to_installation(
    server: RunningServer, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    devices = [server.device() for _ in range(4)]
    for _, device in devices:
        device.put("/v1/ddm/status", json=macos_report())
    # posted 2026-03-17 00:00 UTC; the clock starts 2026-03-20 12:00 (3.5 days later)
    start = server.clock.now
    for hours_later, (_, device) in zip((0, 12, 24, 48), devices, strict=True):
        server.clock.now = start + timedelta(hours=hours_later)
        device.put("/v1/ddm/status", json=supplemental_report("25D771280a"))
    windows = {w["build"]: w for w in server.reader.get("/v1/admin/patch-windows").json()}
    window = windows["25D771280a"]
    assert window["devices"] == 4
    day = 86_400
    assert window["seconds"]["p50"] == 3.5 * day + 12 * 3600  # 2nd of 4 (nearest rank)
    assert window["seconds"]["p90"] == 3.5 * day + 48 * 3600
    assert window["seconds"]["p99"] == 3.5 * day + 48 * 3600
    per_device = server.reader.get("/v1/admin/patch-windows", params={"per_device": True}).json()
    assert len(per_device) == 4


def test_exports_in_json_and_csv(server: RunningServer, shared_data: Path) -> None:
    import_real_catalogue(server, shared_data)
    report_sample_fleet(server)
    server.recompute()
    reader = server.reader
    devices_csv = reader.get("/v1/admin/devices", params={"format": "csv", "limit": 1000})
    assert devices_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(devices_csv.text)))
    assert len(rows) == len(list(fleet_path().glob("*.json")))
    assert {"device_id", "decision_reason", "supplemental_build"} <= set(rows[0])
    supplements_csv = reader.get("/v1/admin/compliance/supplements", params={"format": "csv"})
    assert "25D771280a" in supplements_csv.text
    assert "CVE-2026-20643" in reader.get("/v1/admin/compliance/cves?format=csv").text
    catalog = reader.get("/v1/admin/catalog").json()
    assert catalog["format"] == "bsi-catalog/1"


def test_stale_devices_and_last_seen(server: RunningServer) -> None:
    silent_id, _ = server.device()
    active_id, active = server.device()
    active.get("/v1/ddm/tokens")
    server.service.flush_last_seen()
    stale = server.reader.get("/v1/admin/devices", params={"stale_hours": 1}).json()["devices"]
    assert [d["device_id"] for d in stale] == [silent_id]
    server.clock.advance(hours=2)
    stale = server.reader.get("/v1/admin/devices", params={"stale_hours": 1}).json()["devices"]
    assert {d["device_id"] for d in stale} == {silent_id, active_id}


def test_pagination_walks_every_device_once(server: RunningServer) -> None:
    enrolled = {server.enroll()[0] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"after": cursor} if cursor else {})}
        page = server.reader.get("/v1/admin/devices", params=params).json()
        seen += [d["device_id"] for d in page["devices"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(enrolled)


def test_openapi_docs_are_served(server: RunningServer) -> None:
    assert server.client().get("/docs").status_code == 200
    paths = server.client().get("/openapi.json").json()["paths"]
    assert {"/v1/ddm/tokens", "/v1/enroll", "/v1/admin/devices"} <= set(paths)


def test_mixed_fleet_counts_exposed_unknown_restart_pending_and_fixed(
    server: RunningServer, shared_data: Path
) -> None:
    """CVE-2026-20643 on the sample fleet plus three devices bsi must not call fixed.

    Hand count at 2026-03-20: exposed 4 (neo, mac mini on 26.2, studio, air), fixed 1
    (mbp-m1-dev02 runs (a)); unknown 2 (one never reported, one on a build Apple never
    published); restart pending 1 ((a) on disk, old content still running). The iPhones,
    the iPad and the Intel Mac are not concerned (iOS's (a) lists no CVE; below 26.1).
    """
    import_real_catalogue(server, shared_data)
    ids = report_sample_fleet(server)
    silent, _ = server.device()
    ghost, ghost_client = server.device()
    ghost_client.put("/v1/ddm/status", json=macos_report(build="25D9999"))
    pending, pending_client = server.device()
    on_disk = macos_report(supplemental="25D771280a", extra="(a)")
    on_disk["StatusItems"]["bsi"] = {"agent": {"restart-pending": True}}
    pending_client.put("/v1/ddm/status", json=on_disk)
    server.recompute()
    reader = server.reader

    (cve,) = [
        c for c in reader.get("/v1/admin/compliance/cves").json() if c["cve"] == "CVE-2026-20643"
    ]
    assert (cve["exposed"], cve["unknown"], cve["restart_pending"], cve["fixed"]) == (4, 2, 1, 1)
    exported = list(
        csv.DictReader(io.StringIO(reader.get("/v1/admin/compliance/cves?format=csv").text))
    )
    (row,) = [r for r in exported if r["cve"] == "CVE-2026-20643"]
    assert (row["unknown"], row["restart_pending"]) == ("2", "1")

    rows = {r["build"]: r for r in reader.get("/v1/admin/compliance/supplements").json()}
    assert (rows["25D771280a"]["installed"], rows["25D771280a"]["restart_pending"]) == (1, 1)
    assert rows["25D771280a"]["unknown"] == 2
    assert rows["23D771330a"]["unknown"] == 1  # the silent device might be an iPhone

    unknown = reader.get("/v1/admin/devices", params={"outcome": "unknown"}).json()["devices"]
    assert {d["device_id"]: d["decision_reason"] for d in unknown} == {
        silent: "not-reported",
        ghost: "unknown-build",
    }
    not_reported = reader.get("/v1/admin/devices", params={"reason": "not-reported"}).json()
    assert [d["device_id"] for d in not_reported["devices"]] == [silent]
    waiting = reader.get("/v1/admin/devices", params={"outcome": "restart-pending"}).json()
    assert [d["device_id"] for d in waiting["devices"]] == [pending]
    assert ids["mbp-m1-dev02"] not in {d["device_id"] for d in unknown}

    refused = reader.get("/v1/admin/devices", params={"outcome": "unknwon"})
    assert refused.status_code in (400, 422)

    windows = {w["build"]: w for w in reader.get("/v1/admin/patch-windows").json()}
    assert (windows["25D771280a"]["unknown"], windows["25D771280a"]["restart_pending"]) == (2, 1)


def test_inventory_import_shows_devices_not_on_ddm(
    server: RunningServer, shared_data: Path
) -> None:
    """MDM DeviceInformation (JSON and plist) and osquery rows become devices with decisions."""
    import plistlib

    import_real_catalogue(server, shared_data)
    admin = server.admin
    mdm = {
        "UDID": "00008112-AAAA",
        "QueryResponses": {
            "OSVersion": "26.3.1",
            "BuildVersion": "25D2128",
            "SupplementalBuildVersion": "25D2128",
            "SupplementalOSVersionExtra": "",
            "ProductName": "Mac14,2",
            "UDID": "00008112-AAAA",
        },
    }
    rows = [
        {"name": "macOS", "version": "26.3.1", "build": "25D771280a", "extra": "(a)",
         "platform": "darwin", "uuid": "4C4C4544-0001", "hardware_model": "Mac14,2"},
        {"name": "macOS", "version": "26.3.1", "build": "25D9999", "extra": "",
         "platform": "darwin", "uuid": "4C4C4544-0002", "hardware_model": "Mac14,2"},
    ]  # fmt: skip
    bad = [mdm, {"QueryResponses": {"OSVersion": "26.3.1", "UDID": "00008112-CCCC"}}]
    refused = admin.post("/v1/admin/inventory", json=bad)
    assert refused.status_code == 400, refused.text
    assert "body[1]" in refused.json()["message"]
    assert "BuildVersion" in refused.json()["message"]
    assert admin.get("/v1/admin/devices").json()["devices"] == []  # nothing stored
    # A bare DDM report names no device: refused, not stored under a placeholder id.
    ddm = {"StatusItems": {"device": {"operating-system": {"family": "macOS"}}}, "Errors": []}
    anonymous = admin.post("/v1/admin/inventory", json=[ddm])
    assert anonymous.status_code == 400, anonymous.text
    assert anonymous.json()["message"].startswith('body[0]: each record needs a "device_id"')
    assert '"report"' in anonymous.json()["hint"]
    not_a_report = admin.post("/v1/admin/inventory", json=[mdm, {"device_id": "x", "report": 1}])
    assert not_a_report.status_code == 400, not_a_report.text
    assert not_a_report.json()["message"] == "body[1]: a status report must be an object, not 1"
    assert admin.get("/v1/admin/devices").json()["devices"] == []

    assert admin.post("/v1/admin/inventory", json=mdm).json() == {"devices": 1, "created": 1}
    ndjson = "\n".join(json.dumps({"hostIdentifier": "h", "columns": r}) for r in rows)
    done = admin.post("/v1/admin/inventory", content=ndjson, headers=NDJSON)
    assert done.json() == {"devices": 2, "created": 2}, done.text
    plist = plistlib.dumps({**mdm, "UDID": "00008112-BBBB"} | {"QueryResponses": {
        **mdm["QueryResponses"], "UDID": "00008112-BBBB", "ProductName": "iPad13,18",
        "BuildVersion": "23D8133", "SupplementalBuildVersion": ""}})  # fmt: skip
    ipad = admin.post(
        "/v1/admin/inventory", content=plist, headers={"content-type": "application/x-plist"}
    )
    assert ipad.status_code == 200, ipad.text
    server.recompute()

    devices = {d["device_id"]: d for d in admin.get("/v1/admin/devices").json()["devices"]}
    assert devices["00008112-AAAA"]["decision_outcome"] == "install"
    assert devices["00008112-AAAA"]["supplemental_build"] is None
    assert devices["4C4C4544-0001"]["decision_reason"] == "supplement-installed"
    assert devices["4C4C4544-0002"]["decision_reason"] == "unknown-build"
    assert devices["00008112-BBBB"]["platform"] == "iPadOS"
    assert devices["00008112-BBBB"]["decision_outcome"] == "install"
