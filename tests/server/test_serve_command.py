"""``bsi serve``, ``bsi db upgrade`` and ``bsi api-key create`` as an admin runs them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from nanomdm_client import DmHook, Webhook, device
from pgcluster import create_database, free_port
from running import bsi_serve, run_bsi


def bsi(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_bsi(*args, env=env)


def test_embedded_default_creates_its_database_and_first_admin_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with bsi_serve("--data-dir", data) as url:
        key_file = data / "admin-api-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        response = httpx.get(f"{url}/v1/admin/devices", headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
    # a second start reuses the database and keeps the key
    with bsi_serve("--data-dir", data) as url:
        response = httpx.get(f"{url}/v1/admin/groups", headers={"Authorization": f"Bearer {key}"})
        assert response.json() == ["default"]


def test_postgresql_must_be_migrated_first(postgres_base: str) -> None:
    url = create_database(postgres_base, f"bsi_cli_{os.getpid()}")
    refused = subprocess.run(
        [sys.executable, "-m", "bsi", "serve", "--database-url", url, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "bsi db upgrade" in refused.stderr
    upgraded = bsi("db", "upgrade", "--database-url", url)
    assert upgraded.returncode == 0, upgraded.stderr
    created = bsi("api-key", "create", "ops", "--role", "admin", BSI_DATABASE_URL=url)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    with bsi_serve("--database-url", url) as server:
        response = httpx.get(
            f"{server}/v1/admin/devices", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200


def test_a_data_dir_that_cannot_be_one_is_a_clear_error(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    refused = subprocess.run(
        [sys.executable, "-m", "bsi", "serve", "--data-dir", str(taken), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"--data-dir {taken}: File exists" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert taken.read_text() == "not a directory"


def test_a_bad_database_url_is_a_clear_error() -> None:
    result = bsi("db", "upgrade", "--database-url", "mysql://nowhere/bsi")
    assert result.returncode == 2
    assert "unsupported database" in result.stderr


@pytest.mark.parametrize("role", ["root", ""])
def test_api_key_roles_are_checked(tmp_path: Path, role: str) -> None:
    assert bsi("db", "upgrade", "--data-dir", tmp_path).returncode == 0
    result = bsi("api-key", "create", "x", "--role", role, "--data-dir", tmp_path)
    assert result.returncode == 2
    assert "is not a role" in result.stderr


def test_the_readme_nanomdm_recipe_works_with_keys_written_by_the_shell(tmp_path: Path) -> None:
    """Key files end in a newline; NanoMDM gets "$(cat file)", which has none."""
    dm_key, webhook_key = tmp_path / "dm.key", tmp_path / "webhook.key"
    dm_key.write_text("c2VjcmV0LWtleS1mb3ItdGhlLWRtLWxpbmsK\n")
    webhook_key.write_text("d2ViaG9vay1rZXktZm9yLXRoZS10ZXN0Cg==\n")
    flag = {path: path.read_text().rstrip("\n").encode() for path in (dm_key, webhook_key)}
    with bsi_serve(
        "--data-dir",
        tmp_path / "data",
        "--nanomdm-hmac-key-file",
        dm_key,
        "--nanomdm-webhook-hmac-key-file",
        webhook_key,
    ) as url:
        mac = device("A1B2C3D4-0000-4000-8000-00000000A1B2")
        events = Webhook(f"{url}/v1/nanomdm/webhook", key=flag[webhook_key])
        assert events.authenticate(mac.id, "C02RECIPE01").status_code == 200
        nano = DmHook(f"{url}/v1/ddm/", send_key=flag[dm_key], recv_key=flag[dm_key])
        assert nano.json(mac, "tokens")["SyncTokens"]["DeclarationsToken"]


def test_a_bad_unsigned_source_is_a_clear_error(tmp_path: Path) -> None:
    result = bsi("serve", "--data-dir", tmp_path, "--nanomdm-allow-unsigned-from", "nowhere")
    assert result.returncode == 2
    assert "'nowhere' is not an IP address or network" in result.stderr
