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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bsi.domain.declarations import (
    ACTIVATION_SIMPLE,
    Declaration,
    activation_simple,
    status_subscriptions,
)
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


# The status items bsi needs to decide and report for a device.
BSI_STATUS_ITEMS = (
    "device.identifier.udid",  # with the serial number: which hardware wrote a report
    "device.identifier.serial-number",
    "device.operating-system.family",
    "device.operating-system.version",
    "device.operating-system.build-version",
    "device.operating-system.supplemental.build-version",
    "device.operating-system.supplemental.extra-version",
    "device.model.identifier",
    "softwareupdate.device-id",
    "softwareupdate.install-state",
    "softwareupdate.pending-version",
    "softwareupdate.failure-reason",
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


def declaration_set(group: str, assigned: Sequence[Declaration]) -> DeclarationSet:
    """The group's configurations, bsi's status subscription, and one activation for all."""
    configurations = [d for d in assigned if d.type != ACTIVATION_SIMPLE]
    subscription = status_subscriptions(f"bsi.status-subscriptions.{group}", BSI_STATUS_ITEMS)
    configurations.append(subscription)
    configurations.sort(key=lambda d: d.identifier)
    activation = activation_simple(
        f"bsi.activation.{group}", [d.identifier for d in configurations]
    )
    served = (activation, *configurations)
    return DeclarationSet(served, sync_token(served))


def sync_token(declarations: Sequence[Declaration]) -> str:
    digest = hashlib.sha256()
    for d in sorted(declarations, key=lambda d: (d.type, d.identifier)):
        digest.update(f"{d.type}\0{d.identifier}\0{d.server_token}\n".encode())
    return digest.hexdigest()[:32]


def tokens_response(declarations: DeclarationSet, timestamp: datetime) -> dict[str, object]:
    """Apple's ``TokensResponse``."""
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
