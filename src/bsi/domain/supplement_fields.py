"""The signed supplement fields: what a TUF target says about the supplement it carries.

``bsi supplement publish`` signs these fields, taken from the bundle's own
manifest, under the ``bsi`` key of the target's ``custom`` metadata; the
server turns them into its catalogue entry for the supplement, and a device
checks the ones that concern it before it downloads the bundle. Written and
read here only, so that publisher, server and device cannot read one
document two ways::

    {"platform": "debian", "product_version": "13.4", "extra_version": "(a)",
     "prerequisite_build": "12A100",        # or "prerequisite": {...}; see prerequisite.py
     "fixed_in": [...],                     # optional
     "supplemental_build": "12A100a",
     "cves": ["CVE-2026-0001"],             # optional
     "cvss": {"CVE-2026-0001": "CVSS:3.1/AV:N/..."},  # optional: vectors of some cves
     "posted": "2026-03-01"}                # optional: the day it was published (ISO 8601)

The set of fields is closed: a field this bsi does not know may be one that
changes which devices the supplement is for, so a document carrying one is
refused rather than half understood.

Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TypeVar

from bsi.domain.catalog import Supplement
from bsi.domain.cves import CvssVectors, dump_cvss_vectors, parse_cve_id, read_cvss_vectors
from bsi.domain.inventory import check_platform_id
from bsi.domain.prerequisite import (
    BASE_FIELDS,
    PackageVersion,
    Prerequisite,
    document_fields,
    document_list,
    document_text,
    dump_base,
    located,
    read_base,
)
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidInput

T = TypeVar("T")

CUSTOM_NAMESPACE = "bsi"
"""The key of a TUF target's ``custom`` metadata under which bsi signs these fields."""
PLATFORM = "platform"
PRODUCT_VERSION = "product_version"
EXTRA_VERSION = "extra_version"
SUPPLEMENTAL_BUILD = "supplemental_build"
CVES = "cves"
CVSS = "cvss"
POSTED = "posted"

REQUIRED: tuple[str, ...] = (PLATFORM, PRODUCT_VERSION, EXTRA_VERSION, SUPPLEMENTAL_BUILD)
"""Fields every signed supplement carries (and one of ``prerequisite_build``/``prerequisite``)."""
FIELDS: tuple[str, ...] = (*REQUIRED, *BASE_FIELDS, CVES, CVSS, POSTED)
"""Every field a signed supplement may carry."""
DEVICE_FIELDS: tuple[str, ...] = (PLATFORM, *BASE_FIELDS, SUPPLEMENTAL_BUILD)
"""The fields a device compares with its own facts before it stages a bundle."""

_WHERE = f"custom.{CUSTOM_NAMESPACE}"
_FIX = "re-publish the bundle with 'bsi supplement publish', which signs its manifest's fields"


@dataclass(frozen=True, slots=True)
class SupplementFields:
    """One supplement's signed identity: platform, version, base, build, CVEs, posting day.

    Checks itself when constructed (platform spelling, a build of its own),
    so a value is valid however it was made. Raises :class:`InvalidInput`.
    """

    platform: str
    version: SupplementVersion
    prerequisite: Prerequisite
    supplemental_build: Build
    fixed_in: tuple[PackageVersion, ...] = ()
    cves: tuple[str, ...] = ()
    cvss: CvssVectors = ()
    posted: date | None = None

    def __post_init__(self) -> None:
        check_platform_id(self.platform)
        if self.supplemental_build == self.prerequisite.build:
            raise InvalidInput(
                f"supplemental build {str(self.supplemental_build)!r} is the prerequisite build",
                hint="a supplement needs a build of its own, e.g. '25D771280a' on '25D2128'",
            )

    def document(self) -> dict[str, object]:
        """The JSON object :func:`read_supplement_fields` reads back; ``cvss`` and ``posted``
        only when set."""
        document: dict[str, object] = {
            PLATFORM: self.platform,
            PRODUCT_VERSION: str(self.version.product),
            EXTRA_VERSION: str(self.version.extra),
            **dump_base(self.prerequisite, self.fixed_in),
            SUPPLEMENTAL_BUILD: str(self.supplemental_build),
            CVES: list(self.cves),
        }
        if self.cvss:
            document[CVSS] = dump_cvss_vectors(self.cvss)
        if self.posted is not None:
            document[POSTED] = self.posted.isoformat()
        return document

    def device_document(self) -> dict[str, object]:
        """The :data:`DEVICE_FIELDS` of :meth:`document`: what a device must find signed."""
        document = self.document()
        return {key: document[key] for key in DEVICE_FIELDS if key in document}

    def supplement(self, *, target_sha256: str | None = None) -> Supplement:
        """The catalogue entry these fields describe (published, no supported-device limit)."""
        return Supplement(
            platform=self.platform,
            version=self.version,
            build=self.supplemental_build,
            prerequisite=self.prerequisite,
            fixed_in=self.fixed_in,
            cves=self.cves,
            cvss=self.cvss,
            posted=self.posted,
            target_sha256=target_sha256,
        )


def read_supplement_fields(document: object, *, source: str) -> SupplementFields:
    """The fields in ``document`` (a JSON object), or :class:`InvalidInput` naming ``source``,
    the field and what was wrong, with how to fix it (re-publish).

    Refuses a missing required field, a value of the wrong type or form, and a
    field outside :data:`FIELDS`.
    """
    try:
        fields = document_fields(document, _WHERE, FIELDS)
        missing = [name for name in REQUIRED if name not in fields]
        if missing:
            raise InvalidInput(f"{_WHERE}: required field {missing[0]!r} is missing")
        prerequisite, fixed_in = read_base(fields, _WHERE)
        posted = fields.get(POSTED)
        cves = tuple(
            _parsed(parse_cve_id, cve, f"{_WHERE}.{CVES}[{index}]")
            for index, cve in enumerate(document_list(fields.get(CVES, []), f"{_WHERE}.{CVES}"))
        )
        return SupplementFields(
            platform=_parsed(check_platform_id, fields[PLATFORM], f"{_WHERE}.{PLATFORM}"),
            version=SupplementVersion(
                _parsed(
                    ProductVersion.parse, fields[PRODUCT_VERSION], f"{_WHERE}.{PRODUCT_VERSION}"
                ),
                _parsed(ExtraVersion.parse, fields[EXTRA_VERSION], f"{_WHERE}.{EXTRA_VERSION}"),
            ),
            prerequisite=prerequisite,
            fixed_in=fixed_in,
            supplemental_build=_parsed(
                Build.parse, fields[SUPPLEMENTAL_BUILD], f"{_WHERE}.{SUPPLEMENTAL_BUILD}"
            ),
            cves=cves,
            cvss=read_cvss_vectors(fields.get(CVSS, {}), cves, f"{_WHERE}.{CVSS}"),
            posted=None if posted is None else _parsed(_iso_date, posted, f"{_WHERE}.{POSTED}"),
        )
    except InvalidInput as error:
        raise InvalidInput(
            f"{source}: signed supplement fields: {error.message}",
            hint=f"{error.hint}; {_FIX}" if error.hint else _FIX,
        ) from None


def _parsed(parse: Callable[[str], T], value: object, where: str) -> T:
    """``parse`` of the string ``value``, a refusal located at ``where``."""
    text = document_text(value, where)
    try:
        return parse(text)
    except InvalidInput as error:
        raise located(where, error) from None


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a date", hint="expected ISO 8601, e.g. '2026-03-01'"
        ) from None
