"""Building bundles from real trees: what goes in, determinism, refusals, atomicity."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bsi.cryptex import (
    Action,
    InvalidSupplement,
    build_bundle,
    changes_from_list,
    diff_trees,
    manifest_for,
    verify_bundle,
)
from bsi.cryptex.spec import parse_spec
from cryptex_support import (
    BASE_FILES,
    BASE_MODES,
    PATCHED_FILES,
    PATCHED_MODES,
    SPEC_TEXT,
    members,
    spec,
    standard_trees,
    write_tree,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_only_added_changed_and_removed_files_are_recorded(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    changes = {c.entry.path: c.entry for c in diff_trees(base, patched)}
    assert set(changes) == {
        "usr/lib/libssl.so.3",
        "usr/lib/libnew.so",
        "usr/sbin/nginx",
        "usr/share/doc/readme",
    }
    libssl = changes["usr/lib/libssl.so.3"]
    assert libssl.action is Action.CHANGE
    assert libssl.sha256 == sha(PATCHED_FILES["usr/lib/libssl.so.3"])
    assert libssl.base_sha256 == sha(BASE_FILES["usr/lib/libssl.so.3"])
    assert libssl.size == len(PATCHED_FILES["usr/lib/libssl.so.3"])
    assert changes["usr/lib/libnew.so"].action is Action.ADD
    assert changes["usr/lib/libnew.so"].base_sha256 is None
    removed = changes["usr/share/doc/readme"]
    assert (removed.action, removed.base_sha256) == (Action.REMOVE, sha(b"read me\n"))
    assert (removed.sha256, removed.size, removed.mode) == (None, None, None)


def test_a_mode_only_change_is_a_change(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    nginx = next(c.entry for c in diff_trees(base, patched) if c.entry.path == "usr/sbin/nginx")
    assert nginx.action is Action.CHANGE
    assert nginx.sha256 == nginx.base_sha256
    assert nginx.mode == 0o750


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (0o4755, "the spec does not list it under setuid"),
        (0o2755, "the spec does not list it under setuid"),
        (0o7777, "sticky bit"),
        (0o0777, "world-writable"),
    ],
)
def test_modes_the_spec_does_not_allow_are_refused_at_build(
    tmp_path: Path, mode: int, message: str
) -> None:
    base, patched = standard_trees(tmp_path)
    os.chmod(patched / "usr/sbin/nginx", mode)
    with pytest.raises(InvalidSupplement, match=message):
        build_bundle(spec(), diff_trees(base, patched), tmp_path / "out.bsi")
    assert not (tmp_path / "out.bsi").exists()


def test_the_bundle_holds_the_manifest_then_only_the_new_content(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    result = build_bundle(spec(), diff_trees(base, patched), tmp_path / "out.bsi")
    items = members(result.path)
    assert [info.name for info, _ in items] == [
        "manifest.json",
        "files/usr/lib/libnew.so",
        "files/usr/lib/libssl.so.3",
        "files/usr/sbin/nginx",
    ]
    for info, data in items[1:]:
        assert data == PATCHED_FILES[info.name.removeprefix("files/")]
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.mode == 0o644  # the real mode is in the manifest
    assert items[0][1] == result.manifest.to_json()
    assert result.sha256 == sha(result.path.read_bytes())
    assert result.size == result.path.stat().st_size
    assert verify_bundle(result.path) == result.manifest


def test_files_are_grouped_into_components_with_their_relaunch(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    manifest = manifest_for(spec(), diff_trees(base, patched))
    by_name = {c.name: c for c in manifest.components}
    assert {n: [f.path for f in c.files] for n, c in by_name.items()} == {
        "docs": ["usr/share/doc/readme"],
        "nginx": ["usr/sbin/nginx"],
        "openssl": ["usr/lib/libnew.so", "usr/lib/libssl.so.3"],
    }
    assert by_name["nginx"].relaunch.command == ("nginx", "-s", "reload")
    assert manifest.health_check == spec().health_check
    assert manifest.cves == spec().cves


def test_a_changed_file_no_component_claims_is_refused_by_name(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    (patched / "opt").mkdir()
    (patched / "opt" / "stray.so").write_bytes(b"x")
    with pytest.raises(InvalidSupplement) as caught:
        manifest_for(spec(), diff_trees(base, patched))
    assert "1 changed file(s) belong to no component: '/opt/stray.so'" in str(caught.value)
    assert "under 'components' in the spec" in str(caught.value)


def test_components_without_changes_are_left_out(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    (patched / "usr/share/doc").mkdir(parents=True)
    (patched / "usr/share/doc/readme").write_bytes(b"read me\n")
    manifest = manifest_for(spec(), diff_trees(base, patched))
    assert "docs" not in {c.name for c in manifest.components}


def test_the_spec_owner_replaces_the_tree_owner(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    text = SPEC_TEXT.replace("components:\n", "owner: {uid: 123, gid: 456}\ncomponents:\n")
    manifest = manifest_for(parse_spec(text), diff_trees(base, patched))
    assert {(f.uid, f.gid) for f in manifest.payloads} == {(123, 456)}
    tree_owner = (os.getuid(), os.getgid())
    assert {(f.uid, f.gid) for f in manifest_for(spec(), diff_trees(base, patched)).payloads} == {
        tree_owner
    }


def test_same_inputs_give_identical_bytes_whatever_the_mtimes_and_order(tmp_path: Path) -> None:
    bundles = []
    for run, (mtime, backwards) in enumerate([(1_000_000, False), (2_000_000_000, True)]):
        root = tmp_path / f"run{run}"
        base = write_tree(
            root / "base",
            BASE_FILES,
            BASE_MODES,
            order=sorted(BASE_FILES, reverse=backwards),
            mtime=mtime,
        )
        patched = write_tree(
            root / "patched",
            PATCHED_FILES,
            PATCHED_MODES,
            order=sorted(PATCHED_FILES, reverse=backwards),
            mtime=mtime + 7,
        )
        bundles.append(build_bundle(spec(), diff_trees(base, patched), root / "out.bsi"))
    assert bundles[0].path.read_bytes() == bundles[1].path.read_bytes()
    assert bundles[0].sha256 == bundles[1].sha256


def test_hard_linked_trees_are_compared_without_reading_shared_files(tmp_path: Path) -> None:
    base, _ = standard_trees(tmp_path)
    patched = tmp_path / "linked"
    for name in BASE_FILES:
        (patched / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(base / name, patched / name)
    (patched / "usr/lib/libssl.so.3").unlink()
    (patched / "usr/lib/libssl.so.3").write_bytes(b"fixed")
    assert [c.entry.path for c in diff_trees(base, patched)] == ["usr/lib/libssl.so.3"]


def test_an_identical_symlink_is_ignored_but_a_changed_one_refused(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    for tree in (base, patched):
        (tree / "usr/lib/libssl.so").symlink_to("libssl.so.3")
    assert "usr/lib/libssl.so" not in {c.entry.path for c in diff_trees(base, patched)}
    (patched / "usr/lib/libssl.so").unlink()
    (patched / "usr/lib/libssl.so").symlink_to("libnew.so")
    (patched / "usr/lib/evil").symlink_to("/etc/shadow")
    with pytest.raises(InvalidSupplement) as caught:
        diff_trees(base, patched)
    message = str(caught.value)
    assert "'usr/lib/evil' is absent in the base tree and a symlink in the patched tree" in message
    assert "'usr/lib/libssl.so' is a symlink in the base tree and a symlink" in message
    assert "regular files only" in message


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    os.mkfifo(patched / "usr/lib/pipe")
    with pytest.raises(
        InvalidSupplement, match="'usr/lib/pipe' is absent in the base tree and a fifo"
    ):
        diff_trees(base, patched)


def test_a_missing_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSupplement, match=r"base tree .* is not a directory"):
        diff_trees(tmp_path / "nope", tmp_path)


def test_nothing_changed_is_refused(tmp_path: Path) -> None:
    base = write_tree(tmp_path / "base", BASE_FILES)
    patched = write_tree(tmp_path / "patched", BASE_FILES)
    with pytest.raises(InvalidSupplement, match="nothing changed"):
        build_bundle(spec(), diff_trees(base, patched), tmp_path / "out.bsi")
    assert not (tmp_path / "out.bsi").exists()


# -- explicit file lists -----------------------------------------------------


def test_a_file_list_gives_the_same_changes_as_the_tree_diff(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    listing = [
        "# security fixes",
        "/usr/lib/libssl.so.3",
        "usr/lib/libnew.so",
        "",
        "./usr/sbin/nginx",
        "-/usr/share/doc/readme",
    ]
    from_list = changes_from_list(base, patched, listing)
    assert sorted(from_list, key=lambda c: c.entry.path) == diff_trees(base, patched)


def test_a_file_list_works_against_a_sparse_patched_tree(tmp_path: Path) -> None:
    """The live-root case: the patched tree holds only the new files."""
    base, _ = standard_trees(tmp_path)
    sparse = write_tree(tmp_path / "new", {"usr/lib/libssl.so.3": b"fixed"})
    changes = changes_from_list(base, sparse, ["usr/lib/libssl.so.3"])
    assert [(c.entry.path, c.entry.action) for c in changes] == [
        ("usr/lib/libssl.so.3", Action.CHANGE)
    ]


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        (["usr/lib/libcrypto.so.3"], "names 1 file(s) identical in both trees"),
        (["usr/lib/missing.so"], "'usr/lib/missing.so' is listed but is not in the patched tree"),
        (["-usr/lib/libssl.so.3"], "listed for removal but is still in the patched tree"),
        (["-usr/lib/ghost.so"], "listed for removal but is not in the base tree"),
        (
            ["usr/lib/libnew.so", "/usr/lib/libnew.so"],
            "line 2: 'usr/lib/libnew.so' is listed twice",
        ),
        (["../etc/passwd"], "line 1: path '../etc/passwd' climbs out"),
        (["/"], "line 1: '/' names the root"),
    ],
)
def test_file_list_mistakes_are_refused(tmp_path: Path, listing: list[str], expected: str) -> None:
    base, patched = standard_trees(tmp_path)
    with pytest.raises(InvalidSupplement, match=re.escape(expected)):
        changes_from_list(base, patched, listing)


def test_a_file_list_refuses_a_path_through_a_symlinked_directory(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    (base / "lib").symlink_to("usr/lib")
    (patched / "lib").symlink_to("usr/lib")
    with pytest.raises(InvalidSupplement, match=r"'lib' in 'lib/libssl.so.3' is a symlink"):
        changes_from_list(base, patched, ["lib/libssl.so.3"])


# -- cumulative letters and atomic writes -------------------------------------


def test_a_letter_that_drops_a_file_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    base, patched = standard_trees(tmp_path)
    letter_a = build_bundle(spec(), diff_trees(base, patched), tmp_path / "a.bsi")
    (patched / "usr/lib/libnew.so").unlink()
    letter_b_spec = parse_spec(
        SPEC_TEXT.replace("extra_version: (a)", "extra_version: (b)").replace(
            "supplemental_build: 12A100a", "supplemental_build: 12A100b"
        )
    )
    out = tmp_path / "b.bsi"
    with pytest.raises(
        InvalidSupplement, match=r"no longer patches 1 file\(s\).*'usr/lib/libnew.so'"
    ):
        build_bundle(letter_b_spec, diff_trees(base, patched), out, previous=letter_a.manifest)
    assert not out.exists()
    allowed = build_bundle(
        letter_b_spec,
        diff_trees(base, patched),
        out,
        previous=letter_a.manifest,
        allow_dropping=True,
    )
    assert allowed.dropped == ("usr/lib/libnew.so",)
    assert verify_bundle(out).extra_version.letter == "b"


def test_a_file_changing_during_the_build_leaves_no_bundle_behind(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    big = os.urandom(3 << 20)  # more than one read, so packing reports progress mid-file
    (patched / "usr/lib/libbig.so").write_bytes(big)
    changes = diff_trees(base, patched)
    out = tmp_path / "out.bsi"
    out.write_bytes(b"the previous bundle")

    def tamper(phase: str, done: int, total: int) -> None:
        if phase == "pack":
            (patched / "usr/lib/libbig.so").write_bytes(b"swapped" + big)

    with pytest.raises(
        InvalidSupplement, match=re.escape("libbig.so' changed while the bundle was being built")
    ):
        build_bundle(spec(), changes, out, progress=tamper)
    assert out.read_bytes() == b"the previous bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "out.bsi", "patched"]


def test_progress_reports_both_phases_up_to_their_totals(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    seen: dict[str, tuple[int, int]] = {}

    def progress(phase: str, done: int, total: int) -> None:
        assert 0 <= done <= total
        seen[phase] = (done, total)

    changes = diff_trees(base, patched, progress=progress)
    result = build_bundle(spec(), changes, tmp_path / "out.bsi", progress=progress)
    scanned = sum(len(v) for v in BASE_FILES.values()) + sum(len(v) for v in PATCHED_FILES.values())
    assert seen["scan"] == (scanned, scanned)
    assert seen["pack"] == (result.manifest.payload_bytes, result.manifest.payload_bytes)


def test_the_bundle_is_written_readable_beside_its_destination(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    result = build_bundle(spec(), diff_trees(base, patched), tmp_path / "out.bsi")
    assert result.path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(InvalidSupplement, match="is not a directory to write the bundle in"):
        build_bundle(spec(), diff_trees(base, patched), tmp_path / "no" / "out.bsi")


def test_verify_reports_the_set_user_id_files_its_spec_declared(tmp_path: Path) -> None:
    base, patched = standard_trees(tmp_path)
    os.chmod(patched / "usr/sbin/nginx", 0o4755)
    spec_file = tmp_path / "supplement.yaml"
    spec_file.write_text(
        SPEC_TEXT.replace("components:\n", "setuid: [/usr/sbin/nginx]\ncomponents:\n")
    )
    bundle = tmp_path / "suid.cryptex"
    build = ["supplement", "build", "--spec", spec_file, "--base", base, "--patched", patched]
    run = [sys.executable, "-m", "bsi"]
    done = subprocess.run([*run, *map(str, build), "--out", str(bundle)], capture_output=True)
    assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [*run, "supplement", "verify", str(bundle)], capture_output=True, text=True, check=True
    )
    assert "set-user-ID/set-group-ID, as its spec declares: /usr/sbin/nginx (4755)" in shown.stdout
