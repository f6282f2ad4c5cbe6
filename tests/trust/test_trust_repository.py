"""The publisher: publish, offline signing to a threshold, timestamp refresh, key rotation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf_simulator import TufRepo

from bsi.errors import InvalidInput
from bsi.trust import (
    KeyFileError,
    RepositoryExists,
    RepositoryStateError,
    ThresholdNotMet,
    discard_staged,
    finalize,
    publish_target,
    refresh_timestamp,
    repository_status,
    rotate_key,
    sign_role,
    stage_role,
    stage_target,
    staged_status,
)
from bsi.trust._tuf import Metadata
from bsi.trust.errors import ClockTrouble
from bsi.trust.model import signature_status

NAME = "debian/25D771280a/cryptex.tar.zst"
CUSTOM = {
    "platform": "debian",
    "prerequisite_build": "25D2128",
    "supplemental_build": "25D771280a",
    "product_version": "13.4",
    "extra_version": "(a)",
    "cves": ["CVE-2026-0001"],
}
DEVICE = {"platform": "debian", "prerequisite_build": "25D2128", "supplemental_build": "25D771280a"}


def bundle(tmp_path: Path, data: bytes = b"cryptex bytes\n" * 10, name: str = "b.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def served_files(repo: TufRepo) -> dict[str, str]:
    return {
        str(p.relative_to(repo.repo_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((repo.repo_dir / "metadata").iterdir())
    }


# --- publish ------------------------------------------------------------------------


def test_publish_signs_the_bundle_with_its_custom_metadata(repo: TufRepo, tmp_path: Path) -> None:
    data = b"cryptex bytes\n" * 10
    result = publish_target(
        repo.repo_dir,
        repo.keys_dir,
        NAME,
        bundle(tmp_path, data),
        CUSTOM,
        signers=repo.signers("targets"),
    )
    assert result.versions == {"root": 1, "targets": 2, "snapshot": 2, "timestamp": 2}

    sha = hashlib.sha256(data).hexdigest()
    copy = repo.repo_dir / "targets" / "debian" / "25D771280a" / f"{sha}.cryptex.tar.zst"
    assert copy.read_bytes() == data
    target = repo.current("targets").signed.targets[NAME]
    assert (target.length, target.hashes) == (len(data), {"sha256": sha})
    assert target.custom == {"bsi": CUSTOM}

    # snapshot pins targets, timestamp pins snapshot: version, length and hash.
    snapshot = repo.current("snapshot")
    pin = snapshot.signed.meta["targets.json"]
    targets_bytes = repo.served("metadata/2.targets.json")
    assert (pin.version, pin.length) == (2, len(targets_bytes))
    assert pin.hashes == {"sha256": hashlib.sha256(targets_bytes).hexdigest()}
    ts_pin = repo.current("timestamp").signed.snapshot_meta
    assert ts_pin.hashes == {
        "sha256": hashlib.sha256(repo.served("metadata/2.snapshot.json")).hexdigest()
    }
    assert not (repo.repo_dir / "staged" / "targets.json").exists()

    info = repo.client(tmp_path / "device").expect_target(NAME, **DEVICE)
    assert info.supplement_fields().cves == ("CVE-2026-0001",)


def test_published_versions_are_never_rewritten(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"one")
    before = served_files(repo)
    repo.publish(NAME, b"two")
    refresh_timestamp(repo.repo_dir, repo.keys_dir)
    after = served_files(repo)
    for path, digest in before.items():
        if path != "metadata/timestamp.json":
            assert after[path] == digest, path
    leftovers = [p for p in repo.repo_dir.rglob(".bsi-*") if p.name != ".bsi-lock"]
    assert leftovers == []


def test_several_targets_in_one_version(repo: TufRepo, tmp_path: Path) -> None:
    stage_target(repo.repo_dir, NAME, bundle(tmp_path), CUSTOM)
    status = stage_target(
        repo.repo_dir, "flatcar/x/cryptex.tar.zst", bundle(tmp_path, b"f", "f.bin"), CUSTOM
    )
    assert status.describe() == "targets v2: 0 of 1 required signatures from the targets keys"
    sign_role(repo.repo_dir, "targets", repo.key_path("targets"))
    finalize(repo.repo_dir, repo.keys_dir, "targets")
    assert sorted(repo.current("targets").signed.targets) == [NAME, "flatcar/x/cryptex.tar.zst"]

    stage_role(repo.repo_dir, "targets", remove_targets=["flatcar/x/cryptex.tar.zst"])
    sign_role(repo.repo_dir, "targets", repo.key_path("targets"))
    result = finalize(repo.repo_dir, repo.keys_dir, "targets")
    assert result.versions["targets"] == 3
    assert list(repo.current("targets").signed.targets) == [NAME]


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs/x", "a//b", "a/./b", "", "a\\b"])
def test_unsafe_target_names_are_refused(repo: TufRepo, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidInput, match="safe relative path"):
        stage_target(repo.repo_dir, name, bundle(tmp_path), CUSTOM)


def test_custom_metadata_must_be_plain_json(repo: TufRepo, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="plain JSON"):
        stage_target(repo.repo_dir, NAME, bundle(tmp_path), {"when": datetime.now(UTC)})


def test_missing_bundle_or_repository(repo: TufRepo, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a file"):
        stage_target(repo.repo_dir, NAME, tmp_path / "missing", CUSTOM)
    with pytest.raises(RepositoryStateError, match="bsi keys init"):
        stage_target(tmp_path / "nothing", NAME, bundle(tmp_path), CUSTOM)


# --- offline signing to a threshold -------------------------------------------------


def test_targets_publish_only_once_the_threshold_signed(
    make_repo: Callable[..., TufRepo], tmp_path: Path
) -> None:
    repo = make_repo(thresholds={"targets": 2})
    before = served_files(repo)

    # On the publishing machine only one targets key is at hand.
    with pytest.raises(ThresholdNotMet) as caught:
        publish_target(
            repo.repo_dir,
            repo.keys_dir,
            NAME,
            bundle(tmp_path),
            CUSTOM,
            signers=[repo.signer("targets", 1)],
        )
    assert "1 of 2 required signatures" in str(caught.value)
    assert "bsi keys sign targets" in str(caught.value)
    assert served_files(repo) == before  # nothing published
    assert staged_status(repo.repo_dir, "targets").describe() == (
        "targets v2: 1 of 2 required signatures from the targets keys"
    )

    # Signing twice with the same key does not count twice.
    status = sign_role(repo.repo_dir, "targets", repo.key_path("targets", 1))
    assert len(status.checks[0].signed) == 1
    with pytest.raises(ThresholdNotMet, match="1 of 2"):
        finalize(repo.repo_dir, repo.keys_dir, "targets")

    # A key the role does not trust is refused outright.
    with pytest.raises(KeyFileError, match="not a targets key"):
        sign_role(repo.repo_dir, "targets", repo.key_path("snapshot"))

    # The second key holder signs, offline; now it publishes.
    status = sign_role(repo.repo_dir, "targets", repo.key_path("targets", 2))
    assert status.verified
    result = finalize(repo.repo_dir, repo.keys_dir, "targets")
    assert result.versions["targets"] == 2
    targets = repo.current("targets")
    assert len(targets.signatures) == 2
    assert repo.client(tmp_path / "device").expect_target(NAME, **DEVICE).length > 0


def test_changing_the_staged_version_drops_its_signatures(
    make_repo: Callable[..., TufRepo], tmp_path: Path
) -> None:
    repo = make_repo(thresholds={"targets": 2})
    stage_target(repo.repo_dir, NAME, bundle(tmp_path), CUSTOM)
    sign_role(repo.repo_dir, "targets", repo.key_path("targets", 1))
    status = stage_target(repo.repo_dir, "other/x.bin", bundle(tmp_path, b"x", "x.bin"), CUSTOM)
    assert status.checks[0].signed == ()


def test_finalize_and_sign_need_a_staged_version(repo: TufRepo) -> None:
    with pytest.raises(RepositoryStateError, match="no staged targets"):
        finalize(repo.repo_dir, repo.keys_dir, "targets")
    with pytest.raises(RepositoryStateError, match="no staged root"):
        sign_role(repo.repo_dir, "root", repo.key_path("root"))
    with pytest.raises(InvalidInput, match="unknown TUF role"):
        sign_role(repo.repo_dir, "timestamp", repo.key_path("timestamp"))


def test_discarding_a_staged_version(repo: TufRepo, tmp_path: Path) -> None:
    stage_target(repo.repo_dir, NAME, bundle(tmp_path), CUSTOM)
    discard_staged(repo.repo_dir, "targets")
    with pytest.raises(RepositoryStateError):
        staged_status(repo.repo_dir, "targets")


# --- the server's timestamp refresh -------------------------------------------------


def test_refresh_timestamp_resigns_only_what_the_online_keys_own(repo: TufRepo) -> None:
    now = datetime.now(UTC)
    result = refresh_timestamp(repo.repo_dir, repo.keys_dir, now=now)
    assert result.versions == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 2}
    assert result.warnings == ()

    # Close to the snapshot's expiry, snapshot is re-signed too.
    later = now + timedelta(days=6, hours=12)
    result = refresh_timestamp(repo.repo_dir, repo.keys_dir, now=later)
    assert result.versions["snapshot"] == 2
    assert repo.current("snapshot").signed.expires > later + timedelta(days=6)

    # Offline roles cannot be re-signed by the server: it warns instead.
    much_later = now + timedelta(days=85)
    result = refresh_timestamp(repo.repo_dir, repo.keys_dir, now=much_later)
    assert any(w.startswith("targets v1 expires") for w in result.warnings)


def test_a_clock_behind_the_last_signature_signs_nothing(repo: TufRepo) -> None:
    """400 days behind, the server would sign a timestamp every device finds expired."""
    now = datetime.now(UTC)
    refresh_timestamp(repo.repo_dir, repo.keys_dir, now=now)
    before = repo.served("metadata/timestamp.json")
    with pytest.raises(ClockTrouble, match="refusing to sign"):
        refresh_timestamp(repo.repo_dir, repo.keys_dir, now=now - timedelta(days=400))
    assert repo.served("metadata/timestamp.json") == before
    refresh_timestamp(repo.repo_dir, repo.keys_dir, now=now - timedelta(minutes=1))  # jitter


def test_refresh_timestamp_needs_the_online_key(repo: TufRepo) -> None:
    (repo.keys_dir / "timestamp-1.pem").unlink()
    before = repo.served("metadata/timestamp.json")
    with pytest.raises(ThresholdNotMet, match="timestamp"):
        refresh_timestamp(repo.repo_dir, repo.keys_dir)
    assert repo.served("metadata/timestamp.json") == before


# --- key rotation -------------------------------------------------------------------


def test_root_rotation_is_signed_by_old_and_new_root_keys(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"before")
    client_home = tmp_path / "device"
    repo.client(client_home).refresh()
    old_keyid = repo.signer("root").public_key.keyid

    rotation = rotate_key(repo.repo_dir, repo.keys_dir, "root", signers=[repo.signer("root")])
    assert rotation.published is not None
    assert [k.path.name for k in rotation.new_keys] == ["root-2.pem"]
    assert rotation.published.retired_keys == (repo.keys_dir / "retired" / "root-1.pem",)

    v1, v2 = repo.root(1), repo.root(2)
    new_keyid = rotation.new_keys[0].keyid
    assert v2.signed.roles["root"].keyids == [new_keyid]
    assert set(v2.signatures) == {old_keyid, new_keyid}
    status = signature_status(v2, v2.signed, previous_root=v1.signed)
    assert status.verified
    assert len(status.checks) == 2

    # A device that trusts root v1 follows the chain to v2 and keeps working.
    repo.publish(NAME, b"after", now=None)
    client = repo.client(client_home)
    assert client.download(client.expect_target(NAME, **DEVICE), client_home / "preboot")
    assert json.loads((client_home / "tuf" / "root.json").read_bytes())["signed"]["version"] == 2


def test_root_rotation_waits_for_the_old_threshold(
    make_repo: Callable[..., TufRepo], tmp_path: Path
) -> None:
    repo = make_repo(thresholds={"root": 2})
    rotation = rotate_key(
        repo.repo_dir, repo.keys_dir, "root", count=1, signers=[repo.signer("root", 1)]
    )
    assert rotation.published is None
    assert rotation.status.describe() == (
        "root v2: 1 of 2 required signatures from the root v1 keys; "
        "1 of 1 required signatures from the new root keys"
    )
    assert not (repo.metadata / "2.root.json").exists()
    with pytest.raises(ThresholdNotMet, match="1 of 2 required signatures from the root v1"):
        finalize(repo.repo_dir, repo.keys_dir, "root")
    with pytest.raises(RepositoryExists, match="already staged"):
        rotate_key(repo.repo_dir, repo.keys_dir, "timestamp", signers=[repo.signer("root", 1)])
    # While root is staged, targets wait for it.
    stage_target(repo.repo_dir, NAME, bundle(tmp_path), CUSTOM)
    sign_role(repo.repo_dir, "targets", repo.key_path("targets"))
    with pytest.raises(RepositoryStateError, match="finalize root first"):
        finalize(repo.repo_dir, repo.keys_dir, "targets")

    assert sign_role(repo.repo_dir, "root", repo.key_path("root", 2)).verified
    result = finalize(repo.repo_dir, repo.keys_dir, "root")
    assert result.versions["root"] == 2
    assert result.versions["targets"] == 2  # the staged targets went out with it
    assert repo.root(2).signed.roles["root"].threshold == 1
    assert repo.client(tmp_path / "device").expect_target(NAME, **DEVICE)


def test_targets_rotation_resigns_targets_with_the_new_key(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"signed by the old key")
    old_signer = repo.signer("targets")
    rotation = rotate_key(repo.repo_dir, repo.keys_dir, "targets", signers=[repo.signer("root")])
    assert rotation.published is not None
    assert rotation.published.versions["targets"] == 3
    assert [p.name for p in rotation.published.retired_keys] == ["targets-1.pem"]

    # The retired key can no longer publish; the new one can.
    with pytest.raises(KeyFileError, match="not a targets key"):
        publish_target(
            repo.repo_dir, repo.keys_dir, NAME, bundle(tmp_path), CUSTOM, signers=[old_signer]
        )
    assert not (repo.repo_dir / "staged" / "targets.json").exists()
    repo.publish(NAME, b"signed by the new key")
    client = repo.client(tmp_path / "device")
    path = client.download(client.expect_target(NAME, **DEVICE), tmp_path / "device" / "preboot")
    assert path.read_bytes() == b"signed by the new key"


def test_online_key_rotation_keeps_the_server_running(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"x")
    repo.client(tmp_path / "device").refresh()
    rotation = rotate_key(repo.repo_dir, repo.keys_dir, "timestamp", signers=[repo.signer("root")])
    assert rotation.published is not None
    assert [k.path.name for k in rotation.new_keys] == ["timestamp-2.pem"]
    assert not (repo.keys_dir / "timestamp-1.pem").exists()
    refresh_timestamp(repo.repo_dir, repo.keys_dir)
    timestamp = repo.current("timestamp")
    assert list(timestamp.signatures) == [rotation.new_keys[0].keyid]
    repo.client(tmp_path / "device").refresh()


def test_rotation_needs_current_root_keys(repo: TufRepo) -> None:
    with pytest.raises(KeyFileError, match="not a root key"):
        rotate_key(repo.repo_dir, repo.keys_dir, "snapshot", signers=[repo.signer("targets")])
    assert not (repo.keys_dir / "snapshot-2.pem").exists()
    assert not (repo.repo_dir / "staged" / "root.json").exists()
    with pytest.raises(InvalidInput, match="threshold"):
        rotate_key(repo.repo_dir, repo.keys_dir, "targets", count=1, threshold=2)


def test_rotation_without_root_signatures_stays_staged(repo: TufRepo) -> None:
    rotation = rotate_key(repo.repo_dir, repo.keys_dir, "snapshot")
    assert rotation.published is None
    assert not rotation.status.verified
    # the server keeps signing with the old key until the new root is published
    refresh_timestamp(repo.repo_dir, repo.keys_dir)
    sign_role(repo.repo_dir, "root", repo.key_path("root"))
    result = finalize(repo.repo_dir, repo.keys_dir, "root")
    assert result.versions["root"] == 2
    snapshot = repo.current("snapshot")
    assert list(snapshot.signatures) == [rotation.new_keys[0].keyid]


def test_root_can_be_renewed_before_it_expires(repo: TufRepo) -> None:
    later = datetime.now(UTC) + timedelta(days=300)
    status = stage_role(repo.repo_dir, "root", now=later)
    assert not status.verified
    sign_role(repo.repo_dir, "root", repo.key_path("root"))
    finalize(repo.repo_dir, repo.keys_dir, "root", now=later)
    assert repo.root(2).signed.expires > later + timedelta(days=364)
    assert repo.root(2).signed.roles == repo.root(1).signed.roles


def test_repository_status(make_repo: Callable[..., TufRepo], tmp_path: Path) -> None:
    repo = make_repo(thresholds={"targets": 2})
    stage_target(repo.repo_dir, NAME, bundle(tmp_path), CUSTOM)
    status = repository_status(repo.repo_dir)
    assert [(r.role, r.version) for r in status.served] == [
        ("root", 1),
        ("targets", 1),
        ("snapshot", 1),
        ("timestamp", 1),
    ]
    assert [s.describe() for s in status.staged] == [
        "targets v2: 0 of 2 required signatures from the targets keys"
    ]
    assert dict(status.targets) == {}
    staged = Metadata.from_file(str(repo.repo_dir / "staged" / "targets.json"))
    assert NAME in staged.signed.targets
