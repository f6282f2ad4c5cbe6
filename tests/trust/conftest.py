"""Fixtures for the trust tests: a bsi TUF repository served on loopback, and devices."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tuf_simulator import TufRepo, running_repo


@pytest.fixture
def make_repo(tmp_path: Path) -> Iterator[Callable[..., TufRepo]]:
    """Factory: a new repository (keys, metadata, HTTP server) per call."""
    with contextlib.ExitStack() as stack:
        made = 0

        def make(**kwargs: Any) -> TufRepo:
            nonlocal made
            made += 1
            return stack.enter_context(running_repo(tmp_path / f"repo{made}", **kwargs))

        yield make


@pytest.fixture
def repo(make_repo: Callable[..., TufRepo]) -> TufRepo:
    """A repository with one key per role and threshold 1."""
    return make_repo()


@pytest.fixture
def device(tmp_path: Path) -> Path:
    """A device's home: trusted metadata in ``tuf/``, staged bundles in ``preboot/``."""
    home = tmp_path / "device"
    home.mkdir()
    return home
