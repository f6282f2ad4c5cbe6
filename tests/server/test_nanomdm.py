"""bsi behind NanoMDM's ``-dm``: every request through a client that forwards as NanoMDM does."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from bsi.errors import InvalidInput
from bsi.server.nanomdm import read_key_file
from nanomdm_client import BodyHashInvalid, DmHook, EnrollId, HttpStatusError, device
from reports import macos_report
from server_support import HMAC_KEY, RunningServer


def hook(server: RunningServer, prefix: str = "/v1/ddm/", **keys: bytes | None) -> DmHook:
    keys.setdefault("send_key", HMAC_KEY)
    keys.setdefault("recv_key", HMAC_KEY)
    return DmHook(server.url + prefix, **keys)  # type: ignore[arg-type]


def a_mac() -> EnrollId:
    return device(str(uuid.uuid4()).upper())


@pytest.mark.parametrize("prefix", ["/v1/ddm/", "/v1/ddm"])
def test_a_check_in_works_with_and_without_the_trailing_slash(
    server: RunningServer, prefix: str
) -> None:
    nano, mac = hook(server, prefix), a_mac()
    tokens = nano.json(mac, "tokens")
    items = nano.json(mac, "declaration-items")
    assert items["DeclarationsToken"] == tokens["SyncTokens"]["DeclarationsToken"]
    (activation,) = items["Declarations"]["Activations"]
    served = nano.json(mac, f"declaration/activation/{activation['Identifier']}")
    assert served["ServerToken"] == activation["ServerToken"]
    assert nano.declarative_management(mac, "status", json.dumps(macos_report()).encode()) == b""
    expected = "/v1/ddm/tokens" if prefix.endswith("/") else "/v1/tokens"
    assert nano.sent[0].url.path == expected


def test_errors_are_signed_so_nanomdm_sees_the_status_not_a_bad_signature(
    server: RunningServer,
) -> None:
    nano, mac = hook(server), a_mac()
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
        nano.declarative_management(a_mac(), "tokens")


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
