"""The pure core of the publisher's side: new metadata versions and signature counts.

Nothing here reads a file, a clock or a key: time is a parameter, keys are
public :class:`~securesystemslib.signer.Key` objects, and every function returns
a new unsigned :class:`~tuf.api.metadata.Metadata` for the edge
(:mod:`bsi.trust.repository`) to sign and write. That keeps the TUF rules the
repository follows (versions only grow, snapshot pins targets by version, length
and hash, timestamp pins snapshot the same way, root changes are signed by the
old and the new root keys) in one place that tests can read.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bsi.domain.supplement_fields import CUSTOM_NAMESPACE, DEVICE_FIELDS
from bsi.errors import InvalidInput
from bsi.trust._tuf import (
    Key,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

ROOT = Root.type
TARGETS = Targets.type
SNAPSHOT = Snapshot.type
TIMESTAMP = Timestamp.type
TOP_LEVEL_ROLES: tuple[str, ...] = (ROOT, TARGETS, SNAPSHOT, TIMESTAMP)
#: Roles whose keys can stay offline: their metadata changes only when a person signs.
OFFLINE_ROLES: tuple[str, ...] = (ROOT, TARGETS)
#: Roles the server re-signs unattended (fresh snapshot and timestamp).
ONLINE_ROLES: tuple[str, ...] = (SNAPSHOT, TIMESTAMP)


HASH_ALGORITHM = "sha256"
CRYPTEX_SUFFIX = ".cryptex"


def target_name(platform: str, supplemental_build: object) -> str:
    """The TUF target name a supplement's cryptex is signed under and fetched by:
    ``<platform>/<supplemental build>.cryptex`` (``debian/25D771280a.cryptex``)."""
    return f"{platform}/{supplemental_build}{CRYPTEX_SUFFIX}"


@dataclass(frozen=True)
class Expiries:
    """How long each role's metadata stays valid after it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for role in TOP_LEVEL_ROLES:
            if self.for_role(role) <= timedelta(0):
                raise InvalidInput(f"expiry of {role} must be positive, got {self.for_role(role)}")

    def for_role(self, role: str) -> timedelta:
        """The validity period of ``role``."""
        period: timedelta = getattr(self, role)
        return period

    def to_dict(self) -> dict[str, int]:
        """Seconds per role, for the repository's settings file."""
        return {role: int(self.for_role(role).total_seconds()) for role in TOP_LEVEL_ROLES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Expiries:
        """Read :meth:`to_dict` output back; missing roles keep their default."""
        periods: dict[str, timedelta] = {}
        for role in TOP_LEVEL_ROLES:
            if role in data:
                seconds = data[role]
                if not isinstance(seconds, int) or isinstance(seconds, bool):
                    raise InvalidInput(f"expiry of {role} must be whole seconds, got {seconds!r}")
                periods[role] = timedelta(seconds=seconds)
        return cls(**periods)


DEFAULT_EXPIRIES = Expiries()

_PERIOD = re.compile(r"^([1-9][0-9]*)([smhdwy])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_period(text: str) -> timedelta:
    """``"90d"``, ``"12h"``, ``"1y"`` (s, m, h, d, w, y) as a timedelta."""
    match = _PERIOD.match(text.strip())
    if match is None:
        raise InvalidInput(
            f"expiry period {text!r} does not parse", hint="use e.g. 1y, 90d, 7d, 12h, 30m"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def expiries_from(periods: Mapping[str, str], base: Expiries = DEFAULT_EXPIRIES) -> Expiries:
    """``base`` with some roles' periods replaced, e.g. ``{"timestamp": "6h"}``."""
    values = {role: base.for_role(role) for role in TOP_LEVEL_ROLES}
    for role, text in periods.items():
        values[check_role_name(role)] = parse_period(text)
    return Expiries(**values)


def expiry(now: datetime, period: timedelta) -> datetime:
    """``now + period`` rounded down to the second, as TUF stores it."""
    return (now + period).replace(microsecond=0)


def check_thresholds(
    counts: Mapping[str, int], thresholds: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """Complete and validate key counts and thresholds for the four top-level roles.

    A role with no count gets as many keys as its threshold needs.
    """
    unknown = sorted(set(counts) - set(TOP_LEVEL_ROLES)) + sorted(
        set(thresholds) - set(TOP_LEVEL_ROLES)
    )
    if unknown:
        raise InvalidInput(
            f"unknown TUF role {unknown[0]!r}", hint=f"roles are {', '.join(TOP_LEVEL_ROLES)}"
        )
    full_thresholds: dict[str, int] = {}
    full_counts: dict[str, int] = {}
    for role in TOP_LEVEL_ROLES:
        threshold = thresholds.get(role, 1)
        count = counts.get(role, threshold)
        if threshold < 1:
            raise InvalidInput(f"threshold of {role} must be at least 1, got {threshold}")
        if count < threshold:
            raise InvalidInput(
                f"{role} has {count} key(s) but a threshold of {threshold}",
                hint="the threshold cannot exceed the number of keys",
            )
        full_thresholds[role] = threshold
        full_counts[role] = count
    return full_counts, full_thresholds


def new_root(
    keys: Mapping[str, Sequence[Key]],
    thresholds: Mapping[str, int],
    *,
    now: datetime,
    expires: timedelta,
) -> Metadata[Root]:
    """Version 1 of root, delegating each top-level role to its keys."""
    root = Root(expires=expiry(now, expires), consistent_snapshot=True)
    for role in TOP_LEVEL_ROLES:
        for key in keys[role]:
            root.add_key(key, role)
        root.roles[role].threshold = thresholds[role]
    return Metadata(root)


def next_root(
    current: Root,
    *,
    role: str,
    keys: Sequence[Key],
    threshold: int,
    now: datetime,
    expires: timedelta,
) -> Metadata[Root]:
    """The next root version, where ``role`` trusts exactly ``keys`` at ``threshold``."""
    if role not in TOP_LEVEL_ROLES:
        raise InvalidInput(f"unknown TUF role {role!r}")
    if not 1 <= threshold <= len(keys):
        raise InvalidInput(
            f"{role} would have {len(keys)} key(s) but a threshold of {threshold}",
            hint="the threshold must be between 1 and the number of keys",
        )
    root = copy.deepcopy(current)
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    for key in keys:
        root.add_key(key, role)
    root.roles[role].threshold = threshold
    root.version = current.version + 1
    root.expires = expiry(now, expires)
    return Metadata(root)


def renewed(signed: Root | Targets, *, now: datetime, expires: timedelta) -> Root | Targets:
    """A copy of ``signed`` with the next version and a fresh expiry, nothing else changed."""
    new = copy.deepcopy(signed)
    new.version = signed.version + 1
    new.expires = expiry(now, expires)
    return new


def initial_targets(*, now: datetime, expires: timedelta) -> Metadata[Targets]:
    """Version 1 of targets: no targets yet."""
    return Metadata(Targets(expires=expiry(now, expires)))


def validate_target_name(name: str) -> str:
    """``name`` if it is a safe TUF target path (relative, no ``..``, no empty part)."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") for part in parts)
        or any(ord(ch) < 0x20 or ch == "\x7f" for ch in name)
    ):
        raise InvalidInput(
            f"target name {name!r} is not a safe relative path",
            hint="use names like 'debian/25D771280a/cryptex.tar.zst'",
        )
    return name


def consistent_target_path(name: str, sha256: str) -> str:
    """Where a consistent-snapshot repository keeps target ``name``: ``dir/<sha256>.<base>``."""
    directory, base = posixpath.split(name)
    return posixpath.join(directory, f"{sha256}.{base}")


def with_custom(target: TargetFile, custom: Mapping[str, Any]) -> TargetFile:
    """``target`` carrying ``custom`` (the supplement's fields) under the bsi namespace."""
    try:
        namespaced = json.loads(json.dumps({CUSTOM_NAMESPACE: dict(custom)}, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"custom metadata is not plain JSON: {exc}") from None
    return TargetFile(
        length=target.length,
        hashes=dict(target.hashes),
        path=target.path,
        unrecognized_fields={"custom": namespaced},
    )


def next_targets(
    current: Targets,
    *,
    add: Iterable[TargetFile] = (),
    remove: Iterable[str] = (),
    now: datetime,
    expires: timedelta,
) -> Metadata[Targets]:
    """The next targets version with targets added (or replaced) and removed."""
    new = renewed(current, now=now, expires=expires)
    assert isinstance(new, Targets)
    for name in remove:
        if name not in new.targets:
            raise InvalidInput(f"target {name!r} is not in targets v{current.version}")
        del new.targets[name]
    for target in add:
        new.targets[validate_target_name(target.path)] = target
    return Metadata(new)


def meta_file(data: bytes, version: int) -> MetaFile:
    """Snapshot/timestamp's record of a metadata file: version, length and sha256."""
    return MetaFile.from_data(version, data, [HASH_ALGORITHM])


def next_snapshot(
    current: Snapshot | None,
    targets_meta: Mapping[str, MetaFile],
    *,
    now: datetime,
    expires: timedelta,
) -> Metadata[Snapshot]:
    """The next snapshot version, pinning each targets metadata file given."""
    version = 1 if current is None else current.version + 1
    meta = {} if current is None else dict(current.meta)
    meta.update(targets_meta)
    return Metadata(Snapshot(version=version, expires=expiry(now, expires), meta=meta))


def next_timestamp(
    current: Timestamp | None,
    snapshot_meta: MetaFile,
    *,
    now: datetime,
    expires: timedelta,
) -> Metadata[Timestamp]:
    """The next timestamp version, pinning ``snapshot_meta``."""
    version = 1 if current is None else current.version + 1
    return Metadata(
        Timestamp(version=version, expires=expiry(now, expires), snapshot_meta=snapshot_meta)
    )


@dataclass(frozen=True)
class ThresholdCheck:
    """One threshold a role's metadata must meet: who signed, how many are needed."""

    label: str
    threshold: int
    signed: tuple[str, ...]
    unsigned: tuple[str, ...]

    @property
    def met(self) -> bool:
        """True once enough authorised keys have signed validly."""
        return len(self.signed) >= self.threshold

    def describe(self) -> str:
        """E.g. ``1 of 2 required signatures from the targets keys``."""
        return f"{len(self.signed)} of {self.threshold} required signatures from the {self.label}"


@dataclass(frozen=True)
class SignatureStatus:
    """Where a role's (staged) metadata stands against its thresholds."""

    role: str
    version: int
    checks: tuple[ThresholdCheck, ...] = field(default_factory=tuple)

    @property
    def verified(self) -> bool:
        """True when every threshold is met."""
        return all(check.met for check in self.checks)

    def describe(self) -> str:
        """One line naming present vs needed signatures for each threshold."""
        parts = "; ".join(check.describe() for check in self.checks)
        return f"{self.role} v{self.version}: {parts}"


def signature_status(
    md: Metadata[Any], root: Root, *, previous_root: Root | None = None
) -> SignatureStatus:
    """How ``md`` (a top-level role's metadata) stands against its thresholds.

    For root, ``root`` is the new root itself and ``previous_root`` the one it
    replaces: TUF requires the threshold of both key sets.
    """
    role = md.signed.type
    payload = md.signed_bytes
    if role == ROOT:
        new_root_signed = md.signed
        assert isinstance(new_root_signed, Root)
        result = new_root_signed.get_root_verification_result(previous_root, payload, md.signatures)
        checks = [_check("new root keys", result.second)]
        if previous_root is not None:
            checks.insert(0, _check(f"root v{previous_root.version} keys", result.first))
    else:
        checks = [
            _check(f"{role} keys", root.get_verification_result(role, payload, md.signatures))
        ]
    return SignatureStatus(role=role, version=md.signed.version, checks=tuple(checks))


def _check(label: str, result: Any) -> ThresholdCheck:
    return ThresholdCheck(
        label=label,
        threshold=int(result.threshold),
        signed=tuple(sorted(result.signed)),
        unsigned=tuple(sorted(result.unsigned)),
    )


def role_keyids(root: Root, role: str) -> tuple[str, ...]:
    """The keyids ``root`` authorises for ``role``."""
    return tuple(root.roles[role].keyids)


def check_role_name(role: str, allowed: Sequence[str] = TOP_LEVEL_ROLES) -> str:
    """``role`` if it is one of ``allowed``."""
    if role not in allowed:
        raise InvalidInput(f"unknown TUF role {role!r}", hint=f"roles are {', '.join(allowed)}")
    return role


__all__ = [
    "CUSTOM_NAMESPACE",
    "DEFAULT_EXPIRIES",
    "DEVICE_FIELDS",
    "HASH_ALGORITHM",
    "OFFLINE_ROLES",
    "ONLINE_ROLES",
    "ROOT",
    "SNAPSHOT",
    "TARGETS",
    "TIMESTAMP",
    "TOP_LEVEL_ROLES",
    "Expiries",
    "SignatureStatus",
    "ThresholdCheck",
    "check_role_name",
    "check_thresholds",
    "consistent_target_path",
    "expiries_from",
    "expiry",
    "initial_targets",
    "meta_file",
    "new_root",
    "next_root",
    "next_snapshot",
    "next_targets",
    "next_timestamp",
    "parse_period",
    "renewed",
    "role_keyids",
    "signature_status",
    "validate_target_name",
    "with_custom",
]
