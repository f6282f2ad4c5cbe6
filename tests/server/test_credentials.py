"""Signed device credentials: what one HMAC proves, and what it refuses."""

from __future__ import annotations

from bsi.server.credentials import issue, verify
from bsi.store.store import DeviceIdentity

KEY = b"k" * 32


def test_a_credential_proves_its_device_and_group() -> None:
    assert verify(KEY, issue(KEY, "abc123", 7)) == DeviceIdentity("abc123", 7)


def test_forged_or_malformed_credentials_prove_nothing() -> None:
    good = issue(KEY, "abc123", 7)
    prefix, device, group, mac = good.split(".")
    for forged in (
        f"{prefix}.{device}.8.{mac}",  # another group
        f"{prefix}.other.{group}.{mac}",  # another device
        f"{prefix}.{device}.{group}.{mac[:-1]}A",
        f"d0.{device}.{group}.{mac}",
        good + ".x",
        "",
        "....",
        f"{prefix}.{device}.-1.{mac}",
    ):
        assert verify(KEY, forged) is None, forged
    assert verify(b"another key" * 3, good) is None
