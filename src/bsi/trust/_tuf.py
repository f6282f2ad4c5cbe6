"""The python-tuf and securesystemslib names bsi uses, re-exported explicitly.

Those packages re-export their public classes from private modules without
marking them as re-exports, which ``mypy --strict`` (no implicit re-export)
reports at every import. Importing them once here keeps the rest of the trust
package checked normally.
"""

from __future__ import annotations

from securesystemslib.signer import (  # type: ignore[attr-defined]
    CryptoSigner as CryptoSigner,
)
from securesystemslib.signer import Key as Key  # type: ignore[attr-defined]
from securesystemslib.signer import Signer as Signer  # type: ignore[attr-defined]
from tuf.api.metadata import Metadata as Metadata
from tuf.api.metadata import MetaFile as MetaFile  # type: ignore[attr-defined]
from tuf.api.metadata import Root as Root  # type: ignore[attr-defined]
from tuf.api.metadata import Signed as Signed  # type: ignore[attr-defined]
from tuf.api.metadata import Snapshot as Snapshot  # type: ignore[attr-defined]
from tuf.api.metadata import TargetFile as TargetFile  # type: ignore[attr-defined]
from tuf.api.metadata import Targets as Targets  # type: ignore[attr-defined]
from tuf.api.metadata import Timestamp as Timestamp  # type: ignore[attr-defined]
from tuf.ngclient import FetcherInterface as FetcherInterface  # type: ignore[attr-defined]
from tuf.ngclient import Updater as Updater  # type: ignore[attr-defined]
from tuf.ngclient import UpdaterConfig as UpdaterConfig  # type: ignore[attr-defined]
