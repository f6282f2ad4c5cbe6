"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from realdata import shared_data_path


@pytest.fixture
def shared_data() -> Path:
    """The root of ``../shared/data`` (skips without it, fails under CI=true)."""
    return shared_data_path()
