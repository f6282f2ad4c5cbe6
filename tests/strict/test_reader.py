"""bsi.strict: the one reader every edge uses — the same rules for JSON, YAML and plists,
each refusal raised as the caller's error class, naming source and JSON path (or line)."""

from __future__ import annotations

import math
import plistlib

import pytest

from bsi.errors import BsiError, FeedError, InvalidInput
from bsi.strict import MAX_DEPTH, read_json, read_json_lines, read_plist, read_yaml


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ('{"a": [1, {"b": NaN}]}', "a[1].b", "NaN is not a JSON number"),
        ('{"a": Infinity}', "a", "Infinity is not a JSON number"),
        ('{"a": 1e999}', "a", "inf is not a finite number"),
        ('{"a": 9223372036854775808}', "a", "out of range"),
        ('{"a": -9223372036854775809}', "a", "out of range"),
        ('{"a": ' + "1" * 5000 + "}", "a", "out of range"),
        ('{"x y": "\\u0000"}', "['x y']", "NUL character"),
        ('{"\\udc00": 1}', "['\\udc00']", "lone surrogate"),
        ('["' + "x" * 65537 + '"]', "[0]", "65537 characters long"),
    ],
)
def test_json_refusals_name_the_path(text: str, where: str, problem: str) -> None:
    with pytest.raises(FeedError) as refused:
        read_json(text.encode(), source="feed.json", error=FeedError)
    assert str(refused.value).startswith(f"feed.json: {where}: ")
    assert problem in str(refused.value)


def test_the_limits_are_inclusive() -> None:
    edge = f'{{"a": [{2**63 - 1}, {-(2**63)}, "{"x" * 65536}", 1.7976931348623157e308]}}'
    assert read_json(edge.encode(), source="s") == {
        "a": [2**63 - 1, -(2**63), "x" * 65536, 1.7976931348623157e308]
    }
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    read_json(nested.encode(), source="s")
    with pytest.raises(InvalidInput, match="deeper than 64"):
        read_json(("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2)).encode(), source="s")


def test_syntax_errors_name_line_and_column_and_bytes_must_be_utf8() -> None:
    with pytest.raises(InvalidInput, match=r"^s: not JSON: Expecting .* at line 2 column 6"):
        read_json(b'{"a":\n  1, x}', source="s")
    with pytest.raises(InvalidInput, match=r"not UTF-8 \(byte 2"):
        read_json(b'["\xff"]', source="s")


def test_a_repeated_key_is_refused_where_asked() -> None:
    assert read_json(b'{"a": 1, "a": 2}', source="s") == {"a": 2}
    with pytest.raises(BsiError, match=r"^m: a: key 'a' appears twice in one object"):
        read_json(b'{"a": 1, "a": 2}', source="m", unique_keys=True)


def test_ndjson_lines_are_numbered() -> None:
    lines = '{"a": 1}\n\n{"a": NaN}\n'
    with pytest.raises(InvalidInput, match=r"^h: line 3: a: NaN"):
        list(read_json_lines(lines, source="h"))


def test_yaml_and_plists_follow_the_same_rules() -> None:
    with pytest.raises(InvalidInput, match=r"^y: a.b: nan is not a finite number"):
        read_yaml("a: {b: .nan}", source="y")
    with pytest.raises(InvalidInput, match=r"^y: a: number 1{24}\.\.\. is out of range"):
        read_yaml("a: " + "1" * 5000, source="y")
    with pytest.raises(InvalidInput, match=r"^y: a\[0\]: a string contains a NUL"):
        read_yaml('a: ["x\\0"]', source="y")
    with pytest.raises(InvalidInput, match=r"^y: not YAML: .*appears twice"):
        read_yaml("a: 1\na: 2", source="y")
    binary = plistlib.dumps({"Level": math.inf, "Name": "x\x00"}, fmt=plistlib.FMT_BINARY)
    with pytest.raises(InvalidInput, match=r"^p: Level: inf is not a finite number"):
        read_plist(binary, source="p")
    with pytest.raises(InvalidInput, match=r"^p: not a property list"):
        read_plist(b"<plist><dict><key>a</key>", source="p")
