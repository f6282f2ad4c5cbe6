"""The publisher's repository on disk: where each file lives and how it is read.

Layout of a repository directory::

    metadata/           served as is: N.root.json, N.targets.json, N.snapshot.json,
                        timestamp.json (consistent snapshots: every version kept)
    targets/            served as is: <dir>/<sha256>.<basename> bundles
    staged/             NOT served: new root/targets versions waiting for offline
                        signatures (root.json, targets.json)
    bsi-trust.json      NOT served: repository settings (expiry periods)

Only ``metadata/`` and ``targets/`` are published (by bsi's server or any static
host or CDN). The current state is found the way a client finds it: from
``timestamp.json`` to the snapshot version it pins, to the targets version that
snapshot pins; root is the highest ``N.root.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tuf.api.exceptions import RepositoryError
from tuf.api.serialization import DeserializationError, SerializationError
from tuf.api.serialization.json import JSONSerializer

from bsi.strict import read_json
from bsi.trust import _fs
from bsi.trust._tuf import Metadata, Root, Snapshot, Targets, Timestamp
from bsi.trust.errors import RepositoryExists, RepositoryStateError
from bsi.trust.model import (
    DEFAULT_EXPIRIES,
    ROOT,
    SNAPSHOT,
    TARGETS,
    TIMESTAMP,
    Expiries,
)

METADATA_DIR = "metadata"
TARGETS_DIR = "targets"
STAGED_DIR = "staged"
SETTINGS_FILE = "bsi-trust.json"

_VERSIONED = re.compile(r"^([1-9][0-9]*)\.(root|targets|snapshot)\.json$")

S = TypeVar("S", Root, Timestamp, Snapshot, Targets)


@dataclass(frozen=True)
class RepoLayout:
    """Paths of one repository directory."""

    base: Path

    @property
    def metadata(self) -> Path:
        """Served metadata directory."""
        return self.base / METADATA_DIR

    @property
    def targets(self) -> Path:
        """Served bundle directory."""
        return self.base / TARGETS_DIR

    @property
    def staged(self) -> Path:
        """Unserved directory of versions waiting for signatures."""
        return self.base / STAGED_DIR

    @property
    def settings(self) -> Path:
        """Unserved repository settings file."""
        return self.base / SETTINGS_FILE

    def published(self, role: str, version: int) -> Path:
        """Path of a published metadata version (``timestamp.json`` is never versioned)."""
        if role == TIMESTAMP:
            return self.metadata / "timestamp.json"
        return self.metadata / f"{version}.{role}.json"

    def staged_path(self, role: str) -> Path:
        """Path of the staged version of ``role``."""
        return self.staged / f"{role}.json"


def serialize(md: Metadata[Any]) -> bytes:
    """Metadata as the repository writes it (indented JSON)."""
    try:
        return md.to_bytes(JSONSerializer(compact=False))
    except SerializationError as exc:  # pragma: no cover - our own objects serialize
        raise RepositoryStateError(f"cannot serialize {md.signed.type} metadata: {exc}") from exc


def parse(data: bytes, kind: type[S], source: str) -> Metadata[S]:
    """``data`` as metadata of type ``kind``, or RepositoryStateError naming ``source``."""
    try:
        md: Metadata[S] = Metadata.from_bytes(data)
    except (DeserializationError, RepositoryError, ValueError) as exc:
        raise RepositoryStateError(f"{source} is not valid TUF metadata: {exc}") from None
    if not isinstance(md.signed, kind):
        raise RepositoryStateError(
            f"{source} holds {md.signed.type} metadata, expected {kind.type}"
        )
    return md


def read(path: Path, kind: type[S]) -> Metadata[S]:
    """Metadata of type ``kind`` from ``path``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RepositoryStateError(
            f"{str(path)!r} is missing", hint="is this a repository made by 'bsi keys init'?"
        ) from None
    except OSError as exc:
        raise RepositoryStateError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return parse(data, kind, repr(str(path)))


def root_versions(layout: RepoLayout) -> list[int]:
    """Published root versions, ascending."""
    if not layout.metadata.is_dir():
        return []
    versions = []
    for entry in layout.metadata.iterdir():
        match = _VERSIONED.match(entry.name)
        if match and match.group(2) == ROOT:
            versions.append(int(match.group(1)))
    return sorted(versions)


def latest_root(layout: RepoLayout) -> Metadata[Root]:
    """The highest published root version."""
    versions = root_versions(layout)
    if not versions:
        raise RepositoryStateError(
            f"no root metadata in {str(layout.metadata)!r}",
            hint="create the repository with 'bsi keys init'",
        )
    return read(layout.published(ROOT, versions[-1]), Root)


@dataclass(frozen=True)
class RepoState:
    """The published state of a repository, as a client would resolve it."""

    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]


def current_state(layout: RepoLayout) -> RepoState:
    """Root, and timestamp -> snapshot -> targets as the timestamp pins them."""
    root = latest_root(layout)
    timestamp = read(layout.published(TIMESTAMP, 0), Timestamp)
    snapshot_version = timestamp.signed.snapshot_meta.version
    snapshot = read(layout.published(SNAPSHOT, snapshot_version), Snapshot)
    targets_meta = snapshot.signed.meta.get(f"{TARGETS}.json")
    if targets_meta is None:
        raise RepositoryStateError(f"snapshot v{snapshot_version} does not list targets.json")
    targets = read(layout.published(TARGETS, targets_meta.version), Targets)
    return RepoState(root=root, timestamp=timestamp, snapshot=snapshot, targets=targets)


def read_staged(layout: RepoLayout, role: str, kind: type[S]) -> Metadata[S] | None:
    """The staged version of ``role``, or None."""
    path = layout.staged_path(role)
    if not path.exists():
        return None
    return read(path, kind)


def write_staged(layout: RepoLayout, md: Metadata[Any]) -> Path:
    """Save a staged (possibly partly signed) version."""
    path = layout.staged_path(md.signed.type)
    _fs.write_atomic(path, serialize(md), mode=0o644)
    return path


def remove_staged(layout: RepoLayout, role: str) -> None:
    """Drop the staged version of ``role`` (after it was published)."""
    layout.staged_path(role).unlink(missing_ok=True)


def read_settings(layout: RepoLayout) -> Expiries:
    """The repository's expiry periods (defaults if it has no settings file)."""
    try:
        raw = read_json(
            layout.settings.read_bytes(),
            source=repr(str(layout.settings)),
            error=RepositoryStateError,
        )
    except FileNotFoundError:
        return DEFAULT_EXPIRIES
    except OSError as exc:
        raise RepositoryStateError(f"cannot read {str(layout.settings)!r}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("expires", {}), dict):
        raise RepositoryStateError(f"{str(layout.settings)!r} is not a bsi trust settings file")
    return Expiries.from_dict(raw.get("expires", {}))


def write_settings(layout: RepoLayout, expires: Expiries) -> None:
    """Record the repository's expiry periods."""
    data = json.dumps({"expires": expires.to_dict()}, indent=2, sort_keys=True) + "\n"
    _fs.write_atomic(layout.settings, data.encode(), mode=0o644)


def ensure_empty(layout: RepoLayout) -> None:
    """Refuse to create a repository over an existing one."""
    if layout.metadata.exists() and any(layout.metadata.iterdir()):
        raise RepositoryExists(
            f"{str(layout.metadata)!r} already holds metadata",
            hint="bsi never overwrites a repository; choose an empty directory",
        )
