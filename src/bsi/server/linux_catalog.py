"""The Linux part of the catalogue, read from the signed TUF repository the server hosts.

``bsi supplement publish`` signs each supplement's fields into the targets
metadata; the server turns them into catalogue entries, so the catalogue and
what devices can verify never disagree. A publisher's pause or withdrawal,
set through the admin API, survives every re-read (see ``Catalog.merged``).
"""

from pathlib import Path

from bsi.domain.catalog import Catalog
from bsi.domain.supplement_fields import read_supplement_fields
from bsi.trust.repository import published_supplements


def catalog_from_repository(repo_dir: Path) -> Catalog:
    """Every supplement ``repo_dir`` signs now, with the SHA-256 of its signed bundle.

    Raises :class:`~bsi.errors.InvalidInput` naming the target and the field
    when one target's signed fields cannot be read: the catalogue is then left
    as it was (a target bsi cannot place is never offered).
    """
    source = f"TUF repository {repo_dir}"
    supplements = tuple(
        read_supplement_fields(fields, source=f"{source}: target {name}").supplement(
            target_sha256=sha256
        )
        for name, (fields, sha256) in sorted(published_supplements(repo_dir).items())
    )
    return Catalog(supplements=supplements, source=source)
