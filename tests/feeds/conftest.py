"""Fixtures for the feed tests: SOFA's copy of Apple's real catalogue, decoded.

Each test gets its own decoded copy, so a test may corrupt a field of the
real document without affecting any other test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def sofa_dir(shared_data: Path) -> Path:
    return shared_data / "sofa"


@pytest.fixture
def gdmf_document(sofa_dir: Path) -> Any:
    """Apple's GDMF document inside SOFA's ``{"etag", "data"}`` cache wrapper."""
    return json.loads((sofa_dir / "gdmf_cached.json").read_text())


@pytest.fixture
def macos_feed(sofa_dir: Path) -> Any:
    return json.loads((sofa_dir / "macos_data_feed.json").read_text())


@pytest.fixture
def ios_feed(sofa_dir: Path) -> Any:
    return json.loads((sofa_dir / "ios_data_feed.json").read_text())
