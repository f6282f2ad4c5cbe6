"""The publisher's side: sign supplements into TUF metadata and keep it fresh.

Offline roles (root, targets) change in three steps, so their keys never need
to be on the machine that publishes:

1. *stage*: a new version is written, unsigned, to ``staged/<role>.json``
   (:func:`stage_target`, :func:`stage_role`, :func:`rotate_key`);
2. *sign*: each key holder adds a signature (:func:`sign_role`), wherever the
   key is; :func:`staged_status` says how many are there and how many are needed;
3. *finalize*: once the threshold is met, :func:`finalize` publishes the new
   version and refreshes snapshot and timestamp with the online keys. Below the
   threshold it refuses, naming the count.

:func:`publish_target` does all three when the targets keys are at hand.
:func:`refresh_timestamp` is what the server runs on a timer, well inside the
timestamp's expiry. Every file is written atomically, under a lock on the
repository directory, and the served ``timestamp.json`` is always the last
file written, so clients see a whole new repository state or the old one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bsi.errors import Conflict, InvalidInput
from bsi.trust import _fs, keys, model, store
from bsi.trust._tuf import Metadata, Root, Signer, TargetFile, Targets
from bsi.trust.errors import (
    ClockTrouble,
    KeyFileError,
    RepositoryExists,
    RepositoryStateError,
    ThresholdNotMet,
)
from bsi.trust.keys import KeyFile
from bsi.trust.model import ROOT, SNAPSHOT, TARGETS, TIMESTAMP, SignatureStatus
from bsi.trust.store import RepoLayout

SIGNED_ROLES: tuple[str, ...] = model.OFFLINE_ROLES


@dataclass(frozen=True)
class PublishResult:
    """The versions now served, key files retired, and warnings for the operator."""

    versions: Mapping[str, int]
    retired_keys: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """``root v1, targets v3, snapshot v4, timestamp v9``."""
        return ", ".join(f"{role} v{self.versions[role]}" for role in model.TOP_LEVEL_ROLES)


@dataclass(frozen=True)
class RotationResult:
    """A key rotation: the new key files, and whether the new root is published yet."""

    role: str
    new_keys: tuple[KeyFile, ...]
    status: SignatureStatus
    published: PublishResult | None


CLOCK_TOLERANCE = timedelta(minutes=5)
"""How far behind its last signature the signer's clock may be before it refuses."""


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _moment(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _layout(repo_dir: Path) -> RepoLayout:
    layout = RepoLayout(Path(repo_dir))
    if not layout.metadata.is_dir():
        raise RepositoryStateError(
            f"{str(layout.metadata)!r} does not exist",
            hint="create the repository with 'bsi keys init'",
        )
    return layout


def _staged_root(layout: RepoLayout) -> Metadata[Root] | None:
    return store.read_staged(layout, ROOT, Root)


def _authority(layout: RepoLayout) -> Root:
    """The root that will judge a staged targets version: the staged root, if any."""
    staged = _staged_root(layout)
    return staged.signed if staged is not None else store.latest_root(layout).signed


def _status(layout: RepoLayout, md: Metadata[Any]) -> SignatureStatus:
    if md.signed.type == ROOT:
        return model.signature_status(md, md.signed, previous_root=store.latest_root(layout).signed)
    return model.signature_status(md, _authority(layout))


def _read_staged_any(layout: RepoLayout, role: str) -> Metadata[Any] | None:
    if role == ROOT:
        return store.read_staged(layout, ROOT, Root)
    return store.read_staged(layout, TARGETS, Targets)


def _require_staged(layout: RepoLayout, role: str) -> Metadata[Any]:
    model.check_role_name(role, SIGNED_ROLES)
    md = _read_staged_any(layout, role)
    if md is None:
        how = "'bsi supplement publish' or 'bsi keys stage targets'"
        if role == ROOT:
            how = "'bsi keys rotate' or 'bsi keys stage root'"
        raise RepositoryStateError(f"no staged {role} version", hint=f"stage one with {how}")
    return md


def available_signers(
    repo_dir: Path, keys_dir: Path, role: str, *, passphrase: bytes | None = None
) -> list[Signer]:
    """Signers for the key files in ``keys_dir`` that may sign ``role`` now.

    For targets that is what the staged root (if any) or else the published root
    lists; for root, keys of the published root. Others are ignored.
    """
    model.check_role_name(role)
    layout = _layout(repo_dir)
    authority = _authority(layout) if role == TARGETS else store.latest_root(layout).signed
    return keys.signers_for(Path(keys_dir), authority, role, passphrase=passphrase)


# --- stage ---------------------------------------------------------------------------


def _copy_bundle(layout: RepoLayout, name: str, data_path: Path) -> TargetFile:
    """Copy a bundle into ``targets/`` under its consistent-snapshot name; hash the copy.

    Hashing the copy (not the source) means the signed hash is that of the bytes
    served, even if the source changes meanwhile.
    """
    if not data_path.is_file():
        raise InvalidInput(f"bundle {str(data_path)!r} is not a file")
    directory = layout.targets.joinpath(*name.split("/")[:-1])
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=".bsi-", suffix=".tmp")
    temp = Path(temp_name)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as out, data_path.open("rb") as source:
            shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        target = TargetFile.from_file(name, str(temp), [model.HASH_ALGORITHM])
        final = layout.targets / model.consistent_target_path(
            name, target.hashes[model.HASH_ALGORITHM]
        )
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    return target


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_same_bytes(name: str, known: TargetFile, sha256: str) -> None:
    """A target name (platform/supplemental build) is one set of bytes forever.

    Devices and caches key on the supplemental build: a second bundle under
    the same build would make two devices "on 12A100a" run different code.
    """
    published = known.hashes[model.HASH_ALGORITHM]
    if published != sha256:
        raise Conflict(
            f"{name} is already published with sha256 {published}; this bundle's sha256 is "
            f"{sha256}: a supplemental build is never re-published with different bytes",
            hint="give the new content a new supplemental build (and letter), e.g. "
            "12A100a -> 12A100b, and publish that",
        )


def _base_targets(layout: RepoLayout, now: datetime, expires: timedelta) -> Metadata[Targets]:
    """The staged targets version to extend, or a new one after the served version."""
    current = store.current_state(layout).targets.signed
    staged = store.read_staged(layout, TARGETS, Targets)
    if staged is None:
        return model.next_targets(current, now=now, expires=expires)
    if staged.signed.version != current.version + 1:
        raise RepositoryStateError(
            f"staged targets v{staged.signed.version} does not follow the served "
            f"targets v{current.version}",
            hint="discard it with 'bsi keys discard targets' and stage again",
        )
    return staged


def stage_target(
    repo_dir: Path,
    target_name: str,
    data_path: Path,
    custom: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> SignatureStatus:
    """Add (or replace) a bundle in the staged targets version; return its signature count.

    The bundle is copied to ``targets/<dir>/<sha256>.<basename>`` at once (it is
    content-addressed, so nothing serves it until signed metadata names it) and
    ``custom`` is signed under the ``bsi`` key of the target's ``custom``
    metadata. Changing the staged version drops signatures made over its old content.
    """
    layout = _layout(repo_dir)
    with _fs.locked(layout.base):
        return _stage_target(layout, target_name, Path(data_path), custom, _moment(now))


def _stage_target(
    layout: RepoLayout,
    name: str,
    data_path: Path,
    custom: Mapping[str, Any],
    now: datetime,
    *,
    immutable: bool = False,
) -> SignatureStatus:
    model.validate_target_name(name)
    expires = store.read_settings(layout).targets
    md = _base_targets(layout, now, expires)
    known = md.signed.targets.get(name) if immutable else None
    if known is not None and data_path.is_file():
        _check_same_bytes(name, known, _sha256_of(data_path))
    target = model.with_custom(_copy_bundle(layout, name, data_path), custom)
    if known is not None:
        _check_same_bytes(name, known, target.hashes[model.HASH_ALGORITHM])
    md.signed.targets[name] = target
    md.signed.expires = model.expiry(now, expires)
    md.signatures.clear()
    store.write_staged(layout, md)
    return _status(layout, md)


def stage_role(
    repo_dir: Path,
    role: str,
    *,
    remove_targets: Iterable[str] = (),
    now: datetime | None = None,
) -> SignatureStatus:
    """Stage the next version of root or targets with a fresh expiry (to re-sign it).

    For targets, ``remove_targets`` names targets to drop from it.
    """
    model.check_role_name(role, SIGNED_ROLES)
    layout = _layout(repo_dir)
    moment = _moment(now)
    with _fs.locked(layout.base):
        settings = store.read_settings(layout)
        md: Metadata[Any]
        if role == ROOT:
            if _staged_root(layout) is not None:
                raise RepositoryExists(
                    "a root version is already staged",
                    hint="sign and finalize it, or 'bsi keys discard root'",
                )
            current = store.latest_root(layout).signed
            md = Metadata(model.renewed(current, now=moment, expires=settings.root))
        else:
            md = _base_targets(layout, moment, settings.targets)
            for name in remove_targets:
                if name not in md.signed.targets:
                    raise InvalidInput(f"target {name!r} is not in targets")
                del md.signed.targets[name]
            md.signed.expires = model.expiry(moment, settings.targets)
            md.signatures.clear()
        store.write_staged(layout, md)
        return _status(layout, md)


def discard_staged(repo_dir: Path, role: str) -> None:
    """Forget the staged version of ``role`` (bundles already copied stay, unreferenced)."""
    model.check_role_name(role, SIGNED_ROLES)
    layout = _layout(repo_dir)
    with _fs.locked(layout.base):
        store.remove_staged(layout, role)


# --- sign ----------------------------------------------------------------------------


def staged_status(repo_dir: Path, role: str) -> SignatureStatus:
    """How many valid signatures the staged version of ``role`` has, against how many needed."""
    layout = _layout(repo_dir)
    return _status(layout, _require_staged(layout, role))


def sign_role(
    repo_dir: Path,
    role: str,
    key: Path | Signer,
    *,
    passphrase: bytes | None = None,
) -> SignatureStatus:
    """Add one signature to the staged version of ``role`` (root or targets).

    ``key`` is a private key file or a signer. A key the role does not trust is
    refused (for root: a key of neither the current nor the staged root).
    """
    layout = _layout(repo_dir)
    signer = key if isinstance(key, Signer) else keys.load_signer(Path(key), passphrase=passphrase)
    with _fs.locked(layout.base):
        md = _require_staged(layout, role)
        _sign(layout, md, signer)
        store.write_staged(layout, md)
        return _status(layout, md)


def _check_signer(layout: RepoLayout, role: str, signer: Signer, staged_root: Root | None) -> None:
    """Refuse a key that may not sign ``role`` (for root: of neither old nor new root)."""
    keyid = signer.public_key.keyid
    if role == ROOT:
        current = store.latest_root(layout).signed
        trusted = set(model.role_keyids(current, ROOT))
        judge = f"root v{current.version}"
        if staged_root is not None:
            trusted |= set(model.role_keyids(staged_root, ROOT))
            judge += f" or v{staged_root.version}"
    else:
        authority = _authority(layout)
        trusted = set(model.role_keyids(authority, role))
        judge = f"root v{authority.version}"
    if keyid not in trusted:
        raise KeyFileError(
            f"key {keyid[:16]}… is not a {role} key of {judge}",
            hint=f"sign with one of the {role} keys",
        )


def _sign(layout: RepoLayout, md: Metadata[Any], signer: Signer) -> None:
    role = md.signed.type
    _check_signer(layout, role, signer, md.signed if role == ROOT else None)
    md.sign(signer, append=True)


# --- publish -------------------------------------------------------------------------


def _online_sign(
    md: Metadata[Any], keys_dir: Path, authority: Root, passphrase: bytes | None
) -> None:
    role = md.signed.type
    for signer in keys.signers_for(keys_dir, authority, role, passphrase=passphrase):
        md.sign(signer, append=True)
    status = model.signature_status(md, authority)
    if not status.verified:
        raise ThresholdNotMet(
            f"cannot sign {role}: {status.describe()} in {str(keys_dir)!r}",
            hint=f"the server's keys directory needs the {role} key(s) root "
            f"v{authority.version} lists",
        )


def _expiry_warnings(
    root: Root, targets: Targets, now: datetime, horizon: datetime
) -> tuple[str, ...]:
    warnings = []
    for signed in (root, targets):
        if signed.expires <= horizon:
            when = (
                "has expired"
                if signed.expires <= now
                else f"expires {signed.expires:%Y-%m-%d %H:%M}Z"
            )
            warnings.append(
                f"{signed.type} v{signed.version} {when}: stage, sign and finalize a new "
                f"version with the offline {signed.type} keys"
            )
    return tuple(warnings)


def _publish(
    layout: RepoLayout,
    keys_dir: Path,
    *,
    now: datetime,
    root: Metadata[Root] | None = None,
    targets: Metadata[Targets] | None = None,
    new_snapshot: bool = True,
    passphrase: bytes | None = None,
) -> PublishResult:
    """Write new versions; ``timestamp.json`` last, so clients switch in one step."""
    state = store.current_state(layout)
    settings = store.read_settings(layout)
    authority = root.signed if root is not None else state.root.signed
    served_targets = state.targets
    targets_meta = {}
    targets_bytes: bytes | None = None
    if targets is not None:
        if targets.signed.version <= state.targets.signed.version:
            raise RepositoryStateError(
                f"targets v{targets.signed.version} is not newer than the served "
                f"v{state.targets.signed.version}"
            )
        targets_bytes = store.serialize(targets)
        targets_meta["targets.json"] = model.meta_file(targets_bytes, targets.signed.version)
        served_targets = targets

    snapshot = state.snapshot
    snapshot_bytes: bytes | None = None
    if new_snapshot or targets is not None or root is not None:
        snapshot = model.next_snapshot(
            state.snapshot.signed, targets_meta, now=now, expires=settings.snapshot
        )
        _online_sign(snapshot, keys_dir, authority, passphrase)
        snapshot_bytes = store.serialize(snapshot)
    snapshot_info = model.meta_file(
        snapshot_bytes
        if snapshot_bytes is not None
        else layout.published(SNAPSHOT, snapshot.signed.version).read_bytes(),
        snapshot.signed.version,
    )
    timestamp = model.next_timestamp(
        state.timestamp.signed, snapshot_info, now=now, expires=settings.timestamp
    )
    _online_sign(timestamp, keys_dir, authority, passphrase)

    if targets is not None and targets_bytes is not None:
        _fs.write_atomic(layout.published(TARGETS, targets.signed.version), targets_bytes)
    if snapshot_bytes is not None:
        _fs.write_atomic(layout.published(SNAPSHOT, snapshot.signed.version), snapshot_bytes)
    if root is not None:
        _fs.write_new(layout.published(ROOT, root.signed.version), store.serialize(root))
    _fs.write_atomic(layout.published(TIMESTAMP, 0), store.serialize(timestamp))

    horizon = now + settings.snapshot
    return PublishResult(
        versions={
            ROOT: authority.version,
            TARGETS: served_targets.signed.version,
            SNAPSHOT: snapshot.signed.version,
            TIMESTAMP: timestamp.signed.version,
        },
        warnings=_expiry_warnings(authority, served_targets.signed, now, horizon),
    )


def finalize(
    repo_dir: Path,
    keys_dir: Path,
    role: str,
    *,
    passphrase: bytes | None = None,
    now: datetime | None = None,
) -> PublishResult:
    """Publish the staged version of ``role`` once its threshold is met; refuse otherwise.

    Finalizing root also publishes a staged targets version (needed when the
    targets keys changed) and moves key files the new root no longer lists to
    ``<keys_dir>/retired/``.
    """
    layout = _layout(repo_dir)
    with _fs.locked(layout.base):
        if role == ROOT:
            return _finalize_root(layout, Path(keys_dir), passphrase, _moment(now))
        return _finalize_targets(layout, Path(keys_dir), passphrase, _moment(now))


def _threshold_refusal(status: SignatureStatus, role: str) -> ThresholdNotMet:
    return ThresholdNotMet(
        f"refusing to publish {status.describe()}",
        hint=f"add signatures with 'bsi keys sign {role} --key FILE', then finalize again",
    )


def _finalize_targets(
    layout: RepoLayout, keys_dir: Path, passphrase: bytes | None, now: datetime
) -> PublishResult:
    md = _require_staged(layout, TARGETS)
    if _staged_root(layout) is not None:
        raise RepositoryStateError(
            "a new root version is staged",
            hint="finalize root first ('bsi keys finalize root'); it publishes the staged "
            "targets with it",
        )
    status = _status(layout, md)
    if not status.verified:
        raise _threshold_refusal(status, TARGETS)
    result = _publish(layout, keys_dir, now=now, targets=md, passphrase=passphrase)
    store.remove_staged(layout, TARGETS)
    return result


def _finalize_root(
    layout: RepoLayout, keys_dir: Path, passphrase: bytes | None, now: datetime
) -> PublishResult:
    md = _require_staged(layout, ROOT)
    current = store.latest_root(layout).signed
    if md.signed.version != current.version + 1:
        raise RepositoryStateError(
            f"staged root v{md.signed.version} does not follow the published root "
            f"v{current.version}",
            hint="discard it with 'bsi keys discard root' and stage again",
        )
    status = _status(layout, md)
    if not status.verified:
        raise _threshold_refusal(status, ROOT)
    new_root: Root = md.signed

    staged_targets = store.read_staged(layout, TARGETS, Targets)
    targets: Metadata[Targets] | None = None
    if staged_targets is not None:
        targets_status = model.signature_status(staged_targets, new_root)
        if not targets_status.verified:
            raise ThresholdNotMet(
                f"root v{new_root.version} would publish with the staged "
                f"{targets_status.describe()}",
                hint="sign the staged targets with the new targets keys, or discard it",
            )
        targets = staged_targets
    else:
        served = store.current_state(layout).targets
        if not model.signature_status(served, new_root).verified:
            # The targets keys changed: re-sign targets with whichever new keys are here.
            settings = store.read_settings(layout)
            renewed = model.next_targets(served.signed, now=now, expires=settings.targets)
            for signer in keys.signers_for(keys_dir, new_root, TARGETS, passphrase=passphrase):
                renewed.sign(signer, append=True)
            renewed_status = model.signature_status(renewed, new_root)
            if not renewed_status.verified:
                raise ThresholdNotMet(
                    f"root v{new_root.version} changes the targets keys and targets "
                    f"v{renewed.signed.version} would have {renewed_status.describe()}",
                    hint="stage targets ('bsi keys stage targets'), sign it with the new "
                    "targets keys, then finalize root",
                )
            targets = renewed

    result = _publish(layout, keys_dir, now=now, root=md, targets=targets, passphrase=passphrase)
    store.remove_staged(layout, ROOT)
    store.remove_staged(layout, TARGETS)
    retired = keys.retire_unauthorised(keys_dir, new_root)
    return PublishResult(result.versions, tuple(retired), result.warnings)


def publish_target(
    repo_dir: Path,
    keys_dir: Path,
    target_name: str,
    data_path: Path,
    custom: Mapping[str, Any],
    *,
    signers: Sequence[Signer],
    passphrase: bytes | None = None,
    now: datetime | None = None,
    immutable: bool = False,
) -> PublishResult:
    """Stage a bundle, sign targets with ``signers`` and publish it with fresh snapshot/timestamp.

    Below the targets threshold this raises :class:`ThresholdNotMet` and leaves the
    partly signed version staged, for other key holders to sign and finalize.
    ``immutable`` (supplements: one supplemental build is one set of bytes
    forever) refuses, with ``Conflict`` naming both SHA-256 digests, a name
    already published or staged with other bytes; the same bytes again are fine.
    """
    layout = _layout(repo_dir)
    moment = _moment(now)
    with _fs.locked(layout.base):
        for signer in signers:  # refuse a wrong key before anything is staged
            _check_signer(layout, TARGETS, signer, None)
        _stage_target(layout, target_name, Path(data_path), custom, moment, immutable=immutable)
        md = _require_staged(layout, TARGETS)
        for signer in signers:
            _sign(layout, md, signer)
        store.write_staged(layout, md)
        return _finalize_targets(layout, Path(keys_dir), passphrase, moment)


def refresh_timestamp(
    repo_dir: Path,
    keys_dir: Path,
    *,
    passphrase: bytes | None = None,
    now: datetime | None = None,
    refuse_clock_behind: bool = True,
) -> PublishResult:
    """Re-sign timestamp (and snapshot, when it would expire first) with the online keys.

    The server runs this on a timer well inside the timestamp's expiry; the
    result's warnings name offline roles (root, targets) about to expire.
    Raises :class:`ClockTrouble` when ``now`` is behind the served timestamp's
    signing time; ``refuse_clock_behind=False`` is only for freeze-attack
    tests that must forge such stale metadata on purpose.
    """
    layout = _layout(repo_dir)
    moment = _moment(now)
    with _fs.locked(layout.base):
        state = store.current_state(layout)
        settings = store.read_settings(layout)
        next_expiry = model.expiry(moment, settings.timestamp)
        served = state.timestamp.signed
        signed_at = _aware(served.expires) - settings.timestamp
        if refuse_clock_behind and moment + CLOCK_TOLERANCE < signed_at:
            raise ClockTrouble(
                f"the clock says {moment:%Y-%m-%d %H:%M} UTC, but timestamp "
                f"v{served.version} was signed at about {signed_at:%Y-%m-%d %H:%M} UTC: "
                "refusing to sign metadata that would expire before what devices hold",
                hint="set the system clock right (NTP); the served metadata stays as it is",
            )
        snapshot_status = model.signature_status(state.snapshot, state.root.signed)
        new_snapshot = state.snapshot.signed.expires <= next_expiry or not snapshot_status.verified
        return _publish(
            layout, Path(keys_dir), now=moment, new_snapshot=new_snapshot, passphrase=passphrase
        )


def rotate_key(
    repo_dir: Path,
    keys_dir: Path,
    role: str,
    *,
    signers: Sequence[Signer] = (),
    count: int | None = None,
    threshold: int | None = None,
    passphrase: bytes | None = None,
    now: datetime | None = None,
) -> RotationResult:
    """Replace every key of ``role`` with ``count`` new ones in a new root version.

    The new keys are written to ``keys_dir`` (offline ones encrypted with
    ``passphrase``). The new root is staged and signed with ``signers`` (current
    root keys) and, when root itself rotates, with the new root keys: TUF needs
    the threshold of both the old and the new root. If that is met it is
    published at once (with targets re-signed by new targets keys, and fresh
    snapshot and timestamp); otherwise it stays staged for ``sign_role`` and
    ``finalize``.
    """
    model.check_role_name(role)
    layout = _layout(repo_dir)
    moment = _moment(now)
    keys_dir = Path(keys_dir)
    with _fs.locked(layout.base):
        if _staged_root(layout) is not None:
            raise RepositoryExists(
                "a root version is already staged",
                hint="sign and finalize it, or 'bsi keys discard root', before rotating again",
            )
        current = store.latest_root(layout).signed
        settings = store.read_settings(layout)
        n = count if count is not None else len(current.roles[role].keyids)
        wanted = threshold if threshold is not None else min(current.roles[role].threshold, n)
        if n < 1 or not 1 <= wanted <= n:
            raise InvalidInput(
                f"{role} would have {n} key(s) and a threshold of {wanted}",
                hint="the threshold must be between 1 and the number of keys",
            )
        for signer in signers:  # refuse a wrong key before any new key is made
            _check_signer(layout, ROOT, signer, None)
        secret = passphrase if role in model.OFFLINE_ROLES else None
        made = [keys.generate_key(keys_dir, role, passphrase=secret) for _ in range(n)]
        new_signers = [signer for _, signer in made]
        staged = model.next_root(
            current,
            role=role,
            keys=[signer.public_key for signer in new_signers],
            threshold=wanted,
            now=moment,
            expires=settings.root,
        )
        for signer in [*signers, *(new_signers if role == ROOT else [])]:
            _sign(layout, staged, signer)
        store.write_staged(layout, staged)
        if role == TARGETS:
            targets = _base_targets(layout, moment, settings.targets)
            targets.signatures.clear()
            for signer in new_signers:
                targets.sign(signer, append=True)
            store.write_staged(layout, targets)
        status = _status(layout, staged)
        published = (
            _finalize_root(layout, keys_dir, passphrase, moment) if status.verified else None
        )
        return RotationResult(
            role=role,
            new_keys=tuple(key_file for key_file, _ in made),
            status=status,
            published=published,
        )


@dataclass(frozen=True)
class RoleState:
    """One role as served: version and expiry."""

    role: str
    version: int
    expires: datetime


@dataclass(frozen=True)
class RepositoryStatus:
    """What a repository serves, and what is staged with how many signatures."""

    served: tuple[RoleState, ...]
    staged: tuple[SignatureStatus, ...]
    targets: Mapping[str, int]

    def describe(self) -> str:
        lines = [
            f"{r.role:<9} v{r.version:<4} expires {r.expires:%Y-%m-%d %H:%M} UTC"
            for r in self.served
        ]
        lines += [f"staged    {status.describe()}" for status in self.staged]
        lines += [
            f"target    {name} ({length} bytes)" for name, length in sorted(self.targets.items())
        ]
        return "\n".join(lines)


def repository_status(repo_dir: Path) -> RepositoryStatus:
    """Served versions and expiries, staged versions and their signature counts."""
    layout = _layout(repo_dir)
    state = store.current_state(layout)
    served = tuple(
        RoleState(md.signed.type, md.signed.version, md.signed.expires)
        for md in (state.root, state.targets, state.snapshot, state.timestamp)
    )
    staged = []
    for role in SIGNED_ROLES:
        md = _read_staged_any(layout, role)
        if md is not None:
            staged.append(_status(layout, md))
    return RepositoryStatus(
        served=served,
        staged=tuple(staged),
        targets={name: t.length for name, t in state.targets.signed.targets.items()},
    )


def published_supplements(repo_dir: Path) -> dict[str, tuple[Mapping[str, Any], str]]:
    """Target name -> (the supplement fields signed under ``custom.bsi``, the
    target's SHA-256 hex digest), as served now."""
    state = store.current_state(_layout(repo_dir))
    found: dict[str, tuple[Mapping[str, Any], str]] = {}
    for name, target in state.targets.signed.targets.items():
        custom = target.unrecognized_fields.get("custom")
        fields = custom.get(model.CUSTOM_NAMESPACE) if isinstance(custom, dict) else None
        if isinstance(fields, dict):
            found[name] = (fields, target.hashes[model.HASH_ALGORITHM])
    return found
