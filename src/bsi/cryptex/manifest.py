"""The manifest of a cryptex: what a Linux supplement changes, and what must relaunch.

The manifest is the first member of every bundle and the only thing a device
trusts about it once TUF has vouched for the bundle's bytes: it lists each
file the supplement adds, changes or removes (with the content hash the
device must end up with, and the hash of the prerequisite build's file the
device must start from), groups them into components with the services to
relaunch, and carries the health check and the CVEs it fixes.

Every dataclass here checks itself when constructed, so a :class:`Manifest`
value is valid however it was made — read from a bundle, planned by the
builder, or written in a test. Collections are kept sorted, which makes
equality independent of input order and :meth:`Manifest.to_json` canonical:
the same manifest always serialises to the same bytes.

Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum

from bsi.cryptex import document as doc
from bsi.cryptex.errors import InvalidBundle, InvalidSupplement
from bsi.domain.cves import parse_cve_id, score_cvss
from bsi.domain.prerequisite import (
    BASE_FIELDS,
    PackageVersion,
    Prerequisite,
    dump_base,
    is_sha256,
    read_base,
)
from bsi.domain.supplement_fields import SupplementFields
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput
from bsi.strict import quote, read_json

FORMAT = "bsi-cryptex/1"
FORMAT_DELTA = "bsi-cryptex/2"
"""Written only when a file travels as a binary delta: an agent that cannot rebuild
files from deltas refuses the format by name instead of staging what it misreads."""
FORMATS = (FORMAT, FORMAT_DELTA)

DELTA_ENCODING = "bsdiff4"
"""The one delta encoding: Colin Percival's BSDIFF40 (bz2 blocks), as PyPI's ``bsdiff4``
writes it and ``bspatch`` reads it (see :mod:`bsi.cryptex.delta` for why)."""
MAX_DELTA_BYTES = 256 << 20
"""Largest file carried as a delta: it is rebuilt in memory, base and result together."""

# The bundle around the manifest: a tar whose first member is the manifest
# and whose other members are ``files/<path>``, one per payload.
MANIFEST_MEMBER = "manifest.json"
PAYLOAD_PREFIX = "files/"
MAX_MANIFEST_BYTES = 32 << 20
TAR_BLOCK = 512

MAX_ID = 2**32 - 2  # (uid_t)-1 means "leave unchanged" to chown(2), so it is nobody's id
MAX_FILE_SIZE = 2**63 - 1
MAX_TIMEOUT = 3600
_MAX_PATH_BYTES = 4095  # PATH_MAX less the terminating NUL
_MAX_NAME_BYTES = 255

_MODE = re.compile(r"[0-7]{4}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_UNIT = re.compile(
    r"[A-Za-z0-9:_.\\@-]{1,240}"
    r"\.(service|socket|target|timer|path|mount|automount|swap|slice|scope|device)"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Action(StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


# -- checks shared with the spec and the builder ---------------------------


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file in a manifest, or ``None`` when it can.

    A manifest path is relative to the device root and written one way only,
    so that two entries cannot name one file and none can reach outside the
    root. Control characters are refused too: no real file needs them, and
    they would let a path forge lines in what :func:`describe` prints.
    """
    if not path:
        return "is empty"
    if _CONTROL.search(path):
        return "contains a control character"
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(encoded) > _MAX_PATH_BYTES:
        return f"is longer than {_MAX_PATH_BYTES} bytes"
    if path.startswith("/"):
        return "is absolute; manifest paths are relative to the device root"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out with '..'"
    if "" in parts or "." in parts:
        return "is not normalised (an empty or '.' part)"
    if any(len(part.encode("utf-8")) > _MAX_NAME_BYTES for part in parts):
        return f"has a part longer than {_MAX_NAME_BYTES} bytes"
    return None


def check_path(path: str, *, where: str = "") -> str:
    problem = path_problem(path)
    if problem:
        raise InvalidBundle(f"path {path!r} {problem}", where=where)
    return path


def check_name(name: str, *, what: str, where: str = "") -> str:
    """A platform or component name: short, and safe in a file name or a log line."""
    if not _NAME.fullmatch(name):
        raise InvalidBundle(
            f"{what} {name!r} is not a valid name",
            where=where,
            hint="use letters, digits, '.', '_', '+' and '-', starting with a letter or digit",
        )
    return name


def format_mode(mode: int) -> str:
    return f"{mode:04o}"


def parse_mode(text: str) -> int:
    if not _MODE.fullmatch(text):
        raise InvalidInput(
            f"{text!r} is not a file mode", hint="expected four octal digits, e.g. '0644'"
        )
    return int(text, 8)


def _check_sha256(value: str, *, field: str, where: str) -> None:
    if not is_sha256(value):
        raise InvalidBundle(f"{field} {value!r} is not 64 lower-case hex digits", where=where)


def _check_range(value: int, *, field: str, where: str, high: int) -> None:
    if not 0 <= value <= high:
        raise InvalidBundle(f"{field} {value} is outside 0..{high}", where=where)


def _check_argv(argv: tuple[str, ...], *, field: str, where: str) -> None:
    if not argv or not argv[0]:
        raise InvalidBundle(f"{field} {list(argv)!r} has no program to run", where=where)
    if any("\0" in arg for arg in argv):
        raise InvalidBundle(f"{field} {list(argv)!r} contains a NUL character", where=where)


def _first_duplicate(values: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


# -- the manifest ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delta:
    """How a changed file travels when it travels as a binary delta.

    The delta applies to the bytes whose SHA-256 is the entry's
    ``base_sha256`` and rebuilds the ``size`` bytes whose SHA-256 is the
    entry's ``sha256``; ``size`` and ``sha256`` here are the delta member's
    own, checked before it is applied. ``encoding`` is :data:`DELTA_ENCODING`.
    """

    size: int
    sha256: str
    encoding: str = DELTA_ENCODING

    def __post_init__(self) -> None:
        where = "delta"
        if self.encoding != DELTA_ENCODING:
            raise InvalidBundle(
                f"encoding {self.encoding!r} is not one this bsi reads",
                where=where,
                hint=f"expected {DELTA_ENCODING!r}; a newer bsi may read it",
            )
        _check_range(self.size, field="size", where=where, high=MAX_DELTA_BYTES)
        _check_sha256(self.sha256, field="sha256", where=where)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file the supplement touches, by its path under the device root.

    ``sha256`` is the content the device ends up with (``add``, ``change``);
    ``base_sha256`` the prerequisite build's content it starts from
    (``change``, ``remove``), so that a device whose file has drifted from
    its build is caught before anything is replaced. A removal records
    nothing else: the device keeps the original itself, for rollback.

    ``delta`` (``change`` only) says the new content travels as a binary
    delta against the ``base_sha256`` bytes; without it the file travels whole.
    """

    path: str
    action: Action
    sha256: str | None = None
    base_sha256: str | None = None
    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    delta: Delta | None = None

    def __post_init__(self) -> None:
        check_path(self.path)
        where = f"file {self.path!r}"
        if not isinstance(self.action, Action):
            raise InvalidBundle(f"action {self.action!r} is not add, change or remove", where=where)
        carries_payload = self.action is not Action.REMOVE
        for field, value, wanted in (
            ("sha256", self.sha256, carries_payload),
            ("base_sha256", self.base_sha256, self.action is not Action.ADD),
            ("size", self.size, carries_payload),
            ("mode", self.mode, carries_payload),
            ("uid", self.uid, carries_payload),
            ("gid", self.gid, carries_payload),
        ):
            if wanted and value is None:
                raise InvalidBundle(f"{self.action} needs {field}", where=where)
            if not wanted and value is not None:
                raise InvalidBundle(f"{self.action} must not have {field} ({value!r})", where=where)
        if self.sha256 is not None:
            _check_sha256(self.sha256, field="sha256", where=where)
        if self.base_sha256 is not None:
            _check_sha256(self.base_sha256, field="base_sha256", where=where)
        if self.size is not None:
            _check_range(self.size, field="size", where=where, high=MAX_FILE_SIZE)
        if self.mode is not None:
            _check_range(self.mode, field="mode", where=where, high=0o7777)
        for field, owner in (("uid", self.uid), ("gid", self.gid)):
            if owner is not None:
                _check_range(owner, field=field, where=where, high=MAX_ID)
        if self.delta is not None:
            if self.action is not Action.CHANGE:
                raise InvalidBundle(
                    f"{self.action} must not have a delta: only a changed file has a base",
                    where=where,
                )
            if (self.size or 0) > MAX_DELTA_BYTES:
                raise InvalidBundle(
                    f"size {self.size} is too large to rebuild from a delta "
                    f"(at most {MAX_DELTA_BYTES})",
                    where=where,
                    hint="a file this large travels whole",
                )

    @property
    def has_payload(self) -> bool:
        return self.action is not Action.REMOVE

    @property
    def member_size(self) -> int:
        """Bytes of this file's member in the bundle: the delta's, or the whole file's."""
        return self.delta.size if self.delta else self.size or 0

    @property
    def member_sha256(self) -> str | None:
        """SHA-256 of this file's member in the bundle: the delta's, or the whole file's."""
        return self.delta.sha256 if self.delta else self.sha256

    def whole(self) -> FileEntry:
        """This entry as it is once rebuilt: the same file, travelling whole."""
        return replace(self, delta=None)

    @property
    def member(self) -> str:
        """The tar member that carries this file's new content."""
        return PAYLOAD_PREFIX + self.path


@dataclass(frozen=True, slots=True)
class Relaunch:
    """What must restart to use a component's new files.

    ``processes`` are names as in ``/proc/<pid>/comm`` or absolute executable
    paths; ``command`` is run (argv, no shell) after the units and processes
    have been handled, for software that reloads some other way.
    """

    systemd: tuple[str, ...] = ()
    processes: tuple[str, ...] = ()
    command: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for unit in self.systemd:
            if not _UNIT.fullmatch(unit):
                raise InvalidBundle(
                    f"{unit!r} is not a systemd unit name",
                    where="relaunch",
                    hint="write the full name with its type, e.g. 'nginx.service'",
                )
        for process in self.processes:
            problem = (
                path_problem(process[1:]) if process.startswith("/") else _process_problem(process)
            )
            if problem:
                raise InvalidBundle(f"process {process!r} {problem}", where="relaunch")
        for field, values in (("systemd", self.systemd), ("processes", self.processes)):
            duplicate = _first_duplicate(values)
            if duplicate is not None:
                raise InvalidBundle(f"{field} lists {duplicate!r} twice", where="relaunch")
        if self.command:
            _check_argv(self.command, field="command", where="relaunch")

    def describe(self) -> str:
        parts = [*self.systemd, *self.processes]
        if self.command:
            parts.append(f"run {' '.join(self.command)}")
        return ", ".join(parts) if parts else "nothing"


def _process_problem(name: str) -> str | None:
    if not name or _CONTROL.search(name) or "/" in name:
        return "is neither a process name nor an absolute executable path"
    if len(name.encode("utf-8")) > _MAX_NAME_BYTES:
        return f"is longer than {_MAX_NAME_BYTES} bytes"
    return None


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A command (argv, no shell) that exits 0 once the patched software works."""

    command: tuple[str, ...]
    timeout: int = 30

    def __post_init__(self) -> None:
        _check_argv(self.command, field="command", where="health_check")
        if not 1 <= self.timeout <= MAX_TIMEOUT:
            raise InvalidBundle(
                f"timeout {self.timeout} is outside 1..{MAX_TIMEOUT} seconds", where="health_check"
            )


@dataclass(frozen=True, slots=True)
class CveEntry:
    """A CVE the supplement fixes, with its CVSS 3.x vector where one is known.

    Score and severity are stored for readers without a CVSS library, and
    checked against the vector on construction so that they cannot disagree.
    """

    id: str
    cvss: str | None = None
    base_score: float | None = None
    severity: str | None = None

    @classmethod
    def scored(cls, cve_id: str, vector: str | None) -> CveEntry:
        """The entry for ``cve_id``, scored from ``vector`` alone."""
        return cls(*_scored(cve_id, vector))

    def __post_init__(self) -> None:
        expected = _scored(self.id, self.cvss)
        if (self.id, self.cvss, self.base_score, self.severity) != expected:
            raise InvalidBundle(
                f"id, vector, score and severity {self.id!r}, {self.cvss!r}, "
                f"{self.base_score!r}, {self.severity!r} disagree with the canonical "
                f"{expected[0]!r}, {expected[1]!r}, {expected[2]!r}, {expected[3]!r}",
                where=f"CVE {self.id!r}",
            )


def _scored(cve_id: str, vector: str | None) -> tuple[str, str | None, float | None, str | None]:
    try:
        canonical_id = parse_cve_id(cve_id)
        if vector is None:
            return (canonical_id, None, None, None)
        score = score_cvss(vector)
    except InvalidInput as error:
        raise InvalidBundle(error.message, where=f"CVE {cve_id!r}", hint=error.hint) from None
    return (canonical_id, score.vector, score.base_score, score.severity)


@dataclass(frozen=True, slots=True)
class Component:
    """A named set of files with what must relaunch to use them."""

    name: str
    files: tuple[FileEntry, ...]
    relaunch: Relaunch = Relaunch()

    def __post_init__(self) -> None:
        check_name(self.name, what="component")
        where = f"component {self.name!r}"
        if not self.files:
            raise InvalidBundle("has no files", where=where)
        object.__setattr__(self, "files", tuple(sorted(self.files, key=lambda f: f.path)))
        duplicate = _first_duplicate(f.path for f in self.files)
        if duplicate is not None:
            raise InvalidBundle(f"lists {duplicate!r} twice", where=where)


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything a device needs to know about one supplement's cryptex.

    ``prerequisite`` is the base it patches (a build, installed package
    versions or file digests) and ``fixed_in`` the package versions that fold
    it in; see :mod:`bsi.domain.prerequisite`.
    """

    platform: str
    product_version: ProductVersion
    extra_version: ExtraVersion
    prerequisite: Prerequisite
    supplemental_build: Build
    components: tuple[Component, ...]
    health_check: HealthCheck | None = None
    cves: tuple[CveEntry, ...] = ()
    fixed_in: tuple[PackageVersion, ...] = ()
    setuid: tuple[str, ...] = ()
    """Files the publisher declared set-user-ID/set-group-ID (the spec's ``setuid``), by
    path. Signed with the rest, so a device stages such a bit only where it is declared
    (:func:`bsi.cryptex.verify.setid_problem`); every path is a file the bundle carries."""

    def __post_init__(self) -> None:
        check_name(self.platform, what="platform")
        object.__setattr__(self, "setuid", tuple(sorted(set(self.setuid))))
        if self.supplemental_build == self.prerequisite.build:
            raise InvalidBundle(
                f"supplemental build {str(self.supplemental_build)!r} is the prerequisite build",
                hint="a supplement needs a build of its own, e.g. '25D771280a' on '25D2128'",
            )
        if not self.components:
            raise InvalidBundle("the supplement changes no files")
        object.__setattr__(self, "components", tuple(sorted(self.components, key=lambda c: c.name)))
        object.__setattr__(self, "cves", tuple(sorted(self.cves, key=lambda c: c.id)))
        for what, values in (
            ("component", (c.name for c in self.components)),
            ("CVE", (c.id for c in self.cves)),
        ):
            duplicate = _first_duplicate(values)
            if duplicate is not None:
                raise InvalidBundle(f"{what} {duplicate!r} is listed twice")
        self._check_paths()
        self._check_file_prerequisite()
        carried = {f.path for f in self.payloads}
        for path in self.setuid:
            if path not in carried:
                raise InvalidBundle(
                    f"declares /{path} set-user-ID/set-group-ID but carries no such file",
                    where="setuid",
                    hint="a declaration names a file the supplement adds or changes",
                )

    def _check_file_prerequisite(self) -> None:
        """A file-digest prerequisite must agree with the base digests the manifest records."""
        recorded = {f.path: f.base_sha256 for c in self.components for f in c.files}
        for digest in self.prerequisite.files:
            base = recorded.get(digest.path)
            if base is not None and base != digest.sha256:
                raise InvalidBundle(
                    f"the prerequisite names /{digest.path} with sha256 {digest.sha256}, but the "
                    f"base tree's is {base}",
                    hint="the prerequisite's files are the base the supplement patches",
                )

    def _check_paths(self) -> None:
        owners: dict[str, str] = {}
        for component in self.components:
            for entry in component.files:
                if entry.path in owners:
                    raise InvalidBundle(
                        f"file {entry.path!r} is in both component {owners[entry.path]!r} "
                        f"and component {component.name!r}"
                    )
                owners[entry.path] = component.name
        for path in owners:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in owners:
                    raise InvalidBundle(
                        f"{parent!r} is listed as a file and also as the directory of {path!r}",
                        hint="a supplement cannot turn a file into a directory or back",
                    )

    # -- views -------------------------------------------------------------

    @property
    def prerequisite_build(self) -> Build | None:
        return self.prerequisite.build

    @property
    def supplement_version(self) -> SupplementVersion:
        return SupplementVersion(self.product_version, self.extra_version)

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """Every file entry of every component, by path."""
        return tuple(sorted((f for c in self.components for f in c.files), key=lambda f: f.path))

    @property
    def payloads(self) -> tuple[FileEntry, ...]:
        """The entries whose new content travels in the bundle, in bundle order."""
        return tuple(f for f in self.files if f.has_payload)

    @property
    def payload_bytes(self) -> int:
        """Bytes of new content once every file is rebuilt (what staging writes)."""
        return sum(f.size or 0 for f in self.payloads)

    @property
    def member_bytes(self) -> int:
        """Bytes the payload members take in the bundle's tar (deltas as they travel)."""
        return sum(f.member_size for f in self.payloads)

    @property
    def deltas(self) -> tuple[FileEntry, ...]:
        """The entries whose new content travels as a delta."""
        return tuple(f for f in self.payloads if f.delta is not None)

    def whole(self) -> Manifest:
        """The manifest of the rebuilt files: the same supplement, every file whole.

        What the agent stages once each delta has been applied and checked,
        so that nothing after staging needs to know how the files travelled.
        """
        return replace(
            self,
            components=tuple(
                replace(c, files=tuple(f.whole() for f in c.files)) for c in self.components
            ),
        )

    def supplement_fields(self, *, posted: date | None = None) -> SupplementFields:
        """The supplement's identity as bsi's catalogue and TUF ``custom`` metadata sign it
        (:mod:`bsi.domain.supplement_fields`), ``posted`` the day it is published.

        Publishing derives these from the bundle's own manifest, and the agent
        compares them before download, so the signed metadata and the content
        it vouches for cannot describe two different supplements. Raises
        :class:`InvalidBundle` for a platform no device would report.
        """
        try:
            return SupplementFields(
                platform=self.platform,
                version=self.supplement_version,
                prerequisite=self.prerequisite,
                supplemental_build=self.supplemental_build,
                fixed_in=self.fixed_in,
                cves=tuple(cve.id for cve in self.cves),
                cvss=tuple(sorted((cve.id, cve.cvss) for cve in self.cves if cve.cvss)),
                posted=posted,
            )
        except InvalidInput as error:
            raise InvalidBundle(error.message, where="manifest", hint=error.hint) from None

    def display(self) -> str:
        return (
            f"{self.platform} {self.supplement_version} ({self.supplemental_build}) "
            f"on {self.product_version} ({self.prerequisite.build or self.prerequisite.display()})"
        )

    # -- JSON --------------------------------------------------------------

    def to_json(self) -> bytes:
        """Canonical JSON: sorted keys, no spaces, ASCII only — one text per manifest."""
        document = {
            "format": FORMAT_DELTA if self.deltas else FORMAT,
            "platform": self.platform,
            "product_version": str(self.product_version),
            "extra_version": str(self.extra_version),
            **dump_base(self.prerequisite, self.fixed_in),
            "supplemental_build": str(self.supplemental_build),
            "components": [_dump_component(c) for c in self.components],
            "health_check": (
                {"command": list(self.health_check.command), "timeout": self.health_check.timeout}
                if self.health_check
                else None
            ),
            "cves": [_dump_cve(c) for c in self.cves],
        }
        if self.setuid:  # absent when empty: manifests without such files read as before
            document["setuid"] = list(self.setuid)
        text = json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
        return text.encode("ascii")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """The manifest in ``data``, or :class:`InvalidBundle` naming the first fault.

        Duplicate keys are refused — JSON parsers disagree on which one wins,
        so a signer and a device could read different manifests — and so are
        NaN, unknown fields and a format this bsi does not know.
        """
        document = read_json(data, source="manifest", error=InvalidBundle, unique_keys=True)
        return _read_manifest(document)


def _without_nulls(document: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in document.items() if value is not None}


def _dump_component(component: Component) -> dict[str, object]:
    relaunch = component.relaunch
    return {
        "name": component.name,
        "relaunch": {
            "systemd": list(relaunch.systemd),
            "processes": list(relaunch.processes),
            "command": list(relaunch.command),
        },
        "files": [_dump_file(f) for f in component.files],
    }


def _dump_file(entry: FileEntry) -> dict[str, object]:
    return _without_nulls(
        {
            "path": entry.path,
            "action": str(entry.action),
            "sha256": entry.sha256,
            "base_sha256": entry.base_sha256,
            "size": entry.size,
            "mode": None if entry.mode is None else format_mode(entry.mode),
            "uid": entry.uid,
            "gid": entry.gid,
            "delta": (
                {
                    "encoding": entry.delta.encoding,
                    "size": entry.delta.size,
                    "sha256": entry.delta.sha256,
                }
                if entry.delta
                else None
            ),
        }
    )


def _dump_cve(cve: CveEntry) -> dict[str, object]:
    return _without_nulls(
        {"id": cve.id, "cvss": cve.cvss, "base_score": cve.base_score, "severity": cve.severity}
    )


def _read_manifest(document: object) -> Manifest:
    root = doc.fields(
        document,
        "manifest",
        required=(
            "format",
            "platform",
            "product_version",
            "extra_version",
            "supplemental_build",
            "components",
        ),
        optional=("health_check", "cves", "setuid", *BASE_FIELDS),
    )
    prerequisite, fixed_in = doc.parsed_document(read_base, root, "")
    if root["format"] not in FORMATS:
        raise InvalidBundle(
            f"format {quote(root['format'])} is not one this bsi reads",
            where="manifest",
            hint=f"expected one of {', '.join(map(repr, FORMATS))}; a newer bsi may read it",
        )
    manifest = Manifest(
        platform=doc.text(root["platform"], "platform"),
        product_version=doc.parsed(
            ProductVersion.parse, root["product_version"], "product_version"
        ),
        extra_version=doc.parsed(ExtraVersion.parse, root["extra_version"], "extra_version"),
        prerequisite=prerequisite,
        fixed_in=fixed_in,
        supplemental_build=doc.parsed(
            Build.parse, root["supplemental_build"], "supplemental_build"
        ),
        components=tuple(
            _read_component(value, f"components[{index}]")
            for index, value in enumerate(doc.items(root["components"], "components"))
        ),
        health_check=(
            read_health_check(root["health_check"], "health_check")
            if "health_check" in root
            else None
        ),
        cves=tuple(
            _read_cve(value, f"cves[{index}]")
            for index, value in enumerate(doc.items(root.get("cves", []), "cves"))
        ),
        setuid=tuple(
            check_path(path, where=f"setuid[{index}]")
            for index, path in enumerate(doc.texts(root.get("setuid", []), "setuid"))
        ),
    )
    written = FORMAT_DELTA if manifest.deltas else FORMAT
    if root["format"] != written:
        raise InvalidBundle(
            f"format {quote(root['format'])} does not match its files: a manifest "
            f"{'with' if manifest.deltas else 'without'} deltas is {written!r}",
            where="manifest",
        )
    return manifest


def _read_component(value: object, where: str) -> Component:
    fields = doc.fields(value, where, required=("name", "files"), optional=("relaunch",))
    return Component(
        name=doc.text(fields["name"], f"{where}.name"),
        files=tuple(
            _read_file(item, f"{where}.files[{index}]")
            for index, item in enumerate(doc.items(fields["files"], f"{where}.files"))
        ),
        relaunch=read_relaunch(fields.get("relaunch", {}), f"{where}.relaunch"),
    )


def _read_file(value: object, where: str) -> FileEntry:
    fields = doc.fields(
        value,
        where,
        required=("path", "action"),
        optional=("sha256", "base_sha256", "size", "mode", "uid", "gid", "delta"),
    )
    action = doc.text(fields["action"], f"{where}.action")
    if action not in set(Action):
        raise InvalidBundle(
            f"{action!r} is not an action", where=f"{where}.action", hint="add, change or remove"
        )

    def number(key: str, high: int) -> int | None:
        return (
            doc.integer(fields[key], f"{where}.{key}", low=0, high=high) if key in fields else None
        )

    def text(key: str) -> str | None:
        return doc.text(fields[key], f"{where}.{key}") if key in fields else None

    return FileEntry(
        path=doc.text(fields["path"], f"{where}.path"),
        action=Action(action),
        sha256=text("sha256"),
        base_sha256=text("base_sha256"),
        size=number("size", MAX_FILE_SIZE),
        mode=doc.parsed(parse_mode, fields["mode"], f"{where}.mode") if "mode" in fields else None,
        uid=number("uid", MAX_ID),
        gid=number("gid", MAX_ID),
        delta=_read_delta(fields["delta"], f"{where}.delta") if "delta" in fields else None,
    )


def _read_delta(value: object, where: str) -> Delta:
    fields = doc.fields(value, where, required=("encoding", "size", "sha256"), optional=())
    return Delta(
        encoding=doc.text(fields["encoding"], f"{where}.encoding"),
        size=doc.integer(fields["size"], f"{where}.size", low=0, high=MAX_DELTA_BYTES),
        sha256=doc.text(fields["sha256"], f"{where}.sha256"),
    )


def read_relaunch(value: object, where: str) -> Relaunch:
    """A relaunch object; the spec writes it the same way."""
    fields = doc.fields(value, where, required=(), optional=("systemd", "processes", "command"))
    return Relaunch(
        systemd=doc.texts(fields.get("systemd", []), f"{where}.systemd"),
        processes=doc.texts(fields.get("processes", []), f"{where}.processes"),
        command=doc.texts(fields.get("command", []), f"{where}.command"),
    )


def read_health_check(value: object, where: str) -> HealthCheck:
    """A health check object; the spec writes it the same way."""
    fields = doc.fields(value, where, required=("command",), optional=("timeout",))
    return HealthCheck(
        command=doc.texts(fields["command"], f"{where}.command"),
        timeout=doc.integer(fields.get("timeout", 30), f"{where}.timeout", low=1, high=MAX_TIMEOUT),
    )


def _read_cve(value: object, where: str) -> CveEntry:
    fields = doc.fields(value, where, required=("id",), optional=("cvss", "base_score", "severity"))
    return CveEntry(
        id=doc.text(fields["id"], f"{where}.id"),
        cvss=doc.text(fields["cvss"], f"{where}.cvss") if "cvss" in fields else None,
        base_score=(
            doc.number(fields["base_score"], f"{where}.base_score")
            if "base_score" in fields
            else None
        ),
        severity=doc.text(fields["severity"], f"{where}.severity")
        if "severity" in fields
        else None,
    )


# -- cumulative letters ----------------------------------------------------


def cumulative_check(
    previous: Manifest, new: Manifest, *, allow_dropping: bool = False
) -> tuple[str, ...]:
    """Refuse ``new`` unless it can supersede ``previous``; return the paths it drops.

    A later letter replaces the earlier one on devices that have it, so it
    must be for the same prerequisite build and must still patch every file
    the earlier letter patched: a path it leaves out goes back to the
    prerequisite build's content on those devices, silently undoing a fix.
    That is refused unless ``allow_dropping`` says it is meant; the dropped
    paths are returned either way so that the caller can show them.
    """
    if (new.platform, new.product_version, new.prerequisite) != (
        previous.platform,
        previous.product_version,
        previous.prerequisite,
    ):
        raise InvalidSupplement(
            f"{new.display()} is not for the same release as {previous.display()}",
            hint="letters are cumulative only on one prerequisite build; "
            "a new prerequisite build starts again at (a)",
        )
    if not new.extra_version > previous.extra_version:
        raise InvalidSupplement(
            f"extra version {new.extra_version} is not later than {previous.extra_version}",
            hint=f"the letter after {previous.extra_version} is "
            f"({chr(ord(previous.extra_version.letter) + 1)})",
        )
    if new.supplemental_build == previous.supplemental_build:
        raise InvalidSupplement(
            f"supplemental build {str(new.supplemental_build)!r} is already "
            f"{previous.supplement_version}'s",
            hint="each letter needs a build of its own",
        )
    patched_now = {f.path for f in new.files}
    dropped = tuple(f.path for f in previous.files if f.path not in patched_now)
    if dropped and not allow_dropping:
        shown = ", ".join(repr(p) for p in dropped[:10])
        more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
        raise InvalidSupplement(
            f"{new.supplement_version} no longer patches {len(dropped)} file(s) that "
            f"{previous.supplement_version} patched: {shown}{more}; devices would go back "
            "to the prerequisite build's content for them",
            hint="patch them again, or allow it explicitly "
            "(allow_dropping=True, 'bsi supplement build --allow-dropping')",
        )
    return dropped


# -- for people ------------------------------------------------------------


def human_size(size: int) -> str:
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def describe(manifest: Manifest) -> list[str]:
    """What installing the supplement would do, one line per fact, for a terminal."""
    lines = [f"supplement {manifest.display()}"]
    for component in manifest.components:
        lines.append(
            f"component {component.name}: {len(component.files)} file(s), "
            f"relaunch {component.relaunch.describe()}"
        )
    for component in manifest.components:
        tag = f"[component {component.name}, relaunch {component.relaunch.describe()}]"
        for entry in component.files:
            if entry.has_payload:
                travels = (
                    f"{entry.delta.encoding} delta of {human_size(entry.delta.size)} "
                    f"against sha256 {entry.base_sha256}"
                    if entry.delta
                    else "whole"
                )
                lines.append(
                    f"{entry.action} /{entry.path} (mode {format_mode(entry.mode or 0)}, "
                    f"owner {entry.uid}:{entry.gid}, {human_size(entry.size or 0)}, "
                    f"sha256 {entry.sha256}; travels {travels}) {tag}"
                )
            else:
                lines.append(f"remove /{entry.path} (was sha256 {entry.base_sha256}) {tag}")
    if manifest.health_check:
        check = manifest.health_check
        lines.append(f"health check: {' '.join(check.command)} (timeout {check.timeout} s)")
    for cve in manifest.cves:
        score = f"{cve.base_score} {cve.severity} {cve.cvss}" if cve.cvss else "no CVSS vector"
        lines.append(f"fixes {cve.id}: {score}")
    return lines
