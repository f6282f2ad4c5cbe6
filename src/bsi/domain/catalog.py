"""The catalogue: releases and supplements, and how they supersede each other.

A catalogue is an immutable value built by a feed importer (Apple GDMF, SOFA,
bsi's own). It answers the questions eligibility asks: which supplements exist
for a prerequisite build, which one is current at a given moment, and which
release a device should install first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from enum import StrEnum
from typing import TypeVar

from bsi.domain.versions import Build, ProductVersion, SupplementVersion


class SupplementState(StrEnum):
    """Where a supplement stands at one moment.

    ``published``, ``paused`` and ``withdrawn`` are set by whoever publishes it;
    ``expired`` and ``superseded`` follow from the catalogue and the clock.
    """

    PUBLISHED = "published"
    PAUSED = "paused"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    NOT_YET_POSTED = "not-yet-posted"


@dataclass(frozen=True, slots=True)
class Release:
    """A full OS build. ``supported_devices`` empty means every device of the platform."""

    platform: str
    version: ProductVersion
    build: Build | None
    posted: date | None = None
    expires: date | None = None
    supported_devices: frozenset[str] = frozenset()
    cves: tuple[str, ...] = ()

    def supports(self, device_ids: Iterable[str]) -> bool:
        return not self.supported_devices or any(d in self.supported_devices for d in device_ids)

    def display(self) -> str:
        build = f" ({self.build})" if self.build else ""
        return f"{self.platform} {self.version}{build}"


@dataclass(frozen=True, slots=True)
class Supersession:
    """The release that folds a supplement in (SOFA's ``SupersededBy``)."""

    version: ProductVersion
    build: Build | None = None
    released: date | None = None


@dataclass(frozen=True, slots=True)
class Supplement:
    """One Background Security Improvement.

    ``version.product`` is the prerequisite release's version: ``26.3.1 (a)``
    installs on ``26.3.1``, identified by ``prerequisite_build``.
    """

    platform: str
    version: SupplementVersion
    build: Build
    prerequisite_build: Build
    supported_devices: frozenset[str] = frozenset()
    cves: tuple[str, ...] = ()
    posted: date | None = None
    expires: date | None = None
    published_state: SupplementState = SupplementState.PUBLISHED
    superseded_by: Supersession | None = None
    security_info: str | None = None

    def supports(self, device_ids: Iterable[str]) -> bool:
        return not self.supported_devices or any(d in self.supported_devices for d in device_ids)

    def state_at(self, now: datetime) -> SupplementState:
        """The state at ``now``: a publisher's pause or withdrawal wins, then the calendar."""
        if self.published_state is not SupplementState.PUBLISHED:
            return self.published_state
        today = now.date()
        if self.posted is not None and self.posted > today:
            return SupplementState.NOT_YET_POSTED
        superseding = self.superseded_by
        if superseding is not None and superseding.released and superseding.released <= today:
            return SupplementState.SUPERSEDED
        if self.expires is not None and self.expires < today:
            return SupplementState.EXPIRED
        return SupplementState.PUBLISHED

    def display(self) -> str:
        return f"{self.platform} {self.version}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every release and supplement bsi knows, plus a board-id table.

    ``device_ids_by_model`` maps a model identifier (``Mac14,2``) to the
    software-update device ids (``J413AP``) it is known by, so a Mac that does
    not report its device id can still be matched to a supplement's
    supported devices.
    """

    releases: tuple[Release, ...] = ()
    supplements: tuple[Supplement, ...] = ()
    device_ids_by_model: Mapping[str, frozenset[str]] = field(default_factory=dict)
    source: str = ""
    _index: _Index | None = field(default=None, init=False, repr=False, compare=False)

    def index(self) -> _Index:
        """What placement asks of every device, computed once per catalogue value."""
        if self._index is None:
            object.__setattr__(self, "_index", _Index.of(self))
        assert self._index is not None
        return self._index

    def knows_platform(self, platform: str) -> bool:
        return platform in self.index().platforms

    def builds_of(self, platform: str, version: ProductVersion) -> frozenset[Build] | None:
        """The builds the catalogue lists for ``platform`` ``version``.

        ``None`` when the catalogue does not know that version at all; an empty
        set when it knows the version but no build for it (SOFA lists older
        releases without their builds).
        """
        return self.index().builds.get((platform, version))

    def lists_device(self, platform: str, device_ids: Iterable[str]) -> bool | None:
        """Whether any release or supplement of ``platform`` names one of ``device_ids``.

        ``None`` when nothing on ``platform`` lists supported devices (every
        device is then supported, as in Linux catalogues).
        """
        listed = self.index().devices.get(platform)
        if not listed:
            return None
        return any(d in listed for d in device_ids)

    def merged(self, other: Catalog) -> Catalog:
        """This catalogue with ``other`` laid over it, field by field.

        Feeds know different things about the same build (GDMF the expiry
        date, SOFA the CVEs and the superseding release), so for one build
        ``other``'s values win where it has them and this one's are kept
        where it has none.
        """
        supplements = {(s.platform, s.build): s for s in self.supplements}
        for s in other.supplements:
            earlier = supplements.get((s.platform, s.build))
            supplements[(s.platform, s.build)] = _overlay(earlier, s) if earlier else s
        releases = {(r.platform, r.version, r.build): r for r in self.releases}
        for r in other.releases:
            release_key = (r.platform, r.version, r.build)
            known = releases.get(release_key)
            releases[release_key] = _overlay(known, r) if known else r
        models = {m: set(ids) for m, ids in self.device_ids_by_model.items()}
        for model, ids in other.device_ids_by_model.items():
            models.setdefault(model, set()).update(ids)
        return Catalog(
            releases=tuple(releases.values()),
            supplements=tuple(supplements.values()),
            device_ids_by_model={m: frozenset(ids) for m, ids in models.items()},
            source=" + ".join(s for s in (self.source, other.source) if s),
        )

    def platforms(self) -> frozenset[str]:
        return frozenset(s.platform for s in self.supplements) | frozenset(
            r.platform for r in self.releases
        )

    def supplements_for(self, platform: str) -> list[Supplement]:
        return [s for s in self.supplements if s.platform == platform]

    def supplement_by_build(self, platform: str, build: Build) -> Supplement | None:
        for supplement in self.supplements:
            if supplement.platform == platform and supplement.build == build:
                return supplement
        return None

    def latest_release(
        self,
        platform: str,
        device_ids: Iterable[str],
        major: int,
        now: datetime,
    ) -> Release | None:
        """The newest release of ``major`` posted by ``now`` that the device can run."""
        ids = tuple(device_ids)
        today = now.date()
        candidates = [
            r
            for r in self.releases
            if r.platform == platform
            and r.version.major == major
            and (r.posted is None or r.posted <= today)
            and r.supports(ids)
        ]
        return max(candidates, key=lambda r: (r.version, r.build is not None), default=None)

    def known_device_ids(self, model_identifier: str | None, device_id: str | None) -> list[str]:
        """Every id a device may be listed under in ``SupportedDevices``."""
        ids = [i for i in (device_id, model_identifier) if i]
        if model_identifier:
            ids.extend(sorted(self.device_ids_by_model.get(model_identifier, ())))
        return ids


@dataclass(frozen=True, slots=True)
class _Index:
    """Lookups eligibility makes per device, so a fleet costs one pass over the catalogue."""

    platforms: frozenset[str]
    builds: Mapping[tuple[str, ProductVersion], frozenset[Build]]
    devices: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, catalog: Catalog) -> _Index:
        builds: dict[tuple[str, ProductVersion], set[Build]] = {}
        devices: dict[str, set[str]] = {}

        def add(platform: str, version: ProductVersion, build: Build | None) -> None:
            known = builds.setdefault((platform, version), set())
            if build is not None:
                known.add(build)

        for r in catalog.releases:
            add(r.platform, r.version, r.build)
            devices.setdefault(r.platform, set()).update(r.supported_devices)
        for s in catalog.supplements:
            add(s.platform, s.version.product, s.prerequisite_build)
            if s.superseded_by is not None:
                add(s.platform, s.superseded_by.version, s.superseded_by.build)
            devices.setdefault(s.platform, set()).update(s.supported_devices)
        return cls(
            platforms=catalog.platforms(),
            builds={key: frozenset(found) for key, found in builds.items()},
            devices={platform: frozenset(ids) for platform, ids in devices.items()},
        )


_Entry = TypeVar("_Entry", Release, Supplement)


def _overlay(earlier: _Entry, later: _Entry) -> _Entry:
    """``later``, its unknown fields (None, empty, default state) filled from ``earlier``."""
    unknown: tuple[object, ...] = (None, "", (), frozenset(), SupplementState.PUBLISHED)
    filled = {
        f.name: getattr(earlier, f.name) for f in fields(later) if getattr(later, f.name) in unknown
    }
    return replace(later, **filled)
