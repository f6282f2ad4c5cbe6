"""One strict input layer: every case that used to answer 500 (or store what could not
be read back) now gets a clear 4xx and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bsi.domain.declarations import software_update_settings
from reports import macos_report
from server_support import RunningServer


def status_body(**vendor: Any) -> bytes:
    report = macos_report()
    report["StatusItems"]["vendor"] = {"x": "{VALUE}"}
    text = json.dumps(report)
    return text.replace('"{VALUE}"', vendor["raw"]).encode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("NaN", "NaN is not a JSON number"),
        ("Infinity", "Infinity is not a JSON number"),
        ("-Infinity", "Infinity is not a JSON number"),
        ("1e999", "too large for a double"),
        ("9" * 5000, "out of range"),
        ("9223372036854775808", "out of range"),
        ('"\\ud800"', "lone surrogate"),
        ('"a\\u0000b"', "NUL"),
    ],
)
def test_numbers_and_strings_no_database_can_hold_are_refused(
    server: RunningServer, raw: str, message: str
) -> None:
    device_id, device = server.device()
    response = device.put("/v1/ddm/status", content=status_body(raw=raw))
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    record = server.admin.get(f"/v1/admin/devices/{device_id}")
    assert record.status_code == 200
    assert record.json()["status_items"] == {}


def test_a_lone_surrogate_in_a_declaration_is_refused_and_reads_keep_working(
    server: RunningServer,
) -> None:
    body = json.dumps(software_update_settings("x").to_json()).replace('"x"', '"x\\udc00"', 1)
    body = body.replace('"Identifier": "x\\udc00"', '"Identifier": "x"')
    declaration = json.loads(body)
    declaration["ServerToken"] = "\udc00"
    raw = json.dumps(declaration).encode()
    response = server.admin.put("/v1/admin/declarations/x", content=raw)
    assert response.status_code == 400, response.text
    assert server.admin.get("/v1/admin/declarations").status_code == 200


def test_out_of_range_numbers_in_queries_and_bodies_are_4xx(server: RunningServer) -> None:
    assert server.reader.get("/v1/admin/devices", params={"stale_hours": "1e9"}).status_code == 422
    too_many = server.admin.post("/v1/admin/enrollment-tokens", json={"max_uses": 2**40})
    assert too_many.status_code == 422
    far = server.reader.get(
        "/v1/admin/devices", params={"seen_before": "0001-01-01T00:00:00+23:59"}
    )
    assert far.status_code in (400, 422)
    _, device = server.device()
    assert device.get("/v1/ddm/wait", params={"generation": 2**70}).status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/admin/devices/a%00b"),
        ("DELETE", "/v1/admin/declarations/x%00"),
        ("POST", "/v1/admin/devices/%01/revoke"),
    ],
)
def test_control_characters_in_paths_are_400(server: RunningServer, method: str, path: str) -> None:
    response = server.admin.request(method, path)
    assert response.status_code == 400, response.text
    assert "the URL path contains a" in response.json()["message"]


def test_nul_in_names_and_query_values_is_400(server: RunningServer) -> None:
    assert server.admin.post("/v1/admin/groups", json={"name": "a\u0000"}).status_code == 400
    listed = server.reader.get("/v1/admin/devices", params={"group": "a\x00"})
    assert listed.status_code == 400


@pytest.mark.parametrize(
    "spell", ["\N{SUPERSCRIPT TWO}", "\N{ARABIC-INDIC DIGIT TWO}", "\N{FULLWIDTH DIGIT TWO}"]
)
def test_a_credential_with_a_non_ascii_digit_is_401(server: RunningServer, spell: str) -> None:
    _, credential = server.enroll()
    prefix, device, _group, generation, mac = credential.split(".")
    variant = ".".join((prefix, device, spell, generation, mac))
    response = httpx.get(
        f"{server.url}/v1/ddm/tokens",
        headers={"Authorization": f"Bearer {variant}".encode()},  # type: ignore[dict-item]
    )
    assert response.status_code == 401
