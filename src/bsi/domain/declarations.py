"""The four DDM declaration types bsi speaks: their keys, validation, builders, combining.

bsi carries its own table of Apple's schema keys rather than reading Apple's
YAML at run time, so the product works without that folder and a schema change
upstream cannot silently change behaviour; the tests prove the table still
agrees with Apple's YAML.

Validation refuses on the first broken rule with
:class:`~bsi.errors.InvalidDeclaration`, naming the key path and the rule, because
a declaration a device would reject must be refused before any device sees it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from bsi.domain.policy import Enforcement, InstallSecurityUpdate, SoftwareUpdatePolicy
from bsi.errors import InvalidDeclaration

SOFTWARE_UPDATE_SETTINGS = "com.apple.configuration.softwareupdate.settings"
ENFORCEMENT_SPECIFIC = "com.apple.configuration.softwareupdate.enforcement.specific"
ACTIVATION_SIMPLE = "com.apple.activation.simple"
STATUS_SUBSCRIPTIONS = "com.apple.configuration.management.status-subscriptions"

STRING, BOOLEAN, INTEGER, REAL = "<string>", "<boolean>", "<integer>", "<real>"
DICTIONARY, ARRAY = "<dictionary>", "<array>"
REQUIRED, OPTIONAL = "required", "optional"

PATH_SEGMENT = "one URL path segment"
"""``format`` bsi gives ``Identifier``: it travels as the last segment of
``declaration/<category>/<identifier>``, which NanoMDM resolves as a URL
reference (RFC 3986) before forwarding. ``/`` adds a segment, ``?`` and ``#``
end the path, ``%`` starts an escape the server decodes, ``.`` and ``..`` are
removed as dot segments, and Go refuses control characters: such an
identifier could never be fetched."""
_NOT_IN_PATH_SEGMENT = {"/": "slash", "?": "question mark", "#": "hash", "%": "percent sign"}

LOCAL_DATETIME = "yyyy-mm-ddThh:mm:ss"
"""``format`` of Apple's ``TargetLocalDateTime``: RFC 3339 without a zone offset."""

_LOCAL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
_LOCAL_DATETIME_STRPTIME = "%Y-%m-%dT%H:%M:%S"
_DEFERRAL_KINDS = ("Combined", "Major", "Minor", "System")
_PYTHON_TYPES: dict[str, type | tuple[type, ...]] = {
    STRING: str,
    BOOLEAN: bool,
    INTEGER: int,
    REAL: (int, float),
    DICTIONARY: dict,
    ARRAY: list,
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key of Apple's schema, in the terms Apple's YAML uses.

    For an ``<array>``, ``subkeys`` holds exactly one spec: that of its items.
    ``max_octets`` and ``format`` come from Apple's prose, not from YAML fields.
    """

    key: str
    type: str
    presence: str = OPTIONAL
    default: str | bool | int | None = None
    rangelist: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    combinetype: str | None = None
    subkeys: tuple[KeySpec, ...] = ()
    max_octets: int | None = None
    format: str | None = None

    def child(self, name: str) -> KeySpec:
        return next(spec for spec in self.subkeys if spec.key == name)


SYSTEM, USER = "system", "user"
"""Apple's ``allowed-scopes``: the device channel (system) and user channels (user)."""


@dataclass(frozen=True, slots=True)
class DeclarationType:
    """A declaration type: its payload keys, Apple's ``apply`` mode and scopes.

    ``apply`` is ``combined`` where several declarations merge into one
    setting, ``multiple`` where each stands alone, ``None`` where Apple says
    nothing (activations). ``scopes`` is the union of Apple's
    ``allowed-scopes`` over every OS (Shared iPad included); where Apple lists
    none, both.
    """

    name: str
    payload: KeySpec
    apply: str | None
    scopes: frozenset[str] = frozenset({SYSTEM, USER})


def _mode(key: str) -> KeySpec:
    modes = ("Allowed", "AlwaysOn", "AlwaysOff")
    return KeySpec(key, STRING, rangelist=modes, default="Allowed", combinetype="enum-last")


def _days(key: str) -> KeySpec:
    return KeySpec(key, INTEGER, min=1, max=90, combinetype="number-max")


def _flag(key: str) -> KeySpec:
    return KeySpec(key, BOOLEAN, default=True, combinetype="boolean-and")


def _text(key: str, presence: str = OPTIONAL) -> KeySpec:
    return KeySpec(key, STRING, presence)


def _dict(
    key: str, *subkeys: KeySpec, presence: str = OPTIONAL, combinetype: str | None = None
) -> KeySpec:
    return KeySpec(key, DICTIONARY, presence, combinetype=combinetype, subkeys=subkeys)


def _array(
    key: str, item: KeySpec, presence: str = OPTIONAL, combinetype: str | None = None
) -> KeySpec:
    return KeySpec(key, ARRAY, presence, combinetype=combinetype, subkeys=(item,))


def _type(
    name: str, apply: str | None, scopes: frozenset[str], *keys: KeySpec
) -> tuple[str, DeclarationType]:
    return name, DeclarationType(name, _dict("Payload", *keys, presence=REQUIRED), apply, scopes)


_SYSTEM_ONLY = frozenset({SYSTEM})
_ANY_SCOPE = frozenset({SYSTEM, USER})


_BETA_PROGRAM = (_text("Description", REQUIRED), _text("Token", REQUIRED))

BASE_KEYS: tuple[KeySpec, ...] = (
    _text("Type", REQUIRED),
    KeySpec("Identifier", STRING, REQUIRED, max_octets=64, format=PATH_SEGMENT),
    KeySpec("ServerToken", STRING, REQUIRED, max_octets=64),
    _dict("Payload", presence=REQUIRED),
)

DECLARATION_TYPES: Mapping[str, DeclarationType] = MappingProxyType(
    dict(
        [
            _type(
                SOFTWARE_UPDATE_SETTINGS,
                "combined",
                _SYSTEM_ONLY,
                _flag("Notifications"),
                _dict("Deferrals", *(_days(f"{k}PeriodInDays") for k in _DEFERRAL_KINDS)),
                KeySpec(
                    "RecommendedCadence",
                    STRING,
                    rangelist=("All", "Oldest", "Newest"),
                    combinetype="enum-last",
                ),
                _dict(
                    "AutomaticActions",
                    _mode("Download"),
                    _mode("InstallOSUpdates"),
                    _mode("InstallSecurityUpdate"),
                ),
                _dict("RapidSecurityResponse", _flag("Enable"), _flag("EnableRollback")),
                _flag("AllowStandardUserOSUpdates"),
                _dict(
                    "Beta",
                    _mode("ProgramEnrollment"),
                    _array(
                        "OfferPrograms",
                        _dict("Program", *_BETA_PROGRAM, presence=REQUIRED),
                        combinetype="set-union",
                    ),
                    _dict("RequireProgram", *_BETA_PROGRAM, combinetype="first"),
                ),
            ),
            _type(
                ENFORCEMENT_SPECIFIC,
                "multiple",
                _SYSTEM_ONLY,
                _text("TargetOSVersion", REQUIRED),
                _text("TargetBuildVersion"),
                KeySpec("TargetLocalDateTime", STRING, REQUIRED, format=LOCAL_DATETIME),
                _text("DetailsURL"),
            ),
            _type(
                ACTIVATION_SIMPLE,
                None,
                _ANY_SCOPE,
                _array("StandardConfigurations", _text("StandardConfigurationsItems"), REQUIRED),
                _text("Predicate"),
            ),
            _type(
                STATUS_SUBSCRIPTIONS,
                "combined",
                _ANY_SCOPE,
                _array(
                    "StatusItems",
                    _dict("StatusItem", _text("Name", REQUIRED)),
                    REQUIRED,
                    combinetype="set-union",
                ),
            ),
        ]
    )
)


@dataclass(frozen=True, slots=True)
class Declaration:
    """A validated declaration, hashed by type, identifier and token.

    The token stands for the payload (builders derive it from the content), so
    the payload, a mutable dict, takes no part in hashing.
    """

    type: str
    identifier: str
    server_token: str
    payload: dict[str, Any] = field(hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "Type": self.type,
            "Identifier": self.identifier,
            "ServerToken": self.server_token,
            "Payload": copy.deepcopy(self.payload),
        }


# --- validation -----------------------------------------------------------------------------


def validate_declaration(obj: object) -> Declaration:
    """Check untrusted parsed JSON against the base keys and its type's schema."""
    if not isinstance(obj, dict):
        raise InvalidDeclaration(f"{obj!r} is not a {DICTIONARY}", path="Declaration", rule="type")
    kind = obj.get("Type")
    if "Type" in obj:
        _check_value(BASE_KEYS[0], kind, "Type")
    payload = _declaration_type(kind).payload if isinstance(kind, str) else BASE_KEYS[3]
    root = KeySpec("Declaration", DICTIONARY, subkeys=(*BASE_KEYS[:3], payload))
    _check_children(root, obj, "")
    return Declaration(
        type=obj["Type"],
        identifier=obj["Identifier"],
        server_token=obj["ServerToken"],
        payload=copy.deepcopy(obj["Payload"]),
    )


def declaration_from_admin(obj: object) -> Declaration:
    """An admin's declaration, its ``ServerToken`` computed by bsi over the content.

    Apple's protocol schema says the server computes the token over the whole
    declaration; a token taken verbatim would let a changed payload keep its
    token, and devices would never fetch it. A supplied ``ServerToken`` is
    ignored (it may be left out).
    """
    if isinstance(obj, dict):
        payload = obj.get("Payload")
        token = (
            server_token(str(obj.get("Type")), str(obj.get("Identifier")), payload)
            if isinstance(payload, dict)
            else ""
        )
        obj = {**obj, "ServerToken": token}
    return validate_declaration(obj)


def _declaration_type(name: str) -> DeclarationType:
    if name not in DECLARATION_TYPES:
        raise InvalidDeclaration(
            f"{name!r} is not a declaration type bsi supports",
            path="Type",
            rule="unknown-type",
            hint="supported: " + ", ".join(DECLARATION_TYPES),
        )
    return DECLARATION_TYPES[name]


def _check_children(spec: KeySpec, obj: Mapping[Any, Any], path: str) -> None:
    known = {child.key: child for child in spec.subkeys}
    for name in obj:
        if name not in known:
            raise InvalidDeclaration(
                f"unknown key {name!r}",
                path=_join(path, str(name)),
                rule="unknown-key",
                hint="known keys: " + ", ".join(known),
            )
    for child in spec.subkeys:
        if child.key in obj:
            _check_value(child, obj[child.key], _join(path, child.key))
        elif child.presence == REQUIRED:
            raise InvalidDeclaration(
                f"required key {child.key!r} is missing",
                path=_join(path, child.key),
                rule="presence",
            )


def _check_value(spec: KeySpec, value: object, path: str) -> None:
    if not _has_type(spec.type, value):
        raise InvalidDeclaration(f"{value!r} is not a {spec.type}", path=path, rule="type")
    if spec.rangelist and value not in spec.rangelist:
        raise InvalidDeclaration(
            f"{value!r} is not one of {', '.join(spec.rangelist)}", path=path, rule="rangelist"
        )
    if isinstance(value, int | float) and not (
        (spec.min is None or value >= spec.min) and (spec.max is None or value <= spec.max)
    ):
        raise InvalidDeclaration(
            f"{value!r} is outside {spec.min}..{spec.max}", path=path, rule="range"
        )
    if isinstance(value, str):
        _check_string(spec, value, path)
    if isinstance(value, dict):
        _check_children(spec, value, path)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(spec.subkeys[0], item, f"{path}[{index}]")


def _check_string(spec: KeySpec, value: str, path: str) -> None:
    if spec.max_octets is not None and len(value.encode()) > spec.max_octets:
        raise InvalidDeclaration(
            f"{value!r} is longer than {spec.max_octets} octets", path=path, rule="length"
        )
    if spec.format == PATH_SEGMENT:
        _check_path_segment(value, path)
    if spec.format == LOCAL_DATETIME and not _is_local_datetime(value):
        raise InvalidDeclaration(
            f"{value!r} is not a local date and time",
            path=path,
            rule="format",
            hint=f"expected {LOCAL_DATETIME} with no zone, e.g. '2026-03-01T18:00:00'",
        )


def _check_path_segment(value: str, path: str) -> None:
    hint = "use letters, digits and . - _ (reverse-DNS style, e.g. com.example.bsi.settings)"
    if value in (".", ".."):
        raise InvalidDeclaration(
            f"{value!r} is a dot segment, which URL resolution removes",
            path=path,
            rule="format",
            hint=hint,
        )
    for char in value:
        name = _NOT_IN_PATH_SEGMENT.get(char)
        if name is None and (ord(char) < 0x20 or ord(char) == 0x7F):
            name = f"control character U+{ord(char):04X}"
        if name is not None:
            raise InvalidDeclaration(
                f"{value!r} holds {name} {char!r}, which does not survive NanoMDM's "
                "URL handling: devices could never fetch it",
                path=path,
                rule="format",
                hint=hint,
            )


def _is_local_datetime(value: str) -> bool:
    if not _LOCAL_DATETIME.fullmatch(value):
        return False
    try:
        datetime.strptime(value, _LOCAL_DATETIME_STRPTIME)
    except ValueError:
        return False
    return True


def _has_type(schema_type: str, value: object) -> bool:
    # bool is a subclass of int in Python, but never an <integer> or <real> in a plist.
    if schema_type in (INTEGER, REAL) and isinstance(value, bool):
        return False
    return isinstance(value, _PYTHON_TYPES[schema_type])


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- builders -------------------------------------------------------------------------------


def server_token(declaration_type: str, identifier: str, payload: Mapping[str, Any]) -> str:
    """A token that changes exactly when the content does, as DDM sync tokens need."""
    canonical = json.dumps(
        {"Type": declaration_type, "Identifier": identifier, "Payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _declare(declaration_type: str, identifier: str, payload: dict[str, Any]) -> Declaration:
    """Validate what a builder made, so no builder argument can yield a bad declaration."""
    token = server_token(declaration_type, identifier, payload)
    base = {"Type": declaration_type, "Identifier": identifier, "ServerToken": token}
    return validate_declaration({**base, "Payload": payload})


def _pruned(tree: dict[str, Any]) -> dict[str, Any]:
    """Drop unset options, and dictionaries left empty by that."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _pruned(value)
        if value is not None and value != {}:
            out[key] = value
    return out


def software_update_settings(
    identifier: str,
    *,
    install_security_update: InstallSecurityUpdate | str | None = None,
    rsr_enable: bool | None = None,
    rsr_enable_rollback: bool | None = None,
    download: str | None = None,
    install_os_updates: str | None = None,
    notifications: bool | None = None,
    major_deferral_days: int | None = None,
    minor_deferral_days: int | None = None,
    system_deferral_days: int | None = None,
) -> Declaration:
    """A ``softwareupdate.settings`` declaration; unset options are left to Apple's defaults.

    Only the keys that steer supplements and the updates they ride on are
    offered; :func:`validate_declaration` accepts every key of the type.
    """
    payload = {
        "Notifications": notifications,
        "Deferrals": {
            "MajorPeriodInDays": major_deferral_days,
            "MinorPeriodInDays": minor_deferral_days,
            "SystemPeriodInDays": system_deferral_days,
        },
        "AutomaticActions": {
            "Download": download,
            "InstallOSUpdates": install_os_updates,
            "InstallSecurityUpdate": (
                None if install_security_update is None else str(install_security_update)
            ),
        },
        "RapidSecurityResponse": {"Enable": rsr_enable, "EnableRollback": rsr_enable_rollback},
    }
    return _declare(SOFTWARE_UPDATE_SETTINGS, identifier, _pruned(payload))


def enforcement_specific(
    identifier: str,
    target_os_version: str,
    target_local_datetime: datetime,
    target_build_version: str | None = None,
    details_url: str | None = None,
) -> Declaration:
    """An ``enforcement.specific`` declaration; the deadline is device-local wall time.

    An aware datetime is refused: Apple's format has no zone, so a zone given
    here would be silently dropped and the deadline would move.
    """
    if target_local_datetime.tzinfo is not None:
        raise InvalidDeclaration(
            f"{target_local_datetime.isoformat()!r} carries a time zone",
            path="Payload.TargetLocalDateTime",
            rule="format",
            hint="pass a naive datetime in the device's local time",
        )
    payload = {
        "TargetOSVersion": target_os_version,
        "TargetBuildVersion": target_build_version,
        "TargetLocalDateTime": target_local_datetime.isoformat(timespec="seconds"),
        "DetailsURL": details_url,
    }
    return _declare(ENFORCEMENT_SPECIFIC, identifier, _pruned(payload))


def activation_simple(
    identifier: str, configurations: Sequence[str], predicate: str | None = None
) -> Declaration:
    """An activation installing ``configurations`` (their identifiers)."""
    payload = {"StandardConfigurations": list(configurations), "Predicate": predicate}
    return _declare(ACTIVATION_SIMPLE, identifier, _pruned(payload))


def status_subscriptions(identifier: str, items: Sequence[str]) -> Declaration:
    """A subscription to status ``items`` by name, written ``{"Name": ...}`` as Apple wants."""
    names = list(dict.fromkeys(items))
    return _declare(STATUS_SUBSCRIPTIONS, identifier, {"StatusItems": [{"Name": n} for n in names]})


# --- combining ------------------------------------------------------------------------------


def combine_payloads(
    declaration_type: str, payloads: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Merge validated payloads of one type by each key's ``combinetype``.

    Only types Apple applies ``combined`` can be merged: for the others Apple
    defines no rule, and picking one would invent behaviour.
    """
    spec = _declaration_type(declaration_type)
    if spec.apply != "combined":
        raise ValueError(f"{declaration_type} declarations are not combined by Apple")
    return _combine_children(spec.payload, payloads)


def _combine_children(spec: KeySpec, payloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in spec.subkeys:
        present = [payload[child.key] for payload in payloads if child.key in payload]
        if present:
            out[child.key] = _combine_values(child, present)
    return out


def _combine_values(spec: KeySpec, values: list[Any]) -> Any:
    match spec.combinetype:
        case "boolean-and":
            return all(values)
        case "boolean-or":
            return any(values)
        case "enum-last":
            return max(values, key=spec.rangelist.index)
        case "number-max":
            return max(values)
        case "number-min":
            return min(values)
        case "set-union":
            union: dict[str, Any] = {}
            for item in (item for value in values for item in value):
                union.setdefault(json.dumps(item, sort_keys=True), item)
            return list(union.values())
        case "first":
            return copy.deepcopy(values[0])
        case None if spec.type == DICTIONARY:
            return _combine_children(spec, values)
    raise ValueError(f"no combine rule for {spec.key!r} ({spec.combinetype})")


# --- the effective policy -------------------------------------------------------------------


def effective_policy(declarations: Sequence[Declaration]) -> SoftwareUpdatePolicy:
    """The policy the given (active) declarations put a device under.

    Missing keys take Apple's schema defaults from the table, so a device with
    no declarations behaves like an unmanaged one.
    """
    settings = DECLARATION_TYPES[SOFTWARE_UPDATE_SETTINGS].payload
    combined = combine_payloads(
        SOFTWARE_UPDATE_SETTINGS,
        [d.payload for d in declarations if d.type == SOFTWARE_UPDATE_SETTINGS],
    )

    def setting(group: str, key: str) -> Any:
        default = settings.child(group).child(key).default
        return combined.get(group, {}).get(key, default)

    return SoftwareUpdatePolicy(
        install_security_update=InstallSecurityUpdate(
            setting("AutomaticActions", "InstallSecurityUpdate")
        ),
        rapid_security_response_enable=setting("RapidSecurityResponse", "Enable"),
        rapid_security_response_enable_rollback=setting("RapidSecurityResponse", "EnableRollback"),
        enforcements=tuple(
            Enforcement(
                target_os_version=d.payload["TargetOSVersion"],
                deadline=datetime.strptime(
                    d.payload["TargetLocalDateTime"], _LOCAL_DATETIME_STRPTIME
                ),
                target_build_version=d.payload.get("TargetBuildVersion"),
                details_url=d.payload.get("DetailsURL"),
                identifier=d.identifier,
            )
            for d in declarations
            if d.type == ENFORCEMENT_SPECIFIC
        ),
    )


def subscribed_status_items(declarations: Sequence[Declaration]) -> list[str]:
    """Every status item name the given declarations subscribe to, first mention first."""
    combined = combine_payloads(
        STATUS_SUBSCRIPTIONS,
        [d.payload for d in declarations if d.type == STATUS_SUBSCRIPTIONS],
    )
    return [item["Name"] for item in combined.get("StatusItems", [])]
