"""The ``container`` activator: supplements for the containers of a Docker or Podman host.

A container's files come from its image, so a supplement for a container is
a *patched image*: the base image plus one layer holding the supplement's
files, built locally (no registry) and labelled with the supplement
(:data:`LABELS`). Activation recreates each running container whose image
is the supplement's base (:class:`~bsi.domain.prerequisite.ImageBase`, placed
by :func:`~bsi.domain.prerequisite.place_image`) on the patched image with
the same configuration — environment, mounts, ports, networks, restart
policy, labels, health check, command — one container at a time, the way
Watchtower recreates containers on a new image.

Each recreation keeps the old container, stopped and renamed, until the new
one is healthy (its health check — the container's or image's
``HEALTHCHECK`` — or, without one, the supplement's check, run inside the
container; and still running). A container that fails comes back as it was:
the new one is removed, the old one renamed back and started, and
activation halts with :class:`ActivationError` (``health-check-failed``),
leaving the containers recreated before it on the patched image for the
agent's fall-back to undo. Deactivation (``bsi agent rollback``) recreates
every patched container on its base image the same way.

A later letter replaces the active one in place (:attr:`replaces_in_place`):
each container is recreated once, from the earlier letter's patched image
straight onto the later one's, and the agent's fall-back to the last good
letter goes back the same way. A container someone moved to another image
(the publisher's newer base, :func:`~bsi.domain.containers.superseded`) is
let go: never put back on the old base nor patched again. Images are named
by digest, never by tag, so a tag moved to a newer image moves no container.

Everything is refused up front, nothing changed, when the engine does not
answer (:class:`EngineUnavailable`), when a container's configuration cannot
be reproduced (:class:`NotReproducible`: anonymous volumes, another
container's network namespace, a pod, ``--rm``), or when the supplement
removes files (a layer built from a context cannot delete, so bsi refuses
rather than ship a patched image that still holds the file).

The engine is spoken to through the Docker SDK for Python over the Docker
Engine API, which Docker and Podman's ``podman system service`` both serve.
State (``<state>/containers.json``) records the active supplement and each
recreated container with its base and patched image, and the one
recreation under way, so that :meth:`ContainerActivator.recover` puts back a
container an agent killed mid-way left renamed or stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from bsi.agent.activators import (
    ActivationError,
    Outcome,
    PrerequisiteMismatch,
    StateLayout,
    state_lock,
)
from bsi.agent.config import CONTAINER_HEALTH_TIMEOUT, CONTAINER_STOP_TIMEOUT
from bsi.agent.facts import parse_os_release
from bsi.cryptex.manifest import Action, Manifest
from bsi.domain.containers import ContainerFacts, left_behind, superseded
from bsi.domain.prerequisite import (
    ImageBase,
    ImageFacts,
    Match,
    PackageManager,
    PackageVersion,
    place_image,
)
from bsi.domain.rollout import HEALTH_CHECK_FAILED
from bsi.domain.versions import Build, ExtraVersion
from bsi.durable import write_atomic
from bsi.errors import InvalidInput
from bsi.strict import read_json

LABEL_SUPPLEMENT = "bsi.supplement"
LABEL_EXTRA_VERSION = "bsi.extra-version"
LABEL_SUPPLEMENTAL_BUILD = "bsi.supplemental-build"
LABEL_BASE_IMAGE = "bsi.base-image"
LABELS = (LABEL_SUPPLEMENT, LABEL_EXTRA_VERSION, LABEL_SUPPLEMENTAL_BUILD, LABEL_BASE_IMAGE)
"""The labels of a patched image (its containers inherit them)."""

STATE_FILE = "containers.json"
OLD_SUFFIX = ".bsi-old"
"""A container being recreated keeps its old self under ``<name>.bsi-old`` until then."""

HEALTH_POLL = 0.5
_API_VERSIONS: dict[str, str] = {}
"""The Docker Engine API version negotiated with each engine address, in this process."""


class EngineUnavailable(ActivationError):
    """The container engine does not answer: nothing was changed."""

    default_reason = "engine-unavailable"


class NotReproducible(ActivationError):
    """A container's configuration cannot be carried over to a new container."""

    default_reason = "container-not-reproducible"


@dataclass(frozen=True, slots=True)
class Recreated:
    """One container bsi put on a patched image: its name and both image IDs."""

    name: str
    base_image: str
    patched_image: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "base_image": self.base_image, "patched": self.patched_image}


@dataclass(slots=True)
class _State:
    active: str | None = None
    containers: tuple[Recreated, ...] = ()
    under_way: str | None = None
    """The name of the container being recreated, while it is."""
    onto: str | None = None
    """The image it is being recreated on (so that :meth:`ContainerActivator.recover`
    tells the new container from the old one, stopped before it was renamed)."""


class ContainerActivator:
    """Patched images and recreated containers, through one engine's Docker Engine API.

    ``engine_url`` is the SDK's ``base_url`` (``unix:///var/run/docker.sock``,
    ``unix:///run/podman/podman.sock``); ``health_timeout`` bounds the wait
    for each recreated container to become healthy, in seconds.
    """

    name = "container"
    relaunches_itself = True
    """Recreating a container is its relaunch, and its health is checked inside it."""
    replaces_in_place = True
    """A later letter recreates each container once, from the earlier letter's patched
    image onto its own (see :meth:`activate`)."""

    def __init__(
        self,
        layout: StateLayout,
        engine_url: str,
        *,
        health_timeout: float = CONTAINER_HEALTH_TIMEOUT,
        stop_timeout: int = CONTAINER_STOP_TIMEOUT,
        api_timeout: int = 120,
    ) -> None:
        self.layout = layout
        self.engine_url = engine_url
        self.health_timeout = health_timeout
        self.stop_timeout = stop_timeout
        self.api_timeout = api_timeout
        self._releases: dict[str, dict[str, str]] = {}
        """Each base image's os-release, read once: an image ID names fixed content."""

    # -- the engine ------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        """A client that has answered a ping, else :class:`EngineUnavailable`.

        The API version is negotiated with the engine once per process and engine
        address (:data:`_API_VERSIONS`): Podman takes about a second to answer
        ``GET /version``, which the SDK otherwise asks at every client it makes.
        """
        try:
            client = docker.DockerClient(
                base_url=self.engine_url,
                timeout=self.api_timeout,
                version=_API_VERSIONS.get(self.engine_url, "auto"),
            )
            client.ping()
            _API_VERSIONS[self.engine_url] = str(client.api.api_version)
        except docker.errors.DockerException as error:
            raise EngineUnavailable(
                f"the container engine at {self.engine_url} does not answer ({_short(error)}); "
                "nothing was changed",
                hint="start Docker or 'podman system service', or fix agent.yaml's "
                "container_engine",
            ) from None
        return client

    @contextmanager
    def _engine(self, doing: str) -> Iterator[docker.DockerClient]:
        client = self.client()
        try:
            yield client
        except docker.errors.DockerException as error:
            raise ActivationError(
                f"{doing}: the container engine refused ({_short(error)}); "
                "running containers were left as reported",
                reason="engine-error",
            ) from None
        finally:
            client.close()

    # -- state -----------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.layout.state / STATE_FILE

    def _load(self) -> _State:
        try:
            data = self.state_file.read_bytes()
        except FileNotFoundError:
            return _State()
        document = read_json(data, source=str(self.state_file))
        try:
            assert isinstance(document, dict)
            containers = tuple(
                Recreated(str(c["name"]), str(c["base_image"]), str(c["patched"]))
                for c in document.get("containers", [])
            )
            active, under_way = document.get("active"), document.get("under_way")
            onto = document.get("under_way_onto")
            for value in (active, under_way, onto):
                assert value is None or isinstance(value, str)
        except (AssertionError, KeyError, TypeError):
            raise InvalidInput(
                f"{self.state_file} is not the container activator's state",
                hint="bsi replaces this file atomically, so something else changed it: "
                "restore it from a backup",
            ) from None
        return _State(active, containers, under_way, onto)

    def _save(self, state: _State) -> None:
        document = {
            "active": state.active,
            "containers": [c.to_json() for c in state.containers],
            "under_way": state.under_way,
            "under_way_onto": state.onto,
        }
        self.layout.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state_file, json.dumps(document, indent=1).encode(), mode=0o600)

    def active(self) -> str | None:
        return self._load().active

    def recreated(self) -> tuple[Recreated, ...]:
        """The containers the active supplement runs in, with their base and patched images."""
        return self._load().containers

    def running(self) -> tuple[ContainerFacts, ...]:
        """The running containers, as the host reports them (:mod:`bsi.domain.containers`):
        ``restart_pending`` for one on a base image the active letter patched that does
        not run the letter (:func:`~bsi.domain.containers.left_behind`).

        Raises :class:`EngineUnavailable` when the engine does not answer: a
        host that cannot tell what its containers run is not reported as
        having none.
        """
        try:
            state = self._load()
        except InvalidInput:
            # flagged nowhere: the server still finds them from the active letter's base
            state = _State()
        active_bases = {c.base_image for c in state.containers}
        with self._engine("listing the running containers") as client:
            found = []
            for container in client.containers.list():
                base = base_image_of(container)
                if base not in self._releases:
                    release = _read_from_image(client, base, "etc/os-release") or b""
                    self._releases[base] = parse_os_release(release.decode(errors="replace"))
                labels = container.labels or {}
                build = labels.get(LABEL_SUPPLEMENTAL_BUILD)
                extra = labels.get(LABEL_EXTRA_VERSION)
                found.append(
                    ContainerFacts(
                        name=str(container.name),
                        image=_image_id(container),
                        base_image=base,
                        os_id=self._releases[base].get("ID"),
                        os_version_id=self._releases[base].get("VERSION_ID"),
                        supplemental_build=Build.parse(build) if build else None,
                        extra_version=ExtraVersion.parse(extra) if extra else None,
                        restart_pending=left_behind(base, build, state.active, active_bases),
                    )
                )
        return tuple(sorted(found, key=lambda c: c.name))

    def forget(self, build: str) -> None:
        state = self._load()
        if state.active == build:
            self._save(_State())

    # -- finding what a supplement is for --------------------------------------

    def affected(self, client: docker.DockerClient, base: ImageBase) -> list[Container]:
        """The running containers whose base image is ``base``, by name.

        A container already on a patched image is judged by the base image its
        label names, so a later letter finds the containers an earlier one
        patched.
        """
        facts: dict[str, ImageFacts] = {}
        found = []
        for container in client.containers.list():
            image_id = base_image_of(container)
            if image_id not in facts:
                facts[image_id] = image_facts(client, image_id, base)
            if place_image(base, facts[image_id]).match is Match.MET:
                found.append(container)
        return sorted(found, key=lambda c: str(c.name))

    # -- Activator -------------------------------------------------------------

    def preflight(self, manifest: Manifest, staged_dir: Path) -> None:
        base = _image_base(manifest)
        _refuse_removals(manifest)
        with self._engine(f"checking supplement {manifest.supplemental_build}") as client:
            for container in self.affected(client, base):
                recreate_config(container.attrs, base_image_of(container))

    def activate(self, manifest: Manifest, staged_dir: Path) -> Outcome:
        """Recreate each running container of ``manifest``'s base on its patched image.

        In place of an earlier letter (:attr:`replaces_in_place`): a container
        the earlier letter patched is found by its base image (its label), and
        recreated once, from the earlier patched image straight onto this one's
        (base + this letter's layer); one the earlier letter patched that this
        one is not for goes back to its base image; one already on this letter
        (an activation a kill or a failure left part-way) is not touched. A
        container recorded by the earlier letter that someone moved to another
        image (:meth:`superseded`) is released, never recreated. Until the
        first container is on this letter, the earlier one stays active, so a
        refusal or a first failure leaves it exactly as it was.
        """
        build = str(manifest.supplemental_build)
        base = _image_base(manifest)
        _refuse_removals(manifest)
        with state_lock(self.layout), self._engine(f"activating {build}") as client:
            state = self._load()
            if state.active == build:
                return Outcome("activate", "already-active", build, build)
            released = {r.name for r in self.superseded(client, state)}
            records = {r.name: r for r in state.containers if r.name not in released}
            jobs: list[tuple[Container, bool]] = []  # (container, onto this letter's image)
            kept = []
            for container in self.affected(client, base):
                if (container.labels or {}).get(LABEL_SUPPLEMENTAL_BUILD) == build:
                    name = str(container.name)
                    kept.append(Recreated(name, base_image_of(container), _image_id(container)))
                else:
                    jobs.append((container, True))
            covered = {str(c.name) for c, _ in jobs} | {r.name for r in kept}
            for name in sorted(records.keys() - covered):
                found = _find(client, name)
                if found is not None:  # the earlier letter's, not this one's: back to its base
                    jobs.append((found, False))
            # Refuse before anything changes: every configuration must carry over.
            for container, _ in jobs:
                recreate_config(container.attrs, base_image_of(container))
            done = {**records, **{r.name: r for r in kept}}
            state.containers = tuple(done.values())
            patched: dict[str, str] = {}
            for container, onto_letter in jobs:
                name, base_id = str(container.name), base_image_of(container)
                image = base_id
                if onto_letter:
                    if base_id not in patched:
                        patched[base_id] = build_patched_image(
                            client, base_id, manifest, staged_dir
                        )
                    image = patched[base_id]
                state.under_way, state.onto = name, image
                self._save(state)
                self._recreate(client, container, image, manifest if onto_letter else None)
                done.pop(name, None)
                if onto_letter:
                    done[name] = Recreated(name, base_id, image)
                state.containers, state.under_way, state.onto = tuple(done.values()), None, None
                state.active = build
                self._save(state)
            state.active = build
            self._save(state)
            return Outcome("activate", "activated", build, build, files=len(jobs))

    def deactivate(self, manifest: Manifest, *, force: bool = False) -> Outcome:
        """Recreate every container the active letter patched on its base image.

        A container someone moved to another image (:meth:`superseded`) is
        released, never put back on the old base; one removed is forgotten.
        """
        build = str(manifest.supplemental_build)
        with state_lock(self.layout), self._engine(f"rolling back {build}") as client:
            state = self._load()
            if state.active != build:
                return Outcome("deactivate", "not-active", build, state.active)
            released = set(self.superseded(client, state))
            left = [r for r in state.containers if r not in released]
            changed = 0
            for record in list(left):
                container = _find(client, record.name)
                if container is None:
                    left.remove(record)  # removed by its owner: nothing to put back
                    continue
                state.under_way, state.onto = record.name, record.base_image
                self._save(state)
                self._recreate(client, container, record.base_image, None)
                left.remove(record)
                state.containers, state.under_way, state.onto = tuple(left), None, None
                self._save(state)
                changed += 1
            self._save(_State())
            return Outcome("deactivate", "deactivated", build, None, files=changed)

    def superseded(
        self, client: docker.DockerClient, state: _State | None = None
    ) -> tuple[Recreated, ...]:
        """The recorded containers someone moved to another image: bsi lets them go.

        A container bsi recreated keeps its name; when the container of that
        name now runs an image whose base is not the recorded one — the
        administrator pulled the publisher's newer image and recreated it on
        that (``docker compose up``, ``podman run --replace``) — the newer base
        supersedes the supplement for it (:func:`~bsi.domain.containers.superseded`):
        it is neither rolled back onto the old base nor recreated on a patched
        one, and is reported as what it runs. The container being recreated
        (``under_way``) is :meth:`recover`'s, never released here.
        """
        state = state if state is not None else self._load()
        found = []
        for record in state.containers:
            container = _find(client, record.name)
            if (
                container is not None
                and record.name != state.under_way
                and superseded(record.base_image, base_image_of(container))
            ):
                found.append(record)
        return tuple(found)

    def verify(self) -> tuple[str, ...]:
        """Each recorded container that no longer runs its patched image."""
        state = self._load()
        if not state.containers:
            return ()
        problems = []
        with self._engine("verifying the patched containers") as client:
            released = set(self.superseded(client, state))
            for record in state.containers:
                if record in released:
                    continue  # moved to another image by its owner: not bsi's any more
                try:
                    container = client.containers.get(record.name)
                except docker.errors.NotFound:
                    problems.append(f"container {record.name} is gone")
                    continue
                if container.image is None or container.image.id != record.patched_image:
                    problems.append(
                        f"container {record.name} runs image {_image_id(container)}, "
                        f"not its patched image {record.patched_image}"
                    )
                elif container.status != "running":
                    problems.append(f"container {record.name} is {container.status}")
        return tuple(problems)

    def recover(self) -> Outcome:
        """Put back the container an interrupted recreation left renamed or stopped.

        While the old container is kept (``<name>.bsi-old``) it is the one put
        back; one stopped before it was renamed is started again. Once the old
        one is removed, the new one (on the image it was being recreated on)
        stands, and the state is made to say what it runs (its labels: a
        patched image names its supplement), since the kill may have come
        before the state recorded it. Containers
        recreated before the interrupted one stay as they are: an activation
        left part-way is :meth:`check`'s to find, and the agent's to roll back.
        """
        state = self._load()
        if state.under_way is None:
            return Outcome("recover", "nothing-to-do", state.active, state.active)
        name = state.under_way
        with state_lock(self.layout), self._engine(f"recovering container {name}") as client:
            old = _find(client, name + OLD_SUFFIX)
            new = _find(client, name)
            if old is not None:
                if new is not None:
                    new.remove(force=True)
                old.rename(name)
                old.start()
            elif new is not None:
                if state.onto is None or _image_id(new) == state.onto:  # the new one stands
                    kept = [r for r in state.containers if r.name != name]
                    labels = new.labels or {}
                    if LABEL_BASE_IMAGE in labels:  # on a patched image: record it
                        kept.append(Recreated(name, labels[LABEL_BASE_IMAGE], _image_id(new)))
                        state.active = labels.get(LABEL_SUPPLEMENTAL_BUILD, state.active)
                    state.containers = tuple(kept)
                # else the old one, stopped before it was renamed: as recorded
                if new.status != "running":
                    new.start()
            state.under_way, state.onto = None, None
            self._save(state)
        return Outcome("recover", "rolled-back", state.active, state.active)

    def check(self, manifest: Manifest) -> str | None:
        """``None`` when every running container ``manifest`` is for runs its patched
        image, else which do not: the agent's health check for this activator.

        Each container's own health check ran inside it as it was recreated;
        this finds what that cannot: an activation a kill left part-way (some
        containers still on their previous image, :meth:`recover` having put
        back the one under way), so that it is rolled back, never committed.
        """
        build = str(manifest.supplemental_build)
        if self.active() != build:
            return f"{build} is not the active supplement"
        problems = list(self.verify())
        with self._engine(f"checking {build}'s containers") as client:
            for container in self.affected(client, _image_base(manifest)):
                if (container.labels or {}).get(LABEL_SUPPLEMENTAL_BUILD) != build:
                    problems.append(
                        f"container {container.name} runs image {_image_id(container)[:19]}, "
                        f"not {build}'s patched image"
                    )
        return "; ".join(problems) or None

    # -- one container ---------------------------------------------------------

    def _recreate(
        self, client: docker.DockerClient, old: Container, image: str, manifest: Manifest | None
    ) -> None:
        """Replace ``old`` by a container on ``image`` with its configuration, or put it back."""
        name = str(old.name)
        config = recreate_config(old.attrs, image, _labels_of(client, _image_id(old)))
        old.stop(timeout=self.stop_timeout)
        old.rename(name + OLD_SUFFIX)
        new_id: str | None = None
        try:
            created = client.api.create_container_from_config(  # type: ignore[no-untyped-call]
                config, name=name
            )
            new_id = str(created["Id"])
            client.api.start(new_id)
            problem = self._wait_healthy(client, new_id, config, manifest)
        except docker.errors.DockerException as error:
            problem = f"the engine refused to create or start it: {_short(error)}"
        if problem is None:
            old.remove(force=True)
            return
        if new_id is not None:
            client.api.remove_container(new_id, force=True)
        old.rename(name)
        old.start()
        raise ActivationError(
            f"container {name} failed on image {image[:19]} ({problem}); it is back on its "
            "previous image with its configuration, and no further container was changed",
            reason=HEALTH_CHECK_FAILED,
        )

    def _wait_healthy(
        self,
        client: docker.DockerClient,
        container_id: str,
        config: Mapping[str, Any],
        manifest: Manifest | None,
    ) -> str | None:
        """``None`` once the container runs and its checks pass, else why not.

        The checks are the container's own ``HEALTHCHECK`` (from its image or
        its configuration) and the supplement's, both run inside the container
        (``exec``), so that the result does not depend on the engine running
        health checks on a timer (Podman needs systemd for that).
        """
        commands = []
        test = (config.get("Healthcheck") or {}).get("Test") or []
        if test[:1] == ["CMD"]:
            commands.append(list(test[1:]))
        elif test[:1] == ["CMD-SHELL"]:
            commands.append(["/bin/sh", "-c", *test[1:]])
        if manifest is not None and manifest.health_check is not None:
            commands.append(list(manifest.health_check.command))
        deadline = time.monotonic() + self.health_timeout
        while True:
            inspect = client.api.inspect_container(container_id)
            status = inspect["State"]["Status"]
            if status != "running":
                code = inspect["State"].get("ExitCode")
                return f"it is {status} (exit code {code})"
            failed = next(
                (f for f in (self._exec(client, container_id, c) for c in commands) if f), None
            )
            if failed is None:
                return None
            if time.monotonic() >= deadline:
                return failed
            time.sleep(HEALTH_POLL)

    @staticmethod
    def _exec(client: docker.DockerClient, container_id: str, command: list[str]) -> str | None:
        """``None`` when ``command`` exits 0 inside the container, else what it said."""
        execution = client.api.exec_create(container_id, command)
        output = client.api.exec_start(execution["Id"])
        code = client.api.exec_inspect(execution["Id"])["ExitCode"]
        if code == 0:
            return None
        text = output.decode(errors="replace").strip() if isinstance(output, bytes) else ""
        return f"its health check {' '.join(command)} exited {code}" + (
            f": {text[-200:]}" if text else ""
        )


# -- images ----------------------------------------------------------------------


def base_image_of(container: Container) -> str:
    """The base image ID of ``container``: its image's :data:`LABEL_BASE_IMAGE` or the image."""
    labels = container.labels or {}
    return labels.get(LABEL_BASE_IMAGE) or _image_id(container)


def _image_id(container: Container) -> str:
    return str(container.attrs.get("Image") or "")


def image_facts(client: docker.DockerClient, image_id: str, base: ImageBase) -> ImageFacts:
    """What ``image_id`` is: its digests, and, when ``base`` names them, its os-release
    and the versions of the packages ``base`` names (from its dpkg status file)."""
    try:
        image = client.images.get(image_id)
    except docker.errors.ImageNotFound:
        return ImageFacts(digests=frozenset())
    digests = {str(image.id)} | {d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or []}
    if base.os_id is None:
        return ImageFacts(digests=frozenset(digests))
    release = parse_os_release(
        (_read_from_image(client, image_id, "etc/os-release") or b"").decode(errors="replace")
    )
    packages: tuple[PackageVersion, ...] | None = None
    manager = None
    if base.packages and base.manager is PackageManager.DPKG:
        status = _read_from_image(client, image_id, "var/lib/dpkg/status")
        if status is not None:
            manager, packages = PackageManager.DPKG, _dpkg_packages(status, base)
    return ImageFacts(
        digests=frozenset(digests),
        os_id=release.get("ID"),
        os_version_id=release.get("VERSION_ID"),
        manager=manager,
        packages=packages,
    )


def _dpkg_packages(status: bytes, base: ImageBase) -> tuple[PackageVersion, ...]:
    from debian import deb822

    wanted = {p.name for p in base.packages}
    found = []
    for paragraph in deb822.Deb822.iter_paragraphs(io.BytesIO(status), use_apt_pkg=False):
        name = paragraph.get("Package")
        if name in wanted and paragraph.get("Status", "").split()[-1:] == ["installed"]:
            found.append(PackageVersion(name, paragraph["Version"], paragraph.get("Architecture")))
    return tuple(found)


def _read_from_image(client: docker.DockerClient, image_id: str, path: str) -> bytes | None:
    """One file of an image (None: not there)."""
    return _files_in_image(client, image_id, [path])[path]


def _files_in_image(
    client: docker.DockerClient, image_id: str, paths: list[str]
) -> dict[str, bytes | None]:
    """Files of an image by path (None: not there), through one container created
    (never started) and removed."""
    container = client.containers.create(image_id, command=["/bin/true"])
    found: dict[str, bytes | None] = {}
    try:
        for path in paths:
            try:
                stream, _ = container.get_archive("/" + path)
                data = b"".join(stream)
            except docker.errors.NotFound:
                found[path] = None
                continue
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = next((m for m in tar.getmembers() if m.isfile()), None)
                extracted = tar.extractfile(member) if member is not None else None
                found[path] = extracted.read() if extracted is not None else None
    finally:
        container.remove(force=True)
    return found


def patched_labels(manifest: Manifest, base_image: str) -> dict[str, str]:
    """The :data:`LABELS` of ``manifest``'s patched image of ``base_image``."""
    return {
        LABEL_SUPPLEMENT: manifest.display(),
        LABEL_EXTRA_VERSION: str(manifest.extra_version),
        LABEL_SUPPLEMENTAL_BUILD: str(manifest.supplemental_build),
        LABEL_BASE_IMAGE: base_image,
    }


def build_patched_image(
    client: docker.DockerClient, base_image: str, manifest: Manifest, staged_dir: Path
) -> str:
    """``base_image`` + one layer of ``manifest``'s staged files (modes and owners as the
    manifest says), labelled; its image ID. Built locally, no registry.

    Each file's bytes in the built image are read back and checked against the
    manifest's SHA-256 before any container is recreated on it: a storage driver
    that diffs layers by size and modification time (Podman's ``vfs``, any naive
    differ) leaves out a patched file of the base file's size and time, and the
    image would be labelled patched while it runs the old code. Raises
    :class:`ActivationError` (the image removed) when a file does not match.
    """
    context = io.BytesIO()
    labels = patched_labels(manifest, base_image)
    dockerfile = f"FROM {base_image}\nCOPY files/ /\n".encode()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for entry in manifest.payloads:
            source = staged_dir / entry.path
            info = tarfile.TarInfo(f"files/{entry.path}")
            info.size = source.stat().st_size
            info.mode = entry.mode or 0o644
            info.uid, info.gid = entry.uid or 0, entry.gid or 0
            info.mtime = int(time.time())  # never the base file's (often 0 in built images)
            with source.open("rb") as data:
                tar.addfile(info, data)
    context.seek(0)
    image, _ = client.images.build(
        fileobj=context, custom_context=True, rm=True, forcerm=True, labels=labels
    )
    image_id = str(image.id)
    inside = _files_in_image(client, image_id, [entry.path for entry in manifest.payloads])
    for entry in manifest.payloads:
        found = inside[entry.path]
        got = None if found is None else hashlib.sha256(found).hexdigest()
        if got != entry.sha256:
            client.images.remove(image_id, force=True)
            raise ActivationError(
                f"the patched image built for {manifest.display()} has "
                f"{'nothing' if got is None else f'sha256 {got}'} at /{entry.path}, "
                f"not the supplement's sha256 {entry.sha256}; the image was removed and no "
                "container is recreated on it",
                reason="image-build-mismatch",
                hint="the container engine's storage driver dropped the file from the "
                "added layer; report it with the engine's version and storage driver",
            )
    return image_id


def _image_base(manifest: Manifest) -> ImageBase:
    image = manifest.prerequisite.image
    if image is None:
        raise PrerequisiteMismatch(
            f"{manifest.display()} patches {manifest.prerequisite.display()}, not a container "
            "image; nothing was changed",
            hint="the container activator serves supplements whose prerequisite is an image",
        )
    return image


def _refuse_removals(manifest: Manifest) -> None:
    removed = [f.path for f in manifest.files if f.action is Action.REMOVE]
    if removed:
        raise ActivationError(
            f"{manifest.display()} removes /{removed[0]}"
            + (f" and {len(removed) - 1} more" if len(removed) > 1 else "")
            + "; a patched image layer built by bsi cannot remove files, so nothing was changed",
            reason="unsupported-in-container",
            hint="build the container supplement so that it replaces files instead",
        )


# -- configuration ---------------------------------------------------------------

# Podman's inspect names ulimits RLIMIT_NOFILE; its create wants nofile.
_RLIMIT = "RLIMIT_"


def recreate_config(
    attrs: Mapping[str, Any], image: str, image_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``POST /containers/create`` body for a container like ``attrs`` on ``image``.

    The inspected ``Config`` and ``HostConfig`` are carried over whole (so
    every field the engine knows survives, including ones bsi does not name),
    except what the engine made up for the old container: a hostname and
    ``HOSTNAME`` equal to its short ID, its own ID among its network aliases,
    and the labels it inherited from its image (``image_labels``: the new
    image brings its own), bsi's among them. Networks come from
    ``NetworkSettings.Networks`` with their aliases, static addresses and links.
    Raises :class:`NotReproducible` for what a new container cannot get back.
    """
    name = str(attrs.get("Name", "")).lstrip("/")
    host = dict(attrs.get("HostConfig") or {})
    config = {k: v for k, v in (attrs.get("Config") or {}).items() if k != "Image"}
    short_id = str(attrs.get("Id", ""))[:12]
    problems = []
    for mount in attrs.get("Mounts") or []:
        if mount.get("Type") == "volume" and _anonymous(mount):
            problems.append(
                f"the anonymous volume at {mount.get('Destination')} would be left behind"
            )
    mode = str(host.get("NetworkMode") or "")
    if mode.startswith("container:"):
        problems.append(f"it shares the network of {mode.removeprefix('container:')}")
    if host.get("VolumesFrom"):
        problems.append("it mounts the volumes of another container (--volumes-from)")
    if host.get("AutoRemove"):
        problems.append("it is removed when it stops (--rm)")
    if attrs.get("Pod"):
        problems.append(f"it belongs to pod {attrs['Pod']}")
    if problems:
        raise NotReproducible(
            f"container {name}'s configuration cannot be reproduced: "
            + "; ".join(problems)
            + "; it was left running untouched, and nothing was changed",
            hint="recreate it with named volumes or bind mounts and its own network, or leave "
            "it to its image's publisher",
        )
    if config.get("Hostname") == short_id:
        config.pop("Hostname")
    config["Env"] = [e for e in config.get("Env") or [] if e != f"HOSTNAME={short_id}"]
    inherited = dict(image_labels or {})
    labels = {
        k: v
        for k, v in (config.get("Labels") or {}).items()
        if k not in LABELS and inherited.get(k) != v
    }
    config["Labels"] = labels
    if host.get("Ulimits"):
        host["Ulimits"] = [
            {**u, "Name": str(u["Name"]).removeprefix(_RLIMIT).lower()} for u in host["Ulimits"]
        ]
    config["Image"] = image
    config["HostConfig"] = host
    endpoints = {}
    for network, settings in (attrs.get("NetworkSettings", {}).get("Networks") or {}).items():
        endpoint: dict[str, Any] = {
            "Aliases": [a for a in settings.get("Aliases") or [] if a != short_id]
        }
        for key in ("IPAMConfig", "Links", "DriverOpts"):
            if settings.get(key):
                endpoint[key] = settings[key]
        endpoints[network] = endpoint
    if endpoints:
        config["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    return config


def _anonymous(mount: Mapping[str, Any]) -> bool:
    """A volume the engine named itself (64 hex digits): a new container would get a new,
    empty one. Docker and Podman both name anonymous volumes so."""
    name = str(mount.get("Name") or "")
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _labels_of(client: docker.DockerClient, image_id: str) -> dict[str, str]:
    try:
        return dict(client.images.get(image_id).labels or {})
    except docker.errors.ImageNotFound:
        return {}


def _find(client: docker.DockerClient, name: str) -> Container | None:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]
