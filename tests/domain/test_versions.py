"""Versions: parse, format, order; malformed values are refused and quoted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import InvalidVersion

numbers = st.integers(min_value=0, max_value=9999)
letters = st.sampled_from("abcdefghijklmnopqrstuvwxyz")
trains = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@st.composite
def product_versions(draw: st.DrawFn) -> ProductVersion:
    return ProductVersion(draw(numbers), draw(numbers), draw(numbers))


@st.composite
def builds(draw: st.DrawFn) -> Build:
    number = draw(st.integers(min_value=0, max_value=9_999_999))
    return Build(
        major=draw(st.integers(min_value=1, max_value=999)),
        train=draw(trains),
        number=number,
        suffix=draw(st.sampled_from(["", *"abc"])),
        width=len(str(number)),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("26.3.1", (26, 3, 1)), ("26.3", (26, 3, 0)), ("26", (26, 0, 0)), (" 15.7.4 ", (15, 7, 4))],
)
def test_product_version_parses(text: str, expected: tuple[int, int, int]) -> None:
    assert ProductVersion.parse(text).key == expected


@pytest.mark.parametrize("text", ["", "26.", ".3", "26.3.1.4", "v26", "26.03", "26.3-beta", "a.b"])
def test_malformed_product_version_is_refused_and_quoted(text: str) -> None:
    with pytest.raises(InvalidVersion, match=repr(text).replace(".", r"\.").replace("(", r"\(")):
        ProductVersion.parse(text)


def test_trailing_zero_is_the_same_version() -> None:
    assert ProductVersion.parse("26.3") == ProductVersion.parse("26.3.0")
    assert str(ProductVersion.parse("26.3.0")) == "26.3"


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("25D2128", (25, "D", 2128, "")),
        ("25D771280a", (25, "D", 771280, "a")),
        ("23D8133", (23, "D", 8133, "")),
        ("20A242a", (20, "A", 242, "a")),
    ],
)
def test_apple_builds_parse(text: str, parts: tuple[int, str, int, str]) -> None:
    build = Build.parse(text)
    assert build.key == parts
    assert str(build) == text


@pytest.mark.parametrize("text", ["", "25d2128", "D2128", "25D", "25D2128A", "25D2128ab", "0A1"])
def test_malformed_build_is_refused_and_quoted(text: str) -> None:
    with pytest.raises(InvalidVersion) as error:
        Build.parse(text)
    assert repr(text) in str(error.value)


def test_supplement_build_orders_after_its_prerequisite() -> None:
    assert Build.parse("25D2128") < Build.parse("25D771280a")
    assert Build.parse("25D771280a") < Build.parse("25D771280b")


@pytest.mark.parametrize("text", ["(a)", "a", " (b) "])
def test_extra_version_accepts_both_forms_with_one_canonical(text: str) -> None:
    assert str(ExtraVersion.parse(text)) == f"({text.strip().strip('()')})"


@pytest.mark.parametrize("text", ["", "()", "(A)", "ab", "(a", "a)", "(1)"])
def test_malformed_extra_version_is_refused(text: str) -> None:
    with pytest.raises(InvalidVersion) as error:
        ExtraVersion.parse(text)
    assert repr(text) in str(error.value)


def test_supplement_version_display_and_order() -> None:
    a = SupplementVersion.parse("26.3.1 (a)")
    assert str(a) == "26.3.1 (a)"
    assert SupplementVersion.parse("26.3.1 a") == a
    assert a < SupplementVersion.parse("26.3.1 (b)") < SupplementVersion.parse("26.3.2 (a)")
    with pytest.raises(InvalidVersion):
        SupplementVersion.parse("26.3.1")


@given(product_versions())
def test_product_version_round_trips(version: ProductVersion) -> None:
    assert ProductVersion.parse(str(version)) == version


@given(product_versions(), product_versions())
def test_product_version_order_is_numeric(a: ProductVersion, b: ProductVersion) -> None:
    assert (a < b) == (a.key < b.key)
    assert (a == b) == (a.key == b.key)


@given(builds())
def test_build_round_trips(build: Build) -> None:
    assert Build.parse(str(build)) == build


@given(builds(), builds())
def test_build_order_is_total_and_consistent(a: Build, b: Build) -> None:
    assert sum([a < b, a == b, a > b]) == 1
    assert (a < b) == (a.key < b.key)


@given(letters, letters)
def test_extra_versions_order_by_letter(x: str, y: str) -> None:
    assert (ExtraVersion.parse(x) < ExtraVersion.parse(f"({y})")) == (x < y)


@given(st.text(max_size=12))
def test_arbitrary_text_parses_or_is_refused_cleanly(text: str) -> None:
    for parser in (ProductVersion.parse, Build.parse, ExtraVersion.parse, SupplementVersion.parse):
        try:
            parsed = parser(text)
        except InvalidVersion as error:
            assert repr(text) in str(error)  # noqa: PT017 - each parser in turn
        else:
            assert parser(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (ProductVersion, "26.3.1", "26.x"),
        (Build, "25D2128", "25d2128"),
        (ExtraVersion, "(a)", "(A)"),
    ],
)
def test_parsing_is_remembered_and_a_refusal_is_not(kind: type, good: str, bad: object) -> None:
    """Parsed values are remembered (every report parses the same few again); a text
    refused once is refused every time, and so is what is no text at all."""
    assert kind.parse(good) is kind.parse(good)
    assert str(kind.parse(good)) == good
    for _ in range(2):
        for refused in (bad, [good], None):
            with pytest.raises(InvalidVersion):
                kind.parse(refused)
