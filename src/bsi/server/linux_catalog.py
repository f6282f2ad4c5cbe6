"""The Linux part of the catalogue, read from the signed TUF repository the server hosts.

``bsi supplement publish`` signs each supplement's fields into the targets
metadata; the server turns them into catalogue entries, so the catalogue and
what devices can verify never disagree. A publisher's pause or withdrawal,
set through the admin API, survives every re-read (see ``Catalog.merged``).
"""

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.prerequisite import read_base
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import BsiError
from bsi.trust.repository import published_supplements


def catalog_from_repository(repo_dir: Path) -> Catalog:
    supplements = []
    for name, (fields, sha256) in sorted(published_supplements(repo_dir).items()):
        try:
            supplements.append(replace(_supplement(fields), target_sha256=sha256))
        except (BsiError, KeyError, TypeError, ValueError) as error:
            raise BsiError(
                f"target {name} carries unreadable supplement fields: {error}"
            ) from error
    return Catalog(supplements=tuple(supplements), source=f"TUF repository {repo_dir}")


def _supplement(fields: Mapping[str, Any]) -> Supplement:
    posted = fields.get("posted")
    prerequisite, fixed_in = read_base(fields)
    return Supplement(
        platform=str(fields["platform"]),
        version=SupplementVersion(
            ProductVersion.parse(str(fields["product_version"])),
            ExtraVersion.parse(str(fields["extra_version"])),
        ),
        build=Build.parse(str(fields["supplemental_build"])),
        prerequisite=prerequisite,
        fixed_in=fixed_in,
        cves=tuple(str(c) for c in fields.get("cves", ())),
        posted=date.fromisoformat(posted) if isinstance(posted, str) else None,
    )
