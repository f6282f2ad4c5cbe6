"""Signed device credentials: what one HMAC proves, and what it refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from bsi.server.credentials import issue, verify
from bsi.store.store import DeviceIdentity

KEY = b"k" * 32


def test_a_credential_proves_its_device_group_and_generation() -> None:
    assert verify(KEY, issue(KEY, "abc123", 7)) == DeviceIdentity("abc123", 7)
    assert verify(KEY, issue(KEY, "abc123", 7, 3)) == DeviceIdentity("abc123", 7, generation=3)
    assert issue(KEY, "abc123", 7, 3) != issue(KEY, "abc123", 7, 2)


def test_a_credential_issued_before_generations_still_reads_as_generation_0() -> None:
    mac = hmac.new(KEY, b"d1.abc123.7", hashlib.sha256).digest()
    legacy = "d1.abc123.7." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert verify(KEY, legacy) == DeviceIdentity("abc123", 7)


def test_forged_or_malformed_credentials_prove_nothing() -> None:
    """Also once the genuine credential was verified (and so remembered, with its key)."""
    good = issue(KEY, "abc123", 7)
    assert verify(KEY, good) == verify(KEY, good) == DeviceIdentity("abc123", 7)
    prefix, device, group, generation, mac = good.split(".")
    for forged in (
        f"{prefix}.{device}.8.{generation}.{mac}",  # another group
        f"{prefix}.other.{group}.{generation}.{mac}",  # another device
        f"{prefix}.{device}.{group}.1.{mac}",  # another generation
        f"{prefix}.{device}.{group}.{generation}.{mac[:-1]}A",
        f"d0.{device}.{group}.{generation}.{mac}",
        good + ".x",
        "",
        "....",
        f"{prefix}.{device}.-1.{generation}.{mac}",
    ):
        assert verify(KEY, forged) is None, forged
        assert verify(KEY, forged) is None, forged  # a refusal is not remembered either
    assert verify(b"another key" * 3, good) is None


@pytest.mark.parametrize(
    "spell",
    [
        lambda c: c.replace(".7.", ".07."),  # leading zero
        lambda c: c.replace(".7.", ".\N{SUPERSCRIPT SEVEN}."),  # a digit Python's int() reads
        lambda c: c.replace(".7.", ".\N{ARABIC-INDIC DIGIT SEVEN}."),
        lambda c: c.replace(".7.", ".\N{FULLWIDTH DIGIT SEVEN}."),
        lambda c: c.replace(".7.", ". 7."),
        lambda c: c + "=",  # base64 padding
        lambda c: c.upper(),
        lambda c: " " + c,
        lambda c: c + "\N{NO-BREAK SPACE}",
    ],
)
def test_one_credential_has_one_spelling(spell: object) -> None:
    """A variant spelling is not the same device: a revocation keyed on the
    credential's hash could otherwise be slipped past (int() reads Arabic-Indic digits)."""
    good = issue(KEY, "abc123", 7)
    variant = spell(good)  # type: ignore[operator]
    assert variant != good
    assert verify(KEY, variant) is None
