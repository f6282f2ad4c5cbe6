"""The rpm format for ``bsi supplement build --from-rpm``, and the rpm database of a root.

Fedora, RHEL and SUSE hosts keep what is installed in rpm's database. bsi
reads it, and ``.rpm`` files, only through rpm's own tools (Debian's ``rpm``
package provides them) — never by parsing rpm's binary formats here:

- the database below a root: ``rpm --root ROOT --dbpath DB -q --qf ...`` for
  the named packages only, ``DB`` being where that root keeps it
  (``/usr/lib/sysimage/rpm`` on Fedora 36+ and SUSE, ``/var/lib/rpm`` on
  RHEL), found inside the root, never the build machine's own;
- a package file: ``rpmkeys -K --nosignature`` checks its digests,
  ``rpm -qp --qf`` reads its header, ``rpm2archive`` turns its payload into
  a tar stream that is unpacked like a ``.deb``'s data member.

Every call runs with ``LC_ALL=C`` (rpm's messages are read) and a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from bsi.agent.facts import resolve_in_root
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

#: Where a root keeps its rpm database, newest layout first (Fedora 36+ moved it
#: to /usr/lib/sysimage/rpm and left /var/lib/rpm as a link).
RPM_DATABASES = (PurePosixPath("/usr/lib/sysimage/rpm"), PurePosixPath("/var/lib/rpm"))
_DATABASE_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")  # sqlite, ndb, bdb backends
#: The first four bytes of every rpm package file (the "lead"), rpm's own magic.
RPM_MAGIC = b"\xed\xab\xee\xdb"
# rpm prints the epoch only when there is one, as rpm -q does.
_NEVRA = r"%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{ARCH}"
_TIMEOUT = 120  # seconds


class RpmUnavailable(InvalidInput):
    """rpm's tools are missing, or rpm could not read what it was given."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RpmUnavailable(
            f"the {name} command is not installed",
            hint="install rpm (Debian/Ubuntu: apt-get install rpm; Fedora/RHEL: it is there)",
        )
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``args`` with rpm's messages in English, no input, and a time limit."""
    try:
        return subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_c_locale(),
            timeout=_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _timed_out(args[0]) from None


def _c_locale() -> dict[str, str]:
    """This process's environment with rpm's messages in English (bsi reads them)."""
    return {**os.environ, "LC_ALL": "C"}


def _timed_out(tool: str) -> RpmUnavailable:
    return RpmUnavailable(
        f"{Path(tool).name} did not answer within {_TIMEOUT} s",
        hint="is another rpm or dnf holding the database lock?",
    )


def database(root: Path) -> PurePosixPath | None:
    """Where ``root`` keeps its rpm database (a path inside it), ``None`` if it keeps none.

    Links are followed inside ``root`` (Fedora's ``/var/lib/rpm`` points to
    ``../../usr/lib/sysimage/rpm``); a directory holding a database file
    wins over an empty one.
    """
    found = []
    for path in RPM_DATABASES:
        resolved = resolve_in_root(root, path)
        if resolved.is_dir():
            inside = PurePosixPath("/", resolved.relative_to(root))
            if any((resolved / name).is_file() for name in _DATABASE_FILES):
                return inside
            found.append(inside)
    return found[0] if found else None


def installed_versions(
    root: Path, names: Iterable[str], dbpath: PurePosixPath | None = None
) -> tuple[PackageVersion, ...]:
    """The installed versions of ``names`` in ``root``'s rpm database, by name and architecture.

    Only the named packages are asked for (``rpm -q NAME...``); one not
    installed is simply absent. Raises :class:`RpmUnavailable` when rpm is
    missing or cannot read the database.
    """
    wanted = sorted(set(names))
    if not wanted:
        return ()
    dbpath = dbpath or database(root)
    if dbpath is None:
        raise RpmUnavailable(
            f"{root} keeps no rpm database (looked in {', '.join(map(str, RPM_DATABASES))})"
        )
    result = _run(
        [_tool("rpm"), "--root", str(root.resolve()), "--dbpath", str(dbpath), "-q",
         "--qf", _NEVRA + r"\n", "--", *wanted]
    )  # fmt: skip
    found = []
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] in wanted:
            found.append(PackageVersion(parts[0], parts[1], parts[2]))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if errors or (result.returncode != 0 and not result.stdout.strip()):
        raise RpmUnavailable(
            f"rpm cannot read the database {dbpath} in {root}: "
            + ("; ".join(errors) or result.stderr.strip())[:300]
        )
    return tuple(sorted(found, key=lambda p: (p.name, p.arch or "")))


def installed_package(root: Path, name: str, arch: str | None) -> PackageVersion:
    """``name`` as ``root``'s rpm database says it is installed (for ``--base-root``)."""
    dbpath = database(root)
    if dbpath is None:
        raise InvalidSupplement(
            f"{root} keeps no rpm database (looked in {', '.join(map(str, RPM_DATABASES))})",
            hint="--base-root must be an rpm-based root (Fedora, RHEL, SUSE), or give --base-rpm",
        )
    return pick_installed(
        installed_versions(root, [name], dbpath),
        name,
        arch,
        f"{root} (rpm database {dbpath})",
        hint="install the base version there, or give it as --base-rpm OLD.rpm",
    )


def installed_tree(root: Path, package: PackageVersion, into: Path) -> Path:
    """The installed package's files copied from ``root`` into ``into``.

    rpm lists them (``%{FILENAMES}``); ``%ghost`` files are left out: the
    package does not ship them, so they are no part of what it changes.
    """
    dbpath = database(root)
    if dbpath is None:
        raise InvalidSupplement(f"{root} keeps no rpm database", hint="give --base-rpm OLD.rpm")
    arch = f".{package.arch}" if package.arch else ""
    result = _run(
        [_tool("rpm"), "--root", str(root.resolve()), "--dbpath", str(dbpath), "-q",
         "--qf", r"[%{FILEFLAGS:fflags}\t%{FILENAMES}\n]", "--",
         f"{package.name}-{package.version}{arch}"]
    )  # fmt: skip
    if result.returncode != 0:
        raise InvalidSupplement(
            f"rpm cannot list the files of {package.display()} in {root}: "
            f"{(result.stderr or result.stdout).strip()[:300]}"
        )
    paths = []
    for line in result.stdout.splitlines():
        flags, _, path = line.partition("\t")
        if path and "g" not in flags:
            paths.append(path)
    return copy_installed(root, paths, into)


def unpack_rpm(path: Path, into: Path) -> UnpackedPackage:
    """Unpack ``path``'s payload into ``into``; refuse anything that is not a binary .rpm.

    The lead's magic is checked first: given any other file, ``rpm -qp``
    would read it as a list of package paths.
    """
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(RPM_MAGIC))
    except FileNotFoundError:
        raise InvalidSupplement(f"{path}: no such file") from None
    except OSError as error:
        raise InvalidSupplement(f"{path}: cannot read it: {error.strerror}") from None
    hint = "give the .rpm files dnf downloads, e.g. 'dnf download openssl-libs'"
    if magic != RPM_MAGIC:
        raise InvalidSupplement(f"{path} is not an rpm package (no rpm lead)", hint=hint)
    checked = _run([_tool("rpmkeys"), "-K", "--nosignature", str(path)])
    if checked.returncode != 0:
        raise InvalidSupplement(
            f"{path} is not a usable rpm package: "
            f"{(checked.stderr or checked.stdout).strip()[:300]}",
            hint=hint,
        )
    header = _run(
        [_tool("rpm"), "-qp", "--nosignature", "--qf", _NEVRA + r"\t%|SOURCERPM?{binary}:{source}|",
         str(path)]
    )  # fmt: skip
    parts = header.stdout.split("\t")
    if header.returncode != 0 or len(parts) != 4:
        raise InvalidSupplement(
            f"{path}: rpm cannot read its header: {header.stderr.strip()[:300]}", hint=hint
        )
    if parts[3] != "binary":
        raise InvalidSupplement(
            f"{path} is a source package", hint="give the binary package hosts install"
        )
    try:
        package = PackageVersion(parts[0], parts[1], parts[2])
    except InvalidInput as error:
        raise InvalidSupplement(f"{path}: its header is not usable: {error}") from None
    payload = into.with_name(into.name + ".payload.tar")
    into.parent.mkdir(parents=True, exist_ok=True)
    rpm2archive = _tool("rpm2archive")
    with path.open("rb") as source, payload.open("wb") as out:
        try:
            archived = subprocess.run(
                [rpm2archive, "-n", "-"],
                stdin=source,
                stdout=out,
                stderr=subprocess.PIPE,
                env=_c_locale(),
                timeout=_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise _timed_out(rpm2archive) from None
    if archived.returncode != 0:
        raise InvalidSupplement(
            f"{path}: rpm2archive cannot read its payload: "
            f"{archived.stderr.decode(errors='replace').strip()[:300]}"
        )
    try:
        tar = tarfile.open(payload)  # noqa: SIM115 - unpack_payload closes it
    except tarfile.TarError as error:
        raise InvalidSupplement(f"{path}: its payload is not readable: {error}") from None
    try:
        return unpack_payload(package, PackageManager.RPM, tar, into, path)
    finally:
        payload.unlink()


RPM = PackageFormat(
    manager=PackageManager.RPM,
    option="--from-rpm",
    base_option="--base-rpm",
    unpack=unpack_rpm,
    installed=installed_package,
    installed_tree=installed_tree,
)
