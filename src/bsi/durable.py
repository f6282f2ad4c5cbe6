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
from pathlib import Path


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


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: written whole, fsynced, renamed, directory fsynced.

    ``mode`` is set before any byte is written (a credential is never
    readable by others, even for an instant). Raises :class:`OSError`; the
    temporary file is removed then and ``path`` is unchanged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(name, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    fsync_directory(path.parent)
