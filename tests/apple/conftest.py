"""Fixtures for the Apple compliance report's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def real_catalogue(shared_data: Path) -> list[str]:
    """``--catalog`` arguments for Apple's real GDMF document and SOFA feeds."""
    sofa = shared_data / "sofa"
    return [
        arg
        for location in ("gdmf_cached.json", "macos_data_feed.json", "ios_data_feed.json")
        for arg in ("--catalog", str(sofa / location))
    ]
