"""The swap activator on real trees, with real staged cryptexes.

A device root is written from the cryptex tests' prerequisite tree (plus an
added file in directories that do not exist yet, a set-user-ID original and,
as root, owners that change), a real bundle is built from the patched tree
and staged with :func:`stage_bundle`, and every test compares whole-tree
snapshots: path -> (sha256, mode, uid, gid[, mtime]) for files, and
(mode, uid, gid) for directories.

The helpers at the top are shared with ``test_agent_crash.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bsi.agent.activators import (
    ActivationError,
    Activator,
    InsufficientSpace,
    Outcome,
    PrerequisiteMismatch,
    StateLayout,
    TransactionPending,
    load_staged,
    stage_bundle,
)
from bsi.agent.activators.swap import SwapActivator
from bsi.agent.journal import AppendHook, Journal, Record
from bsi.agent.swap_plan import interpret, rollback_area
from bsi.cryptex import Manifest, build_bundle, diff_trees
from bsi.errors import Conflict
from cryptex_support import (
    BASE_FILES,
    BASE_MODES,
    PATCHED_FILES,
    PATCHED_MODES,
    SPEC_TEXT,
    spec,
    write_tree,
)

BUILD = "12A100a"
IS_ROOT = os.geteuid() == 0
BASE_MTIME = 1_600_000_000

NESTED = "usr/lib/engines-3/legacy/legacy.so"
SWAP_BASE = dict(BASE_FILES)
SWAP_PATCHED = {**PATCHED_FILES, NESTED: b"a provider in directories the base lacks\n" * 50}
SWAP_BASE_MODES = {**BASE_MODES, "usr/lib/libssl.so.3": 0o4755}
SWAP_PATCHED_MODES = dict(PATCHED_MODES)
# (uid, gid) as root: libssl changes owner, and so does the set-user-ID bit's file.
BASE_OWNERS = {"usr/lib/libssl.so.3": (1001, 1002), "usr/share/doc/readme": (1003, 1004)}
PATCHED_OWNERS = {"usr/lib/libssl.so.3": (2001, 2002), NESTED: (3001, 3002)}

Snapshot = dict[str, tuple[object, ...]]


def snapshot(root: Path, *, times: bool = False) -> Snapshot:
    """Every file and directory under ``root``: content hash, mode, owner (and mtime)."""
    result: Snapshot = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(directory) / name
            info = os.lstat(path)
            key = path.relative_to(root).as_posix()
            owner = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            if stat.S_ISDIR(info.st_mode):
                result[key] = ("dir", *owner)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[key] = ("file", digest, *owner, *((info.st_mtime_ns,) if times else ()))
            else:
                result[key] = ("other", info.st_mode)
    return result


def without_times(tree: Snapshot) -> Snapshot:
    return {k: v[:5] if v[0] == "file" else v for k, v in tree.items()}


def write_device_tree(
    root: Path,
    files: dict[str, bytes],
    modes: dict[str, int],
    owners: dict[str, tuple[int, int]],
    *,
    mtime: int | None = None,
) -> Path:
    write_tree(root, files, modes, mtime=mtime)
    if IS_ROOT:
        for name, (uid, gid) in owners.items():
            if name in files:
                os.chown(root / name, uid, gid)
                os.chmod(root / name, modes.get(name, 0o644))  # chown cleared set-user-ID
    return root


def expected_new(base: Snapshot, patched: Snapshot) -> Snapshot:
    """The patched tree's files, and every directory of either tree (none is removed)."""
    dirs = {k: v for tree in (base, patched) for k, v in tree.items() if v[0] == "dir"}
    return {**dirs, **{k: v for k, v in patched.items() if v[0] != "dir"}}


@dataclass
class Built:
    """A bundle, and the snapshots a device must match without it and with it."""

    bundle: Path
    manifest: Manifest
    base: Path
    old: Snapshot
    new: Snapshot
    base_files: dict[str, bytes]


def build_supplement(
    work: Path,
    base_files: dict[str, bytes] = SWAP_BASE,
    patched_files: dict[str, bytes] = SWAP_PATCHED,
    *,
    spec_text: str | None = None,
) -> Built:
    """Build the supplement from ``base_files`` to ``patched_files``, as root with owners."""
    base = write_device_tree(
        work / "base", base_files, SWAP_BASE_MODES, BASE_OWNERS, mtime=BASE_MTIME
    )
    patched = write_device_tree(work / "patched", patched_files, SWAP_PATCHED_MODES, PATCHED_OWNERS)
    the_spec = spec() if spec_text is None else spec(spec_text)
    result = build_bundle(the_spec, diff_trees(base, patched), work / "supplement.bsi")
    old = snapshot(base, times=True)
    new = expected_new(snapshot(base), snapshot(patched))
    return Built(result.path, result.manifest, base, old, new, base_files)


@dataclass
class Device:
    root: Path
    layout: StateLayout
    manifest: Manifest
    staged: Path

    def activator(self, journal: Journal | None = None) -> SwapActivator:
        return SwapActivator(self.layout, journal=journal)


def make_device(built: Built, root: Path, state: Path) -> Device:
    """A device on the prerequisite build, with ``built``'s bundle staged."""
    write_device_tree(root, built.base_files, SWAP_BASE_MODES, BASE_OWNERS, mtime=BASE_MTIME)
    layout = StateLayout(root, state)
    stage_bundle(built.bundle, layout)
    manifest, staged = load_staged(layout, str(built.manifest.supplemental_build))
    return Device(root, layout, manifest, staged)


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` at ``where``; skips the test where mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


# -- fixtures ------------------------------------------------------------------


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build_supplement(tmp_path / "build")


@pytest.fixture
def device(built: Built, tmp_path: Path) -> Device:
    return make_device(built, tmp_path / "root", tmp_path / "state")


# -- activation and deactivation -----------------------------------------------


def test_the_fixture_is_a_real_device_on_its_prerequisite_build(
    device: Device, built: Built
) -> None:
    assert snapshot(device.root, times=True) == built.old
    actions = {f.path: str(f.action) for f in device.manifest.files}
    assert actions == {
        "usr/lib/libnew.so": "add",
        NESTED: "add",
        "usr/lib/libssl.so.3": "change",
        "usr/sbin/nginx": "change",
        "usr/share/doc/readme": "remove",
    }


def test_swap_is_an_activator(device: Device) -> None:
    activator: Activator = device.activator()  # checked by mypy
    assert activator.name == "swap"


def test_activate_puts_every_new_file_in_place(device: Device, built: Built) -> None:
    outcome = device.activator().activate(device.manifest, device.staged)

    assert outcome == Outcome("activate", "activated", BUILD, BUILD, 5, ())
    assert snapshot(device.root) == built.new
    assert not (device.root / "usr/share/doc/readme").exists()
    assert (device.root / NESTED).read_bytes() == SWAP_PATCHED[NESTED]
    assert device.activator().active() == BUILD
    assert device.activator().verify() == ()


def test_deactivate_returns_the_exact_baseline(device: Device, built: Built) -> None:
    activator = device.activator()
    activator.activate(device.manifest, device.staged)

    outcome = activator.deactivate(device.manifest)

    assert outcome == Outcome("deactivate", "deactivated", BUILD, None, 5, ())
    # Bytes, modes (set-user-ID included), owners and modification times.
    assert snapshot(device.root, times=True) == built.old
    assert activator.active() is None
    assert not (device.layout.state / rollback_area(BUILD)).exists()


@pytest.mark.skipif(not IS_ROOT, reason="changing owners needs root")
def test_owners_change_and_come_back(device: Device) -> None:
    libssl = device.root / "usr/lib/libssl.so.3"
    activator = device.activator()
    activator.activate(device.manifest, device.staged)
    info = libssl.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (2001, 2002, 0o644)
    assert (device.root / NESTED).stat().st_uid == 3001

    activator.deactivate(device.manifest)
    info = libssl.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1001, 1002, 0o4755)


def test_it_can_be_activated_again_after_a_rollback(device: Device, built: Built) -> None:
    activator = device.activator()
    for _ in range(2):
        activator.activate(device.manifest, device.staged)
        assert snapshot(device.root) == built.new
        activator.deactivate(device.manifest)
        assert snapshot(device.root, times=True) == built.old
    # The journal is compacted when each transaction starts: one checkpoint, then it.
    records = Journal(device.layout.journal).read()
    assert [r["type"] for r in records][:2] == ["checkpoint", "begin"]
    assert interpret(records).active is None


def test_activating_twice_is_harmless(device: Device) -> None:
    activator = device.activator()
    activator.activate(device.manifest, device.staged)
    again = activator.activate(device.manifest, device.staged)
    assert (again.result, again.active, again.problems) == ("already-active", BUILD, ())


def test_deactivating_the_baseline_is_harmless(device: Device, built: Built) -> None:
    outcome = device.activator().deactivate(device.manifest)
    assert (outcome.result, outcome.active) == ("not-active", None)
    assert snapshot(device.root, times=True) == built.old


def test_the_state_directory_may_live_under_the_root(built: Built, tmp_path: Path) -> None:
    root = tmp_path / "root"
    layout = StateLayout.for_root(root)
    assert layout.state == root / "var/lib/bsi"
    device = make_device(built, root, layout.state)
    device.activator().activate(device.manifest, device.staged)
    device.activator().deactivate(device.manifest)
    assert outside_state(snapshot(root, times=True)) == built.old


# -- refusals that change nothing ------------------------------------------------


def assert_untouched(device: Device, built: Built, before: Snapshot | None = None) -> None:
    assert snapshot(device.root, times=True) == (before if before is not None else built.old)
    assert not (device.layout.state / rollback_area(BUILD)).exists()
    assert device.activator().active() is None


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ("changed", "usr/lib/libssl.so.3 has sha256"),
        ("removed", "usr/sbin/nginx is missing"),
        ("added", "usr/lib/libnew.so exists, but the supplement adds it"),
        ("symlink", "usr/share/doc/readme is not a regular file"),
        ("blocked", "usr/lib/engines-3 is not a directory"),
    ],
)
def test_a_drifted_host_is_refused_before_anything_is_touched(
    device: Device, drift: str, message: str
) -> None:
    root = device.root
    if drift == "changed":
        (root / "usr/lib/libssl.so.3").write_bytes(b"locally patched libssl")
    elif drift == "removed":
        (root / "usr/sbin/nginx").unlink()
    elif drift == "added":
        (root / "usr/lib/libnew.so").write_bytes(b"someone else's library")
    elif drift == "symlink":
        (root / "usr/share/doc/readme").unlink()
        (root / "usr/share/doc/readme").symlink_to("/etc/passwd")
    else:
        (root / "usr/lib/engines-3").write_bytes(b"a file where a directory must go")
    before = snapshot(root, times=True)

    activator = device.activator()
    with pytest.raises(PrerequisiteMismatch, match=message) as raised:
        activator.preflight(device.manifest, device.staged)
    with pytest.raises(PrerequisiteMismatch, match="nothing was changed") as raised:
        activator.activate(device.manifest, device.staged)

    assert raised.value.reason == "wrong-prerequisite"
    assert "prerequisite build 12A100" in str(raised.value)
    assert snapshot(root, times=True) == before
    assert activator.active() is None


def test_a_directory_symlink_leading_out_of_the_root_is_refused(
    device: Device, tmp_path: Path
) -> None:
    outside = write_tree(tmp_path / "outside", {"libssl.so.3": SWAP_BASE["usr/lib/libssl.so.3"]})
    shutil.rmtree(device.root / "usr/share/doc")
    (device.root / "usr/share/doc").symlink_to(outside)
    with pytest.raises(PrerequisiteMismatch, match="outside the device root"):
        device.activator().activate(device.manifest, device.staged)
    assert sorted(p.name for p in outside.iterdir()) == ["libssl.so.3"]


def test_a_damaged_staged_payload_is_rolled_back(device: Device, built: Built) -> None:
    payload = device.staged / "usr/sbin/nginx"
    os.chmod(payload, 0o644)
    damaged = bytearray(payload.read_bytes())
    damaged[100] ^= 1
    payload.write_bytes(bytes(damaged))

    with pytest.raises(ActivationError, match="staged cryptex is damaged") as raised:
        device.activator().activate(device.manifest, device.staged)

    assert raised.value.reason == "staged-content"
    assert_untouched(device, built)
    records = Journal(device.layout.journal).read()
    assert [r["type"] for r in records][-2:] == ["recover", "end"]
    assert records[-1]["outcome"] == "rolled-back"


def test_another_supplement_must_be_deactivated_first(device: Device, tmp_path: Path) -> None:
    device.activator().activate(device.manifest, device.staged)
    other = build_supplement(
        tmp_path / "b",
        spec_text=SPEC_TEXT.replace("(a)", "(b)").replace("12A100a", "12A100b"),
    )
    stage_bundle(other.bundle, device.layout)
    manifest, staged = load_staged(device.layout, "12A100b")
    with pytest.raises(ActivationError, match="12A100a is active") as raised:
        device.activator().activate(manifest, staged)
    assert raised.value.reason == "another-active"


def test_local_changes_to_installed_files_block_a_rollback_unless_forced(
    device: Device, built: Built
) -> None:
    activator = device.activator()
    activator.activate(device.manifest, device.staged)
    (device.root / "usr/lib/libnew.so").write_bytes(b"edited after activation")
    before = snapshot(device.root, times=True)

    with pytest.raises(PrerequisiteMismatch, match="were changed since"):
        activator.deactivate(device.manifest)
    assert snapshot(device.root, times=True) == before
    assert activator.active() == BUILD

    activator.deactivate(device.manifest, force=True)
    assert snapshot(device.root, times=True) == built.old


def test_staging_the_same_build_twice_is_refused(device: Device, built: Built) -> None:
    with pytest.raises(Conflict, match="already staged"):
        stage_bundle(built.bundle, device.layout)


# -- recovery in-process -------------------------------------------------------------


class StopAfter(Exception):
    """Raised by a journal hook: the agent stopping at that record, in-process."""


def hook_stopping_at(kind: str) -> AppendHook:
    def hook(seq: int, record: Record) -> None:
        if record["type"] == kind:
            raise StopAfter(kind)

    return hook


def test_an_interrupted_committed_activation_is_finished_by_recover(
    device: Device, built: Built
) -> None:
    journal = Journal(device.layout.journal, on_append=hook_stopping_at("commit"))
    with pytest.raises(StopAfter):
        device.activator(journal).activate(device.manifest, device.staged)

    activator = device.activator()
    with pytest.raises(TransactionPending, match="was interrupted") as raised:
        activator.active()
    assert raised.value.reason == "interrupted"
    assert activator.pending() == "activate of 12A100a (committed)"
    with pytest.raises(TransactionPending):
        activator.deactivate(device.manifest)

    outcome = activator.recover()
    assert outcome == Outcome("recover", "rolled-forward", BUILD, BUILD, 5, ())
    assert snapshot(device.root) == built.new
    assert activator.active() == BUILD
    assert activator.recover().result == "nothing-to-do"


def test_a_failure_before_commit_is_undone_at_once(device: Device, built: Built) -> None:
    """Anything raised in prepare is rolled back in-process (a kill is the crash tests')."""
    device.activator().activate(device.manifest, device.staged)
    journal = Journal(device.layout.journal, on_append=hook_stopping_at("done"))
    with pytest.raises(StopAfter):
        device.activator(journal).deactivate(device.manifest)

    assert device.activator().pending() is None
    assert device.activator().active() == BUILD
    assert snapshot(device.root) == built.new
    assert device.activator().recover() == Outcome("recover", "nothing-to-do", None, BUILD)


# -- across file systems: backups are copies ------------------------------------------


def test_backups_on_another_file_system_are_faithful_copies(built: Built, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "statefs", "64m") as state_fs:
        device = make_device(built, tmp_path / "root", state_fs / "state")
        activator = device.activator()
        activator.activate(device.manifest, device.staged)
        backup = device.layout.state / rollback_area(BUILD) / "files/usr/lib/libssl.so.3"
        original = built.old["usr/lib/libssl.so.3"]
        info = backup.stat()
        assert backup.stat().st_dev != (device.root / "usr").stat().st_dev
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == original[2:5]
        assert info.st_mtime_ns == original[5]

        activator.deactivate(device.manifest)
        assert snapshot(device.root, times=True) == built.old


# -- disk full ---------------------------------------------------------------------------


def test_preflight_refuses_when_the_backups_do_not_fit(built: Built, tmp_path: Path) -> None:
    # State on a 64 KiB tmpfs: the ~110 KiB of originals must be copied there.
    with tmpfs(tmp_path / "statefs", "64k") as state_fs:
        root = write_device_tree(
            tmp_path / "root", SWAP_BASE, SWAP_BASE_MODES, BASE_OWNERS, mtime=BASE_MTIME
        )
        staging = StateLayout(root, tmp_path / "staging")
        stage_bundle(built.bundle, staging)
        manifest, staged = load_staged(staging, BUILD)
        device = Device(root, StateLayout(root, state_fs / "state"), manifest, staged)

        with pytest.raises(InsufficientSpace, match="disk full: cannot activate") as raised:
            device.activator().activate(manifest, staged)

        assert raised.value.reason == "disk-full"
        assert "free" in str(raised.value)
        assert "nothing was changed" in str(raised.value)
        assert_untouched(device, built)


def test_running_out_of_space_during_activation_rolls_back(built: Built, tmp_path: Path) -> None:
    """Preflight passes; then something else fills the disk, and the copy hits ENOSPC."""
    with tmpfs(tmp_path / "rootfs", "1m") as root_fs:
        device = make_device(built, root_fs / "root", tmp_path / "state")
        before = snapshot(device.root, times=True)

        def fill_the_disk(seq: int, record: Record) -> None:
            if record["type"] == "begin":
                with (root_fs / "ballast").open("wb") as ballast, contextlib.suppress(OSError):
                    while True:
                        ballast.write(b"\0" * 65536)
                        ballast.flush()

        journal = Journal(device.layout.journal, on_append=fill_the_disk)
        with pytest.raises(InsufficientSpace, match="disk full while activating") as raised:
            device.activator(journal).activate(device.manifest, device.staged)

        assert "No space left on device" in str(raised.value)
        assert "nothing was changed" in str(raised.value)
        assert snapshot(device.root, times=True) == before
        assert device.activator().active() is None
        (root_fs / "ballast").unlink()
        assert device.activator().recover().result == "nothing-to-do"


def test_staging_refuses_a_bundle_that_does_not_fit(built: Built, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "statefs", "32k") as state_fs:
        root = write_device_tree(
            tmp_path / "root", SWAP_BASE, SWAP_BASE_MODES, BASE_OWNERS, mtime=BASE_MTIME
        )
        layout = StateLayout(root, state_fs / "state")
        with pytest.raises(InsufficientSpace, match="disk full: cannot stage") as raised:
            stage_bundle(built.bundle, layout)
        assert raised.value.reason == "disk-full"
        assert list(layout.cryptexes.iterdir()) == []
        assert snapshot(root, times=True) == built.old


# -- the process entry -------------------------------------------------------------------


def run_swap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bsi.agent.activators.swap", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_module_runs_each_operation(built: Built, tmp_path: Path) -> None:
    root = write_device_tree(
        tmp_path / "root", SWAP_BASE, SWAP_BASE_MODES, BASE_OWNERS, mtime=BASE_MTIME
    )
    where = ["--root", str(root), "--state", str(tmp_path / "state")]

    staged = run_swap("stage", *where, "--bundle", str(built.bundle))
    assert json.loads(staged.stdout) == {"staged": BUILD}
    activated = run_swap("activate", *where, "--build", BUILD)
    assert json.loads(activated.stdout)["result"] == "activated", activated.stderr
    assert json.loads(run_swap("status", *where).stdout) == {"active": BUILD, "pending": None}
    assert snapshot(root) == built.new
    deactivated = run_swap("deactivate", *where)
    assert json.loads(deactivated.stdout)["active"] is None
    assert snapshot(root, times=True) == built.old

    (root / "usr/lib/libssl.so.3").write_bytes(b"drifted")
    refused = run_swap("activate", *where, "--build", BUILD)
    assert refused.returncode == 1
    assert json.loads(refused.stderr)["reason"] == "wrong-prerequisite"


def test_forget_drops_a_supplement_the_os_has_replaced_without_restoring(
    device: Device, built: Built
) -> None:
    activator = device.activator()
    activator.activate(device.manifest, device.staged)
    activator.forget(BUILD)
    assert device.activator().active() is None
    assert snapshot(device.root) == built.new  # the new release's files stay
    assert not (device.layout.state / "rollback" / BUILD).exists()
    activator.forget(BUILD)  # forgetting twice is harmless


def test_only_the_test_entry_can_crash_the_agent(built: Built, tmp_path: Path) -> None:
    """Crash injection is for test builds: ``crashing_swap.py`` kills at a journal record;
    the installed ``bsi agent`` and ``python -m bsi.agent.activators.swap`` ignore
    ``BSI_CRASH_AT``, the variable that once enabled it in every bsi, and finish."""
    root = tmp_path / "root"
    device = make_device(built, root, StateLayout.for_root(root).state)
    journal = Journal(device.layout.journal, on_append=hook_stopping_at("commit"))
    with pytest.raises(StopAfter):
        device.activator(journal).activate(device.manifest, device.staged)
    where = ["--root", str(root), "--state", str(device.layout.state)]
    crashing = Path(__file__).with_name("crashing_swap.py")
    killed = subprocess.run(
        [sys.executable, str(crashing), "--crash-at", "after:1", "recover", *where],
        capture_output=True,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    installed = Path(sys.executable).with_name("bsi")
    assert installed.is_file(), f"no console script at {installed}: pip install -e ."
    crash_everywhere = {**os.environ, "BSI_CRASH_AT": "after:1"}
    recovered = subprocess.run(
        [str(installed), "agent", "recover", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env=crash_everywhere,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert json.loads(recovered.stdout)["journal"]["result"] == "rolled-forward"
    assert outside_state(snapshot(root)) == built.new

    deactivated = run_swap("deactivate", *where, env={"BSI_CRASH_AT": "after:1"})
    assert deactivated.returncode == 0, deactivated.stderr
    assert outside_state(snapshot(root, times=True)) == built.old


def outside_state(tree: Snapshot) -> Snapshot:
    """A device root's tree without its state directory (``var/lib/bsi``) and parents."""
    return {path: entry for path, entry in tree.items() if not path.startswith("var")}
