"""``bsi demo`` and ``bsi sim`` end to end: the real server, a real signed supplement, a fleet.

The demo test runs the command as a user would (server in a child process,
supplement built and signed, devices enrolled, roll-out, report), then reads
the server's database and the device roots it left behind to check that each
kind of device ended where the rules say — eligible devices report
``25D771280a``, devices on an older minor, with ``AlwaysOff``, or on battery
below the threshold do not, each with the right reason — and that full-mode
devices really swapped the patched files in, or left them alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from typer.testing import CliRunner

from bsi.commands.demo import demo_command, sim_command
from bsi.sim.devices import light_state, reported_decision
from bsi.sim.fleet import DEFAULT_MIX, Kind, plan_fleet
from bsi.sim.sample import BASE_FILES, LIBRARY, PATCHED_FILES, SUPPLEMENTAL_BUILD
from bsi.store.database import open_engine
from bsi.store.store import DeviceFilter, Store

app = typer.Typer(pretty_exceptions_enable=False)
app.command("demo")(demo_command)
app.command("sim")(sim_command)

DEVICES = 12
FULL = 4


def device_ids(root: Path, full: bool) -> str:
    if full:
        state = json.loads((root / "var/lib/bsi/agent.json").read_text())
        return str(state["device_id"])
    light = light_state(root)
    assert light is not None
    return light.device_id


def test_demo_rolls_out_to_the_eligible_and_says_why_not_to_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    result = CliRunner().invoke(
        app,
        [
            "demo",
            "--devices",
            str(DEVICES),
            "--full",
            str(FULL),
            "--exit",
            "--offline-seconds",
            "1",
            "--timeout",
            "45",
            "--data-dir",
            str(data),
        ],
        catch_exceptions=False,
    )
    output = result.output
    assert result.exit_code == 0, output
    assert "Compliance: who has 26.3.1 (a)" in output
    assert re.search(
        r"recorded by the server\s*│\s*\d+\.\d+ s\s*│\s*\d+\.\d+ s\s*│\s*\d+\.\d+ s", output
    )
    assert "the roll-out did not finish" not in output
    assert "decided other than their kind" not in output

    store = Store(open_engine(f"sqlite:///{data / 'server' / 'bsi.db'}"))
    records = {r.device_id: r for r in store.list_devices(DeviceFilter(), limit=1000)}
    specs = plan_fleet(DEVICES, DEFAULT_MIX, data / "devices", full=FULL)
    assert {s.profile.kind for s in specs} == set(Kind)
    assert sum(s.full for s in specs) == FULL
    for spec in specs:
        device_id = device_ids(spec.root, spec.full)
        record = records[device_id]
        profile = spec.profile
        _, items = store.get_device(device_id)
        own = reported_decision(items)
        label = f"{spec.name} ({profile.kind.value}, {spec.mode})"
        if profile.expects_install:  # the offline ones too: they came back after 1 s
            assert record.supplemental_build == SUPPLEMENTAL_BUILD, label
            assert record.supplemental_extra == "(a)", label
        else:
            assert record.supplemental_build is None, label
            assert (own["outcome"], own["reason"]) == (
                profile.expected_outcome.value,
                profile.expected_reason.value,
            ), label
        if profile.kind in (Kind.OLDER_MINOR, Kind.ALWAYS_OFF):
            # The server decides these the same way without the battery.
            assert record.decision_reason == profile.expected_reason.value, label
        if spec.full:
            library = (spec.root / LIBRARY).read_bytes()
            expected = PATCHED_FILES if profile.expects_install else BASE_FILES
            assert library == expected[LIBRARY], label


def test_sim_polling_only_with_light_devices(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "sim",
            "--devices",
            "10",
            "--no-wake",
            "--poll-interval",
            "2",
            "--mix",
            "offline=0,unsupported=0",
            "--timeout",
            "30",
            "--quiet",
            "--data-dir",
            str(tmp_path / "sim"),
        ],
        catch_exceptions=False,
    )
    output = result.output
    assert result.exit_code == 0, output
    assert "polling only, every 2 s" in output
    assert "10 devices (0 full agent, 10 light)" in output
    assert "decided other than their kind" not in output
    assert "the roll-out did not finish" not in output


def test_sim_refuses_a_data_dir_with_files_in_it(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = CliRunner().invoke(app, ["sim", "--data-dir", str(tmp_path), "--quiet"])
    assert result.exit_code != 0
    assert "is not empty" in str(result.exception)
