"""NanoMDM's webhook (``-webhook-url``): how bsi learns which enrollments exist.

NanoMDM posts one JSON event per MDM check-in or command result, signed with
``-webhook-hmac-key`` in ``X-Hmac-Signature``. bsi acts on:

- ``mdm.Authenticate`` and ``mdm.TokenUpdate``: the enrollment exists (a
  device channel, or a user channel with ``ids.parent_id``), with the UDID
  and serial number the device presented over NanoMDM's authenticated channel;
- ``mdm.CheckOut``: the enrollment (a device with its channels) is gone;
- ``mdm.Connect`` carrying ``QueryResponses`` (a ``DeviceInformation``
  result): the device's UDID and serial number, as the device itself says,
  and, when it answers the OS keys, its inventory, through the one MDM
  mapper (:func:`bsi.domain.sources.device_information_items`) into the
  same status path as a DDM report.

Every other topic is answered 200 and ignored. Events older (or newer) than
``max_age`` by bsi's clock are refused, so a captured ``CheckOut`` cannot be
replayed later to unenrol a device.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from bsi.domain.sources import device_information_items
from bsi.domain.status import nest_status_items
from bsi.errors import InvalidInput, NotFound
from bsi.server.http import StrictRoute, json_body
from bsi.server.nanomdm import HMAC_HEADER, ForwardingTrust
from bsi.server.service import BsiService
from bsi.store.store import NewEnrollment
from bsi.strict import read_plist

WEBHOOK_PATH = "/v1/nanomdm/webhook"
REGISTERING = ("mdm.Authenticate", "mdm.TokenUpdate")


def webhook_router(
    service: BsiService, trust: ForwardingTrust, max_age: timedelta = timedelta(minutes=10)
) -> APIRouter:
    router = APIRouter(tags=["NanoMDM"], route_class=StrictRoute)

    @router.post(WEBHOOK_PATH, summary="NanoMDM -webhook-url events")
    async def webhook(request: Request) -> dict[str, str]:
        source = request.client.host if request.client else None
        trust.check(await request.body(), request.headers.get(HMAC_HEADER), source)
        event = await json_body(request)
        if not isinstance(event, dict):
            raise InvalidInput("a NanoMDM webhook event is a JSON object")
        topic = _text(event, "topic")
        created = _created_at(event)
        if abs(service.clock() - created) > max_age:
            detail = f"{topic} event created at {created.isoformat()}, outside {max_age}"
            await run_in_threadpool(service.security_event, "stale-webhook", None, source, detail)
            raise InvalidInput(
                f"webhook event is stale: {detail}",
                hint="a replayed event, or NanoMDM's and bsi's clocks disagree",
            )
        body = event.get("checkin_event") or event.get("acknowledge_event")
        if not isinstance(body, dict):
            return {"topic": topic, "result": "ignored"}
        ids = body.get("ids")
        if not isinstance(ids, dict):
            raise InvalidInput(f"{topic} event has no ids object")
        enrollment_id = _text(ids, "id")
        message = _raw_payload(body)
        if topic in REGISTERING:
            entry = NewEnrollment(
                enrollment_id,
                enrollment_type=_optional(ids, "type"),
                parent_id=_optional(ids, "parent_id"),
                udid=None if ids.get("parent_id") else _optional(body, "udid"),
                serial_number=None if ids.get("parent_id") else _optional(message, "SerialNumber"),
                enrolled_by="nanomdm",
            )
            await run_in_threadpool(service.register_enrollments, [entry])
            return {"topic": topic, "result": "known"}
        if topic == "mdm.CheckOut":
            try:
                await run_in_threadpool(service.check_out, enrollment_id)
            except NotFound:
                return {"topic": topic, "result": "unknown enrollment"}
            return {"topic": topic, "result": "checked out"}
        answers = message.get("QueryResponses")
        if topic == "mdm.Connect" and isinstance(answers, dict) and not ids.get("parent_id"):
            entry = NewEnrollment(
                enrollment_id,
                enrollment_type=_optional(ids, "type"),
                udid=_optional(answers, "UDID"),
                serial_number=_optional(answers, "SerialNumber"),
                enrolled_by="nanomdm",
            )
            await run_in_threadpool(service.register_enrollments, [entry])
            try:
                items = device_information_items(answers)
            except InvalidInput:  # a query for other keys: its identity is all bsi uses
                return {"topic": topic, "result": "device identity"}
            report = {"StatusItems": nest_status_items(items), "Errors": []}
            await run_in_threadpool(service.report_device_information, enrollment_id, report)
            return {"topic": topic, "result": "device information"}
        return {"topic": topic, "result": "ignored"}

    return router


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"webhook event: {key!r} must be a non-empty string, not {value!r}")
    return value


def _optional(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"webhook event: {key!r} must be a string, not {value!r}")
    return value


def _created_at(event: dict[str, Any]) -> datetime:
    text = _text(event, "created_at")
    try:
        created = datetime.fromisoformat(text)
    except ValueError as error:
        raise InvalidInput(f"webhook event: created_at {text!r} is not RFC 3339") from error
    if created.tzinfo is None:
        raise InvalidInput(f"webhook event: created_at {text!r} has no time zone")
    return created


def _raw_payload(body: dict[str, Any]) -> dict[str, Any]:
    """The device's own plist message (base64 in ``raw_payload``), or {} when absent."""
    raw = body.get("raw_payload")
    if raw in (None, ""):
        return {}
    if not isinstance(raw, str):
        raise InvalidInput("webhook event: raw_payload must be a base64 string")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidInput(f"webhook event: raw_payload is not base64: {error}") from error
    message = read_plist(data, source="webhook event: raw_payload")
    if not isinstance(message, dict):
        raise InvalidInput("webhook event: raw_payload is not a plist dictionary")
    return message
