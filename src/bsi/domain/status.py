"""DDM status reports <-> typed device state.

Apple devices tell the server what they run through status reports: the first
one full, later ones carrying only the items that changed. The server folds
them, item by item, into one :class:`DeviceState` per device, from which
eligibility reads :class:`~bsi.domain.facts.DeviceFacts`.

Reports come off the network, so everything here is validated: the items bsi
models must have Apple's type (and versions must parse), because a misread
build decides what a device is told to install. Items bsi does not model are
kept untouched, so nothing a device says is lost and a new OS can add items
without breaking the server.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bsi.domain.facts import DeviceFacts
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.errors import InvalidStatusReport, InvalidVersion


class ItemType(enum.Enum):
    """A status item's value type, spelled as in Apple's schema (``type:``)."""

    STRING = "<string>"
    BOOLEAN = "<boolean>"
    INTEGER = "<integer>"
    REAL = "<real>"
    DICTIONARY = "<dictionary>"
    ARRAY = "<array>"


_S, _B, _D, _A = ItemType.STRING, ItemType.BOOLEAN, ItemType.DICTIONARY, ItemType.ARRAY

# Lists of objects with an ``identifier``: Apple sends only changed entries in
# a partial report and marks a removed entry with ``"_removed": true``.
_LIST_ITEMS = (
    "account.list.caldav",
    "account.list.carddav",
    "account.list.exchange",
    "account.list.google",
    "account.list.ldap",
    "account.list.mail.incoming",
    "account.list.mail.outgoing",
    "account.list.subscribed-calendar",
    "app.managed.list",
    "mdm.app",
    "screensharing.connection.group.unresolved-connection",
    "security.certificate.list",
    "services.background-task",
)

#: The status items bsi models, with Apple's type for each. Knowing an item's
#: name is what stops flattening at the item (a dictionary item such as
#: ``softwareupdate.pending-version`` stays one value); bsi carries this table
#: itself rather than reading Apple's YAML at run time.
STATUS_ITEMS: Mapping[str, ItemType] = MappingProxyType(
    {
        "device.identifier.serial-number": _S,
        "device.identifier.udid": _S,
        "device.model.family": _S,
        "device.model.identifier": _S,
        "device.model.marketing-name": _S,
        "device.model.number": _S,
        "device.operating-system.build-version": _S,
        "device.operating-system.family": _S,
        "device.operating-system.marketing-name": _S,
        "device.operating-system.supplemental.build-version": _S,
        "device.operating-system.supplemental.extra-version": _S,
        "device.operating-system.version": _S,
        "device.power.battery-health": _S,
        "diskmanagement.filevault.enabled": _B,
        "management.client-capabilities": _D,
        "management.declarations": _D,
        "passcode.is-compliant": _B,
        "passcode.is-present": _B,
        "softwareupdate.beta-enrollment": _S,
        "softwareupdate.device-id": _S,
        "softwareupdate.failure-reason": _D,
        "softwareupdate.install-reason": _D,
        "softwareupdate.install-state": _S,
        "softwareupdate.pending-version": _D,
        **dict.fromkeys(_LIST_ITEMS, _A),
    }
)

# Sub-keys bsi reads inside dictionary items, with their types. Extra sub-keys
# are allowed: Apple adds them over OS releases.
_SUBKEYS: Mapping[str, Mapping[str, type | tuple[type, ...]]] = {
    "softwareupdate.pending-version": {"os-version": str, "build-version": str},
    "softwareupdate.failure-reason": {"count": int, "reason": str, "timestamp": str},
}

_OS_FAMILY = "device.operating-system.family"
_OS_VERSION = "device.operating-system.version"
_OS_BUILD = "device.operating-system.build-version"
_SUPPLEMENTAL_BUILD = "device.operating-system.supplemental.build-version"
_SUPPLEMENTAL_EXTRA = "device.operating-system.supplemental.extra-version"
_PENDING = "softwareupdate.pending-version"

_JSON_TYPES: Mapping[ItemType, tuple[type, ...]] = {
    ItemType.STRING: (str,),
    ItemType.BOOLEAN: (bool,),
    ItemType.INTEGER: (int,),
    ItemType.REAL: (int, float),
    ItemType.DICTIONARY: (dict,),
    ItemType.ARRAY: (list,),
}


def _refuse(name: str, value: object, why: str, hint: str | None = None) -> InvalidStatusReport:
    return InvalidStatusReport(f"status item {name}: {value!r} {why}", hint=hint)


def _is(value: object, types: type | tuple[type, ...]) -> bool:
    # JSON booleans are Python ints; a boolean is never a number in a report.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in (types,))


def _parse_version(name: str, value: str, parse: type[ProductVersion | Build | ExtraVersion]) -> None:
    try:
        parse.parse(value)
    except InvalidVersion as error:
        raise InvalidStatusReport(f"status item {name}: {error.message}", hint=error.hint) from None


def _check_item(name: str, value: object) -> None:
    """Refuse a modelled item whose value bsi would misread; others pass as they are."""
    expected = STATUS_ITEMS.get(name)
    if expected is None:
        return
    types = _JSON_TYPES[expected]
    if not (isinstance(value, types) and (bool in types or not isinstance(value, bool))):
        raise _refuse(name, value, f"is not of type {expected.value}")
    for key, key_type in _SUBKEYS.get(name, {}).items():
        assert isinstance(value, dict)
        if key in value and not _is(value[key], key_type):
            raise _refuse(f"{name}.{key}", value[key], "has the wrong type")
    if name in _LIST_ITEMS:
        assert isinstance(value, list)
        for entry in value:
            if not (isinstance(entry, dict) and isinstance(entry.get("identifier"), str)):
                raise _refuse(name, entry, "is not an object with a string identifier")
    # Apple reports "" for "no supplement installed" and "no update pending".
    if name == _OS_VERSION:
        _parse_version(name, str(value), ProductVersion)
    elif name == _OS_BUILD or (name == _SUPPLEMENTAL_BUILD and value):
        _parse_version(name, str(value), Build)
    elif name == _SUPPLEMENTAL_EXTRA and value:
        _parse_version(name, str(value), ExtraVersion)
    elif name == _PENDING and isinstance(value, dict) and value.get("build-version"):
        _parse_version(f"{name}.build-version", str(value["build-version"]), Build)


def flatten_status_items(tree: Mapping[str, object]) -> dict[str, object]:
    """Dotted item names from the nested report form, for item-by-item merging.

    Descent stops at a known item name, at anything that is not a non-empty
    object, and at an object with a dotted key (a dotted path could not name
    it), so that :func:`nest_status_items` rebuilds the tree exactly.
    """
    flat: dict[str, object] = {}
    for key in tree:
        if not isinstance(key, str) or "." in key:
            raise InvalidStatusReport(
                f"status item key {key!r} is not a name part",
                hint="keys of StatusItems are strings without dots; dots come from nesting",
            )

    def walk(path: str, value: object) -> None:
        descend = (
            path not in STATUS_ITEMS
            and isinstance(value, dict)
            and value
            and all(isinstance(k, str) and "." not in k for k in value)
        )
        if not descend:
            flat[path] = value
            return
        assert isinstance(value, dict)
        for key, sub in value.items():
            walk(f"{path}.{key}", sub)

    for key, value in tree.items():
        walk(key, value)
    return flat


def nest_status_items(flat: Mapping[str, object]) -> dict[str, object]:
    """The nested report form of dotted item names, as devices send it."""
    names = set(flat)
    for name in flat:
        parts = name.split(".")
        for end in range(1, len(parts)):
            prefix = ".".join(parts[:end])
            if prefix in names:
                raise InvalidStatusReport(
                    f"status items {prefix} and {name} overlap: one holds the other"
                )
    tree: dict[str, object] = {}
    for name, value in flat.items():
        *parents, last = name.split(".")
        node = tree
        for part in parents:
            child = node.setdefault(part, {})
            assert isinstance(child, dict)
            node = child
        node[last] = value
    return tree


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One validated report: flat items, the device's errors, and whether it is full.

    ``full_report`` mirrors Apple's ``FullReport`` (iOS 17, macOS 14): the
    device's periodic safety sync, which replaces the stored state instead of
    updating it. The first report ever is treated as full as well.
    """

    items: dict[str, object]
    errors: tuple[dict[str, object], ...] = ()
    full_report: bool = False


def parse_status_report(obj: object) -> StatusReport:
    """Validate the untrusted JSON body of a DDM ``PUT status``."""
    if not isinstance(obj, dict):
        raise InvalidStatusReport(f"a status report must be an object, not {obj!r}")
    tree = obj.get("StatusItems")
    if not isinstance(tree, dict):
        raise InvalidStatusReport(f"status report StatusItems must be an object, not {tree!r}")
    # Apple marks Errors required, but a report without it carries no errors.
    errors = obj.get("Errors", [])
    if not isinstance(errors, list):
        raise InvalidStatusReport(f"status report Errors must be an array, not {errors!r}")
    for error in errors:
        if not (isinstance(error, dict) and isinstance(error.get("StatusItem"), str)):
            raise InvalidStatusReport(
                f"status report error {error!r} is not an object with a StatusItem string"
            )
    full = obj.get("FullReport", False)
    if not isinstance(full, bool):
        raise InvalidStatusReport(f"status report FullReport must be a boolean, not {full!r}")
    items = flatten_status_items(tree)
    for name, value in items.items():
        _check_item(name, value)
    return StatusReport(items=items, errors=tuple(errors), full_report=full)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything a device has reported, folded from its status reports.

    ``items`` (every flat item, unknown ones too) is the single source of
    truth; the typed fields are derived from it on construction, so they can
    never disagree with what the device said and the state turns back into a
    report exactly. ``errors`` are the device's latest ``Errors`` entries, at
    most one kept per status item.
    """

    items: dict[str, object]
    errors: tuple[dict[str, object], ...] = ()
    platform: str | None = field(init=False)
    product_version: ProductVersion | None = field(init=False)
    build: Build | None = field(init=False)
    supplemental_build: Build | None = field(init=False)
    supplemental_extra: ExtraVersion | None = field(init=False)
    os_marketing_name: str | None = field(init=False)
    model_identifier: str | None = field(init=False)
    model_family: str | None = field(init=False)
    model_marketing_name: str | None = field(init=False)
    serial_number: str | None = field(init=False)
    udid: str | None = field(init=False)
    software_update_device_id: str | None = field(init=False)
    install_state: str | None = field(init=False)
    pending_os_version: str | None = field(init=False)
    pending_build_version: str | None = field(init=False)
    failure_reason: dict[str, object] | None = field(init=False)
    battery_health: str | None = field(init=False)

    def __post_init__(self) -> None:
        for name, value in self.items.items():
            _check_item(name, value)

        def text(name: str) -> str | None:
            value = self.items.get(name)
            return value if isinstance(value, str) else None

        def derive(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        version, build = text(_OS_VERSION), text(_OS_BUILD)
        supplemental_build, extra = text(_SUPPLEMENTAL_BUILD), text(_SUPPLEMENTAL_EXTRA)
        pending = self.items.get(_PENDING)
        pending = pending if isinstance(pending, dict) else {}
        failure = self.items.get("softwareupdate.failure-reason")
        derive("platform", text(_OS_FAMILY))
        derive("product_version", ProductVersion.parse(version) if version else None)
        derive("build", Build.parse(build) if build else None)
        derive("supplemental_build", Build.parse(supplemental_build) if supplemental_build else None)
        derive("supplemental_extra", ExtraVersion.parse(extra) if extra else None)
        derive("os_marketing_name", text("device.operating-system.marketing-name"))
        derive("model_identifier", text("device.model.identifier"))
        derive("model_family", text("device.model.family"))
        derive("model_marketing_name", text("device.model.marketing-name"))
        derive("serial_number", text("device.identifier.serial-number"))
        derive("udid", text("device.identifier.udid"))
        derive("software_update_device_id", text("softwareupdate.device-id"))
        derive("install_state", text("softwareupdate.install-state"))
        derive("pending_os_version", pending.get("os-version") or None)
        derive("pending_build_version", pending.get("build-version") or None)
        derive("failure_reason", failure if isinstance(failure, dict) else None)
        derive("battery_health", text("device.power.battery-health"))

    def facts(self) -> DeviceFacts:
        """What eligibility needs, once the device has reported its OS."""
        for name, known in (
            (_OS_FAMILY, self.platform),
            (_OS_VERSION, self.product_version),
            (_OS_BUILD, self.build),
        ):
            if known is None:
                raise InvalidStatusReport(
                    f"status item {name} has not been reported yet",
                    hint="the device's first, full status report carries it",
                )
        assert self.platform and self.product_version and self.build
        # DDM reports no power source or charge level: device.power.battery-health
        # is the battery's condition (normal, service-recommended, ...), not its
        # charge, so on_battery and battery_percent stay unknown. Nor does it
        # report the CPU architecture, and a board id does not reliably tell it
        # (Intel Macs with a T2 chip have J...AP board ids too).
        return DeviceFacts(
            platform=self.platform,
            product_version=self.product_version,
            build=self.build,
            supplemental_build=self.supplemental_build,
            supplemental_extra=self.supplemental_extra,
            model_identifier=self.model_identifier,
            software_update_device_id=self.software_update_device_id,
        )


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _merge_list(earlier: list[object], later: list[object]) -> list[object]:
    """Apply a list item's changed entries: same identifier replaces, ``_removed`` drops."""
    entries: dict[object, object] = {}
    for entry in [*earlier, *later]:
        assert isinstance(entry, dict)
        entries.pop(entry["identifier"], None) if entry.get("_removed") is True else None
        if entry.get("_removed") is not True:
            entries[entry["identifier"]] = entry
    return list(entries.values())
