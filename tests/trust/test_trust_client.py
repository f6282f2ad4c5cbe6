"""The device's client outside attacks: trust anchor, unreachable repository, and the
tuf-conformance CLI (``bsi tuf-client``) run against a live bsi repository."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tuf_simulator import TufRepo

from bsi.trust import (
    RepositoryExists,
    RepositoryUnavailable,
    TrustedClient,
    TrustStoreError,
    UntrustedMetadata,
    trust_root,
)
from bsi.trust.conformance_client import tuf_client_main

NAME = "debian/25D771280a/cryptex.tar.zst"


# --- trust anchor ------------------------------------------------------------------


def test_trust_root_checks_the_anchor(repo: TufRepo, tmp_path: Path) -> None:
    root = (repo.metadata / "1.root.json").read_bytes()
    path = trust_root(tmp_path / "tuf", root)
    assert path.read_bytes() == root
    with pytest.raises(RepositoryExists):
        trust_root(tmp_path / "tuf", root)
    trust_root(tmp_path / "tuf", root, replace=True)

    with pytest.raises(UntrustedMetadata, match="not TUF root"):
        trust_root(tmp_path / "a", b"{}")
    with pytest.raises(UntrustedMetadata, match="holds timestamp"):
        trust_root(tmp_path / "b", repo.served("metadata/timestamp.json"))
    unsigned = json.loads(root)
    unsigned["signatures"] = []
    with pytest.raises(UntrustedMetadata, match="0 of 1"):
        trust_root(tmp_path / "c", json.dumps(unsigned).encode())
    assert not (tmp_path / "c" / "root.json").exists()


def test_a_client_without_a_trust_anchor_refuses(repo: TufRepo, tmp_path: Path) -> None:
    client = TrustedClient(tmp_path / "empty", f"{repo.server.url}/metadata/")
    with pytest.raises(TrustStoreError, match="no trusted root"):
        client.refresh()
    assert repo.server.requests == []


def test_an_embedded_root_can_bootstrap(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"x")
    client = TrustedClient(
        tmp_path / "tuf",
        f"{repo.server.url}/metadata/",
        f"{repo.server.url}/targets/",
        bootstrap_root=(repo.metadata / "1.root.json").read_bytes(),
    )
    assert client.target_info(NAME).length == 1


def test_unreachable_repository(repo: TufRepo, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = repo.client(tmp_path)
    client.metadata_url = f"http://127.0.0.1:{port}/metadata/"
    with pytest.raises(RepositoryUnavailable):
        client.refresh()


def test_missing_metadata_is_unavailable_not_trusted(repo: TufRepo, tmp_path: Path) -> None:
    (repo.metadata / "timestamp.json").unlink()
    with pytest.raises(RepositoryUnavailable, match="404"):
        repo.client(tmp_path).refresh()


# --- the conformance CLI -------------------------------------------------------------


def cli(repo: TufRepo, home: Path, *args: str) -> int:
    common = [
        "--metadata-dir",
        str(home / "metadata"),
        "--metadata-url",
        f"{repo.server.url}/metadata",
    ]
    return tuf_client_main([*common, *args])


def download_args(repo: TufRepo, home: Path, *names: str) -> list[str]:
    targets = [arg for name in names for arg in ("--target-name", name)]
    return [
        *targets,
        "--target-base-url",
        f"{repo.server.url}/targets",
        "--target-dir",
        str(home / "targets"),
        "download",
    ]


def test_conformance_cli_init_refresh_download(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"bundle")
    (tmp_path / "metadata").mkdir()
    (tmp_path / "targets").mkdir()
    root = tmp_path / "initial_root.json"
    root.write_bytes(repo.served("metadata/1.root.json"))

    assert tuf_client_main(["--metadata-dir", str(tmp_path / "metadata"), "init", str(root)]) == 0
    assert repo.server.requests == []  # init makes no request
    assert cli(repo, tmp_path, "refresh") == 0
    assert sorted(p.name for p in (tmp_path / "metadata").glob("*.json")) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]
    assert cli(repo, tmp_path, *download_args(repo, tmp_path, NAME)) == 0
    files = list((tmp_path / "targets").iterdir())
    assert [f.read_bytes() for f in files] == [b"bundle"]

    # cached: a second download makes no artifact request
    assert cli(repo, tmp_path, *download_args(repo, tmp_path, NAME)) == 0
    assert len(repo.server.requested("targets/")) == 1


def test_conformance_cli_failures_exit_1(repo: TufRepo, tmp_path: Path) -> None:
    repo.publish(NAME, b"bundle")
    root = tmp_path / "initial_root.json"
    root.write_bytes(repo.served("metadata/1.root.json"))
    assert tuf_client_main(["--metadata-dir", str(tmp_path / "metadata"), "init", str(root)]) == 0

    assert cli(repo, tmp_path, *download_args(repo, tmp_path, NAME, "no/such/target")) == 1
    assert [f.read_bytes() for f in (tmp_path / "targets").iterdir()] == [b"bundle"]
    repo.serve_instead(repo.bundle_path(NAME), b"tampered")
    assert cli(repo, tmp_path, *download_args(repo, tmp_path, "other")) == 1
    assert tuf_client_main(["--metadata-dir", str(tmp_path / "m"), "bogus"]) == 1
    assert tuf_client_main(["init", "x"]) == 1  # missing --metadata-dir
    assert tuf_client_main(["--metadata-dir", str(tmp_path / "m"), "refresh"]) == 1
    bad = tmp_path / "bad_root.json"
    bad.write_bytes(b'{"signed": {}}')
    assert tuf_client_main(["--metadata-dir", str(tmp_path / "m2"), "init", str(bad)]) == 1


def test_conformance_cli_runs_as_a_module(repo: TufRepo, tmp_path: Path) -> None:
    root = tmp_path / "initial_root.json"
    root.write_bytes(repo.served("metadata/1.root.json"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "bsi.trust.conformance_client"]
    init = subprocess.run(
        [*command, "--metadata-dir", str(tmp_path / "md"), "init", str(root)],
        env=env,
        capture_output=True,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    refresh = subprocess.run(
        [
            *command,
            "--metadata-url",
            f"{repo.server.url}/metadata",
            "--metadata-dir",
            str(tmp_path / "md"),
            "refresh",
        ],
        env=env,
        capture_output=True,
        check=False,
    )
    assert refresh.returncode == 0, refresh.stderr
    bad = subprocess.run(
        [
            *command,
            "--metadata-url",
            f"{repo.server.url}/nothing",
            "--metadata-dir",
            str(tmp_path / "md"),
            "refresh",
        ],
        env=env,
        capture_output=True,
        check=False,
    )
    assert bad.returncode == 1
    assert b"404" in bad.stderr
