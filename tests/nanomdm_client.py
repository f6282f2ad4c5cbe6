"""A test client that talks to bsi exactly as NanoMDM does.

Written from reading NanoMDM's source (``service/dmhook``, ``http/hashbody``,
``service/webhook``, ``mdm/type.go``, ``service/nanomdm``), not copied from it:

- **Enrollment ids** (NanoMDM's default normaliser): a device channel is its
  UDID (or, for a User Enrollment, its EnrollmentID); a user channel is
  ``<device id>:<user>`` where the user is the UserID, or for a Shared iPad
  the UserShortName (a managed Apple ID), with the device id as parent. The
  type travels as its string: ``Device``, ``User``, ``User Enrollment
  (Device)``, ``User Enrollment``, ``Shared iPad``.
- **DM forwarding** (``-dm URL``): the device's ``Endpoint`` is resolved
  against the URL as an RFC 3986 reference (Go's ``URL.ResolveReference``);
  ``GET`` when the device sent no data, else ``PUT`` with
  ``Content-Type: application/json``; headers ``X-Enrollment-ID``,
  ``X-Enrollment-Type`` and, only when non-empty, ``X-Enrollment-ParentID``.
  With ``-dm-send-hmac-key`` the request body (empty for a GET) is signed:
  base64 (standard, padded) HMAC-SHA256 in ``X-Hmac-Signature``. With
  ``-dm-recv-hmac-key`` the response's header is base64-decoded and compared
  in constant time with the HMAC of the response body *before* the status
  code is looked at: a missing header decodes to nothing and fails, a
  malformed one is a decoding error. Only status 200 is a success; redirects
  are followed as Go's default client does.
- **Webhook** (``-webhook-url``): a ``POST`` of an event JSON with
  ``Content-Type: application/json; charset=utf-8``, signed like the DM
  requests under ``-webhook-hmac-key``; only 200 is a success.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import plistlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import httpx

HMAC_HEADER = "X-Hmac-Signature"
DEVICE, USER, SHARED_IPAD = "Device", "User", "Shared iPad"
USER_ENROLLMENT_DEVICE, USER_ENROLLMENT = "User Enrollment (Device)", "User Enrollment"
SHARED_IPAD_USER_ID = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"


class NanoMdmError(Exception):
    """What NanoMDM's dmhook returns as an error: the device's check-in then fails."""


class BodyHashInvalid(NanoMdmError):
    """``invalid body hash header``: the response signature did not match."""


class HttpStatusError(NanoMdmError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"DM hook HTTP status: {status}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class EnrollId:
    """NanoMDM's ``mdm.EnrollID``: what its normaliser derives from a check-in."""

    type: str
    id: str
    parent_id: str = ""


def device(udid: str) -> EnrollId:
    return EnrollId(DEVICE, udid)


def user_channel(udid: str, user_id: str) -> EnrollId:
    """A macOS user channel: ``UDID:UserID``; a Shared iPad user when UserID is all F."""
    if user_id == SHARED_IPAD_USER_ID:
        raise ValueError("a Shared iPad user is named by its UserShortName: use shared_ipad_user")
    return EnrollId(USER, f"{udid}:{user_id}", udid)


def shared_ipad_user(udid: str, user_short_name: str) -> EnrollId:
    return EnrollId(SHARED_IPAD, f"{udid}:{user_short_name}", udid)


def sign(key: bytes, body: bytes) -> str:
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


class DmHook:
    """NanoMDM's ``-dm`` forwarder, with its two optional keys."""

    def __init__(
        self,
        url_prefix: str,
        *,
        send_key: bytes | None = None,
        recv_key: bytes | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.url_prefix = url_prefix
        self.send_key = send_key
        self.recv_key = recv_key
        self.client = client or httpx.Client(timeout=30, follow_redirects=True)
        self.sent: list[httpx.Request] = []
        """Every request as it went out: what an eavesdropper on the link would see."""

    def target(self, endpoint: str) -> str:
        return urljoin(self.url_prefix, endpoint)

    def request(self, enrollment: EnrollId, endpoint: str, data: bytes = b"") -> httpx.Response:
        """One forwarded DM request; the raw response, its signature verified if configured."""
        headers = {"X-Enrollment-ID": enrollment.id, "X-Enrollment-Type": enrollment.type}
        if enrollment.parent_id:
            headers["X-Enrollment-ParentID"] = enrollment.parent_id
        if data:
            headers["Content-Type"] = "application/json"
        if self.send_key is not None:
            headers[HMAC_HEADER] = sign(self.send_key, data)
        request = self.client.build_request(
            "PUT" if data else "GET", self.target(endpoint), content=data, headers=headers
        )
        self.sent.append(request)
        response = self.client.send(request)
        if self.recv_key is not None:
            verify_response(self.recv_key, response)
        return response

    def declarative_management(
        self, enrollment: EnrollId, endpoint: str, data: bytes = b""
    ) -> bytes:
        """What NanoMDM hands back to the device, or the error it fails the check-in with."""
        response = self.request(enrollment, endpoint, data)
        if response.status_code != 200:
            raise HttpStatusError(response.status_code, response.content)
        return response.content

    def json(self, enrollment: EnrollId, endpoint: str, data: bytes = b"") -> Any:
        return json.loads(self.declarative_management(enrollment, endpoint, data))

    def replay(
        self, request: httpx.Request, **headers: str
    ) -> httpx.Response:  # an attacker on the link
        """Send a captured request again, with some headers changed (signature kept)."""
        changed = httpx.Headers(request.headers)
        for name, value in headers.items():
            changed[name] = value
        again = self.client.build_request(
            request.method, str(request.url), content=request.content, headers=changed
        )
        return self.client.send(again)


def verify_response(key: bytes, response: httpx.Response) -> None:
    """``hashbody.VerifyBodyHashHeader`` with NanoMDM's HMAC and base64 decoder."""
    header = response.headers.get(HMAC_HEADER, "")
    try:
        given = base64.b64decode(header, validate=True)
    except ValueError as error:
        raise NanoMdmError(f"decoding {HMAC_HEADER} header: {error}") from error
    expected = hmac.new(key, response.content, hashlib.sha256).digest()
    if not hmac.compare_digest(given, expected):
        raise BodyHashInvalid("invalid body hash header")


# -- the webhook --------------------------------------------------------------


def _created_at(now: datetime | None) -> str:
    """Go's ``time.Time`` JSON form: RFC 3339 with up to nine fraction digits."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _ids(enrollment: EnrollId) -> dict[str, str]:
    ids = {"id": enrollment.id, "type": enrollment.type}
    if enrollment.parent_id:
        ids["parent_id"] = enrollment.parent_id
    return ids


class Webhook:
    """NanoMDM's ``-webhook-url`` sender, with its optional ``-webhook-hmac-key``."""

    def __init__(self, url: str, *, key: bytes | None = None, client: httpx.Client | None = None):
        self.url = url
        self.key = key
        self.client = client or httpx.Client(timeout=30)

    def send(self, event: dict[str, Any]) -> httpx.Response:
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.key is not None:
            headers[HMAC_HEADER] = sign(self.key, body)
        return self.client.post(self.url, content=body, headers=headers)

    def checkin(
        self,
        topic: str,
        enrollment: EnrollId,
        message: dict[str, Any],
        *,
        now: datetime | None = None,
        tally: int | None = None,
    ) -> httpx.Response:
        udid = message.get("UDID", "")
        event: dict[str, Any] = {
            "topic": topic,
            "created_at": _created_at(now),
            "event_id": uuid.uuid4().hex,
            "checkin_event": {
                "ids": _ids(enrollment),
                "raw_payload": base64.b64encode(plistlib.dumps(message)).decode(),
            },
        }
        if udid:
            event["checkin_event"]["udid"] = udid
        if message.get("EnrollmentID"):
            event["checkin_event"]["enrollment_id"] = message["EnrollmentID"]
        if tally is not None:
            event["checkin_event"]["token_update_tally"] = tally
        return self.send(event)

    def authenticate(
        self, udid: str, serial: str, *, model: str = "Mac14,2", now: datetime | None = None
    ) -> httpx.Response:
        message = {
            "MessageType": "Authenticate",
            "UDID": udid,
            "SerialNumber": serial,
            "Model": model,
            "ModelName": "MacBook Air",
            "ProductName": model,
            "OSVersion": "26.3.1",
            "BuildVersion": "25D2128",
            "Topic": "com.apple.mgmt.External.test",
        }
        return self.checkin("mdm.Authenticate", device(udid), message, now=now)

    def token_update(self, enrollment: EnrollId, *, now: datetime | None = None) -> httpx.Response:
        udid = enrollment.parent_id or enrollment.id
        message: dict[str, Any] = {
            "MessageType": "TokenUpdate",
            "UDID": udid,
            "Topic": "com.apple.mgmt.External.test",
            "PushMagic": str(uuid.uuid4()),
            "Token": b"\x01" * 32,
        }
        if enrollment.parent_id:
            message["UserID"] = enrollment.id.split(":", 1)[1]
        return self.checkin("mdm.TokenUpdate", enrollment, message, now=now, tally=1)

    def check_out(self, enrollment: EnrollId, *, now: datetime | None = None) -> httpx.Response:
        udid = enrollment.parent_id or enrollment.id
        message = {"MessageType": "CheckOut", "UDID": udid, "Topic": "com.apple.mgmt.External.test"}
        return self.checkin("mdm.CheckOut", enrollment, message, now=now)

    def device_information(
        self, udid: str, responses: dict[str, Any], *, now: datetime | None = None
    ) -> httpx.Response:
        command_uuid = str(uuid.uuid4())
        result = {
            "UDID": udid,
            "Status": "Acknowledged",
            "CommandUUID": command_uuid,
            "RequestType": "DeviceInformation",
            "QueryResponses": responses,
        }
        event = {
            "topic": "mdm.Connect",
            "created_at": _created_at(now),
            "acknowledge_event": {
                "ids": _ids(device(udid)),
                "udid": udid,
                "status": "Acknowledged",
                "command_uuid": command_uuid,
                "raw_payload": base64.b64encode(plistlib.dumps(result)).decode(),
            },
        }
        return self.send(event)
