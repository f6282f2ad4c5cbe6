"""The supplement spec: the YAML file a publisher writes next to the trees.

It says what the supplement is (platform, versions, builds), which component
each changed file belongs to, what relaunches, how to check health and which
CVEs it fixes::

    platform: debian
    product_version: "12.5"          # quoted: YAML would read 12.10 as 12.1
    prerequisite_build: 12A100
    extra_version: (a)
    supplemental_build: 12A100a
    owner: {uid: 0, gid: 0}          # optional: who owns the new files on devices
    components:
      openssl:
        paths: [/usr/lib/x86_64-linux-gnu/libssl.so.3, /usr/lib/x86_64-linux-gnu/libcrypto.so.3]
        relaunch: {systemd: [nginx.service], processes: [/usr/sbin/sshd]}
      nginx:
        paths: [/usr/sbin/nginx, /usr/share/nginx]
        relaunch: {systemd: [nginx]}  # '.service' is added when no type is given
        owner: {uid: 0, gid: 0}      # optional, per component
    health_check: {command: [curl, -fsS, http://localhost/], timeout: 30}
    cves:
      - {id: CVE-2026-20643, cvss: "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}

``paths`` are prefixes, matched whole part by part: a changed file belongs to
the component with the longest prefix that contains it, and a file no
component claims is refused — every replaced file must say what relaunches.

A file with a set-user-ID or set-group-ID bit must be listed in ``setuid``
(``setuid: [/usr/bin/sudo]``), or the build refuses it; devices report such
files in ``bsi supplement verify`` and refuse sticky or world-writable ones.

Without ``owner`` the new files keep the owner they have in the patched tree,
which is right when the tree was unpacked as root and wrong when a build user
made it; the spec is where a publisher says so once.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from bsi.cryptex import document as doc
from bsi.cryptex.errors import InvalidBundle, InvalidSupplement, publisher_input
from bsi.cryptex.manifest import (
    MAX_ID,
    CveEntry,
    HealthCheck,
    Relaunch,
    check_name,
    check_path,
    read_health_check,
    read_relaunch,
)
from bsi.domain.inventory import check_platform_id
from bsi.domain.prerequisite import BASE_FIELDS, PackageVersion, Prerequisite, read_base
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.strict import quote, read_yaml


@dataclass(frozen=True, slots=True)
class Owner:
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """A component as the publisher declares it: path prefixes ("" is the whole root)."""

    name: str
    prefixes: tuple[str, ...]
    relaunch: Relaunch = field(default_factory=Relaunch)
    owner: Owner | None = None

    def claims(self, path: str) -> str | None:
        """The longest of this component's prefixes that contains ``path``."""
        matching = [p for p in self.prefixes if p == "" or path == p or path.startswith(p + "/")]
        return max(matching, key=len, default=None)


@dataclass(frozen=True, slots=True)
class SupplementSpec:
    platform: str
    product_version: ProductVersion
    extra_version: ExtraVersion
    prerequisite: Prerequisite
    supplemental_build: Build
    components: tuple[ComponentSpec, ...]
    health_check: HealthCheck | None = None
    cves: tuple[CveEntry, ...] = ()
    owner: Owner | None = None
    setuid: frozenset[str] = frozenset()
    """Files allowed a set-user-ID or set-group-ID bit: each named here, explicitly."""
    fixed_in: tuple[PackageVersion, ...] = ()

    @property
    def prerequisite_build(self) -> Build | None:
        return self.prerequisite.build

    def component_for(self, path: str) -> ComponentSpec | None:
        """The component whose longest prefix contains ``path``; ``None`` when none does."""
        best: tuple[int, ComponentSpec] | None = None
        for component in self.components:
            prefix = component.claims(path)
            if prefix is not None and (best is None or len(prefix) > best[0]):
                best = (len(prefix), component)
        return best[1] if best else None

    def owner_for(self, component: ComponentSpec) -> Owner | None:
        return component.owner or self.owner


def load_spec(path: Path) -> SupplementSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidSupplement(f"{path}: cannot read the spec: {error}") from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, *, source: str = "spec") -> SupplementSpec:
    """The spec in ``text``; every refusal names ``source`` and the field."""
    document = read_yaml(text, source=source, error=InvalidSupplement)
    with publisher_input(source):
        return _read_spec(document)


def _read_spec(document: object) -> SupplementSpec:
    root = doc.fields(
        document,
        "top level",
        required=(
            "platform",
            "product_version",
            "extra_version",
            "supplemental_build",
            "components",
        ),
        optional=("health_check", "cves", "owner", "setuid", *BASE_FIELDS),
    )
    prerequisite, fixed_in = doc.parsed_document(read_base, root, "")
    components = _read_components(root["components"])
    return SupplementSpec(
        platform=check_name(
            doc.parsed(check_platform_id, root["platform"], "platform"), what="platform"
        ),
        product_version=doc.parsed(
            ProductVersion.parse, _version_text(root, "product_version"), "product_version"
        ),
        extra_version=doc.parsed(ExtraVersion.parse, root["extra_version"], "extra_version"),
        prerequisite=prerequisite,
        fixed_in=fixed_in,
        supplemental_build=doc.parsed(
            Build.parse, root["supplemental_build"], "supplemental_build"
        ),
        components=components,
        health_check=(
            read_health_check(root["health_check"], "health_check")
            if "health_check" in root
            else None
        ),
        cves=tuple(
            _read_cve(item, f"cves[{i}]")
            for i, item in enumerate(doc.items(root.get("cves", []), "cves"))
        ),
        owner=_read_owner(root["owner"], "owner") if "owner" in root else None,
        setuid=frozenset(
            normalise_path(doc.text(item, f"setuid[{i}]"), where=f"setuid[{i}]")
            for i, item in enumerate(doc.items(root.get("setuid", []), "setuid"))
        ),
    )


def _version_text(root: dict[str, object], key: str) -> object:
    value = root[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise InvalidBundle(
            f"{value!r} was read as a number",
            where=key,
            hint=f'quote it, e.g. {key}: "{value}", so that YAML keeps it as written',
        )
    return value


def _read_components(value: object) -> tuple[ComponentSpec, ...]:
    if not isinstance(value, dict) or not value:
        raise InvalidBundle(
            f"expected a mapping of component names to components, found {quote(value)}",
            where="components",
        )
    components = tuple(
        _read_component(doc.text(name, "components"), body) for name, body in value.items()
    )
    claimed: dict[str, str] = {}
    for component in components:
        for prefix in component.prefixes:
            if prefix in claimed:
                raise InvalidBundle(
                    f"path {prefix or '/'!r} is claimed by both {claimed[prefix]!r} "
                    f"and {component.name!r}",
                    where="components",
                    hint="each path prefix belongs to one component",
                )
            claimed[prefix] = component.name
    return components


def _read_component(name: str, value: object) -> ComponentSpec:
    where = f"components.{name}"
    check_name(name, what="component", where="components")
    fields = doc.fields(value, where, required=("paths",), optional=("relaunch", "owner"))
    prefixes = tuple(
        normalise_path(p, where=f"{where}.paths")
        for p in doc.texts(fields["paths"], f"{where}.paths")
    )
    if not prefixes:
        raise InvalidBundle("lists no paths", where=f"{where}.paths")
    relaunch = fields.get("relaunch", {})
    if isinstance(relaunch, dict) and isinstance(relaunch.get("systemd"), list):
        relaunch = {**relaunch, "systemd": [_unit(u) for u in relaunch["systemd"]]}
    return ComponentSpec(
        name=name,
        prefixes=prefixes,
        relaunch=read_relaunch(relaunch, f"{where}.relaunch"),
        owner=_read_owner(fields["owner"], f"{where}.owner") if "owner" in fields else None,
    )


def _unit(value: object) -> object:
    """``nginx`` means ``nginx.service``, as it does to systemctl."""
    if isinstance(value, str) and value and "." not in value:
        return f"{value}.service"
    return value


def _read_owner(value: object, where: str) -> Owner:
    fields = doc.fields(value, where, required=("uid", "gid"))
    return Owner(
        uid=doc.integer(fields["uid"], f"{where}.uid", low=0, high=MAX_ID),
        gid=doc.integer(fields["gid"], f"{where}.gid", low=0, high=MAX_ID),
    )


def _read_cve(value: object, where: str) -> CveEntry:
    fields = doc.fields(value, where, required=("id",), optional=("cvss",))
    vector = doc.text(fields["cvss"], f"{where}.cvss") if "cvss" in fields else None
    return CveEntry.scored(doc.text(fields["id"], f"{where}.id"), vector)


def normalise_path(text: str, *, where: str) -> str:
    """A path as a publisher writes it (``/usr/lib/``, ``./etc/x``) in manifest form.

    The root itself (``/``) becomes ``""``, which as a prefix claims every file.
    """
    relative = text.lstrip("/")
    if not relative:
        return ""
    normal = posixpath.normpath(relative)
    if normal == ".":
        return ""
    return check_path(normal, where=where)
