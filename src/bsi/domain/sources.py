"""Inventory sources other than DDM, as the DDM status items a device would have reported.

MDM ``DeviceInformation`` results and osquery rows become DDM items, so the
server and the offline report store, merge, validate and normalise them
exactly as DDM status reports (:mod:`bsi.domain.status`,
:mod:`bsi.domain.inventory`): one path for every source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bsi.domain.catalog import device_family
from bsi.domain.inventory import split_version
from bsi.domain.status import ITEM_OF
from bsi.domain.versions import ProductVersion
from bsi.errors import InvalidInput, InvalidVersion

#: MDM ``DeviceInformation`` query-response keys (apple/device-management,
#: mdm/commands/information.device.yaml) and the DDM items they fill.
MDM_ITEMS: Mapping[str, str] = {
    "OSVersion": ITEM_OF["product_version"],
    "BuildVersion": ITEM_OF["build"],
    "SupplementalBuildVersion": ITEM_OF["supplemental_build"],
    "SupplementalOSVersionExtra": ITEM_OF["supplemental_extra"],
    "ProductName": ITEM_OF["model_identifier"],
    "ModelName": ITEM_OF["model_marketing_name"],
    "SerialNumber": ITEM_OF["serial_number"],
    "UDID": ITEM_OF["udid"],
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
    items[ITEM_OF["platform"]] = platform
    return items


#: osquery columns (``os_version`` joined with ``system_info``) and the DDM items they fill.
OSQUERY_ITEMS: Mapping[str, str] = {
    "build": ITEM_OF["build"],
    "extra": ITEM_OF["supplemental_extra"],
    "hardware_model": ITEM_OF["model_identifier"],
    "hardware_serial": ITEM_OF["serial_number"],
    "uuid": ITEM_OF["udid"],
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
        ITEM_OF["platform"]: "macOS" if platform == "darwin" else platform,
        ITEM_OF["product_version"]: _osquery_version(row),
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
