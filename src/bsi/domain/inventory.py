"""Every inventory form a device's OS arrives in, turned into one :class:`DeviceFacts`.

Sources write the same facts differently, and a misread one decides what a
device is told (or whether it counts as protected), so they are normalised
here, once, for DDM status reports, MDM ``DeviceInformation``, osquery and
the Linux agent alike:

* platform names in another case (``macos``), and ``iPadOS`` for ``iOS``
  (Apple's catalogues list iPads under iOS); Linux ids as os-release's ``ID``,
  which is lower case (os-release(5));
* the extra version written ``(a)`` or ``a``, or carried by the version string
  (``26.3.1 (a)``, as some inventories print ``ProductVersion`` and
  ``ProductVersionExtra`` together);
* a supplemental build equal to the base build, which is how Apple reports
  "no supplement installed" (``25D2128`` / ``25D2128``, extra ``""``);

and, with the catalogue (:func:`resolve`):

* the supplemental build reported as the build itself (``sw_vers`` prints
  the supplemental build as ``BuildVersion`` while one is installed): the base
  build is the supplement's prerequisite;
* an extra version without a supplemental build (a first DDM report from a
  Mac on 13.3.1 (a) carries only ``extra-version: "(a)"``): the supplement of
  that letter for the device's build, when the catalogue knows exactly one.
"""

from __future__ import annotations

import re
from dataclasses import replace

from bsi.domain.catalog import Catalog
from bsi.domain.facts import DeviceFacts
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.errors import InvalidInput, InvalidVersion

#: Apple's platform names, by their lower-case spelling.
APPLE_PLATFORMS = {
    name.lower(): name for name in ("macOS", "iOS", "iPadOS", "tvOS", "watchOS", "visionOS")
}
#: Apple's catalogues list iPads under iOS, though iPads report "iPadOS".
CATALOGUE_PLATFORM = {"iPadOS": "iOS"}

# os-release(5): ID is "a lower-case string (no spaces or other characters
# outside of 0-9, a-z, '.', '_' and '-')".
_OS_RELEASE_ID = re.compile(r"[0-9a-z._-]+")
_VERSION_WITH_EXTRA = re.compile(r"(?P<version>[0-9.]+)\s*(?P<extra>\([a-z]\))")


def platform_name(text: str) -> str:
    """The platform a device reports, as bsi spells it: Apple's names, else os-release's ``ID``.

    Device input is read liberally (``MACOS``, ``Debian``); what bsi writes
    itself (specs, catalogues) must already be canonical: see :func:`check_platform_id`.
    """
    stripped = text.strip()
    apple = APPLE_PLATFORMS.get(stripped.lower())
    if apple is not None:
        return CATALOGUE_PLATFORM.get(apple, apple)
    return stripped.lower()


def reported_spellings(platform: str) -> tuple[str, ...]:
    """The platforms devices report, in Apple's spelling, that bsi decides as ``platform``
    (a catalogue platform): ``iOS`` -> ``("iOS", "iPadOS")``, since iPads report iPadOS
    and Apple lists them under iOS. The inverse of :func:`platform_name` on canonical
    spellings, for finding a platform's devices by what they reported."""
    return tuple(sorted({platform, *(r for r, c in CATALOGUE_PLATFORM.items() if c == platform)}))


def check_platform_id(text: str) -> str:
    """Refuse a platform a publisher wrote that devices would never report.

    Apple platforms must be spelled as Apple does (``macOS``); any other is an
    os-release ``ID`` and lower case, so ``Debian`` would silently match no
    host: it is refused with the spelling to use. Raises ``InvalidInput``.
    """
    apple = APPLE_PLATFORMS.get(text.strip().lower())
    if text == apple or (apple is None and _OS_RELEASE_ID.fullmatch(text)):
        return text
    canonical = APPLE_PLATFORMS.get(text.strip().lower(), text.strip().lower())
    raise InvalidInput(
        f"platform {text!r} would match no device",
        hint=f"write {canonical!r}: Apple platforms as Apple spells them, Linux platforms as "
        "the ID of os-release (lower case: 0-9, a-z, '.', '_', '-')",
    )


def split_version(text: str) -> tuple[ProductVersion, ExtraVersion | None]:
    """``26.3.1`` or ``26.3.1 (a)``: the product version and the letter it may carry."""
    match = _VERSION_WITH_EXTRA.fullmatch(text.strip())
    if match is None:
        return ProductVersion.parse(text.strip()), None
    return ProductVersion.parse(match["version"]), ExtraVersion.parse(match["extra"])


def parse_extra(text: str | None) -> ExtraVersion | None:
    """``(a)``, ``a`` or blank (no supplement)."""
    if text is None or not text.strip():
        return None
    return ExtraVersion.parse(text)


def parse_build(text: str | None) -> Build | None:
    if text is None or not text.strip():
        return None
    return Build.parse(text.strip())


def normalise(
    *,
    platform: str,
    version: str,
    build: str | None,
    supplemental_build: str | None = None,
    supplemental_extra: str | None = None,
    model_identifier: str | None = None,
    software_update_device_id: str | None = None,
    restart_pending: bool = False,
) -> DeviceFacts:
    """One device's facts from the strings any inventory source gives.

    Raises ``InvalidVersion`` naming the field when a value cannot be read, or
    when the version string's letter contradicts the extra version.
    """
    product, letter = split_version(version)
    extra = parse_extra(supplemental_extra)
    if letter is not None and extra is not None and letter != extra:
        raise InvalidVersion(
            f"version {version!r} says {letter} but the extra version is {extra}",
            hint="the two must agree; check what the source reports",
        )
    base = Build.parse(build.strip()) if build is not None else None  # stock Linux: no build
    installed = parse_build(supplemental_build)
    extra = extra or letter
    if installed == base and extra is None:
        installed = None  # Apple reports the base build here when no supplement is installed
    return DeviceFacts(
        platform=platform_name(platform),
        product_version=product,
        build=base,
        supplemental_build=installed,
        supplemental_extra=extra,
        model_identifier=model_identifier or None,
        software_update_device_id=software_update_device_id or None,
        restart_pending=restart_pending,
    )


def resolve(facts: DeviceFacts, catalog: Catalog) -> DeviceFacts:
    """Fill in with the catalogue what the inventory form left implicit (see the module doc).

    Never guesses: when the catalogue does not settle it, the facts stay as
    reported and eligibility says ``unknown``.
    """
    as_supplement = (
        catalog.supplement_by_build(facts.platform, facts.build) if facts.build else None
    )
    if as_supplement is not None and facts.supplemental_build in (None, facts.build):
        facts = replace(
            facts,
            build=as_supplement.prerequisite_build,
            supplemental_build=as_supplement.build,
            supplemental_extra=facts.supplemental_extra or as_supplement.version.extra,
        )
    if facts.supplemental_build is None and facts.supplemental_extra is not None:
        letter = facts.supplemental_extra
        matches = [
            s
            for s in catalog.supplements_for(facts.platform)
            if s.prerequisite_build == facts.build and s.version.extra == letter
        ]
        if len(matches) == 1:
            facts = replace(facts, supplemental_build=matches[0].build)
    return facts
