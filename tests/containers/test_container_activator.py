"""The container activator against a real engine (Podman's Docker-compatible API).

Two containers from the base image and one from another image: activation
recreates exactly the two on the patched image with the same configuration,
the new process holds the new library, a failing health check puts that
container back and halts, rollback restores the base image, and bad input
(an engine that does not answer, a configuration that cannot be carried
over, a supplement that is not for an image) changes nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.api.client import APIClient
from docker.models.containers import Container

from bsi.agent.activators import ActivationError, StateLayout, stage_bundle
from bsi.agent.activators.container import (
    LABEL_BASE_IMAGE,
    LABEL_EXTRA_VERSION,
    LABEL_SUPPLEMENTAL_BUILD,
    LABELS,
    OLD_SUFFIX,
    ContainerActivator,
    EngineUnavailable,
    NotReproducible,
    _read_from_image,
    build_patched_image,
)
from bsi.cryptex import parse_spec
from bsi.cryptex.build import build_bundle, diff_trees
from bsi.cryptex.manifest import Manifest
from bsi.domain.catalog import Catalog, Release, Supplement
from bsi.domain.containers import ContainerFacts
from bsi.domain.eligibility import ContainerDecision, Outcome, decide, with_containers
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.versions import ProductVersion, SupplementVersion
from container_engine import UNTIL_STOPPED, Engine
from cryptex_support import write_tree

OLD_LIB = b"libssl 3.0.2 old\n" * 50
NEW_LIB = b"libssl 3.0.2 fixed\n" * 50
# The process holds the library open on fd 3 for its whole life, as a
# process that mapped it would: /proc/1/fd/3 shows which content it runs. It
# stops on SIGTERM, as a real service does.
HOLDS_LIB = ["/bin/sh", "-c", f"exec 3</usr/lib/libssl.so.3; {UNTIL_STOPPED}"]


def held_library(container: Container, within: float = 10.0) -> bytes:
    """What the container's process holds open on fd 3 (its library's content).

    A container is "running" from the moment its runtime starts it, a moment before
    its shell has opened the library: until then fd 3 of process 1 is the runtime's
    own (read empty). Read again until the shell holds the library, for ``within``
    seconds at most; then return what is there."""
    deadline = time.monotonic() + within
    while True:
        ran = container.exec_run(["cat", "/proc/1/fd/3"])
        if (ran.exit_code == 0 and ran.output) or time.monotonic() > deadline:
            return bytes(ran.output)
        time.sleep(0.1)


_names = itertools.count()
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def spec_text(digest: str, check: str = "/bin/true", letter: str = "a") -> str:
    return f"""\
platform: debian
product_version: "12"
prerequisite: {{image: {{digest: "{digest}"}}}}
extra_version: ({letter})
supplemental_build: 12C1000{letter}
components:
  openssl: {{paths: [/usr/lib]}}
health_check: {{command: {json.dumps(shlex.split(check))}, timeout: 5}}
"""


def supplement(
    tmp_path: Path,
    digest: str,
    check: str = "/bin/true",
    *,
    letter: str = "a",
    library: bytes = NEW_LIB,
    layout: StateLayout | None = None,
) -> tuple[Manifest, Path]:
    """A signed-shape bundle 12C1000<letter> patching libssl (to ``library``) for image
    ``digest``, its health check ``check`` (split as a shell would), staged like the
    agent does (in ``layout``, by default ``<tmp_path>/root``'s)."""
    base = write_tree(tmp_path / "base", {"usr/lib/libssl.so.3": OLD_LIB})
    patched = write_tree(tmp_path / f"patched-{letter}", {"usr/lib/libssl.so.3": library})
    spec = parse_spec(spec_text(digest, check, letter), source="container-spec.yaml")
    build = f"12C1000{letter}"
    bundle = build_bundle(spec, diff_trees(base, patched), tmp_path / f"{build}.cryptex").path
    layout = layout or StateLayout.for_root(tmp_path / "root")
    manifest = stage_bundle(bundle, layout)
    return manifest, layout.staged_files(build)


@pytest.fixture(scope="module")
def images(engine: Engine) -> dict[str, str]:
    return {
        "base": engine.import_image(
            "localhost/bsi-test/web:1",
            {"usr/lib/libssl.so.3": OLD_LIB},
            changes=(f"CMD {json.dumps(HOLDS_LIB)}",),
        ),
        "other": engine.import_image("localhost/bsi-test/other:1", {"etc/other": b"x\n"}),
    }


@pytest.fixture(autouse=True)
def no_containers_left(engine: Engine) -> Iterator[None]:
    """Each test sees only its own containers: the engine is shared by the session."""
    yield
    for container in engine.client().containers.list(all=True):
        container.remove(force=True, v=True)


def run(client: docker.DockerClient, image: str, **options: Any) -> Container:
    name = f"c{next(_names)}"
    container = client.containers.run(image, name=name, detach=True, **options)
    container.reload()
    return container


# Configuration the recreated container must carry, compared field by field.
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "Labels", "Healthcheck", "User", "WorkingDir",
                 "ExposedPorts", "StopSignal")  # fmt: skip
HOST_FIELDS = ("Binds", "PortBindings", "RestartPolicy", "NetworkMode", "Ulimits", "Memory",
               "CapAdd", "Privileged", "ExtraHosts", "Dns")  # fmt: skip


def configuration(container: Container) -> dict[str, object]:
    """The configuration given to ``container`` (its labels without its image's)."""
    attrs = container.attrs
    image_labels = container.image.labels if container.image is not None else {}
    short = attrs["Id"][:12]
    config, host = attrs["Config"], attrs["HostConfig"]
    shown: dict[str, object] = {f"Config.{k}": config.get(k) for k in CONFIG_FIELDS}
    shown["Config.Env"] = sorted(e for e in config["Env"] if not e.startswith("HOSTNAME="))
    shown["Config.Labels"] = {k: v for k, v in config["Labels"].items() if image_labels.get(k) != v}
    shown.update({f"HostConfig.{k}": host.get(k) for k in HOST_FIELDS})
    shown["Networks"] = {
        name: sorted(a for a in network.get("Aliases") or [] if a != short)
        for name, network in attrs["NetworkSettings"]["Networks"].items()
    }
    shown["Mounts"] = sorted((m["Source"], m["Destination"], m["RW"]) for m in attrs["Mounts"])
    return shown


def fresh(client: docker.DockerClient, name: str) -> Container:
    return client.containers.get(name)


def test_activation_recreates_exactly_the_base_containers_with_their_configuration(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    client = engine.client()
    network = client.networks.create(f"bsi-net-{next(_names)}")
    data = tmp_path / "data"
    data.mkdir()
    web = [
        run(
            client,
            images["base"],
            environment={"ROLE": f"web{i}", "EMPTY": ""},
            labels={"app": "web", "tier": str(i)},
            volumes={str(data): {"bind": "/data", "mode": "rw"}},
            ports={"8080/tcp": 28080 + i},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
            network=network.name,
            healthcheck={"test": ["CMD", "/bin/cat", "/usr/lib/libssl.so.3"], "retries": 2},
            command=HOLDS_LIB,
        )
        for i in range(2)
    ]
    other = run(client, images["other"])
    before = {c.name: configuration(c) for c in web}
    manifest, staged = supplement(tmp_path, images["base"])
    activator = ContainerActivator(StateLayout.for_root(tmp_path / "root"), engine.url)

    outcome = activator.activate(manifest, staged)

    assert (outcome.result, outcome.active, outcome.files) == ("activated", "12C1000a", 2)
    assert activator.active() == "12C1000a"
    patched = {r.patched_image for r in activator.recreated()}
    assert len(patched) == 1
    for container in web:
        now = fresh(client, str(container.name))
        assert now.id != container.id, "the container was recreated"
        assert now.status == "running"
        assert now.image is not None
        assert now.image.id in patched
        assert configuration(now) == before[container.name]
        assert now.labels[LABEL_BASE_IMAGE] == images["base"]
        assert now.labels[LABEL_SUPPLEMENTAL_BUILD] == "12C1000a"
        assert now.labels[LABEL_EXTRA_VERSION] == "(a)"
        # The new process holds the new library; the data volume is the same.
        assert held_library(now) == NEW_LIB
        assert now.exec_run(["ls", "/data"]).exit_code == 0
    untouched = fresh(client, str(other.name))
    assert (untouched.id, untouched.image and untouched.image.id) == (other.id, images["other"])
    assert activator.verify() == ()
    # The patched image is the base plus exactly one layer.
    base_layers = client.images.get(images["base"]).attrs["RootFS"]["Layers"]
    patched_layers = client.images.get(patched.pop()).attrs["RootFS"]["Layers"]
    assert patched_layers[:-1] == base_layers
    assert len(patched_layers) == len(base_layers) + 1

    rolled = activator.deactivate(manifest)

    assert (rolled.result, rolled.active) == ("deactivated", None)
    assert activator.active() is None
    for container in web:
        back = fresh(client, str(container.name))
        assert back.image is not None
        assert back.image.id == images["base"]
        assert configuration(back) == before[container.name]
        assert held_library(back) == OLD_LIB
        assert not set(LABELS) & set(back.labels)


# A service that ignores SIGTERM (a real one stuck in shutdown): only SIGKILL stops it.
IGNORES_TERM = [
    "/bin/sh",
    "-c",
    "trap '' TERM; exec 3</usr/lib/libssl.so.3; while :; do sleep 1; done",
]


def test_a_container_that_ignores_sigterm_is_killed_after_the_stop_timeout_and_swapped(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    """The engine stops a container by SIGTERM, then SIGKILL once ``stop_timeout`` has
    passed: activation and rollback each wait that long for it, not for ever, and the
    container ends on the image each asked for, holding that library."""
    client = engine.client()
    stuck = run(client, images["base"], command=IGNORES_TERM)
    stuck.kill(signal="SIGTERM")
    time.sleep(1)
    assert fresh(client, str(stuck.name)).status == "running"  # it does ignore SIGTERM
    manifest, staged = supplement(tmp_path, images["base"])
    activator = ContainerActivator(
        StateLayout.for_root(tmp_path / "root"), engine.url, stop_timeout=1
    )

    started = time.monotonic()
    outcome = activator.activate(manifest, staged)
    assert time.monotonic() - started < 60
    assert (outcome.result, outcome.active) == ("activated", "12C1000a")
    now = fresh(client, str(stuck.name))
    assert now.id != stuck.id
    assert now.status == "running"
    assert held_library(now) == NEW_LIB

    rolled = activator.deactivate(manifest)
    assert (rolled.result, rolled.active) == ("deactivated", None)
    back = fresh(client, str(stuck.name))
    assert back.image is not None
    assert back.image.id == images["base"]
    assert held_library(back) == OLD_LIB


def test_a_failing_health_check_puts_the_container_back_and_halts(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    client = engine.client()
    first, second = (run(client, images["base"], command=HOLDS_LIB) for _ in range(2))
    manifest, staged = supplement(tmp_path, images["base"], check="/bin/false")
    activator = ContainerActivator(
        StateLayout.for_root(tmp_path / "root"), engine.url, health_timeout=1
    )

    with pytest.raises(ActivationError) as raised:
        activator.activate(manifest, staged)

    assert raised.value.reason == "health-check-failed"
    assert str(first.name) in str(raised.value)
    assert "no further container" in str(raised.value)
    # The failing one is the very container it was, running its base image again;
    # the next one was never touched.
    for container in (first, second):
        now = fresh(client, str(container.name))
        assert (now.id, now.status) == (container.id, "running")
        assert held_library(now) == OLD_LIB
    assert activator.active() is None


def test_a_container_whose_configuration_cannot_be_reproduced_is_refused_untouched(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    client = engine.client()
    plain = run(client, images["base"], command=HOLDS_LIB)
    anonymous = run(client, images["base"], command=HOLDS_LIB, volumes=["/cache"])
    manifest, staged = supplement(tmp_path, images["base"])
    activator = ContainerActivator(StateLayout.for_root(tmp_path / "root"), engine.url)

    with pytest.raises(NotReproducible) as raised:
        activator.activate(manifest, staged)

    assert f"container {anonymous.name}" in str(raised.value)
    assert "anonymous volume at /cache" in str(raised.value)
    for container in (plain, anonymous):
        now = fresh(client, str(container.name))
        assert (now.id, now.status) == (container.id, "running")
    assert activator.active() is None


def test_an_engine_that_does_not_answer_is_a_clear_error_and_nothing_changes(
    images: dict[str, str], tmp_path: Path
) -> None:
    manifest, staged = supplement(tmp_path, images["base"])
    activator = ContainerActivator(
        StateLayout.for_root(tmp_path / "root"), f"unix://{tmp_path}/absent.sock", api_timeout=2
    )
    with pytest.raises(EngineUnavailable) as raised:
        activator.activate(manifest, staged)
    assert "does not answer" in str(raised.value)
    assert "nothing was changed" in str(raised.value)
    assert not (tmp_path / "root/var/lib/bsi/containers.json").exists()


def test_a_supplement_for_a_build_is_not_for_containers(engine: Engine, tmp_path: Path) -> None:
    base = write_tree(tmp_path / "base", {"usr/lib/libssl.so.3": OLD_LIB})
    patched = write_tree(tmp_path / "patched", {"usr/lib/libssl.so.3": NEW_LIB})
    text = spec_text("x").replace(
        'prerequisite: {image: {digest: "x"}}', "prerequisite_build: 12C1"
    )
    bundle = build_bundle(
        parse_spec(text, source="s.yaml"), diff_trees(base, patched), tmp_path / "b.cryptex"
    ).path
    layout = StateLayout.for_root(tmp_path / "root")
    manifest = stage_bundle(bundle, layout)
    activator = ContainerActivator(layout, engine.url)
    with pytest.raises(ActivationError, match="not a container image"):
        activator.activate(manifest, layout.staged_files("12C1000a"))


KILL_STRIDE = int(os.environ.get("BSI_CONTAINER_KILL_STRIDE", "1" if os.environ.get("CI") else "3"))
"""The kill tests kill after engine request 1, 1 + stride, 1 + 2 strides, ... to the last:
every instant under ``CI=true``, every third for ``make test`` (each instant is seconds of
real engine work)."""


class Killed(BaseException):
    """The agent dying: nothing in the activator catches it."""


@contextmanager
def killed_after(calls: int) -> Iterator[list[int]]:
    """Kill (raise :class:`Killed`) right after the ``calls``-th request to the engine
    that changes something (POST or DELETE: build, stop, rename, create, start, exec,
    remove); yields the count of such requests made."""
    made = [0]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: APIClient, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            made[0] += 1
            if made[0] == calls:
                raise Killed
            return result

        return call

    with pytest.MonkeyPatch.context() as patch:
        for method in ("_post", "_delete"):
            patch.setattr(APIClient, method, wrap(getattr(APIClient, method)))
        yield made


def test_an_activation_killed_at_any_instant_is_recovered_and_never_passes_part_way(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    """After a kill at each request in turn, a new agent's recover leaves every
    container running under its own name; the check passes exactly when every
    container is on the patched image (else the agent rolls back), and rolling
    back brings every one back to the base image."""
    client = engine.client()
    manifest, staged = supplement(tmp_path, images["base"])
    layout = StateLayout.for_root(tmp_path / "root")
    for calls in itertools.count(1, KILL_STRIDE):
        names = [str(run(client, images["base"], command=HOLDS_LIB).name) for _ in range(2)]
        activator = ContainerActivator(layout, engine.url, stop_timeout=0)
        with killed_after(calls) as made, suppress(Killed):
            activator.activate(manifest, staged)
        restarted = ContainerActivator(layout, engine.url, stop_timeout=0)  # a new agent
        restarted.recover()

        now = {name: fresh(client, name) for name in names}
        assert {c.status for c in now.values()} == {"running"}, calls
        assert not [c for c in client.containers.list(all=True) if OLD_SUFFIX in str(c.name)]
        patched = [n for n, c in now.items() if LABEL_SUPPLEMENTAL_BUILD in c.labels]
        problem = restarted.check(manifest)
        assert (problem is None) == (len(patched) == len(names)), (calls, problem, patched)
        if made[0] >= calls:  # killed: the agent takes the activation back
            restarted.deactivate(manifest)
            for name in names:
                back = fresh(client, name)
                assert back.image is not None
                assert (back.status, back.image.id) == ("running", images["base"]), calls
                held = held_library(back)
                assert held == OLD_LIB, (calls, name, held[:80])
            assert restarted.active() is None
        for name in names:
            client.containers.get(name).remove(force=True)
        if made[0] < calls:  # the activation finished unkilled: every instant was tried
            assert calls > 10
            break


LIB_B = NEW_LIB + b"(b)\n"


def letter_of(container: Container) -> str | None:
    return (container.labels or {}).get(LABEL_SUPPLEMENTAL_BUILD)


def test_a_later_letter_killed_at_any_instant_leaves_each_container_on_a_or_b(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    """(b) in place of (a), killed after each engine request in turn: after a new
    agent's recover, each container runs under its own name with its configuration,
    on (a) or on (b) (their content, never the base), the check passes exactly when
    all are on (b), and the agent's fall-back, (a) in place of (b), brings every one
    back onto (a)."""
    client = engine.client()
    layout = StateLayout.for_root(tmp_path / "root")
    a = supplement(tmp_path, images["base"], layout=layout)
    b = supplement(tmp_path, images["base"], letter="b", library=LIB_B, layout=layout)
    content = {"12C1000a": NEW_LIB, "12C1000b": LIB_B}
    names = [str(run(client, images["base"], command=HOLDS_LIB).name) for _ in range(2)]
    ContainerActivator(layout, engine.url, stop_timeout=0).activate(*a)
    before = {name: configuration(fresh(client, name)) for name in names}
    for calls in itertools.count(1, KILL_STRIDE):
        activator = ContainerActivator(layout, engine.url, stop_timeout=0)
        with killed_after(calls) as made, suppress(Killed):
            activator.activate(*b)
        restarted = ContainerActivator(layout, engine.url, stop_timeout=0)  # a new agent
        restarted.recover()

        now = {name: fresh(client, name) for name in names}
        assert {c.status for c in now.values()} == {"running"}, calls
        assert not [c for c in client.containers.list(all=True) if OLD_SUFFIX in str(c.name)]
        on = {name: letter_of(c) for name, c in now.items()}
        assert set(on.values()) <= set(content), (calls, on)
        for name, container in now.items():
            assert configuration(container) == before[name], calls
            held = held_library(container)
            assert held == content[str(on[name])], (calls, name)
        problem = restarted.check(b[0])
        assert (problem is None) == (set(on.values()) == {"12C1000b"}), (calls, problem, on)
        if made[0] < calls:  # the activation finished unkilled: every instant was tried
            assert calls > 10
            break
        restarted.activate(*a)  # the agent falls back to (a), in place of (b)
        assert {letter_of(fresh(client, name)) for name in names} == {"12C1000a"}, calls
        assert restarted.check(a[0]) is None, calls


def test_a_newer_base_image_pulled_by_the_admin_supersedes_the_supplement(
    engine: Engine, tmp_path: Path
) -> None:
    """The admin pulls the publisher's fixed image under the same tag and recreates one
    container on it: bsi lets that one go (never rolls it back onto the old base, never
    patches it, reports it on its new base: not applicable, neither restart-pending nor
    unknown) and keeps patching the one still on the old base by its digest, never
    moving it to the image the tag now names."""
    client = engine.client()
    tag = "localhost/bsi-test/site:1"
    cmd = (f"CMD {json.dumps(HOLDS_LIB)}",)
    old_base = engine.import_image(tag, {"usr/lib/libssl.so.3": OLD_LIB}, changes=cmd)
    moved, stays = (str(run(client, tag, command=HOLDS_LIB).name) for _ in range(2))
    layout = StateLayout.for_root(tmp_path / "root")
    a = supplement(tmp_path, old_base, layout=layout)
    activator = ContainerActivator(layout, engine.url, stop_timeout=0)
    activator.activate(*a)

    publisher_fix = b"libssl 3.0.3 from the publisher\n"
    new_base = engine.import_image(tag, {"usr/lib/libssl.so.3": publisher_fix}, changes=cmd)
    assert client.images.get(tag).id == new_base != old_base
    # The tag moving alone moves nothing: both still run (a) over the old base.
    assert activator.verify() == ()
    assert activator.check(a[0]) is None
    assert {letter_of(fresh(client, n)) for n in (moved, stays)} == {"12C1000a"}

    fresh(client, moved).remove(force=True)
    client.containers.run(tag, name=moved, detach=True, command=HOLDS_LIB)
    moved_id = fresh(client, moved).id

    facts = {c.name: c for c in activator.running()}
    assert (facts[moved].image, facts[moved].base_image) == (new_base, new_base)
    assert facts[moved].supplemental_build is None
    assert not facts[moved].restart_pending
    assert facts[stays].base_image == old_base
    assert str(facts[stays].supplemental_build) == "12C1000a"
    assert activator.verify() == ()  # the admin's move is not drift
    assert activator.check(a[0]) is None
    # As the server decides them: the moved one is not the supplement's.
    decisions = {d.name: d.decision for d in server_decisions(a[0], facts.values())}
    assert decisions[moved].outcome is Outcome.UP_TO_DATE, decisions[moved]
    assert decisions[moved].supplement is None
    assert decisions[stays].outcome is Outcome.UP_TO_DATE, decisions[stays]
    assert decisions[stays].supplement is not None

    # A later letter for the old base recreates only the container still on it.
    b = supplement(tmp_path, old_base, letter="b", library=LIB_B, layout=layout)
    assert activator.activate(*b).files == 1
    assert fresh(client, moved).id == moved_id
    assert letter_of(fresh(client, stays)) == "12C1000b"
    assert [r.name for r in activator.recreated()] == [stays]

    # Rollback: the old base by its digest (not what the tag names now); the moved one stays.
    assert activator.deactivate(b[0]).files == 1
    back = fresh(client, stays)
    assert back.image is not None
    assert back.image.id == old_base
    assert held_library(back) == OLD_LIB
    now = fresh(client, moved)
    assert (now.id, now.image and now.image.id) == (moved_id, new_base)
    assert held_library(now) == publisher_fix


def server_decisions(
    manifest: Manifest, containers: Iterable[ContainerFacts]
) -> tuple[ContainerDecision, ...]:
    """The decisions the server makes for a host with ``containers`` and ``manifest`` active."""
    letter = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12), manifest.extra_version),
        build=manifest.supplemental_build,
        prerequisite=manifest.prerequisite,
    )
    release = Release("debian", ProductVersion(12), None)
    catalog = Catalog(releases=(release,), supplements=(letter,))
    host = DeviceFacts(
        platform="debian",
        product_version=ProductVersion(12),
        build=None,
        supplemental_build=manifest.supplemental_build,
        containers=tuple(containers),
    )
    policy = SoftwareUpdatePolicy()
    decision = with_containers(
        decide(host, catalog, policy, NOW), host.containers, host, catalog, policy, NOW
    )
    return decision.containers


def test_a_patched_file_of_the_base_files_size_is_in_the_patched_image(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    """The base image's files carry modification time 0 (as reproducible images do); a
    patched library of the same size once matched on size and time, and Podman's layer
    differ left it out: the image was labelled patched and ran the old library."""
    same_size = OLD_LIB.replace(b"old", b"new")
    assert len(same_size) == len(OLD_LIB)
    manifest, staged = supplement(tmp_path, images["base"], library=same_size)
    client = engine.client()
    image_id = build_patched_image(client, images["base"], manifest, staged)
    assert _read_from_image(client, image_id, "usr/lib/libssl.so.3") == same_size


def test_a_patched_image_without_the_supplements_bytes_is_refused_and_removed(
    engine: Engine, images: dict[str, str], tmp_path: Path
) -> None:
    manifest, staged = supplement(tmp_path, images["base"])
    library = staged / "usr/lib/libssl.so.3"
    library.chmod(0o644)
    library.write_bytes(NEW_LIB.replace(b"fixed", b"EVIL!"))
    client = engine.client()
    before = {i.id for i in client.images.list(all=True)}
    with pytest.raises(ActivationError, match=r"has sha256 \w+ at /usr/lib/libssl\.so\.3") as e:
        build_patched_image(client, images["base"], manifest, staged)
    assert e.value.reason == "image-build-mismatch"
    assert not any(
        i.labels.get(LABEL_SUPPLEMENTAL_BUILD)
        for i in client.images.list(all=True)
        if i.id not in before
    )
