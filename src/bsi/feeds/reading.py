"""Reading feed documents: every value comes with the JSON path that leads to it.

All importers read through :class:`Node`, so a refusal always looks the same —
source, JSON path, the offending value quoted — whichever feed it came from.
Nothing is built until a whole document has been read, which is what lets an
importer refuse a broken feed whole instead of returning part of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from datetime import date, datetime
from typing import TypeVar

from bsi.domain.catalog import Release, Supplement
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import FeedError, InvalidInput, InvalidVersion
from bsi.strict import quote

T = TypeVar("T")
Listing = TypeVar("Listing", Release, Supplement)

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class Node:
    """One value of a feed document and the path to it (``OSVersions[0].Latest``).

    Accessors check the JSON type or parse the value and raise
    :class:`~bsi.errors.FeedError` naming the source and this path, so
    importers never write their own error messages for malformed input.
    """

    __slots__ = ("path", "source", "value")

    def __init__(self, value: object, *, source: str, path: str = "") -> None:
        self.value = value
        self.source = source
        self.path = path

    def error(self, problem: str, *, hint: str | None = None) -> FeedError:
        return FeedError(f"{self.source}: {self.path or 'top level'}: {problem}", hint=hint)

    def _child(self, key: str | int) -> Node:
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
            value = self.fields_list()[key]
        else:
            path = f"{self.path}.{key}" if self.path else key
            value = self.fields().get(key)
        return Node(value, source=self.source, path=path)

    # -- structure ---------------------------------------------------------

    def fields(self) -> dict[str, object]:
        if not isinstance(self.value, dict):
            raise self.error(f"expected an object, found {quote(self.value)}")
        return self.value

    def fields_list(self) -> list[object]:
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, found {quote(self.value)}")
        return self.value

    def has(self, key: str) -> bool:
        """Whether ``key`` is present with a value; feeds write ``null`` for "not stated"."""
        return self.fields().get(key) is not None

    def get(self, key: str) -> Node:
        """A field the feed must have."""
        child = self._child(key)
        if child.value is None:
            state = "is null" if key in self.fields() else "is missing"
            raise child.error(f"required field {state}")
        return child

    def opt(self, key: str) -> Node | None:
        """A field the feed may leave out or set to ``null``."""
        return self._child(key) if self.has(key) else None

    def items(self) -> list[Node]:
        return [self._child(index) for index in range(len(self.fields_list()))]

    def entries(self) -> list[tuple[str, Node]]:
        return [(key, self._child(key)) for key in self.fields()]

    # -- scalars -----------------------------------------------------------

    def text(self) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, found {quote(self.value)}")
        return self.value

    def strings(self) -> tuple[str, ...]:
        return tuple(item.text() for item in self.items())

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(f"expected true or false, found {quote(self.value)}")
        return self.value

    def cve_ids(self) -> tuple[str, ...]:
        """CVE ids from a list, or from the keys of an object as SOFA's releases write them."""
        if isinstance(self.value, dict):
            return tuple(self.fields())
        return self.strings()

    def day(self) -> date:
        """A calendar day, written ``2026-03-17`` or as a timestamp ``2026-03-24T00:00:00Z``.

        A timestamp keeps the day it names rather than being moved to UTC:
        Apple and SOFA state calendar days and add a midnight for decoration.
        """
        text = self.text()
        try:
            if not _ISO_DAY.match(text):
                raise ValueError(text)
            if len(text) == len("2026-03-17"):
                return date.fromisoformat(text)
            return datetime.fromisoformat(text).date()
        except ValueError:
            raise self.error(
                f"{text!r} is not a date", hint="expected '2026-03-17' or '2026-03-24T00:00:00Z'"
            ) from None

    def product_version(self) -> ProductVersion:
        return self._parsed(ProductVersion.parse)

    def extra_version(self) -> ExtraVersion:
        return self._parsed(ExtraVersion.parse)

    def supplement_version(self) -> SupplementVersion:
        return self._parsed(SupplementVersion.parse)

    def build(self) -> Build:
        return self._parsed(Build.parse)

    def build_or_none(self) -> Build | None:
        """A build where SOFA writes ``""`` for one it does not know yet."""
        return None if self.value == "" else self.build()

    def document(self, read: Callable[[object, str], T]) -> T:
        """``read(value, where)`` for a sub-document a domain reader knows, its refusal a feed's."""
        try:
            return read(self.value, self.path)
        except InvalidInput as error:
            raise FeedError(f"{self.source}: {error.message}", hint=error.hint) from None

    def _parsed(self, parse: Callable[[str], T]) -> T:
        try:
            return parse(self.text())
        except InvalidVersion as error:
            raise self.error(error.message, hint=error.hint) from None


def maybe(node: Node | None, read: Callable[[Node], T]) -> T | None:
    """``read(node)`` for an optional field, ``None`` when the feed left it out."""
    return None if node is None else read(node)


def collapse_duplicates(
    listings: Iterable[Listing], key: Callable[[Listing], Hashable]
) -> tuple[Listing, ...]:
    """One entry per ``key``: the first listing, offered to every device any listing names.

    Apple lists one build more than once when it splits device groups (SOFA's
    history shows iOS 18.7.8 ``22H6352`` offered to 88 devices, later as two
    entries of 6 and 82), and SOFA repeats some releases verbatim. Each
    listing is a promise to its devices, so the build goes to all of them; a
    listing without devices means every device and so wins. CVEs are joined;
    dates come from the first listing, so the result follows feed order.
    """
    kept: dict[Hashable, Listing] = {}
    for listing in listings:
        identity = key(listing)
        first = kept.get(identity)
        if first is None:
            kept[identity] = listing
            continue
        devices = (
            first.supported_devices | listing.supported_devices
            if first.supported_devices and listing.supported_devices
            else frozenset()
        )
        cves = first.cves + tuple(c for c in listing.cves if c not in first.cves)
        kept[identity] = replace(first, supported_devices=devices, cves=cves)
    return tuple(kept.values())


def release_key(release: Release) -> Hashable:
    """The identity ``Catalog.merged`` uses for releases."""
    return (release.platform, release.version, release.build)


def supplement_key(supplement: Supplement) -> Hashable:
    """The identity ``Catalog.merged`` uses for supplements."""
    return (supplement.platform, supplement.build)
