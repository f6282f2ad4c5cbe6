"""``bsi admin`` against the real server (SQLite and PostgreSQL): what it prints, what it
changes, and the exit code a script sees for each kind of failure."""

from __future__ import annotations

import csv
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from test_admin import import_real_catalogue, report_sample_fleet
from typer.testing import CliRunner

from bsi.cli import app
from bsi.commands.admin_client import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from pgcluster import free_port
from reports import macos_report
from running import run_bsi
from server_support import RunningServer

# ``bsi admin`` is a client of its own: it reaches the server over a connection.
pytestmark = pytest.mark.real_socket


class Admin:
    """``bsi admin ARGS`` in this process, with a server, key and config home of the test's."""

    def __init__(self, server: RunningServer, home: Path) -> None:
        self.server, self.home = server, home
        self.runner = CliRunner()

    def __call__(self, *args: str, key: str | None = None, url: str | None = None) -> Result:
        env = {
            "XDG_CONFIG_HOME": str(self.home),
            "BSI_SERVER": url if url is not None else self.server.url,
            "BSI_API_KEY": key if key is not None else self.server.admin_key,
        }
        result = self.runner.invoke(app, ["admin", *args], env=env)
        return Result(result.exit_code, result.stdout, result.stderr)


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> object:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


@pytest.fixture
def admin(server: RunningServer, tmp_path: Path) -> Admin:
    return Admin(server, tmp_path / "config")


def test_devices_and_compliance_equal_the_api(
    server: RunningServer, admin: Admin, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    ids = report_sample_fleet(server)
    server.recompute()
    api = server.reader

    listed = admin("devices", "list", "--json").json()
    assert listed == api.get("/v1/admin/devices").json()
    blocked = admin("devices", "list", "--reason", "not-latest-minor", "--json").json()
    assert isinstance(blocked, dict)
    assert [d["device_id"] for d in blocked["devices"]] == [ids["macmini-m2-build04"]]

    table = admin("devices", "list")
    assert table.code == 0
    assert ids["macmini-m2-build04"] in table.stdout
    assert "not-latest-minor" in table.stdout

    rows = list(csv.DictReader(io.StringIO(admin("devices", "list", "--csv").stdout)))
    assert {r["device_id"] for r in rows} == set(ids.values())

    paged = admin("devices", "list", "--limit", "2", "--all", "--json").json()
    assert isinstance(paged, dict)
    assert len(paged["devices"]) == len(ids)

    detail = admin("devices", "show", ids["mbair-m2-ops01"], "--json").json()
    assert detail == api.get(f"/v1/admin/devices/{ids['mbair-m2-ops01']}").json()
    shown = admin("devices", "show", ids["mbair-m2-ops01"])
    assert "decision outcome" in shown.stdout
    assert "25D771280a" in shown.stdout

    assert (
        admin("compliance", "supplements", "--json").json()
        == api.get("/v1/admin/compliance/supplements").json()
    )
    cves = list(csv.DictReader(io.StringIO(admin("compliance", "cves", "--csv").stdout)))
    (cve,) = [c for c in cves if c["cve"] == "CVE-2026-20643"]
    assert cve["exposed"] == "4"
    assert admin("compliance", "patch-windows", "--json").json() == (
        api.get("/v1/admin/patch-windows").json()
    )
    assert "25D771280a" in admin("supplements", "list").stdout


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_steering_a_supplement_and_the_refusals_a_script_sees(
    server: RunningServer, admin: Admin, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    device_id, device = server.device()
    device.put("/v1/ddm/status", json=macos_report())

    read_only = admin("supplements", "pause", "macOS", "25D771280a", key=server.reader_key)
    assert read_only.code == EXIT_UNREACHABLE
    assert "read-only" in read_only.stderr

    paused = admin("supplements", "pause", "macOS", "25D771280a")
    assert paused.code == 0
    assert "paused" in paused.stdout
    server.recompute()
    assert admin("devices", "show", device_id, "--json").json()["decision_reason"] == (  # type: ignore[index]
        "supplement-paused"
    )

    assert admin("supplements", "withdraw", "macOS", "25D771280a").code == 0
    states = {s["build"]: s["state"] for s in server.reader.get("/v1/admin/supplements").json()}
    assert states["25D771280a"] == "withdrawn"

    again = admin("supplements", "resume", "macOS", "25D771280a")
    assert again.code == EXIT_REFUSED
    assert "withdrawn" in again.stderr  # the server's own message
    states = {s["build"]: s["state"] for s in server.reader.get("/v1/admin/supplements").json()}
    assert states["25D771280a"] == "withdrawn"

    missing = admin("devices", "show", "no-such-device")
    assert missing.code == EXIT_REFUSED
    assert "no-such-device" in missing.stderr

    unknown_key = admin("groups", "list", key="not-a-key")
    assert unknown_key.code == EXIT_UNREACHABLE
    assert "hint:" in unknown_key.stderr

    nobody = admin("groups", "list", url=f"http://127.0.0.1:{free_port()}")
    assert nobody.code == EXIT_UNREACHABLE
    assert "cannot reach" in nobody.stderr

    both = admin("supplements", "list", "--json", "--csv")
    assert both.code == EXIT_USAGE
    assert "exclusive" in both.stderr


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_keys_tokens_groups_declarations_and_device_lifecycle(
    server: RunningServer, admin: Admin, tmp_path: Path
) -> None:
    assert admin("groups", "create", "lab").code == 0
    assert admin("groups", "list", "--json").json() == ["default", "lab"]
    bad_group = admin("groups", "create", "Not A Name")
    assert bad_group.code == EXIT_REFUSED
    assert "name" in bad_group.stderr
    assert admin("groups", "list", "--json").json() == ["default", "lab"]

    token = admin("enrollment-token", "--group", "lab", "--max-uses", "1")
    assert token.code == 0
    enrolled = server.client().post("/v1/enroll", json={"token": token.stdout.strip()})
    assert enrolled.status_code == 201
    device_id = enrolled.json()["device_id"]

    key = admin("api-key", "auditor", "--role", "read-only").stdout.strip()
    assert admin("groups", "list", key=key).code == 0
    assert admin("groups", "create", "x", key=key).code == EXIT_UNREACHABLE

    settings = {
        "Type": "com.apple.configuration.softwareupdate.settings",
        "Identifier": "rsr-on",
        "Payload": {"RapidSecurityResponse": {"Enable": True}},
    }
    good = tmp_path / "settings.json"
    good.write_text(json.dumps(settings))
    assert admin("declarations", "put", str(good)).code == 0
    assert admin("declarations", "assign", "rsr-on", "lab").code == 0
    (listed,) = admin("declarations", "list", "--json").json()  # type: ignore[misc]
    assert listed["groups"] == ["lab"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**settings, "Payload": {"RapidSecurityResponse": {"Enable": 1}}}))
    refused = admin("declarations", "put", str(bad))
    assert refused.code == EXIT_REFUSED
    assert "Enable" in refused.stderr
    (unchanged,) = admin("declarations", "list", "--json").json()  # type: ignore[misc]
    assert unchanged == listed
    twice = tmp_path / "twice.json"  # which Enable wins would depend on the reader
    twice.write_text(
        json.dumps(settings).replace('"Enable": true', '"Enable": false, "Enable": true')
    )
    refused = admin("declarations", "put", str(twice))
    assert refused.code == EXIT_USAGE  # the file is refused before anything is sent
    assert "key 'Enable' appears twice in one object" in refused.stderr
    (unchanged,) = admin("declarations", "list", "--json").json()  # type: ignore[misc]
    assert unchanged == listed

    assert admin("declarations", "unassign", "rsr-on", "lab").code == 0
    assert admin("declarations", "delete", "rsr-on").code == 0
    assert admin("declarations", "list", "--json").json() == []

    assert admin("security-events", "--json").json() == []
    assert admin("devices", "revoke", device_id).code == 0
    assert admin("devices", "decommission", device_id).code == 0
    gone = admin("devices", "list", "--json").json()
    assert isinstance(gone, dict)
    assert gone["devices"] == []
    shown = admin("devices", "list", "--lifecycle", "decommissioned", "--json").json()
    assert isinstance(shown, dict)
    assert [d["device_id"] for d in shown["devices"]] == [device_id]


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_a_report_that_contradicts_a_device_is_a_refusal_not_a_key_problem(
    admin: Admin, tmp_path: Path
) -> None:
    """A 403 for what was asked (the hardware a device first named is the one it must keep
    naming) exits 1 with the server's word, not 3 with "needs an admin key"."""
    record = macos_report()
    record["StatusItems"]["device"]["identifier"] = {"serial-number": "C02FIRST0001"}
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"device_id": "mac-1", "report": record}))
    assert admin("devices", "import", str(first)).code == 0
    new = {"device_id": "mac-2", "report": macos_report()}
    record["StatusItems"]["device"]["identifier"] = {"serial-number": "C02OTHER0002"}
    other = tmp_path / "other.json"
    other.write_text(json.dumps([new, {"device_id": "mac-1", "report": record}]))
    refused = admin("devices", "import", str(other))
    assert refused.code == EXIT_REFUSED, refused.stderr
    assert "device 'mac-1'" in refused.stderr
    assert "C02FIRST0001" in refused.stderr
    assert "admin key" not in refused.stderr
    listed = admin("devices", "list", "--json").json()
    assert isinstance(listed, dict)
    assert [d["device_id"] for d in listed["devices"]] == ["mac-1"]  # refused whole


def test_a_broken_file_is_refused_naming_it_before_anything_is_sent(
    server: RunningServer, admin: Admin, tmp_path: Path
) -> None:
    """Uploads are read here by the server's rules first: the refusal names the file and
    the line (not the server's ``request body``), exit 2, and nothing is stored."""
    truncated = tmp_path / "catalog.json"
    truncated.write_text('{"format": "bsi-catalog/1", "supplements": [')
    refused = admin("catalog", "import", str(truncated))
    assert refused.code == EXIT_USAGE
    assert f"{truncated}: not JSON" in refused.stderr
    lines = tmp_path / "inventory.ndjson"
    lines.write_text('{"device_id": "a", "report": {}}\n{"device_id": "b", "report": \n')
    refused = admin("devices", "import", str(lines))
    assert refused.code == EXIT_USAGE
    assert f"{lines}: line 2: not JSON" in refused.stderr
    plist = tmp_path / "inventory.plist"
    plist.write_bytes(b"<plist><dict><key>UDID</key>")
    assert admin("devices", "import", str(plist)).code == EXIT_USAGE
    twice = tmp_path / "plan.json"
    twice.write_text('{"waves": [], "waves": [{"percent": 100}]}')
    refused = admin("rollouts", "plan", "set", "macOS", "--file", str(twice))
    assert refused.code == EXIT_USAGE
    assert "key 'waves' appears twice" in refused.stderr
    assert server.reader.get("/v1/admin/devices").json()["devices"] == []
    assert server.reader.get("/v1/admin/supplements").json() == []


@pytest.mark.parametrize(
    "args",
    [
        ("enrollment-token", "--expires-in-hours", "-1"),
        ("enrollment-token", "--expires-in-hours", "9000"),
        ("enrollment-token", "--max-uses", "0"),
        ("devices", "list", "--stale-hours", "-5"),
        ("devices", "list", "--limit", "0"),
        ("security-events", "--limit", "10001"),
    ],
)
def test_numeric_options_are_checked_before_asking(
    server: RunningServer, admin: Admin, args: tuple[str, ...]
) -> None:
    """The admin API's bounds (bsi.server.paths), checked here: exit 2 naming the option."""
    refused = admin(*args)
    assert refused.code == EXIT_USAGE, refused.stderr
    assert args[-2] in refused.stderr
    assert server.reader.get("/v1/admin/devices").json()["devices"] == []


def test_login_saves_server_and_key_for_later_commands(
    server: RunningServer, admin: Admin, tmp_path: Path
) -> None:
    config = tmp_path / "config" / "bsi" / "admin.json"
    refused = admin("login", "--server", server.url, "--api-key", "wrong", url="", key="")
    assert refused.code == EXIT_UNREACHABLE
    assert not config.exists()

    no_server = admin("groups", "list", url="", key="")
    assert no_server.code == EXIT_USAGE
    assert "bsi admin login" in no_server.stderr
    with_a_path = admin("groups", "list", url=server.url + "/v1")
    assert with_a_path.code == EXIT_REFUSED
    assert "GET /v1/v1/admin/groups" in with_a_path.stderr  # the path as requested
    assert "no such admin endpoint" in with_a_path.stderr
    assert "base URL, with no path" in with_a_path.stderr
    assert "detail" not in with_a_path.stderr

    key_file = tmp_path / "admin-api-key"
    key_file.write_text(server.admin_key + "\n")
    logged = admin("login", "--server", server.url + "/", "--api-key-file", str(key_file), url="")
    assert logged.code == 0, logged.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"server": server.url, "api_key": server.admin_key}
    assert admin("groups", "list", "--json", url="", key="").json() == ["default"]

    config.write_text("[]")
    broken = admin("groups", "list", url="", key="")
    assert broken.code == EXIT_USAGE
    assert "login" in broken.stderr
    assert admin("logout").code == 0
    assert not config.exists()


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_exit_codes_of_the_real_command(server: RunningServer, tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path), "BSI_SERVER": server.url}
    ok = run_bsi("admin", "groups", "list", "--json", env={**env, "BSI_API_KEY": server.admin_key})
    assert (ok.returncode, json.loads(ok.stdout)) == (0, ["default"])
    refused = run_bsi("admin", "groups", "list", env={**env, "BSI_API_KEY": "nope"})
    assert refused.returncode == EXIT_UNREACHABLE
    assert "unknown or revoked API key" in refused.stderr


def test_recomputing_shows_the_decision_pass_under_way(
    server: RunningServer, admin: Admin, shared_data: Path
) -> None:
    """Idle, then during a pass (seen from inside it, as it decides its first device)."""
    import_real_catalogue(server, shared_data)
    report_sample_fleet(server)
    assert admin("recomputing").stdout.strip() == "no decision pass under way"
    assert admin("recomputing", "--json").json() == {"recomputing": None}
    rollouts = server.service.rollouts
    real, printed = rollouts.holds, []

    def holds(*args: Any) -> Any:
        if not printed:
            printed.append(admin("recomputing").stdout)
        return real(*args)

    rollouts.holds = holds  # type: ignore[method-assign]
    try:
        assert server.recompute()["devices"] == 9
    finally:
        rollouts.holds = real  # type: ignore[method-assign]
    assert printed[0].startswith("deciding again for every device: 9 of 9 device(s) left"), printed
