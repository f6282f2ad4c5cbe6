"""bsi's own catalogue format: a catalogue written down exactly as bsi holds it.

This is how Linux supplements are published, and how an Apple catalogue
assembled from several feeds is kept and shipped as one file. Its fields
mirror :class:`~bsi.domain.catalog.Release` and
:class:`~bsi.domain.catalog.Supplement` in snake_case, so that
``parse_bsi_catalog(dump_bsi_catalog(c), source=c.source) == c``::

    {"format": "bsi-catalog/1",
     "releases": [{"platform": "macOS", "version": "26.3.1", "build": "25D2128",
                   "posted": "2026-03-04", "expires": null,
                   "supported_devices": [], "cves": []}],
     "supplements": [{"platform": "macOS", "version": "26.3.1 (a)",
                      "build": "25D771280a", "prerequisite_build": "25D2128",
                      "supported_devices": ["J413AP"], "cves": ["CVE-2026-20643"],
                      "cvss": {"CVE-2026-20643": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"},
                      "posted": "2026-03-17", "expires": "2026-11-20",
                      "state": "published", "security_info": null,
                      "superseded_by": {"version": "26.4", "build": null,
                                        "released": "2026-03-24"}}],
     "device_models": {"Mac14,2": ["J413AP"]}}

Only ``platform``, ``version`` and, for supplements, ``build`` and the base
are required. A supplement names its base by ``prerequisite_build`` (as
above) or by ``prerequisite`` (installed package versions or file digests),
and may name the package versions that fold it in (``fixed_in``); see
:mod:`bsi.domain.prerequisite`::

    {"platform": "debian", "version": "12 (a)", "build": "12L1000a",
     "prerequisite": {"manager": "dpkg", "packages": [
         {"package": "libssl3", "version": "3.0.19-1~deb12u2", "arch": "amd64"}]},
     "fixed_in": [{"package": "libssl3", "version": "3.0.20-1~deb12u2"}],
     "target_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}

``target_sha256`` (Linux supplements the server's TUF repository signs) is the
SHA-256 of the cryptex the build was first published with: an agent refuses a
download whose signed digest differs, so a build signed again with other bytes
is never installed, even before the server notices and pauses it.

Served to an agent (``GET /v1/ddm/catalog``), the document also carries the
device's holds (``device``, :func:`bsi.domain.rollout.dump_holds`) and
:data:`LATEST_RETRY`.
"""

from __future__ import annotations

from datetime import date

from bsi.domain.catalog import Catalog, Release, Supersession, Supplement, SupplementState
from bsi.domain.cves import dump_cvss_vectors, read_cvss_vectors
from bsi.domain.inventory import check_platform_id
from bsi.domain.prerequisite import BASE_FIELDS, dump_base, is_sha256, read_base
from bsi.domain.versions import Build
from bsi.errors import InvalidInput
from bsi.feeds.reading import Node, maybe

FORMAT = "bsi-catalog/1"

# A publisher sets these; the others (expired, superseded, ...) follow from
# the calendar, and writing them down would freeze a moment into the file.
PUBLISHER_STATES = frozenset(
    {SupplementState.PUBLISHED, SupplementState.PAUSED, SupplementState.WITHDRAWN}
)


LATEST_RETRY = "latest_retry"
"""Key, in the catalogue served to one agent, of the newest retry allowance's id that
concerns it (``POST /v1/admin/supplements/{platform}/{build}/allow-retry``; 0: none), so
the agent asks ``GET /v1/ddm/retries`` only when it holds a failure such an allowance
could lift, not at every check-in."""


def looks_like_bsi_catalog(document: object) -> bool:
    return isinstance(document, dict) and "format" in document


def parse_bsi_catalog(document: object, *, source: str) -> Catalog:
    """The catalogue in a bsi catalogue document; a broken entry refuses it whole."""
    root = Node(document, source=source)
    format_node = root.get("format")
    if format_node.text() != FORMAT:
        raise format_node.error(
            f"{format_node.text()!r} is not a catalogue format this bsi reads",
            hint=f"expected {FORMAT!r}",
        )
    models = root.opt("device_models")
    return Catalog(
        releases=tuple(_release(n) for n in maybe(root.opt("releases"), Node.items) or ()),
        supplements=tuple(_supplement(n) for n in maybe(root.opt("supplements"), Node.items) or ()),
        device_ids_by_model={
            model: frozenset(ids.strings()) for model, ids in (models.entries() if models else ())
        },
        source=source,
    )


def dump_bsi_catalog(catalog: Catalog) -> dict[str, object]:
    """``catalog`` as a JSON-ready document; lists of devices are sorted for stable diffs."""
    return {
        "format": FORMAT,
        "releases": [_dump_release(r) for r in catalog.releases],
        "supplements": [_dump_supplement(s) for s in catalog.supplements],
        "device_models": {
            model: sorted(ids) for model, ids in sorted(catalog.device_ids_by_model.items())
        },
    }


def _release(node: Node) -> Release:
    return Release(
        platform=_platform(node.get("platform")),
        version=node.get("version").product_version(),
        build=maybe(node.opt("build"), Node.build),
        posted=maybe(node.opt("posted"), Node.day),
        expires=maybe(node.opt("expires"), Node.day),
        supported_devices=frozenset(maybe(node.opt("supported_devices"), Node.strings) or ()),
        cves=maybe(node.opt("cves"), Node.strings) or (),
    )


def _supplement(node: Node) -> Supplement:
    fields = node.fields()
    prerequisite, fixed_in = node.document(
        lambda _, where: read_base({k: fields.get(k) for k in BASE_FIELDS}, where)
    )
    cves = maybe(node.opt("cves"), Node.strings) or ()
    return Supplement(
        platform=_platform(node.get("platform")),
        version=node.get("version").supplement_version(),
        build=node.get("build").build(),
        prerequisite=prerequisite,
        fixed_in=fixed_in,
        supported_devices=frozenset(maybe(node.opt("supported_devices"), Node.strings) or ()),
        cves=cves,
        cvss=maybe(
            node.opt("cvss"),
            lambda cvss: cvss.document(lambda value, where: read_cvss_vectors(value, cves, where)),
        )
        or (),
        posted=maybe(node.opt("posted"), Node.day),
        expires=maybe(node.opt("expires"), Node.day),
        published_state=maybe(node.opt("state"), _state) or SupplementState.PUBLISHED,
        superseded_by=maybe(node.opt("superseded_by"), _supersession),
        security_info=maybe(node.opt("security_info"), Node.text),
        listed_live=maybe(node.opt("listed_live"), Node.boolean) or False,
        target_sha256=maybe(node.opt("target_sha256"), _sha256),
    )


def _platform(node: Node) -> str:
    """Apple's names as Apple spells them, any other as os-release's lower-case ``ID``."""
    try:
        return check_platform_id(node.text())
    except InvalidInput as error:
        raise node.error(error.message, hint=error.hint) from None


def _sha256(node: Node) -> str:
    text = node.text()
    if not is_sha256(text):
        raise node.error(f"{text!r} is not a SHA-256", hint="64 lower-case hexadecimal digits")
    return text


def _state(node: Node) -> SupplementState:
    text = node.text()
    if text not in PUBLISHER_STATES:
        raise node.error(
            f"{text!r} is not a state a publisher sets",
            hint="expected " + ", ".join(sorted(PUBLISHER_STATES)),
        )
    return SupplementState(text)


def _supersession(node: Node) -> Supersession:
    return Supersession(
        version=node.get("version").product_version(),
        build=maybe(node.opt("build"), Node.build),
        released=maybe(node.opt("released"), Node.day),
    )


def _dump_release(release: Release) -> dict[str, object]:
    return {
        "platform": release.platform,
        "version": str(release.version),
        "build": _text(release.build),
        "posted": _day(release.posted),
        "expires": _day(release.expires),
        "supported_devices": sorted(release.supported_devices),
        "cves": list(release.cves),
    }


def _dump_supplement(supplement: Supplement) -> dict[str, object]:
    if supplement.published_state not in PUBLISHER_STATES:
        raise ValueError(
            f"{supplement.display()}: state {supplement.published_state.value!r} "
            "follows from the calendar and is not written down"
        )
    superseded_by = supplement.superseded_by
    return {
        "platform": supplement.platform,
        "version": str(supplement.version),
        "build": str(supplement.build),
        **dump_base(supplement.prerequisite, supplement.fixed_in),
        "supported_devices": sorted(supplement.supported_devices),
        "cves": list(supplement.cves),
        **({"cvss": dump_cvss_vectors(supplement.cvss)} if supplement.cvss else {}),
        "posted": _day(supplement.posted),
        "expires": _day(supplement.expires),
        "state": supplement.published_state.value,
        "superseded_by": None
        if superseded_by is None
        else {
            "version": str(superseded_by.version),
            "build": _text(superseded_by.build),
            "released": _day(superseded_by.released),
        },
        "security_info": supplement.security_info,
        **({"listed_live": True} if supplement.listed_live else {}),
        **({"target_sha256": supplement.target_sha256} if supplement.target_sha256 else {}),
    }


def _text(build: Build | None) -> str | None:
    return None if build is None else str(build)


def _day(day: date | None) -> str | None:
    return None if day is None else day.isoformat()
