"""The overlay activator, for real: overlayfs mounts over directories of a temporary root.

Needs root and a kernel that lets this process mount overlays; skipped with
the reason otherwise. Every mount made under ``tmp_path`` is detached again
after each test, whatever happened in it.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bsi.agent.activators import ActivationError, PrerequisiteMismatch, StateLayout
from bsi.agent.activators.overlay import (
    MNT_DETACH,
    MountSpec,
    OverlayActivator,
    OverlayUnavailable,
    Record,
    UnsupportedManifest,
    mount_dirs,
    mount_overlay,
    parse_mountinfo,
    unmount,
)
from bsi.agent.relaunch import file_ids, processes_using
from bsi.cryptex.manifest import Action, Component, FileEntry, Manifest
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion

BASE = {
    "usr/lib/libssl.so.3": b"libssl 3.0.2 " * 500,
    "usr/lib/unrelated.so": b"not patched\n",
    "usr/lib/ssl/private/key.conf": b"private = old\n",
    "usr/share/doc/readme": b"read me\n",
    "usr/share/doc/keep": b"keep me\n",
}
NEW = {
    "usr/lib/libssl.so.3": b"libssl 3.0.2-fixed " * 500,
    "usr/lib/ssl/private/key.conf": b"private = new\n",
    "usr/lib/newdir/libnew.so": b"brand new\n",
}
BUILD = "12A100a"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _probe(tmp_path: Path) -> str | None:
    """Why overlay mounts cannot be tested here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "overlay mounts need root; run the tests as root to exercise them"
    probe = tmp_path / "probe"
    for name in ("a", "b", "on"):
        (probe / name).mkdir(parents=True)
    spec = MountSpec(str(probe / "on"), (str(probe / "a"), str(probe / "b")))
    try:
        mount_overlay(spec)
    except OSError as error:
        return f"the kernel refuses overlay mounts here: {error.strerror}"
    unmount(spec.target)
    return None


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    reason = _probe(tmp_path)
    if reason:
        pytest.skip(reason)
    device = tmp_path / "root"
    for path, data in BASE.items():
        (device / path).parent.mkdir(parents=True, exist_ok=True)
        (device / path).write_bytes(data)
    os.chmod(device / "usr/lib/ssl/private", 0o700)
    try:
        yield device
    finally:
        _detach_everything_under(tmp_path)


def _detach_everything_under(path: Path) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prefix = str(Path(os.path.realpath(path))) + "/"
    for _ in range(20):
        entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        ours = [e.mount_point for e in entries if e.mount_point.startswith(prefix)]
        if not ours:
            return
        for target in reversed(ours):
            libc.umount2(os.fsencode(target), MNT_DETACH)


def manifest(*, extra: dict[str, FileEntry] | None = None) -> Manifest:
    files = [
        FileEntry(
            path,
            Action.CHANGE if path in BASE else Action.ADD,
            sha256=sha(data),
            base_sha256=sha(BASE[path]) if path in BASE else None,
            size=len(data),
            mode=0o644,
            uid=0,
            gid=0,
        )
        for path, data in NEW.items()
    ]
    files.append(
        FileEntry(
            "usr/share/doc/readme", Action.REMOVE, base_sha256=sha(BASE["usr/share/doc/readme"])
        )
    )
    files.extend((extra or {}).values())
    return Manifest(
        platform="debian",
        product_version=ProductVersion(12, 5),
        extra_version=ExtraVersion("a"),
        prerequisite=Prerequisite.of_build(Build.parse("12A100")),
        supplemental_build=Build.parse(BUILD),
        components=(Component("openssl", tuple(files)),),
    )


def staged(root: Path, layout: StateLayout) -> Path:
    files = layout.staged_files(BUILD)
    for path, data in NEW.items():
        (files / path).parent.mkdir(parents=True, exist_ok=True)
        (files / path).write_bytes(data)
        os.chmod(files / path, 0o644)
    return files


def setup(root: Path) -> tuple[OverlayActivator, Manifest, Path]:
    layout = StateLayout.for_root(root)
    return OverlayActivator(layout), manifest(), staged(root, layout)


def overlays(root: Path) -> list[str]:
    entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    prefix = os.path.realpath(root) + "/"
    return [
        e.mount_point for e in entries if e.fstype == "overlay" and e.mount_point.startswith(prefix)
    ]


def live_view(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted((root / "usr").rglob("*"))
        if path.is_file()
    }


# -- activate and deactivate ----------------------------------------------


def test_activate_shows_the_cryptex_and_deactivate_restores_the_baseline(root: Path) -> None:
    activator, plan, files = setup(root)
    baseline = live_view(root)

    outcome = activator.activate(plan, files)
    assert (outcome.result, outcome.active, outcome.problems) == ("activated", BUILD, ())
    assert activator.active() == BUILD
    assert overlays(root) == [str(root / "usr/lib"), str(root / "usr/share/doc")]
    view = live_view(root)
    for path, data in NEW.items():
        assert view[path] == data
    assert view["usr/lib/unrelated.so"] == BASE["usr/lib/unrelated.so"]
    assert "usr/share/doc/readme" not in view  # whited out
    assert view["usr/share/doc/keep"] == BASE["usr/share/doc/keep"]
    # The merged directory keeps the live directory's mode, not the stager's 0755.
    assert stat.S_IMODE((root / "usr/lib/ssl/private").stat().st_mode) == 0o700
    # Sealed: the patched directories are read-only while active.
    with pytest.raises(OSError, match="Read-only file system") as caught:
        (root / "usr/lib/scratch").write_bytes(b"x")
    assert caught.value.errno == errno.EROFS

    again = activator.activate(plan, files)
    assert again.result == "already-active"

    outcome = activator.deactivate(plan)
    assert (outcome.result, outcome.active, outcome.problems) == ("deactivated", None, ())
    assert overlays(root) == []
    assert live_view(root) == baseline
    assert activator.active() is None
    assert not activator.record_path.exists()
    assert not (activator.layout.state / "overlay" / BUILD).exists()
    assert activator.deactivate(plan).result == "not-active"


def test_processes_keep_old_content_until_relaunched(root: Path) -> None:
    activator, plan, files = setup(root)
    library = root / "usr/lib/libssl.so.3"
    old_ids = file_ids([library])  # recorded before activation, as the runner does
    with library.open("rb") as before:
        mapped = mmap.mmap(before.fileno(), 0, access=mmap.ACCESS_READ)
        activator.activate(plan, files)
        assert mapped[:12] == BASE["usr/lib/libssl.so.3"][:12]  # still the old bytes
        uses = processes_using([library], old_inodes=old_ids, exclude_pids=())
        assert [use.pid for use in uses] == [os.getpid()]
        mapped.close()

    # Rolling back while a process maps cryptex content: the mount is busy,
    # so it is detached; the baseline shows at once, and the process is found
    # by the ids recorded before deactivating (a detached mount's files show
    # paths relative to it, so the path alone would not find it).
    with library.open("rb") as during:
        mapped = mmap.mmap(during.fileno(), 0, access=mmap.ACCESS_READ)
        cryptex_ids = file_ids([library])
        outcome = activator.deactivate(plan)
        assert outcome.problems == ()
        assert library.read_bytes() == BASE["usr/lib/libssl.so.3"]
        assert mapped[:18] == NEW["usr/lib/libssl.so.3"][:18]
        uses = processes_using([library], old_inodes=cryptex_ids, exclude_pids=())
        assert [use.pid for use in uses] == [os.getpid()]
        mapped.close()
    assert overlays(root) == []


# -- recovery --------------------------------------------------------------


def test_recover_undoes_an_interrupted_activation(root: Path) -> None:
    activator, plan, files = setup(root)
    baseline = live_view(root)
    activator.activate(plan, files)
    record = Record.from_json(activator.record_path.read_bytes(), where="test")
    # As if the agent died after the mounts but before recording "active".
    activator._write_record(Record(record.build, "mounting", record.mounts, record.whiteouts))
    assert activator.active() is None
    outcome = activator.recover()
    assert (outcome.result, outcome.active) == ("rolled-back", None)
    assert overlays(root) == []
    assert live_view(root) == baseline


def test_recover_remounts_after_a_reboot(root: Path) -> None:
    activator, plan, files = setup(root)
    activator.activate(plan, files)
    for target in reversed(overlays(root)):  # a reboot drops every mount
        unmount(target)
    assert activator.active() is None
    outcome = activator.recover()
    assert (outcome.result, outcome.active) == ("rolled-forward", BUILD)
    assert activator.active() == BUILD
    assert (root / "usr/lib/libssl.so.3").read_bytes() == NEW["usr/lib/libssl.so.3"]
    assert activator.recover().result == "nothing-to-do"


def test_recover_finishes_an_interrupted_deactivation(root: Path) -> None:
    activator, plan, files = setup(root)
    baseline = live_view(root)
    activator.activate(plan, files)
    record = Record.from_json(activator.record_path.read_bytes(), where="test")
    activator._write_record(Record(record.build, "unmounting", record.mounts, record.whiteouts))
    unmount(record.mounts[0].target)  # died after the first unmount
    outcome = activator.recover()
    assert (outcome.result, outcome.active) == ("rolled-forward", None)
    assert overlays(root) == []
    assert live_view(root) == baseline
    assert activator.recover().result == "nothing-to-do"


# -- refusals, before anything changes ------------------------------------


def test_drifted_file_is_refused(root: Path) -> None:
    activator, plan, files = setup(root)
    (root / "usr/lib/libssl.so.3").write_bytes(b"locally rebuilt")
    with pytest.raises(PrerequisiteMismatch, match="not the prerequisite build's"):
        activator.activate(plan, files)
    assert overlays(root) == []
    assert not activator.record_path.exists()


def test_addition_over_an_existing_file_is_refused(root: Path) -> None:
    activator, plan, files = setup(root)
    (root / "usr/lib/newdir").mkdir()
    (root / "usr/lib/newdir/libnew.so").write_bytes(b"someone else's")
    with pytest.raises(PrerequisiteMismatch, match="exists, but the supplement adds it"):
        activator.preflight(plan, files)


def test_top_level_file_is_refused(root: Path) -> None:
    layout = StateLayout.for_root(root)
    (root / "toplevel").write_bytes(b"x")
    extra = FileEntry(
        "toplevel",
        Action.CHANGE,
        sha256=sha(b"y"),
        base_sha256=sha(b"x"),
        size=1,
        mode=0o644,
        uid=0,
        gid=0,
    )
    plan = manifest(extra={"toplevel": extra})
    files = staged(root, layout)
    (files / "toplevel").write_bytes(b"y")
    with pytest.raises(UnsupportedManifest, match="never over '/'"):
        OverlayActivator(layout).preflight(plan, files)


def test_symlinked_directory_is_refused(root: Path) -> None:
    activator, plan, files = setup(root)
    (root / "usr/share/doc/readme").unlink()
    (root / "usr/share/doc/keep").unlink()
    (root / "usr/share/doc").rmdir()
    (root / "usr/share/real-doc").mkdir()
    (root / "usr/share/real-doc/readme").write_bytes(BASE["usr/share/doc/readme"])
    (root / "usr/share/doc").symlink_to("real-doc")
    with pytest.raises(UnsupportedManifest, match="symbolic link"):
        activator.preflight(plan, files)


def test_another_active_build_is_refused(root: Path) -> None:
    activator, plan, files = setup(root)
    activator.activate(plan, files)
    record = Record.from_json(activator.record_path.read_bytes(), where="test")
    activator._write_record(Record("12A100b", "active", record.mounts, record.whiteouts))
    with pytest.raises(ActivationError, match="12A100b is active; deactivate it"):
        activator.activate(plan, files)


def test_not_root_is_refused_with_a_reason(root: Path) -> None:
    activator, plan, files = setup(root)
    os.seteuid(65534)
    try:
        with pytest.raises(OverlayUnavailable, match="needs root") as caught:
            activator.preflight(plan, files)
    finally:
        os.seteuid(0)
    assert caught.value.reason == "not-root"


# -- pure parts ------------------------------------------------------------


def test_mount_dirs_are_the_fewest_covering_directories() -> None:
    existing = {"usr", "usr/lib", "usr/lib/ssl", "usr/bin", "etc"}
    paths = ["usr/lib/a.so", "usr/lib/ssl/b.cnf", "usr/lib/new/c.so", "usr/bin/x", "etc/y"]
    assert mount_dirs(paths, existing.__contains__) == ("etc", "usr/bin", "usr/lib")


def test_mountinfo_parsing() -> None:
    text = (
        "45 27 0:39 / /tmp/with\\040space/lib rw,relatime - overlay overlay "
        "ro,lowerdir=/s/lib:/w/lib:/tmp/with\\040space/lib,redirect_dir=on\n"
        "46 27 0:40 / /x rw - overlay overlay ro,lowerdir+=/a,lowerdir+=/b\n"
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n"
    )
    entries = parse_mountinfo(text)
    assert entries[0].mount_point == "/tmp/with space/lib"
    assert entries[0].lowerdirs == ("/s/lib", "/w/lib", "/tmp/with space/lib")
    assert entries[1].lowerdirs == ("/a", "/b")
    assert entries[2].fstype == "ext4"
