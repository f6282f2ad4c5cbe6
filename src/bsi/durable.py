"""One durable-write path for every file bsi keeps on a device or a publisher's disk.

A power cut may lose what was written since the last ``fsync``, and a rename
is only durable once its directory is synced (ext4 ``data=ordered`` or not;
see fsync(2) and rename(2) on POSIX). So a file is replaced by writing a
temporary beside it in full, ``fsync``\\ ing it, renaming it over the old one
and ``fsync``\\ ing the directory: a reader after any crash sees the old file or
the new one, whole, never an empty or half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (a rename, a new or removed name) durable.

    A missing directory is skipped: callers sync directories that a step may
    just have removed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to stream ``path``'s new content into; a clean exit replaces ``path`` durably.

    The temporary file beside ``path`` gets ``mode`` before any byte is
    written (a credential is never readable by others, even for an instant);
    on exit it is flushed, fsynced, renamed over ``path`` and the directory is
    fsynced. On any exception the temporary file is removed and ``path`` is
    unchanged. Raises :class:`OSError` (callers turn it into their own error).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    fsync_directory(path.parent)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (see :func:`replacing`)."""
    with replacing(path, mode=mode) as handle:
        handle.write(data)  # a buffered file writes all of it or raises


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` with ``data``, durably; :class:`FileExistsError` if it exists.

    A hard link of a finished, fsynced temporary file is the atomic "create if
    absent": the name appears complete or not at all, and an existing file is
    never replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    fsync_directory(path.parent)
