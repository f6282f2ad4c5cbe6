"""File-system edge of the trust package: atomic writes and the repository lock.

Every file bsi writes under a key or repository directory goes through here:
content goes to a temporary file in the same directory, is flushed to disk and
then renamed into place, so a reader (a CDN, a client, a crash) sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bsi import durable
from bsi.durable import fsync_directory
from bsi.trust.errors import RepositoryExists


def _write_temp(directory: Path, data: bytes, mode: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".bsi-", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    return Path(name)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_directory(directory)


write_atomic = durable.write_atomic
"""Replace ``path`` with ``data`` in one rename (bsi's one durable-write path)."""


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` with ``data`` in one step, refusing if it already exists.

    A hard link of the finished temporary file is the atomic "create if absent":
    the name appears complete or not at all, and an existing file is never
    replaced.
    """
    temp = _write_temp(path.parent, data, mode)
    try:
        os.link(temp, path)
    except FileExistsError:
        raise RepositoryExists(
            f"{str(path)!r} already exists", hint="bsi never overwrites it"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``directory`` (one writer at a time)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".bsi-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
