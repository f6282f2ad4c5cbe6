"""Which devices a change of the catalogue, a policy or a rollout can decide otherwise.

A device's decision (:func:`~bsi.domain.eligibility.decide`) reads the catalogue
entries of its own catalogue platform only (:func:`~bsi.domain.inventory.platform_name`:
an iPad reporting ``iPadOS`` is decided against ``iOS``), its group's policy and
maintenance window, and the rollouts of its platform. So a change names the devices
it can affect by catalogue platform, by group, or one by one; anything wider (the set
of platforms the catalogue knows, which every ``unknown-platform`` decision names,
or the model table every Apple device is matched through) affects every device.

Fail closed: when in doubt a change affects more devices, never fewer. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bsi.domain.catalog import Catalog
from bsi.domain.inventory import platform_name

_Key = TypeVar("_Key")


@dataclass(frozen=True, slots=True)
class Affected:
    """The devices a change can decide otherwise: every device, or those on one of
    ``platforms`` (catalogue platforms, as the catalogue spells them), in one of
    ``groups`` (group ids), or named in ``devices`` (enrollment ids)."""

    everyone: bool = False
    platforms: frozenset[str] = frozenset()
    groups: frozenset[int] = frozenset()
    devices: frozenset[str] = frozenset()

    def __or__(self, other: Affected) -> Affected:
        if self.everyone or other.everyone:
            return EVERYONE
        return Affected(
            platforms=self.platforms | other.platforms,
            groups=self.groups | other.groups,
            devices=self.devices | other.devices,
        )

    def __bool__(self) -> bool:
        return self.everyone or bool(self.platforms or self.groups or self.devices)

    def covers(self, reported_platform: str | None, group_id: int, device_id: str) -> bool:
        """Whether a device that reported ``reported_platform`` (as it spelled it), in
        group ``group_id``, is affected. A device of no platform yet is decided
        ``not-reported`` whatever changes, so only ``everyone`` and its id cover it."""
        if self.everyone or group_id in self.groups or device_id in self.devices:
            return True
        return reported_platform is not None and platform_name(reported_platform) in self.platforms

    def reported_platforms(self, reported: Iterable[str]) -> list[str]:
        """Of the platforms devices reported (as they spelled them: ``iPadOS``,
        ``Debian``), those decided against one of :attr:`platforms`."""
        return sorted(p for p in reported if platform_name(p) in self.platforms)

    def describe(self) -> str:
        """For the admin: ``every device`` or ``platforms iOS, macOS; 2 group(s)``."""
        if self.everyone:
            return "every device"
        parts = []
        if self.platforms:
            parts.append("platforms " + ", ".join(sorted(self.platforms)))
        if self.groups:
            parts.append(f"{len(self.groups)} group(s)")
        if self.devices:
            parts.append(f"{len(self.devices)} device(s)")
        return "; ".join(parts) or "no device"


EVERYONE = Affected(everyone=True)
NOBODY = Affected()


def catalogue_change(before: Catalog | None, after: Catalog) -> Affected:
    """The devices a change from catalogue ``before`` to ``after`` can decide otherwise.

    ``None`` (no catalogue decided against yet) affects every device; so does a
    change of the platforms the catalogue knows or of its model table. Otherwise
    the platforms any of whose releases or supplements changed in any field
    (state, supersession, supported devices, dates: whatever a decision reads).
    """
    if before is None:
        return EVERYONE
    if before.platforms() != after.platforms():
        return EVERYONE
    if dict(before.device_ids_by_model) != dict(after.device_ids_by_model):
        return EVERYONE
    return Affected(platforms=changed_keys(_entries(before), _entries(after)))


def changed_keys(before: Mapping[_Key, object], after: Mapping[_Key, object]) -> frozenset[_Key]:
    """The keys whose value differs between ``before`` and ``after`` (added or
    removed keys included)."""
    return frozenset(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _entries(catalog: Catalog) -> dict[str, tuple[frozenset[object], frozenset[object]]]:
    """Each catalogue platform's releases and supplements."""
    found: dict[str, tuple[set[object], set[object]]] = {}
    for release in catalog.releases:
        found.setdefault(release.platform, (set(), set()))[0].add(release)
    for supplement in catalog.supplements:
        found.setdefault(supplement.platform, (set(), set()))[1].add(supplement)
    return {p: (frozenset(r), frozenset(s)) for p, (r, s) in found.items()}
