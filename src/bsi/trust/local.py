"""Checking a bundle against a repository on local disk, the way a device would.

``bsi supplement verify --repo-dir`` must not trust the files it reads any
more than a device trusts the network: it runs the real TUF client workflow
(``tuf.ngclient`` through :class:`TrustedClient`) over the repository folder,
from a trust anchor, with a fetcher that reads files instead of URLs.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuf.api import exceptions as tuf_errors

from bsi.domain.supplement_fields import SupplementFields
from bsi.trust._tuf import FetcherInterface
from bsi.trust.client import TrustedClient
from bsi.trust.errors import TargetRejected
from bsi.trust.model import target_name

_CHUNK = 1024 * 1024


class LocalFetcher(FetcherInterface):
    """Serves ``file://`` URLs from disk; a missing file is a 404 to ngclient."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(unquote(urlparse(url).path))
        try:
            handle = path.open("rb")
        except FileNotFoundError as error:
            raise tuf_errors.DownloadHTTPError(f"{path} not found", 404) from error
        with handle:
            while chunk := handle.read(_CHUNK):
                yield chunk


def verify_published(
    repo_dir: Path,
    bundle: Path,
    fields: SupplementFields,
    *,
    trust_anchor: Path | None = None,
) -> str:
    """The target name under which ``repo_dir`` signs exactly ``bundle`` with ``fields``
    (the bundle manifest's; the signed posting day is not compared).

    ``trust_anchor`` is the root a device starts from (default: the
    repository's own ``1.root.json``, which proves only self-consistency).
    """
    repo = repo_dir.resolve()
    anchor = trust_anchor or repo / "metadata" / "1.root.json"
    name = target_name(fields.platform, fields.supplemental_build)
    with tempfile.TemporaryDirectory(prefix="bsi-verify-") as scratch:
        client = TrustedClient(
            Path(scratch),
            f"{repo.as_uri()}/metadata/",
            f"{repo.as_uri()}/targets/",
            fetcher=LocalFetcher(),
            bootstrap_root=anchor.read_bytes(),
        )
        client.refresh()
        info = client.expect_target(name, **fields.device_document())
    digest = hashlib.sha256()
    with bundle.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    if info.sha256 != digest.hexdigest() or info.length != bundle.stat().st_size:
        raise TargetRejected(
            f"{bundle} is not the bundle {repo_dir} signs as {name}",
            hint="its length or sha256 differs from the signed targets metadata",
        )
    if replace(info.supplement_fields(), posted=None) != replace(fields, posted=None):
        raise TargetRejected(f"the signed fields of {name} differ from the bundle's manifest")
    return name
