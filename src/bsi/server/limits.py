"""Per-device rate limits: one misbehaving device can slow only itself.

A token bucket per key: ``burst`` tokens at once, refilled at ``per_second``;
a request may cost more than one (a status report costs one per 64 KiB, so a
device sending 1 MiB reports gets a seventeenth of the rate of a small one).
Buckets live in this process's memory, so N server processes admit at most N
times the rate; that bound is what matters for the database, which is the
shared resource being protected.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from bsi.errors import TooManyRequests


@dataclass(slots=True)
class RateLimit:
    burst: float
    per_second: float
    what: str = "requests"
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, key: str, now: float, cost: float = 1) -> None:
        """Spend ``cost`` tokens of ``key``'s bucket at monotonic time ``now``, or raise
        TooManyRequests saying how many seconds until they are back."""
        cost = min(cost, self.burst)
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.per_second)
            if tokens < cost:
                wait = math.ceil((cost - tokens) / self.per_second)
                self._buckets[key] = (tokens, now)
                raise TooManyRequests(
                    f"this device is over its rate limit for {self.what}: "
                    f"{self.burst:g} at once, {self.per_second:g} per second after",
                    retry_after=wait,
                    hint=f"send again in {wait} s",
                )
            if len(self._buckets) > 1_000_000:  # bounded memory: forget full buckets
                self._buckets = {k: v for k, v in self._buckets.items() if v[0] + 1 < self.burst}
            self._buckets[key] = (tokens - cost, now)
