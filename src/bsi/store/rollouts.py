"""Storing rollouts, their frozen wave membership, maintenance windows and the event history.

:class:`RolloutStore` is the narrow protocol the rollout service needs;
:class:`SqlRolloutStore` implements it on the same engine and schema as
:class:`bsi.store.store.Store` (SQLite and PostgreSQL). A rollout's plan is
kept as :func:`bsi.domain.rollout.dump_plan` writes it, a window as
:func:`~bsi.domain.rollout.dump_window` does; every change is written in the
same transaction as the events that tell of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from bsi.domain.inventory import reported_spellings
from bsi.domain.rollout import Rollout, RolloutState, dump_plan, read_plan
from bsi.errors import Conflict, NotFound
from bsi.store.database import Sessions
from bsi.store.events import NewEvent, add_events
from bsi.store.models import (
    ApiKey,
    Device,
    DeviceGroup,
    Event,
    MaintenanceWindowRow,
    RolloutDefault,
    RolloutMember,
    RolloutRow,
    SupplementalBuildChange,
    Webhook,
    column_length,
)
from bsi.store.store import secret_hash

MAX_EVENTS_PAGE = 1000


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    event: NewEvent


@dataclass(frozen=True, slots=True)
class EventFilter:
    """``GET /v1/admin/events`` filters; ``after`` is the paging cursor (an event id) of
    the oldest-first order, ``before`` that of the newest-first one (a device's history)."""

    kinds: frozenset[str] = frozenset()
    device_id: str | None = None
    build: str | None = None
    since: datetime | None = None
    after: int = 0
    limit: int = 100
    newest_first: bool = False
    before: int | None = None


@dataclass(frozen=True, slots=True)
class StoredRollout:
    id: int
    platform: str
    rollout: Rollout


@dataclass(frozen=True, slots=True)
class StoredWebhook:
    id: int
    url: str
    secret: str
    kinds: frozenset[str]
    created_by: str
    cursor: int = 0
    attempts: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None

    def acknowledged(self, event_id: int) -> StoredWebhook:
        return replace(self, cursor=event_id, attempts=0, retry_at=None, last_error=None)


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """A device of a platform as a rollout's health reads it."""

    device_id: str
    group: str
    supplemental_build: str | None
    last_seen_at: datetime | None
    installed_at: datetime | None = None
    """When it was first seen running the rollout's build (None: never)."""


class RolloutStore(Protocol):
    def api_key(self, secret: str) -> tuple[str, str] | None: ...
    def group_names(self) -> dict[int, str]: ...
    def rollout_default(self, platform: str) -> dict[str, Any] | None: ...
    def set_rollout_default(
        self, platform: str, plan: dict[str, Any] | None, event: NewEvent
    ) -> None: ...
    def rollouts(self, states: frozenset[RolloutState] | None = None) -> list[StoredRollout]: ...
    def rollout(self, platform: str, build: str) -> StoredRollout | None: ...
    def start_rollout(
        self,
        platform: str,
        rollout: Rollout,
        members: Mapping[str, int],
        events: Sequence[NewEvent],
    ) -> StoredRollout: ...
    def save_rollout(
        self, stored: StoredRollout, after: Rollout, events: Sequence[NewEvent]
    ) -> None: ...
    def members(self, rollout_id: int) -> dict[str, int]: ...
    def fleet(self, platform: str, build: str) -> list[FleetDevice]: ...
    def windows(self) -> dict[int, dict[str, Any]]: ...
    def set_window(self, group: str, window: dict[str, Any] | None, event: NewEvent) -> None: ...
    def record_events(self, events: Sequence[NewEvent]) -> None: ...
    def events(self, where: EventFilter) -> list[StoredEvent]: ...
    def add_webhook(
        self, url: str, secret: str, kinds: frozenset[str], actor: str, now: datetime
    ) -> StoredWebhook: ...
    def remove_webhook(self, webhook_id: int) -> None: ...
    def webhooks(self) -> list[StoredWebhook]: ...
    def claim_webhook(
        self, webhook_id: int, cursor: int, now: datetime, until: datetime
    ) -> bool: ...
    def webhook_delivered(self, webhook_id: int, event_id: int) -> None: ...
    def webhook_failed(
        self, webhook_id: int, attempts: int, retry_at: datetime, error: str
    ) -> None: ...


class SqlRolloutStore(Sessions):
    """:class:`RolloutStore` on SQLAlchemy (the schema of :mod:`bsi.store.models`)."""

    def api_key(self, secret: str) -> tuple[str, str] | None:
        """``(name, role)`` of the live API key ``secret``: the name is the actor of what
        it changes."""
        with self._reading() as session:
            found = session.execute(
                select(ApiKey.name, ApiKey.role).where(
                    ApiKey.key_hash == secret_hash(secret), ApiKey.revoked.is_(False)
                )
            ).first()
            return None if found is None else (found[0], found[1])

    def group_names(self) -> dict[int, str]:
        with self._reading() as session:
            return dict(session.execute(select(DeviceGroup.id, DeviceGroup.name)).all())

    # -- plans and rollouts ---------------------------------------------------

    def rollout_default(self, platform: str) -> dict[str, Any] | None:
        with self._reading() as session:
            return session.scalar(
                select(RolloutDefault.plan).where(RolloutDefault.platform == platform)
            )

    def set_rollout_default(
        self, platform: str, plan: dict[str, Any] | None, event: NewEvent
    ) -> None:
        """Set (or with ``None`` remove) ``platform``'s default plan."""
        with self._writing() as session:
            session.execute(delete(RolloutDefault).where(RolloutDefault.platform == platform))
            if plan is not None:
                session.add(RolloutDefault(platform=platform, plan=plan, updated_at=event.at))
            add_events(session, [event])

    def rollouts(self, states: frozenset[RolloutState] | None = None) -> list[StoredRollout]:
        query = select(RolloutRow).order_by(RolloutRow.id)
        if states is not None:
            query = query.where(RolloutRow.state.in_(sorted(states)))
        with self._reading() as session:
            return [_rollout(row) for row in session.scalars(query)]

    def rollout(self, platform: str, build: str) -> StoredRollout | None:
        with self._reading() as session:
            row = session.scalar(
                select(RolloutRow).where(RolloutRow.platform == platform, RolloutRow.build == build)
            )
            return None if row is None else _rollout(row)

    def start_rollout(
        self,
        platform: str,
        rollout: Rollout,
        members: Mapping[str, int],
        events: Sequence[NewEvent],
    ) -> StoredRollout:
        """Keep a new rollout and each device's wave; :class:`Conflict` if the supplement
        has one already (nothing changes then)."""
        try:
            with self._writing() as session:
                row = RolloutRow(
                    platform=platform,
                    build=rollout.build,
                    updated_at=rollout.started_at,
                    **_columns(rollout),
                )
                session.add(row)
                session.flush()
                if members:
                    session.execute(
                        insert(RolloutMember),
                        [
                            {"rollout_id": row.id, "device_id": d, "wave": w}
                            for d, w in members.items()
                        ],
                    )
                add_events(session, events)
                return StoredRollout(row.id, platform, rollout)
        except IntegrityError:
            raise Conflict(
                f"{platform}/{rollout.build} already has a rollout",
                hint="see GET /v1/admin/supplements/<platform>/<build>/rollout; a rollout's "
                "plan is fixed once it starts (abort it to withdraw the supplement)",
            ) from None

    def save_rollout(
        self, stored: StoredRollout, after: Rollout, events: Sequence[NewEvent]
    ) -> None:
        """Change ``stored`` (as it was read) to ``after``, with ``events``.

        :class:`Conflict` (and nothing changes) when its state or open wave is
        no longer what was read: a concurrent change (another worker's tick, an
        admin's abort or resume) is never overwritten, so a halt is never undone
        by an advance decided before it.
        """
        before = stored.rollout
        at = max((e.at for e in events), default=after.started_at)
        with self._writing() as session:
            done = session.execute(
                update(RolloutRow)
                .where(
                    RolloutRow.id == stored.id,
                    RolloutRow.state == before.state.value,
                    RolloutRow.current == before.current,
                )
                .values(updated_at=at, **_columns(after))
            )
            if done.rowcount == 0:  # type: ignore[attr-defined]
                if session.get(RolloutRow, stored.id) is None:
                    raise NotFound(f"no rollout of {stored.platform}/{before.build}")
                raise Conflict(
                    f"the rollout of {stored.platform}/{before.build} changed meanwhile",
                    hint="GET its rollout and act again",
                )
            add_events(session, events)

    def members(self, rollout_id: int) -> dict[str, int]:
        with self._reading() as session:
            rows = session.execute(
                select(RolloutMember.device_id, RolloutMember.wave).where(
                    RolloutMember.rollout_id == rollout_id
                )
            )
            return dict(rows.all())

    def fleet(self, platform: str, build: str) -> list[FleetDevice]:
        """The live devices of ``platform`` (a catalogue platform: an iOS rollout's are
        iPhones and iPads, :func:`~bsi.domain.inventory.reported_spellings`), each with
        when it first ran ``build``."""
        with self._reading() as session:
            first = dict(
                session.execute(
                    select(
                        SupplementalBuildChange.device_id,
                        func.min(SupplementalBuildChange.observed_at),
                    )
                    .where(SupplementalBuildChange.supplemental_build == build)
                    .group_by(SupplementalBuildChange.device_id)
                ).all()
            )
            rows: list[Any] = []
            for spelling in reported_spellings(platform):  # each from the platform index
                rows += session.execute(
                    select(
                        Device.id, DeviceGroup.name, Device.supplemental_build, Device.last_seen_at
                    )
                    .join(DeviceGroup, DeviceGroup.id == Device.group_id)
                    .where(
                        Device.platform == spelling,
                        Device.revoked_at.is_(None),
                        Device.decommissioned_at.is_(None),
                    )
                ).all()
        return [
            FleetDevice(d, g, b, seen, first.get(d))
            for d, g, b, seen in sorted(rows, key=lambda row: str(row[0]))
        ]

    # -- maintenance windows ------------------------------------------------------

    def windows(self) -> dict[int, dict[str, Any]]:
        with self._reading() as session:
            rows = session.execute(
                select(MaintenanceWindowRow.group_id, MaintenanceWindowRow.window)
            )
            return dict(rows.all())

    def set_window(self, group: str, window: dict[str, Any] | None, event: NewEvent) -> None:
        """Set (or with ``None`` remove) ``group``'s window; :class:`NotFound` for no group."""
        with self._writing() as session:
            group_id = session.scalar(select(DeviceGroup.id).where(DeviceGroup.name == group))
            if group_id is None:
                raise NotFound(f"no group {group!r}", hint="GET /v1/admin/groups lists them")
            found = session.get(MaintenanceWindowRow, group_id)
            if window is None:
                if found is None:
                    raise NotFound(f"group {group!r} has no maintenance window")
                session.delete(found)
            elif found is None:
                session.add(
                    MaintenanceWindowRow(group_id=group_id, window=window, updated_at=event.at)
                )
            else:
                found.window, found.updated_at = window, event.at
            add_events(session, [event])

    # -- events ----------------------------------------------------------------

    def record_events(self, events: Sequence[NewEvent]) -> None:
        if events:
            with self._writing() as session:
                add_events(session, events)

    def events(self, where: EventFilter) -> list[StoredEvent]:
        """Events in id order (oldest first) after ``where.after``, or with
        ``where.newest_first`` newest first below ``where.before``; at most ``where.limit``."""
        query = select(Event).where(Event.id > where.after)
        if where.newest_first:
            query = query.order_by(Event.id.desc())
            if where.before is not None:
                query = query.where(Event.id < where.before)
        else:
            query = query.order_by(Event.id)
        if where.kinds:
            query = query.where(Event.kind.in_(sorted(where.kinds)))
        if where.device_id is not None:
            query = query.where(Event.device_id == where.device_id)
        if where.build is not None:
            query = query.where(Event.build == where.build)
        if where.since is not None:
            query = query.where(Event.at >= where.since)
        with self._reading() as session:
            rows = session.scalars(query.limit(min(where.limit, MAX_EVENTS_PAGE)))
            return [
                StoredEvent(
                    r.id,
                    NewEvent(
                        r.kind, r.actor, r.reason, r.at, r.device_id, r.platform, r.build, r.detail
                    ),
                )
                for r in rows
            ]

    # -- webhooks ----------------------------------------------------------------

    def add_webhook(
        self, url: str, secret: str, kinds: frozenset[str], actor: str, now: datetime
    ) -> StoredWebhook:
        """A webhook that starts after the newest event: it is not sent the history."""
        with self._writing() as session:
            cursor = session.scalar(select(func.max(Event.id))) or 0
            row = Webhook(
                url=url,
                secret=secret,
                kinds=sorted(kinds),
                created_by=actor[:_ACTOR_LENGTH],
                created_at=now,
                cursor=cursor,
                attempts=0,
            )
            session.add(row)
            session.flush()
            return _webhook(row)

    def remove_webhook(self, webhook_id: int) -> None:
        with self._writing() as session:
            done = session.execute(delete(Webhook).where(Webhook.id == webhook_id))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no webhook {webhook_id}", hint="GET /v1/admin/webhooks")

    def webhooks(self) -> list[StoredWebhook]:
        with self._reading() as session:
            return [_webhook(r) for r in session.scalars(select(Webhook).order_by(Webhook.id))]

    def claim_webhook(self, webhook_id: int, cursor: int, now: datetime, until: datetime) -> bool:
        """Take the sending of the event after ``cursor`` until ``until``: false when another
        process has (the cursor moved, or its claim or backoff still runs). The claim is
        ``retry_at``: a process killed while sending leaves a delay, not a lost event."""
        with self._writing() as session:
            done = session.execute(
                update(Webhook)
                .where(
                    Webhook.id == webhook_id,
                    Webhook.cursor == cursor,
                    (Webhook.retry_at.is_(None)) | (Webhook.retry_at <= now),
                )
                .values(retry_at=until)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def webhook_delivered(self, webhook_id: int, event_id: int) -> None:
        with self._writing() as session:
            session.execute(
                update(Webhook)
                .where(Webhook.id == webhook_id, Webhook.cursor < event_id)
                .values(cursor=event_id, attempts=0, retry_at=None, last_error=None)
            )

    def webhook_failed(
        self, webhook_id: int, attempts: int, retry_at: datetime, error: str
    ) -> None:
        with self._writing() as session:
            session.execute(
                update(Webhook)
                .where(Webhook.id == webhook_id)
                .values(attempts=attempts, retry_at=retry_at, last_error=error[:_ERROR_LENGTH])
            )


def _webhook(row: Webhook) -> StoredWebhook:
    return StoredWebhook(
        row.id,
        row.url,
        row.secret,
        frozenset(row.kinds),
        row.created_by,
        row.cursor,
        row.attempts,
        row.retry_at,
        row.last_error,
    )


_ERROR_LENGTH = column_length(Webhook, "last_error")
_ACTOR_LENGTH = column_length(Event, "actor")
_HALTED_LENGTH = column_length(RolloutRow, "halted_because")


def _columns(rollout: Rollout) -> dict[str, Any]:
    because = rollout.halted_because
    return {
        "plan": dump_plan(rollout.plan),
        "state": rollout.state.value,
        "current": rollout.current,
        "started_at": rollout.started_at,
        "opened_at": rollout.opened_at,
        "halted_because": None if because is None else because[:_HALTED_LENGTH],
    }


def _rollout(row: RolloutRow) -> StoredRollout:
    waves = row.plan.get("waves") or []
    named = {g for wave in waves for g in wave.get("groups", [])}
    plan = read_plan(row.plan, known_groups=named)
    return StoredRollout(
        row.id,
        row.platform,
        Rollout(
            build=row.build,
            plan=plan,
            started_at=row.started_at,
            current=row.current,
            opened_at=row.opened_at,
            state=RolloutState(row.state),
            halted_because=row.halted_because,
        ),
    )
