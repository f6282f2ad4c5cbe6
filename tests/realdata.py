"""Where the real data lives (``../shared/data``), and how to do without it.

Tests that read it skip with a message where it is absent, except under
``CI=true``, where its absence is a failure: CI always has it, so a skip there
would hide a broken checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_path(*parts: str) -> Path:
    """The path under ``../shared/data``; skips (or fails in CI) when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real data not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run with ../shared beside the clone")
        pytest.skip(f"{message}; clone bsi next to its shared/ folder to run this test")
    return path
