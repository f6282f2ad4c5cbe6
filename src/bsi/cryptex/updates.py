"""A supplement from a distribution's security update, whatever its package format.

``bsi supplement build --from-deb`` and ``--from-rpm`` do the same thing with
two package formats; this module is that one thing, and
:mod:`bsi.cryptex.debian` and :mod:`bsi.cryptex.rpm` only read their format:

- the **new** package gives the patched files (unpacked into a tree), its
  name, version and architecture, and the systemd units it ships;
- the **base** is the older package file or the version installed in a root
  (the package database says which, and which files are the package's);
- :func:`check_update` refuses another package, another architecture or a
  version that is not later, by the manager's own ordering;
- documentation (:func:`is_documentation`) is left out unless asked for: a
  supplement is a security fix, and a changelog is not one (two gzipped
  changelogs were 12 % of the ``libssl3`` 3.0.19 -> 3.0.20 bundle);
- :func:`derive_spec` writes the prerequisite (the base version), ``fixed_in``
  (the new one: a host that installs the update itself has the supplement
  folded in), one component claiming exactly the changed files, and the
  units to relaunch, as a commented spec a person can review and rebuild with.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shutil
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from bsi.agent.facts import resolve_in_root
from bsi.cryptex.errors import InvalidSupplement
from bsi.domain.prerequisite import (
    ARCH_ALL,
    PackageManager,
    PackageVersion,
    Prerequisite,
    compare_versions,
    dump_fixed_in,
    dump_prerequisite,
)
from bsi.domain.versions import Build, ExtraVersion

UNIT_DIRS = ("lib/systemd/system/", "usr/lib/systemd/system/")
DOCUMENTATION_DIRS = ("usr/share/doc/", "usr/share/man/", "usr/share/info/")
"""Where packages put documentation: Debian policy §12.1 (manual pages), §12.2 (info
documents), §12.3 and §12.7 (other documentation and the changelogs, in
``/usr/share/doc/<package>``); the FHS puts them in the same places on rpm systems."""
_TRAIN = "P"  # supplemental builds derived from packages: <major>P<number><letter>
_NOT_IN_COMPONENT_NAME = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True, slots=True)
class UnpackedPackage:
    """One package's identity, its package manager, and where its files were unpacked."""

    package: PackageVersion
    manager: PackageManager
    tree: Path
    units: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.package.name


@dataclass(frozen=True, slots=True)
class PackageFormat:
    """What ``--from-deb`` / ``--from-rpm`` need from one package format.

    ``unpack(file, into)`` reads a package file (refusing one that is not of
    the format); ``installed(root, name, arch)`` is the version a root's
    package database lists; ``installed_tree(root, package, into)`` copies
    that version's files out of the root. Each raises
    :class:`~bsi.cryptex.errors.InvalidSupplement` naming what was wrong.
    """

    manager: PackageManager
    option: str  # --from-deb
    base_option: str  # --base-deb
    unpack: Callable[[Path, Path], UnpackedPackage]
    installed: Callable[[Path, str, str | None], PackageVersion]
    installed_tree: Callable[[Path, PackageVersion, Path], Path]


def unpack_payload(
    package: PackageVersion,
    manager: PackageManager,
    payload: tarfile.TarFile,
    into: Path,
    source: Path,
) -> UnpackedPackage:
    """Extract a package's payload (a tar stream) into ``into`` and find its systemd units.

    The ``data`` filter refuses absolute paths, links out of the tree and
    device nodes: a package is input, not a trusted archive.
    """
    into.mkdir(parents=True, exist_ok=True)
    try:
        payload.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise InvalidSupplement(f"{source}: cannot unpack its files: {error}") from None
    finally:
        payload.close()
    units = tuple(
        sorted(
            unit.name
            for directory in UNIT_DIRS
            if (into / directory).is_dir()
            for unit in (into / directory).iterdir()
            if unit.name.endswith(".service") and not unit.name.endswith("@.service")
        )
    )
    return UnpackedPackage(package, manager, into, units)


def copy_installed(root: Path, paths: Iterable[str], into: Path) -> Path:
    """The files at ``paths`` (a package's file list) copied from ``root`` into ``into``.

    Links are kept as links; directories and listed files that are gone (or
    diverted) are skipped: there is nothing to compare against. Links on the
    way are resolved inside ``root``.
    """
    into.mkdir(parents=True, exist_ok=True)
    for line in paths:
        relative = line.strip().lstrip("/")
        if not relative or relative == ".":
            continue
        # Directories on the way are followed inside the root, as a chroot
        # would (an absolute link must not lead to the build machine's files).
        listed = PurePosixPath("/", relative)
        try:
            source = resolve_in_root(root, listed.parent) / listed.name
        except OSError:
            continue  # a link loop on the way: nothing to compare against
        if source.is_dir() and not source.is_symlink():
            continue
        if not (source.is_symlink() or source.is_file()):
            continue
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return into


def is_documentation(path: str) -> bool:
    """Whether ``path`` (relative to the root) is documentation (:data:`DOCUMENTATION_DIRS`)."""
    return path.startswith(DOCUMENTATION_DIRS)


def pick_installed(
    installed: Iterable[PackageVersion], name: str, arch: str | None, where: str, hint: str
) -> PackageVersion:
    """The installed entry of ``name`` for ``arch`` (or architecture-independent)."""
    for package in installed:
        if not arch or package.arch == arch or package.arch in ARCH_ALL:
            return package
    raise InvalidSupplement(
        f"{name}{':' + arch if arch else ''} is not installed in {where}", hint=hint
    )


def derived_build(major: int, package: PackageVersion, extra: ExtraVersion) -> Build:
    """A supplemental build for a package update: ``<major>P<7 digits><letter>``.

    The digits come from the package's name, architecture and fixed version,
    so rebuilding the same update gives the same build (and, the bundle being
    deterministic, the same bytes), and two updates do not collide by chance.
    """
    digest = hashlib.sha256(f"{package.name} {package.arch} {package.version}".encode()).digest()
    number = int.from_bytes(digest[:8], "big") % 9_000_000 + 1_000_000
    return Build.parse(f"{max(1, min(major, 999))}{_TRAIN}{number}{extra.letter}")


@dataclass(frozen=True, slots=True)
class DerivedSpec:
    """The spec text ``--from-deb``/``--from-rpm`` derived, and what it was derived from."""

    text: str
    base: PackageVersion
    new: PackageVersion


def check_update(
    manager: PackageManager, base: PackageVersion, new: PackageVersion, *, option: str
) -> None:
    """The new package must be the same package, architecture, and a later version.

    Later by the manager's own ordering (dpkg: Debian policy §5.6.12; rpm:
    ``rpmvercmp``), see :func:`~bsi.domain.prerequisite.compare_versions`.
    """
    if base.name != new.name:
        raise InvalidSupplement(
            f"the base is {base.name} and the update is {new.name}: not the same package"
        )
    if base.arch and new.arch and base.arch != new.arch and not {base.arch, new.arch} & ARCH_ALL:
        raise InvalidSupplement(
            f"architecture mismatch: the base {base.display()} is for {base.arch} and the "
            f"update {new.display()} for {new.arch}",
            hint="give the update built for the base's architecture",
        )
    if compare_versions(manager, new.version, base.version) <= 0:
        raise InvalidSupplement(
            f"{new.display()} is not later than the base {base.display()}",
            hint=f"{option} takes the fixed (newer) package, the base is the one hosts run",
        )


def derive_spec(
    *,
    base: PackageVersion,
    new: UnpackedPackage,
    changed_paths: list[str],
    platform: str,
    product_version: str,
    extra: ExtraVersion,
    build: Build | None,
    command: str,
) -> DerivedSpec:
    """A commented spec for the update: package prerequisite, ``fixed_in``, one component."""
    supplemental = build or derived_build(
        int(product_version.split(".")[0]) if product_version.split(".")[0].isdigit() else 1,
        new.package,
        extra,
    )
    prerequisite = Prerequisite(manager=new.manager, packages=(base,))
    relaunch: dict[str, object] = {"systemd": list(new.units)} if new.units else {}
    component: dict[str, object] = {"paths": ["/" + p for p in _prefixes(changed_paths)]}
    if relaunch:
        component["relaunch"] = relaunch
    document = {
        "platform": platform,
        "product_version": product_version,
        "extra_version": str(extra),
        "supplemental_build": str(supplemental),
        "prerequisite": dump_prerequisite(prerequisite),
        "fixed_in": dump_fixed_in((PackageVersion(new.name, new.package.version),)),
        "owner": {"uid": 0, "gid": 0},  # dpkg and rpm install a package's files as root
        "components": {_component_name(new.name): component},
    }
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)
    header = (
        f"# Derived by: {command}\n"
        f"# {base.display()} -> {new.package.display()}: hosts with the base version take\n"
        f"# this supplement; a host that installs {new.package.version} has it folded in.\n"
        "# Review it (add cves: and a health_check:), then rebuild with --spec this-file.\n"
    )
    return DerivedSpec(header + body, base, new.package)


def _component_name(package: str) -> str:
    """A component name from a package name (``libssl3``; rpm's ``_`` becomes ``-``)."""
    return _NOT_IN_COMPONENT_NAME.sub("-", package)[:64]


def _prefixes(paths: list[str]) -> list[str]:
    """Each changed file's path: the component claims exactly what the update changes."""
    return sorted({posixpath.normpath(p) for p in paths})
