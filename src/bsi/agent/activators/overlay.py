"""The ``overlay`` activator: a staged cryptex mounted over the live directories.

This is the closest Linux gets to Apple's cryptexes: the supplement's files
are never copied into the system. Each directory the supplement touches gets
a read-only overlayfs mounted on top of it whose layers are, from the top,

1. the staged cryptex's copy of that directory (``preboot/cryptexes/<build>/files/<dir>``),
2. a *whiteout layer* for the files the supplement removes (character
   devices 0/0, overlayfs' way of hiding a lower file), and
3. the live directory itself — overlayfs resolves a lower layer before the
   mount covers it, so ``lowerdir=staged:live`` mounted *on* ``live`` shows
   the live directory with the cryptex laid over it.

Deactivation unmounts, and the baseline is back, byte for byte, because it
was never touched. Mounts are what the kernel keeps, so an agent that dies
mid-way leaves at worst some of the mounts; :meth:`OverlayActivator.recover`
reads the activator's record (written and fsynced *before* the first mount
and after the last) and finishes or undoes the work. After a reboot the
mounts are gone but the record still says "active": recovery mounts them
again, so a supplement survives a restart as it does on Apple devices.

Choices, and why:

- **Read-only, no upper directory.** A cryptex is sealed content: writes to
  a patched directory fail (``EROFS``) while the supplement is active, rather
  than landing in an upper layer that would silently vanish at rollback. A
  package upgrade of those directories has to deactivate the supplement
  first — it moves the host off the prerequisite build anyway.
- **One mount per topmost directory touched.** ``usr/lib/a.so`` and
  ``usr/lib/ssl/b.cnf`` need one mount on ``usr/lib``, whose merge covers the
  subdirectory; the rest of the tree stays unmounted. Never the root itself.
- **Directories take the live attributes.** overlayfs shows a merged
  directory with the *top* layer's mode and owner, so before mounting, each
  directory of the layers is given the live directory's, lest a ``0700``
  directory come out ``0755``. Staged files get the manifest's owner (the
  stager writes them as root).
- **Root only, and checked.** Mounting needs ``CAP_SYS_ADMIN`` in the initial
  namespace, whiteouts ``CAP_MKNOD``. :meth:`OverlayActivator.preflight`
  refuses early, with a reason for the status report, when not root, when
  the kernel lacks overlayfs, or when a path cannot be written in mount
  options or crosses a symbolic link.
- **Unmount falls back to detaching.** A process that maps a cryptex file
  keeps the mount busy; deactivation then detaches it (``MNT_DETACH``): new
  opens see the baseline at once, and the old process keeps its mapping
  until relaunch, exactly as after a file swap.

Processes running before activation still use the live (lower) files, and
after deactivation processes may still map cryptex files through a detached
mount (whose paths the kernel then shows relative to it). Either way, find
them with :func:`bsi.agent.relaunch.processes_using`, passing the ids that
:func:`bsi.agent.relaunch.file_ids` recorded of the live paths just before
activating or deactivating.

Room for ``sysext``
-------------------

A third activator would implement the same :class:`~bsi.agent.activators.Activator`
protocol: ``activate`` writes the staged files as a systemd-sysext image
(``/var/lib/extensions/bsi-<build>.raw`` or a directory tree with
``usr/lib/extension-release.d/extension-release.bsi-<build>`` whose ``ID`` and
``VERSION_ID`` match the base os-release, so systemd refuses it on any other
build), then runs ``systemd-sysext refresh``; ``deactivate`` removes it and
refreshes again; ``active`` asks ``systemd-sysext list``. sysext only covers
``/usr`` and ``/opt``, so it would refuse manifests with other paths in
``preflight``, as this one refuses what overlayfs cannot express. The
relaunch, health check and status code need no change.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bsi.agent.activators import (
    KEPT_BASES,
    OVERLAY_AREA,
    ActivationError,
    Outcome,
    PrerequisiteMismatch,
    StateLayout,
    TransactionPending,
    os_failure,
    state_lock,
)
from bsi.agent.journal import fsync_directory
from bsi.cryptex.manifest import Action, FileEntry, Manifest
from bsi.domain.prerequisite import document_fields, document_list, document_text
from bsi.durable import write_atomic
from bsi.errors import InvalidInput
from bsi.strict import read_json

RECORD_NAME = "overlay.json"
"""The activator's record, in the state directory: what is mounted, and how far it got."""

WHITEOUT_AREA = OVERLAY_AREA
"""Per-build whiteout layers live in ``<state>/overlay/<build>/whiteouts``, beside the
copies of the live files the mounts cover (``bases``)."""

MS_RDONLY = 1
MNT_DETACH = 2

_UNSAFE_IN_OPTIONS = (",", ":", "\\", "\n")


class OverlayUnavailable(ActivationError):
    """This host cannot mount overlays: not root, no overlayfs, or the kernel refused."""

    default_reason = "overlay-unavailable"


class UnsupportedManifest(ActivationError):
    """The manifest asks for something an overlay cannot show; nothing was changed."""

    default_reason = "unsupported-manifest"


# -- planning (pure) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MountSpec:
    """One overlay: mounted on ``target``, layers from the top, the live directory last."""

    target: str
    layers: tuple[str, ...]

    @property
    def options(self) -> str:
        return "lowerdir=" + ":".join(self.layers)


def parent_dir(path: str) -> str:
    """``usr/lib`` for ``usr/lib/a.so``; ``""`` (the root) for a top-level file."""
    return path.rpartition("/")[0]


def covered(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or below it (``""`` covers everything)."""
    return not directory or path == directory or path.startswith(directory + "/")


def mount_dirs(paths: Iterable[str], is_live_dir: Callable[[str], bool]) -> tuple[str, ...]:
    """The directories to mount over, relative to the root: the fewest that cover ``paths``.

    Each file's directory counts, or its nearest existing ancestor when the
    supplement adds a directory; a directory below another one chosen is
    dropped, because the upper overlay merges its subdirectories too. The
    root itself is refused: an overlay over ``/`` would replace the whole
    view of the system.
    """
    chosen: set[str] = set()
    for path in paths:
        directory = parent_dir(path)
        while directory and not is_live_dir(directory):
            directory = parent_dir(directory)
        if not directory:
            raise UnsupportedManifest(
                f"{path!r} has no directory below the root to mount over",
                hint="the overlay activator mounts over directories such as 'usr/lib', "
                "never over '/'; use the swap activator for top-level files",
            )
        chosen.add(directory)
    return tuple(sorted(d for d in chosen if not any(o != d and covered(d, o) for o in chosen)))


def plan_mounts(
    manifest: Manifest,
    *,
    root: Path,
    staged_dir: Path,
    whiteout_dir: Path,
    is_live_dir: Callable[[str], bool],
) -> tuple[MountSpec, ...]:
    """The overlays that show ``manifest`` active: which layers on which directories.

    ``root``, ``staged_dir`` and ``whiteout_dir`` must already be resolved
    (no symbolic links), because the kernel reports mounts by real path and
    recovery compares against it. Every layer path is checked to be
    writable in overlayfs' option syntax.
    """
    files = manifest.files
    specs = []
    for directory in mount_dirs((f.path for f in files), is_live_dir):
        layers = []
        if any(f.has_payload and covered(f.path, directory) for f in files):
            layers.append(str(staged_dir / directory))
        if any(f.action is Action.REMOVE and covered(f.path, directory) for f in files):
            layers.append(str(whiteout_dir / directory))
        layers.append(str(root / directory))
        for layer in layers:
            bad = [c for c in _UNSAFE_IN_OPTIONS if c in layer]
            if bad:
                raise UnsupportedManifest(
                    f"path {layer!r} contains {bad[0]!r}, which overlayfs mount options "
                    "cannot carry",
                    hint="use a state directory and root without ',', ':' or '\\\\'",
                )
        specs.append(MountSpec(str(root / directory), tuple(layers)))
    return tuple(specs)


# -- mountinfo (pure) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``: where, what type, and the lower layers."""

    mount_point: str
    fstype: str
    lowerdirs: tuple[str, ...]


def _unescape(text: str) -> str:
    """Undo the kernel's octal escapes (``\\040`` for a space) in mountinfo fields."""
    out, index = [], 0
    while index < len(text):
        chunk = text[index : index + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            index += 4
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts in ``text``, in mount order (a later entry on one point is on top).

    The overlay's layers are read from its super options, written either
    ``lowerdir=a:b`` or, on newer kernels, one ``lowerdir+=a`` per layer.
    """
    entries = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split(" ")
        rest = tail.split(" ")
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        lowerdirs: list[str] = []
        for option in rest[2].split(","):
            key, _, value = option.partition("=")
            if key == "lowerdir":
                lowerdirs.extend(_unescape(part) for part in value.split(":"))
            elif key == "lowerdir+":
                lowerdirs.append(_unescape(value))
        entries.append(MountEntry(_unescape(fields[4]), rest[0], tuple(lowerdirs)))
    return entries


def mounted(spec: MountSpec, entries: Iterable[MountEntry]) -> bool:
    """Whether ``spec`` is the overlay on top at its target: mounted by us, still in force."""
    top = None
    for entry in entries:
        if entry.mount_point == spec.target:
            top = entry
    return top is not None and top.fstype == "overlay" and top.lowerdirs == spec.layers


# -- the record ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """What the activator has (or is about to have) mounted.

    ``phase`` is ``mounting`` (written before the first mount: an
    interrupted activation, to undo), ``active`` (written after the last)
    or ``unmounting`` (an interrupted deactivation, to finish).
    """

    build: str
    phase: str
    mounts: tuple[MountSpec, ...]
    whiteouts: str

    def to_json(self) -> bytes:
        document = {
            "build": self.build,
            "phase": self.phase,
            "whiteouts": self.whiteouts,
            "mounts": [{"target": m.target, "layers": list(m.layers)} for m in self.mounts],
        }
        return json.dumps(document, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Record:
        """The record in ``data`` (read by :mod:`bsi.strict`'s rules), or
        :class:`TransactionPending` naming ``where`` and the field at fault: a record
        the activator cannot read means it cannot tell what is mounted."""
        try:
            document = read_json(data, source="")
            fields = _record_fields(document, "record", ("build", "phase", "whiteouts", "mounts"))
            mounts = document_list(fields["mounts"], "mounts")
            record = cls(
                build=document_text(fields["build"], "build"),
                phase=document_text(fields["phase"], "phase"),
                whiteouts=document_text(fields["whiteouts"], "whiteouts"),
                mounts=tuple(
                    _mount_spec(mount, f"mounts[{index}]") for index, mount in enumerate(mounts)
                ),
            )
        except InvalidInput as error:
            raise TransactionPending(
                f"the overlay record {where!r} is unreadable: {error.message}",
                hint="check /proc/self/mountinfo for overlays over the supplement's "
                "directories, unmount them, then delete the record",
            ) from None
        if record.phase not in ("mounting", "active", "unmounting"):
            raise TransactionPending(f"the overlay record {where!r} has phase {record.phase!r}")
        return record


def _record_fields(value: object, where: str, names: tuple[str, ...]) -> dict[str, object]:
    """The object ``value`` with exactly ``names``: the record is bsi's own, so none is optional."""
    fields = document_fields(value, where, names)
    missing = [name for name in names if name not in fields]
    if missing:
        raise InvalidInput(f"{where}: required field {missing[0]!r} is missing")
    return fields


def _mount_spec(value: object, where: str) -> MountSpec:
    fields = _record_fields(value, where, ("target", "layers"))
    layers = document_list(fields["layers"], f"{where}.layers")
    return MountSpec(
        document_text(fields["target"], f"{where}.target"),
        tuple(document_text(layer, f"{where}.layers[{i}]") for i, layer in enumerate(layers)),
    )


# -- system calls ----------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount_overlay(spec: MountSpec) -> None:
    """mount(2) the read-only overlay ``spec``; :class:`OSError` with the kernel's errno."""
    result = _libc().mount(
        b"overlay",
        os.fsencode(spec.target),
        b"overlay",
        ctypes.c_ulong(MS_RDONLY),
        ctypes.c_char_p(os.fsencode(spec.options)),
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), spec.target)


def unmount(target: str) -> bool:
    """umount2(2) ``target``; detach it lazily if busy. ``True`` if it was detached."""
    libc = _libc()
    if libc.umount2(os.fsencode(target), 0) == 0:
        return False
    code = ctypes.get_errno()
    if code == errno.EBUSY:
        if libc.umount2(os.fsencode(target), MNT_DETACH) == 0:
            return True
        code = ctypes.get_errno()
    raise OSError(code, os.strerror(code), target)


def overlay_supported() -> bool:
    """Whether this kernel knows overlayfs (it may still refuse a mount, e.g. in a container)."""
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return False
    return any(line.split()[-1:] == ["overlay"] for line in text.splitlines())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- the activator ---------------------------------------------------------


class OverlayActivator:
    """Activate supplements by mounting their staged cryptex over the live directories."""

    name = "overlay"
    relaunches_itself = False
    replaces_in_place = False

    def __init__(
        self, layout: StateLayout, *, mountinfo: Path = Path("/proc/self/mountinfo")
    ) -> None:
        self.layout = layout
        self.mountinfo = mountinfo

    # -- paths and state

    @property
    def record_path(self) -> Path:
        return self.layout.state / RECORD_NAME

    def _root(self) -> Path:
        return Path(os.path.realpath(self.layout.root))

    def _whiteout_dir(self, build: str) -> Path:
        state = Path(os.path.realpath(self.layout.state))
        return state / WHITEOUT_AREA / build / "whiteouts"

    def _read_record(self) -> Record | None:
        try:
            data = self.record_path.read_bytes()
        except FileNotFoundError:
            return None
        return Record.from_json(data, where=str(self.record_path))

    def _write_record(self, record: Record) -> None:
        write_atomic(self.record_path, record.to_json(), mode=0o600)

    def _drop_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()
        fsync_directory(self.layout.state)

    def _mounts(self) -> list[MountEntry]:
        try:
            return parse_mountinfo(self.mountinfo.read_text())
        except OSError:
            return []

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """One activation at a time, shared with the other activators' lock file."""
        return state_lock(self.layout)

    # -- the protocol

    def active(self) -> str | None:
        """The build whose overlays are all mounted now, ``None`` for the baseline."""
        record = self._read_record()
        if record is None or record.phase != "active":
            return None
        entries = self._mounts()
        return record.build if all(mounted(m, entries) for m in record.mounts) else None

    def preflight(self, manifest: Manifest, staged_dir: Path) -> None:
        """Refuse before anything changes: privilege, kernel, paths, prerequisite files."""
        self._plan(manifest, staged_dir)

    def _plan(self, manifest: Manifest, staged_dir: Path) -> tuple[MountSpec, ...]:
        if os.geteuid() != 0:
            raise OverlayUnavailable(
                "the overlay activator needs root (mounting and whiteouts are privileged)",
                reason="not-root",
                hint="run the agent as root, or configure the swap activator",
            )
        if not overlay_supported():
            raise OverlayUnavailable(
                "this kernel has no overlayfs (not in /proc/filesystems)",
                hint="load the 'overlay' module, or configure the swap activator",
            )
        root = self._root()
        for entry in manifest.files:
            self._check_live(root, entry)
            if entry.has_payload and not (staged_dir / entry.path).is_file():
                raise ActivationError(
                    f"staged file {str(staged_dir / entry.path)!r} is missing; nothing was changed",
                    reason="staging-incomplete",
                    hint="discard the staged supplement and stage it again",
                )

        def is_live_dir(directory: str) -> bool:
            path = root / directory
            if not os.path.lexists(path):
                return False
            real = os.path.realpath(path)
            if real != str(path):
                raise UnsupportedManifest(
                    f"{str(path)!r} leads through a symbolic link to {real!r}; an overlay "
                    "can only be mounted over a real directory",
                    hint="list the supplement's files under their real directories",
                )
            return path.is_dir()

        return plan_mounts(
            manifest,
            root=root,
            staged_dir=Path(os.path.realpath(staged_dir)),
            whiteout_dir=self._whiteout_dir(str(manifest.supplemental_build)),
            is_live_dir=is_live_dir,
        )

    @staticmethod
    def _check_live(root: Path, entry: FileEntry) -> None:
        """The live file must be the prerequisite build's, or absent for an addition."""
        live = root / entry.path
        if entry.action is Action.ADD:
            if os.path.lexists(live):
                raise PrerequisiteMismatch(
                    f"{str(live)!r} exists, but the supplement adds it; nothing was changed"
                )
            return
        try:
            digest = _sha256(live) if live.is_file() and not live.is_symlink() else None
        except OSError as error:
            raise os_failure(error, f"checking {str(live)!r}", changed=False) from None
        if digest != entry.base_sha256:
            found = "is missing or not a regular file" if digest is None else f"has {digest}"
            raise PrerequisiteMismatch(
                f"{str(live)!r} {found}, not the prerequisite build's {entry.base_sha256}; "
                "nothing was changed"
            )

    def activate(self, manifest: Manifest, staged_dir: Path) -> Outcome:
        """Mount ``manifest``'s overlays; all of them, or none if one fails."""
        build = str(manifest.supplemental_build)
        with self._locked():
            record = self._read_record()
            if record is not None:
                if record.build == build and record.phase == "active":
                    if self.active() == build:
                        return Outcome("activate", "already-active", build, build, 0)
                    raise TransactionPending(
                        f"supplement {build}'s overlays are not all mounted",
                        hint="run recovery first",
                    )
                if record.phase != "active":
                    raise TransactionPending(
                        f"an overlay {record.phase} of {record.build} was interrupted",
                        hint="run recovery first",
                    )
                raise ActivationError(
                    f"supplement {record.build} is active; deactivate it before activating {build}",
                    reason="another-active",
                )
            specs = self._plan(manifest, staged_dir)
            whiteouts = self._whiteout_dir(build)
            try:
                self._prepare_layers(manifest, Path(os.path.realpath(staged_dir)), whiteouts)
                self._keep_bases(manifest, whiteouts.parent / KEPT_BASES)
            except OSError as error:
                shutil.rmtree(whiteouts.parent, ignore_errors=True)
                raise os_failure(error, f"preparing the layers of {build}", changed=False) from None
            record = Record(build, "mounting", specs, str(whiteouts))
            self._write_record(record)
            done: list[MountSpec] = []
            try:
                for spec in specs:
                    mount_overlay(spec)
                    done.append(spec)
            except OSError as error:
                for spec in reversed(done):
                    with contextlib.suppress(OSError):
                        unmount(spec.target)
                self._drop_record()
                shutil.rmtree(whiteouts.parent, ignore_errors=True)
                if error.errno in (errno.EPERM, errno.ENODEV, errno.EINVAL):
                    raise OverlayUnavailable(
                        f"the kernel refused to mount an overlay on {error.filename!r}: "
                        f"{error.strerror}; nothing was changed",
                        hint="overlay mounts need root in the host's namespace and a file "
                        "system overlayfs accepts; configure the swap activator otherwise",
                    ) from None
                raise os_failure(error, f"mounting {build}", changed=False) from None
            self._write_record(Record(build, "active", specs, str(whiteouts)))
        return Outcome(
            "activate", "activated", build, build, len(manifest.files), self._check(manifest)
        )

    def verify(self) -> tuple[str, ...]:
        """Nothing can drift under a mounted read-only overlay: the view is the cryptex's."""
        return ()

    def deactivate(self, manifest: Manifest, *, force: bool = False) -> Outcome:
        """Unmount ``manifest``'s overlays: the live directories are the baseline again.

        ``force`` changes nothing: unmounting never overwrites a file.
        """
        build = str(manifest.supplemental_build)
        with self._locked():
            record = self._read_record()
            if record is None or record.build != build:
                active = record.build if record and record.phase == "active" else None
                return Outcome("deactivate", "not-active", build, active, 0)
            record = Record(build, "unmounting", record.mounts, record.whiteouts)
            self._write_record(record)
            self._unmount_all(record)
        return Outcome(
            "deactivate",
            "deactivated",
            build,
            None,
            len(manifest.files),
            self._check(manifest, active=False),
        )

    def forget(self, build: str) -> None:
        """Unmount ``build``'s overlays: the OS's own (new) files show through again.

        Unlike swap, nothing is restored either way: the lower directories
        always held the OS's files, so forgetting is the same as unmounting.
        """
        with self._locked():
            record = self._read_record()
            if record is not None and record.build == build:
                self._unmount_all(record)

    def recover(self) -> Outcome:
        """Undo an interrupted activation, finish a deactivation, remount after a reboot."""
        with self._locked():
            record = self._read_record()
            if record is None:
                return Outcome("recover", "nothing-to-do", None, None)
            if record.phase == "mounting":
                self._unmount_all(record)
                return Outcome("recover", "rolled-back", record.build, None)
            if record.phase == "unmounting":
                self._unmount_all(record)
                return Outcome("recover", "rolled-forward", record.build, None)
            entries = self._mounts()
            missing = [m for m in record.mounts if not mounted(m, entries)]
            if not missing:
                return Outcome("recover", "nothing-to-do", record.build, record.build)
            try:
                for spec in missing:
                    mount_overlay(spec)
            except OSError as error:
                self._unmount_all(record)
                return Outcome(
                    "recover",
                    "rolled-back",
                    record.build,
                    None,
                    problems=(
                        f"could not mount {record.build} again on {error.filename!r}: "
                        f"{error.strerror}; the device is back on its baseline",
                    ),
                )
            return Outcome("recover", "rolled-forward", record.build, record.build)

    # -- the work

    def _unmount_all(self, record: Record) -> None:
        """Unmount every overlay of ``record`` that is still ours, then forget it."""
        entries = self._mounts()
        for spec in reversed(record.mounts):
            if mounted(spec, entries):
                try:
                    unmount(spec.target)
                except OSError as error:
                    raise os_failure(
                        error, f"unmounting the overlay on {spec.target!r}", changed=True
                    ) from None
        self._drop_record()
        if record.whiteouts:
            shutil.rmtree(Path(record.whiteouts).parent, ignore_errors=True)

    def _keep_bases(self, manifest: Manifest, bases: Path) -> None:
        """Copy each live file ``manifest`` changes to ``bases``: once mounted over, the
        live path shows the letter, and a later letter's deltas start from these bytes
        (:func:`~bsi.agent.activators.base_bytes` looks here). Removed with the
        whiteouts when the letter is unmounted."""
        root = self._root()
        shutil.rmtree(bases, ignore_errors=True)
        for entry in manifest.files:
            live = root / entry.path
            if entry.action is Action.CHANGE and live.is_file() and not live.is_symlink():
                kept = bases / entry.path
                kept.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(live, kept, follow_symlinks=False)

    def _prepare_layers(self, manifest: Manifest, staged: Path, whiteouts: Path) -> None:
        """Whiteouts for removals; manifest owners on staged files; live attributes on dirs."""
        root = self._root()
        shutil.rmtree(whiteouts, ignore_errors=True)
        for entry in manifest.files:
            if entry.action is Action.REMOVE:
                target = whiteouts / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            else:
                path = staged / entry.path
                status = path.lstat()
                if (status.st_uid, status.st_gid) != (entry.uid, entry.gid):
                    os.lchown(path, entry.uid or 0, entry.gid or 0)
                    os.chmod(path, entry.mode or 0)  # chown cleared set-id bits
        for layer in (staged, whiteouts):
            if not layer.is_dir():
                continue
            for directory, _, _ in os.walk(layer):
                relative = Path(directory).relative_to(layer)
                live = root / relative
                if relative.parts and live.is_dir() and not live.is_symlink():
                    status = live.stat()
                    os.chown(directory, status.st_uid, status.st_gid)
                    os.chmod(directory, stat.S_IMODE(status.st_mode))

    def _check(self, manifest: Manifest, *, active: bool = True) -> tuple[str, ...]:
        """What the live view shows out of place now; empty when exactly as intended."""
        root = self._root()
        problems = []
        for entry in manifest.files:
            live = root / entry.path
            want = entry.sha256 if active else entry.base_sha256
            try:
                exists = os.path.lexists(live)
                digest = _sha256(live) if exists and live.is_file() else None
            except OSError as error:
                problems.append(f"{str(live)!r} cannot be read: {error.strerror}")
                continue
            if want is None:
                if exists:
                    problems.append(f"{str(live)!r} exists but should not")
            elif digest != want:
                problems.append(f"{str(live)!r} has {digest or 'no content'}, not {want}")
            elif active and entry.mode is not None:
                mode = stat.S_IMODE(live.stat().st_mode)
                if mode != entry.mode:
                    problems.append(f"{str(live)!r} has mode {mode:04o}, not {entry.mode:04o}")
        return tuple(problems)
