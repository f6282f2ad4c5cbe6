"""Patch windows: how long from a supplement's posting until devices run it.

The shrinking of this window is the point of supplements, so it is reported
per device and as percentiles per supplement. Percentiles use the
nearest-rank method: every figure reported is one a device really had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class PatchWindow:
    device_id: str
    supplement_build: str
    posted_at: datetime
    installed_at: datetime

    @property
    def duration(self) -> timedelta:
        return max(self.installed_at - self.posted_at, timedelta(0))


def posting_instant(posted: date) -> datetime:
    """Catalogues give posting dates; the window starts at that day's first instant, UTC."""
    return datetime.combine(posted, time(0), tzinfo=UTC)


def nearest_rank(sorted_values: Sequence[timedelta], percentile: int) -> timedelta:
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(percentile / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def percentiles(windows: Iterable[PatchWindow]) -> dict[int, timedelta]:
    """p50/p90/p99 of the windows' durations; empty when there are none."""
    durations = sorted(w.duration for w in windows)
    if not durations:
        return {}
    return {p: nearest_rank(durations, p) for p in PERCENTILES}
