"""Building a cryptex: what changed between two trees, sealed into one bundle.

A bundle is a zstd frame holding a tar: ``manifest.json`` first, then one
``files/<path>`` member per added or changed file, in path order. Everything
that could vary between two builds of the same supplement is pinned — tar
headers carry mtime 0, owner 0:0, no owner names and a fixed mode (the real
mode and owner live in the manifest), compression is zstd level 19 on one
thread with the content size and checksum always written — so the same
inputs give the same bytes, and a published bundle can be rebuilt and
compared by anyone holding the trees (with the same zstd library version:
another libzstd may choose other matches at level 19).

A changed file travels as a binary delta against its base bytes when that
is smaller than the file compressed alone (:mod:`bsi.cryptex.delta`; not
for a container image's files, which the device has in the image, not on
its disk). Whole files are streamed, never held whole in memory; a delta's
two sides are read into memory (each at most
:data:`~bsi.cryptex.manifest.MAX_DELTA_BYTES`). Files are hashed twice: when
the trees are compared, and again as they are packed or diffed, so a file
that changes between the two is caught instead of sealed with a stale hash. The bundle is
written to a temporary file beside its destination and renamed into place,
so a reader never sees half a bundle.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import zstandard

from bsi import durable
from bsi.cryptex.delta import make_delta
from bsi.cryptex.errors import InvalidSupplement, publisher_input
from bsi.cryptex.manifest import (
    MANIFEST_MEMBER,
    MAX_DELTA_BYTES,
    MAX_MANIFEST_BYTES,
    TAR_BLOCK,
    Action,
    Component,
    Delta,
    FileEntry,
    Manifest,
    cumulative_check,
)
from bsi.cryptex.spec import SupplementSpec, normalise_path
from bsi.cryptex.verify import SETID_BITS, mode_problem

Progress = Callable[[str, int, int], None]
"""``progress(phase, done_bytes, total_bytes)``; phases ``"scan"``, ``"delta"`` and ``"pack"``."""

MEMBER_MODE = 0o644
ZSTD_LEVEL = 19
WHOLE_ESTIMATE_LEVEL = 3
"""zstd level at which a file is compressed alone to judge whether its delta is smaller:
fast, and within a few per cent of level 19 on the size the choice turns on."""
_CHUNK = 1 << 20
_HASH_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class Change:
    """One file that differs between the trees; ``source`` holds its new content,
    ``base`` (a changed file) the content it replaces, which a delta is made against."""

    entry: FileEntry
    source: Path | None = None
    base: Path | None = None


@dataclass(frozen=True, slots=True)
class BuildResult:
    manifest: Manifest
    path: Path
    sha256: str
    size: int
    dropped: tuple[str, ...] = ()
    """Paths the previous letter patched that this one gives back (only when allowed)."""


# -- finding changes -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    """A non-directory in a tree, as ``lstat`` saw it."""

    path: Path
    stat: os.stat_result

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.stat.st_mode)

    @property
    def mode(self) -> int:
        return stat.S_IMODE(self.stat.st_mode)

    def kind(self) -> str:
        mode = self.stat.st_mode
        for test, name in (
            (stat.S_ISREG, "a regular file"),
            (stat.S_ISLNK, "a symlink"),
            (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"),
            (stat.S_ISFIFO, "a fifo"),
            (stat.S_ISSOCK, "a socket"),
        ):
            if test(mode):
                return name
        return "a special file"

    def same_special(self, other: _Found) -> bool:
        """Both the same link or node, so the supplement need not carry it."""
        if stat.S_IFMT(self.stat.st_mode) != stat.S_IFMT(other.stat.st_mode):
            return False
        if stat.S_ISLNK(self.stat.st_mode):
            return os.readlink(self.path) == os.readlink(other.path)
        return self.stat.st_rdev == other.stat.st_rdev

    def same_inode(self, other: _Found) -> bool:
        """Hard links of one file (a tree copied with ``cp -al``): unchanged, no need to read."""
        return (self.stat.st_dev, self.stat.st_ino) == (other.stat.st_dev, other.stat.st_ino)


_Pair = tuple[str, _Found | None, _Found | None]


def diff_trees(base: Path, patched: Path, *, progress: Progress | None = None) -> list[Change]:
    """The files added, changed (content or mode) and removed from ``base`` to ``patched``.

    Supplements carry regular files only. A symlink, device, fifo or socket
    that is the same in both trees is left alone, as are directories; one
    that was added, removed or altered is refused, since the device could not
    be given it. Owner differences are ignored: trees are often unpacked by a
    build user, and the spec says who owns files on devices.
    """
    old_files, new_files = _scan(base, "base"), _scan(patched, "patched")
    pairs: list[_Pair] = []
    refused: list[str] = []
    for path in sorted(old_files.keys() | new_files.keys()):
        old, new = old_files.get(path), new_files.get(path)
        if old is not None and new is not None and old.same_inode(new):
            continue
        if any(f is not None and not f.regular for f in (old, new)):
            if old is None or new is None or not old.same_special(new):
                refused.append(_special_problem(path, old, new))
            continue
        pairs.append((path, old, new))
    _refuse_all(refused, "the trees differ in files a supplement cannot carry")
    return _changes(pairs, base, patched, listed=False, progress=progress)


def changes_from_list(
    base: Path, patched: Path, lines: Iterable[str], *, progress: Progress | None = None
) -> list[Change]:
    """The changes named by a file list, without scanning either tree.

    One path per line, relative to the device root (a leading ``/`` is
    allowed): new content comes from ``patched``, the original from ``base``,
    which may be a live root (``/``) when the patched tree holds only the new
    files. A line ``-path`` removes the file. Blank lines and ``#`` comments
    are skipped; a path that really starts with ``-`` or ``#`` is written
    ``./-name``.
    """
    wanted: dict[str, bool] = {}
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        remove = text.startswith("-")
        with publisher_input("file list"):
            path = normalise_path(text[1:] if remove else text, where=f"line {number}")
        if not path:
            raise InvalidSupplement(f"file list: line {number}: {text!r} names the root")
        if path in wanted:
            raise InvalidSupplement(f"file list: line {number}: {path!r} is listed twice")
        wanted[path] = remove

    pairs: list[_Pair] = []
    refused: list[str] = []
    for path, remove in wanted.items():
        old, new = _lookup(base, path, "base"), _lookup(patched, path, "patched")
        if remove and old is None:
            refused.append(f"{path!r} is listed for removal but is not in the base tree")
        elif remove and new is not None:
            refused.append(f"{path!r} is listed for removal but is still in the patched tree")
        elif not remove and new is None:
            refused.append(f"{path!r} is listed but is not in the patched tree")
        elif any(f is not None and not f.regular for f in (old, new)):
            refused.append(_special_problem(path, old, new))
        else:
            pairs.append((path, old, None if remove else new))
    _refuse_all(refused, "the file list names files a supplement cannot carry")
    return _changes(pairs, base, patched, listed=True, progress=progress)


def _scan(root: Path, label: str) -> dict[str, _Found]:
    """Every non-directory under ``root`` by relative path, links not followed."""
    if not root.is_dir():
        raise InvalidSupplement(f"{label} tree {str(root)!r} is not a directory")
    found: dict[str, _Found] = {}
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    relative = prefix + entry.name
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        pending.append((Path(entry.path), relative + "/"))
                    else:
                        found[relative] = _Found(Path(entry.path), info)
        except OSError as error:
            raise InvalidSupplement(
                f"{label} tree: cannot read {str(directory)!r}: {error.strerror}"
            ) from None
    return found


def _lookup(root: Path, path: str, label: str) -> _Found | None:
    """``root/path`` as ``lstat`` sees it, refusing a symlinked directory on the way.

    Through a symlinked directory (``/lib`` -> ``usr/lib``) one file would
    have two manifest paths, and two letters could patch it under either.
    """
    current = root
    parts = path.split("/")
    for depth, part in enumerate(parts, start=1):
        current = current / part
        try:
            info = current.lstat()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise InvalidSupplement(
                f"{label} tree: cannot read {str(current)!r}: {error.strerror}"
            ) from None
        if depth < len(parts) and not stat.S_ISDIR(info.st_mode):
            if stat.S_ISLNK(info.st_mode):
                real = "/".join(parts[:depth])
                raise InvalidSupplement(
                    f"{label} tree: {real!r} in {path!r} is a symlink",
                    hint="list the path it points to instead",
                )
            return None
    return _Found(current, info)


def _special_problem(path: str, old: _Found | None, new: _Found | None) -> str:
    was = old.kind() if old else "absent"
    now = new.kind() if new else "absent"
    return f"{path!r} is {was} in the base tree and {now} in the patched tree"


def _refuse_all(problems: Sequence[str], summary: str) -> None:
    if problems:
        shown = "; ".join(problems[:10])
        more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InvalidSupplement(
            f"{summary}: {shown}{more}",
            hint="supplements carry regular files only; leave links and devices unchanged",
        )


def _changes(
    pairs: list[_Pair], base: Path, patched: Path, *, listed: bool, progress: Progress | None
) -> list[Change]:
    """Hash both sides of every pair and keep the ones that differ in content or mode."""
    hashed = _hash_all([f for _, old, new in pairs for f in (old, new) if f is not None], progress)
    changes: list[Change] = []
    unchanged: list[str] = []
    with publisher_input(f"trees {str(base)!r} and {str(patched)!r}"):
        for path, old, new in pairs:
            base_sha256 = hashed[old.path][0] if old else None
            if new is None:
                changes.append(Change(FileEntry(path, Action.REMOVE, base_sha256=base_sha256)))
                continue
            sha256, size = hashed[new.path]
            if old and base_sha256 == sha256 and old.mode == new.mode:
                unchanged.append(path)
                continue
            entry = FileEntry(
                path,
                Action.CHANGE if old else Action.ADD,
                sha256=sha256,
                base_sha256=base_sha256,
                size=size,
                mode=new.mode,
                uid=new.stat.st_uid,
                gid=new.stat.st_gid,
            )
            changes.append(Change(entry, new.path, old.path if old else None))
    if listed and unchanged:
        raise InvalidSupplement(
            f"the file list names {len(unchanged)} file(s) identical in both trees: "
            + ", ".join(repr(p) for p in unchanged[:10]),
            hint="leave them out of the list",
        )
    return changes


def _hash_all(found: list[_Found], progress: Progress | None) -> dict[Path, tuple[str, int]]:
    """SHA-256 and length of every file, several at once: hashlib lets go of the GIL."""
    total = sum(f.stat.st_size for f in found)
    done = 0
    hashed: dict[Path, tuple[str, int]] = {}
    with ThreadPoolExecutor(max_workers=_HASH_WORKERS) as pool:
        for item, result in zip(found, pool.map(lambda f: _hash_file(f.path), found), strict=True):
            hashed[item.path] = result
            done += item.stat.st_size
            if progress:
                progress("scan", done, total)
    return hashed


def _hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 and length of what was read, which may differ from an earlier ``stat``."""
    with _open_regular(path) as file:
        digest = hashlib.file_digest(file, "sha256")
        return digest.hexdigest(), file.tell()


def _open_regular(path: Path) -> io.FileIO:
    """``path`` opened for reading, refusing one that became a link or special file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as error:
        raise InvalidSupplement(f"cannot read {str(path)!r}: {error.strerror}") from None
    file = io.FileIO(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        file.close()
        raise InvalidSupplement(f"{str(path)!r} is no longer a regular file")
    return file


# -- sealing ---------------------------------------------------------------


def manifest_for(spec: SupplementSpec, changes: Sequence[Change]) -> Manifest:
    """The manifest ``build_bundle`` would write: changes grouped into the spec's components.

    Components with no changed file are left out — nothing of theirs needs
    relaunching — but a changed file no component claims is refused.
    """
    if not changes:
        raise InvalidSupplement(
            "nothing changed: the supplement would be empty",
            hint="check that the patched tree (or the file list) holds the new files",
        )
    entries: dict[str, list[FileEntry]] = {}
    unclaimed: list[str] = []
    for change in changes:
        entry = change.entry
        component = spec.component_for(entry.path)
        if component is None:
            unclaimed.append(entry.path)
            continue
        owner = spec.owner_for(component)
        if owner and entry.has_payload:
            entry = replace(entry, uid=owner.uid, gid=owner.gid)
        entries.setdefault(component.name, []).append(entry)
    if unclaimed:
        raise InvalidSupplement(
            f"{len(unclaimed)} changed file(s) belong to no component: "
            + ", ".join(repr("/" + p) for p in unclaimed[:10])
            + (f" and {len(unclaimed) - 10} more" if len(unclaimed) > 10 else ""),
            hint="add a path prefix for them under 'components' in the spec",
        )
    # The spec may declare files this letter leaves alone; the manifest names carried ones.
    carried = {e.path for found in entries.values() for e in found if e.has_payload}
    with publisher_input("spec"):
        return Manifest(
            platform=spec.platform,
            product_version=spec.product_version,
            extra_version=spec.extra_version,
            prerequisite=spec.prerequisite,
            fixed_in=spec.fixed_in,
            supplemental_build=spec.supplemental_build,
            components=tuple(
                Component(c.name, tuple(entries[c.name]), c.relaunch)
                for c in spec.components
                if c.name in entries
            ),
            health_check=spec.health_check,
            cves=spec.cves,
            setuid=tuple(path for path in spec.setuid if path in carried),
        )


def build_bundle(
    spec: SupplementSpec,
    changes: Sequence[Change],
    out_path: Path,
    *,
    previous: Manifest | None = None,
    allow_dropping: bool = False,
    deltas: bool = True,
    progress: Progress | None = None,
) -> BuildResult:
    """Seal ``changes`` into a bundle at ``out_path``, replacing it only when complete.

    ``previous`` is the manifest of the letter this one supersedes: the new
    letter is refused (before anything is written) unless it is cumulative,
    see :func:`~bsi.cryptex.manifest.cumulative_check`. With ``deltas`` (the
    default) a changed file travels as a delta against its base when that
    is smaller; every letter's deltas are against the prerequisite build's
    bytes (the ``base`` of each change), never against an earlier letter, so
    any letter applies to the base.
    """
    missing = [c.entry.path for c in changes if c.entry.has_payload and c.source is None]
    if missing:
        raise InvalidSupplement(f"no source file for {missing[0]!r}, whose content is new")
    for change in changes:
        if change.entry.mode is not None:
            _check_mode(change.entry.path, change.entry.mode, spec)
    manifest = manifest_for(spec, changes)
    dropped = (
        cumulative_check(previous, manifest, allow_dropping=allow_dropping) if previous else ()
    )
    sources = {c.entry.path: c.source for c in changes if c.source is not None}
    carried: dict[str, bytes] = {}
    if deltas and manifest.prerequisite.image is None:
        bases = {c.entry.path: c.base for c in changes if c.base is not None}
        manifest, carried = _with_deltas(manifest, sources, bases, progress)
    sha256, size = _write_atomically(
        out_path, lambda sink: _write_bundle(manifest, sources, carried, sink, progress)
    )
    return BuildResult(manifest, out_path, sha256, size, dropped)


def _check_mode(path: str, mode: int, spec: SupplementSpec) -> None:
    """Modes a supplement may give: no sticky or world-writable file, and a set-user-ID
    or set-group-ID bit only on a file the spec lists under ``setuid``."""
    problem = mode_problem(mode)
    if problem:
        raise InvalidSupplement(
            f"/{path} has mode {mode:04o}: {problem}",
            hint=f"chmod it (e.g. to {mode & 0o6755:04o}) in the patched tree",
        )
    if mode & SETID_BITS and path not in spec.setuid:
        raise InvalidSupplement(
            f"/{path} has mode {mode:04o}: set-user-ID or set-group-ID, "
            "and the spec does not list it under setuid",
            hint=f"add 'setuid: [/{path}]' to the spec if it must keep that bit",
        )


class _HashingSink:
    """Where the compressed bundle goes: the file, and the bundle's own SHA-256."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _write_atomically(out_path: Path, write: Callable[[_HashingSink], None]) -> tuple[str, int]:
    """Stream the bundle into ``out_path`` through bsi's one durable-write path."""
    directory = out_path.parent
    if not directory.is_dir():
        raise InvalidSupplement(f"{str(directory)!r} is not a directory to write the bundle in")
    if not os.access(directory, os.W_OK):
        raise InvalidSupplement(f"cannot write in {str(directory)!r}: permission denied")
    # 0644: a bundle is meant for publishing, unlike a temporary file's 0600
    with durable.replacing(out_path, mode=0o644) as file:
        sink = _HashingSink(file)
        write(sink)
    return sink.hexdigest(), sink.size


def tar_header(name: str, size: int) -> bytes:
    """The header of one bundle member; nothing in it depends on the build host."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = MEMBER_MODE
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _padding(size: int) -> bytes:
    return bytes(-size % TAR_BLOCK)


def _with_deltas(
    manifest: Manifest,
    sources: dict[str, Path],
    bases: dict[str, Path],
    progress: Progress | None,
) -> tuple[Manifest, dict[str, bytes]]:
    """``manifest`` with each changed file a delta where that is smaller, and the deltas.

    A file is diffed only when both sides fit :data:`MAX_DELTA_BYTES`; its
    delta is kept only when smaller than the file compressed alone at
    :data:`WHOLE_ESTIMATE_LEVEL`. Both sides are hashed again as read.
    """
    wanted = [
        e
        for e in manifest.payloads
        if e.action is Action.CHANGE
        and e.path in bases
        and (e.size or 0) <= MAX_DELTA_BYTES
        and _size_of(bases[e.path]) <= MAX_DELTA_BYTES
    ]
    total, done = sum(e.size or 0 for e in wanted), 0
    estimate = zstandard.ZstdCompressor(level=WHOLE_ESTIMATE_LEVEL)
    chosen: dict[str, FileEntry] = {}
    carried: dict[str, bytes] = {}
    for entry in wanted:
        base = _read_checked(bases[entry.path], entry.base_sha256)
        target = _read_checked(sources[entry.path], entry.sha256)
        delta = make_delta(base, target)
        if len(delta) < len(estimate.compress(target)):
            digest = hashlib.sha256(delta).hexdigest()
            chosen[entry.path] = replace(entry, delta=Delta(size=len(delta), sha256=digest))
            carried[entry.path] = delta
        done += entry.size or 0
        if progress:
            progress("delta", done, total)
    if not chosen:
        return manifest, carried
    with publisher_input("deltas"):
        return replace(
            manifest,
            components=tuple(
                replace(c, files=tuple(chosen.get(f.path, f) for f in c.files))
                for c in manifest.components
            ),
        ), carried


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as error:
        raise InvalidSupplement(f"cannot read {str(path)!r}: {error.strerror}") from None


def _read_checked(path: Path, sha256: str | None) -> bytes:
    """All of ``path``, refused unless it still has the SHA-256 the trees were compared with."""
    with _open_regular(path) as file:
        data = file.readall()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise InvalidSupplement(
            f"{str(path)!r} changed while the bundle was being built",
            hint="build from trees nothing else is writing to",
        )
    return data


def _write_bundle(
    manifest: Manifest,
    sources: dict[str, Path],
    carried: dict[str, bytes],
    sink: _HashingSink,
    progress: Progress | None,
) -> None:
    manifest_bytes = manifest.to_json()
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise InvalidSupplement(
            f"the manifest would be {len(manifest_bytes)} bytes, more than devices read "
            f"({MAX_MANIFEST_BYTES})",
            hint="split the supplement, or leave unchanged files out of it",
        )
    members = [(MANIFEST_MEMBER, len(manifest_bytes))]
    members += [(e.member, e.member_size) for e in manifest.payloads]
    headers = [tar_header(name, size) for name, size in members]
    # The tar's exact length, known before any byte is written, goes into the
    # zstd frame header: a reader can refuse an oversized bundle up front.
    tar_size = sum(
        len(h) + s + len(_padding(s)) for h, (_, s) in zip(headers, members, strict=True)
    )
    tar_size += 2 * TAR_BLOCK
    compressor = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_content_size=True, write_checksum=True, threads=0
    ).compressobj(size=tar_size)

    def emit(data: bytes) -> None:
        if out := compressor.compress(data):
            sink.write(out)

    emit(headers[0] + manifest_bytes + _padding(len(manifest_bytes)))
    total, done = manifest.payload_bytes, 0
    for entry, header in zip(manifest.payloads, headers[1:], strict=True):
        emit(header)
        if entry.delta is not None:
            emit(carried[entry.path])
            done += entry.size or 0
        else:
            done = _pack_file(sources[entry.path], entry, emit, done, total, progress)
        emit(_padding(entry.member_size))
    emit(bytes(2 * TAR_BLOCK))
    sink.write(compressor.flush())


def _pack_file(
    source: Path,
    entry: FileEntry,
    emit: Callable[[bytes], None],
    done: int,
    total: int,
    progress: Progress | None,
) -> int:
    """Stream one payload, checking it is still what the manifest says it is."""
    size = entry.size or 0
    digest = hashlib.sha256()
    remaining = size
    with _open_regular(source) as file:
        while remaining and (chunk := file.read(min(_CHUNK, remaining))):
            digest.update(chunk)
            emit(chunk)
            remaining -= len(chunk)
            done += len(chunk)
            if progress:
                progress("pack", done, total)
        grew = bool(file.read(1))
    if remaining or grew or digest.hexdigest() != entry.sha256:
        raise InvalidSupplement(
            f"{str(source)!r} changed while the bundle was being built",
            hint="build from trees nothing else is writing to",
        )
    return done
