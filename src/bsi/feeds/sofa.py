"""SOFA (macadmins/sofa) feeds: the v2 per-platform feeds and the BSI history.

SOFA adds what GDMF lacks — CVEs, the release that supersedes each
supplement, and the board-id table that ties a Mac's model identifier to the
device ids GDMF lists — but it knows builds only for recent releases: older
ones carry ``Build: ""``, kept here as an unknown build rather than guessed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace

from bsi.domain.catalog import Catalog, Release, Supersession, Supplement
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ProductVersion, SupplementVersion
from bsi.errors import FeedError
from bsi.feeds.reading import (
    Node,
    collapse_duplicates,
    maybe,
    release_key,
    supplement_key,
)
from bsi.strict import read_json_lines

# Product names SOFA writes ("iOS and iPadOS") name more than the platform;
# GDMF files iPadOS under iOS, and so does bsi.
_PLATFORM_ALIASES = {"iPadOS": "iOS"}
_MACOS_ONLY_SECTIONS = ("InstallationApps", "XProtectPayloads", "XProtectPlistConfigData")


def parse_sofa(document: object, *, source: str, platform: str | None = None) -> Catalog:
    """The catalogue in one SOFA v2 feed (``macos_data_feed.json``, ``ios_data_feed.json``).

    A feed covers a single platform; ``platform`` names it when its content
    does not tell.
    """
    root = Node(document, source=source)
    os_versions = root.get("OSVersions").items()
    name = platform or _platform_of(root, os_versions)
    releases = [r for os_version in os_versions for r in _releases(name, os_version)]
    supplements = [_supplement(name, entry) for entry in _bsi_entries(root)]
    return Catalog(
        releases=collapse_duplicates(releases, release_key),
        supplements=collapse_duplicates(supplements, supplement_key),
        device_ids_by_model=_board_ids_by_model(root),
        source=source,
    )


def parse_sofa_history(text: str, *, source: str) -> Catalog:
    """The catalogue in SOFA's ``bsi_history.ndjson``: one JSON object per line.

    The history keeps what GDMF has dropped — chiefly the prerequisite
    releases of supplements (macOS 26.3.1 ``25D2128``), which GDMF stops
    listing once a newer release ships and SOFA lists without a build. Rows
    with a ``prerequisite_build`` are supplements, the others releases.
    """
    releases: list[Release] = []
    supplements: list[Supplement] = []
    models: defaultdict[str, set[str]] = defaultdict(set)
    for number, document in read_json_lines(text, source=source, error=FeedError):
        row = Node(document, source=source, path=f"line {number}")
        if row.has("prerequisite_build"):
            supplements.append(_history_supplement(row))
        else:
            releases.append(_history_release(row))
        for detail in maybe(row.opt("device_details"), Node.items) or ():
            model = maybe(detail.opt("device_id"), Node.text)
            if model:
                models[model].add(detail.get("board_id").text())
    return Catalog(
        releases=collapse_duplicates(releases, release_key),
        supplements=collapse_duplicates(supplements, supplement_key),
        device_ids_by_model={model: frozenset(ids) for model, ids in models.items()},
        source=source,
    )


def _platform_of(root: Node, os_versions: list[Node]) -> str:
    """The platform a feed covers, from the product names of its releases."""
    for os_version in os_versions:
        latest = os_version.opt("Latest")
        product = maybe(latest.opt("ProductName") if latest else None, Node.text) or ""
        if product.split():
            first_word = product.split()[0]
            return _PLATFORM_ALIASES.get(first_word, first_word)
    if any(root.has(section) for section in _MACOS_ONLY_SECTIONS):
        return "macOS"
    raise root.error(
        "cannot tell which platform this SOFA feed covers",
        hint="pass the platform explicitly, e.g. platform='macOS'",
    )


def _releases(platform: str, os_version: Node) -> Iterator[Release]:
    """One release per build of each security release of one major version.

    SOFA's recent macOS releases leave out ``SupportedDevices`` that the
    same version's ``Latest`` entry has; those are borrowed, as leaving them
    empty would offer the release to every Mac.
    """
    latest = os_version.opt("Latest")
    latest_devices: dict[ProductVersion, tuple[str, ...]] = {}
    if latest is not None and latest.has("SupportedDevices"):
        version = latest.get("ProductVersion").product_version()
        latest_devices[version] = latest.get("SupportedDevices").strings()
    for entry in os_version.get("SecurityReleases").items():
        version = entry.get("ProductVersion").product_version()
        devices = maybe(entry.opt("SupportedDevices"), Node.strings)
        if devices is None:
            devices = latest_devices.get(version, ())
        release = Release(
            platform=platform,
            version=version,
            build=None,
            posted=maybe(entry.opt("ReleaseDate"), Node.day),
            expires=maybe(entry.opt("ExpirationDate"), Node.day),
            supported_devices=frozenset(devices),
            cves=maybe(entry.opt("CVEs"), Node.cve_ids) or (),
        )
        for build in _builds(entry):
            yield replace(release, build=build)


def _builds(entry: Node) -> list[Build | None]:
    """``Build`` first, then the rest of ``AllBuilds``; ``[None]`` when SOFA knows none."""
    builds: list[Build | None] = []
    primary = maybe(entry.opt("Build"), Node.build_or_none)
    if primary is not None:
        builds.append(primary)
    for build in maybe(entry.opt("AllBuilds"), Node.items) or ():
        parsed = build.build()
        if parsed not in builds:
            builds.append(parsed)
    return builds or [None]


def _bsi_entries(root: Node) -> Iterator[Node]:
    """Every supplement in ``BackgroundSecurityImprovements`` (``{major: [entry, ...]}``)."""
    section = root.opt("BackgroundSecurityImprovements")
    for _major, listing in section.entries() if section else ():
        yield from listing.items()


def _supplement(platform: str, entry: Node) -> Supplement:
    return Supplement(
        platform=platform,
        version=SupplementVersion(
            entry.get("Version").product_version(),
            entry.get("VersionExtra").extra_version(),
        ),
        build=entry.get("Build").build(),
        prerequisite=Prerequisite.of_build(entry.get("PrerequisiteBuild").build()),
        supported_devices=frozenset(maybe(entry.opt("SupportedDevices"), Node.strings) or ()),
        cves=maybe(entry.opt("CVEs"), Node.cve_ids) or (),
        posted=maybe(entry.opt("PostingDate"), Node.day),
        expires=maybe(entry.opt("ExpirationDate"), Node.day),
        superseded_by=maybe(entry.opt("SupersededBy"), _supersession),
        security_info=maybe(entry.opt("SecurityInfo"), Node.text),
    )


def _supersession(node: Node) -> Supersession:
    return Supersession(
        version=node.get("ProductVersion").product_version(),
        build=maybe(node.opt("Build"), Node.build_or_none),
        released=maybe(node.opt("ReleaseDate"), Node.day),
    )


def _board_ids_by_model(root: Node) -> dict[str, frozenset[str]]:
    """``Devices`` inverted: SOFA maps a Mac's board id to its model identifier.

    The iOS feed keys ``Devices`` by model identifier already, which is what
    GDMF lists for iPhones and iPads; its entries have no ``DeviceID`` and add
    nothing here.
    """
    models: defaultdict[str, set[str]] = defaultdict(set)
    devices = root.opt("Devices")
    for board_id, device in devices.entries() if devices else ():
        model = maybe(device.opt("DeviceID"), Node.text)
        if model:
            models[model].add(board_id)
    return {model: frozenset(ids) for model, ids in models.items()}


def _history_release(row: Node) -> Release:
    return Release(
        platform=row.get("platform").text(),
        version=row.get("product_version").product_version(),
        build=row.get("build").build(),
        posted=maybe(row.opt("posting_date"), Node.day),
        supported_devices=frozenset(maybe(row.opt("supported_devices"), Node.strings) or ()),
    )


def _history_supplement(row: Node) -> Supplement:
    return Supplement(
        platform=row.get("platform").text(),
        version=SupplementVersion(
            row.get("product_version").product_version(),
            row.get("product_version_extra").extra_version(),
        ),
        build=row.get("build").build(),
        prerequisite=Prerequisite.of_build(row.get("prerequisite_build").build()),
        supported_devices=frozenset(maybe(row.opt("supported_devices"), Node.strings) or ()),
        posted=maybe(row.opt("posting_date"), Node.day),
    )
