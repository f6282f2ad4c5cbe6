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
from collections.abc import Iterator
from pathlib import Path

from bsi import durable
from bsi.trust.errors import RepositoryExists

write_atomic = durable.write_atomic
"""Replace ``path`` with ``data`` in one rename (bsi's one durable-write path)."""


def write_new(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Create ``path`` with ``data``; :class:`RepositoryExists` if it exists (never replaced)."""
    try:
        durable.write_new(path, data, mode=mode)
    except FileExistsError:
        raise RepositoryExists(
            f"{str(path)!r} already exists", hint="bsi never overwrites it"
        ) from None


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
