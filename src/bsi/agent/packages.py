"""Installed package versions and file digests: how a stock Linux host is placed.

A stock Debian, Ubuntu, Proxmox or Fedora host has no build id; a supplement
names the package versions it patches instead (see
:mod:`bsi.domain.prerequisite`). The agent reads them from the host's own
package database, below ``--root``, and only for the packages the catalogue
names — never the whole list on every check-in:

- **dpkg** (Debian, Ubuntu, Proxmox): ``var/lib/dpkg/status``, read with
  python-debian's deb822 parser; only entries whose ``Status`` says
  ``installed`` count (a removed package leaves ``deinstall ok config-files``).
- **rpm** (Fedora, RHEL, SUSE): ``rpm --root ROOT --dbpath DB -q --qf ...``,
  rpm's own reader of its database, with ``DB`` where that root keeps it
  (:mod:`bsi.cryptex.rpm`; never a parser of its binary format).

File digests are the SHA-256 of the files a file-digest prerequisite names.
While a supplement manages a file and the file still holds the supplement's
content, the digest reported is the base the manifest recorded: the host is
still on that base, patched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from bsi.agent.facts import FactsUnavailable, resolve_in_root
from bsi.cryptex import rpm
from bsi.cryptex.debian import dpkg_installed
from bsi.cryptex.manifest import Manifest
from bsi.domain.catalog import Catalog
from bsi.domain.prerequisite import PackageManager, PackageVersion
from bsi.errors import InvalidInput

DPKG_STATUS = PurePosixPath("/var/lib/dpkg/status")
_CHUNK = 1 << 20


def detect_manager(root: Path) -> PackageManager | None:
    """The package database below ``root``: dpkg's status file first, then rpm's database."""
    if resolve_in_root(root, DPKG_STATUS).is_file():
        return PackageManager.DPKG
    if rpm.database(root) is not None:
        return PackageManager.RPM
    return None


def read_dpkg(root: Path, names: Iterable[str]) -> tuple[PackageVersion, ...]:
    """The installed versions of ``names`` in ``<root>/var/lib/dpkg/status``."""
    shown = root / DPKG_STATUS.relative_to("/")
    try:
        return dpkg_installed(resolve_in_root(root, DPKG_STATUS), names)
    except OSError as error:
        raise FactsUnavailable(f"cannot read {shown}: {error.strerror}") from None
    except InvalidInput as error:
        raise FactsUnavailable(f"{shown} has an entry bsi cannot read: {error}") from None


def read_rpm(root: Path, names: Iterable[str]) -> tuple[PackageVersion, ...]:
    """The installed versions of ``names`` in ``root``'s rpm database, as ``rpm -q`` says."""
    try:
        return rpm.installed_versions(root, names)
    except rpm.RpmUnavailable as error:
        raise FactsUnavailable(error.message, hint=error.hint) from None


def read_packages(
    root: Path, manager: PackageManager, names: Iterable[str]
) -> tuple[PackageVersion, ...]:
    if manager is PackageManager.DPKG:
        return read_dpkg(root, names)
    return read_rpm(root, names)


def sha256_of(path: Path) -> str | None:
    """The SHA-256 of a regular file's content, ``None`` when it is missing or not a file."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return digest.hexdigest()


def file_digests(
    root: Path, paths: Iterable[str], active: Manifest | None
) -> dict[str, str | None]:
    """Path -> SHA-256 (``None`` when missing) of ``paths`` below ``root``.

    A file the active supplement manages and that still holds its content is
    reported with the base digest the manifest recorded (see module doc).
    """
    managed = {entry.path: entry for entry in active.files} if active else {}
    digests: dict[str, str | None] = {}
    for path in sorted(set(paths)):
        found = sha256_of(root / path)
        entry = managed.get(path)
        if entry is not None and found == entry.sha256:
            found = entry.base_sha256
        digests[path] = found
    return digests


def named_by(catalog: Catalog, platform: str) -> tuple[frozenset[str], frozenset[str]]:
    """The package names and file paths the platform's supplements name."""
    packages: set[str] = set()
    files: set[str] = set()
    for supplement in catalog.supplements_for(platform):
        packages |= supplement.prerequisite.package_names()
        packages |= {p.name for p in supplement.fixed_in}
        files |= {f.path for f in supplement.prerequisite.files}
    return frozenset(packages), frozenset(files)
