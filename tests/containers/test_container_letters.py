"""A later letter on a container host, through the agent's runner, against real Podman.

The runner takes the active letter back before it activates a later one on a
host; the container activator replaces it in place instead
(``replaces_in_place``), so each container is recreated once, from (a)'s
patched image straight onto (b)'s, and a letter that fails part-way returns
the containers to the last good letter the same way. Recreations are counted
from the engine's own ``create`` events, by container name.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_container_activator import (
    HOLDS_LIB,
    NEW_LIB,
    OLD_LIB,
    configuration,
    held_library,
    letter_of,
    supplement,
)

from bsi.agent.activators import ActivationError, StateLayout
from bsi.agent.activators.container import OLD_SUFFIX, ContainerActivator
from bsi.agent.config import parse_config
from bsi.agent.machine import Plan, Step
from bsi.agent.runner import Agent, LocalState
from bsi.domain.versions import Build
from container_engine import Engine

LIB_B = NEW_LIB + b"(b)\n"
LIB_C = NEW_LIB + b"(c)\n"


@pytest.fixture(autouse=True)
def no_containers_left(engine: Engine) -> Iterator[None]:
    yield
    for container in engine.client().containers.list(all=True):
        container.remove(force=True, v=True)


def letter(build: str, replacing: str | None = None) -> Plan:
    """The steps ``next_steps`` plans to put ``build`` on the host (after ``replacing``,
    the active letter it takes back first), its bundle already staged."""
    steps = [(Step.ROLL_BACK, Build.parse(replacing))] if replacing else []
    steps += [(s, Build.parse(build)) for s in (Step.ACTIVATE, Step.RELAUNCH, Step.HEALTH_CHECK)]
    return Plan(tuple(steps), None)


@contextmanager
def created(engine: Engine, names: list[str], image: str) -> Iterator[Counter[str]]:
    """Count the containers the engine creates under ``names`` inside the block.

    The engine's live ``create`` events are read between two marker containers made
    from ``image``, one before the block and one after it, so that nothing outside
    the block is counted and nothing inside it is missed. (A read of past events
    with ``until`` is cut short by Podman when reading its event log takes longer
    than the time left to ``until``, as it does late in a loaded run.)
    """
    client = engine.client()
    stream = client.events(decode=True, filters={"type": "container", "event": "create"})
    marks = iter(f"letters-mark-{time.monotonic_ns()}-{end}" for end in ("start", "end"))

    def created_until_mark() -> list[tuple[str, str]]:
        mark = next(marks)
        client.containers.create(image, name=mark).remove(force=True)
        seen = []
        for event in stream:
            name = str(event.get("Actor", {}).get("Attributes", {}).get("name"))
            if name == mark:
                return seen
            seen.append((str(event.get("id")), name))
        raise AssertionError(f"the engine's event stream ended before {mark} was created")

    counts: Counter[str] = Counter()
    try:
        created_until_mark()
        yield counts
        counts.update(name for name in dict(created_until_mark()).values() if name in names)
    finally:
        stream.close()


def test_a_later_letter_recreates_each_container_once_and_a_failing_one_returns_to_it(
    engine: Engine, tmp_path: Path
) -> None:
    client = engine.client()
    base = engine.import_image(
        "localhost/bsi-letters/web:1",
        {"usr/lib/libssl.so.3": OLD_LIB},
        changes=(f"CMD {json.dumps(HOLDS_LIB)}",),
    )
    names = ["letters-web0", "letters-web1"]
    for i, name in enumerate(names):
        client.containers.run(
            base,
            name=name,
            detach=True,
            environment={"ROLE": f"web{i}"},
            labels={"app": "web"},
            restart_policy={"Name": "always"},
        )
    before = {name: configuration(client.containers.get(name)) for name in names}
    root = tmp_path / "host"
    root.mkdir()
    config = parse_config(f"activator: container\ncontainer_engine: {engine.url}\n")
    layout = StateLayout.for_root(root, config.state_dir_under(root))
    activator = ContainerActivator(layout, engine.url, health_timeout=1, stop_timeout=0)
    agent = Agent(root, config, activator=activator)
    state = LocalState()
    # Each letter is staged just before its plan, as the runner's download and stage
    # steps do (a cycle prunes what it does not keep).
    supplement(tmp_path, base, letter="a", layout=layout)
    agent._carry_out(letter("12C1000a"), state)
    assert state.last_good == "12C1000a"
    on_a = {name: client.containers.get(name).id for name in names}

    supplement(tmp_path, base, letter="b", library=LIB_B, layout=layout)
    with created(engine, names, base) as recreations:
        agent._carry_out(letter("12C1000b", replacing="12C1000a"), state)

    # Once each: from (a)'s patched image straight onto (b)'s, never via the base.
    assert recreations == dict.fromkeys(names, 1)
    assert (state.last_good, activator.active()) == ("12C1000b", "12C1000b")
    on_b = {}
    for name in names:
        now = client.containers.get(name)
        assert now.id != on_a[name]
        assert (letter_of(now), now.status) == ("12C1000b", "running")
        assert configuration(now) == before[name]
        assert held_library(now) == LIB_B
        on_b[name] = now.id

    # (c) passes its check in web0 and fails it in web1: it fails part-way.
    check = '/bin/sh -c "test $ROLE = web0"'
    supplement(tmp_path, base, check, letter="c", library=LIB_C, layout=layout)
    with created(engine, names, base) as recreations, pytest.raises(ActivationError) as raised:
        agent._carry_out(letter("12C1000c", replacing="12C1000b"), state)

    # web0 went onto (c) and straight back onto (b); web1 failed on (c) and was put back
    # as itself: no container ever went through the base image.
    assert "last good letter" in str(raised.value), raised.value
    assert recreations == {"letters-web0": 2, "letters-web1": 1}
    assert (state.last_good, activator.active()) == ("12C1000b", "12C1000b")
    assert "12C1000c" in state.failures
    assert client.containers.get("letters-web1").id == on_b["letters-web1"]
    for name in names:
        now = client.containers.get(name)
        assert (letter_of(now), now.status) == ("12C1000b", "running")
        assert configuration(now) == before[name]
        assert held_library(now) == LIB_B
    assert not [c for c in client.containers.list(all=True) if OLD_SUFFIX in str(c.name)]
    assert activator.verify() == ()
    assert activator.check(agent._load_staged("12C1000b")[0]) is None
