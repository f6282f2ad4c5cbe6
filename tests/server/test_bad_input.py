"""Bad input gets a clear 4xx and changes nothing; no input gets a 5xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bsi.domain.declarations import software_update_settings
from reports import macos_report
from server_support import RunningServer

NASTY_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"42",
    b'"text"',
    b"\xff\xfe\x00",
    b'{"StatusItems": null}',
    b'{"StatusItems": {"device": "flat"}}',
    b'{"StatusItems": {}, "Errors": "none"}',
    b"[" * 5000 + b"]" * 5000,
    json.dumps({"a": [{"b": {"c": [[[[[[[[[[[[[[[]]]]]]]]]]]]]]]}}]}).encode(),
    b'{"Type": "com.apple.configuration.softwareupdate.settings"}',
]


def state_of(server: RunningServer, device_id: str) -> Any:
    return server.admin.get(f"/v1/admin/devices/{device_id}").json()


@pytest.fixture
def reported(server: RunningServer) -> tuple[str, httpx.Client]:
    device_id, device = server.device()
    assert device.put("/v1/ddm/status", json=macos_report()).is_success
    return device_id, device


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"Errors": []}', "StatusItems"),
        (b'{"StatusItems": {}, "FullReport": 1}', "FullReport"),
    ],
)
def test_bad_status_reports_are_refused_and_change_nothing(
    server: RunningServer, reported: tuple[str, httpx.Client], body: bytes, message: str
) -> None:
    device_id, device = reported
    before = state_of(server, device_id)
    response = device.put("/v1/ddm/status", content=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    after = state_of(server, device_id)
    assert {k: v for k, v in after.items() if k != "last_seen_at"} == {
        k: v for k, v in before.items() if k != "last_seen_at"
    }


def test_a_report_with_one_bad_item_stores_the_rest_and_shows_the_error(
    server: RunningServer, reported: tuple[str, httpx.Client]
) -> None:
    device_id, device = reported
    assert state_of(server, device_id)["decision_outcome"] is not None
    report = macos_report(build="25-D-2128", version="26.4")
    report["StatusItems"]["passcode"] = {"is-present": True}
    response = device.put("/v1/ddm/status", json=report)
    assert response.status_code == 200, response.text
    after = state_of(server, device_id)
    assert after["status_items"]["passcode.is-present"] is True
    assert after["product_version"] == "26.4"
    (finding,) = after["status_invalid"]
    assert finding["path"] == "device.operating-system.build-version"
    assert "'25-D-2128'" in finding["reason"]
    # the build it last reported validly is no longer trusted: unknown, counted as such
    assert after["build"] == "25D2128"
    assert (after["decision_outcome"], after["decision_reason"]) == ("unknown", "status-invalid")
    assert "device.operating-system.build-version" in after["decision_message"]
    assert device.put("/v1/ddm/status", json=macos_report(version="26.4")).is_success
    assert state_of(server, device_id)["status_invalid"] == []


def test_oversized_bodies_are_refused_before_reading(
    server: RunningServer, reported: tuple[str, httpx.Client]
) -> None:
    device_id, device = reported
    before = state_of(server, device_id)["status_items"]
    big = macos_report()
    big["StatusItems"]["vendor"] = {"blob": "x" * 100_000}
    response = device.put("/v1/ddm/status", json=big)
    assert response.status_code == 413
    assert "limit" in response.json()["message"]

    def chunks() -> Any:
        yield b'{"StatusItems": {"vendor": {"blob": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}}}'

    streamed = device.put("/v1/ddm/status", content=chunks())
    assert streamed.status_code == 413
    assert state_of(server, device_id)["status_items"] == before


@pytest.mark.parametrize(
    ("declaration", "status", "expected"),
    [
        (
            {"Type": "com.example.unknown", "Identifier": "x", "ServerToken": "1", "Payload": {}},
            400,
            "unknown-type",
        ),
        (
            {
                **software_update_settings("x").to_json(),
                "Payload": {"AutomaticActions": {"InstallSecurityUpdate": "Sometimes"}},
            },
            400,
            "rangelist",
        ),
        (
            {
                **software_update_settings("x").to_json(),
                "Payload": {"Deferrals": {"MajorPeriodInDays": 365}},
            },
            400,
            "range",
        ),
        ({**software_update_settings("other").to_json()}, 400, "does not match"),
        ({**software_update_settings("bsi.mine").to_json()}, 400, "reserved"),
    ],
)
def test_bad_declarations_are_refused_naming_the_rule(
    server: RunningServer, declaration: dict[str, Any], status: int, expected: str
) -> None:
    identifier = declaration["Identifier"] if declaration["Identifier"] != "other" else "x"
    response = server.admin.put(f"/v1/admin/declarations/{identifier}", json=declaration)
    assert response.status_code == status, response.text
    assert expected in json.dumps(response.json())
    assert server.admin.get("/v1/admin/declarations").json() == []


def test_a_broken_feed_is_refused_whole_and_the_catalogue_kept(
    server: RunningServer, shared_data: Path
) -> None:
    admin = server.admin
    good = (shared_data / "sofa" / "gdmf_cached.json").read_bytes()
    assert admin.post("/v1/admin/catalog", content=good).status_code == 200
    before = admin.get("/v1/admin/catalog").json()
    broken = json.loads(good)
    broken["data"]["PublicBackgroundSecurityImprovements"]["macOS"][0]["Build"] = "nonsense"
    response = admin.post("/v1/admin/catalog", params={"source": "upload"}, json=broken)
    assert response.status_code == 400
    assert "'nonsense'" in response.json()["message"]
    assert admin.post("/v1/admin/catalog", content=b"<html>").status_code == 400
    assert admin.get("/v1/admin/catalog").json() == before


def test_enrollment_refusals(server: RunningServer) -> None:
    anonymous = server.client()
    assert anonymous.post("/v1/enroll", json={"token": "guess"}).status_code == 403
    assert anonymous.post("/v1/enroll", json={}).status_code == 422
    assert anonymous.post("/v1/enroll", content=b"{oops").status_code == 400
    single = server.enrollment_token(max_uses=1)
    assert anonymous.post("/v1/enroll", json={"token": single}).status_code == 201
    used = anonymous.post("/v1/enroll", json={"token": single})
    assert used.status_code == 403
    assert "used up" in used.json()["message"]
    admin = server.admin
    assert admin.post("/v1/admin/enrollment-tokens", json={"group": "nope"}).status_code == 404
    assert (
        admin.post("/v1/admin/enrollment-tokens", json={"expires_in_hours": -1}).status_code == 422
    )
    assert admin.post("/v1/admin/groups", json={"name": "Bad Name!"}).status_code == 422


def test_unknown_things_are_404_and_unknown_actions_422(server: RunningServer) -> None:
    admin = server.admin
    assert admin.get("/v1/admin/devices/nope").status_code == 404
    assert admin.put("/v1/admin/declarations/nope/groups/default").status_code == 404
    assert admin.post("/v1/admin/supplements/macOS/25D771280a/pause").status_code == 404
    assert admin.post("/v1/admin/supplements/macOS/25D771280a/explode").status_code == 422
    assert admin.delete("/v1/admin/declarations/nope").status_code == 404


def test_no_input_produces_a_server_error(
    server: RunningServer, reported: tuple[str, httpx.Client]
) -> None:
    _, device = reported
    admin = server.admin
    targets = [
        (device, "PUT", "/v1/ddm/status"),
        (device, "GET", "/v1/ddm/tokens"),
        (admin, "POST", "/v1/admin/catalog"),
        (admin, "PUT", "/v1/admin/declarations/x"),
        (admin, "POST", "/v1/admin/enrollment-tokens"),
        (admin, "POST", "/v1/admin/groups"),
        (admin, "POST", "/v1/admin/api-keys"),
        (server.client(), "POST", "/v1/enroll"),
    ]
    failures = []
    for client, method, path in targets:
        for body in NASTY_BODIES:
            response = client.request(method, path, content=body)
            if response.status_code >= 500:
                failures.append((method, path, body[:40], response.status_code))
    assert failures == []
