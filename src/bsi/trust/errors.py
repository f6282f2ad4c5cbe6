"""Errors of payload trust (TUF), on both the publisher's and the device's side.

Every one is a :class:`~bsi.errors.BsiError`, so entry points need no new
``except``. Where a trust error also means one of the generic kinds (a name that
does not exist, a write that would clobber something), it inherits that kind too,
so ``except NotFound`` keeps working.

::

    TrustError
    ├── UntrustedMetadata       TUF metadata failed verification: nothing was trusted
    │   ├── MetadataExpired         a role's metadata is past its expiry (freeze attack)
    │   ├── RollbackRefused         a version older than (or equal to) the trusted one
    │   └── MetadataTooLarge        metadata longer than its limit (endless data)
    ├── RepositoryUnavailable   the repository could not be reached or answered an error
    ├── TargetNotFound          (also NotFound) no signed target by that name
    ├── TargetRejected          a bundle that is not the one the metadata signed
    │   ├── TargetTooLarge          longer than its signed length or the device's limit
    │   └── WrongTarget             signed, but for another platform or build
    ├── TrustStoreError         the local trusted-metadata directory cannot be used
    ├── KeyFileError            a private or public key file is missing or unreadable
    ├── ThresholdNotMet         a role lacks the signatures its threshold needs
    ├── RepositoryExists        (also Conflict) keys or a repository are already there
    └── RepositoryStateError    the publisher's repository is missing or inconsistent
"""

from __future__ import annotations

from bsi.errors import BsiError, Conflict, NotFound


class TrustError(BsiError):
    """Base of every payload-trust error."""


class UntrustedMetadata(TrustError):
    """Metadata from the repository failed TUF verification; it was not trusted."""


class MetadataExpired(UntrustedMetadata):
    """Metadata past its expiry date: a frozen or stale repository."""


class RollbackRefused(UntrustedMetadata):
    """Metadata older than (or the same version as) what the device already trusts."""


class MetadataTooLarge(UntrustedMetadata):
    """Metadata longer than its configured limit (an endless-data attack)."""


class RepositoryUnavailable(TrustError):
    """The repository could not be reached, timed out or answered an HTTP error."""


class TargetNotFound(TrustError, NotFound):
    """No target of that name in the signed targets metadata."""


class TargetRejected(TrustError):
    """A downloaded bundle that does not match its signed length and hashes."""


class TargetTooLarge(TargetRejected):
    """A bundle longer than its signed length, or than the device accepts."""


class WrongTarget(TargetRejected):
    """A signed bundle whose signed custom metadata names another device or build."""


class TrustStoreError(TrustError):
    """The local directory of trusted metadata is missing, unreadable or unwritable."""


class KeyFileError(TrustError):
    """A key file is missing, unreadable, encrypted without a passphrase, or not ed25519."""


class ThresholdNotMet(TrustError):
    """A role's new metadata lacks the valid signatures its threshold requires."""


class RepositoryExists(TrustError, Conflict):
    """Keys or a repository are already there; bsi never overwrites them."""


class RepositoryStateError(TrustError):
    """The publisher's repository is missing, incomplete or inconsistent."""


class ClockTrouble(RepositoryStateError):
    """The signer's clock is behind what it already signed: what it would sign now
    would expire early, or already be expired for every device."""
