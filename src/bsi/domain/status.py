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
import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import InitVar, dataclass, field, replace
from types import MappingProxyType
from typing import TypeVar

from bsi.domain.containers import CONTAINERS_ITEM, read_container_items
from bsi.domain.facts import DeviceFacts
from bsi.domain.inventory import normalise, split_version
from bsi.domain.prerequisite import (
    FILE_DIGESTS_ITEM,
    PACKAGE_MANAGER_ITEM,
    PACKAGES_ASKED_ITEM,
    PACKAGES_ITEM,
    check_package_item,
    read_package_items,
    read_packages_asked,
)
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.errors import InvalidInput, InvalidStatusReport, InvalidVersion


class InstallState(enum.StrEnum):
    """DDM ``softwareupdate.install-state`` values (Apple's status item schema); a bsi
    agent reports them, and ``failed`` with ``pending-version`` names the update that failed."""

    NONE = "none"
    DOWNLOADING = "downloading"
    PREPARED = "prepared"
    INSTALLING = "installing"
    FAILED = "failed"


class ItemType(enum.Enum):
    """A status item's value type, spelled as in Apple's schema (``type:``).

    Apple also has ``<integer>`` and ``<real>`` items, but only test items.
    """

    STRING = "<string>"
    BOOLEAN = "<boolean>"
    DICTIONARY = "<dictionary>"
    ARRAY = "<array>"


CLIENT_CAPABILITIES = "management.client-capabilities"
UDID_ITEM = "device.identifier.udid"
SERIAL_ITEM = "device.identifier.serial-number"

# Apple's status items bsi reads and the agent writes (names from Apple's
# declarative/status YAML; one owner each, here).
OS_FAMILY = "device.operating-system.family"
OS_VERSION = "device.operating-system.version"
OS_BUILD = "device.operating-system.build-version"
SUPPLEMENTAL_BUILD = "device.operating-system.supplemental.build-version"
SUPPLEMENTAL_EXTRA = "device.operating-system.supplemental.extra-version"
MODEL_IDENTIFIER = "device.model.identifier"
INSTALL_STATE = "softwareupdate.install-state"
PENDING_VERSION = "softwareupdate.pending-version"
FAILURE_REASON = "softwareupdate.failure-reason"

# bsi's own items, sent by the Linux agent.
AGENT_DECISION = "bsi.agent.decision"
"""The agent's own decision (``outcome``, ``reason``, ``message``): it decides with
facts the server lacks (battery)."""
RESTART_PENDING_PROCESSES = "bsi.agent.restart-pending-processes"
"""Each process still on old content, ``name (pid N in unit) uses old ...``."""
AGENT_DRIFT = "bsi.agent.drift"
"""Files the active supplement manages that something else changed."""
CLOCK_SKEW = "bsi.agent.clock-skew-seconds"
"""Device clock minus the server's (HTTP ``Date``), whole seconds."""

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

#: bsi's own item (the Linux agent): the supplement is on disk, old content still runs.
RESTART_PENDING = "bsi.agent.restart-pending"

#: The status items bsi models, with Apple's type for each. Knowing an item's
#: name is what stops flattening at the item (a dictionary item such as
#: ``softwareupdate.pending-version`` stays one value); bsi carries this table
#: itself rather than reading Apple's YAML at run time.
STATUS_ITEMS: Mapping[str, ItemType] = MappingProxyType(
    {
        RESTART_PENDING: _B,
        SERIAL_ITEM: _S,
        UDID_ITEM: _S,
        "device.model.family": _S,
        MODEL_IDENTIFIER: _S,
        "device.model.marketing-name": _S,
        "device.model.number": _S,
        OS_BUILD: _S,
        OS_FAMILY: _S,
        "device.operating-system.marketing-name": _S,
        SUPPLEMENTAL_BUILD: _S,
        SUPPLEMENTAL_EXTRA: _S,
        OS_VERSION: _S,
        "device.power.battery-health": _S,
        "diskmanagement.filevault.enabled": _B,
        CLIENT_CAPABILITIES: _D,
        "management.declarations": _D,
        "passcode.is-compliant": _B,
        "passcode.is-present": _B,
        "softwareupdate.beta-enrollment": _S,
        "softwareupdate.device-id": _S,
        FAILURE_REASON: _D,
        "softwareupdate.install-reason": _D,
        INSTALL_STATE: _S,
        PENDING_VERSION: _D,
        **dict.fromkeys(_LIST_ITEMS, _A),
    }
)

# Sub-keys bsi reads inside dictionary items, with their types. Extra sub-keys
# are allowed: Apple adds them over OS releases.
_SUBKEYS: Mapping[str, Mapping[str, tuple[type, ...]]] = {
    PENDING_VERSION: {"os-version": (str,), "build-version": (str,)},
    FAILURE_REASON: {"count": (int,), "reason": (str,), "timestamp": (str,)},
}

_PENDING_BUILD = f"{PENDING_VERSION}.build-version"

# Values that must parse as versions. Apple reports "" for "no supplement
# installed" and "no update pending"; the OS's own version and build are never
# empty.
_VERSIONS: Mapping[str, type[ProductVersion | Build | ExtraVersion]] = {
    OS_VERSION: ProductVersion,
    OS_BUILD: Build,
    SUPPLEMENTAL_BUILD: Build,
    SUPPLEMENTAL_EXTRA: ExtraVersion,
    _PENDING_BUILD: Build,
}
_MAY_BE_EMPTY = frozenset({SUPPLEMENTAL_BUILD, SUPPLEMENTAL_EXTRA, _PENDING_BUILD})

_JSON_TYPES: Mapping[ItemType, tuple[type, ...]] = {
    _S: (str,),
    _B: (bool,),
    _D: (dict,),
    _A: (list,),
}


def _is(value: object, types: tuple[type, ...]) -> bool:
    # JSON booleans are Python ints; a boolean is never a number in a report.
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _check_version(name: str, value: str) -> None:
    if value == "" and name in _MAY_BE_EMPTY:
        return
    try:
        if name == OS_VERSION:
            split_version(value)  # "26.3.1" or, from some sources, "26.3.1 (a)"
        else:
            _VERSIONS[name].parse(value)
    except InvalidVersion as error:
        raise InvalidStatusReport(f"status item {name}: {error.message}", hint=error.hint) from None


def _check_item(name: str, value: object) -> None:
    """:func:`_check_value`, remembering which immutable values passed: every state
    built from a stored row is checked again, and most of its values (OS, build,
    model, states) are shared by many devices and reports."""
    if name in STATUS_ITEMS and (
        value is None
        or isinstance(value, int | float)
        or (isinstance(value, str) and len(value) <= _REMEMBERED_LENGTH)
    ):  # a bounded vocabulary of short values: the memory it takes stays small
        _check_scalar(name, type(value).__name__, value)  # True and 1 are equal keys
    else:
        _check_value(name, value)


_REMEMBERED_LENGTH = 128
"""The longest text whose check or prefixes are remembered (a report's texts are not
bounded this short; longer ones are worked out each time)."""


@functools.lru_cache(maxsize=8192)
def _check_scalar(name: str, _type: str, value: object) -> None:
    """:func:`_check_value` of an immutable value (a refusal is raised, not remembered)."""
    _check_value(name, value)


def _check_value(name: str, value: object) -> None:
    """Refuse a modelled item whose value bsi would misread; others pass as they are.

    Values outside a ``rangelist`` (``install-state``, ``battery-health``) are
    accepted: Apple's own list already lags its prose (``waiting``), and
    refusing a whole report over a new state would blind the server.
    """
    if name in _PACKAGE_ITEMS:  # bsi's own: installed package versions, file digests
        try:
            check_package_item(name, value)
        except InvalidInput as error:
            raise InvalidStatusReport(f"status item {error.message}", hint=error.hint) from None
    if name == CONTAINERS_ITEM:  # bsi's own: a container host's running containers
        try:
            read_container_items({name: value})
        except InvalidInput as error:
            raise InvalidStatusReport(f"status item {error.message}", hint=error.hint) from None
    expected = STATUS_ITEMS.get(name)
    if expected is None:
        return
    if not _is(value, _JSON_TYPES[expected]):
        raise InvalidStatusReport(f"status item {name}: {value!r} is not {expected.value}")
    if isinstance(value, str) and name in _VERSIONS:
        _check_version(name, value)
    if isinstance(value, dict):
        for key, types in _SUBKEYS.get(name, {}).items():
            if key in value and not _is(value[key], types):
                raise InvalidStatusReport(
                    f"status item {name}: {key} {value[key]!r} has the wrong type"
                )
        if name == PENDING_VERSION and isinstance(value.get("build-version"), str):
            _check_version(_PENDING_BUILD, value["build-version"])
    if isinstance(value, list) and name in _LIST_ITEMS:
        for entry in value:
            if not (isinstance(entry, dict) and isinstance(entry.get("identifier"), str)):
                raise InvalidStatusReport(
                    f"status item {name}: {entry!r} is not an object with a string identifier"
                )


def flatten_status_items(tree: Mapping[str, object]) -> dict[str, object]:
    """Dotted item names from the nested report form, for item-by-item merging.

    Descent stops at a known item name, at anything that is not a non-empty
    object, and at an object with a dotted key (a dotted path could not name
    it), so that :func:`nest_status_items` rebuilds the tree exactly.
    """
    flat: dict[str, object] = {}

    def walk(path: str, value: object) -> None:
        if (
            isinstance(value, dict)
            and value
            and path not in STATUS_ITEMS
            and all(isinstance(key, str) and "." not in key for key in value)
        ):
            for key, sub in value.items():
                walk(f"{path}.{key}", sub)
        else:
            flat[path] = value

    for key, value in tree.items():
        if not isinstance(key, str) or "." in key:
            raise InvalidStatusReport(
                f"status item key {key!r} is not a name part",
                hint="keys of StatusItems are strings without dots; dots come from nesting",
            )
        walk(key, value)
    return flat


def nest_status_items(flat: Mapping[str, object]) -> dict[str, object]:
    """The nested report form of dotted item names, as devices send it."""
    for name in flat:
        parts = name.split(".")
        for end in range(1, len(parts)):
            prefix = ".".join(parts[:end])
            if prefix in flat:
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
    invalid: tuple[dict[str, str], ...] = ()
    """Items bsi refused (``{"path", "reason"}``); the rest of the report stands."""


MAX_STATUS_ITEMS = 4096
"""Status items in one report or one device's stored state. Apple's schema
defines about 80 items; list items (apps, certificates) are one item each."""
MAX_ITEM_DEPTH = 16
"""Dotted parts of one status item name (Apple's deepest has 5)."""
MAX_STATUS_ERRORS = 1024
"""Entries of a report's ``Errors`` array."""


def parse_status_report(obj: object) -> StatusReport:
    """Validate the untrusted JSON body of a DDM ``PUT status``, item by item.

    A body that is not a status report at all (not an object, ``StatusItems``
    not an object, ``Errors`` not an array, ``FullReport`` not a boolean) is
    refused whole with :class:`~bsi.errors.InvalidStatusReport`. A report
    with some bad items is accepted without them: each is recorded in
    ``invalid`` with its path and reason. Apple's devices resend a report
    until it is accepted, so refusing it whole over one mistyped item would
    silence the device for good.

    Bounded so that storing a report costs time linear in its size: more
    than :data:`MAX_STATUS_ITEMS` items or :data:`MAX_STATUS_ERRORS` errors
    refuse it whole; a name of more than :data:`MAX_ITEM_DEPTH` parts is an
    invalid item (string lengths and JSON nesting are bounded where the body
    is read).
    """
    if not isinstance(obj, dict):
        raise InvalidStatusReport(f"a status report must be an object, not {obj!r}")
    tree = obj.get("StatusItems")
    if not isinstance(tree, dict):
        raise InvalidStatusReport(f"status report StatusItems must be an object, not {tree!r}")
    # Apple marks Errors required, but a report without it carries no errors.
    errors = obj.get("Errors", [])
    if not isinstance(errors, list):
        raise InvalidStatusReport(f"status report Errors must be an array, not {errors!r}")
    full = obj.get("FullReport", False)
    if not isinstance(full, bool):
        raise InvalidStatusReport(f"status report FullReport must be a boolean, not {full!r}")
    if len(errors) > MAX_STATUS_ERRORS:
        raise InvalidStatusReport(
            f"status report has {len(errors)} Errors; bsi takes at most {MAX_STATUS_ERRORS}"
        )
    invalid: list[dict[str, str]] = []
    kept_errors = []
    for index, error in enumerate(errors):
        if isinstance(error, dict) and isinstance(error.get("StatusItem"), str):
            kept_errors.append(error)
        else:
            reason = f"{_short(error)} is not an object with a StatusItem string"
            invalid.append({"path": f"Errors[{index}]", "reason": reason})
    names = {}
    for key, value in tree.items():
        if isinstance(key, str) and "." not in key:
            names[key] = value
        else:
            reason = "keys of StatusItems are strings without dots; dots come from nesting"
            invalid.append({"path": f"StatusItems.{key}", "reason": reason})
    flat = flatten_status_items(names)
    if len(flat) > MAX_STATUS_ITEMS:
        raise InvalidStatusReport(
            f"status report has {len(flat)} status items; bsi takes at most {MAX_STATUS_ITEMS}",
            hint="a device reports each item once; list items carry their entries in one array",
        )
    items = {}
    for name, value in flat.items():
        try:
            if name.count(".") >= MAX_ITEM_DEPTH:
                raise InvalidStatusReport(f"the name has more than {MAX_ITEM_DEPTH} parts")
            _check_item(name, value)
        except InvalidStatusReport as error:
            invalid.append({"path": name, "reason": error.message})
        else:
            items[name] = value
    return StatusReport(
        items=items, errors=tuple(kept_errors), full_report=full, invalid=tuple(invalid)
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything a device has reported, folded from its status reports.

    ``items`` (every flat item, unknown ones too) is the single source of
    truth; the typed fields are derived from it on construction, so they can
    never disagree with what the device said and the state turns back into a
    report exactly. ``errors`` are the device's ``Errors`` entries from the
    latest report that spoke about each status item.
    """

    items: dict[str, object]
    errors: tuple[dict[str, object], ...] = ()
    invalid: tuple[dict[str, str], ...] = ()
    """bsi's findings: reported items it refused, latest per path, until a valid value."""
    check_only: InitVar[Collection[str] | None] = None
    """Construction only: the names of the items to check when the others were checked
    in a state this one was folded from (:func:`merge_status`); None: every item."""
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
    restart_pending: bool = field(init=False)
    _facts: DeviceFacts | None = field(init=False, repr=False, compare=False)
    """:meth:`facts`, worked out once (the state is immutable)."""

    def __post_init__(self, check_only: Collection[str] | None) -> None:
        for name in self.items if check_only is None else check_only:
            _check_item(name, self.items[name])
        for attribute, name in _TEXT_FIELDS.items():
            value = self.items.get(name)
            object.__setattr__(self, attribute, value if isinstance(value, str) else None)
        for attribute, name in _VERSION_FIELDS.items():
            value = self.items.get(name)
            if name == OS_VERSION:
                parsed: object = split_version(value)[0] if isinstance(value, str) else None
            else:
                parsed = _VERSIONS[name].parse(value) if isinstance(value, str) and value else None
            object.__setattr__(self, attribute, parsed)
        pending = self.items.get(PENDING_VERSION)
        pending = pending if isinstance(pending, dict) else {}
        object.__setattr__(self, "pending_os_version", pending.get("os-version") or None)
        object.__setattr__(self, "pending_build_version", pending.get("build-version") or None)
        failure = self.items.get(FAILURE_REASON)
        object.__setattr__(self, "failure_reason", failure if isinstance(failure, dict) else None)
        object.__setattr__(self, "restart_pending", self.items.get(RESTART_PENDING) is True)
        object.__setattr__(self, "_facts", None)
        if self.platform and self.product_version and self.build:
            # The supplement as every form means it (see bsi.domain.inventory).
            facts = self.facts()
            object.__setattr__(self, "supplemental_build", facts.supplemental_build)
            object.__setattr__(self, "supplemental_extra", facts.supplemental_extra)

    def facts(self) -> DeviceFacts:
        """What eligibility needs, once the device has reported its OS.

        A device that reports its installed packages (a stock Linux host) may
        have no build: it is placed by its packages instead.
        """
        if self._facts is not None:
            return self._facts
        platform, version, build = self.platform, self.product_version, self.build
        manager, packages, digests = _checked(read_package_items, self.items)
        if platform is None or version is None or (build is None and packages is None):
            missing = OS_FAMILY if platform is None else OS_VERSION if version is None else OS_BUILD
            raise InvalidStatusReport(
                f"status item {missing} has not been reported yet",
                hint="the device's first, full status report carries it",
            )
        # DDM reports no power source or charge level: device.power.battery-health
        # is the battery's condition (normal, service-recommended, ...), not its
        # charge, so on_battery and battery_percent stay unknown. Nor does DDM
        # report the CPU architecture, and a board id does not reliably tell it
        # (Intel Macs with a T2 chip have J...AP board ids too).
        facts = normalise(
            platform=platform,
            version=str(self.items[OS_VERSION]),
            build=None if build is None else str(build),
            supplemental_build=_text(self.items.get(SUPPLEMENTAL_BUILD)),
            supplemental_extra=_text(self.items.get(SUPPLEMENTAL_EXTRA)),
            model_identifier=self.model_identifier,
            software_update_device_id=self.software_update_device_id,
            restart_pending=self.restart_pending,
        )
        try:
            containers = read_container_items(self.items)
        except InvalidInput as error:
            raise InvalidStatusReport(f"status item {error.message}", hint=error.hint) from None
        if containers is not None:
            facts = replace(facts, containers=containers)
        if packages is not None or digests is not None:
            facts = replace(
                facts,
                package_manager=manager,
                packages=packages,
                packages_asked=_checked(read_packages_asked, self.items),
                file_digests=digests,
            )
        object.__setattr__(self, "_facts", facts)
        return facts


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# DeviceState attributes copied from string items as they are.
_TEXT_FIELDS: Mapping[str, str] = {
    "platform": OS_FAMILY,
    "os_marketing_name": "device.operating-system.marketing-name",
    "model_identifier": MODEL_IDENTIFIER,
    "model_family": "device.model.family",
    "model_marketing_name": "device.model.marketing-name",
    "serial_number": SERIAL_ITEM,
    "udid": UDID_ITEM,
    "software_update_device_id": "softwareupdate.device-id",
    "install_state": INSTALL_STATE,
    "battery_health": "device.power.battery-health",
}
# DeviceState attributes parsed from version items; "" (none installed) is None.
_VERSION_FIELDS: Mapping[str, str] = {
    "product_version": OS_VERSION,
    "build": OS_BUILD,
    "supplemental_build": SUPPLEMENTAL_BUILD,
    "supplemental_extra": SUPPLEMENTAL_EXTRA,
}
#: Each typed DeviceState attribute's status item: how other inventory sources
#: (bsi.domain.sources) name the DDM items they fill.
ITEM_OF: Mapping[str, str] = MappingProxyType({**_TEXT_FIELDS, **_VERSION_FIELDS})


_PACKAGE_ITEMS = frozenset(
    {PACKAGE_MANAGER_ITEM, PACKAGES_ITEM, PACKAGES_ASKED_ITEM, FILE_DIGESTS_ITEM}
)


_T = TypeVar("_T")


def _checked(read: Callable[[Mapping[str, object]], _T], items: Mapping[str, object]) -> _T:
    """``read(items)``, its refusal an :class:`InvalidStatusReport` naming the item."""
    try:
        return read(items)
    except InvalidInput as error:
        raise InvalidStatusReport(f"status item {error.message}", hint=error.hint) from None


def _prefixes(name: str) -> tuple[str, ...]:
    """The item names that would hold ``name``: ``a``, ``a.b`` for ``a.b.c``
    (remembered for short names: a fleet's reports name the same few hundred items)."""
    return _remembered_prefixes(name) if len(name) <= _REMEMBERED_LENGTH else _cut(name)


@functools.lru_cache(maxsize=8192)
def _remembered_prefixes(name: str) -> tuple[str, ...]:
    return _cut(name)


def _cut(name: str) -> tuple[str, ...]:
    parts = name.split(".")
    return tuple(".".join(parts[:end]) for end in range(1, len(parts)))


def _merge_list(earlier: list[object], later: list[object]) -> list[object]:
    """Apply a list item's changed entries: same identifier replaces, ``_removed`` drops."""
    entries: dict[object, object] = {}
    for entry in [*earlier, *later]:
        assert isinstance(entry, dict)
        if entry.get("_removed") is True:
            entries.pop(entry["identifier"], None)
        else:
            entries[entry["identifier"]] = entry
    return list(entries.values())


def merge_status(previous: DeviceState | None, report: StatusReport) -> DeviceState:
    """Fold one report into what the device said before.

    A later value replaces whatever earlier value sat at the same path, or
    above or below it. List items are the exception: Apple sends only their
    changed entries in a partial report, so those are applied entry by entry.
    A full report (or the first one) replaces the state outright, because it
    is the device's complete word and anything missing from it is gone.
    Unknown dictionary items merge leaf by leaf: bsi cannot tell where such an
    item begins, so only a full report drops a key that vanished from one.
    """
    if previous is None or report.full_report:
        items: dict[str, object] = {}
        errors: list[dict[str, object]] = []
    else:
        items, errors = dict(previous.items), list(previous.errors)
    # Which stored items sit below each name: finding what a new value
    # replaces costs the name's depth, not the size of the state, so a merge
    # is linear in the report and the state.
    below: dict[str, set[str]] = {}
    for other in items:
        for prefix in _prefixes(other):
            below.setdefault(prefix, set()).add(other)
    for name, value in report.items.items():
        earlier = items.get(name)
        stale = {prefix for prefix in _prefixes(name) if prefix in items}
        stale |= below.get(name, set())
        for gone in stale:
            del items[gone]
            for prefix in _prefixes(gone):
                below[prefix].discard(gone)
        if name in _LIST_ITEMS and isinstance(value, list):
            value = _merge_list(earlier if isinstance(earlier, list) else [], value)
        items[name] = copy.deepcopy(value)
        for prefix in _prefixes(name):
            below.setdefault(prefix, set()).add(name)
    if len(items) > MAX_STATUS_ITEMS:
        raise InvalidStatusReport(
            f"this report would leave the device with {len(items)} status items; "
            f"bsi keeps at most {MAX_STATUS_ITEMS}",
            hint="send a full report (FullReport: true) with only the items the device has",
        )
    # A new value or a new error for an item settles any earlier error about it.
    settled = set(report.items) | {str(error["StatusItem"]) for error in report.errors}
    errors = [error for error in errors if error["StatusItem"] not in settled]
    errors += copy.deepcopy(list(report.errors))
    # A valid value settles an earlier finding at its path; a new finding replaces one.
    # Findings about the Errors array belong to the report that had them.
    earlier = [] if previous is None or report.full_report else list(previous.invalid)
    found = {finding["path"] for finding in report.invalid}
    reported_prefixes = {prefix for name in report.items for prefix in _prefixes(name)}

    def reported(path: str) -> bool:  # at, above or below an item of this report
        return (
            path in report.items
            or path in reported_prefixes
            or any(prefix in report.items for prefix in _prefixes(path))
        )

    invalid = [
        finding
        for finding in earlier
        if finding["path"] not in found
        and not finding["path"].startswith("Errors[")
        and not reported(finding["path"])
    ]
    invalid += [dict(finding) for finding in report.invalid]
    # The items kept from ``previous`` were checked when it was built; the report's are
    # checked again as stored (a list item's entries are merged with earlier ones).
    check_only = None if previous is None else [name for name in report.items if name in items]
    return DeviceState(items, tuple(errors), tuple(invalid), check_only)


DECISION_ITEMS = (
    OS_FAMILY,
    OS_VERSION,
    OS_BUILD,
    SUPPLEMENTAL_BUILD,
    SUPPLEMENTAL_EXTRA,
    MODEL_IDENTIFIER,
    "softwareupdate.device-id",
    CONTAINERS_ITEM,
)
"""The items a decision reads: an invalid value for one makes the decision unsafe
(a container host's containers place it on image supplements)."""


def invalid_decision_items(state: DeviceState) -> list[str]:
    """The decision items the device last reported in a form bsi refused.

    Its stored value for such an item is older than what it said, so any
    decision built on it would be a guess: the device is ``unknown``
    (``status-invalid``) until it reports the item validly.
    """
    return [
        finding["path"]
        for finding in state.invalid
        if any(finding["path"] == n or finding["path"].startswith(n + ".") for n in DECISION_ITEMS)
    ]


def state_to_report(state: DeviceState) -> dict[str, object]:
    """The full report that would rebuild ``state``: for storage, export and tests."""
    return {
        "StatusItems": nest_status_items(copy.deepcopy(state.items)),
        "Errors": copy.deepcopy(list(state.errors)),
        "FullReport": True,
    }


def identity_contradictions(
    items: Mapping[str, object], udid: str | None, serial_number: str | None
) -> list[str]:
    """How a report's own hardware identity contradicts the enrollment it came under.

    ``udid`` and ``serial_number`` are what is known of the enrollment's
    device (None: not known). Apple's ``device.identifier.udid`` and
    ``device.identifier.serial-number`` items name the hardware that wrote the
    report; a report naming other hardware was replayed or forwarded under
    the wrong enrollment. Compared without regard to case, as both are
    hexadecimal or upper-case alphanumerics that tools print either way.
    """
    found = []
    for name, known in ((UDID_ITEM, udid), (SERIAL_ITEM, serial_number)):
        said = items.get(name)
        if known and isinstance(said, str) and said.casefold() != known.casefold():
            found.append(f"{name} is {said!r}, but this enrollment's is {known!r}")
    return found


def supported_status_items(items: Mapping[str, object]) -> frozenset[str] | None:
    """The status items a device says it can report, or None when it has not said.

    Read from ``management.client-capabilities`` → ``supported-payloads`` →
    ``status-items`` (Apple: an implicit subscription, always reported).
    """
    capabilities = items.get(CLIENT_CAPABILITIES)
    payloads = capabilities.get("supported-payloads") if isinstance(capabilities, dict) else None
    listed = payloads.get("status-items") if isinstance(payloads, dict) else None
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        return None
    return frozenset(listed)
