"""Device credentials that prove themselves: no database read on a check-in.

A credential is ``d2.<device id>.<group id>.<generation>.<MAC>``, the MAC an
HMAC-SHA256 (base64url, unpadded) of the rest under a key every server
process shares (kept in the database). Checking one is one HMAC, so a million
devices checking in never cost a million lookups, and any number of stateless
processes agree without talking. The generation is bumped by re-enrolment,
which is what makes a device's earlier credentials refusable; revocation
itself is a short list every process polls (:mod:`bsi.server.revocations`).

Parsing is ASCII-only with exactly one spelling per credential: no other
digits, no leading zeros, no padding, no spaces. So a credential is refused
or accepted as one string, and its hash names it unambiguously.
``d1.<device id>.<group id>.<MAC>`` (bsi before re-enrolment existed) is
still read as generation 0.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re

from bsi.store.store import DeviceIdentity

PREFIX = "d2"
_LEGACY = "d1"
_ID = "[A-Za-z0-9_-]{1,64}"
_NUMBER = "0|[1-9][0-9]{0,17}"
_SHAPE = re.compile(
    rf"(?:{PREFIX}\.(?P<device>{_ID})\.(?P<group>{_NUMBER})\.(?P<generation>{_NUMBER})"
    rf"|{_LEGACY}\.(?P<legacy_device>{_ID})\.(?P<legacy_group>{_NUMBER}))"
    r"\.(?P<mac>[A-Za-z0-9_-]{43})"
)
MAX_LENGTH = 160
"""Characters in the longest credential bsi issues."""


def _mac(key: bytes, signed: str) -> str:
    digest = hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(key: bytes, device_id: str, group_id: int, generation: int = 0) -> str:
    signed = f"{PREFIX}.{device_id}.{group_id}.{generation}"
    return f"{signed}.{_mac(key, signed)}"


def verify(key: bytes, credential: str) -> DeviceIdentity | None:
    """The identity a credential proves, or None for anything forged or malformed.

    A credential that verified is remembered with its key (at most
    :data:`REMEMBERED_CREDENTIALS`, the least recently used dropped first): a device
    presents the same one at every request, and the HMAC costs more than the rest of
    an unchanged check-in's checks. Nothing that fails to verify is remembered."""
    try:
        return _verified(key, credential)
    except _NotProven:
        return None


REMEMBERED_CREDENTIALS = 65_536
"""Verified credentials kept (about 20 MB at most)."""


class _NotProven(Exception):
    """A credential that is forged or malformed (not remembered: an exception is not)."""


@functools.lru_cache(maxsize=REMEMBERED_CREDENTIALS)
def _verified(key: bytes, credential: str) -> DeviceIdentity:
    if len(credential) > MAX_LENGTH:
        raise _NotProven
    shape = _SHAPE.fullmatch(credential)
    if shape is None:
        raise _NotProven
    signed = credential[: shape.start("mac") - 1]
    if not hmac.compare_digest(shape["mac"], _mac(key, signed)):
        raise _NotProven
    if shape["device"] is not None:
        return DeviceIdentity(
            shape["device"], int(shape["group"]), generation=int(shape["generation"])
        )
    return DeviceIdentity(shape["legacy_device"], int(shape["legacy_group"]))
