"""``bsi admin rollouts | windows | webhooks | events`` against the real server: what each
prints and changes, and that bad input shows the server's message and changes nothing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from test_admin_cli import Admin
from test_rollouts import BUILD, PLAN, ROLLOUT, fleet

from bsi.commands.admin_client import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from reports import supplemental_report
from server_support import RunningServer

pytestmark = [pytest.mark.real_socket, pytest.mark.parametrize("server", ["sqlite"], indirect=True)]

HELD = {**PLAN, "waves": [PLAN["waves"][0], {**PLAN["waves"][1], "soak_hours": 24}]}
"""PLAN whose last wave soaks a day on the test's clock: the rollout cannot complete on
its own (a rollout tick on a slow machine) before the test aborts it."""


@pytest.fixture
def admin(server: RunningServer, tmp_path: Path) -> Admin:
    return Admin(server, tmp_path / "config")


def write(path: Path, document: Any) -> str:
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def test_a_rollout_started_shown_and_steered_from_the_cli(
    server: RunningServer, admin: Admin, shared_data: Path, tmp_path: Path
) -> None:
    devices = fleet(server, shared_data)

    not_json = admin(
        "rollouts", "plan", "set", "macOS", BUILD, "--file", write(tmp_path / "a", "{waves")
    )
    assert not_json.code == EXIT_USAGE  # read here first, naming the file
    assert f"{tmp_path / 'a'}: not JSON" in not_json.stderr
    overlapping = {"waves": [{"name": "a", "percent": 50}, {"name": "b", "percent": 30}]}
    refused = admin(
        "rollouts", "plan", "set", "macOS", BUILD, "--file", write(tmp_path / "b", overlapping)
    )
    assert refused.code == EXIT_REFUSED
    assert "plan.waves[1].percent: 30 is not above the wave before (50)" in refused.stderr
    assert "hint:" in refused.stderr  # the server's hint too
    assert server.reader.get(ROLLOUT).status_code == 404  # nothing started
    missing = admin("rollouts", "plan", "set", "macOS", BUILD, "--file", str(tmp_path / "none"))
    assert missing.code == EXIT_USAGE

    started = admin(
        "rollouts", "plan", "set", "macOS", BUILD, "--file", write(tmp_path / "p", HELD)
    )
    assert started.code == 0, started.stderr
    assert "running" in started.stdout
    assert "canary" in started.stdout

    api = server.reader.get(ROLLOUT).json()
    assert admin("rollouts", "show", "macOS", BUILD, "--json").json() == api
    (listed,) = admin("rollouts", "list", "--json").json()  # type: ignore[misc]
    assert listed == {k: v for k, v in api.items() if k not in ("plan", "waves", "failures")}
    assert admin("rollouts", "list", "--state", "halted", "--json").json() == []
    bad_state = admin("rollouts", "list", "--state", "paused")
    assert bad_state.code == EXIT_REFUSED
    assert "state" in bad_state.stderr
    rows = list(
        csv.DictReader(io.StringIO(admin("rollouts", "show", "macOS", BUILD, "--csv").stdout))
    )
    assert [(r["wave"], r["state"], r["devices"]) for r in rows] == [
        ("canary", "open", "1"),
        ("everyone", "waiting", "3"),
    ]
    assert rows[1]["earliest_opening"] == "2026-03-20T13:00:00+00:00"
    table = admin("rollouts", "show", "macOS", BUILD)
    assert "25 %" in table.stdout
    assert "2026-03-20T13:00:00+00:00" in table.stdout
    assert admin("rollouts", "plan", "show", "macOS", BUILD).json() == api["plan"]

    read_only = admin("rollouts", "advance", "macOS", BUILD, key=server.reader_key)
    assert read_only.code == EXIT_UNREACHABLE
    not_halted = admin("rollouts", "resume", "macOS", BUILD)
    assert not_halted.code == EXIT_REFUSED
    assert "not halted" in not_halted.stderr
    assert server.reader.get(ROLLOUT).json() == api  # refusals changed nothing

    halted = admin("rollouts", "halt", "macOS", BUILD)
    assert halted.code == 0, halted.stderr
    body = server.reader.get(ROLLOUT).json()
    assert body["state"] == "halted"
    assert body["halted_because"] == "halted by hand by test-admin in wave 'canary'"
    assert "halted by hand by test-admin" in admin("rollouts", "show", "macOS", BUILD).stdout
    assert "halted by hand" in admin("rollouts", "list", "--state", "halted").stdout
    twice = admin("rollouts", "halt", "macOS", BUILD)
    assert twice.code == EXIT_REFUSED
    assert "halted, not running" in twice.stderr
    assert admin("rollouts", "resume", "macOS", BUILD).code == 0
    assert server.reader.get(ROLLOUT).json()["state"] == "running"

    advanced = admin("rollouts", "advance", "macOS", BUILD)
    assert advanced.code == 0, advanced.stderr
    assert "'everyone'" in advanced.stdout
    assert [w["state"] for w in server.reader.get(ROLLOUT).json()["waves"]] == ["passed", "open"]
    device_id, device = devices[0]
    assert device.put("/v1/ddm/status", json=supplemental_report(BUILD)).status_code == 200
    shown = admin("devices", "show", device_id)
    assert "history, newest first" in shown.stdout
    assert "device-installed" in shown.stdout
    assert "device-installed" not in admin("devices", "show", device_id, "--history", "0").stdout
    aborted = admin("rollouts", "abort", "macOS", BUILD, "--json").json()
    assert isinstance(aborted, dict)
    assert aborted["state"] == "aborted"
    states = {s["build"]: s["state"] for s in server.reader.get("/v1/admin/supplements").json()}
    assert states[BUILD] == "withdrawn"
    no_rollout = admin("rollouts", "show", "macOS", "25D771280b")
    assert no_rollout.code == EXIT_REFUSED
    assert "has no rollout" in no_rollout.stderr

    # The history of it all, filtered and paged like GET events.
    every = server.reader.get("/v1/admin/events", params={"supplement": BUILD}).json()["events"]
    paged = admin("events", "--supplement", BUILD, "--limit", "1", "--all", "--json").json()
    assert isinstance(paged, dict)
    assert paged["events"] == every
    kinds = admin("events", "--kind", "rollout-started", "--kind", "rollout-halted", "--csv")
    shown = list(csv.DictReader(io.StringIO(kinds.stdout)))
    assert [(e["kind"], e["actor"]) for e in shown] == [
        ("rollout-started", "test-admin"),
        ("rollout-halted", "test-admin"),
    ]
    newest = admin(
        "events", "--supplement", BUILD, "--newest-first", "--limit", "2", "--all", "--json"
    )
    assert newest.json() == {"events": every[::-1], "next": None}
    page = admin("events", "--supplement", BUILD, "--newest-first", "--limit", "1", "--json").json()
    assert isinstance(page, dict)
    assert page["events"] == every[-1:]
    assert page["next"] == every[-1]["id"]
    older = admin(
        "events", "--supplement", BUILD, "--newest-first", "--before", str(page["next"]), "--json"
    ).json()
    assert older == {"events": every[-2::-1], "next": None}
    unordered = admin("events", "--before", "5")
    assert unordered.code == EXIT_REFUSED
    assert "newest_first" in unordered.stderr
    first = admin("events", "--limit", "1")
    assert "--after" in first.stderr  # says there is more
    wrong = admin("events", "--kind", "rollout-exploded")
    assert wrong.code == EXIT_REFUSED
    assert "no event kind 'rollout-exploded'" in wrong.stderr
    naive = admin("events", "--since", "2026-03-20T12:00:00")
    assert naive.code == EXIT_REFUSED
    assert "no UTC offset" in naive.stderr


def test_default_plans_windows_and_webhooks_from_the_cli(
    server: RunningServer, admin: Admin, tmp_path: Path
) -> None:
    plan = write(tmp_path / "plan.json", PLAN)
    assert admin("rollouts", "plan", "set", "debian", "--file", plan).code == 0
    assert admin("rollouts", "plan", "show", "debian").json() == (
        server.reader.get("/v1/admin/rollout-plans/debian").json()
    )
    short = {"waves": [{"name": "a", "percent": 50}]}
    refused = admin("rollouts", "plan", "set", "debian", "--file", write(tmp_path / "s", short))
    assert refused.code == EXIT_REFUSED
    assert "not 100 %" in refused.stderr
    kept = admin("rollouts", "plan", "show", "debian").json()
    assert isinstance(kept, dict)
    assert [w["name"] for w in kept["waves"]] == ["canary", "everyone"]
    assert admin("rollouts", "plan", "delete", "debian").code == 0
    gone = admin("rollouts", "plan", "show", "debian")
    assert gone.code == EXIT_REFUSED
    assert "no default rollout plan" in gone.stderr

    window = ["--days", "mon,tue", "--start", "22:00", "--end", "04:00"]
    set_ = admin("windows", "set", "default", *window, "--timezone", "Europe/Berlin")
    assert set_.code == 0, set_.stderr
    assert "mon, tue 22:00-04:00 Europe/Berlin" in set_.stdout
    expected = {
        "days": ["mon", "tue"],
        "start": "22:00",
        "end": "04:00",
        "timezone": "Europe/Berlin",
    }
    assert admin("windows", "show", "default", "--json").json() == expected
    no_hours = admin(
        "windows", "set", "default", "--days", "mon", "--start", "03:00", "--end", "03:00"
    )
    assert no_hours.code == EXIT_REFUSED
    assert "no hours" in no_hours.stderr
    zone = admin("windows", "set", "default", *window, "--timezone", "Mars/Olympus")
    assert zone.code == EXIT_REFUSED
    assert "'Mars/Olympus' is not a time zone" in zone.stderr
    from_file = admin("windows", "set", "default", "--file", write(tmp_path / "w", "[1"))
    assert from_file.code == EXIT_USAGE  # read here first, naming the file
    assert f"{tmp_path / 'w'}: not JSON" in from_file.stderr
    assert admin("windows", "show", "default", "--json").json() == expected  # unchanged
    assert admin("windows", "set", "default").code == EXIT_USAGE
    nobody = admin("windows", "set", "no-such-group", *window)
    assert nobody.code == EXIT_REFUSED
    assert "no-such-group" in nobody.stderr
    assert admin("windows", "delete", "default").code == 0
    assert admin("windows", "show", "default").code == EXIT_REFUSED

    secret = write(tmp_path / "secret", "a-secret-of-sixteen-or-more\n")
    url = "https://oncall.example/bsi"
    added = admin(
        "webhooks", "add", url, "--kind", "rollout-halted", "--kind", "device-failed",
        "--secret-file", secret,
    )  # fmt: skip
    assert added.code == 0, added.stderr
    (hook,) = admin("webhooks", "list", "--json").json()  # type: ignore[misc]
    assert (hook["url"], hook["kinds"], hook["created_by"]) == (
        url,
        ["device-failed", "rollout-halted"],
        "test-admin",
    )
    assert "a-secret" not in admin("webhooks", "list").stdout
    bad = admin("webhooks", "add", url, "--kind", "everything", "--secret-file", secret)
    assert bad.code == EXIT_REFUSED
    assert "no event kind 'everything'" in bad.stderr
    weak = admin(
        "webhooks", "add", url, "--kind", "rollout-halted",
        "--secret-file", write(tmp_path / "weak", "short"),
    )  # fmt: skip
    assert weak.code == EXIT_REFUSED
    assert "webhook.secret" in weak.stderr
    assert len(admin("webhooks", "list", "--json").json()) == 1  # type: ignore[arg-type]
    unasked = admin("webhooks", "add", url, "--kind", "rollout-halted")  # no terminal here
    assert unasked.code == EXIT_USAGE
    assert "--secret-file" in unasked.stderr
    assert len(admin("webhooks", "list", "--json").json()) == 1  # type: ignore[arg-type]
    assert admin("webhooks", "remove", str(hook["id"])).code == 0
    assert admin("webhooks", "list", "--json").json() == []
    assert admin("webhooks", "remove", str(hook["id"])).code == EXIT_REFUSED
