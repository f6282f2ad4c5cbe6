"""Activators: the ways a staged supplement becomes the content the device runs.

Every activator — ``swap`` (replace files by atomic rename; any Linux host),
``overlay`` (overlayfs over the component directories; root only) and
``container`` (patched images, containers recreated on them; Docker or Podman
hosts, :mod:`bsi.agent.activators.container`) —
answers to one :class:`Activator` protocol, so that the agent's runner does
not care which one a device uses; ``agent.yaml``'s ``activator:`` chooses
(:func:`make_activator`). bsi has no ``sysext`` activator.
They share the state directory's layout (:class:`StateLayout`), the staging
of a verified bundle into the preboot area (:func:`stage_bundle`), the
:class:`Outcome` they report, and the errors they refuse with, each of which
carries a short machine-readable ``reason`` for the DDM
``softwareupdate.failure-reason`` status item.

State directory (default ``<root>/var/lib/bsi``)::

    preboot/cryptexes/<supplemental-build>/manifest.json   the verified manifest
    preboot/cryptexes/<supplemental-build>/files/<path>    its payloads, verified
    journal                                                crash-recovery journal
    lock                                                   one activator at a time
    rollback/<supplemental-build>/files/<path>             originals, while active
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bsi.agent.config import CONTAINER_HEALTH_TIMEOUT, CONTAINER_STOP_TIMEOUT
from bsi.agent.journal import fsync_directory
from bsi.agent.swap_plan import ROLLBACK_DIR, backup_path
from bsi.cryptex.manifest import MAX_DELTA_BYTES, FileEntry, Manifest, human_size
from bsi.cryptex.verify import BaseBytes, extract_payloads, read_manifest
from bsi.errors import BsiError, Conflict, NotFound

DEFAULT_STATE_DIR = "var/lib/bsi"
"""The state directory, relative to the device root, when none is configured."""

STAGED_MANIFEST = "manifest.json"
STAGED_FILES = "files"
BLOCK = 4096
"""Space is counted in whole blocks: a one-byte file still takes one."""


# -- errors --------------------------------------------------------------------


class ActivationError(BsiError):
    """An activation or deactivation was refused or failed.

    ``reason`` is a short code for status reports (``disk-full``,
    ``wrong-prerequisite``, ``interrupted``, ...); the message says what,
    where, and whether anything was changed.
    """

    default_reason = "activation-failed"

    def __init__(self, message: str, *, reason: str | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason = reason or self.default_reason


class InsufficientSpace(ActivationError):
    """Not enough free space (or inodes) to stage or activate; nothing was changed."""

    default_reason = "disk-full"


class PrerequisiteMismatch(ActivationError):
    """The device's files are not the prerequisite build's: the host drifted.

    Replacing a file that is not the one the supplement was built against
    could throw away a local fix or mix two versions, so nothing is touched.
    """

    default_reason = "wrong-prerequisite"


class TransactionPending(ActivationError):
    """An earlier activation or deactivation was interrupted; recover it first."""

    default_reason = "interrupted"


# -- layout --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateLayout:
    """Where the agent keeps things: the device ``root`` and its ``state`` directory.

    Both are absolute paths on the machine the agent runs on; tests use a
    temporary root. ``state`` need not be below ``root``, nor on the same
    file system (backups are then copies instead of hard links).
    """

    root: Path
    state: Path

    @classmethod
    def for_root(cls, root: Path, state: Path | None = None) -> StateLayout:
        return cls(root, state if state is not None else root / DEFAULT_STATE_DIR)

    @property
    def journal(self) -> Path:
        return self.state / "journal"

    @property
    def lock(self) -> Path:
        return self.state / "lock"

    @property
    def cryptexes(self) -> Path:
        return self.state / "preboot" / "cryptexes"

    def cryptex_dir(self, build: str) -> Path:
        return self.cryptexes / build

    def staged_manifest(self, build: str) -> Path:
        return self.cryptex_dir(build) / STAGED_MANIFEST

    def staged_files(self, build: str) -> Path:
        """The payloads as :func:`~bsi.cryptex.verify.extract_payloads` wrote them."""
        return self.cryptex_dir(build) / STAGED_FILES


# -- outcome and protocol ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an activator did, for logs and status reports.

    ``result`` is one of ``activated``, ``already-active``, ``deactivated``,
    ``not-active``, ``rolled-forward``, ``rolled-back``, ``nothing-to-do``.
    ``active`` is the supplemental build in force afterwards (``None``: the
    baseline). ``problems`` lists what the check after the work found out of
    place; an empty tuple means the files were found exactly as reported.
    """

    action: str
    result: str
    build: str | None
    active: str | None
    files: int = 0
    problems: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "action": self.action,
            "result": self.result,
            "build": self.build,
            "active": self.active,
            "files": self.files,
            "problems": list(self.problems),
        }


class Activator(Protocol):
    """One way of making staged content live, and of taking it back.

    Implementations must leave the device all-old or all-new whatever
    instant the agent dies at, with :meth:`recover` (run at every agent start)
    finishing or undoing what was interrupted.
    """

    name: str
    relaunches_itself: bool
    """True when activation is the relaunch and checks health itself (``container``):
    the runner then neither looks for host processes on old content nor runs the
    supplement's health check on the host (it asks the activator's ``check``)."""
    replaces_in_place: bool
    """True when :meth:`activate` of a later letter, while an earlier one is active,
    takes the earlier one's place itself (``container``: each container is recreated
    once, from the earlier letter's patched image straight onto the later one's), so
    the runner does not deactivate the earlier letter first, and a fall-back to the
    last good letter activates it in place of the failed one. Such an activator must
    leave every component on the baseline, the earlier or the later letter at any
    instant, and a refused activation must leave the earlier letter as it was."""

    def preflight(self, manifest: Manifest, staged_dir: Path) -> None:
        """Refuse with :class:`ActivationError`, touching nothing, if activating would fail."""

    def activate(self, manifest: Manifest, staged_dir: Path) -> Outcome:
        """Make ``manifest``'s staged payloads in ``staged_dir`` the live content."""

    def deactivate(self, manifest: Manifest, *, force: bool = False) -> Outcome:
        """Return the device exactly to its baseline: same bytes, modes and owners.

        ``force``: even over files something else changed since (drift).
        """

    def verify(self) -> tuple[str, ...]:
        """What is out of place compared with the state the activator reports."""

    def recover(self) -> Outcome:
        """Finish or undo whatever an interrupted agent left under way."""

    def active(self) -> str | None:
        """The supplemental build in force, ``None`` for the baseline."""

    def forget(self, build: str) -> None:
        """Stop treating ``build`` as active without restoring its baseline files.

        For a host whose OS moved to a new release: the release's files are
        the truth now, and putting the old baseline back would undo it.
        """


def make_activator(
    name: str,
    layout: StateLayout,
    *,
    container_engine: str | None = None,
    container_health_timeout: float = CONTAINER_HEALTH_TIMEOUT,
    container_stop_timeout: int = CONTAINER_STOP_TIMEOUT,
) -> Activator:
    """The activator ``agent.yaml`` names (``swap``, ``overlay``, ``container``) for ``layout``.

    ``container_engine`` is the Docker Engine API address the ``container``
    activator speaks to, with its two timeouts in seconds (``agent.yaml``).
    """
    # Imported here: these modules import this one. The container activator only
    # when chosen: it loads the docker SDK, a cost no other host should pay.
    from bsi.agent.activators.overlay import OverlayActivator
    from bsi.agent.activators.swap import SwapActivator

    if name == "container":
        from bsi.agent.activators.container import ContainerActivator

        if container_engine is None:
            raise BsiError("the container activator needs a container engine address")
        return ContainerActivator(
            layout,
            container_engine,
            health_timeout=container_health_timeout,
            stop_timeout=container_stop_timeout,
        )
    if name == "overlay":
        return OverlayActivator(layout)
    if name == "swap":
        return SwapActivator(layout)
    raise BsiError(
        f"unknown activator {name!r}", hint="use swap, overlay or container in agent.yaml"
    )


# -- staging -------------------------------------------------------------------


def stage_bundle(bundle: Path, layout: StateLayout) -> Manifest:
    """Verify ``bundle`` and stage it under ``preboot/cryptexes/<build>/``.

    Staging never touches the device's own files. A file that travels as a
    delta is rebuilt from the device's bytes of its base (:func:`base_bytes`)
    and staged only if its full SHA-256 is the manifest's; a device without
    those bytes refuses with :class:`PrerequisiteMismatch`, nothing staged.
    The staged manifest is the rebuilt one (:meth:`Manifest.whole`): after
    staging, nothing needs to know how the files travelled. Staging is
    refused before anything is written if the preboot area lacks the space,
    and if space runs out anyway (something else filled the disk) the
    partial stage is deleted and :class:`InsufficientSpace` names the cause.
    The cryptex is assembled in a hidden directory and renamed into place,
    so a ``<build>`` directory is always complete.
    """
    manifest = read_manifest(bundle)
    build = str(manifest.supplemental_build)
    final = layout.cryptex_dir(build)
    if final.exists():
        raise Conflict(
            f"supplement {build} is already staged at {str(final)!r}",
            hint="discard the staged copy first to stage it again",
        )
    layout.cryptexes.mkdir(parents=True, exist_ok=True)
    payload_blocks = sum(blocks(entry.size or 0) for entry in manifest.payloads)
    check_space(
        layout.cryptexes,
        bytes_needed=(payload_blocks + 2) * BLOCK + len(manifest.to_json()),
        inodes_needed=len(manifest.payloads) + len(manifest.files) + 2,
        doing=f"stage supplement {build}",
    )
    partial = layout.cryptexes / f".{build}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(mode=0o700)
        extract_payloads(bundle, partial / STAGED_FILES, base=base_bytes(layout))
        write_file_durably(partial / STAGED_MANIFEST, manifest.whole().to_json(), mode=0o444)
        fsync_directory(partial)
        os.replace(partial, final)
        fsync_directory(layout.cryptexes)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise os_failure(error, f"staging supplement {build}", changed=False) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest.whole()


OVERLAY_AREA = "overlay"
"""Under the state directory: ``overlay/<build>/`` holds what the ``overlay`` activator
keeps while ``build`` is mounted: its whiteout layer, and ``bases/<path>``, a copy of
each live file its mounts cover (the base a later letter's deltas start from)."""
KEPT_BASES = "bases"


def base_bytes(layout: StateLayout) -> BaseBytes:
    """The device's bytes of a file's prerequisite content, to rebuild a delta from.

    Looked up by content: the live file, else the copy an earlier active letter's
    activator keeps of it — the ``swap`` activator's original
    (``<state>/rollback/<build>/files/<path>``), or the ``overlay`` activator's
    copy of a file its mount covers (``<state>/overlay/<build>/bases/<path>``):
    a later letter's deltas are against the base, not that letter. Only bytes
    whose SHA-256 is the manifest's ``base_sha256`` are returned; none found
    raises :class:`PrerequisiteMismatch` (``wrong-prerequisite``).
    """

    def kept(area: str, path: Callable[[str], str]) -> list[Path]:
        directory = layout.state / area
        if not directory.is_dir():
            return []
        return sorted(layout.state / path(build.name) for build in directory.iterdir())

    def read(entry: FileEntry) -> bytes:
        backups = [
            *kept(ROLLBACK_DIR, lambda build: backup_path(build, entry.path)),
            *kept(OVERLAY_AREA, lambda build: f"{OVERLAY_AREA}/{build}/{KEPT_BASES}/{entry.path}"),
        ]
        seen: list[str] = []
        for candidate in (layout.root / entry.path, *backups):
            data = _read_if_small(candidate)
            if data is None:
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest == entry.base_sha256:
                return data
            seen.append(f"{str(candidate)!r} has sha256 {digest[:16]}…")
        found = "; ".join(seen) if seen else "no such file"
        raise PrerequisiteMismatch(
            f"/{entry.path} travels as a delta against sha256 {entry.base_sha256}, and this "
            f"device has no such file ({found}); nothing was staged",
            hint="the host's file differs from the prerequisite build's; restore it "
            "(reinstall the package) or publish the supplement with whole files",
        )

    return read


def _read_if_small(path: Path) -> bytes | None:
    """A regular file's bytes (not through a final symlink), or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_DELTA_BYTES:
            return None
        return file.read(MAX_DELTA_BYTES + 1)


LOCK_PATIENCE = 1.0
"""Seconds a held lock file is tried again before the lock is refused. ``flock`` belongs
to the open file, and a child process that another thread forks shares that until it
execs: a lock can outlive its holder's ``close`` by a moment."""


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: Callable[[int], BsiError]) -> Iterator[int]:
    """Hold an advisory ``flock`` on ``path`` (created ``0600``) and yield its descriptor;
    raises ``busy(fd)`` when another holds it for longer than :data:`LOCK_PATIENCE`.

    The kernel frees the lock when its holder dies, so a killed agent never leaves
    the device locked.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + LOCK_PATIENCE
        while not _locked(fd):
            if time.monotonic() >= deadline:
                raise busy(fd)
            time.sleep(LOCK_PATIENCE / 50)
        yield fd
    finally:
        os.close(fd)


def _locked(fd: int) -> bool:
    """Whether this takes the exclusive ``flock`` on ``fd`` now (never waits)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def state_lock(layout: StateLayout) -> Iterator[None]:
    """One activator transaction at a time per state directory, whichever activator:
    an :func:`exclusive_lock` on ``<state>/lock``."""
    layout.state.mkdir(parents=True, exist_ok=True, mode=0o700)

    def busy(_fd: int) -> BsiError:
        return TransactionPending(
            f"another bsi process holds {str(layout.lock)!r}",
            reason="busy",
            hint="wait for it to finish",
        )

    with exclusive_lock(layout.lock, busy):
        yield


def load_staged(layout: StateLayout, build: str) -> tuple[Manifest, Path]:
    """The staged manifest of ``build`` and the directory of its payloads."""
    path = layout.staged_manifest(build)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"supplement {build} is not staged (no {str(path)!r})",
            hint="stage the bundle first",
        ) from None
    return Manifest.from_json(data), layout.staged_files(build)


DISCARDED_SUFFIX = ".discarded"
"""A staged cryptex being removed is first renamed ``.<build>.discarded`` (hidden)."""


def discard_staged(layout: StateLayout, build: str) -> None:
    """Remove ``build`` from the preboot area, all at once as far as a reader can tell.

    The directory is renamed out of sight first, so a kill mid-removal never
    leaves a half-removed cryptex that still looks staged; what such a kill
    leaves is swept by :func:`sweep_discarded` (the agent's prune, every cycle).
    """
    final = layout.cryptex_dir(build)
    if not final.exists():
        return
    hidden = layout.cryptexes / f".{build}{DISCARDED_SUFFIX}"
    shutil.rmtree(hidden, ignore_errors=True)
    os.replace(final, hidden)
    fsync_directory(layout.cryptexes)
    shutil.rmtree(hidden, ignore_errors=True)


def sweep_discarded(layout: StateLayout) -> None:
    """Finish removals a kill interrupted (``.<build>.discarded`` directories)."""
    if not layout.cryptexes.is_dir():
        return
    for entry in layout.cryptexes.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(DISCARDED_SUFFIX):
            shutil.rmtree(entry, ignore_errors=True)


# -- helpers shared by activators ----------------------------------------------


def blocks(size: int) -> int:
    return -(-size // BLOCK)


def existing_ancestor(path: Path) -> Path:
    """``path`` or the nearest directory above it that exists (what ``statvfs`` can ask)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_space(path: Path, *, bytes_needed: int, inodes_needed: int, doing: str) -> None:
    """Refuse with :class:`InsufficientSpace` unless ``path``'s file system has room.

    Counts what an unprivileged user could use (``f_bavail``), so that the
    agent never eats the blocks the file system keeps for root's recovery.
    """
    where = existing_ancestor(path)
    free = shutil.disk_usage(where).free
    if bytes_needed > free:
        raise InsufficientSpace(
            f"disk full: cannot {doing}: it needs {human_size(bytes_needed)} on the file system "
            f"of {str(where)!r}, which has {human_size(free)} free; nothing was changed",
            hint="free some space there, then try again",
        )
    stats = os.statvfs(where)
    if stats.f_files and inodes_needed > stats.f_favail:
        raise InsufficientSpace(
            f"disk full: cannot {doing}: it needs {inodes_needed} inodes on the file system of "
            f"{str(where)!r}, which has {stats.f_favail} free; nothing was changed",
            hint="delete some files there, then try again",
        )


def os_failure(error: OSError, doing: str, *, changed: bool) -> ActivationError:
    """An :class:`OSError` as an :class:`ActivationError` saying what failed and why."""
    where = f" ({error.filename})" if error.filename else ""
    after = "nothing was changed" if not changed else "the device was left as reported"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(
            f"disk full while {doing}{where}: {error.strerror}; {after}",
            hint="free some space, then try again",
        )
    return ActivationError(
        f"{doing} failed{where}: {error.strerror or error}; {after}", reason="io-error"
    )


def write_file_durably(path: Path, data: bytes, *, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
