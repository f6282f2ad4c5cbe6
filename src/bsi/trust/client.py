"""The device's side: fetch and verify supplements with ``tuf.ngclient``.

:class:`TrustedClient` is a thin wrapper over :class:`tuf.ngclient.Updater`,
which carries out the TUF client workflow (root rotation, timestamp -> snapshot
-> targets, rollback and freeze checks, lengths and hashes). The wrapper adds
what an agent needs around it:

* limits, so that endless data (metadata or bundles longer than allowed) is cut off;
* every TUF failure turned into one :class:`~bsi.trust.errors.TrustError`
  subclass with a message saying what was refused;
* a check that a signed bundle is *for this device* (platform, prerequisite
  build, supplemental build in the signed custom metadata) before it is fetched;
* downloads that land in the destination only once verified, under a final
  name by one rename: a refused bundle leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from bsi.domain.supplement_fields import SupplementFields, read_supplement_fields
from bsi.errors import InvalidInput
from bsi.trust import _fs, model
from bsi.trust._tuf import FetcherInterface, Metadata, Root, TargetFile, Updater, UpdaterConfig
from bsi.trust.errors import (
    MetadataExpired,
    MetadataTooLarge,
    RepositoryExists,
    RepositoryUnavailable,
    RollbackRefused,
    TargetNotFound,
    TargetRejected,
    TargetTooLarge,
    TrustError,
    TrustStoreError,
    UntrustedMetadata,
    WrongTarget,
)

logger = logging.getLogger(__name__)

#: Largest bundle an agent accepts unless told otherwise (its signed length counts).
DEFAULT_MAX_TARGET_BYTES = 256 * 1024 * 1024
ROOT_FILE = "root.json"


@dataclass(frozen=True)
class ClientLimits:
    """Caps on what the client fetches, so a hostile repository cannot feed endless data.

    Metadata lengths are upper bounds used when no signed length is known
    (root, timestamp, and snapshot/targets when the repository omits lengths).
    """

    max_root_rotations: int = 32
    max_delegations: int = 32
    root_max_length: int = 512_000
    timestamp_max_length: int = 16_384
    snapshot_max_length: int = 2_000_000
    targets_max_length: int = 5_000_000

    @classmethod
    def ngclient_defaults(cls) -> ClientLimits:
        """python-tuf's own defaults (used by the conformance client)."""
        config = UpdaterConfig()
        return cls(
            max_root_rotations=config.max_root_rotations,
            max_delegations=config.max_delegations,
            root_max_length=config.root_max_length,
            timestamp_max_length=config.timestamp_max_length,
            snapshot_max_length=config.snapshot_max_length,
            targets_max_length=config.targets_max_length,
        )

    def to_config(self, user_agent: str | None = None) -> UpdaterConfig:
        """The ngclient configuration for these limits."""
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=self.max_delegations,
            root_max_length=self.root_max_length,
            timestamp_max_length=self.timestamp_max_length,
            snapshot_max_length=self.snapshot_max_length,
            targets_max_length=self.targets_max_length,
            app_user_agent=user_agent,
        )


@dataclass(frozen=True)
class TargetInfo:
    """A target as the signed targets metadata describes it."""

    name: str
    length: int
    hashes: Mapping[str, str]
    custom: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str | None:
        """The signed sha256 of the bundle (bsi's repository always signs one)."""
        return self.hashes.get(model.HASH_ALGORITHM)

    def supplement_fields(self) -> SupplementFields:
        """The supplement's fields bsi signed under ``custom["bsi"]``.

        Raises :class:`WrongTarget` naming the field when they are missing or
        unreadable: a target bsi cannot place is not for this device.
        """
        try:
            return read_supplement_fields(
                self.custom.get(model.CUSTOM_NAMESPACE), source=f"target {self.name!r}"
            )
        except InvalidInput as error:
            raise WrongTarget(error.message, hint=error.hint) from None

    @classmethod
    def from_target_file(cls, target: TargetFile) -> TargetInfo:
        """Read a TUF ``TargetFile``."""
        custom = target.unrecognized_fields.get("custom")
        return cls(
            name=target.path,
            length=target.length,
            hashes=dict(target.hashes),
            custom=dict(custom) if isinstance(custom, Mapping) else {},
        )


def verify_root(root: bytes) -> None:
    """Refuse with :class:`UntrustedMetadata` unless ``root`` is root metadata signed by itself.

    The TUF specification (5.2) starts a client from a root it trusts out of
    band; bsi still checks the bytes are one, signed by its own threshold.
    """
    try:
        md = Metadata[Root].from_bytes(root)
    except (tuf_errors.RepositoryError, ValueError, TypeError) as exc:
        raise UntrustedMetadata(f"the trusted root is not TUF root metadata: {exc}") from None
    if not isinstance(md.signed, Root):
        raise UntrustedMetadata(f"the trusted root holds {md.signed.type} metadata, not root")
    status = model.signature_status(md, md.signed)
    if not status.verified:
        raise UntrustedMetadata(f"the trusted root is not signed by itself: {status.describe()}")


def trust_root(
    metadata_dir: Path, root: bytes, *, verify: bool = True, replace: bool = False
) -> Path:
    """Install ``root`` as the device's trust anchor, ``<metadata_dir>/root.json``.

    With ``verify`` the bytes must be root metadata signed by its own threshold.
    An existing anchor is only replaced with ``replace``.
    """
    metadata_dir = Path(metadata_dir)
    if verify:
        verify_root(root)
    path = metadata_dir / ROOT_FILE
    try:
        metadata_dir.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not replace:
                raise RepositoryExists(
                    f"{str(path)!r} already holds a trusted root",
                    hint="a device keeps following root rotations from it; replace it only "
                    "to re-provision",
                )
            path.unlink()
        _fs.write_atomic(path, root, mode=0o644)
    except OSError as exc:
        raise TrustStoreError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    return path


class _RecordingFetcher(FetcherInterface):
    """Delegates to another fetcher and remembers the last URL, to name it in errors."""

    def __init__(self, inner: FetcherInterface) -> None:
        self._inner = inner
        self.last_url: str | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last_url = url
        return self._inner.fetch(url)


def _translate(
    exc: Exception, doing: str, *, target: bool = False, url: str | None = None
) -> TrustError:
    """One bsi error for a python-tuf (or OS) failure."""
    message = f"{doing}: {exc}" if str(exc) else f"{doing}: {type(exc).__name__}"
    if url and isinstance(exc, tuf_errors.DownloadError | tuf_errors.LengthOrHashMismatchError):
        message = f"{message} [{url}]"
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return MetadataExpired(
            message, hint="the repository did not re-sign it in time: a frozen or stale mirror"
        )
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return RollbackRefused(message, hint="the repository served older metadata than trusted")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        if target:
            return TargetRejected(message, hint="the bundle is not the one the metadata signed")
        return UntrustedMetadata(
            message, hint="metadata does not match what snapshot/timestamp pinned"
        )
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return UntrustedMetadata(message, hint="signature threshold not met")
    if isinstance(exc, tuf_errors.RepositoryError):
        return UntrustedMetadata(message)
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        if target:
            return TargetTooLarge(message, hint="the server sent more than the signed length")
        return MetadataTooLarge(message, hint="the server sent more than the allowed length")
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return RepositoryUnavailable(message)
    if isinstance(exc, tuf_errors.DownloadError):
        return RepositoryUnavailable(message)
    if isinstance(exc, OSError):
        return TrustStoreError(message)
    return TrustError(message)


_TRANSLATED = (tuf_errors.RepositoryError, tuf_errors.DownloadError, OSError, ValueError)


@contextlib.contextmanager
def _guard(
    doing: str, *, target: bool = False, fetcher: _RecordingFetcher | None = None
) -> Iterator[None]:
    try:
        yield
    except TrustError:
        raise
    except _TRANSLATED as exc:
        url = fetcher.last_url if fetcher is not None else None
        raise _translate(exc, doing, target=target, url=url) from exc


class TrustedClient:
    """Fetch and verify targets from a bsi (or any TUF) repository.

    ``metadata_dir`` holds the trusted metadata (``root.json`` first, see
    :func:`trust_root`); it must be private to this client. One instance serves
    one refresh: :meth:`refresh` (or the first lookup) loads fresh metadata, and
    later lookups and downloads use exactly that verified state. Call
    :meth:`refresh` again for a new state.
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_url: str,
        targets_url: str | None = None,
        *,
        max_target_bytes: int | None = DEFAULT_MAX_TARGET_BYTES,
        limits: ClientLimits | None = None,
        fetcher: FetcherInterface | None = None,
        bootstrap_root: bytes | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.metadata_dir = Path(metadata_dir)
        self.metadata_url = metadata_url
        self.targets_url = targets_url
        self.max_target_bytes = max_target_bytes
        self.limits = limits or ClientLimits()
        self._fetcher = _RecordingFetcher(fetcher or Urllib3Fetcher(app_user_agent=user_agent))
        self._bootstrap = bootstrap_root
        self._user_agent = user_agent
        self._updater: Updater | None = None

    def _new_updater(self) -> Updater:
        if self._bootstrap is None and not (self.metadata_dir / ROOT_FILE).exists():
            raise TrustStoreError(
                f"no trusted root in {str(self.metadata_dir)!r}",
                hint="install the repository's root metadata first (trust_root / tuf-client init)",
            )
        with _guard(f"loading trusted metadata from {str(self.metadata_dir)!r}"):
            return Updater(
                str(self.metadata_dir),
                self.metadata_url,
                target_base_url=self.targets_url,
                fetcher=self._fetcher,
                config=self.limits.to_config(self._user_agent),
                bootstrap=self._bootstrap,
            )

    def refresh(self) -> None:
        """Load and verify fresh top-level metadata (root, timestamp, snapshot, targets)."""
        updater = self._new_updater()
        self._updater = None
        with _guard(f"refreshing TUF metadata from {self.metadata_url}", fetcher=self._fetcher):
            updater.refresh()
        self._updater = updater

    def _current(self) -> Updater:
        if self._updater is None:
            self.refresh()
        assert self._updater is not None
        return self._updater

    def _target_file(self, name: str) -> TargetFile:
        updater = self._current()
        with _guard(f"looking up target {name!r}", fetcher=self._fetcher):
            target = updater.get_targetinfo(name)
        if target is None:
            raise TargetNotFound(f"no signed target {name!r} in {self.metadata_url}")
        return target

    def target_info(self, name: str) -> TargetInfo:
        """Length, hashes and signed custom metadata of target ``name``."""
        return TargetInfo.from_target_file(self._target_file(name))

    def expect_target(
        self,
        name: str,
        **wanted: object,
    ) -> TargetInfo:
        """Target ``name`` if its signed metadata says it is for this device and build.

        ``wanted`` holds the signed ``custom.bsi`` fields the device relies on
        (``platform``, ``supplemental_build`` and the base: ``prerequisite_build``
        or ``prerequisite``, and ``fixed_in``), in their document form. A
        bundle signed for another platform, prerequisite or supplemental
        build is refused with :class:`WrongTarget`, even though its signature
        is good: a server (or mirror) steering a device to the wrong
        supplement is an attack TUF's signature alone does not catch.
        """
        missing = {"platform", "supplemental_build"} - set(wanted)
        if missing:
            raise TypeError(f"expect_target needs {', '.join(sorted(missing))}")
        info = self.target_info(name)
        signed = info.supplement_fields().document()
        mismatches = [
            f"{key} {_quoted(signed.get(key))} where this device needs {value!r}"
            for key, value in wanted.items()
            if signed.get(key) != value
        ]
        if mismatches:
            raise WrongTarget(
                f"target {name!r} is not for this device: signed " + ", ".join(mismatches),
                hint="the server offered a supplement for another platform or build",
            )
        return info

    def cached(
        self, target: str | TargetInfo, dest_dir: Path, *, filename: str | None = None
    ) -> Path | None:
        """The already downloaded, still matching file for ``target``, or None."""
        target_file = self._resolve(target)
        path = Path(dest_dir) / (filename or _default_filename(target_file.path))
        try:
            with path.open("rb") as handle:
                target_file.verify_length_and_hashes(handle)
        except (OSError, tuf_errors.LengthOrHashMismatchError):
            return None
        return path

    def _resolve(self, target: str | TargetInfo) -> TargetFile:
        name = target if isinstance(target, str) else target.name
        target_file = self._target_file(name)
        if isinstance(target, TargetInfo) and (
            target.length != target_file.length or dict(target.hashes) != target_file.hashes
        ):
            raise TargetRejected(
                f"target {name!r} changed since it was looked up",
                hint="look it up (expect_target) again after refresh",
            )
        return target_file

    def download(
        self, target: str | TargetInfo, dest_dir: Path, *, filename: str | None = None
    ) -> Path:
        """Download and verify ``target`` into ``dest_dir``; return its path.

        The file appears under its final name only after its length and hashes
        matched the signed metadata; on any refusal nothing is left in
        ``dest_dir``. A file already there with the signed length and hashes is
        returned without downloading again.
        """
        if self.targets_url is None:
            raise TrustError("this client has no targets URL to download from")
        target_file = self._resolve(target)
        name = target_file.path
        if self.max_target_bytes is not None and target_file.length > self.max_target_bytes:
            raise TargetTooLarge(
                f"target {name!r} is signed as {target_file.length} bytes, over this "
                f"device's limit of {self.max_target_bytes}"
            )
        dest_dir = Path(dest_dir)
        final = dest_dir / (filename or _default_filename(name))
        cached = self.cached(target_file.path, dest_dir, filename=final.name)
        if cached is not None:
            logger.debug("target %s already downloaded to %s", name, cached)
            return cached
        updater = self._current()
        with _guard(f"creating {str(dest_dir)!r}"):
            dest_dir.mkdir(parents=True, exist_ok=True)
        # ngclient verifies in a private temporary file and only then writes here.
        temp = dest_dir / f".{final.name}.{secrets.token_hex(8)}.part"
        try:
            with _guard(f"downloading target {name!r}", target=True, fetcher=self._fetcher):
                updater.download_target(target_file, filepath=str(temp))
                os.replace(temp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        return final


def _quoted(value: object) -> str:
    return "missing" if value is None else repr(value)


def _default_filename(name: str) -> str:
    base = posixpath.basename(name)
    if base in ("", ".", ".."):
        raise TargetRejected(f"target name {name!r} has no usable file name")
    return base
