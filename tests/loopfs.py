"""A loop-mounted ext4 file system whose image file copies are power cuts.

Copying the image while the file system is in use gives what the disk would
hold if the power went at that instant: only what the kernel has written to
the device, never what sits in the file system's page cache. Mounting a copy
replays ext4's journal, as the next boot would. Needs root, e2fsprogs and
loop devices: tests skip without them, and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def run(*command: str | Path) -> None:
    subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    """``image`` mounted (through a loop device) at ``where``, unmounted after."""
    where.mkdir(exist_ok=True)
    run("mount", "-o", "loop", image, where)
    try:
        yield where
    finally:
        try:
            run("umount", where)
        except subprocess.CalledProcessError:  # busy (a straggling reader): detach it anyway
            run("umount", "--lazy", where)


@contextlib.contextmanager
def loop_filesystem(tmp_path: Path, size: str = "64M") -> Iterator[tuple[Path, Path]]:
    """A fresh ext4 image of ``size`` and where it is mounted: ``(image, mount point)``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    image = tmp_path / "fs.img"
    try:
        if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None:
            raise OSError("needs root and mkfs.ext4 (e2fsprogs)")
        run("truncate", "-s", size, image)
        run("mkfs.ext4", "-q", "-F", image)
        context = mounted(image, tmp_path / "live")
        where = context.__enter__()
    except (OSError, subprocess.CalledProcessError) as error:
        detail = (
            error.stderr.decode().strip()
            if isinstance(error, subprocess.CalledProcessError)
            else error
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"the power-cut test needs a loop-mounted file system: {detail}")
        pytest.skip(f"no loop-mounted file system here: {detail}")
    try:
        yield image, where
    finally:
        context.__exit__(None, None, None)


def power_cut(image: Path, copy: Path) -> None:
    """``copy`` becomes the disk as a power cut now would leave it (sparse, so cheap)."""
    run("cp", "--sparse=always", image, copy)
