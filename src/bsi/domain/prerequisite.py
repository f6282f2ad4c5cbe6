"""What a supplement patches, and what folds it in: prerequisites and ``fixed_in``.

Apple names a supplement's base by one build (``25D2128``). Stock Linux hosts
have no such build: what they run is what their package database says is
installed. So a supplement names its base in exactly one of four ways
(:class:`Prerequisite`):

- ``build``: a ``BUILD_ID`` / ``IMAGE_VERSION`` (appliance images, Apple);
- ``packages``: installed package versions, read from dpkg's status file or
  the rpm database (``libssl3 3.0.19-1~deb12u2 amd64``);
- ``files``: the SHA-256 of every file it replaces (any host);
- ``image``: a container image (:class:`ImageBase`), by its digest and/or
  by its os-release and package versions, so that one supplement can serve
  every image built on the same base layer.

``fixed_in`` is the package versions that carry the fix themselves: a host at
or past every one of them needs the supplement no more (Apple's "the next
minor folds it in"). Versions order by the package manager's own rules —
Debian policy §5.6.12 through python-debian for dpkg, ``rpmvercmp`` through
the ``rpm-version`` library (the Rust port of rpm's comparison) for rpm —
never by a rule written here.

The document form (spec, manifest, TUF custom metadata, catalogue) is read
and written here too, once::

    prerequisite: {build: 12A100}
    prerequisite: {manager: dpkg, packages: [{package: libssl3, version: 3.0.19-1~deb12u2,
                                              arch: amd64}]}
    prerequisite: {files: [{path: /usr/lib/x86_64-linux-gnu/libssl.so.3, sha256: 9f86...}]}
    prerequisite: {image: {digest: "sha256:5f70...", os_release: {id: debian, version_id: "12"},
                           manager: dpkg, packages: [{package: libssl3, version: 3.0.19-1}]}}
    fixed_in: [{package: libssl3, version: 3.0.20-1~deb12u2}]

Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import rpm_version
from debian.debian_support import Version as DebianVersion

from bsi.domain.versions import Build
from bsi.errors import InvalidInput, InvalidVersion

_Entry = TypeVar("_Entry")

# Debian policy §5.6.1 allows [a-z0-9][a-z0-9+.-]+; rpm names may also carry
# capitals and underscores. One pattern admits both and nothing a shell or a
# path could misread.
_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._-]{0,127}")
_ARCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
_RPM_VERSION = re.compile(r"(?:\d{1,10}:)?[A-Za-z0-9._+~^]{1,128}(?:-[A-Za-z0-9._+~^]{1,128})?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# os-release(5): ID and VERSION_ID are lower-case letters, digits and "._-"
# (VERSION_ID may also carry "~"); nothing a shell or a path could misread.
_OS_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_OS_VERSION_ID = re.compile(r"[a-z0-9][a-z0-9._~-]{0,63}")
_MAX_ENTRIES = 4096


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a SHA-256 as bsi writes one: 64 lower-case hex digits."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def is_image_digest(value: object) -> bool:
    """Whether ``value`` is an OCI content digest bsi accepts: ``sha256:`` + 64 hex digits.

    The OCI image spec (descriptor ``digest``) allows other algorithms;
    Docker and Podman name every image by SHA-256, so bsi asks for that.
    """
    return isinstance(value, str) and _IMAGE_DIGEST.fullmatch(value) is not None


#: Debian's architecture-independent packages install on every architecture.
ARCH_ALL = frozenset({"all", "noarch"})


class PackageManager(StrEnum):
    """The package database a host keeps, and so the version ordering that applies."""

    DPKG = "dpkg"
    RPM = "rpm"


def check_package_version(manager: PackageManager, text: str) -> str:
    """``text`` if it is a version ``manager`` can order, else :class:`InvalidVersion`."""
    if manager is PackageManager.DPKG:
        try:
            DebianVersion(text)
        except (ValueError, TypeError):
            raise InvalidVersion(
                f"{text!r} is not a Debian package version",
                hint="expected [epoch:]upstream[-revision], e.g. '3.0.19-1~deb12u2' "
                "(Debian policy 5.6.12)",
            ) from None
        return text
    if not isinstance(text, str) or not _RPM_VERSION.fullmatch(text):
        raise InvalidVersion(
            f"{text!r} is not an rpm version",
            hint="expected [epoch:]version[-release], e.g. '3.0.7-27.el9'",
        )
    return text


def compare_versions(manager: PackageManager, left: str, right: str) -> int:
    """-1, 0 or 1 as ``left`` is older than, the same as or newer than ``right``.

    dpkg's rules (Debian policy §5.6.12: epoch, then upstream and revision
    compared with ``~`` before everything) through python-debian; rpm's
    ``rpmvercmp`` through ``rpm-version``.
    """
    if manager is PackageManager.DPKG:
        a, b = DebianVersion(left), DebianVersion(right)
        return (a > b) - (a < b)
    return int(rpm_version.evr_compare(left, right))


@dataclass(frozen=True, slots=True)
class PackageVersion:
    """One package at one version: ``libssl3 3.0.19-1~deb12u2 amd64``.

    ``arch`` ``None`` means any architecture (a requirement) or unknown (a fact).
    """

    name: str
    version: str
    arch: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _PACKAGE.fullmatch(self.name):
            raise InvalidInput(
                f"{self.name!r} is not a package name",
                hint="letters, digits and + . _ - , starting with a letter or digit",
            )
        if self.arch is not None and (
            not isinstance(self.arch, str) or not _ARCH.fullmatch(self.arch)
        ):
            raise InvalidInput(f"{self.arch!r} is not an architecture", hint="e.g. amd64, x86_64")
        if not isinstance(self.version, str) or not self.version:
            raise InvalidVersion(f"{self.version!r} is not a package version")

    def display(self) -> str:
        arch = f" ({self.arch})" if self.arch else ""
        return f"{self.name} {self.version}{arch}"


@dataclass(frozen=True, slots=True)
class FileDigest:
    """The SHA-256 of one file, by its path under the device root (no leading ``/``)."""

    path: str
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path or self.path.startswith("/"):
            raise InvalidInput(f"{self.path!r} is not a path below the device root")
        if not is_sha256(self.sha256):
            raise InvalidInput(
                f"{self.sha256!r} is not a SHA-256", hint="64 lower-case hexadecimal digits"
            )


@dataclass(frozen=True, slots=True)
class ImageBase:
    """The container image a supplement patches.

    ``digest`` is an image's content digest (``sha256:...``): its ID as
    ``docker image inspect -f '{{.Id}}'`` prints it (the digest of its config,
    the same under Docker and Podman) or one of its repository digests. Without
    a digest, ``os_id`` / ``os_version_id`` (the image's ``/etc/os-release``
    ``ID`` and ``VERSION_ID``) and the installed ``packages`` (from
    ``manager``'s database inside the image) name every image built on that
    base; with both, both must hold. At least a digest or an ``os_id``.
    """

    digest: str | None = None
    os_id: str | None = None
    os_version_id: str | None = None
    manager: PackageManager | None = None
    packages: tuple[PackageVersion, ...] = ()

    def __post_init__(self) -> None:
        if self.digest is None and self.os_id is None:
            raise InvalidInput(
                "an image prerequisite names the image's digest, its os-release, or both",
                hint="e.g. {digest: 'sha256:...'} or {os_release: {id: debian, version_id: '12'}}",
            )
        if self.digest is not None and not is_image_digest(self.digest):
            raise InvalidInput(
                f"{self.digest!r} is not an image digest",
                hint="'sha256:' and 64 lower-case hexadecimal digits, as "
                "'docker image inspect -f {{.Id}} IMAGE' prints it",
            )
        if self.os_id is not None and not _OS_ID.fullmatch(self.os_id):
            raise InvalidInput(
                f"{self.os_id!r} is not an os-release ID",
                hint="lower-case letters, digits and . _ - (os-release(5)), e.g. debian",
            )
        if self.os_version_id is not None and (
            self.os_id is None or not _OS_VERSION_ID.fullmatch(self.os_version_id)
        ):
            raise InvalidInput(
                f"{self.os_version_id!r} is not an os-release VERSION_ID with an ID",
                hint="lower-case letters, digits and . _ ~ - (os-release(5)), e.g. '12', "
                "given with the ID",
            )
        if (self.manager is None) == bool(self.packages):
            raise InvalidInput(
                "an image's packages name their package manager (dpkg or rpm), "
                "and a package manager names packages"
            )
        if self.packages and self.os_id is None:
            raise InvalidInput(
                "an image prerequisite by package versions names the image's os-release too",
                hint="add os_release: {id: ..., version_id: ...}",
            )
        object.__setattr__(self, "packages", _sorted_unique(self.packages, "package"))
        if self.manager is not None:
            for package in self.packages:
                check_package_version(self.manager, package.version)

    def display(self) -> str:
        """``image sha256:5f70bf18a086``, ``debian 12 image with libssl3 3.0.19-1``."""
        parts = []
        if self.os_id is not None:
            release = " ".join(p for p in (self.os_id, self.os_version_id) if p)
            with_packages = ", ".join(p.display() for p in self.packages)
            parts.append(f"{release} image" + (f" with {with_packages}" if with_packages else ""))
        if self.digest is not None:
            parts.append(f"image {self.digest[:19]}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What a container engine says about one image, for :func:`place`.

    ``digests`` are every digest the image is known by: its ID and its
    repository digests. ``os_id`` / ``os_version_id`` come from the image's
    ``/etc/os-release`` (``None`` when it has none); ``packages`` from its
    package database (``None`` when not read).
    """

    digests: frozenset[str]
    os_id: str | None = None
    os_version_id: str | None = None
    manager: PackageManager | None = None
    packages: tuple[PackageVersion, ...] | None = None


class PrerequisiteKind(StrEnum):
    BUILD = "build"
    PACKAGES = "packages"
    FILES = "files"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class Prerequisite:
    """The base a supplement patches: exactly one of a build, packages, file digests or image.

    ``manager`` is set exactly when ``packages`` is. Packages and files are
    kept sorted, so equal prerequisites compare equal however they were written.
    """

    build: Build | None = None
    manager: PackageManager | None = None
    packages: tuple[PackageVersion, ...] = ()
    files: tuple[FileDigest, ...] = ()
    image: ImageBase | None = None

    def __post_init__(self) -> None:
        given = [k for k, v in ((PrerequisiteKind.BUILD, self.build),
                                (PrerequisiteKind.PACKAGES, self.packages),
                                (PrerequisiteKind.FILES, self.files),
                                (PrerequisiteKind.IMAGE, self.image)) if v]  # fmt: skip
        if len(given) != 1:
            raise InvalidInput(
                "a prerequisite names exactly one of build, packages, files or image"
                + (f", not {' and '.join(given)}" if given else ""),
                hint="e.g. {build: 12A100}, {manager: dpkg, packages: [...]}, {files: [...]} "
                "or {image: {digest: 'sha256:...'}}",
            )
        if (self.manager is None) == bool(self.packages):
            raise InvalidInput(
                "a package prerequisite names its package manager (dpkg or rpm), "
                "and only a package prerequisite does"
            )
        object.__setattr__(self, "packages", _sorted_unique(self.packages, "package"))
        object.__setattr__(self, "files", tuple(sorted(self.files, key=lambda f: f.path)))
        if len({f.path for f in self.files}) != len(self.files):
            raise InvalidInput("a file is listed twice in the prerequisite")
        if self.manager is not None:
            for package in self.packages:
                check_package_version(self.manager, package.version)

    @classmethod
    def of_build(cls, build: Build) -> Prerequisite:
        return cls(build=build)

    @property
    def kind(self) -> PrerequisiteKind:
        if self.build is not None:
            return PrerequisiteKind.BUILD
        if self.image is not None:
            return PrerequisiteKind.IMAGE
        return PrerequisiteKind.PACKAGES if self.packages else PrerequisiteKind.FILES

    def display(self) -> str:
        """``build 12A100``, ``libssl3 3.0.19-1~deb12u2 (amd64)``, ``2 files by SHA-256``."""
        if self.build is not None:
            return f"build {self.build}"
        if self.image is not None:
            return self.image.display()
        if self.packages:
            return ", ".join(p.display() for p in self.packages)
        return f"{len(self.files)} file(s) by SHA-256"

    def package_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.packages)


def _sorted_unique(packages: Iterable[PackageVersion], what: str) -> tuple[PackageVersion, ...]:
    ordered = tuple(sorted(packages, key=lambda p: (p.name, p.arch or "")))
    keys = [(p.name, p.arch) for p in ordered]
    if len(set(keys)) != len(keys):
        raise InvalidInput(f"a {what} is listed twice")
    return ordered


# -- the rule --------------------------------------------------------------


class Match(StrEnum):
    """How a device stands against a prerequisite."""

    MET = "met"
    NOT_MET = "not-met"  # the device has the base in another version or content
    ABSENT = "absent"  # the device lacks the package or file: the supplement is not for it
    UNKNOWN = "unknown"  # the device did not report what the prerequisite names


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of :func:`place`, with a sentence naming both sides when they differ."""

    match: Match
    message: str = ""


def installed_match(
    wanted: PackageVersion, installed: Iterable[PackageVersion]
) -> PackageVersion | None:
    """The installed package that answers ``wanted``: same name, same or any architecture."""
    candidates = [p for p in installed if p.name == wanted.name]
    if wanted.arch is None or wanted.arch in ARCH_ALL:
        return candidates[0] if candidates else None
    for package in candidates:
        if package.arch in (None, wanted.arch) or package.arch in ARCH_ALL:
            return package
    return candidates[0] if candidates else None


def place(
    prerequisite: Prerequisite,
    *,
    build: Build | None,
    manager: PackageManager | None,
    packages: tuple[PackageVersion, ...] | None,
    files: Mapping[str, str | None] | None,
    images: Iterable[ImageFacts] | None = None,
    asked: frozenset[str] | None = None,
) -> Placement:
    """Whether a device (its build, installed packages, file digests) is on ``prerequisite``.

    Packages must be installed at exactly the named version (and
    architecture): a supplement replaces that version's files. A package
    neither installed nor among those the device ``asked`` about (the names its
    agent looked up) is unknown, not absent: a supplement published since the
    device's last report names a package its report could not say anything
    about (fail closed; ``asked`` ``None``: absent means not installed). ``files`` maps
    a path to its digest, ``None`` when the file is missing. ``images`` are the
    base images of a container host's running containers (``None``: not a
    container host): met when one of them is (:func:`place_image`).
    """
    if prerequisite.image is not None:
        if images is None:
            return Placement(Match.ABSENT, "the device reports no containers")
        placements = [place_image(prerequisite.image, image) for image in images]
        for match in (Match.MET, Match.UNKNOWN, Match.NOT_MET):
            first = next((p for p in placements if p.match is match), None)
            if first is not None:
                return first
        return Placement(Match.ABSENT, f"no running container is on {prerequisite.image.display()}")
    if prerequisite.build is not None:
        if build is None:
            return Placement(Match.UNKNOWN, "the device reports no build")
        if build == prerequisite.build:
            return Placement(Match.MET)
        return Placement(
            Match.NOT_MET, f"needs build {prerequisite.build}; the device runs {build}"
        )
    if prerequisite.packages:
        if packages is None or manager is None:
            return Placement(Match.UNKNOWN, "the device reports no installed packages")
        if manager is not prerequisite.manager:
            return Placement(
                Match.ABSENT,
                f"needs {prerequisite.manager} packages; the device uses {manager}",
            )
        differences = []
        for wanted in prerequisite.packages:
            have = installed_match(wanted, packages)
            if have is None and asked is not None and wanted.name not in asked:
                return Placement(
                    Match.UNKNOWN,
                    f"the device has not yet said whether {wanted.name} is installed (it "
                    "looks it up at its next check-in)",
                )
            if have is None:
                return Placement(Match.ABSENT, f"{wanted.name} is not installed")
            if (
                wanted.arch
                and have.arch
                and have.arch != wanted.arch
                and not ({have.arch, wanted.arch} & ARCH_ALL)
            ):
                differences.append(
                    f"needs {wanted.display()}; the device has {have.name} for {have.arch}"
                )
            elif compare_versions(manager, have.version, wanted.version) != 0:
                differences.append(
                    f"needs {wanted.name} {wanted.version}; the device has {have.version}"
                )
        if differences:
            return Placement(Match.NOT_MET, "; ".join(differences))
        return Placement(Match.MET)
    if files is None:
        return Placement(Match.UNKNOWN, "the device reports no file digests")
    differences = []
    for digest in prerequisite.files:
        if digest.path not in files:
            return Placement(Match.UNKNOWN, f"the device reports no digest for /{digest.path}")
        found = files[digest.path]
        if found is None:
            return Placement(Match.ABSENT, f"/{digest.path} does not exist on the device")
        if found != digest.sha256:
            differences.append(
                f"needs /{digest.path} with sha256 {digest.sha256}; the device's is {found}"
            )
    if differences:
        return Placement(Match.NOT_MET, "; ".join(differences))
    return Placement(Match.MET)


def place_image(base: ImageBase, image: ImageFacts) -> Placement:
    """Whether a container's ``image`` is the one ``base`` names.

    Another digest, or another os-release ``ID``, is another image: the
    supplement is not for it (``absent``). The same ``ID`` at another
    ``VERSION_ID``, or other package versions, is the image at another
    version (``not-met``). An image that has no os-release, or whose packages
    were not read, cannot be placed by them (``unknown``).
    """
    if base.digest is not None and base.digest not in image.digests:
        shown = ", ".join(sorted(image.digests)) or "no digest"
        return Placement(Match.ABSENT, f"needs image {base.digest}; the image is {shown}")
    if base.os_id is None:
        return Placement(Match.MET)
    if image.os_id is None:
        return Placement(Match.UNKNOWN, "the image has no /etc/os-release ID")
    if image.os_id != base.os_id:
        return Placement(Match.ABSENT, f"needs a {base.os_id} image; the image is {image.os_id}")
    if base.os_version_id is not None and image.os_version_id != base.os_version_id:
        return Placement(
            Match.NOT_MET,
            f"needs {base.os_id} {base.os_version_id}; the image is "
            f"{base.os_id} {image.os_version_id or '(no VERSION_ID)'}",
        )
    if not base.packages:
        return Placement(Match.MET)
    if image.packages is None or image.manager is None:
        return Placement(Match.UNKNOWN, "the image's installed packages were not read")
    return place(
        Prerequisite(manager=base.manager, packages=base.packages),
        build=None,
        manager=image.manager,
        packages=image.packages,
        files=None,
    )


def folded_in(
    fixed_in: tuple[PackageVersion, ...],
    manager: PackageManager | None,
    supplement_manager: PackageManager | None,
    packages: tuple[PackageVersion, ...] | None,
) -> tuple[PackageVersion, ...] | None:
    """The installed packages that carry the fix, when every ``fixed_in`` one is reached.

    ``None`` when the device is not there (or cannot tell): a package below
    its ``fixed_in`` version, missing, or no ``fixed_in`` at all.
    """
    if not fixed_in or packages is None or manager is None or manager is not supplement_manager:
        return None
    reached = []
    for wanted in fixed_in:
        have = installed_match(wanted, packages)
        if have is None or compare_versions(manager, have.version, wanted.version) < 0:
            return None
        reached.append(have)
    return tuple(reached)


# -- the document form -----------------------------------------------------


def document_fields(value: object, where: str, allowed: Iterable[str]) -> dict[str, object]:
    """The object ``value`` with only ``allowed`` keys, nulls dropped; else :class:`InvalidInput`
    naming ``where`` (the document's fields are a closed set: an unknown one may change meaning)."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected an object, found {value!r:.80}")
    names = tuple(allowed)
    unknown = sorted(str(k) for k in value if k not in names)
    if unknown:
        raise InvalidInput(
            f"{where}: unknown field {unknown[0]!r}", hint="expected only " + ", ".join(names)
        )
    return {str(k): v for k, v in value.items() if v is not None}


def document_list(value: object, where: str) -> list[object]:
    """The list ``value`` (at most a few thousand entries); else :class:`InvalidInput`."""
    if not isinstance(value, list):
        raise InvalidInput(f"{where}: expected a list, found {value!r:.80}")
    if len(value) > _MAX_ENTRIES:
        raise InvalidInput(f"{where}: more than {_MAX_ENTRIES} entries")
    return value


def item_entries(
    items: Mapping[str, object], name: str, read: Callable[[object, str], _Entry]
) -> list[_Entry] | None:
    """Each entry of the list status item ``name``, read by ``read(entry, "name[i]")``;
    ``None`` when the item is absent. Raises what ``read`` or :func:`document_list`
    raises for a malformed one."""
    value = items.get(name)
    if value is None:
        return None
    return [read(entry, f"{name}[{i}]") for i, entry in enumerate(document_list(value, name))]


def document_text(value: object, where: str) -> str:
    """The string ``value``; else :class:`InvalidInput` naming ``where``."""
    if not isinstance(value, str):
        hint = "quote it in YAML so that it stays text" if isinstance(value, int | float) else None
        raise InvalidInput(f"{where}: expected a string, found {value!r:.80}", hint=hint)
    return value


def located(where: str, error: InvalidInput) -> InvalidInput:
    """``error`` (same class and hint) with its message prefixed by ``where``."""
    return type(error)(f"{where}: {error.message}", hint=error.hint)


def read_package(
    value: object, where: str, manager: PackageManager | None = None
) -> PackageVersion:
    """``{package, version, arch?}``, its version checked by ``manager``'s rules."""
    entry = document_fields(value, where, ("package", "version", "arch"))
    for key in ("package", "version"):
        if key not in entry:
            raise InvalidInput(f"{where}: required field {key!r} is missing")
    try:
        package = PackageVersion(
            name=document_text(entry["package"], f"{where}.package"),
            version=document_text(entry["version"], f"{where}.version"),
            arch=document_text(entry["arch"], f"{where}.arch") if "arch" in entry else None,
        )
        if manager is not None:
            check_package_version(manager, package.version)
    except InvalidInput as error:
        raise error if error.message.startswith(where) else located(where, error) from None
    return package


def read_manager(value: object, where: str) -> PackageManager:
    text = document_text(value, where)
    try:
        return PackageManager(text)
    except ValueError:
        raise InvalidInput(
            f"{where}: {text!r} is not a package manager bsi reads",
            hint="expected " + " or ".join(m.value for m in PackageManager),
        ) from None


def read_prerequisite(value: object, where: str = "prerequisite") -> Prerequisite:
    """A prerequisite from its document form; every refusal names ``where`` and the field."""
    entry = document_fields(value, where, ("build", "manager", "packages", "files", "image"))
    manager = read_manager(entry["manager"], f"{where}.manager") if "manager" in entry else None
    if "packages" in entry and manager is None:
        raise InvalidInput(
            f"{where}: required field 'manager' is missing",
            hint="name the package database the versions come from: dpkg or rpm",
        )
    try:
        build = None
        if "build" in entry:
            try:
                build = Build.parse(document_text(entry["build"], f"{where}.build"))
            except InvalidInput as error:
                raise located(f"{where}.build", error) from None
        return Prerequisite(
            build=build,
            manager=manager,
            packages=tuple(
                read_package(item, f"{where}.packages[{i}]", manager)
                for i, item in enumerate(
                    document_list(entry.get("packages", []), f"{where}.packages")
                )
            ),
            files=tuple(
                _read_digest(item, f"{where}.files[{i}]")
                for i, item in enumerate(document_list(entry.get("files", []), f"{where}.files"))
            ),
            image=read_image(entry["image"], f"{where}.image") if "image" in entry else None,
        )
    except InvalidInput as error:
        raise error if error.message.startswith(where) else located(where, error) from None


def read_image(value: object, where: str = "image") -> ImageBase:
    """An :class:`ImageBase` from ``{digest?, os_release?: {id, version_id?}, manager?,
    packages?}``; every refusal names ``where`` and the field."""
    entry = document_fields(value, where, ("digest", OS_RELEASE, "manager", "packages"))
    os_id, os_version_id = read_os_release(entry.get(OS_RELEASE), f"{where}.{OS_RELEASE}")
    manager = read_manager(entry["manager"], f"{where}.manager") if "manager" in entry else None
    digest = document_text(entry["digest"], f"{where}.digest") if "digest" in entry else None
    try:
        packages = document_list(entry.get("packages", []), f"{where}.packages")
        return ImageBase(
            digest=digest,
            os_id=os_id,
            os_version_id=os_version_id,
            manager=manager,
            packages=tuple(
                read_package(item, f"{where}.packages[{i}]", manager)
                for i, item in enumerate(packages)
            ),
        )
    except InvalidInput as error:
        raise error if error.message.startswith(where) else located(where, error) from None


OS_RELEASE = "os_release"


def read_os_release(value: object, where: str) -> tuple[str | None, str | None]:
    """``(ID, VERSION_ID)`` from ``{id, version_id?}`` (os-release(5) names); both
    ``None`` when ``value`` is ``None``."""
    if value is None:
        return None, None
    release = document_fields(value, where, ("id", "version_id"))
    if "id" not in release:
        raise InvalidInput(f"{where}: required field 'id' is missing")
    version = release.get("version_id")
    return (
        document_text(release["id"], f"{where}.id"),
        None if version is None else document_text(version, f"{where}.version_id"),
    )


def dump_os_release(os_id: str, os_version_id: str | None) -> dict[str, str]:
    """The document form :func:`read_os_release` reads back."""
    release = {"id": os_id}
    if os_version_id is not None:
        release["version_id"] = os_version_id
    return release


def dump_image(image: ImageBase) -> dict[str, object]:
    """The document form :func:`read_image` reads back."""
    document: dict[str, object] = {}
    if image.digest is not None:
        document["digest"] = image.digest
    if image.os_id is not None:
        document[OS_RELEASE] = dump_os_release(image.os_id, image.os_version_id)
    if image.manager is not None:
        document["manager"] = image.manager.value
        document["packages"] = [dump_package(p) for p in image.packages]
    return document


def _read_digest(value: object, where: str) -> FileDigest:
    entry = document_fields(value, where, ("path", "sha256"))
    for key in ("path", "sha256"):
        if key not in entry:
            raise InvalidInput(f"{where}: required field {key!r} is missing")
    try:
        return FileDigest(
            document_text(entry["path"], f"{where}.path").lstrip("/"),
            document_text(entry["sha256"], f"{where}.sha256"),
        )
    except InvalidInput as error:
        raise error if error.message.startswith(where) else located(where, error) from None


def read_fixed_in(
    value: object, manager: PackageManager | None, where: str = "fixed_in"
) -> tuple[PackageVersion, ...]:
    """``fixed_in``: package versions, ordered by the prerequisite's package manager."""
    packages = tuple(
        read_package(item, f"{where}[{i}]", manager)
        for i, item in enumerate(document_list(value, where))
    )
    if packages and manager is None:
        raise InvalidInput(
            f"{where}: only a supplement with a package prerequisite can be folded in by "
            "package versions",
            hint="name the packages in 'prerequisite: {manager: dpkg, packages: [...]}'",
        )
    try:
        return _sorted_unique(packages, "package")
    except InvalidInput as error:
        raise located(where, error) from None


def dump_package(package: PackageVersion) -> dict[str, object]:
    document: dict[str, object] = {"package": package.name, "version": package.version}
    if package.arch is not None:
        document["arch"] = package.arch
    return document


def dump_prerequisite(prerequisite: Prerequisite) -> dict[str, object]:
    """The document form of ``prerequisite``: only the fields of its kind."""
    if prerequisite.build is not None:
        return {"build": str(prerequisite.build)}
    if prerequisite.image is not None:
        return {"image": dump_image(prerequisite.image)}
    if prerequisite.packages:
        assert prerequisite.manager is not None
        return {
            "manager": prerequisite.manager.value,
            "packages": [dump_package(p) for p in prerequisite.packages],
        }
    return {"files": [{"path": f.path, "sha256": f.sha256} for f in prerequisite.files]}


def dump_fixed_in(fixed_in: tuple[PackageVersion, ...]) -> list[dict[str, object]]:
    return [dump_package(p) for p in fixed_in]


# -- as a supplement's fields ----------------------------------------------

#: The field names a supplement's base is written under, in every document
#: (spec, manifest, TUF custom metadata, bsi catalogue). A build prerequisite
#: keeps the older flat ``prerequisite_build`` so that documents written before
#: packages and files existed read unchanged.
PREREQUISITE_BUILD = "prerequisite_build"
PREREQUISITE = "prerequisite"
FIXED_IN = "fixed_in"
BASE_FIELDS = (PREREQUISITE_BUILD, PREREQUISITE, FIXED_IN)


def read_base(
    fields: Mapping[str, object], where: str = ""
) -> tuple[Prerequisite, tuple[PackageVersion, ...]]:
    """The prerequisite and ``fixed_in`` of a supplement document's top-level ``fields``.

    Exactly one of ``prerequisite_build`` and ``prerequisite`` must be there.
    """
    prefix = f"{where}." if where else ""
    present = [name for name in (PREREQUISITE_BUILD, PREREQUISITE) if fields.get(name) is not None]
    if len(present) != 1:
        raise InvalidInput(
            f"{where or 'top level'}: "
            + (
                "names both prerequisite_build and prerequisite"
                if present
                else "required field 'prerequisite' is missing"
            ),
            hint="name the base once: 'prerequisite_build: 12A100', or 'prerequisite:' with "
            "'build', 'manager' + 'packages', or 'files'",
        )
    if present[0] == PREREQUISITE_BUILD:
        text = document_text(fields[PREREQUISITE_BUILD], prefix + PREREQUISITE_BUILD)
        try:
            prerequisite = Prerequisite.of_build(Build.parse(text))
        except InvalidInput as error:
            raise located(prefix + PREREQUISITE_BUILD, error) from None
    else:
        prerequisite = read_prerequisite(fields[PREREQUISITE], prefix + PREREQUISITE)
    fixed_in = read_fixed_in(fields.get(FIXED_IN) or [], prerequisite.manager, prefix + FIXED_IN)
    return prerequisite, fixed_in


def dump_base(
    prerequisite: Prerequisite, fixed_in: tuple[PackageVersion, ...]
) -> dict[str, object]:
    """The fields :func:`read_base` reads back; ``fixed_in`` only when there is one."""
    document: dict[str, object] = (
        {PREREQUISITE_BUILD: str(prerequisite.build)}
        if prerequisite.build is not None
        else {PREREQUISITE: dump_prerequisite(prerequisite)}
    )
    if fixed_in:
        document[FIXED_IN] = dump_fixed_in(fixed_in)
    return document


# -- as status items -------------------------------------------------------

#: bsi's own status items: the host's package manager, its installed versions
#: of the packages the catalogue names, the names it looked up (installed or not),
#: and the digests of the files it names.
PACKAGE_MANAGER_ITEM = "bsi.agent.package-manager"
PACKAGES_ITEM = "bsi.agent.packages"
PACKAGES_ASKED_ITEM = "bsi.agent.packages-asked"
FILE_DIGESTS_ITEM = "bsi.agent.file-digests"


def package_items(
    manager: PackageManager | None,
    packages: tuple[PackageVersion, ...] | None,
    file_digests: Mapping[str, str | None] | None,
    asked: frozenset[str] | None = None,
) -> dict[str, object]:
    """The status items for what :func:`read_package_items` and
    :func:`read_packages_asked` read back."""
    items: dict[str, object] = {}
    if manager is not None and packages is not None:
        items[PACKAGE_MANAGER_ITEM] = manager.value
        items[PACKAGES_ITEM] = [dump_package(p) for p in packages]
        if asked is not None:
            items[PACKAGES_ASKED_ITEM] = sorted(asked)
    if file_digests is not None:
        items[FILE_DIGESTS_ITEM] = [
            {"path": path, "sha256": digest or ""} for path, digest in sorted(file_digests.items())
        ]
    return items


def check_package_item(name: str, value: object) -> None:
    """Refuse one malformed package or digest item on its own (a partial report)."""
    if name == PACKAGE_MANAGER_ITEM:
        read_manager(value, name)
    elif name == PACKAGES_ITEM:
        for i, entry in enumerate(document_list(value, name)):
            read_package(entry, f"{name}[{i}]")
    elif name == PACKAGES_ASKED_ITEM:
        read_packages_asked({name: value})
    elif name == FILE_DIGESTS_ITEM:
        read_package_items({name: value})


def read_packages_asked(items: Mapping[str, object]) -> frozenset[str] | None:
    """The package names the device's agent looked up (``None`` when it does not say).

    Raises :class:`InvalidInput` naming the item for a malformed value."""
    names = item_entries(items, PACKAGES_ASKED_ITEM, document_text)
    return None if names is None else frozenset(names)


def read_package_items(
    items: Mapping[str, object],
) -> tuple[PackageManager | None, tuple[PackageVersion, ...] | None, dict[str, str | None] | None]:
    """``(manager, packages, file_digests)`` from a device's status items, each ``None`` if absent.

    Raises :class:`InvalidInput` naming the item for a malformed value.
    """
    manager = packages = digests = None
    if items.get(PACKAGE_MANAGER_ITEM) is not None or items.get(PACKAGES_ITEM) is not None:
        manager = read_manager(items.get(PACKAGE_MANAGER_ITEM), PACKAGE_MANAGER_ITEM)
        packages = tuple(
            read_package(entry, f"{PACKAGES_ITEM}[{i}]", manager)
            for i, entry in enumerate(document_list(items.get(PACKAGES_ITEM), PACKAGES_ITEM))
        )
    if items.get(FILE_DIGESTS_ITEM) is not None:
        digests = {}
        for i, entry in enumerate(document_list(items[FILE_DIGESTS_ITEM], FILE_DIGESTS_ITEM)):
            where = f"{FILE_DIGESTS_ITEM}[{i}]"
            fields = document_fields(entry, where, ("path", "sha256"))
            path = document_text(fields.get("path"), f"{where}.path")
            sha256 = document_text(fields.get("sha256", ""), f"{where}.sha256")
            try:
                FileDigest(path, sha256 or "0" * 64)
            except InvalidInput as error:
                raise located(where, error) from None
            digests[path] = sha256 or None
    return manager, packages, digests
