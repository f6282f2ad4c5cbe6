"""Payload trust: supplements signed and verified the TUF way (python-tuf).

The publisher's targets metadata signs every bundle (with the supplement's
fields as signed custom metadata); the server refreshes snapshot and timestamp
with online keys; the device verifies with ``tuf.ngclient`` before it stages
anything. The server decides *what* a device should install; TUF proves *that
it is authentic*, so a compromised server alone cannot make a device run
unsigned content.

Modules:

* :mod:`bsi.trust.model` — pure: new metadata versions, thresholds, signature counts;
* :mod:`bsi.trust.keys` — key files and ``init_keys`` (a new repository);
* :mod:`bsi.trust.repository` — stage, sign, finalize, publish, refresh, rotate;
* :mod:`bsi.trust.client` — :class:`TrustedClient`, the agent's verified downloads;
* :mod:`bsi.trust.conformance_client` — the tuf-conformance CLI (``bsi tuf-client``);
* :mod:`bsi.trust.errors` — :class:`TrustError` and its kinds.
"""

from __future__ import annotations

from bsi.trust.client import ClientLimits, TargetInfo, TrustedClient, trust_root, verify_root
from bsi.trust.errors import (
    KeyFileError,
    MetadataExpired,
    MetadataTooLarge,
    RepositoryExists,
    RepositoryStateError,
    RepositoryUnavailable,
    RollbackRefused,
    TargetNotFound,
    TargetRejected,
    TargetTooLarge,
    ThresholdNotMet,
    TrustError,
    TrustStoreError,
    UntrustedMetadata,
    WrongTarget,
)
from bsi.trust.keys import PASSPHRASE_ENV, InitResult, KeyFile, init_keys, load_signer
from bsi.trust.model import (
    DEFAULT_EXPIRIES,
    Expiries,
    SignatureStatus,
    expiries_from,
    parse_period,
    target_name,
)
from bsi.trust.repository import (
    PublishResult,
    RotationResult,
    available_signers,
    discard_staged,
    finalize,
    publish_target,
    refresh_timestamp,
    repository_status,
    rotate_key,
    sign_role,
    stage_role,
    stage_target,
    staged_status,
)

__all__ = [
    "DEFAULT_EXPIRIES",
    "PASSPHRASE_ENV",
    "ClientLimits",
    "Expiries",
    "InitResult",
    "KeyFile",
    "KeyFileError",
    "MetadataExpired",
    "MetadataTooLarge",
    "PublishResult",
    "RepositoryExists",
    "RepositoryStateError",
    "RepositoryUnavailable",
    "RollbackRefused",
    "RotationResult",
    "SignatureStatus",
    "TargetInfo",
    "TargetNotFound",
    "TargetRejected",
    "TargetTooLarge",
    "ThresholdNotMet",
    "TrustError",
    "TrustStoreError",
    "TrustedClient",
    "UntrustedMetadata",
    "WrongTarget",
    "available_signers",
    "discard_staged",
    "expiries_from",
    "finalize",
    "init_keys",
    "load_signer",
    "parse_period",
    "publish_target",
    "refresh_timestamp",
    "repository_status",
    "rotate_key",
    "sign_role",
    "stage_role",
    "stage_target",
    "staged_status",
    "target_name",
    "trust_root",
    "verify_root",
]
