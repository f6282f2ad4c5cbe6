"""The pure core: expiry periods, thresholds, new versions, signature counts. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bsi.errors import InvalidInput
from bsi.trust._tuf import CryptoSigner, Metadata, MetaFile, Root, TargetFile, Targets
from bsi.trust.model import (
    DEFAULT_EXPIRIES,
    TOP_LEVEL_ROLES,
    Expiries,
    check_thresholds,
    consistent_target_path,
    expiries_from,
    expiry,
    initial_targets,
    meta_file,
    new_root,
    next_root,
    next_snapshot,
    next_targets,
    next_timestamp,
    parse_period,
    signature_status,
    validate_target_name,
    with_custom,
)

NOW = datetime(2026, 3, 20, 12, 0, 30, 123456, tzinfo=UTC)


def signers(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


def test_default_expiries() -> None:
    assert DEFAULT_EXPIRIES.for_role("root") == timedelta(days=365)
    assert DEFAULT_EXPIRIES.for_role("targets") == timedelta(days=90)
    assert DEFAULT_EXPIRIES.for_role("snapshot") == timedelta(days=7)
    assert DEFAULT_EXPIRIES.for_role("timestamp") == timedelta(days=1)
    assert Expiries.from_dict(DEFAULT_EXPIRIES.to_dict()) == DEFAULT_EXPIRIES
    assert Expiries.from_dict({"timestamp": 600}).timestamp == timedelta(minutes=10)


def test_bad_expiries_are_refused() -> None:
    with pytest.raises(InvalidInput, match="positive"):
        Expiries(timestamp=timedelta(0))
    with pytest.raises(InvalidInput, match="whole seconds"):
        Expiries.from_dict({"root": "1y"})


def test_expiry_drops_microseconds() -> None:
    assert expiry(NOW, timedelta(days=1)) == datetime(2026, 3, 21, 12, 0, 30, tzinfo=UTC)


def test_thresholds_default_to_one_key_each() -> None:
    counts, thresholds = check_thresholds({}, {"targets": 2})
    assert thresholds == {"root": 1, "targets": 2, "snapshot": 1, "timestamp": 1}
    assert counts == {"root": 1, "targets": 2, "snapshot": 1, "timestamp": 1}


def _root(threshold: int = 1, n: int = 1) -> tuple[Metadata[Root], dict[str, list[CryptoSigner]]]:
    keys = {role: signers(n if role == "root" else 1) for role in TOP_LEVEL_ROLES}
    md = new_root(
        {role: [s.public_key for s in keys[role]] for role in TOP_LEVEL_ROLES},
        {role: threshold if role == "root" else 1 for role in TOP_LEVEL_ROLES},
        now=NOW,
        expires=timedelta(days=365),
    )
    return md, keys


def test_signature_status_counts_present_against_needed() -> None:
    md, keys = _root(threshold=2, n=3)
    status = signature_status(md, md.signed)
    assert not status.verified
    assert status.describe() == "root v1: 0 of 2 required signatures from the new root keys"
    md.sign(keys["root"][0], append=True)
    md.sign(keys["timestamp"][0], append=True)  # not a root key: does not count
    assert signature_status(md, md.signed).checks[0].signed == (keys["root"][0].public_key.keyid,)
    md.sign(keys["root"][2], append=True)
    assert signature_status(md, md.signed).verified


def test_next_root_replaces_a_roles_keys_and_needs_both_roots() -> None:
    v1, keys = _root()
    replacement = signers(2)
    v2 = next_root(
        v1.signed,
        role="root",
        keys=[s.public_key for s in replacement],
        threshold=2,
        now=NOW,
        expires=timedelta(days=30),
    )
    assert v2.signed.version == 2
    assert v2.signed.roles["root"].keyids == [s.public_key.keyid for s in replacement]
    assert keys["root"][0].public_key.keyid not in v2.signed.keys
    assert v1.signed.roles["root"].keyids == [keys["root"][0].public_key.keyid]  # unchanged

    v2.sign(replacement[0], append=True)
    v2.sign(replacement[1], append=True)
    status = signature_status(v2, v2.signed, previous_root=v1.signed)
    assert not status.verified
    assert status.describe() == (
        "root v2: 0 of 1 required signatures from the root v1 keys; "
        "2 of 2 required signatures from the new root keys"
    )
    v2.sign(keys["root"][0], append=True)
    assert signature_status(v2, v2.signed, previous_root=v1.signed).verified


def test_next_root_refuses_a_bad_threshold() -> None:
    v1, _ = _root()
    with pytest.raises(InvalidInput, match="threshold"):
        next_root(v1.signed, role="targets", keys=[], threshold=1, now=NOW, expires=timedelta(1))


def test_targets_versions() -> None:
    v1 = initial_targets(now=NOW, expires=timedelta(days=90))
    target = with_custom(TargetFile.from_data("a/b.bin", b"data"), {"platform": "debian"})
    v2 = next_targets(v1.signed, add=[target], now=NOW, expires=timedelta(days=90))
    assert v2.signed.version == 2
    assert v2.signed.targets["a/b.bin"].custom == {"bsi": {"platform": "debian"}}
    v3 = next_targets(v2.signed, remove=["a/b.bin"], now=NOW, expires=timedelta(days=90))
    assert v3.signed.targets == {}
    with pytest.raises(InvalidInput, match="not in targets"):
        next_targets(v3.signed, remove=["a/b.bin"], now=NOW, expires=timedelta(days=90))
    assert isinstance(v3.signed, Targets)


def test_snapshot_and_timestamp_pin_by_version_length_and_hash() -> None:
    pin = meta_file(b'{"signed": {}}', 4)
    snapshot = next_snapshot(None, {"targets.json": pin}, now=NOW, expires=timedelta(days=7))
    assert snapshot.signed.version == 1
    assert snapshot.signed.meta["targets.json"] == pin
    again = next_snapshot(snapshot.signed, {}, now=NOW, expires=timedelta(days=7))
    assert (again.signed.version, again.signed.meta["targets.json"]) == (2, pin)
    timestamp = next_timestamp(
        None, MetaFile(2, 10, {"sha256": "0" * 64}), now=NOW, expires=timedelta(1)
    )
    assert timestamp.signed.snapshot_meta.version == 2
    assert next_timestamp(timestamp.signed, pin, now=NOW, expires=timedelta(1)).signed.version == 2


@pytest.mark.parametrize(
    "name", ["cryptex.tar.zst", "debian/25D771280a/cryptex.tar.zst", "a-b_c.d/e"]
)
def test_safe_target_names(name: str) -> None:
    assert validate_target_name(name) == name


@pytest.mark.parametrize("name", ["", "/x", "x/", "../x", "a/../b", "a/./b", "a\\b", "a\nb"])
def test_unsafe_target_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        validate_target_name(name)


def test_consistent_target_path() -> None:
    assert consistent_target_path("a/b/c.tar", "ff") == "a/b/ff.c.tar"
    assert consistent_target_path("c.tar", "ff") == "ff.c.tar"


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("1y", timedelta(days=365)),
        ("90d", timedelta(days=90)),
        ("2w", timedelta(days=14)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_period(text: str, period: timedelta) -> None:
    assert parse_period(text) == period


@pytest.mark.parametrize("text", ["", "0d", "1.5d", "d", "3 days", "-1d"])
def test_unparsable_periods(text: str) -> None:
    with pytest.raises(InvalidInput, match="does not parse"):
        parse_period(text)


def test_expiries_from_cli_strings() -> None:
    periods = expiries_from({"timestamp": "6h", "targets": "30d"})
    assert periods.timestamp == timedelta(hours=6)
    assert periods.targets == timedelta(days=30)
    assert periods.root == DEFAULT_EXPIRIES.root
    with pytest.raises(InvalidInput, match="unknown TUF role"):
        expiries_from({"mirror": "1d"})
