"""DDM synchronisation: what one device group is served, and its sync token.

A device's effective declarations are its group's assigned configurations plus
two that bsi adds itself: a status subscription to the items BSI compliance
needs, and one ``activation.simple`` that activates every configuration.
The sync token is a digest of the (type, identifier, server token) of every
declaration served, so it changes exactly when what the device should apply
changes, and a check-in where nothing changed is one token comparison.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from bsi.domain.declarations import (
    ACTIVATION_SIMPLE,
    DECLARATION_TYPES,
    SYSTEM,
    Declaration,
    activation_simple,
    server_token,
    status_subscriptions,
)
from bsi.domain.inventory import platform_name
from bsi.domain.versions import ProductVersion
from bsi.errors import InvalidInput

ENROLLMENT_ID_MAX = 255
"""Longest enrollment id bsi accepts. NanoMDM names a user channel ``<UDID>:<user>``:
73 characters for an Intel Mac's user, 86 for a Shared iPad user (UDID plus a
managed Apple ID); 255 leaves room for longer Apple IDs."""


def check_enrollment_id(value: str) -> str:
    """``value`` if it can name an enrollment: 1 to 255 characters, no control characters.

    Control characters (C0, DEL, C1) would corrupt logs and CSV exports and
    cannot travel in an HTTP header anyway. Raises
    :class:`~bsi.errors.InvalidInput` naming the rule broken.
    """
    if not 0 < len(value) <= ENROLLMENT_ID_MAX:
        raise InvalidInput(
            f"enrollment id {value[:40]!r}... is {len(value)} characters"
            if len(value) > 40
            else f"enrollment id {value!r} is {len(value)} characters",
            hint=f"an enrollment id has 1 to {ENROLLMENT_ID_MAX} characters",
        )
    for char in value:
        if unicodedata.category(char) == "Cc":
            raise InvalidInput(
                f"enrollment id {value!r} holds the control character U+{ord(char):04X}",
                hint="enrollment ids are printable text",
            )
    return value


# The status items bsi needs to decide and report for a device, each with the
# first OS version that reports it (Apple's status schemas,
# ``supportedOS.<os>.introduced``). Subscribing a device to an item its OS
# lacks earns an error in every report, so each device is asked only for what
# it can report.
_INTRODUCED: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        # with the serial number: which hardware wrote a report
        "device.identifier.udid": {"macOS": "13.0", "iOS": "16.0"},
        "device.identifier.serial-number": {"macOS": "13.0", "iOS": "16.0"},
        "device.operating-system.family": {"macOS": "13.0", "iOS": "15.0"},
        "device.operating-system.version": {"macOS": "13.0", "iOS": "15.0"},
        "device.operating-system.build-version": {"macOS": "13.0", "iOS": "15.0"},
        "device.operating-system.supplemental.build-version": {"macOS": "13.0", "iOS": "16.1"},
        "device.operating-system.supplemental.extra-version": {"macOS": "13.0", "iOS": "16.1"},
        "device.model.identifier": {"macOS": "13.0", "iOS": "15.0"},
        "softwareupdate.device-id": {"macOS": "15.0", "iOS": "18.0"},
        "softwareupdate.install-state": {"macOS": "14.0", "iOS": "17.0"},
        "softwareupdate.pending-version": {"macOS": "14.0", "iOS": "17.0"},
        "softwareupdate.failure-reason": {"macOS": "14.0", "iOS": "17.0"},
    }
)
BSI_STATUS_ITEMS = tuple(_INTRODUCED)
"""Every item bsi subscribes to, on an OS new enough for all of them."""
_DDM_SINCE = {"macOS": ProductVersion(13), "iOS": ProductVersion(15)}
BASELINE_STATUS_ITEMS = tuple(
    name
    for name, since in _INTRODUCED.items()
    if all(ProductVersion.parse(since[os]) <= first for os, first in _DDM_SINCE.items())
)
"""What every DDM-capable OS reports: asked of a device bsi knows nothing about yet.
Its first report names its OS and capabilities, and its subscription grows."""


def subscription_items(
    platform: str | None,
    version: ProductVersion | None,
    capabilities: frozenset[str] | None = None,
) -> tuple[str, ...]:
    """The status items to ask of one device, in :data:`BSI_STATUS_ITEMS` order.

    ``capabilities`` is the device's own list (``management.client-
    capabilities`` → ``supported-payloads.status-items``, which Apple's
    devices always report) and wins when known. Otherwise the OS family and
    version pick the items introduced by then (iPadOS as iOS); an unknown
    device gets :data:`BASELINE_STATUS_ITEMS`. bsi's own agents (not Apple)
    get everything: they read the items they know and ignore the rest.
    """
    if capabilities is not None:
        return tuple(name for name in BSI_STATUS_ITEMS if name in capabilities)
    os = platform_name(platform) if platform else None
    if os is None or version is None:
        return BASELINE_STATUS_ITEMS
    if os not in _DDM_SINCE:
        return BSI_STATUS_ITEMS
    return tuple(
        name for name, since in _INTRODUCED.items() if ProductVersion.parse(since[os]) <= version
    )


_CATEGORY_BY_PREFIX = (
    ("com.apple.activation.", "Activations"),
    ("com.apple.configuration.", "Configurations"),
    ("com.apple.asset.", "Assets"),
    ("com.apple.management.", "Management"),
)
# The path segment of ``declaration/{category}/{identifier}`` for each prefix.
_PREFIX_BY_CATEGORY = {
    "activation": "com.apple.activation.",
    "configuration": "com.apple.configuration.",
    "asset": "com.apple.asset.",
    "management": "com.apple.management.",
}


@dataclass(frozen=True, slots=True)
class DeclarationSet:
    """Everything one group's devices are served, with its sync token."""

    declarations: tuple[Declaration, ...]
    token: str

    def find_in_category(self, category: str, identifier: str) -> Declaration | None:
        """The declaration at ``declaration/{category}/{identifier}`` (``configuration``, ...)."""
        prefix = _PREFIX_BY_CATEGORY.get(category)
        if prefix is None:
            return None
        for declaration in self.declarations:
            if declaration.identifier == identifier and declaration.type.startswith(prefix):
                return declaration
        return None


def declaration_set(
    group: str,
    assigned: Sequence[Declaration],
    scope: str = SYSTEM,
    items: Sequence[str] = BSI_STATUS_ITEMS,
) -> DeclarationSet:
    """What one group's channels of ``scope`` are served.

    The device channel (``system``) gets the group's configurations, bsi's
    status subscription and one activation for all. A user channel (``user``)
    gets only the configurations Apple allows in user scope, and no bsi
    subscription: the items BSI needs are system-scope, and a user channel's
    word on the OS is not used. ``items`` are the status items the device
    channel is subscribed to (:func:`subscription_items`). Every token is
    recomputed from the content, whatever was stored, so a changed payload
    always changes the sync token.
    """
    configurations = [
        _with_content_token(d)
        for d in assigned
        if d.type != ACTIVATION_SIMPLE and scope in DECLARATION_TYPES[d.type].scopes
    ]
    if scope == SYSTEM and items:
        configurations.append(status_subscriptions(f"bsi.status-subscriptions.{group}", items))
    configurations.sort(key=lambda d: d.identifier)
    if not configurations:
        return DeclarationSet((), sync_token(()))
    activation = activation_simple(
        f"bsi.activation.{group}.{scope}" if scope != SYSTEM else f"bsi.activation.{group}",
        [d.identifier for d in configurations],
    )
    served = (activation, *configurations)
    return DeclarationSet(served, sync_token(served))


def _with_content_token(declaration: Declaration) -> Declaration:
    token = server_token(declaration.type, declaration.identifier, declaration.payload)
    if token == declaration.server_token:
        return declaration
    return Declaration(declaration.type, declaration.identifier, token, declaration.payload)


def sync_token(declarations: Sequence[Declaration]) -> str:
    digest = hashlib.sha256()
    for d in sorted(declarations, key=lambda d: (d.type, d.identifier)):
        digest.update(f"{d.type}\0{d.identifier}\0{d.server_token}\n".encode())
    return digest.hexdigest()[:32]


def tokens_response(declarations: DeclarationSet, timestamp: datetime) -> dict[str, object]:
    """Apple's ``TokensResponse``; ``timestamp`` is when the served set last changed."""
    return {
        "SyncTokens": {
            "DeclarationsToken": declarations.token,
            "Timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    }


def declaration_items_response(declarations: DeclarationSet) -> dict[str, object]:
    """Apple's ``DeclarationItemsResponse``: every declaration by category."""
    categories: dict[str, list[dict[str, str]]] = {
        "Activations": [],
        "Configurations": [],
        "Assets": [],
        "Management": [],
    }
    for declaration in declarations.declarations:
        category = next(c for p, c in _CATEGORY_BY_PREFIX if declaration.type.startswith(p))
        categories[category].append(
            {"Identifier": declaration.identifier, "ServerToken": declaration.server_token}
        )
    return {"Declarations": categories, "DeclarationsToken": declarations.token}
