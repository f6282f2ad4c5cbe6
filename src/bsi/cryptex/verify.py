"""Reading a cryptex bundle without trusting it.

A bundle reaches a device from the network, so everything here assumes it
was made to hurt: decompression is capped (a few kilobytes can expand to
terabytes) and bounded in memory per step; the tar is parsed by hand and
only the two member types bsi writes are accepted (regular files, and pax
headers carrying a long ``path`` or a big ``size``) — links, devices and
directories are refused, never interpreted; every member must be one the
manifest announces, once, with the size and SHA-256 it states; and a frame
that is truncated, corrupt or followed by anything is refused.

TUF proves a bundle was published by whoever holds the targets key; these
checks prove it says what its manifest says, and that reading it cannot
harm the reader. Signatures are the TUF layer's job, which calls
:func:`verify_bundle` once the download is authentic.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import zstandard

from bsi.cryptex.delta import apply_delta
from bsi.cryptex.errors import InvalidBundle
from bsi.cryptex.manifest import (
    MANIFEST_MEMBER,
    MAX_MANIFEST_BYTES,
    PAYLOAD_PREFIX,
    TAR_BLOCK,
    FileEntry,
    Manifest,
    human_size,
    path_problem,
)
from bsi.errors import Conflict, NotFound

BaseBytes = Callable[[FileEntry], bytes]
"""``base(entry)``: the device's bytes of ``entry.base_sha256``, for rebuilding a delta.
It raises (the agent's :class:`~bsi.agent.activators.PrerequisiteMismatch`) when the
device has no such bytes; :func:`extract_payloads` checks their SHA-256 again."""

DEFAULT_MAX_BYTES = 4 << 30
"""Decompressed size refused by default: generous for a security supplement."""

MAX_WINDOW_BYTES = 1 << 25
"""zstd window a bundle may ask the reader to allocate; bsi's own use 8 MiB at level 19."""

_INPUT_CHUNK = 1024
"""Compressed bytes fed per step. zstd expands at most ~32,000-fold (a run-length
block of 128 KiB costs four bytes), so one step yields at most ~32 MiB: a bomb
is refused after a bounded allocation, not after it has filled memory."""

MAX_RATIO = 1000
"""Decompressed bytes per compressed byte a bundle may reach. zstd at level 19
makes real binaries 3-5 times smaller, text up to some 30 times; a thousand is
only reached by runs of one byte, which is what a bomb is made of."""

_RATIO_SLACK = 16 << 20
"""Output allowed before the ratio is judged: tar headers alone compress far better."""

SETID_BITS = 0o6000
"""set-user-ID and set-group-ID: only on files the spec lists under ``setuid``
(checked at build), which the signed manifest declares (checked wherever a bundle is
read: verify, and the device before staging)."""


def mode_problem(mode: int) -> str | None:
    """Why no supplement file may have ``mode``, or None: sticky or world-writable."""
    if mode & 0o1000:
        return "the sticky bit means nothing on a file bsi stages and is refused"
    if mode & 0o002:
        return "a world-writable file could be replaced by anyone and is refused"
    return None


_OUTPUT_CHUNK = 1 << 20
_MAX_PAX_BYTES = 64 << 10
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZERO_BLOCK = bytes(TAR_BLOCK)
_PAX_KEYS = frozenset({"path", "size"})
_MEMBER_KINDS = {
    tarfile.SYMTYPE: "a symlink",
    tarfile.LNKTYPE: "a hard link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.DIRTYPE: "a directory",
    tarfile.FIFOTYPE: "a fifo",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.XHDTYPE: "a second pax header in a row",
    tarfile.XGLTYPE: "a global pax header",
    tarfile.GNUTYPE_LONGNAME: "a GNU long name",
    tarfile.GNUTYPE_LONGLINK: "a GNU long link",
    tarfile.GNUTYPE_SPARSE: "a GNU sparse file",
}


def read_manifest(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """The bundle's manifest, checked, without reading the payloads.

    Enough to show what a bundle is; not enough to trust its content, which
    only :func:`verify_bundle` or :func:`extract_payloads` establish.
    """
    with _open_bundle(path, max_bytes) as stream:
        return _read_manifest_member(stream)


def verify_bundle(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Manifest:
    """The manifest of a bundle whose every member has been checked against it."""
    with _open_bundle(path, max_bytes) as stream:
        manifest = _read_manifest_member(stream)
        for _, chunks in _payloads(stream, manifest):
            for _ in chunks:
                pass
    return manifest


def extract_payloads(
    path: Path,
    dest_dir: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    apply_owner: bool = False,
    base: BaseBytes | None = None,
) -> Manifest:
    """Verify the bundle and write each payload to ``dest_dir/<path>``, as the agent stages.

    ``dest_dir`` must be absent or empty. A file that travels as a delta is
    rebuilt from ``base(entry)`` (:mod:`bsi.cryptex.delta`); a bundle with
    deltas and no ``base`` is refused. Each file gets the manifest's mode
    (and owner, with ``apply_owner``, which needs root) only after its full
    SHA-256 has matched, and is fsynced. On any refusal ``dest_dir`` is
    emptied again, so a half-verified bundle never lies around staged.
    """
    created = not dest_dir.exists()
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise Conflict(f"cannot stage into {str(dest_dir)!r}: {error.strerror}") from None
    if not created and any(dest_dir.iterdir()):
        raise Conflict(
            f"staging directory {str(dest_dir)!r} is not empty",
            hint="stage each bundle into a fresh directory",
        )
    try:
        with _open_bundle(path, max_bytes) as stream:
            manifest = _read_manifest_member(stream)
            if manifest.deltas and base is None:
                raise stream.error(
                    f"{len(manifest.deltas)} file(s) travel as deltas, and no base was given "
                    "to rebuild them from",
                    hint="stage it with the agent, which rebuilds them from the device's files",
                )
            for entry, chunks in _payloads(stream, manifest):
                if entry.delta is not None:
                    assert base is not None
                    chunks = iter((_rebuilt(stream, entry, b"".join(chunks), base),))
                _extract_one(dest_dir, entry, chunks, apply_owner=apply_owner)
    except BaseException:
        _discard(dest_dir, created=created)
        raise
    return manifest


# -- the stream ------------------------------------------------------------


class _TarStream:
    """The bundle's tar, decompressed as it is read, in exact-length pieces."""

    def __init__(self, file: BinaryIO, name: str, max_bytes: int) -> None:
        self.name = name
        self._file = file
        self._max_bytes = max_bytes
        self._produced = 0
        self._consumed = 0
        self._compressed_size = os.fstat(file.fileno()).st_size
        self.declared_size: int | None = None
        self._buffer = bytearray()
        self._position = 0
        self._decompressor = zstandard.ZstdDecompressor(
            max_window_size=MAX_WINDOW_BYTES
        ).decompressobj()
        self._first_input = self._check_frame_header()

    def error(self, problem: str, *, hint: str | None = None) -> InvalidBundle:
        return InvalidBundle(problem, where=self.name, hint=hint)

    def _check_frame_header(self) -> bytes:
        """Refuse what is not zstd, or says up front that it decompresses too large."""
        head = self._file.read(_INPUT_CHUNK)
        if not head.startswith(_ZSTD_MAGIC):
            raise self.error(
                "not a bundle: it is not zstd-compressed",
                hint="a bundle is what 'bsi supplement build' writes",
            )
        try:
            declared = zstandard.get_frame_parameters(head).content_size
        except zstandard.ZstdError as error:
            raise self.error(f"the zstd frame header is broken or truncated: {error}") from None
        if declared != zstandard.CONTENTSIZE_UNKNOWN:
            if declared > self._max_bytes:
                raise self.too_big(f"declares {human_size(declared)} of content")
            self.declared_size = declared
            self.check_ratio(declared, self._compressed_size, "declares")
        return head

    def check_ratio(self, output: int, given: int, verb: str) -> None:
        """Refuse output beyond :data:`MAX_RATIO` times the compressed bytes it came from."""
        if output > _RATIO_SLACK and output > MAX_RATIO * max(given, 1):
            raise self.error(
                f"{verb} {human_size(output)} from {human_size(given)} compressed, "
                f"more than {MAX_RATIO} times; refusing it (a decompression bomb?)",
                hint="a real supplement compresses a few times, not thousands",
            )

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def compressed_size(self) -> int:
        return self._compressed_size

    def too_big(self, claim: str) -> InvalidBundle:
        return self.error(
            f"{claim}, more than the {human_size(self._max_bytes)} allowed; "
            "refusing it (a decompression bomb?)",
            hint="raise max_bytes only for a bundle you expect to be this large",
        )

    def _fill(self) -> bool:
        """Decompress one more step; ``False`` once the input or the frame has ended."""
        if self._decompressor.eof:
            return False
        data = self._first_input or self._file.read(_INPUT_CHUNK)
        self._first_input = b""
        if not data:
            return False
        try:
            output = self._decompressor.decompress(data)
        except zstandard.ZstdError as error:
            raise self.error(f"the zstd stream is corrupt: {error}") from None
        self._consumed += len(data)
        self._produced += len(output)
        self.check_ratio(self._produced, self._consumed, "has decompressed to")
        if self._produced > self._max_bytes:
            raise self.too_big(f"has decompressed to {human_size(self._produced)} so far")
        if self._position > _OUTPUT_CHUNK:
            del self._buffer[: self._position]
            self._position = 0
        self._buffer += output
        return True

    def _available(self) -> int:
        return len(self._buffer) - self._position

    def _take(self, size: int) -> bytes:
        piece = bytes(self._buffer[self._position : self._position + size])
        self._position += len(piece)
        return piece

    def _truncated(self) -> InvalidBundle:
        if self._decompressor.eof:
            return self.error("the tar inside ends early (truncated before it was compressed?)")
        return self.error("the bundle is truncated")

    def read_exact(self, size: int) -> bytes:
        while self._available() < size:
            if not self._fill():
                raise self._truncated()
        return self._take(size)

    def chunks(self, size: int) -> Iterator[bytes]:
        """``size`` bytes in pieces of at most a mebibyte."""
        remaining = size
        while remaining:
            piece = self.read_exact(min(remaining, _OUTPUT_CHUNK))
            remaining -= len(piece)
            yield piece

    def skip_padding(self, size: int) -> None:
        self.read_exact(-size % TAR_BLOCK)

    def next_member(self) -> tuple[str, int] | None:
        """Name and size of the next member, or ``None`` at the end of the archive."""
        block = self.read_exact(TAR_BLOCK)
        if block == _ZERO_BLOCK:
            if self.read_exact(TAR_BLOCK) != _ZERO_BLOCK:
                raise self.error("the tar has a lone zero block before more data")
            return None
        info = self._header(block)
        records: dict[str, str] = {}
        if info.type == tarfile.XHDTYPE:
            if info.size > _MAX_PAX_BYTES:
                raise self.error(f"a pax header of {info.size} bytes is larger than bsi writes")
            records = self._pax_records(self.read_exact(info.size))
            self.skip_padding(info.size)
            info = self._header(self.read_exact(TAR_BLOCK))
        name = records.get("path", info.name)
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = _MEMBER_KINDS.get(info.type, f"of tar type {info.type!r}")
            raise self.error(
                f"member {name!r} is {kind}; a bundle holds regular files only",
                hint="links and devices could point anywhere on the device",
            )
        size = int(records["size"]) if "size" in records else info.size
        if size < 0:
            raise self.error(f"member {name!r} has a negative size ({size})")
        return name, size

    def _header(self, block: bytes) -> tarfile.TarInfo:
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError, ValueError) as error:
            raise self.error(f"a tar header is corrupt: {error}") from None

    def _pax_records(self, data: bytes) -> dict[str, str]:
        """``path`` and ``size`` from a pax header (``"<length> <key>=<value>\\n"`` each)."""
        records: dict[str, str] = {}
        position = 0
        while position < len(data):
            space = data.find(b" ", position)
            length_text = data[position:space] if space > position else b""
            end = position + int(length_text) if length_text.isdigit() else 0
            if end <= space or end > len(data) or data[end - 1 : end] != b"\n":
                raise self.error(f"a pax header record is malformed at byte {position}")
            key_bytes, equals, value_bytes = data[space + 1 : end - 1].partition(b"=")
            try:
                key, value = key_bytes.decode("utf-8"), value_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("a pax header record is not UTF-8") from None
            if not equals or key not in _PAX_KEYS or key in records:
                raise self.error(
                    f"pax header field {key!r} is unknown or repeated",
                    hint="bsi writes only 'path' and 'size', once each",
                )
            if key == "size" and not value.isdigit():
                raise self.error(f"pax header size {value!r} is not a number")
            records[key] = value
            position = end
        return records

    def finish(self) -> None:
        """After the archive's end: zero padding only, then the end of the frame, then nothing."""
        while True:
            rest = self._take(self._available())
            if rest.strip(b"\0"):
                raise self.error("data follows the end of the tar archive")
            if not self._fill():
                break
        if not self._decompressor.eof:
            raise self.error("the bundle is truncated: its zstd frame does not end")
        if self._decompressor.unused_data or self._file.read(1):
            raise self.error("data follows the bundle's zstd frame")


@contextmanager
def _open_bundle(path: Path, max_bytes: int) -> Iterator[_TarStream]:
    try:
        file = open(path, "rb", buffering=1 << 16)  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise NotFound(f"{str(path)!r}: no such bundle") from None
    except OSError as error:
        raise InvalidBundle(f"cannot read {str(path)!r}: {error.strerror}") from None
    with file:
        yield _TarStream(file, str(path), max_bytes)


def _read_manifest_member(stream: _TarStream) -> Manifest:
    member = stream.next_member()
    if member is None or member[0] != MANIFEST_MEMBER:
        found = "nothing" if member is None else repr(member[0])
        raise stream.error(f"the first member is {found}, not {MANIFEST_MEMBER!r}")
    size = member[1]
    if size > MAX_MANIFEST_BYTES:
        raise stream.error(f"{MANIFEST_MEMBER} is {human_size(size)}, more than bsi reads")
    data = stream.read_exact(size)
    stream.skip_padding(size)
    try:
        manifest = Manifest.from_json(data)
    except InvalidBundle as error:
        raise InvalidBundle(
            error.message, where=f"{stream.name}: {MANIFEST_MEMBER}", hint=error.hint
        ) from None
    _check_policy(stream, manifest, size)
    return manifest


def _check_policy(stream: _TarStream, manifest: Manifest, manifest_size: int) -> None:
    """Before any payload is decompressed: what the manifest declares must fit.

    The payload sizes it announces must fit the size cap and the zstd frame's
    declared content, and stay within :data:`MAX_RATIO` of the bundle's
    compressed size; no file may be sticky or world-writable (set-user-ID
    and set-group-ID bits only on files the manifest declares, see :func:`setid_problem`).
    """
    announced = manifest_size + manifest.member_bytes
    rebuilt = manifest_size + manifest.payload_bytes
    if max(announced, rebuilt) > stream.max_bytes:
        raise stream.too_big(
            f"announces {human_size(max(announced, rebuilt))} of files in its manifest"
        )
    if stream.declared_size is not None and announced > stream.declared_size:
        raise stream.error(
            f"its manifest announces {human_size(announced)} of files, more than the "
            f"{human_size(stream.declared_size)} its zstd frame holds"
        )
    stream.check_ratio(announced, stream.compressed_size, "announces")
    for entry in manifest.payloads:
        problem = mode_problem(entry.mode or 0) or setid_problem(manifest, entry)
        if problem:
            raise stream.error(
                f"file {entry.path!r} has mode {entry.mode or 0:04o}: {problem}",
                hint="the publisher lists such a file under 'setuid' in the spec and rebuilds"
                if problem is _UNDECLARED_SETID
                else None,
            )


_UNDECLARED_SETID = (
    "set-user-ID or set-group-ID, which the manifest does not declare, so it is refused "
    "before staging"
)


def setid_problem(manifest: Manifest, entry: FileEntry) -> str | None:
    """Why ``entry``'s set-user-ID/set-group-ID bit may not be staged, or None.

    A signature proves who published a bundle, not that they meant a file to run
    with its owner's rights: the bit is staged only where the signed manifest
    declares it (``setuid``, from the spec), as ``bsi supplement verify`` shows.
    """
    if (entry.mode or 0) & SETID_BITS and entry.path not in manifest.setuid:
        return _UNDECLARED_SETID
    return None


def _payloads(
    stream: _TarStream, manifest: Manifest
) -> Iterator[tuple[FileEntry, Iterator[bytes]]]:
    """Each payload member with its content; the content raises if its hash is wrong.

    Members may come in any order, but each must be one the manifest
    announces, exactly once; at the end every announced one must have come.
    """
    expected = {entry.member: entry for entry in manifest.payloads}
    seen: set[str] = set()
    while (member := stream.next_member()) is not None:
        name, size = member
        relative = name.removeprefix(PAYLOAD_PREFIX)
        problem = f"is outside {PAYLOAD_PREFIX}" if relative == name else path_problem(relative)
        if problem:
            raise stream.error(f"member name {name!r} {problem}")
        if name in seen:
            raise stream.error(f"member {name!r} appears twice")
        entry = expected.pop(name, None)
        if entry is None:
            raise stream.error(f"member {name!r} is not in the manifest")
        seen.add(name)
        if size != entry.member_size:
            raise stream.error(
                f"member {name!r} is {size} bytes; the manifest says {entry.member_size}"
            )
        chunks = _verified(stream, entry)
        yield entry, chunks
        for _ in chunks:  # whatever the consumer left unread
            pass
        stream.skip_padding(size)
    if expected:
        missing = sorted(expected)
        raise stream.error(
            f"{len(missing)} payload(s) of the manifest are missing: "
            + ", ".join(repr(m) for m in missing[:10])
        )
    stream.finish()


def _verified(stream: _TarStream, entry: FileEntry) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for chunk in stream.chunks(entry.member_size):
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != entry.member_sha256:
        raise stream.error(
            f"member {entry.member!r} has sha256 {digest.hexdigest()}; "
            f"the manifest says {entry.member_sha256}"
        )


def _rebuilt(stream: _TarStream, entry: FileEntry, delta: bytes, base: BaseBytes) -> bytes:
    """``entry``'s new content from its verified ``delta`` and the device's base bytes.

    Only bytes whose SHA-256 is the manifest's ``base_sha256`` are patched,
    and the result is returned only if its SHA-256 is the manifest's ``sha256``.
    """
    where = f"{stream.name}: {entry.member!r}"
    original = base(entry)
    found = hashlib.sha256(original).hexdigest()
    if found != entry.base_sha256:
        raise InvalidBundle(
            f"the base given for the delta has sha256 {found}, not {entry.base_sha256}",
            where=where,
        )
    content = apply_delta(original, delta, size=entry.size or 0, where=where)
    digest = hashlib.sha256(content).hexdigest()
    if digest != entry.sha256:
        raise InvalidBundle(
            f"rebuilt from its delta, /{entry.path} has sha256 {digest}; the manifest says "
            f"{entry.sha256}: the delta is corrupt or was made from other base bytes",
            where=where,
        )
    return content


# -- staging ---------------------------------------------------------------


def _extract_one(
    dest_dir: Path, entry: FileEntry, chunks: Iterator[bytes], *, apply_owner: bool
) -> None:
    """Write one payload under ``dest_dir``, never through a link, never outside it."""
    parts = entry.path.split("/")
    directory = dest_dir
    for part in parts[:-1]:
        directory = directory / part
        try:
            directory.mkdir(mode=0o755)
        except FileExistsError:
            if directory.is_symlink() or not directory.is_dir():
                raise InvalidBundle(
                    f"{str(directory)!r} is not a plain directory", where=repr(entry.path)
                ) from None
    target = directory / parts[-1]
    if not target.resolve().is_relative_to(dest_dir.resolve()):
        raise InvalidBundle(f"would be written outside {str(dest_dir)!r}", where=repr(entry.path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        for chunk in chunks:
            out.write(chunk)
        out.flush()
        # Only now, with the hash checked: chown before chmod, which would
        # otherwise clear a set-user-ID bit.
        if apply_owner and entry.uid is not None and entry.gid is not None:
            os.fchown(out.fileno(), entry.uid, entry.gid)
        os.fchmod(out.fileno(), entry.mode or 0)
        os.fsync(out.fileno())


def _discard(dest_dir: Path, *, created: bool) -> None:
    if created:
        shutil.rmtree(dest_dir, ignore_errors=True)
        return
    for child in dest_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
