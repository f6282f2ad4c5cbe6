"""The server's settings, declared once (bsi.server.settings) and bound to flags and variables.

Every setting is reached from its flag and from its ``BSI_*`` variable, a flag
beats the variable, a bad value from either is refused naming it before
anything starts, ``bsi serve`` hands its settings on to its workers whole, and
the README's table is the declaration's.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from bsi.cli import app as bsi_app
from bsi.commands.settings import settings_options
from bsi.errors import InvalidInput
from bsi.server.asgi import settings_from_environment
from bsi.server.settings import (
    KeyFile,
    ServerSettings,
    ServeSettings,
    env_name,
    flag_name,
    load,
    markdown_table,
    to_environment,
)
from running import bsi_serve, run_bsi

README = Path(__file__).parents[2] / "README.md"


def samples(where: Path) -> dict[str, tuple[str, Callable[[object], object]]]:
    """For each setting: a valid text other than its default, and what reads the value back."""
    for name in ("dm", "response", "webhook"):
        (where / f"{name}.key").write_text(f"{name}-key-for-the-settings-test\n")

    def key(value: object) -> object:
        return value.key if isinstance(value, KeyFile) else value

    def same(value: object) -> object:
        return value

    return {
        "data_dir": (str(where / "data"), same),
        "database_url": (f"sqlite:///{where / 'other.db'}", same),
        "nanomdm_hmac_key_file": (str(where / "dm.key"), key),
        "nanomdm_response_hmac_key_file": (str(where / "response.key"), key),
        "nanomdm_webhook_hmac_key_file": (str(where / "webhook.key"), key),
        "nanomdm_allow_unsigned_from": ("10.0.0.0/8", same),
        "max_body_bytes": ("2048", same),
        "max_admin_body_bytes": ("4096", same),
        "cache_seconds": ("0.5", same),
        "identity_seconds": ("7", same),
        "last_seen_flush_seconds": ("0.25", same),
        "tuf_repo_dir": (str(where / "repo"), same),
        "tuf_keys_dir": (str(where / "keys"), same),
        "tuf_refresh_seconds": ("60", same),
        "tuf_watch_seconds": ("3", same),
        "request_timeout_seconds": ("9", same),
        "revocation_poll_seconds": ("4", same),
        "rollout_tick_seconds": ("7", same),
        "webhook_seconds": ("9", same),
        "wakeup_poll_seconds": ("0.5", same),
        "status_burst": ("5", same),
        "status_per_second": ("2", same),
        "decision_process_devices": ("500", same),
        "host": ("0.0.0.0", same),
        "port": ("9999", same),
        "workers": ("3", same),
        "log_level": ("info", same),
    }


EXPECTED: dict[str, object] = {
    "nanomdm_hmac_key_file": b"dm-key-for-the-settings-test",
    "nanomdm_response_hmac_key_file": b"response-key-for-the-settings-test",
    "nanomdm_webhook_hmac_key_file": b"webhook-key-for-the-settings-test",
    "nanomdm_allow_unsigned_from": (ipaddress.ip_network("10.0.0.0/8"),),
    "max_body_bytes": 2048,
    "max_admin_body_bytes": 4096,
    "cache_seconds": 0.5,
    "identity_seconds": 7.0,
    "last_seen_flush_seconds": 0.25,
    "tuf_refresh_seconds": 60.0,
    "tuf_watch_seconds": 3.0,
    "request_timeout_seconds": 9.0,
    "revocation_poll_seconds": 4.0,
    "rollout_tick_seconds": 7.0,
    "webhook_seconds": 9.0,
    "wakeup_poll_seconds": 0.5,
    "status_burst": 5.0,
    "status_per_second": 2.0,
    "decision_process_devices": 500,
    "host": "0.0.0.0",
    "port": 9999,
    "workers": 3,
    "log_level": "info",
}


def expected(name: str, text: str) -> object:
    if name in EXPECTED:
        return EXPECTED[name]
    return text if name == "database_url" else Path(text)


def command(seen: list[ServeSettings]) -> typer.Typer:
    """A command with ``bsi serve``'s generated flags that keeps what it was given."""
    app = typer.Typer()

    @app.command()
    @settings_options(ServeSettings)
    def show(settings: ServeSettings) -> None:
        seen.append(settings)

    return app


def invoke(args: list[str], env: dict[str, str] | None = None) -> ServeSettings:
    seen: list[ServeSettings] = []
    result = CliRunner().invoke(command(seen), args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return seen[0]


def test_every_setting_has_a_sample_unlike_its_default(tmp_path: Path) -> None:
    table = samples(tmp_path)
    assert set(table) == set(ServeSettings.model_fields)
    for name, (text, read) in table.items():
        assert read(getattr(ServeSettings(), name)) != expected(name, text), name


@pytest.mark.parametrize("name", list(ServeSettings.model_fields))
def test_each_setting_is_reached_from_its_flag_and_from_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    for other in ServeSettings.model_fields:
        monkeypatch.delenv(env_name(other), raising=False)
    text, read = samples(tmp_path)[name]
    from_flag = invoke([flag_name(name), text])
    from_variable = invoke([], env={env_name(name): text})
    assert read(getattr(from_flag, name)) == expected(name, text)
    assert read(getattr(from_variable, name)) == expected(name, text)
    assert read(getattr(invoke([]), name)) != expected(name, text)  # and not by default


def test_a_flag_beats_its_variable_and_a_variable_beats_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BSI_CACHE_SECONDS", "5")
    monkeypatch.setenv("BSI_PORT", "9090")
    settings = invoke(["--cache-seconds", "7"])
    assert (settings.cache_seconds, settings.port, settings.workers) == (7.0, 9090, 1)


def test_the_unsigned_sources_repeat_as_flags_and_list_in_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flag = "--nanomdm-allow-unsigned-from"
    flags = [flag, "127.0.0.1", flag, "fd00::/8"]
    monkeypatch.setenv("BSI_NANOMDM_ALLOW_UNSIGNED_FROM", "127.0.0.1, fd00::/8")
    want = (ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("fd00::/8"))
    assert load(ServerSettings).nanomdm_allow_unsigned_from == want
    assert invoke(flags).nanomdm_allow_unsigned_from == want


FROM_THE_ENVIRONMENT = "in the environment:"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--revocation-poll-seconds", "-1"],
            {},
            "'--revocation-poll-seconds': Input should be greater than 0",
        ),
        (
            [],
            {"BSI_TUF_WATCH_SECONDS": "0"},
            f"BSI_TUF_WATCH_SECONDS='0' {FROM_THE_ENVIRONMENT} Input should be greater than 0",
        ),
        (
            ["--database-url", "mysql://db/bsi"],
            {},
            "'--database-url': unsupported database 'mysql'",
        ),
        (
            [],
            {"BSI_DATABASE_URL": "nonsense"},
            f"BSI_DATABASE_URL='nonsense' {FROM_THE_ENVIRONMENT} 'nonsense' is not a database URL",
        ),
        (["--workers", "two"], {}, "'--workers': Input should be a valid integer"),
        (
            [],
            {"BSI_MAX_BODY_BYTES": "1.5"},
            f"BSI_MAX_BODY_BYTES='1.5' {FROM_THE_ENVIRONMENT} Input should be a valid integer",
        ),
        (
            ["--status-per-second", "nan"],
            {},
            "'--status-per-second': Input should be a finite number",
        ),
    ],
)
def test_a_bad_value_stops_bsi_serve_before_it_starts_naming_where_it_came_from(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for other in ServeSettings.model_fields:
        monkeypatch.delenv(env_name(other), raising=False)
    data = tmp_path / "data"
    result = CliRunner().invoke(bsi_app, ["serve", "--data-dir", str(data), *args], env=env)
    assert isinstance(result.exception, InvalidInput), (result.output, result.exception)
    assert message in str(result.exception)
    assert "--help lists each setting" in str(result.exception)
    assert not data.exists()  # nothing was created: the server did not start


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--cache-seconds", "-1"], {}, "'--cache-seconds': Input should be greater than"),
        ([], {"BSI_PORT": "http"}, f"BSI_PORT='http' {FROM_THE_ENVIRONMENT} Input should be"),
    ],
)
def test_the_bsi_command_says_which_setting_is_bad_and_exits_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    data = tmp_path / "data"
    result = run_bsi("serve", "--data-dir", data, *args, env={"COLUMNS": "400", **env})
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists()


def test_a_bad_variable_stops_an_asgi_server_run_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSI_REQUEST_TIMEOUT_SECONDS", "soon")
    with pytest.raises(InvalidInput, match="BSI_REQUEST_TIMEOUT_SECONDS='soon' in the environment"):
        settings_from_environment()


def test_serve_hands_its_settings_to_its_workers_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = samples(tmp_path)
    given = {name: text for name, (text, _) in table.items() if name in ServerSettings.model_fields}
    settings = load(ServerSettings, given)
    for other in ServeSettings.model_fields:
        monkeypatch.delenv(env_name(other), raising=False)
    for variable, value in to_environment(settings).items():
        monkeypatch.setenv(variable, value)
    assert load(ServerSettings) == settings


def test_a_running_server_takes_flags_over_variables_and_variables_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real ``bsi serve`` and its ASGI worker: the device body limit from the
    flag (not the variable), the admin body limit from a variable no flag gave."""
    monkeypatch.setenv("BSI_MAX_BODY_BYTES", "1024")
    monkeypatch.setenv("BSI_MAX_ADMIN_BODY_BYTES", "2048")
    with bsi_serve("--data-dir", tmp_path / "data", "--max-body-bytes", "8192") as url:
        device = httpx.put(f"{url}/v1/ddm/status", content=b"{" + b" " * 4000 + b"}")
        assert device.status_code == 401  # within the flag's 8192: on to authentication
        admin = httpx.post(f"{url}/v1/admin/groups", content=b" " * 3000)
        assert admin.status_code == 413  # over the variable's 2048, under the default 64 MiB


def test_the_readme_settings_table_is_the_declaration() -> None:
    readme = README.read_text(encoding="utf-8")
    start, end = "<!-- settings: python -m bsi.server.settings -->\n", "<!-- /settings -->"
    assert start in readme, "README.md has no settings table"
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), "README's settings table is stale: regenerate it"


def test_the_agent_starts_without_the_server_settings_and_their_libraries() -> None:
    """``bsi agent`` runs at every boot and timer on a device: the CLI loads the server's
    commands (pydantic, the database, the web framework) only when one is asked for."""
    probe = (
        "import sys, bsi.cli; "
        "print(sorted(m for m in ('pydantic', 'pydantic_settings', 'sqlalchemy', 'fastapi', "
        "'bsi.server.settings') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
