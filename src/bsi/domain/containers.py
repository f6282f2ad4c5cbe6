"""The containers of a Docker or Podman host, as the host reports them.

A container is reported as a *sub-device of its host*, not as a device of
its own: it has no agent, no enrollment and no policy of its own — the
host's agent builds its patched image and recreates it, under the host's
policy and rollout wave — and it lives only as long as the host keeps it
(a recreated container has a new ID). So the host's status report carries
one entry per running container in bsi's own status item
:data:`CONTAINERS_ITEM`::

    {"name": "web1", "image": "sha256:...", "base_image": "sha256:...",
     "os_release": {"id": "debian", "version_id": "12"},
     "supplemental_build": "12C1000a", "extra_version": "(a)"}
    {"name": "late", "image": "sha256:...", "base_image": "sha256:...",
     "restart_pending": true}

``image`` is the image the container runs now, ``base_image`` the image it
was created from before bsi patched it (the same when unpatched), and the
supplement fields are those of its patched image's labels (absent when
unpatched). ``restart_pending`` (only written when true) says the host's
active letter patched containers of this base image and this one does not
run it (started after the activation, or not recreated yet): the letter is
on the host, the container runs the old content. Eligibility places the host
on an image prerequisite by the containers' base images (:func:`images`);
compliance counts containers (restart-pending ones apart, never fixed).

Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bsi.domain.prerequisite import (
    OS_RELEASE,
    ImageFacts,
    document_fields,
    document_text,
    dump_os_release,
    is_image_digest,
    item_entries,
    located,
    read_os_release,
)
from bsi.domain.versions import Build, ExtraVersion
from bsi.errors import InvalidInput

CONTAINERS_ITEM = "bsi.agent.containers"
RESTART_PENDING = "restart_pending"
MAX_CONTAINERS = 1024
_NAME_LIMIT = 256


@dataclass(frozen=True, slots=True)
class ContainerFacts:
    """One running container: its name, its image now, its base image, its supplement."""

    name: str
    image: str
    base_image: str
    os_id: str | None = None
    os_version_id: str | None = None
    supplemental_build: Build | None = None
    extra_version: ExtraVersion | None = None
    restart_pending: bool = False

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > _NAME_LIMIT:
            raise InvalidInput(f"{self.name!r} is not a container name")
        for what, digest in (("image", self.image), ("base_image", self.base_image)):
            if not is_image_digest(digest):
                raise InvalidInput(
                    f"{what} {digest!r} is not an image digest",
                    hint="'sha256:' and 64 lower-case hexadecimal digits",
                )

    @property
    def patched(self) -> bool:
        return self.supplemental_build is not None

    def base_facts(self) -> ImageFacts:
        """The base image as eligibility places it."""
        return ImageFacts(
            digests=frozenset({self.base_image}),
            os_id=self.os_id,
            os_version_id=self.os_version_id,
        )


def left_behind(
    base_image: str,
    supplemental_build: str | None,
    active: str | None,
    active_bases: Iterable[str],
) -> bool:
    """Whether a container created from ``base_image``, running an image labelled with
    ``supplemental_build`` (``None``: unpatched), is restart-pending: the host's
    ``active`` letter recreated the containers of ``active_bases``, this one is of
    such a base and does not run that letter."""
    return active is not None and base_image in active_bases and supplemental_build != active


def superseded(recorded_base: str, base_image: str) -> bool:
    """Whether a container bsi recreated from ``recorded_base`` now runs another base,
    ``base_image``: someone (the administrator pulling the publisher's fixed image)
    recreated it on that image, which supersedes the supplement for it.

    bsi then lets it go: it is never put back on ``recorded_base`` nor recreated
    on a patched image of it, and is reported as what it runs — on its new base,
    which the supplement is not for (not applicable, neither restart-pending nor
    unknown). A retag alone (the repository's tag moved to a newer image while
    the container still runs the old one) moves nothing: bsi goes by image
    digests, never tags, and keeps patching the containers on the old base.
    """
    return base_image != recorded_base


def images(containers: Iterable[ContainerFacts] | None) -> tuple[ImageFacts, ...] | None:
    """The base images of ``containers`` (``None``: the device reports no containers)."""
    return None if containers is None else tuple(c.base_facts() for c in containers)


def dump_container(container: ContainerFacts) -> dict[str, object]:
    document: dict[str, object] = {
        "name": container.name,
        "image": container.image,
        "base_image": container.base_image,
    }
    if container.os_id is not None:
        document[OS_RELEASE] = dump_os_release(container.os_id, container.os_version_id)
    if container.supplemental_build is not None:
        document["supplemental_build"] = str(container.supplemental_build)
    if container.extra_version is not None:
        document["extra_version"] = str(container.extra_version)
    if container.restart_pending:
        document[RESTART_PENDING] = True
    return document


def container_items(containers: Iterable[ContainerFacts] | None) -> dict[str, object]:
    """The status item :func:`read_container_items` reads back (none for ``None``)."""
    if containers is None:
        return {}
    return {CONTAINERS_ITEM: [dump_container(c) for c in containers][:MAX_CONTAINERS]}


def read_container(value: object, where: str) -> ContainerFacts:
    entry = document_fields(
        value,
        where,
        (
            "name",
            "image",
            "base_image",
            OS_RELEASE,
            "supplemental_build",
            "extra_version",
            RESTART_PENDING,
        ),
    )
    for key in ("name", "image", "base_image"):
        if key not in entry:
            raise InvalidInput(f"{where}: required field {key!r} is missing")
    os_id, os_version_id = read_os_release(entry.get(OS_RELEASE), f"{where}.{OS_RELEASE}")
    restart_pending = entry.get(RESTART_PENDING, False)
    if not isinstance(restart_pending, bool):
        raise InvalidInput(
            f"{where}.{RESTART_PENDING}: expected true or false, found {restart_pending!r:.80}"
        )

    def text(fields: Mapping[str, object], key: str) -> str | None:
        return document_text(fields[key], f"{where}.{key}") if key in fields else None

    try:
        build = text(entry, "supplemental_build")
        extra = text(entry, "extra_version")
        return ContainerFacts(
            name=document_text(entry["name"], f"{where}.name"),
            image=document_text(entry["image"], f"{where}.image"),
            base_image=document_text(entry["base_image"], f"{where}.base_image"),
            os_id=os_id,
            os_version_id=os_version_id,
            supplemental_build=Build.parse(build) if build else None,
            extra_version=ExtraVersion.parse(extra) if extra else None,
            restart_pending=restart_pending,
        )
    except InvalidInput as error:
        raise error if error.message.startswith(where) else located(where, error) from None


def read_container_items(items: Mapping[str, object]) -> tuple[ContainerFacts, ...] | None:
    """The containers a host reported, ``None`` when it reports none (not a container host).

    Raises :class:`InvalidInput` naming the entry for a malformed one.
    """
    containers = item_entries(items, CONTAINERS_ITEM, read_container)
    return None if containers is None else tuple(containers)
