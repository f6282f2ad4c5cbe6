"""The one strict reader of documents from outside: JSON, YAML and property lists.

Every document bsi reads from outside — an HTTP body, a NanoMDM webhook event
and the plist inside it, a catalogue feed (GDMF, SOFA, bsi), an inventory or
status report file, a supplement spec, ``agent.yaml``, a bundle manifest —
is parsed here and held to one set of rules, so that nothing stored can fail
to be read back and nothing read can crash what reads it next:

- JSON by RFC 8259 and nothing more: no ``NaN``/``Infinity`` (RFC 8259 6; they
  are Python's extension and make invalid JSON once echoed back), and, where
  asked, no key written twice in one object (RFC 8259 4: parsers disagree on
  which one wins, so a signer and a reader could see different documents);
- integers within :data:`INT_RANGE` (what both databases' BIGINT and every
  JSON reader hold) and no number beyond a double;
- strings (keys and values) at most :data:`MAX_STRING` characters, without NUL
  (PostgreSQL cannot store it) and without lone surrogates (not Unicode text,
  and unencodable on the way out);
- nesting at most :data:`MAX_DEPTH` levels.

A refusal is raised as the caller's class of :class:`~bsi.errors.BsiError`
(``FeedError`` for a feed, ``InvalidBundle`` for a manifest, ``InvalidInput``
otherwise) and names the source, the line (syntax) or the JSON path
(``StatusItems.vendor.x``) of the fault, and what to do about it.
"""

from __future__ import annotations

import json
import math
import plistlib
from collections.abc import Iterable
from typing import Any, cast
from xml.parsers.expat import ExpatError

import yaml

from bsi.errors import BsiError, InvalidInput

MAX_DEPTH = 64
"""Nesting: no DDM document or feed is more than a dozen levels deep, and a deeper one
would only exhaust the recursion of whatever reads it next."""
MAX_STRING = 64 * 1024
"""Characters in one string (key or value)."""
INT_RANGE = (-(2**63), 2**63 - 1)
"""Integers: what both databases' BIGINT and every JSON reader can hold."""
MAX_INT32 = 2**31 - 1
"""The largest value of a 32-bit INTEGER column (row ids, counters): query, body and
command-line values stored in one are bounded by it."""

_QUOTE_LIMIT = 80
_DIGITS_LIMIT = len(str(2**63))  # more digits than this cannot be in range
ErrorClass = type[BsiError]


def quote(value: object) -> str:
    """``repr`` cut short: a wrong-typed value may be a whole sub-document."""
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 3] + "..."


class _Refused:
    """What the parser put in place of a value the rules refuse; the check names its path."""

    __slots__ = ("hint", "problem")

    def __init__(self, problem: str, hint: str | None = None) -> None:
        self.problem = problem
        self.hint = hint


def _constant(name: str) -> _Refused:
    return _Refused(
        f"{name} is not a JSON number (RFC 8259 6)", "write a finite number, or null if unknown"
    )


def _integer(text: str) -> int | _Refused:
    # Python refuses over 4,300 digits with a bare ValueError; anything over 20 is out anyway.
    if len(text.lstrip("-")) > _DIGITS_LIMIT:
        return _out_of_range(text)
    return int(text)


def _out_of_range(text: str) -> _Refused:
    low, high = INT_RANGE
    shown = text if len(text) <= 24 else text[:24] + "..."
    return _Refused(
        f"number {shown} is out of range", f"integers must lie between {low} and {high}"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            result[key] = _Refused(
                f"key {quote(key)} appears twice in one object",
                "keep one: readers disagree on which of two equal keys wins (RFC 8259 4)",
            )
        else:
            result[key] = value
    return result


def read_json(
    data: bytes | str,
    *,
    source: str,
    error: ErrorClass = InvalidInput,
    where: str = "",
    unique_keys: bool = False,
) -> object:
    """The JSON document in ``data`` (UTF-8 bytes, or text), checked by the module's rules.

    ``source`` names the document in errors (a file, ``request body``);
    ``where`` a part of it (``line 3`` of NDJSON). Raises ``error`` naming
    the line and column of a syntax error or the JSON path of a refused value.
    Linear in the size of ``data``.
    """
    label = _joined(source, where)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as fault:
            raise error(
                _joined(label, f"not JSON: not UTF-8 (byte {fault.start}: {fault.reason})"),
                hint="save the file as UTF-8",
            ) from None
        # Decoded UTF-8 holds no lone surrogate and JSON text no raw NUL, so strings need a
        # look only when an escape could spell one, or the text could hold a long one.
        strings = "\\u" in text or len(text) > MAX_STRING
    else:
        text, strings = data, True
    try:
        document = json.loads(
            text,
            parse_constant=_constant,
            parse_int=_integer,
            object_pairs_hook=_unique_keys if unique_keys else None,
        )
    except json.JSONDecodeError as fault:
        raise error(
            _joined(label, f"not JSON: {fault.msg} at line {fault.lineno} column {fault.colno}")
        ) from None
    except RecursionError:
        raise error(_joined(label, f"nests deeper than {MAX_DEPTH} levels")) from None
    check_document(document, source=label, error=error, strings=strings)
    return document


def read_json_lines(
    text: str, *, source: str, error: ErrorClass = InvalidInput
) -> Iterable[tuple[int, object]]:
    """``(line number, document)`` for each non-blank line of NDJSON ``text``, each read
    by :func:`read_json` (a fault names ``line N``)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, read_json(line, source=source, where=f"line {number}", error=error)


def read_yaml(text: str, *, source: str, error: ErrorClass = InvalidInput) -> object:
    """The YAML document in ``text`` (safe tags only, no key written twice), checked by the
    module's rules; a YAML fault names its line and column."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as fault:
        raise error(_joined(source, f"not YAML: {fault}")) from None
    except RecursionError:
        raise error(_joined(source, f"nests deeper than {MAX_DEPTH} levels")) from None
    check_document(document, source=source, error=error)
    return document


def read_plist(data: bytes, *, source: str, error: ErrorClass = InvalidInput) -> object:
    """The property list (XML or binary) in ``data``, checked by the module's rules.

    A binary plist can hold what XML cannot — NUL in a string, a NaN real, a
    128-bit integer — so the same checks apply as to JSON.
    """
    try:
        document = plistlib.loads(data)
    except (ValueError, ExpatError, plistlib.InvalidFileException, OverflowError) as fault:
        raise error(_joined(source, f"not a property list: {fault}")) from None
    except RecursionError:
        raise error(_joined(source, f"nests deeper than {MAX_DEPTH} levels")) from None
    check_document(document, source=source, error=error)
    return document


def check_document(
    document: object, *, source: str, error: ErrorClass = InvalidInput, strings: bool = True
) -> None:
    """Raise ``error`` naming the JSON path of the first value the module's rules refuse.

    One pass over an already parsed document (JSON, YAML or plist), linear in
    its size. ``strings=False`` skips the string checks, for text already known
    to hold no bad string (:func:`read_json`'s fast path).
    """
    low, high = INT_RANGE
    # (container, depth, path); the path is a linked (parent, key) pair built per container.
    stack: list[tuple[Any, int, Any]] = [([document], 0, None)]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            _fail(error, source, path, f"nests deeper than {MAX_DEPTH} levels")
        pairs: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            pairs = node.items()
            for key in node:
                if isinstance(key, str):
                    if strings:
                        problem = text_problem(key, "a key", MAX_STRING)
                        if problem:
                            _fail(error, source, (path, key), *problem)
                elif type(key) is int and not low <= key <= high:
                    _fail(error, source, path, *_describe(_out_of_range(str(key))))
                elif type(key) is _Refused:
                    _fail(error, source, path, *_describe(key))
        elif isinstance(node, list | tuple | set | frozenset):
            pairs = enumerate(node)
        else:
            continue
        for key, child in pairs:
            kind = type(child)
            if kind is str:
                if strings:
                    problem = text_problem(cast(str, child), "a string", MAX_STRING)
                    if problem:
                        _fail(error, source, (path, key), *problem)
            elif kind is int:
                if not low <= cast(int, child) <= high:
                    _fail(error, source, (path, key), *_describe(_out_of_range(str(child))))
            elif kind is float:
                if not math.isfinite(cast(float, child)):
                    _fail(
                        error,
                        source,
                        (path, key),
                        f"{child} is not a finite number: NaN, or too large for a double "
                        "(RFC 8259 6)",
                        "write a finite number, or null if unknown",
                    )
            elif kind is _Refused:
                _fail(error, source, (path, key), *_describe(cast(_Refused, child)))
            elif isinstance(child, dict | list | tuple | set | frozenset):
                stack.append((child, depth + 1, (path, key)))


def _describe(refused: _Refused) -> tuple[str, str | None]:
    return refused.problem, refused.hint


def _fail(error: ErrorClass, source: str, path: Any, problem: str, hint: str | None = None) -> None:
    raise error(_joined(source, json_path(path), problem), hint=hint)


def _joined(*parts: str) -> str:
    """``source: where: problem``, leaving out a part the caller left empty (a caller that
    names the source itself passes ``source=""``)."""
    return ": ".join(part for part in parts if part)


def json_path(path: Any) -> str:
    """``OSVersions[0].Latest`` from the linked ``(parent, key)`` pairs of the check."""
    keys: list[object] = []
    while path is not None:
        path, key = path
        keys.append(key)
    keys.reverse()
    keys = keys[1:]  # the wrapper list around the document
    if not keys:
        return "top level"
    out = ""
    for key in keys:
        if isinstance(key, int) and not isinstance(key, bool):
            out += f"[{key}]"
        elif isinstance(key, str) and key.isidentifier() and len(key) <= 64:
            out += f".{key}" if out else key
        else:
            shown = quote(key)
            out += f"[{shown[:40]}]"
    return out


def text_problem(value: str, what: str, limit: int) -> tuple[str, str] | None:
    """Why ``value`` cannot be stored and read back (too long, NUL, a lone surrogate) and
    what to do about it, or ``None`` when it can."""
    if len(value) > limit:
        return (
            f"{what} is {len(value)} characters long; the limit is {limit}",
            "shorten it, or leave it out",
        )
    if "\x00" in value:
        return (
            f"{what} contains a NUL character ({value[:40]!r})",
            "remove the NUL (U+0000); no text bsi stores may hold one",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"{what} contains a lone surrogate ({value[:40]!r}), which is not Unicode text",
            "write the character itself in UTF-8, or as a \\uD8xx\\uDCxx surrogate pair",
        )
    return None


def check_text(
    value: str, what: str, *, limit: int = MAX_STRING, error: ErrorClass = InvalidInput
) -> None:
    """Refuse text no database and no JSON reader can hold: NUL, lone surrogates, too long."""
    problem = text_problem(value, what, limit)
    if problem:
        raise error(problem[0], hint=problem[1])


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice instead of keeping the last.

    PyYAML keeps the last of two equal keys without a word; in a supplement spec
    or an agent's configuration that hides a mistake.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            repeated = key in seen
        except TypeError:  # an unhashable key: construct_mapping says so, with its line
            continue
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int | _Refused:
    # PyYAML converts with int(), which refuses over 4,300 digits with a bare ValueError.
    digits = sum(c.isdigit() for c in str(node.value))
    if digits > _DIGITS_LIMIT:
        return _out_of_range(str(node.value))
    value: int = loader.construct_yaml_int(node)
    return value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
