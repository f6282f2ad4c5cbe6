"""Files the agent and the simulator read back (the overlay record, ``agent.json``, a light
device's ``sim-state.json``): a bad one is a clear error naming the file and what is
wrong in it, never a crash, and the file is left as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bsi.agent.activators import StateLayout, TransactionPending
from bsi.agent.activators.overlay import OverlayActivator, Record
from bsi.agent.config import AgentConfig
from bsi.agent.runner import Agent
from bsi.errors import InvalidInput
from bsi.sim.devices import STATE_FILE, light_state
from bsi.sim.http import Response

GOOD_RECORD = {
    "build": "12A100a",
    "phase": "active",
    "whiteouts": "/var/lib/bsi/overlay/12A100a/whiteouts",
    "mounts": [{"target": "/usr/lib", "layers": ["/upper", "/usr/lib"]}],
}


def record(**changes: object) -> bytes:
    document = {**GOOD_RECORD, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def test_the_overlay_record_reads_back_what_it_wrote() -> None:
    written = Record.from_json(record(), where="x")
    assert Record.from_json(written.to_json(), where="x") == written
    assert written.mounts[0].layers == ("/upper", "/usr/lib")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b'{"build": "12A100a",', "not JSON"),
        (b"[]", "record: expected an object"),
        (record(phase=None), "record: required field 'phase' is missing"),
        (record(build=7), "build: expected a string, found 7"),
        (record(mounts={"target": "/usr/lib"}), "mounts: expected a list"),
        (record(mounts=[{"target": "/usr/lib"}]), "mounts[0]: required field 'layers'"),
        (record(mounts=[{"target": "/a", "layers": [1]}]), "mounts[0].layers[0]: expected a str"),
        (record(extra=1), "record: unknown field 'extra'"),
        (record().replace(b'"active"', b"NaN"), "NaN is not a JSON number"),
        (record(phase="half"), "has phase 'half'"),
    ],
)
def test_a_bad_overlay_record_is_a_clear_error_naming_the_file(
    tmp_path: Path, data: bytes, problem: str
) -> None:
    activator = OverlayActivator(StateLayout.for_root(tmp_path))
    activator.record_path.parent.mkdir(parents=True)
    activator.record_path.write_bytes(data)
    with pytest.raises(TransactionPending) as caught:
        activator.active()
    assert str(activator.record_path) in caught.value.message
    assert problem in caught.value.message
    assert activator.record_path.read_bytes() == data


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"server_url": ', "not JSON"),
        ('{"server_url": NaN}', "NaN is not a JSON number"),
    ],
)
def test_an_agent_state_file_that_is_not_json_is_a_clear_error(
    tmp_path: Path, content: str, problem: str
) -> None:
    agent = Agent(tmp_path, AgentConfig())
    agent.state_file.parent.mkdir(parents=True)
    agent.state_file.write_text(content)
    with pytest.raises(InvalidInput) as caught:
        agent.load_state()
    assert str(agent.state_file) in caught.value.message
    assert problem in caught.value.message
    assert agent.state_file.read_text() == content


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{", "not JSON"),
        ('{"active": null}', "no 'state' in it"),
        ('{"state": []}', "not an object"),
        ('{"state": {"unknown_field": 1}}', "unknown_field"),
    ],
)
def test_a_light_devices_bad_state_file_is_a_clear_error(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / STATE_FILE
    assert light_state(tmp_path) is None
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(InvalidInput) as caught:
        light_state(tmp_path)
    assert str(path) in caught.value.message
    assert problem in caught.value.message


def test_the_simulators_http_body_is_read_strictly() -> None:
    assert Response(200, {}, b'{"a": 1}').json() == {"a": 1}
    with pytest.raises(InvalidInput, match=r"HTTP 200 response body: .*NaN is not a JSON number"):
        Response(200, {}, b'{"a": NaN}').json()
