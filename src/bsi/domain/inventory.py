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
from collections.abc import Mapping
from dataclasses import replace

from bsi.domain.catalog import Catalog, device_family
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
    build: str,
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
    base = Build.parse(build.strip())
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
    as_supplement = catalog.supplement_by_build(facts.platform, facts.build)
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


# -- other inventory sources, as DDM status items ------------------------------------
#
# MDM and osquery records are turned into the DDM items a device would have
# reported, so the server and the offline report store, merge, validate and
# normalise them exactly as DDM status reports.

#: MDM ``DeviceInformation`` query-response keys (apple/device-management,
#: mdm/commands/information.device.yaml) and the DDM items they fill.
MDM_ITEMS: Mapping[str, str] = {
    "OSVersion": "device.operating-system.version",
    "BuildVersion": "device.operating-system.build-version",
    "SupplementalBuildVersion": "device.operating-system.supplemental.build-version",
    "SupplementalOSVersionExtra": "device.operating-system.supplemental.extra-version",
    "ProductName": "device.model.identifier",
    "ModelName": "device.model.marketing-name",
    "SerialNumber": "device.identifier.serial-number",
    "UDID": "device.identifier.udid",
}
_MDM_REQUIRED = ("OSVersion", "BuildVersion", "ProductName")
# Mac product names: Mac14,2, MacBookPro18,1, Macmini9,1, iMac21,1, VirtualMac2,1.
_MAC_PRODUCT = re.compile(
    r"(Mac|MacBook|MacBookAir|MacBookPro|Macmini|MacPro|iMac|iMacPro|VirtualMac)\d"
)
_MOBILE_PLATFORM = {"iPad": "iPadOS"}


def platform_of_product(product: str) -> str | None:
    """The platform a product type runs: ``iPad8,12`` iPadOS, ``Mac14,2`` macOS, ..."""
    if _MAC_PRODUCT.match(product):
        return "macOS"
    family = device_family(product)
    if family is None:
        return None
    prefix = re.match(r"[A-Za-z]+", product)
    return _MOBILE_PLATFORM.get(prefix[0] if prefix else "", family)


def device_information_items(answers: Mapping[str, object]) -> dict[str, object]:
    """DDM status items from an MDM ``DeviceInformation`` ``QueryResponses`` dictionary.

    The platform comes from ``ProductName`` (or ``Model``); an empty
    ``SupplementalBuildVersion`` or extra means none installed. Raises
    ``InvalidInput`` naming the key that is missing or of the wrong type.
    """
    for key in _MDM_REQUIRED:
        if not isinstance(answers.get(key), str) or not str(answers[key]).strip():
            raise InvalidInput(
                f"QueryResponses.{key} is missing or not a string",
                hint="query DeviceInformation for " + ", ".join(MDM_ITEMS),
            )
    items: dict[str, object] = {}
    for key, item in MDM_ITEMS.items():
        value = answers.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"QueryResponses.{key}: {value!r} is not a string")
        items[item] = value.strip()
    product = str(answers["ProductName"]).strip()
    model = answers.get("Model")
    platform = platform_of_product(product) or (
        platform_of_product(model) if isinstance(model, str) else None
    )
    if platform is None:
        raise InvalidInput(
            f"QueryResponses.ProductName {product!r} names no Apple platform bsi knows",
            hint="expected a product type such as Mac14,2, iPhone14,2 or iPad8,12",
        )
    items["device.operating-system.family"] = platform
    return items


#: osquery columns (``os_version`` joined with ``system_info``) and the DDM items they fill.
OSQUERY_ITEMS: Mapping[str, str] = {
    "build": "device.operating-system.build-version",
    "extra": "device.operating-system.supplemental.extra-version",
    "hardware_model": "device.model.identifier",
    "hardware_serial": "device.identifier.serial-number",
    "uuid": "device.identifier.udid",
}


def osquery_items(row: Mapping[str, object]) -> dict[str, object]:
    """DDM status items from one ``osqueryi --json`` row of ``os_version`` joined with
    ``system_info``.

    osquery prints every column as a string. The platform is ``macOS`` for
    ``darwin``, else the ``platform`` column (os-release's ``ID`` on Linux).
    ``version`` on Linux may read ``12 (bookworm)``: the ``major``, ``minor``
    and ``patch`` columns are used then. On a Mac with a supplement installed
    ``build`` is the supplemental build (as ``sw_vers`` prints it) and
    ``extra`` the letter. Raises ``InvalidInput`` naming the column.
    """
    for key, value in row.items():
        if not isinstance(value, str):
            raise InvalidInput(f"osquery column {key!r}: {value!r} is not a string")
    platform = str(row.get("platform") or "").strip()
    if not platform:
        raise InvalidInput("osquery row has no platform column", hint="select * from os_version")
    items: dict[str, object] = {
        "device.operating-system.family": "macOS" if platform == "darwin" else platform,
        "device.operating-system.version": _osquery_version(row),
    }
    for column, item in OSQUERY_ITEMS.items():
        value = str(row.get(column) or "").strip()
        if value:
            items[item] = value
    return items


def _osquery_version(row: Mapping[str, object]) -> str:
    text = str(row.get("version") or "").strip()
    try:
        split_version(text)
        return text
    except InvalidVersion:
        parts = [str(row.get(c) or "").strip() for c in ("major", "minor", "patch")]
        while len(parts) > 1 and parts[-1] in ("", "0"):
            parts.pop()
        joined = ".".join(parts)
        try:
            ProductVersion.parse(joined)
        except InvalidVersion as error:
            raise InvalidInput(
                f"osquery version {text!r} (major/minor/patch {joined!r}) is not a version",
                hint=error.hint,
            ) from None
        return joined
