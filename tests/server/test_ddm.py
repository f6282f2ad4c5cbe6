"""DDM endpoints on the real server: sync tokens, declarations, status (NanoMDM: test_nanomdm)."""

from __future__ import annotations

import threading
import time

import pytest

from bsi.domain.declarations import software_update_settings, validate_declaration
from reports import macos_report, supplemental_report
from server_support import RunningServer, image_catalog


def test_tokens_answer_304_when_the_device_holds_the_current_token(server: RunningServer) -> None:
    _, device = server.device()
    first = device.get("/v1/ddm/tokens")
    assert first.status_code == 200
    token = first.json()["SyncTokens"]["DeclarationsToken"]
    assert first.headers["etag"] == f'"{token}"'
    again = device.get("/v1/ddm/tokens", headers={"If-None-Match": token})
    assert (again.status_code, again.content) == (304, b"")
    assert device.get("/v1/ddm/tokens", headers={"If-None-Match": "stale"}).status_code == 200


def test_every_served_declaration_is_valid_and_listed_in_the_items(
    server: RunningServer,
) -> None:
    _, device = server.device()
    items = device.get("/v1/ddm/declaration-items").json()
    assert (
        items["DeclarationsToken"]
        == device.get("/v1/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    )
    (activation,) = items["Declarations"]["Activations"]
    configurations = items["Declarations"]["Configurations"]
    for category, item in [("activation", activation)] + [
        ("configuration", c) for c in configurations
    ]:
        response = device.get(f"/v1/ddm/declaration/{category}/{item['Identifier']}")
        assert response.status_code == 200, response.text
        declaration = validate_declaration(response.json())
        assert declaration.server_token == item["ServerToken"]
    served = device.get(f"/v1/ddm/declaration/activation/{activation['Identifier']}").json()
    assert set(served["Payload"]["StandardConfigurations"]) == {
        c["Identifier"] for c in configurations
    }
    missing = device.get("/v1/ddm/declaration/configuration/nope")
    assert missing.status_code == 404


def test_sync_token_changes_only_when_the_groups_declarations_change(
    server: RunningServer,
) -> None:
    server.admin.post("/v1/admin/groups", json={"name": "lab"})
    _, device = server.device("default")
    before = device.get("/v1/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    declaration = software_update_settings("bsi-always-on", install_security_update="AlwaysOn")
    admin = server.admin
    assert admin.put("/v1/admin/declarations/bsi-always-on", json=declaration.to_json()).is_success
    assert admin.put("/v1/admin/declarations/bsi-always-on/groups/lab").status_code == 204
    unchanged = device.get("/v1/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    assert unchanged == before
    assert admin.put("/v1/admin/declarations/bsi-always-on/groups/default").status_code == 204
    after = device.get("/v1/ddm/tokens").json()["SyncTokens"]["DeclarationsToken"]
    assert after != before
    configured = device.get("/v1/ddm/declaration/configuration/bsi-always-on")
    assert configured.json()["Payload"] == declaration.payload


def test_full_then_partial_status_is_merged_and_returned(server: RunningServer) -> None:
    device_id, device = server.device()
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    assert device.put("/v1/ddm/status", json=supplemental_report("25D771280a")).status_code == 200
    merged = device.get("/v1/ddm/status").json()["StatusItems"]
    operating_system = merged["device"]["operating-system"]
    assert operating_system["build-version"] == "25D2128"
    assert operating_system["supplemental"]["build-version"] == "25D771280a"
    record = server.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert (record["supplemental_build"], record["supplemental_extra"]) == ("25D771280a", "(a)")


def test_an_unchanged_report_writes_nothing_and_marks_the_device_seen(
    server: RunningServer,
) -> None:
    device_id, device = server.device()
    devices = server.service.stores.devices
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    version = devices.stored_status(device_id).version

    server.clock.advance(minutes=10)
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    merged = device.get("/v1/ddm/status").json()["StatusItems"]
    assert merged["device"]["operating-system"]["build-version"] == "25D2128"
    assert devices.stored_status(device_id).version == version  # nothing written
    server.service.flush_last_seen()
    record = server.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert record["last_seen_at"].startswith(server.clock.now.strftime("%Y-%m-%dT%H:%M"))

    assert device.put("/v1/ddm/status", json=supplemental_report("25D771280a")).status_code == 200
    assert devices.stored_status(device_id).version == version + 1
    record = server.admin.get(f"/v1/admin/devices/{device_id}").json()
    assert record["supplemental_build"] == "25D771280a"


@pytest.mark.real_socket  # a long poll holds its connection open until woken
def test_wake_up_long_poll_answers_on_change_and_times_out_otherwise(
    server: RunningServer,
) -> None:
    _, device = server.device()
    first = device.get("/v1/ddm/wait", params={"generation": 999, "timeout": 5}).json()
    generation = first["generation"]
    assert first["check_in"] is True  # a stale generation answers at once

    started = time.monotonic()
    idle = device.get("/v1/ddm/wait", params={"generation": generation, "timeout": 0.5}).json()
    assert idle == {"generation": generation, "check_in": False}
    assert time.monotonic() - started >= 0.4

    answers: list[dict[str, object]] = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            device.get("/v1/ddm/wait", params={"generation": generation, "timeout": 30}).json()
        )
    )
    waiter.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert server.admin.post("/v1/admin/wake").status_code == 200
    waiter.join(timeout=10)
    assert answers
    assert answers[0]["check_in"] is True
    assert time.monotonic() - started < 5

    # a catalogue change wakes devices too; the same catalogue again changes nothing and
    # wakes nobody (a sync and the repository watcher both read one publication)
    catalog = image_catalog()

    def hold(generation: int, timeout: float) -> None:
        wait = {"generation": generation, "timeout": timeout}
        answers.append(device.get("/v1/ddm/wait", params=wait).json())

    for timeout, wakes in ((30, True), (1.5, False)):
        generation = int(answers[0]["generation"])  # type: ignore[call-overload]
        answers.clear()
        waiter = threading.Thread(target=hold, args=(generation, timeout))
        waiter.start()
        time.sleep(0.3)
        assert server.admin.post("/v1/admin/catalog", json=catalog).is_success
        waiter.join(timeout=10)
        assert answers
        assert answers[0] == {"generation": generation + wakes, "check_in": wakes}
