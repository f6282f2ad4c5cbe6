"""bsi behind NanoMDM's ``-dm``: every request through a client that forwards as NanoMDM does."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest

from bsi.domain.declarations import software_update_settings, status_subscriptions
from bsi.errors import InvalidInput
from bsi.server.nanomdm import SignResponses, read_key_file
from bsi.server.service import SECURITY_EVENTS_PER_MINUTE
from nanomdm_client import (
    BodyHashInvalid,
    DmHook,
    EnrollId,
    HttpStatusError,
    Webhook,
    device,
    shared_ipad_user,
    user_channel,
    verify_response,
)
from reports import macos_report
from server_support import HMAC_KEY, WEBHOOK_KEY, RunningServer


def hook(server: RunningServer, prefix: str = "/v1/ddm/", **keys: bytes | None) -> DmHook:
    keys.setdefault("send_key", HMAC_KEY)
    keys.setdefault("recv_key", HMAC_KEY)
    client = server.http(follow_redirects=True)  # as NanoMDM follows them
    return DmHook(server.url + prefix, client=client, **keys)  # type: ignore[arg-type]


def webhook(server: RunningServer, key: bytes | None = WEBHOOK_KEY) -> Webhook:
    return Webhook(server.url + "/v1/nanomdm/webhook", key=key, client=server.http())


def new_udid() -> str:
    return str(uuid.uuid4()).upper()


def a_mac(server: RunningServer, serial: str = "C02XK1ZJJGH5") -> EnrollId:
    """A Mac enrolled in NanoMDM, which told bsi through its webhook."""
    mac = device(new_udid())
    events = webhook(server)
    assert events.authenticate(mac.id, serial, now=server.clock()).status_code == 200
    assert events.token_update(mac, now=server.clock()).status_code == 200
    return mac


def report_of(mac: EnrollId, serial: str = "C02XK1ZJJGH5", **versions: str) -> bytes:
    report = macos_report(**versions)
    report["StatusItems"]["device"]["identifier"] = {"udid": mac.id, "serial-number": serial}
    return json.dumps(report).encode()


def device_record(server: RunningServer, device_id: str) -> dict[str, object]:
    response = server.admin.get(f"/v1/admin/devices/{device_id}")
    assert response.status_code == 200, response.text
    record: dict[str, object] = response.json()
    return record


def security_events(server: RunningServer) -> list[dict[str, str]]:
    events: list[dict[str, str]] = server.admin.get("/v1/admin/security-events").json()
    return events


@pytest.mark.parametrize("prefix", ["/v1/ddm/", "/v1/ddm"])
def test_a_check_in_works_with_and_without_the_trailing_slash(
    server: RunningServer, prefix: str
) -> None:
    nano, mac = hook(server, prefix), a_mac(server)
    tokens = nano.json(mac, "tokens")
    items = nano.json(mac, "declaration-items")
    assert items["DeclarationsToken"] == tokens["SyncTokens"]["DeclarationsToken"]
    (activation,) = items["Declarations"]["Activations"]
    served = nano.json(mac, f"declaration/activation/{activation['Identifier']}")
    assert served["ServerToken"] == activation["ServerToken"]
    assert nano.declarative_management(mac, "status", report_of(mac)) == b""
    assert device_record(server, mac.id)["build"] == "25D2128"
    expected = "/v1/ddm/tokens" if prefix.endswith("/") else "/v1/tokens"
    assert nano.sent[0].url.path == expected


def test_errors_are_signed_so_nanomdm_sees_the_status_not_a_bad_signature(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server)
    with pytest.raises(HttpStatusError) as missing:
        nano.declarative_management(mac, "declaration/configuration/nope")
    assert missing.value.status == 404
    with pytest.raises(HttpStatusError) as bad_report:
        nano.declarative_management(mac, "status", b"[1, 2")
    assert bad_report.value.status == 400
    with pytest.raises(HttpStatusError) as too_large:
        nano.declarative_management(mac, "status", b" " * (65 * 1024))
    assert too_large.value.status == 413
    forged = hook(server, send_key=b"not the key NanoMDM was given")
    with pytest.raises(HttpStatusError) as refused:
        forged.declarative_management(mac, "tokens")
    assert refused.value.status == 401


def test_nanomdm_refuses_a_response_signed_with_another_key(server: RunningServer) -> None:
    nano = hook(server, recv_key=b"NanoMDM's -dm-recv-hmac-key differs")
    with pytest.raises(BodyHashInvalid):
        nano.declarative_management(a_mac(server), "tokens")


def test_the_key_file_holds_the_flag_string_less_one_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"  secret with spaces \n")
    assert read_key_file(path) == b"  secret with spaces "
    path.write_bytes(b"secret\r\n")
    assert read_key_file(path) == b"secret"
    path.write_bytes(b"secret\n\n")
    assert read_key_file(path) == b"secret\n"
    path.write_bytes(b"short")  # NanoMDM takes any length, so bsi does too
    assert read_key_file(path) == b"short"
    path.write_bytes(b"\n")
    with pytest.raises(InvalidInput, match="empty"):
        read_key_file(path)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_key_file(tmp_path / "absent")


# -- identity: nobody reads or writes another device's state --------------------------------


def test_an_unknown_enrollment_id_is_refused_and_logged_not_registered(
    server: RunningServer,
) -> None:
    nano, stranger = hook(server), device(new_udid())
    with pytest.raises(HttpStatusError) as refused:
        nano.declarative_management(stranger, "tokens")
    assert refused.value.status == 403
    assert server.admin.get(f"/v1/admin/devices/{stranger.id}").status_code == 404
    (event,) = security_events(server)
    assert (event["kind"], event["enrollment_id"]) == ("unknown-enrollment", stranger.id)


def test_a_replayed_get_under_another_enrollment_id_is_refused(server: RunningServer) -> None:
    nano, mac = hook(server), a_mac(server)
    nano.declarative_management(mac, "tokens")
    captured = nano.sent[-1]
    made_up = new_udid()
    replayed = nano.replay(captured, **{"X-Enrollment-ID": made_up})
    assert replayed.status_code == 403
    assert server.admin.get(f"/v1/admin/devices/{made_up}").status_code == 404
    assert server.admin.get("/v1/admin/devices").json()["devices"][0]["device_id"] == mac.id
    assert len(server.admin.get("/v1/admin/devices").json()["devices"]) == 1


def test_a_replayed_status_report_under_another_device_is_refused_and_stores_nothing(
    server: RunningServer,
) -> None:
    nano = hook(server)
    victim, attacker = a_mac(server, "VICTIM00001"), a_mac(server, "ATTACKER001")
    nano.declarative_management(victim, "status", report_of(victim, "VICTIM00001"))
    before = device_record(server, victim.id)
    nano.declarative_management(
        attacker, "status", report_of(attacker, "ATTACKER001", build="25D2140")
    )
    captured = nano.sent[-1]
    replayed = nano.replay(captured, **{"X-Enrollment-ID": victim.id})
    assert replayed.status_code == 403
    assert "device.identifier.udid" in replayed.json()["message"]
    assert device_record(server, victim.id) == before
    (event,) = security_events(server)
    assert (event["kind"], event["enrollment_id"]) == ("identity-contradiction", victim.id)


def test_a_report_naming_another_serial_number_than_device_information_is_refused(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server, "C02OLDSERIAL")
    answers = {"UDID": mac.id, "SerialNumber": "C02REALSERIAL", "OSVersion": "26.3.1"}
    reply = webhook(server).device_information(mac.id, answers, now=server.clock())
    assert reply.status_code == 200, reply.text
    assert device_record(server, mac.id)["serial_number"] == "C02REALSERIAL"
    with pytest.raises(HttpStatusError) as refused:
        nano.declarative_management(mac, "status", report_of(mac, "C02OLDSERIAL"))
    assert refused.value.status == 403
    nano.declarative_management(mac, "status", report_of(mac, "C02REALSERIAL"))


def test_check_out_ends_the_enrollment_until_nanomdm_sees_it_again(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server)
    assert webhook(server).check_out(mac, now=server.clock()).json()["result"] == "checked out"
    with pytest.raises(HttpStatusError) as refused:
        nano.declarative_management(mac, "tokens")
    assert refused.value.status == 403
    assert webhook(server).token_update(mac, now=server.clock()).status_code == 200
    nano.declarative_management(mac, "tokens")


def test_the_webhook_refuses_unsigned_forged_and_stale_events(server: RunningServer) -> None:
    udid = new_udid()
    assert webhook(server, key=None).authenticate(udid, "S1").status_code == 401
    assert webhook(server, key=b"another key").authenticate(udid, "S1").status_code == 401
    stale = webhook(server).authenticate(udid, "S1", now=server.clock() - timedelta(hours=1))
    assert stale.status_code == 400
    assert "stale" in stale.json()["message"]
    assert server.admin.get(f"/v1/admin/devices/{udid}").status_code == 404
    junk = webhook(server).send({"topic": "mdm.Authenticate", "created_at": "yesterday"})
    assert junk.status_code == 400


@pytest.mark.server_settings(nanomdm_hmac_key_file=None, nanomdm_allow_unsigned_from=["127.0.0.1"])
def test_unsigned_forwarding_is_accepted_from_an_allowed_address(server: RunningServer) -> None:
    mac = device(new_udid())
    assert webhook(server, key=None).authenticate(mac.id, "S1", now=server.clock()).is_success
    nano = hook(server, send_key=None, recv_key=None)
    assert nano.json(mac, "tokens")["SyncTokens"]["DeclarationsToken"]
    assert "x-hmac-signature" not in nano.request(mac, "tokens").headers


@pytest.mark.server_settings(nanomdm_hmac_key_file=None, nanomdm_allow_unsigned_from=["10.0.0.0/8"])
def test_unsigned_forwarding_from_elsewhere_is_refused(server: RunningServer) -> None:
    mac = device(new_udid())
    assert webhook(server, key=None).authenticate(mac.id, "S1").status_code == 401
    nano = hook(server, send_key=None, recv_key=None)
    with pytest.raises(HttpStatusError) as refused:
        nano.declarative_management(mac, "tokens")
    assert refused.value.status == 401


def test_admin_import_takes_long_ids_and_refuses_control_characters(
    server: RunningServer,
) -> None:
    udid = "0000FE00-0123456789ABCDEF"  # an Apple silicon UDID: 25 characters
    ipad_user = shared_ipad_user(udid, "firstname.lastname.1234@appleid.example.edu")
    mac_user = user_channel(new_udid(), new_udid())
    assert len(mac_user.id) == 73
    batch = {
        "enrollments": [
            {"enrollment_id": ipad_user.id, "parent_id": udid},  # type not given
            {"enrollment_id": udid, "enrollment_type": "Device", "serial_number": "DMPXK1ZJ"},
        ]
    }
    imported = server.admin.post("/v1/admin/enrollments", json=batch)
    assert imported.json() == {"created": 2, "refreshed": 0}
    assert hook(server).json(ipad_user, "tokens")["SyncTokens"]["DeclarationsToken"]
    assert device_record(server, udid)["channels"][0]["enrollment_id"] == ipad_user.id  # type: ignore[index]

    bad = {"enrollments": [{"enrollment_id": "E1"}, {"enrollment_id": "E2\x07"}]}
    refused = server.admin.post("/v1/admin/enrollments", json=bad)
    assert refused.status_code == 400
    assert "U+0007" in refused.json()["message"]
    orphan = {
        "enrollments": [{"enrollment_id": "E3"}, {"enrollment_id": "E4:u", "parent_id": "E5"}]
    }
    assert server.admin.post("/v1/admin/enrollments", json=orphan).status_code == 404
    too_long = {"enrollments": [{"enrollment_id": "x" * 256}]}
    assert server.admin.post("/v1/admin/enrollments", json=too_long).status_code == 422
    for nothing_stored in ("E1", "E3"):
        assert server.admin.get(f"/v1/admin/devices/{nothing_stored}").status_code == 404


# -- what is served: tokens, timestamps, user channels ---------------------------------------


def tokens_of(nano: DmHook, enrollment: EnrollId) -> dict[str, str]:
    tokens: dict[str, str] = nano.json(enrollment, "tokens")["SyncTokens"]
    return tokens


def test_a_changed_payload_under_the_same_server_token_reaches_devices(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server)
    settings = software_update_settings("com.example.sus", rsr_enable=False).to_json()
    settings["ServerToken"] = "admin-chosen"
    stored = server.admin.put("/v1/admin/declarations/com.example.sus", json=settings)
    assert stored.json()["ServerToken"] != "admin-chosen"
    server.admin.put("/v1/admin/declarations/com.example.sus/groups/default")
    before, items_before = tokens_of(nano, mac), nano.json(mac, "declaration-items")

    settings["Payload"] = {"RapidSecurityResponse": {"Enable": True}}
    server.clock.advance(hours=1)
    assert server.admin.put("/v1/admin/declarations/com.example.sus", json=settings).is_success
    after, items_after = tokens_of(nano, mac), nano.json(mac, "declaration-items")
    assert after["DeclarationsToken"] != before["DeclarationsToken"]
    assert after["Timestamp"] == "2026-03-20T13:00:00Z"

    def token(items: dict[str, Any]) -> str:
        (found,) = [
            c["ServerToken"]
            for c in items["Declarations"]["Configurations"]
            if c["Identifier"] == "com.example.sus"
        ]
        return found

    assert token(items_after) != token(items_before)
    served = nano.json(mac, "declaration/configuration/com.example.sus")
    assert served["Payload"] == settings["Payload"]
    assert served["ServerToken"] == token(items_after)


def test_the_timestamp_moves_only_when_the_served_set_changes(server: RunningServer) -> None:
    nano, mac = hook(server), a_mac(server)
    first = tokens_of(nano, mac)
    server.clock.advance(hours=5)
    server.service.recompute_decisions()  # drops every cache: the set is rebuilt, not changed
    assert tokens_of(nano, mac) == first
    settings = software_update_settings("com.example.sus", rsr_enable=False)
    server.admin.put("/v1/admin/declarations/com.example.sus", json=settings.to_json())
    assert tokens_of(nano, mac) == first  # not assigned: nothing served changed
    server.admin.put("/v1/admin/declarations/com.example.sus/groups/default")
    assert tokens_of(nano, mac)["Timestamp"] == "2026-03-20T17:00:00Z"
    server.clock.advance(hours=1)
    server.admin.put("/v1/admin/declarations/com.example.sus", json=settings.to_json())
    assert tokens_of(nano, mac)["Timestamp"] == "2026-03-20T17:00:00Z"  # same content


def test_identifiers_nanomdm_cannot_forward_are_refused_at_the_admin_api(
    server: RunningServer,
) -> None:
    body = software_update_settings("ok", rsr_enable=True).to_json()
    body["Identifier"] = "com.example?x"
    refused = server.admin.put("/v1/admin/declarations/com.example%3Fx", json=body)
    assert refused.status_code == 400
    assert "question mark" in refused.json()["message"]
    assert server.admin.get("/v1/admin/declarations").json() == []


def test_a_mac_with_a_user_channel_is_one_device_and_its_channel_gets_user_scope_only(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server)
    user = user_channel(mac.id, new_udid())
    assert webhook(server).token_update(user, now=server.clock()).status_code == 200
    settings = software_update_settings("com.example.sus", install_security_update="AlwaysOn")
    subscription = status_subscriptions("com.example.accounts", ["account.list.mail.incoming"])
    for declaration in (settings, subscription):
        identifier = declaration.identifier
        server.admin.put(f"/v1/admin/declarations/{identifier}", json=declaration.to_json())
        server.admin.put(f"/v1/admin/declarations/{identifier}/groups/default")

    device_items = nano.json(mac, "declaration-items")["Declarations"]["Configurations"]
    assert "com.example.sus" in {c["Identifier"] for c in device_items}
    user_items = nano.json(user, "declaration-items")["Declarations"]
    assert [c["Identifier"] for c in user_items["Configurations"]] == ["com.example.accounts"]
    (activation,) = user_items["Activations"]
    served = nano.json(user, f"declaration/activation/{activation['Identifier']}")
    assert served["Payload"]["StandardConfigurations"] == ["com.example.accounts"]
    with pytest.raises(HttpStatusError):
        nano.declarative_management(user, "declaration/configuration/com.example.sus")

    nano.declarative_management(mac, "status", report_of(mac))
    # macOS user channels may report OS items too (allowed-scopes: system, user): ignored
    nano.declarative_management(user, "status", report_of(mac, build="25D2140"))
    devices = server.admin.get("/v1/admin/devices").json()["devices"]
    assert [(d["device_id"], d["build"]) for d in devices] == [(mac.id, "25D2128")]
    record = device_record(server, mac.id)
    (channel,) = record["channels"]  # type: ignore[misc]
    assert channel["enrollment_id"] == user.id
    assert channel["status_items"]["device.operating-system.build-version"] == "25D2140"
    sample = json.loads((files("bsi") / "data" / "sample-catalog.json").read_text())
    assert server.admin.post("/v1/admin/catalog", json=sample).is_success
    server.recompute()
    rows = server.admin.get("/v1/admin/compliance/supplements").json()
    (row,) = [r for r in rows if r["supplement"] == "26.3.1 (a)" and r["platform"] == "macOS"]
    assert row["installed"] + row["pending"] + row["blocked"] == 1

    # a user channel cannot pose as a device, nor under another parent
    as_device = EnrollId("Device", user.id)
    with pytest.raises(HttpStatusError) as refused:
        nano.declarative_management(as_device, "tokens")
    assert refused.value.status == 403


def subscribed(nano: DmHook, mac: EnrollId) -> list[str]:
    items = nano.json(mac, "declaration-items")["Declarations"]["Configurations"]
    (identifier,) = [i["Identifier"] for i in items if "status-subscriptions" in i["Identifier"]]
    served = nano.json(mac, f"declaration/configuration/{identifier}")
    return [item["Name"] for item in served["Payload"]["StatusItems"]]


def test_the_status_subscription_follows_the_devices_os_and_capabilities(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server)
    first = subscribed(nano, mac)
    assert "device.operating-system.build-version" in first
    assert "softwareupdate.install-state" not in first  # not before macOS 14

    before = tokens_of(nano, mac)["DeclarationsToken"]
    nano.declarative_management(mac, "status", report_of(mac, version="14.6", build="23G80"))
    assert tokens_of(nano, mac)["DeclarationsToken"] != before
    on_14 = subscribed(nano, mac)
    assert "softwareupdate.install-state" in on_14
    assert "softwareupdate.device-id" not in on_14  # macOS 15 and later

    capabilities = {
        "StatusItems": {
            "management": {
                "client-capabilities": {
                    "supported-versions": ["1.0.0"],
                    "supported-features": {},
                    "supported-payloads": {
                        "declarations": {},
                        "status-items": [
                            "device.identifier.udid",
                            "device.operating-system.version",
                            "softwareupdate.device-id",
                        ],
                    },
                }
            }
        },
        "Errors": [],
    }
    nano.declarative_management(mac, "status", json.dumps(capabilities).encode())
    assert subscribed(nano, mac) == [
        "device.identifier.udid",
        "device.operating-system.version",
        "softwareupdate.device-id",
    ]


def test_a_report_with_a_mistyped_item_is_acknowledged_so_the_device_moves_on(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac(server)
    report = json.loads(report_of(mac))
    report["StatusItems"]["softwareupdate"]["install-state"] = 3
    assert nano.declarative_management(mac, "status", json.dumps(report).encode()) == b""
    record = device_record(server, mac.id)
    assert record["build"] == "25D2128"
    assert [f["path"] for f in record["status_invalid"]] == ["softwareupdate.install-state"]  # type: ignore[union-attr]


def test_even_an_unhandled_error_leaves_signed() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    async def healthy(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": True})
        await send({"type": "http.response.body", "body": b"\n"})

    async def call(app: Any, path: str) -> httpx.Response:
        signed = SignResponses(app, key=HMAC_KEY, prefixes=["/v1/ddm/"])
        transport = httpx.ASGITransport(app=signed)
        async with httpx.AsyncClient(transport=transport, base_url="http://bsi") as client:
            return await client.get(path)

    failed = asyncio.run(call(broken, "/v1/ddm/tokens"))
    assert failed.status_code == 500
    verify_response(HMAC_KEY, failed)
    streamed = asyncio.run(call(healthy, "/v1/ddm/tokens"))
    assert streamed.content == b"{}\n"
    verify_response(HMAC_KEY, streamed)
    assert "x-hmac-signature" not in asyncio.run(call(healthy, "/v1/admin/devices")).headers


def test_a_flood_of_made_up_ids_is_logged_but_stored_only_up_to_a_rate(
    server: RunningServer,
) -> None:
    for n in range(SECURITY_EVENTS_PER_MINUTE + 30):
        server.service.security_event("unknown-enrollment", f"made-up-{n}", "127.0.0.1", "x")
    server.service.security_event("unknown-enrollment", "made-up-0", "127.0.0.1", "again")
    stored = server.admin.get("/v1/admin/security-events", params={"limit": 1000}).json()
    assert len(stored) == SECURITY_EVENTS_PER_MINUTE


def test_device_information_through_the_webhook_feeds_the_inventory(
    server: RunningServer,
) -> None:
    mac = a_mac(server, "C02INVENTORY")
    answers = {
        "UDID": mac.id,
        "SerialNumber": "C02INVENTORY",
        "OSVersion": "26.3.1",
        "BuildVersion": "25D2128",
        "SupplementalBuildVersion": "25D771280a",
        "SupplementalOSVersionExtra": "(a)",
        "ProductName": "Mac14,2",
        "ModelName": "MacBook Air",
    }
    reply = webhook(server).device_information(mac.id, answers, now=server.clock())
    assert reply.json()["result"] == "device information"
    record = device_record(server, mac.id)
    assert (record["platform"], record["build"], record["supplemental_extra"]) == (
        "macOS",
        "25D2128",
        "(a)",
    )
    devices = server.admin.get("/v1/admin/devices").json()["devices"]
    assert [d["device_id"] for d in devices] == [mac.id]
