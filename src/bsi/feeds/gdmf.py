"""Apple's GDMF document (``gdmf.apple.com/v2/pmv``): releases and supplements.

GDMF is Apple's own word on what it offers, so its sections are read as they
are: ``PublicAssetSets`` gives releases, ``PublicBackgroundSecurityImprovements``
(``PublicRapidSecurityResponses`` before the rename) gives supplements.
``AssetSets`` (builds Apple offers to managed devices only, such as older
versions an MDM may still pin) is left out: bsi judges devices against what
Apple offers everyone.
"""

from __future__ import annotations

from collections.abc import Iterator

from bsi.domain.catalog import Catalog, Release, Supplement, classify
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import SupplementVersion
from bsi.feeds.reading import (
    Node,
    collapse_duplicates,
    maybe,
    release_key,
    supplement_key,
)

RELEASE_SECTION = "PublicAssetSets"
SUPPLEMENT_SECTIONS = ("PublicBackgroundSecurityImprovements", "PublicRapidSecurityResponses")
SECTIONS = (RELEASE_SECTION, *SUPPLEMENT_SECTIONS)


def looks_like_gdmf(document: object) -> bool:
    """Whether ``document`` is GDMF, bare or inside SOFA's ``{"etag", "data"}`` cache."""
    if not isinstance(document, dict):
        return False
    if any(section in document for section in SECTIONS):
        return True
    data = document.get("data")
    return isinstance(data, dict) and any(section in data for section in SECTIONS)


def parse_gdmf(document: object, *, source: str) -> Catalog:
    """The catalogue in a GDMF document; a broken entry refuses the whole document."""
    root = _unwrap(Node(document, source=source))
    releases = [_release(platform, entry) for platform, entry in _listings(root, RELEASE_SECTION)]
    supplements = [
        _supplement(platform, entry)
        for section in SUPPLEMENT_SECTIONS
        for platform, entry in _listings(root, section)
    ]
    # GDMF is Apple's live listing: a supplement it stops listing was withdrawn.
    live = {platform for section in SUPPLEMENT_SECTIONS for platform, _ in _sections(root, section)}
    return Catalog(
        releases=tuple(classify(r) for r in collapse_duplicates(releases, release_key)),
        supplements=tuple(classify(s) for s in collapse_duplicates(supplements, supplement_key)),
        source=source,
        live_platforms=frozenset(live) | {s.platform for s in supplements},
    )


def _unwrap(root: Node) -> Node:
    """The GDMF document itself, looking inside SOFA's cache wrapper if needed."""
    if any(root.has(section) for section in SECTIONS):
        return root
    data = root.opt("data")
    if data is not None and any(data.has(section) for section in SECTIONS):
        return data
    raise root.error(
        "not a GDMF document: it has none of " + ", ".join(SECTIONS),
        hint="expected Apple's gdmf.apple.com/v2/pmv document",
    )


def _sections(root: Node, section: str) -> Iterator[tuple[str, Node]]:
    node = root.opt(section)
    if node is not None:
        yield from node.entries()


def _listings(root: Node, section: str) -> Iterator[tuple[str, Node]]:
    """Each entry of a ``{platform: [entry, ...]}`` section, with its platform."""
    node = root.opt(section)
    if node is None:
        return
    for platform, listing in node.entries():
        for entry in listing.items():
            yield platform, entry


def _release(platform: str, entry: Node) -> Release:
    return Release(
        platform=platform,
        version=entry.get("ProductVersion").product_version(),
        build=entry.get("Build").build(),
        posted=maybe(entry.opt("PostingDate"), Node.day),
        expires=maybe(entry.opt("ExpirationDate"), Node.day),
        supported_devices=frozenset(maybe(entry.opt("SupportedDevices"), Node.strings) or ()),
    )


def _supplement(platform: str, entry: Node) -> Supplement:
    return Supplement(
        platform=platform,
        version=SupplementVersion(
            entry.get("ProductVersion").product_version(),
            entry.get("ProductVersionExtra").extra_version(),
        ),
        build=entry.get("Build").build(),
        prerequisite=Prerequisite.of_build(entry.get("PrerequisiteBuild").build()),
        supported_devices=frozenset(maybe(entry.opt("SupportedDevices"), Node.strings) or ()),
        posted=maybe(entry.opt("PostingDate"), Node.day),
        expires=maybe(entry.opt("ExpirationDate"), Node.day),
        listed_live=True,
    )
