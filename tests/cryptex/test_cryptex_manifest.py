"""The manifest: canonical JSON, strict reading of untrusted input, cumulative letters."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bsi.cryptex import (
    Action,
    Component,
    CveEntry,
    FileEntry,
    HealthCheck,
    InvalidBundle,
    InvalidSupplement,
    Manifest,
    Relaunch,
    cumulative_check,
    describe,
)
from bsi.cryptex.manifest import FORMAT, FORMAT_DELTA, MAX_DELTA_BYTES, Delta
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.supplement_fields import read_supplement_fields
from bsi.domain.versions import Build, ExtraVersion, ProductVersion

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64


def entry(path: str, action: Action = Action.CHANGE, **fields: Any) -> FileEntry:
    """A valid entry for ``action``, with ``fields`` changed."""
    payload = {"sha256": SHA_A, "size": 10, "mode": 0o644, "uid": 0, "gid": 0}
    defaults: dict[Action, dict[str, Any]] = {
        Action.ADD: payload,
        Action.CHANGE: {**payload, "base_sha256": SHA_B},
        Action.REMOVE: {"base_sha256": SHA_C},
    }
    return FileEntry(path, action, **{**defaults[action], **fields})


def manifest(*components: Component, letter: str = "a", build: str = "12A100a") -> Manifest:
    return Manifest(
        platform="debian",
        product_version=ProductVersion.parse("12.5"),
        extra_version=ExtraVersion.parse(letter),
        prerequisite=Prerequisite.of_build(Build.parse("12A100")),
        supplemental_build=Build.parse(build),
        components=components
        or (Component("openssl", (entry("usr/lib/libssl.so.3"),), Relaunch(("nginx.service",))),),
        health_check=HealthCheck(("curl", "-fsS", "http://localhost/"), 20),
        cves=(CveEntry.scored("CVE-2026-20643", "AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"),),
    )


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(manifest().to_json())
    return loaded


def refused(doc: dict[str, Any]) -> InvalidBundle:
    with pytest.raises(InvalidBundle) as caught:
        Manifest.from_json(json.dumps(doc).encode())
    return caught.value


# -- round trip and canonical form -------------------------------------------

dir_names = st.one_of(
    st.from_regex(r"[a-z0-9_-]{1,8}", fullmatch=True),
    st.text(
        alphabet=st.characters(
            exclude_categories=("Cs", "Cc"), exclude_characters="/\\\x7f", max_codepoint=0x2FFF
        ),
        min_size=1,
        max_size=6,
    ).filter(lambda s: s not in {".", ".."} and not s.endswith(".so")),
)
# Leaves end in '.so' and directories never do, so no path is another's directory.
leaf_names = dir_names.map(lambda name: f"{name}.so")
paths = st.builds(
    lambda dirs, leaf: "/".join([*dirs, leaf]), st.lists(dir_names, max_size=3), leaf_names
)
hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
ids = st.integers(min_value=0, max_value=2**32 - 2)


@st.composite
def file_entries(draw: st.DrawFn, path: str) -> FileEntry:
    action = draw(st.sampled_from(Action))
    if action is Action.REMOVE:
        return FileEntry(path, action, base_sha256=draw(hashes))
    delta = (
        Delta(size=draw(st.integers(min_value=0, max_value=MAX_DELTA_BYTES)), sha256=draw(hashes))
        if action is Action.CHANGE and draw(st.booleans())
        else None
    )
    return FileEntry(
        path,
        action,
        sha256=draw(hashes),
        base_sha256=draw(hashes) if action is Action.CHANGE else None,
        size=draw(st.integers(min_value=0, max_value=MAX_DELTA_BYTES if delta else 2**63 - 1)),
        mode=draw(st.integers(min_value=0, max_value=0o7777)),
        uid=draw(ids),
        gid=draw(ids),
        delta=delta,
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    all_paths = draw(st.lists(paths, min_size=1, max_size=8, unique=True))
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9._+-]{0,10}", fullmatch=True),
            min_size=1,
            max_size=min(3, len(all_paths)),
            unique=True,
        )
    )
    groups: dict[str, list[FileEntry]] = {name: [] for name in names}
    for index, path in enumerate(all_paths):
        groups[names[index % len(names)]].append(draw(file_entries(path)))
    relaunch = Relaunch(
        systemd=tuple(
            draw(st.lists(st.sampled_from(["nginx.service", "a@b.socket"]), unique=True))
        ),
        processes=tuple(draw(st.lists(st.sampled_from(["sshd", "/usr/sbin/nginx"]), unique=True))),
        command=tuple(
            draw(
                st.lists(
                    st.text(min_size=1, max_size=5).filter(lambda s: "\0" not in s), max_size=3
                )
            )
        ),
    )
    return Manifest(
        platform=draw(st.sampled_from(["debian", "flatcar", "macOS"])),
        product_version=ProductVersion.parse(draw(st.sampled_from(["12.5", "26.3.1", "7"]))),
        extra_version=ExtraVersion(draw(st.sampled_from("abcz"))),
        prerequisite=Prerequisite.of_build(Build.parse("25D2128")),
        supplemental_build=Build.parse(draw(st.sampled_from(["25D771280a", "25D2128b"]))),
        components=tuple(Component(n, tuple(g), relaunch) for n, g in groups.items() if g),
        health_check=draw(st.none() | st.just(HealthCheck(("true",), 5))),
        cves=tuple(
            CveEntry.scored(cve, vector)
            for cve, vector in draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["CVE-2026-1000", "CVE-2025-20643"]),
                        st.sampled_from([None, "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"]),
                    ),
                    unique_by=lambda pair: pair[0],
                )
            )
        ),
    )


@given(manifests())
def test_json_round_trip_is_exact_and_canonical(original: Manifest) -> None:
    data = original.to_json()
    assert Manifest.from_json(data) == original
    assert Manifest.from_json(data).to_json() == data
    data.decode("ascii")  # non-ASCII paths are escaped: the bytes never depend on an encoder


def test_order_of_construction_does_not_change_the_bytes() -> None:
    one = Component("a", (entry("x/1.so"), entry("x/2.so")))
    two = Component("b", (entry("y.so"),))
    shuffled = Component("a", (entry("x/2.so"), entry("x/1.so")))
    assert manifest(one, two).to_json() == manifest(two, shuffled).to_json()
    assert manifest(one, two) == manifest(two, shuffled)


def test_json_is_compact_with_sorted_keys_and_octal_modes() -> None:
    text = manifest().to_json().decode()
    assert " " not in text
    assert text.startswith('{"components":[{"files":[{"action":"change","base_sha256":')
    assert '"mode":"0644"' in text


# -- refusals ----------------------------------------------------------------


def file_doc(doc: dict[str, Any]) -> dict[str, Any]:
    files: list[dict[str, Any]] = doc["components"][0]["files"]
    return files[0]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../etc/passwd", "climbs out"),
        ("usr/../../etc/passwd", "climbs out"),
        ("/etc/passwd", "is absolute"),
        ("usr//lib", "not normalised"),
        ("usr/./lib", "not normalised"),
        ("usr/lib/", "not normalised"),
        ("", "is empty"),
        ("usr/lib\x00x", "NUL character"),
        ("usr/lib\nchange /etc/shadow", "control character"),
        ("a/" + "x" * 256, "longer than 255"),
    ],
)
def test_bad_paths_are_refused_and_quoted(path: str, problem: str) -> None:
    doc = document()
    file_doc(doc)["path"] = path
    error = refused(doc)
    assert problem in str(error)
    assert repr(path) in str(error)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sha256", "A" * 64, "not 64 lower-case hex"),
        ("sha256", "a" * 63, "not 64 lower-case hex"),
        ("base_sha256", 12, "expected a string"),
        ("mode", 420, "expected a string"),
        ("mode", "0999", "'0999' is not a file mode"),
        ("mode", "10644", "'10644' is not a file mode"),
        ("uid", True, "expected a whole number"),
        ("uid", -1, "outside 0.."),
        ("gid", 2**32 - 1, "outside 0.."),
        ("size", 1.5, "expected a whole number"),
        ("action", "rename", "'rename' is not an action"),
        ("owner", "root", "unknown field 'owner'"),
    ],
)
def test_bad_file_fields_are_refused_with_where_and_value(
    field: str, value: object, expected: str
) -> None:
    doc = document()
    file_doc(doc)[field] = value
    error = refused(doc)
    assert expected in str(error)
    assert "files[0]" in str(error) or "usr/lib/libssl.so.3" in str(error)


@pytest.mark.parametrize(
    ("action", "field", "value", "expected"),
    [
        ("add", "base_sha256", SHA_B, "add must not have base_sha256"),
        ("remove", "sha256", SHA_A, "remove must not have sha256"),
        ("change", "base_sha256", None, "change needs base_sha256"),
    ],
)
def test_each_action_has_exactly_its_fields(
    action: str, field: str, value: object, expected: str
) -> None:
    doc = document()
    record = file_doc(doc)
    record["action"] = action
    if action == "remove":
        for key in ("sha256", "size", "mode", "uid", "gid"):
            record.pop(key)
    record[field] = value
    assert expected in str(refused(doc))


def test_a_path_in_two_components_is_refused() -> None:
    doc = document()
    doc["components"].append({"name": "other", "files": [file_doc(doc)]})
    assert "in both component 'openssl' and component 'other'" in str(refused(doc))


def test_a_file_that_is_also_a_directory_is_refused() -> None:
    doc = document()
    doc["components"][0]["files"].append({**file_doc(doc), "path": "usr/lib/libssl.so.3/x"})
    assert "also as the directory of 'usr/lib/libssl.so.3/x'" in str(refused(doc))


def test_duplicate_json_keys_are_refused() -> None:
    text = (
        manifest()
        .to_json()
        .replace(
            b'"path":"usr/lib/libssl.so.3"', b'"path":"usr/lib/libssl.so.3","path":"../etc/passwd"'
        )
    )
    with pytest.raises(InvalidBundle, match="key 'path' appears twice"):
        Manifest.from_json(text)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": "bsi-cryptex/3"}, "format 'bsi-cryptex/3' is not one this bsi reads"),
        ({"format": "bsi-cryptex/2"}, "a manifest without deltas is 'bsi-cryptex/1'"),
        ({"supplemental_build": "12A100"}, "'12A100' is the prerequisite build"),
        ({"prerequisite_build": "12.5"}, "prerequisite_build: '12.5' is not a build"),
        ({"extra_version": "(A)"}, "'(A)' is not an extra version"),
        ({"platform": "deb ian"}, "platform 'deb ian' is not a valid name"),
        ({"components": []}, "changes no files"),
        ({"signature": "x"}, "unknown field 'signature'"),
        ({"health_check": {"command": [], "timeout": 5}}, "has no program to run"),
        ({"health_check": {"command": ["true"], "timeout": 0}}, "outside 1..3600"),
    ],
)
def test_bad_top_level_fields_are_refused(change: dict[str, Any], expected: str) -> None:
    assert expected in str(refused({**document(), **change}))


def test_a_cve_score_that_disagrees_with_its_vector_is_refused() -> None:
    doc = document()
    doc["cves"][0]["base_score"] = 9.8
    error = refused(doc)
    assert "CVE 'CVE-2026-20643'" in str(error)
    assert "9.8" in str(error)


def test_relaunch_names_are_checked() -> None:
    doc = document()
    doc["components"][0]["relaunch"]["systemd"] = ["nginx"]
    assert "'nginx' is not a systemd unit name" in str(refused(doc))
    doc["components"][0]["relaunch"] = {"processes": ["usr/sbin/x"]}
    assert "process 'usr/sbin/x' is neither" in str(refused(doc))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json", "manifest: not JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe", "manifest: not JSON: not UTF-8"),
        (b"[]", "expected an object"),
        (b'{"size": NaN}', "manifest: size: NaN is not a JSON number"),
        (b'{"size": 1e999}', "manifest: size: inf is not a finite number"),
        (b'{"size": ' + b"9" * 5000 + b"}", "manifest: size: number 999"),
        (b'{"format": "\\u0000"}', "manifest: format: a string contains a NUL"),
        (b"[" * 100_000 + b"]" * 100_000, "deeper than 64 levels"),
    ],
)
def test_what_is_not_a_manifest_is_refused(data: bytes, expected: str) -> None:
    with pytest.raises(InvalidBundle, match=re.escape(expected)):
        Manifest.from_json(data)


# -- cumulative letters ------------------------------------------------------


def letter(name: str, build: str, *paths: str) -> Manifest:
    return manifest(Component("openssl", tuple(entry(p) for p in paths)), letter=name, build=build)


def test_a_later_letter_that_drops_a_file_is_refused_naming_it() -> None:
    a = letter("a", "12A100a", "usr/lib/libssl.so.3", "usr/lib/libcrypto.so.3")
    b = letter("b", "12A100b", "usr/lib/libssl.so.3")
    with pytest.raises(InvalidSupplement) as caught:
        cumulative_check(a, b)
    message = str(caught.value)
    assert "'usr/lib/libcrypto.so.3'" in message
    assert "(b) no longer patches 1 file(s) that 12.5 (a) patched" in message
    assert "--allow-dropping" in message


def test_dropping_can_be_allowed_and_is_reported() -> None:
    a = letter("a", "12A100a", "usr/lib/libssl.so.3", "usr/lib/libcrypto.so.3")
    b = letter("b", "12A100b", "usr/lib/libssl.so.3")
    assert cumulative_check(a, b, allow_dropping=True) == ("usr/lib/libcrypto.so.3",)


def test_a_cumulative_letter_passes_and_may_patch_more() -> None:
    a = letter("a", "12A100a", "usr/lib/libssl.so.3")
    b = letter("b", "12A100b", "usr/lib/libssl.so.3", "usr/lib/libnew.so")
    assert cumulative_check(a, b) == ()


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (letter("a", "12A100z", "x.so"), "extra version (a) is not later than (a)"),
        (letter("b", "12A100a", "x.so"), "'12A100a' is already 12.5 (a)'s"),
        (
            replace(
                letter("b", "12A200b", "x.so"),
                prerequisite=Prerequisite.of_build(Build.parse("12A200")),
            ),
            "is not for the same release",
        ),
    ],
)
def test_a_letter_that_cannot_supersede_is_refused(new: Manifest, expected: str) -> None:
    with pytest.raises(InvalidSupplement, match=re.escape(expected)):
        cumulative_check(letter("a", "12A100a", "x.so"), new)


def test_describe_says_what_would_change() -> None:
    m = manifest(
        Component(
            "openssl",
            (entry("usr/lib/libssl.so.3", size=12_600), entry("usr/lib/old.so", Action.REMOVE)),
            Relaunch(("nginx.service",)),
        )
    )
    lines = describe(m)
    assert lines[0] == "supplement debian 12.5 (a) (12A100a) on 12.5 (12A100)"
    assert (
        f"change /usr/lib/libssl.so.3 (mode 0644, owner 0:0, 12.3 KiB, sha256 {SHA_A}; "
        "travels whole) [component openssl, relaunch nginx.service]" in lines
    )
    assert (
        f"remove /usr/lib/old.so (was sha256 {SHA_C}) [component openssl, relaunch nginx.service]"
        in lines
    )
    assert "health check: curl -fsS http://localhost/ (timeout 20 s)" in lines
    assert any(line.startswith("fixes CVE-2026-20643: 5.4 Medium CVSS:3.1/") for line in lines)


def test_supplement_fields_match_the_catalogue_and_tuf_custom_names() -> None:
    assert manifest().supplement_fields().document() == {
        "platform": "debian",
        "product_version": "12.5",
        "extra_version": "(a)",
        "prerequisite_build": "12A100",
        "supplemental_build": "12A100a",
        "cves": ["CVE-2026-20643"],
        "cvss": {"CVE-2026-20643": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"},
    }


def test_supplement_fields_signed_from_a_manifest_read_back_as_they_were_written() -> None:
    written = manifest().supplement_fields(posted=date(2026, 3, 1))
    assert read_supplement_fields(written.document(), source="test") == written


def test_a_manifest_whose_platform_no_device_reports_cannot_be_signed() -> None:
    with pytest.raises(InvalidBundle, match="platform 'Debian' would match no device"):
        replace(manifest(), platform="Debian").supplement_fields()


# -- deltas --------------------------------------------------------------------

DELTA = Delta(size=300, sha256=SHA_C)


def test_a_manifest_with_a_delta_round_trips_and_says_a_format_of_its_own() -> None:
    m = manifest(
        Component(
            "openssl", (entry("usr/lib/libssl.so.3", delta=DELTA),), Relaunch(("nginx.service",))
        )
    )
    text = m.to_json()
    assert json.loads(text)["format"] == FORMAT_DELTA
    assert Manifest.from_json(text) == m
    only = m.files[0]
    assert (only.member_size, only.member_sha256) == (300, SHA_C)
    assert (only.size, only.sha256, only.base_sha256) == (10, SHA_A, SHA_B)
    # The rebuilt manifest is the same supplement with the file whole, in the old format.
    assert json.loads(m.whole().to_json())["format"] == FORMAT
    assert m.whole() == manifest()
    line = next(x for x in describe(m) if x.startswith("change "))
    assert f"travels bsdiff4 delta of 300 B against sha256 {SHA_B}" in line


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        ({"encoding": "xdelta3", "size": 3, "sha256": SHA_C}, "encoding 'xdelta3' is not one"),
        ({"encoding": "bsdiff4", "size": -1, "sha256": SHA_C}, "outside 0.."),
        ({"encoding": "bsdiff4", "size": 3, "sha256": "x"}, "not 64 lower-case hex"),
        ({"encoding": "bsdiff4", "size": 3}, "sha256"),
        ({"encoding": "bsdiff4", "size": 3, "sha256": SHA_C, "base": SHA_B}, "unknown field"),
    ],
)
def test_bad_deltas_are_refused(delta: dict[str, Any], expected: str) -> None:
    doc = document()
    doc["format"] = FORMAT_DELTA
    doc["components"][0]["files"][0]["delta"] = delta
    assert expected in str(refused(doc))


def test_a_delta_needs_a_changed_file_of_a_size_it_can_rebuild() -> None:
    with pytest.raises(InvalidBundle, match="add must not have a delta"):
        entry("usr/lib/new.so", Action.ADD, delta=DELTA)
    with pytest.raises(InvalidBundle, match="too large to rebuild from a delta"):
        entry("usr/lib/big.so", size=MAX_DELTA_BYTES + 1, delta=DELTA)


def test_a_manifest_with_deltas_in_the_old_format_is_refused() -> None:
    """An old agent refuses format 2 by name; format 1 with a delta is a forgery or a bug."""
    doc = json.loads(manifest(Component("o", (entry("usr/lib/a.so", delta=DELTA),))).to_json())
    doc["format"] = FORMAT
    assert "a manifest with deltas is 'bsi-cryptex/2'" in str(refused(doc))
