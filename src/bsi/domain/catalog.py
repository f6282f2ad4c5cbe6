"""The catalogue: releases and supplements, and how they supersede each other.

A catalogue is an immutable value built by a feed importer (Apple GDMF, SOFA,
bsi's own). It answers the questions eligibility asks: which supplements exist
for a prerequisite build, which one is current at a given moment, and which
release a device should install first.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar

from bsi.domain.cves import CvssVectors, merge_cvss_vectors
from bsi.domain.prerequisite import PackageVersion, Prerequisite
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
    installs on ``26.3.1``. ``prerequisite`` is the base it patches: Apple's
    prerequisite build, or installed package versions or file digests on a
    stock Linux host (see :mod:`bsi.domain.prerequisite`). ``fixed_in`` names
    the package versions that carry the fix: a host at or past them has it
    folded in. Letters of one line share one prerequisite.
    """

    platform: str
    version: SupplementVersion
    build: Build
    prerequisite: Prerequisite
    supported_devices: frozenset[str] = frozenset()
    cves: tuple[str, ...] = ()
    cvss: CvssVectors = ()
    """CVSS 3.x vectors of some of ``cves`` (a Linux supplement's signed manifest, or a
    catalogue file); Apple's feeds carry none."""
    posted: date | None = None
    expires: date | None = None
    published_state: SupplementState = SupplementState.PUBLISHED
    superseded_by: Supersession | None = None
    security_info: str | None = None
    listed_live: bool = False
    """A live GDMF document listed it: when a later live document stops, it is withdrawn."""
    fixed_in: tuple[PackageVersion, ...] = ()
    target_sha256: str | None = None
    """SHA-256 (hex) of the signed cryptex a Linux supplement ships; ``None`` for Apple's."""

    @property
    def prerequisite_build(self) -> Build | None:
        """The prerequisite build, for supplements that name their base by build."""
        return self.prerequisite.build

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
    source: str = field(default="", compare=False)
    live_platforms: frozenset[str] = field(default=frozenset(), compare=False)
    """Platforms this catalogue is Apple's live listing for (a GDMF document's sections)."""
    _index: _Index | None = field(default=None, init=False, repr=False, compare=False)
    _containers: Catalog | None = field(default=None, init=False, repr=False, compare=False)

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
        """This catalogue and ``other`` combined, the same in any order.

        Feeds know different things about the same build (GDMF the expiry
        date, SOFA the CVEs and the superseding release); for one build each
        field is combined without regard to order (:func:`_combine`). A
        publisher's pause or withdrawal is never lowered by a merge, so a
        history source cannot re-publish a withdrawn supplement. A build one
        feed files under another device family (an Apple TV build SOFA's iOS
        feed inherits from GDMF's ``iOS`` key) is that family's only.

        The one rule that follows time: when ``other`` is a live listing for a
        platform (GDMF), a supplement an earlier live listing had and ``other``
        lacks is withdrawn (Apple pulled 16.5.1 (a) from GDMF in July 2023).
        """
        listed = {(s.platform, s.build) for s in other.supplements}
        own = [
            replace(s, published_state=SupplementState.WITHDRAWN)
            if s.listed_live
            and s.platform in other.live_platforms
            and (s.platform, s.build) not in listed
            else s
            for s in self.supplements
        ]
        supplements = _combined([*own, *other.supplements], lambda s: (s.platform, s.build))
        releases = _combined(
            [*self.releases, *other.releases], lambda r: (r.platform, r.version, r.build)
        )
        models = {m: set(ids) for m, ids in self.device_ids_by_model.items()}
        for model, ids in other.device_ids_by_model.items():
            models.setdefault(model, set()).update(ids)
        return Catalog(
            releases=_without_foreign_builds(releases),
            supplements=_without_foreign_builds(supplements),
            device_ids_by_model={m: frozenset(ids) for m, ids in sorted(models.items())},
            source=" + ".join(s for s in (self.source, other.source) if s),
            live_platforms=self.live_platforms | other.live_platforms,
        )

    def republished(self, incoming: Catalog) -> list[tuple[Supplement, Supplement]]:
        """``(known, incoming)`` pairs of one build whose signed bytes differ.

        A supplemental build names one set of bytes forever (DESIGN rule: a
        build is an identity), so devices "on 12A100a" never run different
        code; a repository that now signs other bytes under a known build is
        a mistake or an attack, never an update.
        """
        known = {(s.platform, s.build): s for s in self.supplements if s.target_sha256}
        return [
            (known[(s.platform, s.build)], s)
            for s in incoming.supplements
            if s.target_sha256
            and (s.platform, s.build) in known
            and known[(s.platform, s.build)].target_sha256 != s.target_sha256
        ]

    def without(self, supplements: Iterable[Supplement]) -> Catalog:
        """This catalogue less the supplements with the builds of ``supplements``."""
        dropped = {(s.platform, s.build) for s in supplements}
        return replace(
            self,
            supplements=tuple(s for s in self.supplements if (s.platform, s.build) not in dropped),
        )

    def for_containers(self) -> Catalog:
        """This catalogue with its image supplements only: what a host's containers are
        decided against (a container is not on the host's build or packages).

        Platforms, releases and models are placed as in the whole catalogue (the index
        is kept), so a container's host is known wherever the host itself is.
        Computed once per catalogue value.
        """
        if self._containers is None:
            kept = tuple(s for s in self.supplements if s.prerequisite.image is not None)
            narrowed = replace(self, supplements=kept)
            index = self.index()
            by_build = {k: s for k, s in index.by_build.items() if s.prerequisite.image}
            object.__setattr__(narrowed, "_index", replace(index, by_build=by_build))
            object.__setattr__(self, "_containers", narrowed)
        assert self._containers is not None
        return self._containers

    def platforms(self) -> frozenset[str]:
        return frozenset(s.platform for s in self.supplements) | frozenset(
            r.platform for r in self.releases
        )

    def supplements_for(self, platform: str) -> list[Supplement]:
        return [s for s in self.supplements if s.platform == platform]

    def supplement_by_build(self, platform: str, build: Build) -> Supplement | None:
        return self.index().by_build.get((platform, build))

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
        best = max(candidates, key=lambda r: (r.version, r.build is not None), default=None)
        if best is None or best.build is None:
            return best
        # Several builds of one version (device-specific ones): the lowest, whatever the order.
        same = [r.build for r in candidates if r.version == best.version and r.build is not None]
        return next(r for r in candidates if r.version == best.version and r.build == min(same))

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
    by_build: Mapping[tuple[str, Build], Supplement]

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
            by_build={(s.platform, s.build): s for s in reversed(catalog.supplements)},
        )


_Entry = TypeVar("_Entry", Release, Supplement)

#: Apple's device families by the prefix of a ``SupportedDevices`` product type, and
#: the platform each runs. GDMF files tvOS, watchOS and HomePod (audioOS) releases
#: under its ``iOS`` key; the product types say which family a listing is for.
DEVICE_FAMILIES: Mapping[str, str] = {
    "iPhone": "iOS",
    "iPad": "iOS",
    "iPod": "iOS",
    "AppleTV": "tvOS",
    "Watch": "watchOS",
    "AudioAccessory": "audioOS",
    "RealityDevice": "visionOS",
}
_FAMILY = re.compile(r"([A-Za-z]+)\d")
_FILED_UNDER_IOS = frozenset({"iOS", "iPadOS"})


def device_family(device_id: str) -> str | None:
    """The platform a product type (``AppleTV14,1``) runs; ``None`` for board ids and others."""
    match = _FAMILY.match(device_id)
    return DEVICE_FAMILIES.get(match[1]) if match else None


def classify(entry: _Entry) -> _Entry:
    """A listing filed under ``iOS`` moved to the family its ``SupportedDevices`` name.

    A list naming only other families (``AppleTV…``, ``AudioAccessory…``)
    moves the listing to that platform; a mixed list keeps it under iOS with only the iPhone, iPad
    and iPod product types, so no iPhone is ever sent another family's build.
    """
    if entry.platform not in _FILED_UNDER_IOS or not entry.supported_devices:
        return entry
    families = {f for d in entry.supported_devices if (f := device_family(d)) is not None}
    if not families or families <= {"iOS"}:
        return entry
    if "iOS" not in families:
        # Apple TV and HomePod share builds: the first family in DEVICE_FAMILIES names it.
        platform = next(p for p in DEVICE_FAMILIES.values() if p in families)
        return replace(entry, platform=platform)
    ios = frozenset(d for d in entry.supported_devices if device_family(d) in (None, "iOS"))
    return replace(entry, supported_devices=ios)


def _without_foreign_builds(entries: list[_Entry]) -> tuple[_Entry, ...]:
    """Drop an iOS listing of a build that another family's listing claims."""
    foreign = {e.build for e in entries if e.platform in _OTHER_FAMILIES}
    return tuple(e for e in entries if not (e.platform in _FILED_UNDER_IOS and e.build in foreign))


_OTHER_FAMILIES = frozenset(DEVICE_FAMILIES.values()) - {"iOS"}


# A publisher's state only rises in a merge: withdrawn is final (DESIGN rule 9).
_STATE_RANK = {
    SupplementState.PUBLISHED: 0,
    SupplementState.PAUSED: 1,
    SupplementState.WITHDRAWN: 2,
}


def _combined(entries: list[_Entry], key: Callable[[_Entry], Hashable]) -> list[_Entry]:
    """One entry per key, fields combined by :func:`_combine`; sorted, so order never shows."""
    kept: dict[Hashable, _Entry] = {}
    for entry in entries:
        entry = classify(entry)
        identity = key(entry)
        known = kept.get(identity)
        kept[identity] = _combine(known, entry) if known is not None else entry
    return sorted(kept.values(), key=_sort_key)


def _sort_key(entry: Release | Supplement) -> tuple[str, str, str]:
    return (entry.platform, str(entry.version), str(entry.build))


def _combine(a: _Entry, b: _Entry) -> _Entry:
    """Two listings of one build as one, whichever comes first.

    Devices: the union (an empty list means every device, and wins). CVEs: the
    union, sorted; CVSS vectors: the union, the higher score where both rate a CVE.
    Posting date: the earliest; expiry: the latest. State: the
    highest (withdrawn > paused > published). Anything else: the value one of
    them has, the smaller if both differ, so the result never depends on order.
    """
    values: dict[str, Any] = {}
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "supported_devices":
            values[f.name] = x | y if x and y else frozenset()
        elif f.name == "cves":
            values[f.name] = tuple(sorted(set(x) | set(y)))
        elif f.name == "cvss":
            values[f.name] = merge_cvss_vectors(x, y)
        elif f.name == "published_state":
            values[f.name] = max(x, y, key=_STATE_RANK.__getitem__)
        elif f.name == "listed_live":
            values[f.name] = x or y
        elif f.name == "expires":
            values[f.name] = max((v for v in (x, y) if v is not None), default=None)
        elif f.name == "posted":
            values[f.name] = min((v for v in (x, y) if v is not None), default=None)
        elif x is None or x == y:
            values[f.name] = y
        elif y is None:
            values[f.name] = x
        else:
            values[f.name] = min(x, y, key=repr)
    return replace(a, **values)
