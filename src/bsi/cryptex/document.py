"""Reading documents value by value: the manifest (JSON) and the spec (YAML).

Both come from outside — a manifest from a downloaded bundle, a spec from a
publisher's file — so every value is type-checked before a dataclass sees it,
and every refusal names where it was (``components[0].files[3].sha256``) and
quotes what was there. Unknown keys are refused rather than ignored: a field
this bsi does not understand may be one that changes what the bundle does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

from bsi.cryptex.errors import InvalidBundle
from bsi.errors import InvalidInput
from bsi.strict import quote

T = TypeVar("T")
T2 = TypeVar("T2")


def fields(
    value: object, where: str, *, required: Collection[str], optional: Collection[str] = ()
) -> dict[str, object]:
    """An object with exactly the allowed keys; optional ones may be absent or null."""
    if not isinstance(value, dict):
        raise InvalidBundle(f"expected an object, found {quote(value)}", where=where)
    unknown = sorted(str(key) for key in value if key not in required and key not in optional)
    if unknown:
        raise InvalidBundle(
            f"unknown field {unknown[0]!r}",
            where=where,
            hint="expected only " + ", ".join(sorted([*required, *optional])),
        )
    missing = sorted(key for key in required if value.get(key) is None)
    if missing:
        raise InvalidBundle(f"required field {missing[0]!r} is missing", where=where)
    return {key: value[key] for key in value if value[key] is not None}


def items(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise InvalidBundle(f"expected a list, found {quote(value)}", where=where)
    return value


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidBundle(f"expected a string, found {quote(value)}", where=where)
    return value


def texts(value: object, where: str) -> tuple[str, ...]:
    return tuple(text(item, f"{where}[{index}]") for index, item in enumerate(items(value, where)))


def integer(value: object, where: str, *, low: int, high: int) -> int:
    # bool is an int to Python, but ``true`` is not a number to anyone writing JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidBundle(f"expected a whole number, found {quote(value)}", where=where)
    if not low <= value <= high:
        raise InvalidBundle(f"{value} is outside {low}..{high}", where=where)
    return value


def number(value: object, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidBundle(f"expected a number, found {quote(value)}", where=where)
    return float(value)


def parsed_document(read: Callable[[T2, str], T], value: T2, where: str) -> T:
    """``read(value, where)`` for a sub-document a domain reader checks, its refusal a bundle's."""
    try:
        return read(value, where)
    except InvalidBundle:
        raise
    except InvalidInput as error:
        raise InvalidBundle(error.message, hint=error.hint) from None


def parsed(parse: Callable[[str], T], value: object, where: str) -> T:
    """``parse(value)`` for a string, with its refusal moved to ``where``."""
    try:
        return parse(text(value, where))
    except InvalidBundle:
        raise
    except InvalidInput as error:
        raise InvalidBundle(error.message, where=where, hint=error.hint) from None
