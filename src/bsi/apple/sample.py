"""The sample shipped with bsi: a small hand-written catalogue and fleet for demos.

The catalogue holds Apple's first Background Security Improvements (posted
2026-03-17) and the releases around them; the fleet is nine devices' DDM
status reports. Both are frozen as of :data:`AS_OF`, three days after
posting, when ``26.3.1 (a)`` was current; ``--at`` moves the clock (after
2026-03-24 the supplements are folded into 26.4).
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from bsi.domain.catalog import Catalog
from bsi.feeds.load import read_catalog

AS_OF = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)

_DATA = resources.files("bsi") / "data"


def catalog() -> Catalog:
    data = (_DATA / "sample-catalog.json").read_bytes()
    return read_catalog(data, source="bsi sample catalogue")


def fleet_path() -> Path:
    return Path(str(_DATA / "sample-fleet"))
