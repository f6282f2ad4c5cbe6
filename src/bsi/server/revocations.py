"""Which device credentials are refused, known to every server process within seconds.

Credentials prove themselves with one HMAC (:mod:`bsi.server.credentials`),
so refusing one needs a list: every revoke, decommission and re-enrolment is
a row in ``device_lifecycle_events``, and each process polls the rows after
the last it saw (one indexed query, normally empty) every poll interval.
The process that makes a change applies it at once; the others refuse a
revoked credential within one poll interval plus one query.

PostgreSQL hands out ids at insert and commits later, so an event can become
visible after a higher one: ids skipped over are asked for again on every
poll for :data:`HOLE_SECONDS`. Events of one device are written under its
row lock, so applying them in id order always ends on its latest state.
"""

from __future__ import annotations

import threading
import time

from bsi.store.protocols import CredentialStore
from bsi.store.store import DeviceIdentity

HOLE_SECONDS = 120.0
"""How long an id skipped over is looked for: longer than any write transaction."""


class Revocations:
    def __init__(self, store: CredentialStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, bool]] = {}
        self._seen = 0
        self._holes: dict[int, float] = {}

    def refresh(self) -> int:
        """Apply the events new since the last poll; returns how many were read."""
        now = time.monotonic()
        with self._lock:
            self._holes = {i: until for i, until in self._holes.items() if until > now}
            seen, holes = self._seen, sorted(self._holes)
        events = self._store.lifecycle_events(seen, holes)
        with self._lock:
            for event in events:
                self._state[event.device_id] = (event.generation, event.active)
                self._holes.pop(event.id, None)
            newest = max((e.id for e in events), default=self._seen)
            got = {e.id for e in events}
            for missing in range(self._seen + 1, newest):
                if missing not in got:
                    self._holes[missing] = now + HOLE_SECONDS
            self._seen = max(self._seen, newest)
        return len(events)

    def allows(self, identity: DeviceIdentity, *, by_credential: bool = True) -> bool:
        """False for a revoked or decommissioned device, or an earlier generation's
        credential (``by_credential``; an MDM-forwarded identity carries none)."""
        generation, active = self._state.get(identity.device_id, (0, True))
        return active and (not by_credential or identity.generation == generation)
