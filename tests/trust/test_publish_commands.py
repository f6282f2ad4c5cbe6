"""The publisher's path end to end with the real commands: keys, build, publish, verify,
and a device-side TUF client downloading from the real server on loopback."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from bsi.trust.repository import available_signers, publish_target, published_supplements
from cryptex_support import SPEC_TEXT, standard_trees
from running import bsi_serve, run_bsi


def bsi(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_bsi(*args, unset=("BSI_TUF_KEY_PASSPHRASE",))
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def published_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keys, a bundle built twice (the same bytes) and published: each command runs
    once per module, as the real command in a process of its own."""
    work = tmp_path_factory.mktemp("published")
    keys, repo = work / "keys", work / "repo"
    bsi("keys", "init", "--keys-dir", keys, "--repo-dir", repo)
    base, patched = standard_trees(work)
    spec = work / "supplement.yaml"
    spec.write_text(SPEC_TEXT)
    bundle = work / "out" / "12A100a.cryptex"
    bundle.parent.mkdir()
    build = ["supplement", "build", "--spec", spec, "--base", base, "--patched", patched]
    bsi(*build, "--out", bundle)
    again = work / "again.cryptex"
    bsi(*build, "--out", again)
    assert again.read_bytes() == bundle.read_bytes()  # deterministic
    bsi("supplement", "publish", bundle, "--repo-dir", repo, "--keys-dir", keys)
    return work


@pytest.fixture
def published(published_once: Path, tmp_path: Path) -> dict[str, Path]:
    """This test's own copy of what ``published_once`` made (modes and links kept)."""
    shutil.copytree(published_once, tmp_path, symlinks=True, dirs_exist_ok=True)
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    return {"keys": keys, "repo": repo, "bundle": tmp_path / "out" / "12A100a.cryptex"}


def test_published_bundle_verifies_and_a_tampered_one_does_not(
    published: dict[str, Path], tmp_path: Path
) -> None:
    ok = bsi("supplement", "verify", published["bundle"], "--repo-dir", published["repo"])
    assert "signed by" in ok.stderr
    assert "libssl.so.3" in ok.stdout

    data = bytearray(published["bundle"].read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered.cryptex"
    tampered.write_bytes(bytes(data))
    refused = bsi("supplement", "verify", tampered, check=False)
    assert refused.returncode == 2
    assert "error" in refused.stderr
    status = bsi("keys", "status", "--repo-dir", published["repo"]).stdout
    assert "debian/12A100a.cryptex" in status


def test_device_downloads_the_signed_bundle_from_the_server(
    published: dict[str, Path], tmp_path: Path
) -> None:
    serve = ("--data-dir", tmp_path / "data", "--tuf-repo-dir", published["repo"])
    with bsi_serve(*serve, "--tuf-keys-dir", published["keys"]) as base:
        timestamp = httpx.get(f"{base}/tuf/metadata/timestamp.json")
        assert timestamp.headers["cache-control"] == "no-cache"
        root = httpx.get(f"{base}/tuf/metadata/1.root.json")
        assert "immutable" in root.headers["cache-control"]
        assert httpx.get(f"{base}/tuf/staged/targets.json").status_code == 404

        metadata, targets = tmp_path / "device-metadata", tmp_path / "device-targets"
        metadata.mkdir()
        targets.mkdir()
        client = ["tuf-client", "--metadata-dir", metadata]
        assert bsi(*client, "init", published["repo"] / "metadata" / "1.root.json").returncode == 0
        download = bsi(
            *client,
            "--metadata-url",
            f"{base}/tuf/metadata",
            "--target-name",
            "debian/12A100a.cryptex",
            "--target-base-url",
            f"{base}/tuf/targets",
            "--target-dir",
            targets,
            "download",
            check=False,
        )
        assert download.returncode == 0, download.stderr
        (fetched,) = [p for p in targets.rglob("*") if p.is_file()]
        expected = hashlib.sha256(published["bundle"].read_bytes()).hexdigest()
        assert hashlib.sha256(fetched.read_bytes()).hexdigest() == expected
        missing = bsi(
            *client,
            "--metadata-url",
            f"{base}/tuf/metadata",
            "--target-name",
            "debian/nope.cryptex",
            "--target-base-url",
            f"{base}/tuf/targets",
            "--target-dir",
            targets,
            "download",
            check=False,
        )
        assert missing.returncode == 1


def test_a_supplemental_build_is_never_republished_with_other_bytes(
    published: dict[str, Path], tmp_path: Path
) -> None:
    repo, keys, bundle = published["repo"], published["keys"], published["bundle"]
    # the same bytes again: nothing to refuse
    bsi("supplement", "publish", bundle, "--repo-dir", repo, "--keys-dir", keys)
    before = {p: p.read_bytes() for p in (repo / "metadata").glob("*.json")}

    patched = tmp_path / "patched"
    changed = next(p for p in sorted(patched.rglob("*")) if p.is_file())
    changed.write_bytes(changed.read_bytes() + b"\n# a different fix under the same build\n")
    spec = tmp_path / "supplement.yaml"
    other = tmp_path / "other.cryptex"
    build = ["supplement", "build", "--spec", spec, "--base", tmp_path / "base"]
    bsi(*build, "--patched", patched, "--out", other)

    refused = bsi(
        "supplement", "publish", other, "--repo-dir", repo, "--keys-dir", keys, check=False
    )
    assert refused.returncode == 2, refused.stderr
    old = hashlib.sha256(bundle.read_bytes()).hexdigest()
    new = hashlib.sha256(other.read_bytes()).hexdigest()
    message = " ".join(refused.stderr.split())
    assert old in message, refused.stderr
    assert new in message, refused.stderr
    assert "debian/12A100a.cryptex" in message
    assert {p: p.read_bytes() for p in (repo / "metadata").glob("*.json")} == before


def test_a_publish_reaches_a_running_server_and_wakes_waiting_devices(
    published: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    serve = ("--data-dir", data, "--tuf-repo-dir", published["repo"])
    with bsi_serve(*serve) as base:
        admin = {"Authorization": f"Bearer {(data / 'admin-api-key').read_text().strip()}"}
        token = httpx.post(
            f"{base}/v1/admin/enrollment-tokens", headers=admin, json={"group": "default"}
        ).json()["token"]
        credential = httpx.post(f"{base}/v1/enroll", json={"token": token}).json()["credential"]
        device = {"Authorization": f"Bearer {credential}"}
        known = httpx.get(f"{base}/v1/ddm/wait?generation=0&timeout=0.01", headers=device).json()
        woken: list[dict[str, object]] = []
        waiter = threading.Thread(
            target=lambda: woken.append(
                httpx.get(
                    f"{base}/v1/ddm/wait?generation={known['generation']}&timeout=60",
                    headers=device,
                    timeout=90,
                ).json()
            )
        )
        waiter.start()

        spec = tmp_path / "b.yaml"
        spec.write_text(
            SPEC_TEXT.replace("extra_version: (a)", "extra_version: (b)").replace(
                "supplemental_build: 12A100a", "supplemental_build: 12A100b"
            )
        )
        base_tree, patched = tmp_path / "base", tmp_path / "patched"
        bundle = tmp_path / "12A100b.cryptex"
        bsi("supplement", "build", "--spec", spec, "--base", base_tree, "--patched", patched,
            "--out", bundle)  # fmt: skip
        bsi("supplement", "publish", bundle, "--repo-dir", published["repo"],
            "--keys-dir", published["keys"])  # fmt: skip
        published_at = time.monotonic()
        builds: list[str] = []
        while time.monotonic() - published_at < 30 and "12A100b" not in builds:
            time.sleep(0.2)
            rows = httpx.get(f"{base}/v1/admin/supplements", headers=admin).json()
            builds = [row["build"] for row in rows]
        assert "12A100b" in builds, "the published supplement did not reach the server"
        assert time.monotonic() - published_at < 10
        waiter.join(timeout=30)
        assert woken
        assert woken[0]["check_in"] is True


def test_a_running_server_refuses_a_known_build_signed_again_with_other_bytes(
    published: dict[str, Path], tmp_path: Path
) -> None:
    """A signer that bypasses ``supplement publish``'s guard (another tool, a hand edit of
    the repository) re-signs 12A100a with other bytes: the server keeps the known
    bytes' entry, pauses it so no device is offered the change, and says why."""
    repo, keys, bundle = published["repo"], published["keys"], published["bundle"]
    data = tmp_path / "data"
    with bsi_serve("--data-dir", data, "--tuf-repo-dir", repo) as base:
        admin = {"Authorization": f"Bearer {(data / 'admin-api-key').read_text().strip()}"}

        def supplement() -> dict[str, object]:
            rows = httpx.get(f"{base}/v1/admin/supplements", headers=admin).json()
            return next(row for row in rows if row["build"] == "12A100a")

        assert supplement()["state"] == "published"
        fields, old = published_supplements(repo)["debian/12A100a.cryptex"]
        other = tmp_path / "other.cryptex"
        other.write_bytes(bundle.read_bytes() + b"other bytes")
        new = hashlib.sha256(other.read_bytes()).hexdigest()
        signers = available_signers(repo, keys, "targets")
        publish_target(repo, keys, "debian/12A100a.cryptex", other, fields,
                       signers=signers, immutable=False)  # fmt: skip
        assert published_supplements(repo)["debian/12A100a.cryptex"][1] == new

        deadline = time.monotonic() + 30
        while supplement()["state"] != "paused":
            assert time.monotonic() < deadline, "the server did not notice the changed bytes"
            time.sleep(0.2)
        events = httpx.get(f"{base}/v1/admin/security-events", headers=admin).json()
        republished = [e for e in events if e["kind"] == "republished-build"]
        assert republished, events
        assert old in republished[0]["detail"]
        assert new in republished[0]["detail"]

        refused = httpx.post(f"{base}/v1/admin/catalog/sync-repository", headers=admin)
        assert refused.status_code == 409, refused.text
        assert old in refused.text
        assert new in refused.text
        stored = httpx.get(f"{base}/v1/admin/catalog", headers=admin).json()
        (entry,) = [s for s in stored["supplements"] if s["build"] == "12A100a"]
        assert entry["target_sha256"] == old  # what every device checks its download against

        # An admin import cannot change the digest either; it changes nothing.
        forged = {**stored, "supplements": [{**entry, "target_sha256": new}]}
        imported = httpx.post(f"{base}/v1/admin/catalog", headers=admin, json=forged)
        assert imported.status_code == 409, imported.text
        assert "nothing was imported" in imported.text
        assert httpx.get(f"{base}/v1/admin/catalog", headers=admin).json() == stored
