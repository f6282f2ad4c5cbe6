"""The event history's rows, written by whichever store changes what they tell of.

Events are kept in the same transaction as the change they tell of: a
rollout's step (:mod:`bsi.store.rollouts`), or a device's status report
(:meth:`bsi.store.store.Store.write_device_states`), so that a crash never
keeps one without the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from bsi.store.models import Event, column_length

_REASON_LENGTH = column_length(Event, "reason")
_ACTOR_LENGTH = column_length(Event, "actor")
_INSERT = insert(cast(Table, Event.__table__))


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event to keep: ``kind`` (:class:`bsi.domain.events.EventKind`), ``actor`` (an
    API key's name or ``automatic``), ``reason`` (a sentence), what it is about."""

    kind: str
    actor: str
    reason: str
    at: datetime
    device_id: str | None = None
    platform: str | None = None
    build: str | None = None
    detail: Mapping[str, Any] | None = None


def add_events(session: Session, events: Sequence[NewEvent]) -> None:
    """Insert ``events`` in ``session``'s transaction, in one Core statement; over-long
    reasons and actors are cut to their columns (they are sentences and names)."""
    if events:
        session.connection().execute(
            _INSERT,
            [
                {
                    "at": e.at,
                    "kind": e.kind,
                    "actor": e.actor[:_ACTOR_LENGTH],
                    "device_id": e.device_id,
                    "platform": e.platform,
                    "build": e.build,
                    "reason": e.reason[:_REASON_LENGTH],
                    "detail": dict(e.detail) if e.detail is not None else None,
                }
                for e in events
            ],
        )
