"""Verifying bundles that were made to hurt: every tampering is caught and named."""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from bsi.cryptex import (
    Action,
    Component,
    FileEntry,
    InvalidBundle,
    Manifest,
    build_bundle,
    diff_trees,
    extract_payloads,
    read_manifest,
    verify_bundle,
)
from bsi.cryptex.build import tar_header
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.errors import Conflict, NotFound
from cryptex_support import (
    PATCHED_FILES,
    SPEC_TEXT,
    Member,
    compress,
    manifest_document,
    members,
    pack,
    regular,
    spec,
    standard_trees,
    tar_bytes,
    with_manifest,
)

LIBSSL = "files/usr/lib/libssl.so.3"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    base, patched = standard_trees(tmp_path)
    return build_bundle(spec(), diff_trees(base, patched), tmp_path / "good.bsi").path


@pytest.fixture
def items(bundle: Path) -> list[Member]:
    return members(bundle)


def refusal(path: Path, **kwargs: Any) -> str:
    with pytest.raises(InvalidBundle) as caught:
        verify_bundle(path, **kwargs)
    return str(caught.value)


def replaced(items: list[Member], name: str, data: bytes) -> list[Member]:
    """``items`` with member ``name`` holding ``data`` (its header's size to match)."""
    return [regular(name, data) if info.name == name else (info, old) for info, old in items]


def test_a_good_bundle_verifies(bundle: Path, items: list[Member]) -> None:
    manifest = verify_bundle(bundle)
    assert manifest == Manifest.from_json(items[0][1])
    assert read_manifest(bundle) == manifest


def test_a_bundle_repacked_by_another_tar_writer_still_verifies(
    tmp_path: Path, items: list[Member]
) -> None:
    """Order within the tar and record padding are not part of the format."""
    reordered = [items[0], *reversed(items[1:])]
    assert verify_bundle(pack(tmp_path / "repacked.bsi", reordered))


def test_a_flipped_byte_in_a_payload_is_caught(tmp_path: Path, items: list[Member]) -> None:
    data = bytearray(PATCHED_FILES["usr/lib/libssl.so.3"])
    data[1000] ^= 0x01
    message = refusal(pack(tmp_path / "t.bsi", replaced(items, LIBSSL, bytes(data))))
    assert f"member {LIBSSL!r} has sha256 {hashlib.sha256(data).hexdigest()}" in message
    assert "the manifest says" in message


def test_payloads_swapped_between_two_files_are_caught(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    (patched / "usr/lib/libother.so").write_bytes(b"B" * 100)
    (patched / "usr/lib/libnew.so").write_bytes(b"A" * 100)
    good = build_bundle(spec(), diff_trees(base, patched), tmp_path / "good2.bsi").path
    swapped = []
    for info, data in members(good):
        if info.name == "files/usr/lib/libnew.so":
            data = b"B" * 100
        elif info.name == "files/usr/lib/libother.so":
            data = b"A" * 100
        swapped.append((info, data))
    message = refusal(pack(tmp_path / "t.bsi", swapped))
    assert "member 'files/usr/lib/libnew.so' has sha256" in message


def test_an_extra_member_is_caught(tmp_path: Path, items: list[Member]) -> None:
    extra = [*items, regular("files/usr/lib/backdoor.so", b"evil")]
    message = refusal(pack(tmp_path / "t.bsi", extra))
    assert "member 'files/usr/lib/backdoor.so' is not in the manifest" in message


def test_a_duplicate_member_is_caught(tmp_path: Path, items: list[Member]) -> None:
    duplicate = [*items, next(m for m in items if m[0].name == LIBSSL)]
    assert f"member {LIBSSL!r} appears twice" in refusal(pack(tmp_path / "t.bsi", duplicate))


def test_a_missing_member_is_caught(tmp_path: Path, items: list[Member]) -> None:
    missing = [m for m in items if m[0].name != LIBSSL]
    message = refusal(pack(tmp_path / "t.bsi", missing))
    # Its manifest announces more than the zstd frame holds: caught before decompressing.
    assert "more than the" in message
    assert "its zstd frame holds" in message


def payload_record(document: Any) -> Any:
    return next(r for c in document["components"] for r in c["files"] if "size" in r)


@pytest.mark.parametrize(("mode", "problem"), [(0o7777, "sticky"), (0o0757, "world-writable")])
def test_sticky_or_world_writable_files_are_refused(
    tmp_path: Path, items: list[Member], mode: int, problem: str
) -> None:
    document: Any = manifest_document(items)
    payload_record(document)["mode"] = f"{mode:04o}"
    message = refusal(pack(tmp_path / "t.bsi", with_manifest(items, document)))
    assert f"has mode {mode:04o}" in message
    assert problem in message


def declared_bundle(tmp_path: Path, mode: int = 0o4755) -> Path:
    """A bundle whose /usr/sbin/nginx has ``mode``, declared under ``setuid`` in its spec."""
    base, patched = standard_trees(tmp_path)
    os.chmod(patched / "usr/sbin/nginx", mode)
    text = SPEC_TEXT.replace("components:\n", "setuid: [/usr/sbin/nginx]\ncomponents:\n")
    return build_bundle(spec(text), diff_trees(base, patched), tmp_path / "suid.bsi").path


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6711])
def test_a_set_id_file_the_manifest_does_not_declare_is_refused_before_staging(
    tmp_path: Path, mode: int
) -> None:
    """The bit is in a (signable) manifest but its declaration was left out: refused."""
    items = members(declared_bundle(tmp_path, mode))
    document: Any = manifest_document(items)
    assert document["setuid"] == ["usr/sbin/nginx"]
    del document["setuid"]
    hostile = pack(tmp_path / "t.bsi", with_manifest(items, document))
    message = refusal(hostile)
    assert f"file 'usr/sbin/nginx' has mode {mode:04o}: set-user-ID or set-group-ID" in message
    assert "which the manifest does not declare" in message
    with pytest.raises(InvalidBundle, match="does not declare"):
        extract_payloads(hostile, tmp_path / "stage")
    assert not (tmp_path / "stage").exists()


def test_a_declared_set_user_id_file_is_staged_with_its_mode(tmp_path: Path) -> None:
    bundle = declared_bundle(tmp_path)
    assert verify_bundle(bundle).setuid == ("usr/sbin/nginx",)
    extract_payloads(bundle, tmp_path / "stage")
    assert (tmp_path / "stage/usr/sbin/nginx").stat().st_mode & 0o7777 == 0o4755


def test_a_declaration_of_a_file_the_bundle_does_not_carry_is_refused(
    tmp_path: Path, items: list[Member]
) -> None:
    document: Any = manifest_document(items)
    document["setuid"] = ["usr/bin/sudo"]
    message = refusal(pack(tmp_path / "t.bsi", with_manifest(items, document)))
    assert "declares /usr/bin/sudo set-user-ID/set-group-ID but carries no such file" in message


def test_a_file_declared_larger_than_the_cap_is_invalid_before_decompressing(
    tmp_path: Path, items: list[Member]
) -> None:
    """2^62 bytes is refused as an invalid bundle, not met later as a full disk."""
    document: Any = manifest_document(items)
    payload_record(document)["size"] = 2**62
    message = refusal(pack(tmp_path / "t.bsi", with_manifest(items, document)))
    assert "of files in its manifest, more than the 4.0 GiB allowed" in message


def test_a_manifest_whose_sha256_disagrees_is_caught(tmp_path: Path, items: list[Member]) -> None:
    document: Any = manifest_document(items)
    for component in document["components"]:
        for record in component["files"]:
            if record["path"] == "usr/lib/libssl.so.3":
                record["sha256"] = "0" * 64
    message = refusal(pack(tmp_path / "t.bsi", with_manifest(items, document)))
    assert f"member {LIBSSL!r} has sha256 " in message
    assert "the manifest says " + "0" * 64 in message


def test_a_member_whose_size_disagrees_is_caught(tmp_path: Path, items: list[Member]) -> None:
    longer = PATCHED_FILES["usr/lib/libssl.so.3"] + b"tail"
    message = refusal(pack(tmp_path / "t.bsi", replaced(items, LIBSSL, longer)))
    assert re.search(
        rf"member {re.escape(repr(LIBSSL))} is \d+ bytes; the manifest says \d+", message
    )


@pytest.mark.parametrize(
    ("path", "problem"), [("../etc/passwd", "climbs out"), ("/etc/passwd", "is absolute")]
)
def test_path_traversal_in_the_manifest_is_caught(
    tmp_path: Path, items: list[Member], path: str, problem: str
) -> None:
    document: Any = manifest_document(items)
    document["components"][0]["files"][0]["path"] = path
    message = refusal(pack(tmp_path / "t.bsi", with_manifest(items, document)))
    assert f"path {path!r} {problem}" in message
    assert "manifest.json" in message


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("files/../etc/passwd", "climbs out"),
        ("files//etc/passwd", "is absolute"),
        ("/etc/passwd", "is outside files/"),
        ("../etc/passwd", "is outside files/"),
        ("manifest.json", "is outside files/"),
    ],
)
def test_path_traversal_in_member_names_is_caught(
    tmp_path: Path, items: list[Member], name: str, problem: str
) -> None:
    message = refusal(pack(tmp_path / "t.bsi", [*items, regular(name, b"root::0:0::/:/bin/sh\n")]))
    assert f"member name {name!r} {problem}" in message


def test_a_long_member_name_in_a_pax_header_is_read(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    deep = "usr/lib/" + "/".join(["d" * 60] * 4) + "/libdeep.so"
    (patched / deep).parent.mkdir(parents=True)
    (patched / deep).write_bytes(b"deep")
    result = build_bundle(spec(), diff_trees(base, patched), tmp_path / "deep.bsi")
    assert deep in {f.path for f in verify_bundle(result.path).files}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (tarfile.SYMTYPE, "is a symlink"),
        (tarfile.LNKTYPE, "is a hard link"),
        (tarfile.CHRTYPE, "is a character device"),
        (tarfile.DIRTYPE, "is a directory"),
    ],
)
def test_links_devices_and_directories_are_refused(
    tmp_path: Path, items: list[Member], kind: bytes, expected: str
) -> None:
    info = tarfile.TarInfo("files/usr/lib/libssl.so.3")
    info.type = kind
    info.linkname = "/etc/shadow"
    message = refusal(pack(tmp_path / "t.bsi", [*items, (info, b"")]))
    assert (
        f"member 'files/usr/lib/libssl.so.3' {expected}; a bundle holds regular files only"
        in message
    )


def test_a_bundle_not_starting_with_the_manifest_is_refused(
    tmp_path: Path, items: list[Member]
) -> None:
    message = refusal(pack(tmp_path / "t.bsi", [*items[1:], items[0]]))
    assert f"the first member is {items[1][0].name!r}, not 'manifest.json'" in message


@pytest.mark.parametrize(
    "keep",
    [lambda n: n - 1, lambda n: n - 4, lambda n: n - 100, lambda n: n // 2, lambda n: 20],
    ids=["checksum-cut", "no-checksum", "last-block-cut", "half", "header-only"],
)
def test_a_truncated_bundle_is_refused(
    tmp_path: Path, bundle: Path, keep: Callable[[int], int]
) -> None:
    data = bundle.read_bytes()
    truncated = tmp_path / "t.bsi"
    truncated.write_bytes(data[: keep(len(data))])
    assert "truncated" in refusal(truncated)


def test_data_after_the_frame_is_refused(tmp_path: Path, bundle: Path) -> None:
    padded = tmp_path / "t.bsi"
    padded.write_bytes(bundle.read_bytes() + b"\0")
    assert "data follows the bundle's zstd frame" in refusal(padded)


def test_data_after_the_tar_archive_is_refused(tmp_path: Path, items: list[Member]) -> None:
    path = tmp_path / "t.bsi"
    path.write_bytes(compress(tar_bytes(items) + b"smuggled"))
    assert "data follows the end of the tar archive" in refusal(path)


def test_a_corrupt_frame_is_refused(tmp_path: Path, bundle: Path) -> None:
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt = tmp_path / "t.bsi"
    corrupt.write_bytes(bytes(data))
    assert "corrupt" in refusal(corrupt)


def test_a_corrupt_tar_header_is_refused(tmp_path: Path, items: list[Member]) -> None:
    raw = bytearray(tar_bytes(items))
    raw[0] ^= 0x01  # the manifest's name, so its header checksum no longer matches
    path = tmp_path / "t.bsi"
    path.write_bytes(compress(bytes(raw)))
    assert "a tar header is corrupt" in refusal(path)


@pytest.mark.parametrize(
    "content", [b"", b"plain text", b"\x28\xb5\x2f", tar_bytes([regular("manifest.json", b"{}")])]
)
def test_what_is_not_zstd_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "t.bsi"
    path.write_bytes(content)
    assert "not a bundle: it is not zstd-compressed" in refusal(path)


def test_a_broken_frame_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.bsi"
    path.write_bytes(b"\x28\xb5\x2f\xfd\xff")
    assert "the zstd frame header is broken or truncated" in refusal(path)


def bomb(size: int, *, content_size: bool) -> bytes:
    """A well-formed bundle of one file of ``size`` zeros, compressed to a few kilobytes."""
    zeros = bytes(1 << 20)
    digest = hashlib.sha256()
    for _ in range(size // len(zeros)):
        digest.update(zeros)
    manifest = Manifest(
        platform="debian",
        product_version=ProductVersion.parse("12.5"),
        extra_version=ExtraVersion.parse("(a)"),
        prerequisite=Prerequisite.of_build(Build.parse("12A100")),
        supplemental_build=Build.parse("12A100a"),
        components=(
            Component(
                "zeros",
                (FileEntry("zeros", Action.ADD, digest.hexdigest(), None, size, 0o644, 0, 0),),
            ),
        ),
    ).to_json()
    head = tar_header("manifest.json", len(manifest)) + manifest + bytes(-len(manifest) % 512)
    head += tar_header("files/zeros", size)
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=content_size)
    stream = compressor.compressobj(size=len(head) + size + 1024 if content_size else -1)
    out = [stream.compress(head)]
    out += [stream.compress(zeros) for _ in range(size // len(zeros))]
    out += [stream.compress(bytes(1024)), stream.flush()]
    return b"".join(out)


def test_a_bomb_that_declares_its_size_is_refused_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "bomb.bsi"
    path.write_bytes(bomb(64 << 20, content_size=True))
    assert path.stat().st_size < 64 << 10
    message = refusal(path, max_bytes=8 << 20)
    assert "declares 64.0 MiB of content, more than the 8.0 MiB allowed" in message
    assert "decompression bomb" in message


def test_a_bomb_that_hides_its_size_is_stopped_by_the_ratio_cap_at_once(
    tmp_path: Path,
) -> None:
    """No declared size and a generous cap: the compression ratio gives it away."""
    path = tmp_path / "bomb.bsi"
    path.write_bytes(bomb(256 << 20, content_size=False))
    assert path.stat().st_size < 256 << 10
    started = time.process_time()  # this process's CPU: what a busy machine does not inflate
    message = refusal(path, max_bytes=4 << 30)
    took = time.process_time() - started
    print(
        f"\nzstd bomb (256 MiB in {path.stat().st_size} bytes) refused in {took * 1000:.0f} ms CPU"
    )
    assert "more than 1000 times" in message
    assert took < 1.0


def test_a_bomb_that_declares_a_ratio_beyond_the_cap_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bomb.bsi"
    path.write_bytes(bomb(256 << 20, content_size=True))
    message = refusal(path, max_bytes=4 << 30)
    assert "declares 256.0 MiB from" in message
    assert "more than 1000 times" in message


def test_a_missing_bundle_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such bundle"):
        verify_bundle(tmp_path / "absent.bsi")


def test_read_manifest_does_not_read_the_payloads(tmp_path: Path, items: list[Member]) -> None:
    broken = pack(tmp_path / "t.bsi", replaced(items, LIBSSL, b"x" * len(items[2][1])))
    assert read_manifest(broken) == Manifest.from_json(items[0][1])
    with pytest.raises(InvalidBundle):
        verify_bundle(broken)


# -- staging -----------------------------------------------------------------


def test_extract_writes_each_payload_with_its_mode(tmp_path: Path, bundle: Path) -> None:
    dest = tmp_path / "stage"
    manifest = extract_payloads(bundle, dest)
    written = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert written == [f.path for f in manifest.payloads]
    for entry in manifest.payloads:
        target = dest / entry.path
        assert target.read_bytes() == PATCHED_FILES[entry.path]
        assert target.stat().st_mode & 0o7777 == entry.mode


def test_extract_refuses_a_directory_that_is_not_empty(tmp_path: Path, bundle: Path) -> None:
    dest = tmp_path / "stage"
    dest.mkdir()
    (dest / "leftover").write_text("x")
    with pytest.raises(Conflict, match="is not empty"):
        extract_payloads(bundle, dest)
    assert (dest / "leftover").exists()


@pytest.mark.parametrize("pre_existing", [True, False])
def test_extract_leaves_nothing_when_a_payload_is_bad(
    tmp_path: Path, items: list[Member], pre_existing: bool
) -> None:
    # libssl sorts after libnew, so one good file has been written before the bad one.
    bad = pack(tmp_path / "t.bsi", replaced(items, LIBSSL, b"x" * len(items[2][1])))
    dest = tmp_path / "stage"
    if pre_existing:
        dest.mkdir()
    with pytest.raises(InvalidBundle, match="has sha256"):
        extract_payloads(bad, dest)
    assert (list(dest.iterdir()) == []) if pre_existing else not dest.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_extract_can_apply_the_owner_and_keeps_a_set_user_id_bit(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    os.chmod(patched / "usr/sbin/nginx", 0o4755)
    text = SPEC_TEXT.replace(
        "components:\n", "owner: {uid: 1, gid: 2}\nsetuid: [/usr/sbin/nginx]\ncomponents:\n"
    )
    result = build_bundle(spec(text), diff_trees(base, patched), tmp_path / "suid.bsi")
    extract_payloads(result.path, tmp_path / "stage", apply_owner=True)
    info = (tmp_path / "stage/usr/sbin/nginx").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1, 2, 0o4755)


def test_a_negative_member_size_is_refused(tmp_path: Path) -> None:
    header = bytearray(tar_header("manifest.json", 0))
    header[124:136] = b"\xff" * 12  # base-256 encoding of -1
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    path = tmp_path / "t.bsi"
    path.write_bytes(compress(bytes(header) + bytes(1024)))
    assert "member 'manifest.json' has a negative size (-1)" in refusal(path)


def test_a_pax_header_with_fields_bsi_does_not_write_is_refused(
    tmp_path: Path, items: list[Member]
) -> None:
    info, data = next(m for m in items if m[0].name == LIBSSL)
    info.pax_headers = {"linkpath": "/etc/shadow"}
    message = refusal(pack(tmp_path / "t.bsi", [*items, (info, data)]))
    assert "pax header field 'linkpath' is unknown or repeated" in message
