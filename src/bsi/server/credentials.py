"""Device credentials that prove themselves: no database read on a check-in.

A credential is ``d1.<device id>.<group id>.<MAC>``, the MAC an HMAC-SHA256
of the rest under a key every server process shares (kept in the database).
Checking one is one HMAC, so a million devices checking in never cost a
million lookups, and any number of stateless processes agree without talking.
The server also stores each credential's hash, which is where revoking a
device would plug in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from bsi.store.store import DeviceIdentity

PREFIX = "d1"


def _mac(key: bytes, device_id: str, group_id: int) -> str:
    digest = hmac.new(key, f"{PREFIX}.{device_id}.{group_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(key: bytes, device_id: str, group_id: int) -> str:
    return f"{PREFIX}.{device_id}.{group_id}.{_mac(key, device_id, group_id)}"


def verify(key: bytes, credential: str) -> DeviceIdentity | None:
    """The identity a credential proves, or None for anything forged or malformed."""
    parts = credential.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():
        return None
    device_id, group_id, mac = parts[1], int(parts[2]), parts[3]
    if not hmac.compare_digest(mac, _mac(key, device_id, group_id)):
        return None
    return DeviceIdentity(device_id, group_id)
