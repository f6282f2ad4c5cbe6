"""``bsi serve``, ``bsi db upgrade`` and ``bsi api-key create`` as an admin runs them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pgcluster import create_database, free_port
from running import bsi_serve


def bsi(*args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bsi", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


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
