"""TUF signing keys as files, and creating a new repository.

Each key is two files in a keys directory, named after its role and a number
that is never reused::

    root-1.pem        private key, PEM PKCS#8, mode 0600 (encrypted if a passphrase is set)
    root-1.pub.json   {"role": "root", "keyid": ..., "key": {...TUF public key...}}

So the files of the offline roles (``root-*``, ``targets-*``) can be moved to an
offline machine or a vault one by one, while the server keeps only
``snapshot-*`` and ``timestamp-*``. Which files count is decided by the current
root metadata: a key file whose keyid root no longer lists is ignored (and moved
to ``retired/`` when a rotation is published).

Keys are ed25519, made with securesystemslib's :class:`CryptoSigner`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from bsi.errors import InvalidInput
from bsi.strict import read_json
from bsi.trust import _fs, model, store
from bsi.trust._tuf import CryptoSigner, Key, Root, Signer
from bsi.trust.errors import KeyFileError, RepositoryExists

#: Environment variable the CLI reads a key passphrase from (never a command-line option).
PASSPHRASE_ENV = "BSI_TUF_KEY_PASSPHRASE"
RETIRED_DIR = "retired"

_KEY_FILE = re.compile(r"^(root|targets|snapshot|timestamp)-([1-9][0-9]*)\.pem$")


@dataclass(frozen=True)
class KeyFile:
    """One key on disk: its role, number, files and TUF keyid."""

    role: str
    index: int
    path: Path
    keyid: str

    @property
    def public_path(self) -> Path:
        """The public half, ``<role>-<n>.pub.json``."""
        return public_path_for(self.path)


def public_path_for(private_path: Path) -> Path:
    """``root-1.pem`` -> ``root-1.pub.json``."""
    return private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.json")


def passphrase_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key passphrase from :data:`PASSPHRASE_ENV`, or None if unset or empty."""
    value = (os.environ if environ is None else environ).get(PASSPHRASE_ENV, "")
    return value.encode() if value else None


def _next_index(keys_dir: Path, role: str) -> int:
    used = [0]
    for directory in (keys_dir, keys_dir / RETIRED_DIR):
        if directory.is_dir():
            for entry in directory.iterdir():
                match = _KEY_FILE.match(entry.name)
                if match and match.group(1) == role:
                    used.append(int(match.group(2)))
    return max(used) + 1


def generate_key(
    keys_dir: Path, role: str, *, passphrase: bytes | None = None
) -> tuple[KeyFile, CryptoSigner]:
    """A new ed25519 key for ``role``, written as ``<role>-<n>.pem`` and ``.pub.json``."""
    model.check_role_name(role)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_key = Ed25519PrivateKey.generate()
    signer = CryptoSigner(private_key)
    encryption = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    index = _next_index(keys_dir, role)
    path = keys_dir / f"{role}-{index}.pem"
    public = {"role": role, "keyid": signer.public_key.keyid, "key": signer.public_key.to_dict()}
    _fs.write_new(path, pem, mode=0o600)
    _fs.write_new(
        public_path_for(path),
        (json.dumps(public, indent=2, sort_keys=True) + "\n").encode(),
        mode=0o644,
    )
    return KeyFile(role=role, index=index, path=path, keyid=signer.public_key.keyid), signer


def read_public_key(path: Path) -> tuple[str, Key]:
    """(role, key) from a ``.pub.json`` file."""
    try:
        raw: Any = read_json(path.read_bytes(), source=repr(str(path)), error=KeyFileError)
        key = Key.from_dict(str(raw["keyid"]), dict(raw["key"]))
        return str(raw["role"]), key
    except FileNotFoundError:
        raise KeyFileError(f"public key file {str(path)!r} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{str(path)!r} is not a bsi public key file: {exc}") from None


def list_key_files(keys_dir: Path, role: str | None = None) -> list[KeyFile]:
    """The key files in ``keys_dir`` (not ``retired/``), optionally of one role."""
    found: list[KeyFile] = []
    if not keys_dir.is_dir():
        return found
    for entry in sorted(keys_dir.iterdir()):
        match = _KEY_FILE.match(entry.name)
        if not match or (role is not None and match.group(1) != role):
            continue
        public = public_path_for(entry)
        if public.exists():
            _, key = read_public_key(public)
            keyid = key.keyid
        else:
            keyid = load_signer(entry).public_key.keyid
        found.append(KeyFile(match.group(1), int(match.group(2)), entry, keyid))
    return found


def load_signer(path: Path, *, passphrase: bytes | None = None) -> CryptoSigner:
    """A signer from a private key file (decrypted with ``passphrase`` if it is encrypted)."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {str(path)!r} is missing") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {str(path)!r}: {exc.strerror}") from None
    try:
        try:
            private_key = load_pem_private_key(pem, None)
        except TypeError:
            if passphrase is None:
                raise KeyFileError(
                    f"key file {str(path)!r} is encrypted",
                    hint=f"set {PASSPHRASE_ENV} to its passphrase",
                ) from None
            private_key = load_pem_private_key(pem, passphrase)
    except ValueError:
        raise KeyFileError(
            f"cannot load key file {str(path)!r}", hint="wrong passphrase, or not a PEM private key"
        ) from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {str(path)!r} is not an ed25519 key")
    return CryptoSigner(private_key)


def signers_for(
    keys_dir: Path, root: Root, role: str, *, passphrase: bytes | None = None
) -> list[Signer]:
    """Signers for every key file in ``keys_dir`` that ``root`` authorises for ``role``."""
    authorised = set(model.role_keyids(root, role))
    return [
        load_signer(key_file.path, passphrase=passphrase)
        for key_file in list_key_files(keys_dir, role)
        if key_file.keyid in authorised
    ]


def retire_unauthorised(keys_dir: Path, root: Root) -> list[Path]:
    """Move key files ``root`` no longer lists for their role to ``retired/``."""
    moved: list[Path] = []
    for key_file in list_key_files(keys_dir):
        if key_file.keyid in model.role_keyids(root, key_file.role):
            continue
        retired = keys_dir / RETIRED_DIR
        retired.mkdir(exist_ok=True, mode=0o700)
        for path in (key_file.path, key_file.public_path):
            if path.exists():
                os.replace(path, retired / path.name)
        moved.append(retired / key_file.path.name)
    return moved


@dataclass(frozen=True)
class InitResult:
    """What ``init_keys`` made."""

    keys: tuple[KeyFile, ...]
    root_path: Path
    metadata_dir: Path


def init_keys(
    keys_dir: Path,
    repo_dir: Path,
    *,
    thresholds: Mapping[str, int] | None = None,
    counts: Mapping[str, int] | None = None,
    expires: model.Expiries = model.DEFAULT_EXPIRIES,
    passphrase: bytes | None = None,
    now: datetime | None = None,
) -> InitResult:
    """Create the four top-level roles' keys and version 1 of a repository.

    ``counts`` keys are made per role (default: its threshold, itself default 1).
    With ``passphrase``, the offline keys (root, targets) are encrypted with it;
    online keys (snapshot, timestamp) never are, since the server signs unattended.
    Refuses if ``keys_dir`` already holds keys or ``repo_dir`` metadata.
    """
    full_counts, full_thresholds = model.check_thresholds(counts or {}, thresholds or {})
    layout = store.RepoLayout(repo_dir)
    if keys_dir.is_dir() and any(p.name.endswith(".pem") for p in keys_dir.iterdir()):
        raise RepositoryExists(
            f"{str(keys_dir)!r} already holds keys",
            hint="bsi never overwrites keys; rotate them with 'bsi keys rotate'",
        )
    for served in (layout.metadata, layout.targets):
        if keys_dir.resolve().is_relative_to(served.resolve()):
            raise InvalidInput(
                f"keys directory {str(keys_dir)!r} is inside the served {str(served)!r}",
                hint="keep private keys outside metadata/ and targets/",
            )
    store.ensure_empty(layout)
    moment = now or datetime.now(UTC)

    with _fs.locked(repo_dir):
        store.ensure_empty(layout)
        made: list[KeyFile] = []
        signers: dict[str, list[Signer]] = {}
        for role in model.TOP_LEVEL_ROLES:
            secret = passphrase if role in model.OFFLINE_ROLES else None
            signers[role] = []
            for _ in range(full_counts[role]):
                key_file, new_signer = generate_key(keys_dir, role, passphrase=secret)
                made.append(key_file)
                signers[role].append(new_signer)

        public = {role: [s.public_key for s in signers[role]] for role in model.TOP_LEVEL_ROLES}
        root = model.new_root(public, full_thresholds, now=moment, expires=expires.root)
        targets = model.initial_targets(now=moment, expires=expires.targets)
        for signer in signers[model.ROOT]:
            root.sign(signer, append=True)
        for signer in signers[model.TARGETS]:
            targets.sign(signer, append=True)
        targets_bytes = store.serialize(targets)
        snapshot = model.next_snapshot(
            None,
            {"targets.json": model.meta_file(targets_bytes, 1)},
            now=moment,
            expires=expires.snapshot,
        )
        for signer in signers[model.SNAPSHOT]:
            snapshot.sign(signer, append=True)
        snapshot_bytes = store.serialize(snapshot)
        timestamp = model.next_timestamp(
            None, model.meta_file(snapshot_bytes, 1), now=moment, expires=expires.timestamp
        )
        for signer in signers[model.TIMESTAMP]:
            timestamp.sign(signer, append=True)

        store.write_settings(layout, expires)
        layout.targets.mkdir(parents=True, exist_ok=True)
        root_path = layout.published(model.ROOT, 1)
        _fs.write_new(root_path, store.serialize(root))
        _fs.write_new(layout.published(model.TARGETS, 1), targets_bytes)
        _fs.write_new(layout.published(model.SNAPSHOT, 1), snapshot_bytes)
        _fs.write_new(layout.published(model.TIMESTAMP, 1), store.serialize(timestamp))
    return InitResult(keys=tuple(made), root_path=root_path, metadata_dir=layout.metadata)
