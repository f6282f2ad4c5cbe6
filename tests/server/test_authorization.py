"""Who may call what: the authorisation matrix, on both backends.

Devices reach only the DDM endpoints and only their own state; the admin API
needs an API key; read-only keys cannot write; nothing is reachable without a
credential.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from bsi.domain.declarations import software_update_settings
from reports import macos_report
from server_support import RunningServer

DECLARATION = software_update_settings("matrix-test", rsr_enable=False).to_json()

Call = Callable[[httpx.Client], httpx.Response]
DDM_CALLS: dict[str, Call] = {
    "tokens": lambda c: c.get("/v1/ddm/tokens"),
    "declaration-items": lambda c: c.get("/v1/ddm/declaration-items"),
    "status write": lambda c: c.put("/v1/ddm/status", json=macos_report()),
    "status read": lambda c: c.get("/v1/ddm/status"),
}
ADMIN_READS: dict[str, Call] = {
    "devices": lambda c: c.get("/v1/admin/devices"),
    "compliance": lambda c: c.get("/v1/admin/compliance/supplements"),
    "catalogue": lambda c: c.get("/v1/admin/catalog"),
    "declarations": lambda c: c.get("/v1/admin/declarations"),
}
ADMIN_WRITES: dict[str, Call] = {
    "group": lambda c: c.post("/v1/admin/groups", json={"name": "matrix"}),
    "enrollment token": lambda c: c.post("/v1/admin/enrollment-tokens", json={}),
    "declaration": lambda c: c.put("/v1/admin/declarations/matrix-test", json=DECLARATION),
    "catalogue": lambda c: c.post(
        "/v1/admin/catalog", json={"format": "bsi-catalog/1", "supplements": []}
    ),
    "api key": lambda c: c.post("/v1/admin/api-keys", json={"name": "k", "role": "admin"}),
    "recompute": lambda c: c.post("/v1/admin/decisions/recompute"),
}


def codes(client: httpx.Client, calls: dict[str, Call]) -> dict[str, int]:
    return {name: call(client).status_code for name, call in calls.items()}


def test_anonymous_reaches_nothing(server: RunningServer) -> None:
    anonymous = server.client()
    for calls in (DDM_CALLS, ADMIN_READS, ADMIN_WRITES):
        assert set(codes(anonymous, calls).values()) == {401}
    garbage = server.client("not-a-credential")
    basic = server.client(Authorization="Basic dXNlcjpwYXNz")
    for client in (garbage, basic):
        assert set(codes(client, DDM_CALLS).values()) == {401}
        assert set(codes(client, ADMIN_READS).values()) == {401}


def test_a_device_reaches_its_ddm_endpoints_and_nothing_of_the_admin_api(
    server: RunningServer,
) -> None:
    _, device = server.device()
    assert set(codes(device, DDM_CALLS).values()) == {200}
    assert set(codes(device, ADMIN_READS).values()) == {401}
    assert set(codes(device, ADMIN_WRITES).values()) == {401}


def test_a_device_cannot_read_or_write_another_device(server: RunningServer) -> None:
    a_id, a = server.device()
    b_id, b = server.device()
    assert b.put(
        "/v1/ddm/status", json=macos_report(build="25D2140", device_id="J700AP")
    ).is_success
    before = server.admin.get(f"/v1/admin/devices/{b_id}").json()

    posing = {"X-Enrollment-ID": b_id}
    assert a.get("/v1/ddm/tokens", headers=posing).status_code == 403
    assert a.get("/v1/ddm/status", headers=posing).status_code == 403
    assert a.put("/v1/ddm/status", json=macos_report(), headers=posing).status_code == 403
    assert server.admin.get(f"/v1/admin/devices/{b_id}").json() == before

    # what a device reads back is its own state, never another's
    assert a.put("/v1/ddm/status", json=macos_report()).is_success
    own = a.get("/v1/ddm/status").json()["StatusItems"]
    assert own["device"]["operating-system"]["build-version"] == "25D2128"
    assert server.admin.get(f"/v1/admin/devices/{a_id}").json()["build"] == "25D2128"
    assert server.admin.get(f"/v1/admin/devices/{b_id}").json()["build"] == "25D2140"


def test_read_only_keys_read_but_never_write(server: RunningServer) -> None:
    reader = server.reader
    assert set(codes(reader, ADMIN_READS).values()) == {200}
    assert set(codes(reader, ADMIN_WRITES).values()) == {403}
    assert server.admin.get("/v1/admin/declarations").json() == []
    assert set(codes(reader, DDM_CALLS).values()) == {401}


def test_admin_keys_write_but_are_no_device_credential(server: RunningServer) -> None:
    admin = server.admin
    assert set(codes(admin, ADMIN_READS).values()) == {200}
    written = codes(admin, ADMIN_WRITES)
    assert all(200 <= code < 300 for code in written.values()), written
    assert set(codes(admin, DDM_CALLS).values()) == {401}


@pytest.mark.parametrize("role", ["admin", "read-only"])
def test_revoked_keys_stop_working(server: RunningServer, role: str) -> None:
    key = server.service.create_api_key(f"short-lived-{role}", role)
    client = server.client(key)
    assert client.get("/v1/admin/devices").status_code == 200
    server.service.stores.credentials.revoke_api_key(f"short-lived-{role}")
    assert client.get("/v1/admin/devices").status_code == 401
