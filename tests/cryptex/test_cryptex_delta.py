"""Binary-delta supplements: built, verified, rebuilt, and refused when anything is off."""

from __future__ import annotations

import bz2
import hashlib
import json
from pathlib import Path

import pytest

from bsi.cryptex import InvalidBundle, build_bundle, diff_trees, extract_payloads, verify_bundle
from bsi.cryptex.delta import HEADER_BYTES, MAGIC, apply_delta, claimed_size, make_delta
from bsi.cryptex.manifest import FORMAT, FORMAT_DELTA
from bsi.cryptex.verify import BaseBytes
from cryptex_support import (
    PATCHED_FILES,
    Member,
    manifest_document,
    members,
    pack,
    regular,
    spec,
    standard_trees,
    with_manifest,
)

LIBSSL = "usr/lib/libssl.so.3"
# Like a shared library: incompressible alone, a few bytes changed by the update.
OLD_LIBSSL = hashlib.shake_256(b"libssl 3.0.19").digest(120_000)
NEW_LIBSSL = OLD_LIBSSL[:5000] + b"fixed" + OLD_LIBSSL[5005:90_000] + b"also" + OLD_LIBSSL[90_000:]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def from_tree(root: Path) -> BaseBytes:
    """A ``base`` callback reading the base tree, as the agent reads the device root."""
    return lambda entry: (root / entry.path).read_bytes()


def with_libssl(items: list[Member], data: bytes) -> list[Member]:
    """``items`` with the libssl member's data replaced (the manifest left as it is)."""
    return [
        regular(info.name, data) if info.name == f"files/{LIBSSL}" else (info, old)
        for info, old in items
    ]


def signed_delta(bundle: Path, delta: bytes, out: Path) -> Path:
    """``bundle`` with libssl's member replaced by ``delta``, the manifest agreeing with it
    (what a publisher's key could sign: only the rebuild can tell it is wrong)."""
    items = members(bundle)
    document = manifest_document(items)
    for component in document["components"]:  # type: ignore[attr-defined]
        for entry in component["files"]:
            if entry["path"] == LIBSSL:
                entry["delta"] = {"encoding": "bsdiff4", "size": len(delta), "sha256": sha(delta)}
    return pack(out, with_libssl(with_manifest(items, document), delta))


def header(control: int, diff: int, size: int) -> bytes:
    return MAGIC + b"".join(n.to_bytes(8, "little") for n in (control, diff, size))


def trees(tmp_path: Path) -> tuple[Path, Path]:
    base, patched = standard_trees(tmp_path)
    (base / LIBSSL).write_bytes(OLD_LIBSSL)
    (patched / LIBSSL).write_bytes(NEW_LIBSSL)
    return base, patched


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path]:
    base, patched = trees(tmp_path)
    result = build_bundle(spec(), diff_trees(base, patched), tmp_path / "s.bsi")
    return base, result.path


def test_a_changed_file_travels_as_a_delta_and_is_rebuilt_exactly(
    tmp_path: Path, built: tuple[Path, Path]
) -> None:
    base, bundle = built
    manifest = verify_bundle(bundle)
    by_path = {e.path: e for e in manifest.files}
    libssl = by_path[LIBSSL]
    assert libssl.delta is not None
    assert libssl.member_size < (libssl.size or 0) // 20
    assert libssl.base_sha256 == sha(OLD_LIBSSL)
    assert libssl.sha256 == sha(NEW_LIBSSL)
    assert by_path["usr/lib/libnew.so"].delta is None  # added: no base, whole
    assert by_path["usr/sbin/nginx"].delta is None  # mode only: the same bytes, whole
    assert manifest_document(members(bundle))["format"] == FORMAT_DELTA

    out = tmp_path / "staged"
    extract_payloads(bundle, out, base=from_tree(base))
    assert (out / LIBSSL).read_bytes() == NEW_LIBSSL
    for path in ("usr/lib/libnew.so", "usr/sbin/nginx"):
        assert (out / path).read_bytes() == PATCHED_FILES[path]


def test_without_deltas_the_bundle_is_the_old_format_and_needs_no_base(tmp_path: Path) -> None:
    base, patched = trees(tmp_path)
    result = build_bundle(spec(), diff_trees(base, patched), tmp_path / "s.bsi", deltas=False)
    assert not result.manifest.deltas
    assert manifest_document(members(result.path))["format"] == FORMAT
    extract_payloads(result.path, tmp_path / "out")
    assert (tmp_path / "out" / LIBSSL).read_bytes() == NEW_LIBSSL


def test_a_delta_is_kept_only_when_smaller_than_the_file(tmp_path: Path) -> None:
    """A file rewritten from scratch travels whole: its delta would be no smaller."""
    base, patched = trees(tmp_path)
    (patched / LIBSSL).write_bytes(hashlib.shake_256(b"rewritten").digest(120_000))
    result = build_bundle(spec(), diff_trees(base, patched), tmp_path / "s.bsi")
    assert {e.path: e.delta for e in result.manifest.payloads}[LIBSSL] is None


def test_a_bundle_with_deltas_and_no_base_is_refused(
    tmp_path: Path, built: tuple[Path, Path]
) -> None:
    _, bundle = built
    with pytest.raises(InvalidBundle, match="travel as deltas, and no base was given"):
        extract_payloads(bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_base_of_other_bytes_is_refused_and_nothing_is_left(
    tmp_path: Path, built: tuple[Path, Path]
) -> None:
    _, bundle = built
    out = tmp_path / "out"
    with pytest.raises(InvalidBundle, match="the base given for the delta has sha256"):
        extract_payloads(bundle, out, base=lambda entry: b"not the base")
    assert not out.exists()


def test_a_delta_made_from_other_bytes_is_refused_by_the_rebuilt_sha256(
    tmp_path: Path, built: tuple[Path, Path]
) -> None:
    """The delta member matches its own hash, but rebuilds something else: refused."""
    base, bundle = built
    wrong = make_delta(OLD_LIBSSL, NEW_LIBSSL.replace(b"fixed", b"EVIL!"))
    forged = signed_delta(bundle, wrong, tmp_path / "forged.bsi")
    out = tmp_path / "out"
    with pytest.raises(InvalidBundle, match=r"rebuilt from its delta, /usr/lib/libssl\.so\.3 has"):
        extract_payloads(forged, out, base=from_tree(base))
    assert not out.exists()


def test_a_bundle_whose_delta_claims_a_huge_output_is_refused_and_nothing_is_left(
    tmp_path: Path, built: tuple[Path, Path]
) -> None:
    """Signed sizes and hashes all agree, but the patch claims 1 EiB: refused before rebuilding."""
    base, bundle = built
    claim = header(0, 0, 1 << 60) + bz2.compress(b"") * 3
    forged = signed_delta(bundle, claim, tmp_path / "claim.bsi")
    out = tmp_path / "out"
    with pytest.raises(
        InvalidBundle, match=r"the delta claims 1048576\.0 TiB of output; the manifest says"
    ):
        extract_payloads(forged, out, base=from_tree(base))
    assert not out.exists()


def test_a_flipped_byte_in_a_delta_member_is_caught_by_its_own_sha256(
    tmp_path: Path, built: tuple[Path, Path]
) -> None:
    base, bundle = built
    items = members(bundle)
    delta = next(data for info, data in items if info.name == f"files/{LIBSSL}")
    forged = pack(tmp_path / "flipped.bsi", with_libssl(items, delta[:-1] + bytes([delta[-1] ^ 1])))
    with pytest.raises(InvalidBundle, match=f"member 'files/{LIBSSL}' has sha256"):
        extract_payloads(forged, tmp_path / "out", base=from_tree(base))
    with pytest.raises(InvalidBundle, match="has sha256"):
        verify_bundle(forged)


# -- the patch reader, on hostile patches ---------------------------------------


def test_a_patch_claiming_a_huge_output_is_refused_before_anything_is_allocated() -> None:
    claim = header(0, 0, 1 << 60) + bz2.compress(b"") * 3
    assert claimed_size(claim) == 1 << 60
    with pytest.raises(InvalidBundle, match="the delta claims"):
        apply_delta(b"base", claim, size=100)
    # Even where the manifest agreed, the size is beyond what a delta may rebuild.
    with pytest.raises(InvalidBundle, match="more than a delta may rebuild"):
        apply_delta(b"base", claim, size=1 << 60)


def test_a_block_that_expands_past_the_file_size_is_refused() -> None:
    """A bz2 bomb in the extra block: refused after at most the file's size of output."""
    control, diff = bz2.compress(b""), bz2.compress(b"")
    bomb = bz2.compress(bytes(8 << 20))
    patch = header(len(control), len(diff), 1000) + control + diff + bomb
    with pytest.raises(InvalidBundle, match="decompresses past 1000 B"):
        apply_delta(b"base", patch, size=1000)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (b"", "not a BSDIFF40 patch"),
        (b"BSDIFF41" + bytes(24), "not a BSDIFF40 patch"),
        (header(10**6, 0, 4), "run past its end"),
        (header(3, 0, 4) + b"abc", "not valid bz2"),
        (header(len(bz2.compress(b"x" * 24)), 0, 4) + bz2.compress(b"x" * 24)[:-4], "truncated"),
    ],
)
def test_broken_patches_are_refused(patch: bytes, expected: str) -> None:
    with pytest.raises(InvalidBundle, match=expected):
        apply_delta(b"base", patch, size=4)


def test_a_control_block_that_points_outside_the_output_is_refused() -> None:
    """Well-formed blocks whose instructions overrun: the library's own check, reported."""
    control = bz2.compress((100).to_bytes(8, "little") + bytes(16))
    diff, extra = bz2.compress(bytes(4)), bz2.compress(b"")
    patch = header(len(control), len(diff), 4) + control + diff + extra
    assert len(patch) > HEADER_BYTES
    with pytest.raises(InvalidBundle, match="the delta is corrupt"):
        apply_delta(b"base", patch, size=4)


def test_make_and_apply_are_inverse_on_real_bytes() -> None:
    base = Path(json.__file__).read_bytes()
    target = base.replace(b"def ", b"def  ")
    delta = make_delta(base, target)
    assert len(delta) < len(target) // 10
    assert apply_delta(base, delta, size=len(target)) == target
