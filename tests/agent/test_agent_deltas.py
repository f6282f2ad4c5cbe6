"""Staging a supplement whose files travel as deltas: rebuilt from the device's base bytes.

Real trees, real bundles, the real swap activator: a device on the base
stages and activates a delta bundle; a base changed behind bsi, or missing,
is refused with nothing staged; an old whole-file bundle still installs; and
a later letter, whose deltas are against the base, stages while the earlier
letter is active (its base comes from the swap activator's rollback area, or
the copy the overlay activator keeps of what its mount covers).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_agent_overlay import _detach_everything_under, _probe

from bsi.agent.activators import (
    OVERLAY_AREA,
    PrerequisiteMismatch,
    StateLayout,
    load_staged,
    stage_bundle,
)
from bsi.agent.activators.overlay import OverlayActivator
from bsi.agent.activators.swap import SwapActivator
from bsi.cryptex import Manifest, build_bundle, diff_trees, read_manifest
from cryptex_support import SPEC_TEXT, spec, write_tree

LIB = "usr/lib/libssl.so.3"
CONF = "etc/nginx/nginx.conf"
BASE = {
    LIB: hashlib.shake_256(b"libssl base").digest(150_000),
    "usr/lib/libcrypto.so.3": hashlib.shake_256(b"libcrypto base").digest(80_000),
    CONF: b"worker_processes auto;\n",
}


def patched(marker: bytes) -> dict[str, bytes]:
    """The base with a few bytes of ``LIB`` changed, as a security fix does."""
    lib = BASE[LIB]
    return {**BASE, LIB: lib[:7000] + marker + lib[7000 + len(marker) :]}


def letter_spec(letter: str) -> str:
    return SPEC_TEXT.replace("extra_version: (a)", f"extra_version: ({letter})").replace(
        "supplemental_build: 12A100a", f"supplemental_build: 12A100{letter}"
    )


def build(work: Path, files: dict[str, bytes], letter: str = "a", *, deltas: bool = True) -> Path:
    base = write_tree(work / "base", BASE)
    new = write_tree(work / f"patched-{letter}", files)
    out = work / f"{letter}.bsi"
    build_bundle(spec(letter_spec(letter)), diff_trees(base, new), out, deltas=deltas)
    return out


def device(tmp_path: Path) -> StateLayout:
    root = write_tree(tmp_path / "root", BASE)
    return StateLayout(root, tmp_path / "state")


def nothing_staged(layout: StateLayout) -> bool:
    return not layout.cryptexes.exists() or not any(layout.cryptexes.iterdir())


def test_a_delta_bundle_stages_rebuilt_files_and_activates(tmp_path: Path) -> None:
    bundle = build(tmp_path / "work", patched(b"FIX-1"))
    assert read_manifest(bundle).deltas, "the test needs a bundle that carries a delta"
    layout = device(tmp_path)
    staged = stage_bundle(bundle, layout)
    manifest, files = load_staged(layout, "12A100a")
    assert manifest == staged
    assert not manifest.deltas  # staged whole
    assert (files / LIB).read_bytes() == patched(b"FIX-1")[LIB]
    SwapActivator(layout).activate(manifest, files)
    assert (layout.root / LIB).read_bytes() == patched(b"FIX-1")[LIB]


def test_a_base_changed_behind_bsi_is_refused_and_nothing_is_staged(tmp_path: Path) -> None:
    bundle = build(tmp_path / "work", patched(b"FIX-1"))
    layout = device(tmp_path)
    (layout.root / LIB).write_bytes(BASE[LIB][:-1] + b"!")  # a local change
    with pytest.raises(PrerequisiteMismatch) as refused:
        stage_bundle(bundle, layout)
    assert refused.value.reason == "wrong-prerequisite"
    assert f"/{LIB} travels as a delta against sha256" in refused.value.message
    assert "nothing was staged" in refused.value.message
    assert nothing_staged(layout)


def test_a_missing_base_is_refused_and_nothing_is_staged(tmp_path: Path) -> None:
    bundle = build(tmp_path / "work", patched(b"FIX-1"))
    layout = device(tmp_path)
    (layout.root / LIB).unlink()
    with pytest.raises(PrerequisiteMismatch, match="no such file"):
        stage_bundle(bundle, layout)
    assert nothing_staged(layout)


def test_a_symlink_in_place_of_the_base_is_not_followed(tmp_path: Path) -> None:
    bundle = build(tmp_path / "work", patched(b"FIX-1"))
    layout = device(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(BASE[LIB])  # the right bytes, but not at the path
    (layout.root / LIB).unlink()
    (layout.root / LIB).symlink_to(elsewhere)
    with pytest.raises(PrerequisiteMismatch):
        stage_bundle(bundle, layout)
    assert nothing_staged(layout)


def test_an_old_whole_file_bundle_still_installs(tmp_path: Path) -> None:
    bundle = build(tmp_path / "work", patched(b"FIX-1"), deltas=False)
    assert not read_manifest(bundle).deltas
    layout = device(tmp_path)
    (layout.root / "usr/lib/libcrypto.so.3").write_bytes(b"not needed: the bundle is whole")
    manifest = stage_bundle(bundle, layout)
    _, files = load_staged(layout, "12A100a")
    SwapActivator(layout).activate(manifest, files)
    assert (layout.root / LIB).read_bytes() == patched(b"FIX-1")[LIB]


def test_a_later_letter_stages_against_the_base_while_the_earlier_one_is_active(
    tmp_path: Path,
) -> None:
    """(b) is a delta against the base, not (a): the live file is (a)'s, so the
    base comes from the rollback area the swap activator keeps for (a)."""
    work = tmp_path / "work"
    letter_a = build(work, patched(b"FIX-1"), "a")
    letter_b = build(work, patched(b"FIX-1+FIX-2"), "b")
    b_manifest: Manifest = read_manifest(letter_b)
    assert b_manifest.deltas
    assert {e.base_sha256 for e in b_manifest.deltas} == {hashlib.sha256(BASE[LIB]).hexdigest()}
    layout = device(tmp_path)
    a_manifest = stage_bundle(letter_a, layout)
    swap = SwapActivator(layout)
    swap.activate(a_manifest, load_staged(layout, "12A100a")[1])
    assert (layout.root / LIB).read_bytes() == patched(b"FIX-1")[LIB]

    staged_b = stage_bundle(letter_b, layout)
    files_b = load_staged(layout, "12A100b")[1]
    assert (files_b / LIB).read_bytes() == patched(b"FIX-1+FIX-2")[LIB]
    swap.deactivate(a_manifest)
    swap.activate(staged_b, files_b)
    assert (layout.root / LIB).read_bytes() == patched(b"FIX-1+FIX-2")[LIB]


def test_under_an_active_overlay_letter_a_later_letter_stages_from_the_kept_base(
    tmp_path: Path,
) -> None:
    """The overlay mount hides the base of each file it patches; the activator keeps a
    copy while the letter is mounted, so (b)'s deltas still rebuild, and the copy goes
    with the mount. Needs root and overlay mounts (skipped otherwise, as the overlay
    tests are)."""
    reason = _probe(tmp_path)
    if reason:
        pytest.skip(reason)
    try:
        work = tmp_path / "work"
        letter_a = build(work, patched(b"FIX-1"), "a")
        letter_b = build(work, patched(b"FIX-1+FIX-2"), "b")
        layout = device(tmp_path)
        a_manifest = stage_bundle(letter_a, layout)
        overlay = OverlayActivator(layout)
        overlay.activate(a_manifest, load_staged(layout, "12A100a")[1])
        assert (layout.root / LIB).read_bytes() == patched(b"FIX-1")[LIB]

        staged_b = stage_bundle(letter_b, layout)
        files_b = load_staged(layout, "12A100b")[1]
        assert (files_b / LIB).read_bytes() == patched(b"FIX-1+FIX-2")[LIB]

        overlay.deactivate(a_manifest)
        assert not (layout.state / OVERLAY_AREA / "12A100a").exists()  # gone with the mount
        assert (layout.root / LIB).read_bytes() == BASE[LIB]
        overlay.activate(staged_b, files_b)
        assert (layout.root / LIB).read_bytes() == patched(b"FIX-1+FIX-2")[LIB]
        overlay.deactivate(staged_b)
    finally:
        _detach_everything_under(tmp_path)
