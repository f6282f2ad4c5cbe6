"""The Debian format for ``bsi supplement build --from-deb``: .deb files and dpkg's database.

The work common to every package format is :mod:`bsi.cryptex.updates`; this
module only reads Debian's:

- a ``.deb`` gives the patched files, the package name, version and
  architecture (python-debian's :class:`~debian.debfile.DebFile` reads its
  ``control`` and ``data`` members);
- an installed root's ``var/lib/dpkg/status`` says which version is
  installed, its ``info/<package>.list`` which files are the package's.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from debian import deb822
from debian.arfile import ArError
from debian.debfile import DebError, DebFile

from bsi.cryptex.errors import InvalidSupplement
from bsi.cryptex.updates import (
    PackageFormat,
    UnpackedPackage,
    copy_installed,
    pick_installed,
    unpack_payload,
)
from bsi.domain.prerequisite import PackageManager, PackageVersion
from bsi.errors import InvalidInput

DPKG_STATUS = PurePosixPath("var/lib/dpkg/status")
DPKG_INFO = PurePosixPath("var/lib/dpkg/info")


def unpack_deb(path: Path, into: Path) -> UnpackedPackage:
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
        data.close()
        raise InvalidSupplement(f"{path}: its control file is not usable: {error}") from None
    return unpack_payload(package, PackageManager.DPKG, data, into, path)


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
    return pick_installed(
        installed,
        name,
        arch,
        f"{root} ({status})",
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
    lines = listing.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    return copy_installed(root, lines, into)


DEB = PackageFormat(
    manager=PackageManager.DPKG,
    option="--from-deb",
    base_option="--base-deb",
    unpack=unpack_deb,
    installed=installed_package,
    installed_tree=installed_tree,
)
