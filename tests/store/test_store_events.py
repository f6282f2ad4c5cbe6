"""EventStore conformance: security events are kept, newest first, whatever their size."""

from __future__ import annotations

from datetime import timedelta

from store_facts import NOW

from bsi.store.models import ENROLLMENT_ID_LENGTH
from bsi.store.protocols import EventStore


def test_events_are_listed_newest_first(events: EventStore) -> None:
    assert events.security_events() == []
    for n in range(3):
        events.record_security_event(
            "unknown-enrollment", f"E{n}", "10.0.0.1", f"try {n}", NOW + timedelta(minutes=n)
        )
    events.record_security_event("republished-build", None, None, "no enrollment", NOW)
    newest = events.security_events(limit=2)
    assert [(e.kind, e.enrollment_id) for e in newest] == [
        ("republished-build", None),
        ("unknown-enrollment", "E2"),
    ]
    assert newest[1].at == NOW + timedelta(minutes=2)
    assert (newest[1].source, newest[1].detail) == ("10.0.0.1", "try 2")
    assert len(events.security_events()) == 4


def test_an_attackers_oversized_fields_are_kept_cut_to_fit(events: EventStore) -> None:
    """Recording never refuses: PostgreSQL would refuse the over-long values, SQLite keep them."""
    events.record_security_event("identity-contradiction", "E" * 5000, "S" * 500, "D" * 9000, NOW)
    (event,) = events.security_events()
    assert event.enrollment_id == "E" * min(255, ENROLLMENT_ID_LENGTH)
    assert event.source == "S" * 64
    assert event.detail == "D" * 1024
