"""``bsi agent once|run --textfile``: node-exporter's textfile-collector file after a real
cycle, parsed with prometheus_client's own parser; an unreachable server is recorded too."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_agent_end_to_end import World, enrolled, world  # noqa: F401 - the fixture

from bsi.commands.agent import _cycle
from bsi.errors import BsiError, ServerUnavailable
from pgcluster import free_port


def gauges(path: Path) -> dict[str, tuple[dict[str, str], float]]:
    return {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_the_textfile_names_the_active_supplement_and_the_last_cycle(
    world: World,  # noqa: F811
    tmp_path: Path,
) -> None:
    enrolled(world, tmp_path)
    textfile = tmp_path / "textfile" / "bsi.prom"
    textfile.parent.mkdir()
    started = time.time()
    report = _cycle(world.agent, textfile)
    assert report.active == "12A100a"
    written = gauges(textfile)
    assert written["bsi_agent_active_supplement"] == ({"supplement": "12A100a"}, 1)
    assert written["bsi_agent_last_cycle_result"] == ({"result": "ok"}, 1)
    assert written["bsi_agent_restart_pending_processes"] == ({}, 0)
    assert started - 1 <= written["bsi_agent_last_cycle_timestamp_seconds"][1] <= time.time()
    assert [p.name for p in textfile.parent.iterdir()] == ["bsi.prom"]  # no temporary left

    state_file = next(world.root.rglob("agent.json"))
    state = json.loads(state_file.read_text())
    state["server_url"] = f"http://127.0.0.1:{free_port()}"
    state_file.write_text(json.dumps(state))
    with pytest.raises(ServerUnavailable):
        _cycle(world.agent, textfile)
    written = gauges(textfile)
    assert written["bsi_agent_last_cycle_result"] == ({"result": "unreachable"}, 1)
    assert written["bsi_agent_active_supplement"] == ({"supplement": "12A100a"}, 1)

    state_file.write_bytes(b"{not json")  # changed behind bsi: nothing can be read from it
    with pytest.raises(BsiError):
        _cycle(world.agent, textfile)
    written = gauges(textfile)
    assert written["bsi_agent_last_cycle_result"] == ({"result": "error"}, 1)
    pending = written["bsi_agent_restart_pending_processes"][1]
    assert math.isnan(pending)  # not known, never "0 processes"
    active = written["bsi_agent_active_supplement"][0]["supplement"]
    assert active in ("12A100a", "unknown")  # what runs, or unknown: never "none"
