"""Device lifecycle: revoke, decommission (history kept), re-enrol.

A revoked or decommissioned device gets 401 on every DDM endpoint: at once
from the process that revoked it, within ``revocation_poll_seconds`` (1 s)
from every other process, including the workers of ``bsi serve --workers 2``.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bsi.apple import sample
from bsi.feeds import dump_bsi_catalog
from nanomdm_client import DmHook, device
from pgcluster import create_database
from reports import macos_report, supplemental_report
from running import bsi_serve, run_bsi
from server_support import HMAC_KEY, RunningServer

DDM_CALLS = [
    ("GET", "/v1/ddm/tokens"),
    ("GET", "/v1/ddm/declaration-items"),
    ("GET", "/v1/ddm/declaration/configuration/bsi.x"),
    ("GET", "/v1/ddm/catalog?platform=debian"),
    ("GET", "/v1/ddm/wait?timeout=0.1"),
    ("GET", "/v1/ddm/status"),
    ("PUT", "/v1/ddm/status"),
]


def ddm_codes(client: httpx.Client) -> set[int]:
    return {
        client.request(method, path, json=macos_report() if method == "PUT" else None).status_code
        for method, path in DDM_CALLS
    }


def test_a_revoked_device_is_refused_everywhere_and_re_enrolment_gives_a_new_credential(
    server: RunningServer,
) -> None:
    device_id, device = server.device()
    _, bystander = server.device()
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    assert 401 not in ddm_codes(device)
    admin = server.admin
    assert server.reader.post(f"/v1/admin/devices/{device_id}/revoke").status_code == 403
    revoked = admin.post(f"/v1/admin/devices/{device_id}/revoke")
    assert revoked.json() == {"device_id": device_id, "lifecycle": "revoked"}
    assert ddm_codes(device) == {401}
    assert 401 not in ddm_codes(bystander)
    record = admin.get(f"/v1/admin/devices/{device_id}").json()
    assert record["lifecycle"] == "revoked"
    assert record["build"] == "25D2128"  # the record stays
    again = admin.post(f"/v1/admin/devices/{device_id}/re-enroll")
    assert again.status_code == 201
    fresh = server.client(again.json()["credential"])
    assert 401 not in ddm_codes(fresh)
    assert ddm_codes(device) == {401}  # the old credential stays refused
    assert admin.get(f"/v1/admin/devices/{device_id}").json()["lifecycle"] == "active"
    assert admin.post("/v1/admin/devices/nope/revoke").status_code == 404
    assert admin.post("/v1/admin/devices/nope/re-enroll").status_code == 404


def test_a_decommissioned_device_keeps_its_history_and_leaves_the_lists(
    server: RunningServer,
) -> None:
    admin = server.admin
    assert admin.post("/v1/admin/catalog", json=dump_bsi_catalog(sample.catalog())).is_success
    device_id, device = server.device()
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    assert device.put("/v1/ddm/status", json=supplemental_report("25D771280a")).status_code == 200

    def installed() -> int:
        rows = admin.get("/v1/admin/compliance/supplements").json()
        count: int = {r["build"]: r["installed"] for r in rows}["25D771280a"]
        return count

    assert installed() == 1
    assert admin.delete(f"/v1/admin/devices/{device_id}").status_code == 204
    assert ddm_codes(device) == {401}
    listed = [d["device_id"] for d in admin.get("/v1/admin/devices").json()["devices"]]
    assert device_id not in listed
    gone = admin.get("/v1/admin/devices", params={"lifecycle": "decommissioned"}).json()
    assert [d["device_id"] for d in gone["devices"]] == [device_id]
    record = admin.get(f"/v1/admin/devices/{device_id}").json()
    assert (record["lifecycle"], record["supplemental_build"]) == ("decommissioned", "25D771280a")
    assert installed() == 0
    changes = server.service.stores.devices.build_changes(["25D771280a"])
    assert [c.device_id for c in changes] == [device_id]  # history kept


def test_a_revoked_nanomdm_enrollment_is_refused(server: RunningServer) -> None:
    mac = device(str(uuid.uuid4()).upper())
    imported = server.admin.post(
        "/v1/admin/enrollments", json={"enrollments": [{"enrollment_id": mac.id}]}
    )
    assert imported.status_code == 200, imported.text
    nanomdm = DmHook(
        server.url + "/v1/ddm/",
        send_key=HMAC_KEY,
        recv_key=HMAC_KEY,
        client=server.http(follow_redirects=True),
    )
    assert nanomdm.request(mac, "tokens").status_code == 200
    assert server.admin.post(f"/v1/admin/devices/{mac.id}/revoke").status_code == 200
    assert nanomdm.request(mac, "tokens").status_code == 401
    assert server.admin.post(f"/v1/admin/devices/{mac.id}/re-enroll").status_code == 201
    assert nanomdm.request(mac, "tokens").status_code == 200


def bsi(*args: str | Path, **env: str) -> str:
    done = run_bsi(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_revocation_reaches_every_worker_within_the_poll_interval(
    request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    """--workers 2: requests land on both processes; all refuse within 1 s (+ a poll)."""
    if database == "sqlite":
        where: tuple[str | Path, ...] = ("--data-dir", tmp_path / "data")
        bsi("db", "upgrade", *where)
    else:
        url = create_database(request.getfixturevalue("postgres_base"), f"bsi_wk_{os.getpid()}")
        where = ("--database-url", url)
        bsi("db", "upgrade", *where)
    key = bsi("api-key", "create", "ops", "--role", "admin", *where)
    with bsi_serve(*where, "--workers", "2", timeout=120) as url:
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        token = admin.post("/v1/admin/enrollment-tokens", json={}).json()["token"]
        enrolled = httpx.post(f"{url}/v1/enroll", json={"token": token}).json()
        device = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {enrolled['credential']}"}
        )
        assert {device.get("/v1/ddm/tokens").status_code for _ in range(20)} == {200}
        assert admin.post(f"/v1/admin/devices/{enrolled['device_id']}/revoke").status_code == 200
        revoked_at = time.monotonic()
        last_accepted = revoked_at
        while time.monotonic() - revoked_at < 3:
            if device.get("/v1/ddm/tokens").status_code != 401:
                last_accepted = time.monotonic()
        window = last_accepted - revoked_at
        print(f"\nlast request accepted {window * 1000:.0f} ms after the revocation")
        assert window < 1.5
        assert {device.get("/v1/ddm/tokens").status_code for _ in range(20)} == {401}
