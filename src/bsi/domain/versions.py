"""Product versions, Apple-style builds and extra versions.

Everything here parses strictly and orders totally. A malformed value is
refused with :class:`~bsi.errors.InvalidVersion` quoting it, because a version
that is silently misread decides what a device installs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache, total_ordering
from typing import Protocol, TypeVar

from bsi.errors import InvalidVersion

_PRODUCT_VERSION = re.compile(r"(0|[1-9]\d{0,3})(?:\.(0|[1-9]\d{0,3})){0,2}")
_BUILD = re.compile(r"(?P<major>[1-9]\d{0,2})(?P<train>[A-Z])(?P<number>\d{1,7})(?P<suffix>[a-z])?")
_EXTRA = re.compile(r"\(?([a-z])\)?")


class _Parsed(Protocol):
    @classmethod
    def _parse(cls, text: str) -> _Parsed: ...


V = TypeVar("V", bound=_Parsed)


def _parsed(kind: type[V], text: str) -> V:
    """``kind._parse(text)``, remembered for recent texts: every status report and every
    decision parses the same few versions and builds again (the values are immutable)."""
    # (not a string: not hashable perhaps, and refused by _parse with InvalidVersion)
    parsed = _remembered(kind, text) if isinstance(text, str) else kind._parse(text)
    assert isinstance(parsed, kind)
    return parsed


@lru_cache(maxsize=4096)
def _remembered(kind: type[_Parsed], text: str) -> _Parsed:
    return kind._parse(text)


@total_ordering
@dataclass(frozen=True, slots=True)
class ProductVersion:
    """A dotted OS version such as ``26.3.1``.

    ``26.3`` and ``26.3.0`` are the same version: comparison and hashing use the
    three-part form, display keeps what was written without trailing ``.0``.
    """

    major: int
    minor: int = 0
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> ProductVersion:
        """``text`` read strictly; raises :class:`~bsi.errors.InvalidVersion`."""
        return _parsed(cls, text)

    @classmethod
    def _parse(cls, text: str) -> ProductVersion:
        if not isinstance(text, str) or not _PRODUCT_VERSION.fullmatch(text.strip()):
            raise InvalidVersion(
                f"{text!r} is not a product version",
                hint="expected one to three dot-separated numbers, e.g. '26.3.1'",
            )
        parts = [int(p) for p in text.strip().split(".")]
        parts += [0] * (3 - len(parts))
        return cls(parts[0], parts[1], parts[2])

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def minor_line(self) -> tuple[int, int]:
        """The ``(major, minor)`` pair: ``26.3.1`` and ``26.3.2`` share one line."""
        return (self.major, self.minor)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ProductVersion):
            return NotImplemented
        return self.key < other.key

    def __str__(self) -> str:
        if self.patch:
            return f"{self.major}.{self.minor}.{self.patch}"
        return f"{self.major}.{self.minor}"


@total_ordering
@dataclass(frozen=True, slots=True)
class Build:
    """An Apple-style build identifier: ``25D2128``, ``25D771280a``, ``23D8133``.

    Parts: build major (``25``), train letter (``D``), number (``2128``) and an
    optional lower-case suffix (``a``) that supplements and some rapid
    releases carry. Ordering follows those parts in turn, which matches the
    order Apple releases builds within one train.
    """

    major: int
    train: str
    number: int
    suffix: str = ""
    width: int = 0

    @classmethod
    def parse(cls, text: str) -> Build:
        """``text`` read strictly; raises :class:`~bsi.errors.InvalidVersion`."""
        return _parsed(cls, text)

    @classmethod
    def _parse(cls, text: str) -> Build:
        match = _BUILD.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidVersion(
                f"{text!r} is not a build",
                hint="expected digits, one capital letter, digits and an optional "
                "lower-case letter, e.g. '25D2128' or '25D771280a'",
            )
        return cls(
            major=int(match["major"]),
            train=match["train"],
            number=int(match["number"]),
            suffix=match["suffix"] or "",
            width=len(match["number"]),
        )

    @property
    def key(self) -> tuple[int, str, int, str]:
        return (self.major, self.train, self.number, self.suffix)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Build):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Build):
            return NotImplemented
        return self.key < other.key

    def __str__(self) -> str:
        number = str(self.number).zfill(self.width)
        return f"{self.major}{self.train}{number}{self.suffix}"


@total_ordering
@dataclass(frozen=True, slots=True)
class ExtraVersion:
    """The letter of a supplement: ``(a)`` < ``(b)`` < ``(c)``.

    Accepts ``(a)`` and ``a``; the canonical form is ``(a)``, as Apple's
    ``ProductVersionExtra`` and DDM's ``supplemental.extra-version`` write it.
    """

    letter: str

    @classmethod
    def parse(cls, text: str) -> ExtraVersion:
        """``text`` read strictly; raises :class:`~bsi.errors.InvalidVersion`."""
        return _parsed(cls, text)

    @classmethod
    def _parse(cls, text: str) -> ExtraVersion:
        match = _EXTRA.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None or text.strip().count("(") != text.strip().count(")"):
            raise InvalidVersion(
                f"{text!r} is not an extra version",
                hint="expected one lower-case letter, written '(a)' or 'a'",
            )
        return cls(match[1])

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, ExtraVersion):
            return NotImplemented
        return self.letter < other.letter

    def __str__(self) -> str:
        return f"({self.letter})"


@total_ordering
@dataclass(frozen=True, slots=True)
class SupplementVersion:
    """A product version with its extra version, displayed ``26.3.1 (a)``."""

    product: ProductVersion
    extra: ExtraVersion

    @classmethod
    def parse(cls, text: str) -> SupplementVersion:
        if not isinstance(text, str):
            raise InvalidVersion(f"{text!r} is not a supplement version")
        head, sep, tail = text.strip().partition(" ")
        if not sep:
            raise InvalidVersion(
                f"{text!r} is not a supplement version",
                hint="expected a product version, a space and an extra version, e.g. '26.3.1 (a)'",
            )
        try:
            return cls(ProductVersion.parse(head), ExtraVersion.parse(tail))
        except InvalidVersion as error:
            raise InvalidVersion(
                f"{text!r} is not a supplement version: {error.message}", hint=error.hint
            ) from error

    @property
    def key(self) -> tuple[tuple[int, int, int], str]:
        return (self.product.key, self.extra.letter)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SupplementVersion):
            return NotImplemented
        return self.key < other.key

    def __str__(self) -> str:
        return f"{self.product} {self.extra}"
