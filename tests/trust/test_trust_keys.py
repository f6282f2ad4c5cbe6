"""``init_keys``: key files per role, a signed first repository, and its refusals."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf_simulator import TufRepo

from bsi.errors import Conflict, InvalidInput
from bsi.trust import (
    PASSPHRASE_ENV,
    Expiries,
    KeyFileError,
    RepositoryExists,
    init_keys,
    load_signer,
)
from bsi.trust._tuf import Metadata, Root
from bsi.trust.keys import list_key_files, passphrase_from_env, read_public_key
from bsi.trust.model import signature_status

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def _root(repo_dir: Path, version: int = 1) -> Metadata[Root]:
    return Metadata[Root].from_file(str(repo_dir / "metadata" / f"{version}.root.json"))


def test_init_writes_one_file_per_key_and_signed_metadata(tmp_path: Path) -> None:
    keys_dir, repo_dir = tmp_path / "keys", tmp_path / "repo"
    result = init_keys(keys_dir, repo_dir, now=NOW)

    names = sorted(p.name for p in keys_dir.iterdir())
    assert names == [
        f"{role}-1.{ext}"
        for role in ("root", "snapshot", "targets", "timestamp")
        for ext in ("pem", "pub.json")
    ]
    for key_file in result.keys:
        assert stat.S_IMODE(key_file.path.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" in key_file.path.read_bytes()
        role, public = read_public_key(key_file.public_path)
        assert role == key_file.role
        assert public.keyid == key_file.keyid == load_signer(key_file.path).public_key.keyid
        assert public.keytype == "ed25519"

    served = sorted(p.name for p in (repo_dir / "metadata").iterdir())
    assert served == ["1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"]
    assert result.root_path == repo_dir / "metadata" / "1.root.json"

    root = _root(repo_dir)
    assert root.signed.consistent_snapshot is True
    assert signature_status(root, root.signed).verified
    assert root.signed.expires == NOW + timedelta(days=365)
    for role, days in (("targets", 90), ("snapshot", 7), ("timestamp", 1)):
        stored = (
            repo_dir / "metadata" / ("timestamp.json" if role == "timestamp" else f"1.{role}.json")
        )
        md = Metadata.from_file(str(stored))
        assert md.signed.expires == NOW + timedelta(days=days)
        assert signature_status(md, root.signed).verified, role
        assert root.signed.roles[role].keyids == [k.keyid for k in result.keys if k.role == role]


def test_thresholds_and_counts(tmp_path: Path) -> None:
    result = init_keys(
        tmp_path / "keys",
        tmp_path / "repo",
        thresholds={"root": 2, "targets": 2},
        counts={"root": 3},
    )
    root = _root(tmp_path / "repo").signed
    assert (len(root.roles["root"].keyids), root.roles["root"].threshold) == (3, 2)
    assert (len(root.roles["targets"].keyids), root.roles["targets"].threshold) == (2, 2)
    assert (len(root.roles["timestamp"].keyids), root.roles["timestamp"].threshold) == (1, 1)
    assert sorted(k.path.name for k in result.keys if k.role == "root") == [
        "root-1.pem",
        "root-2.pem",
        "root-3.pem",
    ]
    # Every root key signed version 1, so any threshold of them verifies it.
    assert len(_root(tmp_path / "repo").signatures) == 3


@pytest.mark.parametrize(
    ("thresholds", "counts", "needle"),
    [
        ({"targets": 3}, {"targets": 2}, "threshold of 3"),
        ({"root": 0}, {}, "at least 1"),
        ({"mirror": 1}, {}, "mirror"),
        ({}, {"delegated": 1}, "delegated"),
    ],
)
def test_bad_thresholds_are_refused(
    tmp_path: Path, thresholds: dict[str, int], counts: dict[str, int], needle: str
) -> None:
    with pytest.raises(InvalidInput, match=needle):
        init_keys(tmp_path / "keys", tmp_path / "repo", thresholds=thresholds, counts=counts)
    assert not (tmp_path / "keys").exists()
    assert not (tmp_path / "repo").exists()


def test_init_refuses_to_overwrite_keys(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys", tmp_path / "repo")
    before = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    with pytest.raises(RepositoryExists) as caught:
        init_keys(tmp_path / "keys", tmp_path / "other-repo")
    assert isinstance(caught.value, Conflict)
    assert "keys" in str(caught.value)
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == before
    assert not (tmp_path / "other-repo" / "metadata").exists()


def test_init_refuses_to_overwrite_a_repository(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys", tmp_path / "repo")
    root = (tmp_path / "repo" / "metadata" / "1.root.json").read_bytes()
    with pytest.raises(RepositoryExists, match="already holds metadata"):
        init_keys(tmp_path / "other-keys", tmp_path / "repo")
    assert (tmp_path / "repo" / "metadata" / "1.root.json").read_bytes() == root
    assert not (tmp_path / "other-keys").exists()


def test_keys_may_not_live_in_the_served_tree(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="served"):
        init_keys(tmp_path / "repo" / "metadata" / "keys", tmp_path / "repo")


def test_passphrase_encrypts_the_offline_keys_only(tmp_path: Path) -> None:
    result = init_keys(tmp_path / "keys", tmp_path / "repo", passphrase=b"correct horse")
    by_role = {k.role: k for k in result.keys}
    for role in ("root", "targets"):
        assert b"ENCRYPTED PRIVATE KEY" in by_role[role].path.read_bytes()
        with pytest.raises(KeyFileError, match=PASSPHRASE_ENV):
            load_signer(by_role[role].path)
        with pytest.raises(KeyFileError, match="wrong passphrase"):
            load_signer(by_role[role].path, passphrase=b"wrong")
        signer = load_signer(by_role[role].path, passphrase=b"correct horse")
        assert signer.public_key.keyid == by_role[role].keyid
    for role in ("snapshot", "timestamp"):
        assert b"ENCRYPTED" not in by_role[role].path.read_bytes()
        assert load_signer(by_role[role].path).public_key.keyid == by_role[role].keyid


def test_passphrase_comes_from_the_environment() -> None:
    assert passphrase_from_env({PASSPHRASE_ENV: "s3cret"}) == b"s3cret"
    assert passphrase_from_env({PASSPHRASE_ENV: ""}) is None
    assert passphrase_from_env({}) is None


def test_unreadable_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="missing"):
        load_signer(tmp_path / "nope.pem")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match="cannot load"):
        load_signer(junk)


def test_expiry_periods_are_configurable_and_recorded(tmp_path: Path) -> None:
    periods = Expiries(
        root=timedelta(days=30),
        targets=timedelta(days=10),
        snapshot=timedelta(hours=6),
        timestamp=timedelta(minutes=30),
    )
    init_keys(tmp_path / "keys", tmp_path / "repo", expires=periods, now=NOW)
    settings = json.loads((tmp_path / "repo" / "bsi-trust.json").read_bytes())
    assert settings["expires"] == {
        "root": 30 * 86400,
        "targets": 10 * 86400,
        "snapshot": 6 * 3600,
        "timestamp": 1800,
    }
    timestamp = Metadata.from_file(str(tmp_path / "repo" / "metadata" / "timestamp.json"))
    assert timestamp.signed.expires == NOW + timedelta(minutes=30)


def test_a_fresh_repository_is_trusted_by_a_device(
    make_repo: Callable[..., TufRepo], tmp_path: Path
) -> None:
    repo = make_repo()
    client = repo.client(tmp_path / "device")
    client.refresh()
    assert sorted(p.name for p in (tmp_path / "device" / "tuf").glob("*.json")) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]


def test_key_files_are_listed_by_role(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys", tmp_path / "repo", counts={"targets": 2})
    assert [k.path.name for k in list_key_files(tmp_path / "keys", "targets")] == [
        "targets-1.pem",
        "targets-2.pem",
    ]
    assert len(list_key_files(tmp_path / "keys")) == 5
