"""A supplement from a Debian security update: ``bsi supplement build --from-deb``.

The distribution has already built the fix; what a supplement needs is the
difference between the package a host runs and the one that fixes it, and
the facts that place it:

- the **new** ``.deb`` gives the patched files, the package name, version and
  architecture (python-debian's :class:`~debian.debfile.DebFile` reads its
  ``control`` and ``data`` members);
- the **base** is another ``.deb`` (``--base-deb``) or an installed root
  (``--base-root /``): dpkg's status file says which version is installed,
  its ``info/<package>.list`` which files are the package's;
- the prerequisite is that base version (``{manager: dpkg, packages: [...]}``),
  ``fixed_in`` the new version: a host that installs the update itself has
  the supplement folded in;
- systemd units the package ships are what relaunches; processes that merely
  map a replaced library are found by the agent through ``/proc``.

The spec derived here is written next to the bundle, commented, so that a
person can review it and rebuild with ``--spec``.
"""

from __future__ import annotations

import hashlib
import posixpath
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml
from debian import deb822
from debian.arfile import ArError
from debian.debfile import DebError, DebFile

from bsi.cryptex.errors import InvalidSupplement
from bsi.domain.prerequisite import (
    PackageManager,
    PackageVersion,
    Prerequisite,
    compare_versions,
    dump_fixed_in,
    dump_prerequisite,
)
from bsi.domain.versions import Build, ExtraVersion
from bsi.errors import InvalidInput

DPKG_STATUS = PurePosixPath("var/lib/dpkg/status")
DPKG_INFO = PurePosixPath("var/lib/dpkg/info")
_UNIT_DIRS = ("lib/systemd/system/", "usr/lib/systemd/system/")
_TRAIN = "P"  # supplemental builds derived from packages: <major>P<number><letter>


@dataclass(frozen=True, slots=True)
class DebPackage:
    """One package's identity and where its files were unpacked."""

    package: PackageVersion
    tree: Path
    units: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.package.name


def unpack_deb(path: Path, into: Path) -> DebPackage:
    """Unpack ``path``'s data member into ``into``; refuse anything that is not a .deb."""
    try:
        deb = DebFile(str(path))
        control = deb.debcontrol()
        name, version = control["Package"], control["Version"]
        arch = control.get("Architecture")
        data = deb.data.tgz()
    except FileNotFoundError:
        raise InvalidSupplement(f"{path}: no such file") from None
    except (ArError, DebError, KeyError, OSError, tarfile.TarError, EOFError) as error:
        raise InvalidSupplement(
            f"{path} is not a Debian package (.deb): {error}",
            hint="give the .deb files apt downloads, e.g. 'apt-get download libssl3'",
        ) from None
    try:
        package = PackageVersion(name, version, arch)
    except Exception as error:
        raise InvalidSupplement(f"{path}: its control file is not usable: {error}") from None
    into.mkdir(parents=True, exist_ok=True)
    try:
        # The 'data' filter refuses absolute paths, links out of the tree and
        # device nodes: a .deb is input, not a trusted archive.
        data.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise InvalidSupplement(f"{path}: cannot unpack its files: {error}") from None
    finally:
        data.close()
    units = tuple(
        sorted(
            unit.name
            for directory in _UNIT_DIRS
            if (into / directory).is_dir()
            for unit in (into / directory).iterdir()
            if unit.name.endswith(".service") and not unit.name.endswith("@.service")
        )
    )
    return DebPackage(package, into, units)


def dpkg_installed(status: Path, names: Iterable[str]) -> tuple[PackageVersion, ...]:
    """The installed versions of ``names`` in dpkg's ``status`` file, by name and architecture.

    Only entries whose ``Status`` ends in ``installed`` count: a removed
    package leaves ``deinstall ok config-files`` behind. Raises ``OSError``
    when the file cannot be read and :class:`~bsi.errors.InvalidInput` for
    an entry that is not a usable package.
    """
    wanted = set(names)
    found = []
    with status.open("rb") as handle:
        for paragraph in deb822.Deb822.iter_paragraphs(handle, use_apt_pkg=False):
            name = paragraph.get("Package")
            if name not in wanted or paragraph.get("Status", "").split()[-1:] != ["installed"]:
                continue
            version = paragraph.get("Version")
            if not version:
                raise InvalidInput(f"{status}: installed package {name} has no Version")
            found.append(PackageVersion(name, version, paragraph.get("Architecture")))
    return tuple(sorted(found, key=lambda p: (p.name, p.arch or "")))


def installed_package(root: Path, name: str, arch: str | None) -> PackageVersion:
    """``name`` as dpkg's status file below ``root`` says it is installed."""
    status = root / DPKG_STATUS
    try:
        installed = dpkg_installed(status, [name])
    except OSError as error:
        raise InvalidSupplement(
            f"cannot read {status}: {error.strerror}",
            hint="--base-root must be a Debian-family root with var/lib/dpkg/status",
        ) from None
    for package in installed:
        if not arch or package.arch in (arch, "all"):
            return package
    raise InvalidSupplement(
        f"{name}{':' + arch if arch else ''} is not installed in {root} ({status})",
        hint="install the base version there, or give it as --base-deb OLD.deb",
    )


def installed_tree(root: Path, package: PackageVersion, into: Path) -> Path:
    """The installed package's files copied from ``root`` into ``into`` (links kept as links).

    dpkg lists them in ``info/<package>:<arch>.list`` (``<package>.list``
    for older or architecture-independent packages).
    """
    info = root / DPKG_INFO
    candidates = [info / f"{package.name}:{package.arch}.list", info / f"{package.name}.list"]
    listing = next((c for c in candidates if c.is_file()), None)
    if listing is None:
        raise InvalidSupplement(
            f"dpkg keeps no file list for {package.name} in {info}",
            hint="give the base version as --base-deb OLD.deb instead",
        )
    into.mkdir(parents=True, exist_ok=True)
    for line in listing.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        relative = line.strip().lstrip("/")
        if not relative or relative == ".":
            continue
        source = root / relative
        if source.is_dir() and not source.is_symlink():
            continue
        if not (source.is_symlink() or source.is_file()):
            continue  # listed but gone (or diverted): nothing to compare against
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return into


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
    """The spec text ``--from-deb`` derived, and what it was derived from."""

    text: str
    base: PackageVersion
    new: PackageVersion


def check_update(base: PackageVersion, new: PackageVersion) -> None:
    """The new package must be the same package, architecture, and a later version."""
    if base.name != new.name:
        raise InvalidSupplement(
            f"the base is {base.name} and the update is {new.name}: not the same package"
        )
    if base.arch and new.arch and base.arch != new.arch and "all" not in (base.arch, new.arch):
        raise InvalidSupplement(
            f"architecture mismatch: the base {base.display()} is for {base.arch} and the "
            f"update {new.display()} for {new.arch}",
            hint="give the update built for the base's architecture",
        )
    if compare_versions(PackageManager.DPKG, new.version, base.version) <= 0:
        raise InvalidSupplement(
            f"{new.display()} is not later than the base {base.display()}",
            hint="--from-deb takes the fixed (newer) package, --base-deb the one hosts run",
        )


def derive_spec(
    *,
    base: PackageVersion,
    new: DebPackage,
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
    prerequisite = Prerequisite(manager=PackageManager.DPKG, packages=(base,))
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
        "owner": {"uid": 0, "gid": 0},  # dpkg installs a package's files as root
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
    """A component name from a package name (``libssl3``; ``+`` is allowed by both)."""
    return package[:64]


def _prefixes(paths: list[str]) -> list[str]:
    """Each changed file's path: the component claims exactly what the update changes."""
    return sorted({posixpath.normpath(p) for p in paths})
