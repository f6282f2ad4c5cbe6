"""One strict input layer: every case that used to answer 500 (or store what could not
be read back) now gets a clear 4xx and changes nothing."""

from __future__ import annotations

import base64
import json
import math
import plistlib
from typing import Any

import httpx
import pytest

from bsi.domain.declarations import software_update_settings
from bsi.server.nanomdm import HMAC_HEADER
from nanomdm_client import sign
from reports import macos_report
from server_support import WEBHOOK_KEY, RunningServer


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


def test_a_status_report_with_a_key_written_twice_is_refused_and_changes_nothing(
    server: RunningServer,
) -> None:
    """RFC 8259 4: parsers disagree on which of two equal keys wins, so a proxy or
    NanoMDM could read another supplement than bsi stores; the report is refused whole."""
    device_id, device = server.device()
    stored = device.put("/v1/ddm/status", json=macos_report(supplemental="25D2128a", extra="(a)"))
    assert stored.status_code == 200, stored.text
    before = server.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    twice = json.dumps(macos_report(supplemental="25D2128b", extra="(b)")).replace(
        '"extra-version": "(b)"', '"extra-version": "(b)", "extra-version": "(a)"'
    )
    response = device.put("/v1/ddm/status", content=twice.encode())
    assert response.status_code == 400, response.text
    refusal = response.json()
    assert "key 'extra-version' appears twice in one object" in refusal["message"]
    assert "StatusItems.device['operating-system'].supplemental" in refusal["message"]
    assert "RFC 8259" in refusal["hint"]
    after = server.admin.get(f"/v1/admin/devices/{device_id}").json()["status_items"]
    assert after == before


def test_an_admin_body_with_a_key_written_twice_is_refused_and_nothing_stored(
    server: RunningServer,
) -> None:
    body = json.dumps(software_update_settings("twice").to_json())
    twice = body.replace('"Identifier": "twice"', '"Identifier": "twice", "Identifier": "other"')
    assert twice != body
    response = server.admin.put("/v1/admin/declarations/twice", content=twice.encode())
    assert response.status_code == 400, response.text
    assert "key 'Identifier' appears twice" in response.json()["message"]
    listed = server.admin.get("/v1/admin/declarations").json()
    assert "twice" not in json.dumps(listed)


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
    response = server.client().get(
        "/v1/ddm/tokens",
        headers={"Authorization": f"Bearer {variant}".encode()},  # type: ignore[dict-item]
    )
    assert response.status_code == 401


# -- the NanoMDM webhook and the inventory upload: one strict reader, as for every body ----


def _event(server: RunningServer, udid: str, message: dict[str, Any], **binary: bool) -> bytes:
    form = plistlib.FMT_BINARY if binary.get("binary") else plistlib.FMT_XML
    event = {
        "topic": "mdm.Authenticate",
        "created_at": server.clock().isoformat(),
        "checkin_event": {
            "ids": {"id": udid, "type": "Device"},
            "udid": udid,
            "raw_payload": base64.b64encode(plistlib.dumps(message, fmt=form)).decode(),
        },
    }
    return json.dumps(event).encode()


def _post_event(server: RunningServer, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/json", HMAC_HEADER: sign(WEBHOOK_KEY, body)}
    return server.client().post("/v1/nanomdm/webhook", content=body, headers=headers)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda body: body.replace(b'"Device"}', b'"Device", "n": ' + b"9" * 5000 + b"}"),
            "out of range",
        ),
        (
            lambda body: body.replace(b'"Device"}', b'"Device", "n": NaN}'),
            "NaN is not a JSON number",
        ),
        (lambda body: body.replace(b'"Device"}', b'"Device\\u0000"}'), "NUL"),
    ],
)
def test_a_webhook_event_is_read_strictly(server: RunningServer, change: Any, message: str) -> None:
    udid = "0000FE00-5A5A5A5A5A5A5A5A"
    body = change(_event(server, udid, {"MessageType": "Authenticate", "UDID": udid}))
    response = _post_event(server, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert server.admin.get(f"/v1/admin/devices/{udid}").status_code == 404


@pytest.mark.parametrize(
    ("serial", "udid_length", "message"),
    [
        ("C02\x00XK1Z", 25, "raw_payload: SerialNumber: a string contains a NUL character"),
        ("C02XK1ZJJGH5", 65, "udid is 65 characters long; the limit is 64"),
        ("S" * 65, 25, "serial_number is 65 characters long; the limit is 64"),
    ],
)
def test_a_webhook_plist_that_no_column_can_hold_is_refused_and_nothing_stored(
    server: RunningServer, serial: str, udid_length: int, message: str
) -> None:
    udid = "0000FE00-" + "5" * (udid_length - 9)
    plist = {"MessageType": "Authenticate", "UDID": udid, "SerialNumber": serial}
    response = _post_event(server, _event(server, udid, plist, binary=True))
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert server.admin.get(f"/v1/admin/devices/{udid}").status_code == 404


@pytest.mark.parametrize(
    ("content", "kind", "message"),
    [
        (
            plistlib.dumps(
                [{"device_id": "m1", "BatteryLevel": math.nan}], fmt=plistlib.FMT_BINARY
            ),
            "application/x-plist",
            "request body: [0].BatteryLevel: nan is not a finite number",
        ),
        (
            b'{"device_id": "m1", "x": 1}\n{"device_id": "m2", "x": -Infinity}\n',
            "application/x-ndjson",
            "request body: line 2: x: -Infinity is not a JSON number",
        ),
        (b'{"device_id": "m1"}\n\xff\n', "application/x-ndjson", "not UTF-8"),
    ],
)
def test_an_inventory_upload_is_read_strictly(
    server: RunningServer, content: bytes, kind: str, message: str
) -> None:
    response = server.admin.post(
        "/v1/admin/inventory", content=content, headers={"content-type": kind}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert server.admin.get("/v1/admin/devices/m1").status_code == 404


def test_a_catalogue_history_upload_with_nan_is_refused_whole(server: RunningServer) -> None:
    history = (
        '{"platform": "macOS", "product_version": "26.3.1", "build": "25D2128",'
        ' "first_seen": "2026-03-17", "size": NaN}\n'
        '{"platform": "macOS", "product_version": "26.3.2", "build": "25D3000",'
        ' "first_seen": "2026-03-18"}\n'
    )
    before = server.reader.get("/v1/admin/catalog").json()
    response = server.admin.post(
        "/v1/admin/catalog?source=history",
        content=history.encode(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert response.status_code == 400, response.text
    assert "history: line 1: size: NaN is not a JSON number" in response.json()["message"]
    assert server.reader.get("/v1/admin/catalog").json() == before
