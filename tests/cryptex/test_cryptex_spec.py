"""The supplement spec: what the publisher writes, read strictly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bsi.cryptex import InvalidSupplement, Owner, load_spec, parse_spec
from cryptex_support import SPEC_TEXT, spec


def test_the_spec_reads_into_typed_values() -> None:
    parsed = spec()
    assert parsed.platform == "debian"
    assert str(parsed.product_version) == "12.5"
    assert str(parsed.extra_version) == "(a)"
    assert str(parsed.supplemental_build) == "12A100a"
    openssl = parsed.components[0]
    assert openssl.name == "openssl"
    assert openssl.prefixes == ("usr/lib",)
    assert openssl.relaunch.systemd == ("nginx.service",)  # '.service' added
    assert openssl.relaunch.processes == ("/usr/sbin/sshd",)
    assert parsed.health_check is not None
    assert parsed.health_check.timeout == 20
    assert parsed.cves[0].base_score == 5.4


@pytest.mark.parametrize(
    ("path", "component"),
    [
        ("usr/lib/libssl.so.3", "openssl"),
        ("usr/lib/x86_64/libfoo.so", "openssl"),
        ("usr/sbin/nginx", "nginx"),
        ("etc/nginx/sites/default", "nginx"),
        ("usr/library/x", None),  # a prefix matches whole parts, not characters
        ("usr/sbin/sshd", None),
        ("etc/nginx.conf", None),
    ],
)
def test_a_file_belongs_to_the_component_with_the_longest_prefix(
    path: str, component: str | None
) -> None:
    found = spec().component_for(path)
    assert (found.name if found else None) == component


def test_the_longest_prefix_wins_over_a_shorter_one() -> None:
    nested = spec(
        SPEC_TEXT.replace(
            "  docs:\n    paths: [/usr/share]",
            "  docs:\n    paths: [/usr/share]\n  root:\n    paths: [/]",
        )
    )
    assert nested.component_for("usr/share/doc/readme").name == "docs"  # type: ignore[union-attr]
    assert nested.component_for("opt/anything").name == "root"  # type: ignore[union-attr]


def test_owner_defaults_from_the_top_and_a_component_overrides_it() -> None:
    text = SPEC_TEXT.replace("components:\n", "owner: {uid: 0, gid: 0}\ncomponents:\n").replace(
        "  docs:\n    paths: [/usr/share]",
        "  docs:\n    paths: [/usr/share]\n    owner: {uid: 33, gid: 33}",
    )
    parsed = spec(text)
    by_name = {c.name: c for c in parsed.components}
    assert parsed.owner_for(by_name["openssl"]) == Owner(0, 0)
    assert parsed.owner_for(by_name["docs"]) == Owner(33, 33)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('product_version: "12.5"', "product_version: 12.10", "12.1 was read as a number"),
        ("platform: debian", "platform: debian\nplatform: flatcar", "key 'platform' appears twice"),
        ("paths: [/usr/share]", "paths: [/usr/lib]", "'usr/lib' is claimed by both"),
        ("paths: [/usr/share]", "paths: [../share]", "climbs out"),
        ("paths: [/usr/share]", "paths: []", "lists no paths"),
        ("  docs:", "  'bad name':", "component 'bad name' is not a valid name"),
        ("extra_version: (a)", "extra_version: A", "'A' is not an extra version"),
        ("timeout: 20", "timeout: 20.5", "expected a whole number"),
        ("processes: [/usr/sbin/sshd]", "processes: [sbin/sshd]", "neither a process name"),
        ('cvss: "CVSS', 'cvss: "XX', "is not a CVSS 3.x vector"),
        ("platform: debian", "platform: debian\nsigned_by: me", "unknown field 'signed_by'"),
        ("platform: debian", "platform: Debian", "platform 'Debian' would match no device"),
    ],
)
def test_mistakes_are_refused_naming_the_source_and_field(
    old: str, new: str, expected: str
) -> None:
    assert old in SPEC_TEXT
    with pytest.raises(InvalidSupplement) as caught:
        spec(SPEC_TEXT.replace(old, new, 1))
    assert expected in str(caught.value)
    assert str(caught.value).startswith("test-spec.yaml: ")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "paths: [/usr/share]",
            'paths: ["/usr/sh\\0are"]',
            "components.docs.paths[0]: a string contains a NUL",
        ),
        (
            "paths: [/usr/share]",
            'paths: ["/usr/\\ud800"]',
            "components.docs.paths[0]: a string contains a lone surrogate",
        ),
        ("timeout: 20", "timeout: .nan", "health_check.timeout: nan is not a finite number"),
        ("timeout: 20", "timeout: " + "9" * 5000, "health_check.timeout: number 9999"),
        ('cvss: "CVSS', 'cvss: "' + "x" * 70_000, "cves[0].cvss: a string is 70"),
    ],
)
def test_values_nothing_can_hold_are_refused_by_the_one_strict_reader(
    old: str, new: str, expected: str
) -> None:
    assert old in SPEC_TEXT
    with pytest.raises(InvalidSupplement) as caught:
        spec(SPEC_TEXT.replace(old, new, 1))
    assert expected in str(caught.value)
    assert str(caught.value).startswith("test-spec.yaml: ")


def test_not_yaml_is_refused() -> None:
    with pytest.raises(InvalidSupplement, match=re.escape("spec: not YAML")):
        parse_spec("a: [unclosed")


def test_load_spec_reads_a_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "supplement.yaml"
    path.write_text(SPEC_TEXT)
    assert load_spec(path) == spec()
    with pytest.raises(InvalidSupplement, match="cannot read the spec"):
        load_spec(tmp_path / "missing.yaml")
