"""The Store: every read and write the server makes, as small named operations.

It implements each narrow protocol of :mod:`bsi.store.protocols` (devices,
catalogue, declarations, credentials, events), which is what the server's
service depends on.

One implementation over SQLAlchemy serves SQLite and PostgreSQL; the
conformance tests in ``tests/store`` run every operation on both. Methods take
plain values and return plain values (domain objects or small records), so
callers never hold a session. Time is always passed in.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Row,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from bsi.domain.catalog import Catalog, Release, Supersession, Supplement, SupplementState
from bsi.domain.containers import CONTAINERS_ITEM
from bsi.domain.cves import dump_cvss_vectors, read_cvss_vectors
from bsi.domain.declarations import Declaration
from bsi.domain.eligibility import Decision
from bsi.domain.prerequisite import PREREQUISITE_BUILD, dump_base, read_base
from bsi.domain.status import DeviceState, supported_status_items
from bsi.domain.versions import Build, ProductVersion, SupplementVersion
from bsi.errors import (
    BsiError,
    Conflict,
    EnrollmentRefused,
    InvalidInput,
    InvalidStatusReport,
    NotFound,
    Unauthorized,
)
from bsi.store.database import Sessions, checkpoint, database_cause, require_current_schema
from bsi.store.events import NewEvent, add_events
from bsi.store.models import (
    CONTAINER_GROUP_COLUMNS,
    DECISION_GROUP_COLUMNS,
    DEVICE_LIST_FILTERS,
    NOT_REPORTED,
    NOT_REPORTED_MESSAGE,
    ApiKey,
    CatalogDeviceModel,
    CatalogRelease,
    CatalogSupplement,
    ContainerDecisionCount,
    Device,
    DeviceChannel,
    DeviceGroup,
    DeviceLifecycleEvent,
    EnrollmentToken,
    GroupDeclaration,
    RetryAllowance,
    SecurityEvent,
    ServerSecret,
    StoredDeclaration,
    SupplementalBuildChange,
    SyncState,
    column_length,
    container_group_counts,
    container_group_deltas,
    decision_group_counts,
    decision_group_deltas,
)
from bsi.strict import check_text

ROLES = ("admin", "read-only")
FOLD_DELTAS = 1_000
"""Decision-group changes (``models.decision_group_deltas``) a count reads before it folds
them: a read then sums at most this many rows beside the groups' counts."""
FEW_SEEN = 10_000
"""A last-seen range of fewer devices is listed (on SQLite) from the index of
``last_seen_at``, sorting at most this many; a wider one walks the id order, where at
least one device in ``fleet / FEW_SEEN`` is in it (1 % of a million)."""
ChannelMerge = Callable[[DeviceState | None], DeviceState]
"""previous state -> new state of a user channel."""
DEFAULT_GROUP = "default"
NANOMDM_DEVICE = "Device"
"""NanoMDM's ``X-Enrollment-Type`` of a device channel, whose enrollment id is the UDID."""


def secret_hash(secret: str) -> str:
    """Credentials are random 256-bit strings, so one SHA-256 is enough to store them."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who is checking in: a device, or (``channel``) one user channel of it."""

    device_id: str
    group_id: int
    channel: str | None = None
    """The user channel's own enrollment id; None for the device channel."""
    subscription: tuple[str, ...] | None = None
    """The status items this device is asked for; None: all of bsi's."""
    generation: int = 0
    """The credential generation it proved (0 for NanoMDM-forwarded devices)."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    """An enrollment id bsi knows, and the hardware identity known behind it."""

    enrollment_id: str
    identity: DeviceIdentity
    enrollment_type: str | None
    udid: str | None
    serial_number: str | None
    checked_out_at: datetime | None
    platform: str | None = None
    product_version: str | None = None
    status_capabilities: frozenset[str] | None = None
    """The status items the device says it supports (its client capabilities)."""


@dataclass(frozen=True, slots=True)
class NewEnrollment:
    """An enrollment NanoMDM told bsi about, or an admin imported.

    ``parent_id`` makes it a user channel of that (known) device. ``group``
    places a new device (default group if None); a known one keeps its group.
    Empty ``udid``/``serial_number`` keep what is known.
    """

    enrollment_id: str
    enrollment_type: str | None = None
    parent_id: str | None = None
    udid: str | None = None
    serial_number: str | None = None
    group: str | None = None
    enrolled_by: str = "import"

    def __post_init__(self) -> None:
        """Refuse what the ``devices`` columns cannot hold (PostgreSQL would fail the
        write; SQLite would store it): too long for its column, NUL, a lone surrogate."""
        for name in ("enrollment_type", "udid", "serial_number"):
            value = getattr(self, name)
            if value is not None:
                check_text(value, name, limit=column_length(Device, name))


@dataclass(frozen=True, slots=True)
class SecurityEventRecord:
    at: datetime
    kind: str
    enrollment_id: str | None
    source: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """After event ``id``: is ``device_id``'s credential of ``generation`` accepted?"""

    id: int
    device_id: str
    generation: int
    active: bool


@dataclass(frozen=True, slots=True)
class StoredStatus:
    """A device's stored state (None before its first report) and its version; the
    hardware it is bound to (trust on first use); its stored decision's columns."""

    state: DeviceState | None
    version: int
    udid: str | None = None
    serial_number: str | None = None
    decision: Mapping[str, Any] | None = None
    indexed: Mapping[str, Any] = field(default_factory=dict)
    """The stored values of the indexed columns a status write sets
    (:data:`_INDEXED_WRITE_COLUMNS`), for :attr:`StatusWrite.indexed`."""

    def holds(self, state: DeviceState, decision: Decision | None) -> bool:
        """Whether storing ``state`` and ``decision`` would change nothing, so that an
        unchanged report writes nothing (issue 18: the status path's cost is the
        database's). A host that reports containers is always written: its
        containers' decisions live in rows of their own, not in ``decision``."""
        return (
            self.state is not None
            and self.state == state
            and CONTAINERS_ITEM not in state.items
            and self.decision == _decision_columns(decision)
        )


KnownState = tuple[int, DeviceState]
"""A device's state as a caller of :meth:`Store.stored_statuses` last knew it, with the
status version it was stored at."""

DECISION_BATCH = 1000
"""Decisions :meth:`Store.store_decisions` writes per transaction."""
LAST_SEEN_BATCH = 500
"""Check-in times :meth:`Store.touch_devices` writes per transaction."""


@dataclass(frozen=True, slots=True)
class DeviceStateRow:
    """A device's state as :meth:`Store.device_states` reads it to decide again:
    ``version`` is its ``status_version`` (see :class:`DecidedDevice`)."""

    device_id: str
    group_id: int
    version: int
    state: DeviceState


@dataclass(frozen=True, slots=True)
class DecidedDevice:
    """A decision to store if the device's state is still at ``version``."""

    device_id: str
    version: int
    decision: Decision


@dataclass(frozen=True, slots=True)
class StoredDecisions:
    """What :meth:`Store.store_decisions` did: how many decisions landed, and the
    devices that reported since their state was read (decide them again)."""

    written: int
    stale: list[str]


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A merged state to store, if the device's state is still at ``version``, with the
    events its transitions tell of (kept only if the state is)."""

    device_id: str
    version: int
    previous: DeviceState | None
    state: DeviceState
    decision: Decision | None
    events: tuple[NewEvent, ...] = ()
    indexed: Mapping[str, Any] = field(default_factory=dict)
    """The indexed columns' values read with ``previous`` (:attr:`StoredStatus.indexed`);
    one the write would set to the same value is left as it is (empty: set them all)."""


@dataclass(frozen=True, slots=True)
class LatestRetries:
    """The newest retry allowance ids (0: none): of those for every device, and of each
    device's own (:meth:`Store.latest_retries`)."""

    everyone: int
    by_device: Mapping[str, int]

    def of(self, device_id: str) -> int:
        """The newest allowance ``device_id`` may act on (its own or every device's)."""
        return max(self.everyone, self.by_device.get(device_id, 0))


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device as the admin API shows it."""

    device_id: str
    group: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    platform: str | None
    product_version: str | None
    build: str | None
    supplemental_build: str | None
    supplemental_extra: str | None
    model_identifier: str | None
    decision_outcome: str | None
    decision_reason: str | None
    decision_supplement_build: str | None
    decision_message: str | None
    lifecycle: str
    """One of :data:`LIFECYCLES`."""


LIFECYCLES = ("active", "revoked", "decommissioned")


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """Admin filters on the device list; ``None`` means "any"."""

    group: str | None = None
    platform: str | None = None
    product_version: str | None = None
    build: str | None = None
    supplemental_build: str | None = None
    supplemental_extra: str | None = None
    decision_reason: str | None = None
    decision_outcome: str | None = None
    decision_supplement_build: str | None = None
    seen_before: datetime | None = None
    seen_after: datetime | None = None
    never_seen: bool | None = None
    stale_before: datetime | None = None
    """Not seen since this instant, or never seen."""
    lifecycle: str | None = None
    """One of :data:`LIFECYCLES`; None means active or revoked (not decommissioned)."""


@dataclass(frozen=True, slots=True)
class BuildChange:
    device_id: str
    supplemental_build: str | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class DecisionGroup:
    """Devices that share a platform, version, decision, the supplement it is about and
    the supplemental build they run (``installed_build``)."""

    platform: str | None
    product_version: str | None
    supplement_build: str | None
    outcome: str
    reason: str
    installed_build: str | None = None


@dataclass(slots=True)
class DecisionCounts:
    """Devices per decision group (never-reported devices as ``unknown``/``not-reported``),
    and in ``containers`` the running containers of hosts per the same groups (each
    container's own decision and supplement; its host's platform, no version)."""

    by_group: dict[DecisionGroup, int] = field(default_factory=dict)
    containers: dict[DecisionGroup, int] = field(default_factory=dict)

    def by_decision(self, *, containers: bool = False) -> dict[tuple[str, str], int]:
        """Devices (with ``containers``: hosts' running containers) per ``(outcome,
        reason)``, whatever their platform, version or build."""
        totals: dict[tuple[str, str], int] = {}
        for group, n in (self.containers if containers else self.by_group).items():
            key = (group.outcome, group.reason)
            totals[key] = totals.get(key, 0) + n
        return totals


class Store(Sessions):
    """Every store protocol of :mod:`bsi.store.protocols` on one SQLAlchemy engine."""

    def require_current_schema(self) -> None:
        """Raises :class:`~bsi.store.database.DatabaseError` unless the database
        answers and its schema is the one this bsi needs."""
        require_current_schema(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def checkpoint(self) -> None:
        checkpoint(self.engine)

    # -- groups ------------------------------------------------------------

    def ensure_group(self, name: str, now: datetime) -> int:
        with self._writing() as session:
            found = session.scalar(select(DeviceGroup.id).where(DeviceGroup.name == name))
            if found is not None:
                return found
            group = DeviceGroup(name=name, created_at=now)
            session.add(group)
            session.flush()
            return group.id

    def group_id(self, name: str) -> int:
        with self._reading() as session:
            found = session.scalar(select(DeviceGroup.id).where(DeviceGroup.name == name))
        if found is None:
            raise NotFound(f"no device group {name!r}")
        return found

    def groups(self) -> dict[int, str]:
        with self._reading() as session:
            rows = session.execute(select(DeviceGroup.id, DeviceGroup.name)).all()
        return {row[0]: row[1] for row in rows}

    # -- API keys ----------------------------------------------------------

    def create_api_key(self, name: str, role: str, now: datetime) -> str:
        """A new key; only its hash is stored, so the returned secret is shown once."""
        if role not in ROLES:
            raise InvalidInput(f"{role!r} is not a role", hint=f"use one of {', '.join(ROLES)}")
        check_text(name, "the API key's name", limit=column_length(ApiKey, "name"))
        secret = new_secret()
        try:
            with self._writing() as session:
                session.add(
                    ApiKey(name=name, key_hash=secret_hash(secret), role=role, created_at=now)
                )
        except IntegrityError as error:
            raise Conflict(f"an API key named {name!r} exists already") from error
        return secret

    def api_key_role(self, secret: str) -> str | None:
        with self._reading() as session:
            return session.scalar(
                select(ApiKey.role).where(
                    ApiKey.key_hash == secret_hash(secret), ApiKey.revoked.is_(False)
                )
            )

    def revoke_api_key(self, name: str) -> None:
        with self._writing() as session:
            done = session.execute(update(ApiKey).where(ApiKey.name == name).values(revoked=True))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"no API key named {name!r}")

    def has_api_keys(self) -> bool:
        with self._reading() as session:
            return session.scalar(select(func.count()).select_from(ApiKey)) != 0

    # -- enrollment --------------------------------------------------------

    def create_enrollment_token(
        self, group: str, expires_at: datetime, max_uses: int | None, now: datetime
    ) -> str:
        if max_uses is not None and max_uses < 1:
            raise InvalidInput(f"max uses must be at least 1, not {max_uses}")
        if expires_at <= now:
            raise InvalidInput(f"expiry {expires_at.isoformat()} is not in the future")
        group_id = self.group_id(group)
        secret = new_secret()
        with self._writing() as session:
            session.add(
                EnrollmentToken(
                    token_hash=secret_hash(secret),
                    group_id=group_id,
                    expires_at=expires_at,
                    max_uses=max_uses,
                    uses=0,
                    created_at=now,
                )
            )
        return secret

    def shared_secret(self, name: str) -> bytes:
        """A random secret shared by every server process, created on first use."""
        with self._reading() as session:
            found = session.scalar(select(ServerSecret.secret).where(ServerSecret.name == name))
        if found is None:
            try:
                with self._writing() as session:
                    session.add(ServerSecret(name=name, secret=secrets.token_hex(32)))
            except IntegrityError:
                pass  # another process created it first: use theirs
            with self._reading() as session:
                found = session.scalar(select(ServerSecret.secret).where(ServerSecret.name == name))
        assert found is not None
        return bytes.fromhex(found)

    def enroll(
        self,
        token: str,
        now: datetime,
        issue: Callable[[str, int], str] = lambda _device, _group: new_secret(),
    ) -> tuple[str, str]:
        """Spend one use of ``token``; returns (device id, device credential).

        ``issue(device_id, group_id)`` makes the credential; only its hash is kept.
        """
        device_id = secrets.token_hex(16)
        with self._writing() as session:
            row = session.scalar(
                select(EnrollmentToken)
                .where(EnrollmentToken.token_hash == secret_hash(token))
                .with_for_update()
            )
            if row is None:
                raise EnrollmentRefused("unknown enrollment token")
            if row.expires_at <= now:
                raise EnrollmentRefused(
                    f"enrollment token expired at {row.expires_at:%Y-%m-%d %H:%M}"
                )
            if row.max_uses is not None and row.uses >= row.max_uses:
                raise EnrollmentRefused(f"enrollment token used up ({row.max_uses} uses)")
            row.uses += 1
            credential = issue(device_id, row.group_id)
            session.add(
                Device(
                    id=device_id,
                    credential_hash=secret_hash(credential),
                    group_id=row.group_id,
                    enrolled_at=now,
                )
            )
        return device_id, credential

    # -- enrollments NanoMDM forwards ----------------------------------------

    def enrollment(self, enrollment_id: str) -> Enrollment | None:
        """The device, or user channel, known under ``enrollment_id``."""
        with self._reading() as session:
            device = session.get(Device, enrollment_id)
            if device is not None:
                return Enrollment(
                    enrollment_id,
                    DeviceIdentity(device.id, device.group_id),
                    device.enrollment_type,
                    device.udid,
                    device.serial_number,
                    device.checked_out_at,
                    device.platform,
                    device.product_version,
                    supported_status_items(device.status_items),
                )
            row = session.execute(
                select(DeviceChannel, Device)
                .join(Device, Device.id == DeviceChannel.device_id)
                .where(DeviceChannel.enrollment_id == enrollment_id)
            ).first()
        if row is None:
            return None
        channel, parent = row
        return Enrollment(
            enrollment_id,
            DeviceIdentity(parent.id, parent.group_id, channel.enrollment_id),
            channel.enrollment_type or None,
            parent.udid,
            parent.serial_number,
            channel.checked_out_at or parent.checked_out_at,
        )

    def register_enrollments(self, entries: Sequence[NewEnrollment], now: datetime) -> int:
        """Create or refresh every entry in one transaction; returns how many were new.

        A device comes before its channels in ``entries``; a channel whose
        parent is not known (here or before) refuses the whole batch with
        :class:`~bsi.errors.NotFound`. A known enrollment checked in again
        (NanoMDM's Authenticate or TokenUpdate) is no longer checked out.
        """
        groups = {name: self.group_id(name) for name in {e.group or DEFAULT_GROUP for e in entries}}
        created = 0
        with self._writing() as session:
            for entry in entries:
                if entry.parent_id:
                    created += _register_channel(session, entry, now)
                else:
                    created += _register_device(
                        session, entry, groups[entry.group or DEFAULT_GROUP], now
                    )
        return created

    def check_out(self, enrollment_id: str, now: datetime) -> DeviceIdentity:
        """NanoMDM's CheckOut: the enrollment (a device with all its channels) is gone."""
        with self._writing() as session:
            device = session.get(Device, enrollment_id)
            if device is not None:
                device.checked_out_at = now
                session.execute(
                    update(DeviceChannel)
                    .where(DeviceChannel.device_id == device.id)
                    .values(checked_out_at=now)
                )
                return DeviceIdentity(device.id, device.group_id)
            channel = session.get(DeviceChannel, enrollment_id)
            if channel is None:
                raise NotFound(f"no enrollment {enrollment_id!r}")
            channel.checked_out_at = now
            parent = session.get(Device, channel.device_id)
            assert parent is not None
            return DeviceIdentity(parent.id, parent.group_id, enrollment_id)

    def channels(self, device_id: str) -> list[dict[str, Any]]:
        """The user channels of a device, as the admin API shows them."""
        with self._reading() as session:
            rows = session.scalars(
                select(DeviceChannel)
                .where(DeviceChannel.device_id == device_id)
                .order_by(DeviceChannel.enrollment_id)
            ).all()
        return [
            {
                "enrollment_id": r.enrollment_id,
                "enrollment_type": r.enrollment_type,
                "enrolled_at": r.enrolled_at.isoformat(),
                "last_report_at": r.last_report_at.isoformat() if r.last_report_at else None,
                "checked_out_at": r.checked_out_at.isoformat() if r.checked_out_at else None,
                "status_items": dict(r.status_items),
                "status_errors": list(r.status_errors),
                "status_invalid": list(r.status_invalid),
            }
            for r in rows
        ]

    def save_channel_state(self, enrollment_id: str, merge: ChannelMerge, now: datetime) -> None:
        """Fold a user channel's report into that channel alone, never into its device."""
        with self._writing() as session:
            row = session.get(DeviceChannel, enrollment_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no user channel {enrollment_id!r}")
            state = merge(_stored_state(row))
            row.status_items = state.items
            row.status_errors = list(state.errors)
            row.status_invalid = list(state.invalid)
            row.last_report_at = now

    def record_security_event(
        self, kind: str, enrollment_id: str | None, source: str | None, detail: str, now: datetime
    ) -> None:
        with self._writing() as session:
            session.add(
                SecurityEvent(
                    at=now,
                    kind=kind,
                    enrollment_id=enrollment_id[:255] if enrollment_id else None,
                    source=source[:64] if source else None,
                    detail=detail[:1024],
                )
            )

    def security_events(self, limit: int = 100) -> list[SecurityEventRecord]:
        with self._reading() as session:
            rows = session.scalars(
                select(SecurityEvent).order_by(SecurityEvent.id.desc()).limit(limit)
            ).all()
        return [
            SecurityEventRecord(_aware(r.at), r.kind, r.enrollment_id, r.source, r.detail)
            for r in rows
        ]

    def sync_changed_at(self, scope: str, token: str, now: datetime) -> datetime:
        """When the set served under ``scope`` last changed: now if ``token`` is new to it."""
        with self._reading() as session:
            row = session.get(SyncState, scope)
            if row is not None and row.token == token:
                return _aware(row.changed_at)
        try:
            with self._writing() as session:
                row = session.get(SyncState, scope, with_for_update=True)
                if row is None:
                    session.add(SyncState(scope=scope, token=token, changed_at=now))
                    return now
                if row.token != token:
                    row.token, row.changed_at = token, now
                return _aware(row.changed_at)
        except IntegrityError:  # another process recorded it first: use theirs
            with self._reading() as session:
                row = session.get(SyncState, scope)
                assert row is not None
                return _aware(row.changed_at)

    def device_by_credential(self, credential: str) -> DeviceIdentity | None:
        with self._reading() as session:
            row = session.execute(
                select(Device.id, Device.group_id).where(
                    Device.credential_hash == secret_hash(credential)
                )
            ).first()
        return DeviceIdentity(row[0], row[1]) if row else None

    def device_identity(self, device_id: str) -> DeviceIdentity | None:
        with self._reading() as session:
            row = session.execute(
                select(Device.id, Device.group_id, Device.credential_generation).where(
                    Device.id == device_id
                )
            ).first()
        return DeviceIdentity(row[0], row[1], generation=row[2]) if row else None

    def touch_devices(self, last_seen: dict[str, datetime]) -> None:
        """Record check-ins in batches: the hot path never writes per request.

        Each :data:`LAST_SEEN_BATCH` devices are one transaction: a status write that
        needs one of their rows waits for that batch only (one transaction for a whole
        flush held ten thousand rows for about 0.3 s on PostgreSQL, and every status
        report meanwhile waited; issue 18). Rows are locked in id order, so two server
        processes flushing at once cannot deadlock. PostgreSQL gets each batch in one
        statement (arrays unnested), SQLite one prepared statement executed many times.
        A failure leaves the batches written before it written.
        """
        ids = sorted(last_seen)
        for start in range(0, len(ids), LAST_SEEN_BATCH):
            self._touch_devices(ids[start : start + LAST_SEEN_BATCH], last_seen)

    def _touch_devices(self, ids: list[str], last_seen: Mapping[str, datetime]) -> None:
        """One transaction of :meth:`touch_devices`: the check-in times of ``ids``."""
        with self._writing() as session:
            if self.engine.dialect.name == "postgresql":
                # Rows a status write holds are skipped: that write sets
                # last_seen itself. Locks are taken in id order: no deadlocks.
                session.execute(
                    text(
                        "UPDATE devices AS d SET last_seen_at = v.seen FROM "
                        "unnest(CAST(:ids AS varchar[]), CAST(:seen AS timestamptz[])) "
                        "AS v(id, seen) WHERE d.id = v.id AND d.id IN (SELECT id FROM devices "
                        "WHERE id = ANY(:ids) ORDER BY id FOR UPDATE SKIP LOCKED)"
                    ),
                    {"ids": ids, "seen": [last_seen[i] for i in ids]},
                )
                return
            # SQLite: one prepared statement run by the driver's C loop; the
            # value is written in the form SQLAlchemy's SQLite DATETIME uses.
            session.connection().exec_driver_sql(
                "UPDATE devices SET last_seen_at = ? WHERE id = ?",
                [(last_seen[i].strftime("%Y-%m-%d %H:%M:%S.%f"), i) for i in ids],
            )

    # -- device lifecycle --------------------------------------------------

    def revoke_device(self, device_id: str, now: datetime) -> None:
        """Refuse the device's credentials from now on; its record and history stay."""
        self._lifecycle(device_id, now, "revoke")

    def decommission_device(self, device_id: str, now: datetime) -> None:
        """Revoke, and leave the device out of lists and compliance; history is kept."""
        self._lifecycle(device_id, now, "decommission")

    def reenroll_device(
        self, device_id: str, now: datetime, issue: Callable[[str, int, int], str]
    ) -> str:
        """A new credential (next generation) for a device; earlier ones stay refused.

        ``issue(device_id, group_id, generation)`` makes it; only its hash is kept.
        """
        credential = ""

        def reissue(row: Device) -> None:
            nonlocal credential
            row.credential_generation += 1
            credential = issue(row.id, row.group_id, row.credential_generation)
            row.credential_hash = secret_hash(credential)
            row.revoked_at = row.decommissioned_at = None

        self._lifecycle(device_id, now, "re-enroll", reissue)
        return credential

    def _lifecycle(
        self,
        device_id: str,
        now: datetime,
        action: str,
        change: Callable[[Device], None] | None = None,
    ) -> None:
        with self._writing() as session:
            row = session.scalar(select(Device).where(Device.id == device_id).with_for_update())
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            if action in ("revoke", "decommission"):
                row.revoked_at = row.revoked_at or now
            if action == "decommission":
                row.decommissioned_at = row.decommissioned_at or now
            if change is not None:
                change(row)
            session.add(
                DeviceLifecycleEvent(
                    device_id=device_id,
                    action=action,
                    credential_generation=row.credential_generation,
                    active=row.revoked_at is None,
                    at=now,
                )
            )

    def lifecycle_events(self, after: int, also: Sequence[int] = ()) -> list[LifecycleEvent]:
        """Revocations and re-enrolments with an id above ``after`` or in ``also``, oldest first."""
        with self._reading() as session:
            rows = session.execute(
                select(
                    DeviceLifecycleEvent.id,
                    DeviceLifecycleEvent.device_id,
                    DeviceLifecycleEvent.credential_generation,
                    DeviceLifecycleEvent.active,
                )
                .where(or_(DeviceLifecycleEvent.id > after, DeviceLifecycleEvent.id.in_(also)))
                .order_by(DeviceLifecycleEvent.id)
            ).all()
        return [LifecycleEvent(*row) for row in rows]

    # -- declarations ------------------------------------------------------

    def put_declaration(self, declaration: Declaration, now: datetime) -> bool:
        """Create or replace by identifier; True when something changed."""
        with self._writing() as session:
            row = session.scalar(
                select(StoredDeclaration).where(
                    StoredDeclaration.identifier == declaration.identifier
                )
            )
            if row is None:
                session.add(
                    StoredDeclaration(
                        identifier=declaration.identifier,
                        type=declaration.type,
                        server_token=declaration.server_token,
                        payload=declaration.payload,
                        updated_at=now,
                    )
                )
                return True
            if (row.type, row.server_token, row.payload) == (
                declaration.type,
                declaration.server_token,
                declaration.payload,
            ):
                return False
            row.type = declaration.type
            row.server_token = declaration.server_token
            row.payload = declaration.payload
            row.updated_at = now
            return True

    def delete_declaration(self, identifier: str) -> None:
        with self._writing() as session:
            row = session.scalar(
                select(StoredDeclaration).where(StoredDeclaration.identifier == identifier)
            )
            if row is None:
                raise NotFound(f"no declaration {identifier!r}")
            session.execute(
                delete(GroupDeclaration).where(GroupDeclaration.declaration_id == row.id)
            )
            session.delete(row)

    def declarations(self) -> list[tuple[Declaration, list[str]]]:
        """Every declaration with the groups it is assigned to."""
        with self._reading() as session:
            rows = session.scalars(select(StoredDeclaration).order_by(StoredDeclaration.identifier))
            assignments = session.execute(
                select(GroupDeclaration.declaration_id, DeviceGroup.name).join(
                    DeviceGroup, DeviceGroup.id == GroupDeclaration.group_id
                )
            ).all()
            groups_of: dict[int, list[str]] = {}
            for declaration_id, name in assignments:
                groups_of.setdefault(declaration_id, []).append(name)
            return [(_declaration(row), sorted(groups_of.get(row.id, []))) for row in rows]

    def assign(self, identifier: str, group: str, *, assigned: bool) -> None:
        group_id = self.group_id(group)
        with self._writing() as session:
            declaration_id = session.scalar(
                select(StoredDeclaration.id).where(StoredDeclaration.identifier == identifier)
            )
            if declaration_id is None:
                raise NotFound(f"no declaration {identifier!r}")
            key = {"group_id": group_id, "declaration_id": declaration_id}
            exists = session.get(GroupDeclaration, (group_id, declaration_id)) is not None
            if assigned and not exists:
                session.execute(insert(GroupDeclaration).values(**key))
            elif not assigned and exists:
                session.execute(
                    delete(GroupDeclaration).where(
                        GroupDeclaration.group_id == group_id,
                        GroupDeclaration.declaration_id == declaration_id,
                    )
                )

    def group_declarations(self, group_id: int) -> list[Declaration]:
        with self._reading() as session:
            rows = session.scalars(
                select(StoredDeclaration)
                .join(GroupDeclaration, GroupDeclaration.declaration_id == StoredDeclaration.id)
                .where(GroupDeclaration.group_id == group_id)
                .order_by(StoredDeclaration.identifier)
            )
            return [_declaration(row) for row in rows]

    # -- device state ------------------------------------------------------

    def device_status(self, device_id: str) -> tuple[dict[str, Any], list[Any]] | None:
        with self._reading() as session:
            row = session.execute(
                select(Device.status_items, Device.status_errors).where(Device.id == device_id)
            ).first()
        return (dict(row[0]), list(row[1])) if row else None

    def stored_status(self, device_id: str) -> StoredStatus:
        """A device's state, version, hardware and decision, read outside any write
        transaction, in one statement of the columns it needs.

        Raises NotFound for an unknown device and Unauthorized for one that is
        revoked or decommissioned: its reports are not stored any more.
        """
        found = self.stored_statuses([device_id])[device_id]
        if isinstance(found, BsiError):
            raise found
        return found

    def stored_statuses(
        self, device_ids: Iterable[str], known: Mapping[str, KnownState] | None = None
    ) -> dict[str, StoredStatus | BsiError]:
        """:meth:`stored_status` of several devices in one statement (``WHERE id IN``), as
        the status writer reads a batch: each device's stored status, or the error that
        refuses its reports (:class:`~bsi.errors.NotFound`, :class:`~bsi.errors.Unauthorized`).

        ``known``: ``(status version, state)`` the caller already holds, by device id
        (the writer's last writes). A stored state at that version and with the same
        items, errors and findings is that object, not built again: building one checks
        every item (issue 18), and every write of a state moves its version on."""
        wanted = sorted(set(device_ids))
        with self._reading() as session:
            rows = session.connection().execute(_STORED_STATUSES, {"device_ids": wanted}).all()
        found: dict[str, StoredStatus | BsiError] = {
            device_id: NotFound(f"no device {device_id!r}") for device_id in wanted
        }
        held = known or {}
        for row in rows:
            found[row.id] = _stored_status(row, held.get(row.id))
        return found

    def write_device_states(
        self, batch: Sequence[StatusWrite], now: datetime
    ) -> list[DeviceState | BsiError | None]:
        """Write merged states in one transaction (group commit).

        Each write is a compare-and-set on the device's ``status_version``: it
        lands only if nothing was stored since its merge read the state, and
        otherwise comes back as ``None`` (merge again). The merge itself ran
        before, outside this transaction, so a huge report holds no lock while
        it is folded. A write the database or bsi refuses (a value it cannot
        hold, a revoked device) comes back as its error and the other reports
        of the batch still land. A batch is first written as one statement
        executed for every report (:func:`_write_states`); only when one of its
        writes does not land, or is refused, is it written again report by
        report, each in a savepoint of its own (two statements more per report;
        both cases are rare). A change of supplemental build is recorded with
        ``now``.
        """
        # Rows are written in device id order, as decision passes lock them: two
        # transactions that lock rows in one order cannot deadlock each other.
        order = sorted(range(len(batch)), key=lambda i: batch[i].device_id)
        try:
            with self._writing() as session:
                if _write_states(session, [batch[i] for i in order], now):
                    return [write.state for write in batch]
                raise _NotAllLanded  # undoes the batch: written again report by report
        except _NotAllLanded:
            pass
        except (BsiError, StatementError, ValueError) as error:
            if isinstance(error, OperationalError | InterfaceError):
                raise  # the database is away: every report of the batch fails alike
        results: list[DeviceState | BsiError | None] = [None] * len(batch)
        with self._writing() as session:
            for i in order:
                results[i] = _write_alone(session, batch[i], now)
        return results

    def store_decisions(self, decisions: Iterable[DecidedDevice]) -> StoredDecisions:
        """Write recomputed decisions in batches of :data:`DECISION_BATCH`, each a
        compare-and-set on the device's ``status_version``.

        A decision lands only if the device's state is still the one it was decided
        from (``version``, read by :meth:`device_states`): a device that reported
        meanwhile keeps the decision its report stored (decided from its newer state),
        and comes back in ``stale`` to be decided again from what it reported. The
        version is not bumped: a concurrent report merges again only when its write
        would have left the decision columns as it read them (:func:`_write_states`).
        """
        written, stale = 0, list[str]()
        batch: list[DecidedDevice] = []
        for decided in decisions:
            batch.append(decided)
            if len(batch) >= DECISION_BATCH:
                done = self.write_decisions(batch)
                written, stale = written + done.written, stale + done.stale
                batch = []
        done = self.write_decisions(batch)
        return StoredDecisions(written + done.written, stale + done.stale)

    def write_decisions(self, batch: Sequence[DecidedDevice]) -> StoredDecisions:
        """One transaction of :meth:`store_decisions`. A device whose row a concurrent
        status write holds is not waited for: it comes back in ``stale`` (read it again)."""
        if not batch:
            return StoredDecisions(0, [])
        table = _DEVICES
        columns = list(_decision_columns(None))
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("b_id"),
                table.c.status_version == bindparam("b_version"),
            )
            .values({name: bindparam(f"b_{name}") for name in columns})
        )
        with self._writing() as session:
            # Rows a status write holds now are skipped, never waited for: a pass that
            # waited on one report's row while that report's group commit waited on a row
            # of the pass deadlocked on PostgreSQL (SQLite has one writer at a time).
            ids = sorted(d.device_id for d in batch)
            locked = set(
                session.scalars(
                    select(Device.id)
                    .where(Device.id.in_(ids))
                    .order_by(Device.id)
                    .with_for_update(skip_locked=True)
                )
            )
            mine = [d for d in batch if d.device_id in locked]
            stale = {d.device_id for d in batch if d.device_id not in locked}
            rows = [
                {
                    "b_id": d.device_id,
                    "b_version": d.version,
                    **{f"b_{k}": v for k, v in _decision_columns(d.decision).items()},
                }
                for d in mine
            ]
            done = session.execute(statement, rows) if rows else None
            if done is not None and done.rowcount != len(rows):  # type: ignore[attr-defined]
                # which lost the race: a version only ever grows, so any other one did
                wanted = {d.device_id: d.version for d in mine}
                found = session.execute(
                    select(Device.id, Device.status_version).where(Device.id.in_(list(wanted)))
                ).all()
                now_at = dict(found)
                stale |= {d for d, v in wanted.items() if now_at.get(d, v) != v}
            landed = {d.device_id: d.decision for d in mine if d.device_id not in stale}
            _replace_container_decisions(session, landed)
        return StoredDecisions(len(landed), sorted(stale))

    def reported_platforms(self) -> list[str]:
        """Every platform a live device reported, as it spelled it, read from the kept
        decision counts (as many rows as decision groups, however many devices)."""
        with self._reading() as session:
            found = {group[0] for group, _ in _kept(session, *KEPT[0])}
        return sorted(p for p in found if p)

    def device_states(
        self,
        batch_size: int = 1000,
        *,
        platforms: Sequence[str] | None = None,
        groups: Sequence[int] | None = None,
        devices: Sequence[str] | None = None,
    ) -> Iterator[list[DeviceStateRow]]:
        """The reporting (not decommissioned) devices' states, in batches, for deciding
        again: every device when no filter is given, else those on one of ``platforms``
        (as devices spelled them), in one of ``groups`` or named in ``devices``, each
        once. Each filter is walked in id order on its own index, so a change that
        concerns few devices reads only theirs."""
        if platforms is None and groups is None and devices is None:
            yield from self._states_where(batch_size, [])
            return
        platform_set, group_set = set(platforms or ()), set(groups or ())
        for platform in sorted(platform_set):
            yield from self._states_where(batch_size, [Device.platform == platform])
        for group in sorted(group_set):
            for batch in self._states_where(batch_size, [Device.group_id == group]):
                kept = [r for r in batch if r.state.platform not in platform_set]
                if kept:
                    yield kept
        named = sorted(set(devices or ()))
        for start in range(0, len(named), batch_size):
            chunk = named[start : start + batch_size]
            for batch in self._states_where(batch_size, [Device.id.in_(chunk)]):
                kept = [
                    r
                    for r in batch
                    if r.state.platform not in platform_set and r.group_id not in group_set
                ]
                if kept:
                    yield kept

    def count_device_states(
        self,
        *,
        platforms: Sequence[str] | None = None,
        groups: Sequence[int] | None = None,
        devices: Sequence[str] | None = None,
    ) -> int:
        """How many devices :meth:`device_states` yields for the same filters."""
        query = select(func.count(Device.id)).where(*_deciding())
        if not (platforms is None and groups is None and devices is None):
            query = query.where(
                or_(
                    Device.platform.in_(list(platforms or ())),
                    Device.group_id.in_(list(groups or ())),
                    Device.id.in_(list(devices or ())),
                )
            )
        with self._reading() as session:
            return session.scalar(query) or 0

    def _states_where(self, batch_size: int, where: list[Any]) -> Iterator[list[DeviceStateRow]]:
        after = ""
        while True:
            with self._reading() as session:
                rows = session.execute(
                    select(
                        Device.id,
                        Device.group_id,
                        Device.status_version,
                        Device.status_items,
                        Device.status_errors,
                        Device.status_invalid,
                    )
                    .where(Device.id > after, *_deciding(), *where)
                    .order_by(Device.id)
                    .limit(batch_size)
                ).all()
            if not rows:
                return
            yield [
                DeviceStateRow(r[0], r[1], r[2], DeviceState(dict(r[3]), tuple(r[4]), tuple(r[5])))
                for r in rows
            ]
            after = rows[-1][0]

    def list_devices(
        self, filters: DeviceFilter, *, after: str | None = None, limit: int = 100
    ) -> list[DeviceRecord]:
        """Devices matching ``filters``, ordered by id, from just after ``after``."""
        with self._reading() as session:
            names = dict(session.execute(select(DeviceGroup.id, DeviceGroup.name)).all())
            # Without value statistics SQLite walks the id order for any last-seen range,
            # reading the whole table when few devices are in it: it is told when so.
            few = self.engine.dialect.name == "sqlite" and _few_seen(session, filters)
            query = _filtered(select(Device), filters, names, few_seen=few)
            if after:
                query = query.where(Device.id > after)
            query = query.order_by(Device.id).limit(limit)
            return [_record(device, names[device.group_id]) for device in session.scalars(query)]

    def count_devices(self, filters: DeviceFilter) -> int:
        """How many devices match ``filters`` (counts every match: not an admin page)."""
        with self._reading() as session:
            names = dict(session.execute(select(DeviceGroup.id, DeviceGroup.name)).all())
            return session.scalar(_filtered(select(func.count(Device.id)), filters, names)) or 0

    def device_detail(self, device_id: str) -> dict[str, Any]:
        """What the admin API adds to a device's record: identity, status findings, channels."""
        with self._reading() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFound(f"no device {device_id!r}")
            detail = {
                "enrollment_type": device.enrollment_type,
                "enrolled_by": device.enrolled_by,
                "udid": device.udid,
                "serial_number": device.serial_number,
                "checked_out_at": device.checked_out_at.isoformat()
                if device.checked_out_at
                else None,
                "status_errors": list(device.status_errors),
                "status_invalid": list(device.status_invalid),
            }
        return {**detail, "channels": self.channels(device_id)}

    def get_device(self, device_id: str) -> tuple[DeviceRecord, dict[str, Any]]:
        with self._reading() as session:
            row = session.execute(
                select(Device, DeviceGroup.name)
                .join(DeviceGroup, DeviceGroup.id == Device.group_id)
                .where(Device.id == device_id)
            ).first()
        if row is None:
            raise NotFound(f"no device {device_id!r}")
        return _record(row[0], row[1]), dict(row[0].status_items)

    def decision_counts(self) -> DecisionCounts:
        """Devices (not decommissioned) per :class:`DecisionGroup`, and live hosts' running
        containers, read from the counts the database keeps (``models.decision_group_counts``,
        ``models.container_group_counts``): as many rows as groups, however many devices.
        More than :data:`FOLD_DELTAS` changes since the last fold are folded in afterwards."""
        counts = DecisionCounts()
        with self._reading() as session:
            for found, n in _kept(session, *KEPT[0]):
                platform, version, build, outcome, reason, installed = found
                if outcome is None:  # not written by bsi (it stores not-reported): fail closed
                    outcome, reason = NOT_REPORTED
                group = DecisionGroup(platform, version, build, outcome, reason or "", installed)
                counts.by_group[group] = counts.by_group.get(group, 0) + n
            for found, n in _kept(session, *KEPT[1]):
                platform, build, outcome, reason, installed = found
                group = DecisionGroup(platform, None, build, outcome or "", reason or "", installed)
                counts.containers[group] = counts.containers.get(group, 0) + n
            deltas = sum(
                session.scalar(select(func.count()).select_from(table)) or 0 for _, table, _ in KEPT
            )
        if deltas > FOLD_DELTAS:
            self.fold_decision_deltas()
        return counts

    def fold_decision_deltas(self) -> None:
        """Add the changes the triggers appended into the kept counts and drop them.

        PostgreSQL: one statement deletes the changes it sees and adds exactly those
        (one committed meanwhile stays for the next fold; two folds never take the
        same one), locking counters in key order (folds never deadlock). SQLite: the
        write lock is held from the start, so nothing lands in between.
        """
        with self._writing() as session:
            for counts, deltas, names in KEPT:
                columns = ", ".join(names)
                upsert = (
                    f"ON CONFLICT ({columns}) DO UPDATE SET "
                    f"count = {counts.name}.count + excluded.count"
                )
                if self.engine.dialect.name == "postgresql":
                    session.execute(
                        text(
                            f"WITH moved AS (DELETE FROM {deltas.name} RETURNING {columns}, "
                            f"change) INSERT INTO {counts.name} ({columns}, count) "
                            f"SELECT {columns}, sum(change) FROM moved GROUP BY {columns} "
                            f"ORDER BY {columns} {upsert}"
                        )
                    )
                    continue
                session.execute(
                    text(
                        f"INSERT INTO {counts.name} ({columns}, count) SELECT {columns}, "
                        f"sum(change) FROM {deltas.name} WHERE true GROUP BY {columns} {upsert}"
                    )
                )
                session.execute(delete(deltas))

    def build_changes(self, supplemental_builds: Sequence[str]) -> list[BuildChange]:
        """Each device's first arrival on each of ``supplemental_builds``."""
        with self._reading() as session:
            rows = session.execute(
                select(
                    SupplementalBuildChange.device_id,
                    SupplementalBuildChange.supplemental_build,
                    func.min(SupplementalBuildChange.observed_at),
                )
                .where(SupplementalBuildChange.supplemental_build.in_(supplemental_builds))
                .group_by(
                    SupplementalBuildChange.device_id, SupplementalBuildChange.supplemental_build
                )
            ).all()
        return [BuildChange(d, b, _aware(t)) for d, b, t in rows]

    # -- catalogue ---------------------------------------------------------

    def catalog(self) -> Catalog:
        with self._reading() as session:
            supplements = tuple(_supplement(r) for r in session.scalars(select(CatalogSupplement)))
            releases = tuple(_release(r) for r in session.scalars(select(CatalogRelease)))
            models = {
                r.model_identifier: frozenset(r.device_ids)
                for r in session.scalars(select(CatalogDeviceModel))
            }
        return Catalog(releases, supplements, models, source="bsi database")

    def replace_catalog(self, catalog: Catalog, origin: str) -> None:
        """Store ``catalog`` as the whole catalogue (callers merge before)."""
        with self._writing() as session:
            session.execute(delete(CatalogSupplement))
            session.execute(delete(CatalogRelease))
            session.execute(delete(CatalogDeviceModel))
            session.add_all(_supplement_row(s, origin) for s in catalog.supplements)
            session.add_all(_release_row(r) for r in catalog.releases)
            session.add_all(
                CatalogDeviceModel(model_identifier=m, device_ids=sorted(ids))
                for m, ids in catalog.device_ids_by_model.items()
            )

    def allow_retry(self, platform: str, build: str, device_id: str | None, now: datetime) -> int:
        """Allow ``build`` again on ``device_id`` (every device when ``None``); the new id.

        :class:`NotFound` when the catalogue has no such supplement or the
        device is not enrolled; nothing is stored then.
        """
        with self._writing() as session:
            known = session.scalar(
                select(CatalogSupplement.id).where(
                    CatalogSupplement.platform == platform, CatalogSupplement.build == build
                )
            )
            if known is None:
                raise NotFound(f"no {platform} supplement with build {build!r}")
            if device_id is not None and session.get(Device, device_id) is None:
                raise NotFound(f"no device {device_id!r}")
            row = RetryAllowance(
                platform=platform, build=build, device_id=device_id, created_at=now
            )
            session.add(row)
            session.flush()
            return row.id

    def retries_after(self, device_id: str, after: int) -> list[tuple[int, str, str]]:
        """``(id, platform, build)`` of the allowances for ``device_id`` above id ``after``."""
        with self._reading() as session:
            rows = session.execute(
                select(RetryAllowance.id, RetryAllowance.platform, RetryAllowance.build)
                .where(
                    RetryAllowance.id > after,
                    or_(RetryAllowance.device_id.is_(None), RetryAllowance.device_id == device_id),
                )
                .order_by(RetryAllowance.id)
                .limit(1000)
            ).all()
        return [(row[0], row[1], row[2]) for row in rows]

    def latest_retries(self) -> LatestRetries:
        """The newest retry allowance's id for every device and for each device, in one
        grouped read (the server keeps it a few seconds: every catalogue answer names it)."""
        with self._reading() as session:
            rows = session.execute(
                select(RetryAllowance.device_id, func.max(RetryAllowance.id)).group_by(
                    RetryAllowance.device_id
                )
            ).all()
        by_device = {str(device_id): int(latest) for device_id, latest in rows if device_id}
        everyone = next((int(latest) for device_id, latest in rows if device_id is None), 0)
        return LatestRetries(everyone, by_device)

    def set_supplement_state(self, platform: str, build: str, state: SupplementState) -> None:
        """Pause, resume or withdraw; withdrawn is final (DESIGN rule 9), so it never changes."""
        with self._writing() as session:
            current = session.scalar(
                select(CatalogSupplement.published_state)
                .where(CatalogSupplement.platform == platform, CatalogSupplement.build == build)
                .with_for_update()
            )
            if current is None:
                raise NotFound(f"no {platform} supplement with build {build!r}")
            if (
                current == SupplementState.WITHDRAWN.value
                and state is not SupplementState.WITHDRAWN
            ):
                raise Conflict(
                    f"{platform} supplement {build} was withdrawn; withdrawn is final",
                    hint="publish a new letter to replace it (Apple shipped (c) after "
                    "withdrawing 16.5.1 (a))",
                )
            session.execute(
                update(CatalogSupplement)
                .where(CatalogSupplement.platform == platform, CatalogSupplement.build == build)
                .values(published_state=state.value)
            )


# -- row <-> domain ----------------------------------------------------------


def _register_device(session: Session, entry: NewEnrollment, group_id: int, now: datetime) -> int:
    device = session.get(Device, entry.enrollment_id, with_for_update=True)
    created = device is None
    if device is None:
        if session.get(DeviceChannel, entry.enrollment_id) is not None:
            raise Conflict(f"{entry.enrollment_id!r} is a user channel, not a device")
        device = Device(id=entry.enrollment_id, group_id=group_id, enrolled_at=now)
        device.enrolled_by = entry.enrolled_by
        if entry.enrollment_type == NANOMDM_DEVICE:
            device.udid = entry.enrollment_id  # NanoMDM names a device channel by its UDID
        session.add(device)
    device.checked_out_at = None
    device.enrollment_type = entry.enrollment_type or device.enrollment_type
    device.udid = entry.udid or device.udid
    device.serial_number = entry.serial_number or device.serial_number
    session.flush()
    return int(created)


def _register_channel(session: Session, entry: NewEnrollment, now: datetime) -> int:
    assert entry.parent_id
    if session.get(Device, entry.parent_id) is None:
        raise NotFound(
            f"user channel {entry.enrollment_id!r} names parent {entry.parent_id!r}, "
            "which bsi does not know",
            hint="the device's own enrollment must come first",
        )
    if session.get(Device, entry.enrollment_id) is not None:
        raise Conflict(f"{entry.enrollment_id!r} is a device, not a user channel")
    channel = session.get(DeviceChannel, entry.enrollment_id, with_for_update=True)
    if channel is None:
        session.add(
            DeviceChannel(
                enrollment_id=entry.enrollment_id,
                device_id=entry.parent_id,
                enrollment_type=entry.enrollment_type or "",  # "": not told
                enrolled_at=now,
            )
        )
        session.flush()
        return 1
    if channel.device_id != entry.parent_id:
        raise Conflict(
            f"user channel {entry.enrollment_id!r} belongs to {channel.device_id!r}, "
            f"not {entry.parent_id!r}"
        )
    channel.checked_out_at = None
    channel.enrollment_type = entry.enrollment_type or channel.enrollment_type
    return 0


def _write_alone(
    session: Session, write: StatusWrite, now: datetime
) -> DeviceState | BsiError | None:
    """:func:`_write_state` in a savepoint of its own: a write bsi or the database
    refuses comes back as its error and undoes only itself."""
    try:
        with session.begin_nested():
            return _write_state(session, write, now)
    except BsiError as error:
        return error
    except (StatementError, ValueError) as error:
        if isinstance(error, OperationalError | InterfaceError):
            raise
        cause = database_cause(error)
        return InvalidStatusReport(
            f"the database refused this status report: {type(cause).__name__}",
            hint="send only values Apple's status item schema allows",
        )


class _NotAllLanded(Exception):
    """A batch of state writes in which another write of a device landed first."""


def _write_states(session: Session, writes: Sequence[StatusWrite], now: datetime) -> bool:
    """Compare-and-set every device's state in one statement executed for each write
    (``executemany``: the status path builds no SQL expression and no ORM object per
    report; issue 18: the database's overhead, not the rules, is its cost), then
    record what the writes changed besides. False, with the transaction to undo, when
    fewer rows than writes were updated: a device was written since its merge read it,
    or was revoked. Raises :class:`~bsi.errors.InvalidStatusReport` for a value too
    long for its column."""
    connection = session.connection()
    landed = 0
    pairs = [(write, _state_columns(write.state, write.decision, now)) for write in writes]
    if connection.dialect.name == "postgresql":
        # PostgreSQL tells which indexes an update touches by the values it writes, not
        # by the columns the statement names (an update that changes no indexed value
        # can stay on its page, HOT), so one statement serves every write: a column the
        # write keeps is flagged, set to the value it was read with, and must still hold
        # it. One statement executed for every write is one round trip (a pipeline); a
        # statement per run of alike writes was one round trip each (issue 18).
        parameters = [
            {**_state_parameters(write, values), **_kept_flags(write, values)}
            for write, values in pairs
        ]
        statement = _state_update(tuple(pairs[0][1]), flagged=_INDEXED_WRITE_COLUMNS)
        landed = connection.execute(statement, parameters).rowcount
    else:
        # Consecutive writes that set the same columns share one statement, so rows are
        # still written in the order given (the lock order of every writer of devices).
        for kept, run in itertools.groupby(
            pairs, key=lambda pair: _unchanged_indexed(pair[0], pair[1])
        ):
            alike = list(run)
            names = tuple(name for name in alike[0][1] if name not in kept)
            parameters = [_state_parameters(write, values) for write, values in alike]
            landed += connection.execute(_state_update(names, kept), parameters).rowcount
    if landed != len(writes):
        return False
    _record_state_changes(session, writes, now)
    return True


def _state_parameters(write: StatusWrite, values: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of :func:`_state_update` for ``write``, whose columns are ``values``."""
    return {
        "w_id": write.device_id,
        "w_version": write.version,
        "w_udid": write.state.udid,
        "w_serial_number": write.state.serial_number,
        **{f"w_{name}": value for name, value in values.items()},
    }


def _kept_flags(write: StatusWrite, values: Mapping[str, Any]) -> dict[str, bool]:
    """The ``k_<name>`` parameters of :func:`_state_update`'s flagged columns: which
    indexed columns ``write`` keeps (:func:`_unchanged_indexed`)."""
    kept = _unchanged_indexed(write, values)
    return {f"k_{name}": name in kept for name in _INDEXED_WRITE_COLUMNS}


def _unchanged_indexed(write: StatusWrite, values: Mapping[str, Any]) -> tuple[str, ...]:
    """The indexed columns ``write`` would set to the value they were read with: left
    out of its statement, which lands only if they still hold it."""
    return tuple(
        name
        for name in _INDEXED_WRITE_COLUMNS
        if name in write.indexed and write.indexed[name] == values[name]
    )


def _write_state(session: Session, write: StatusWrite, now: datetime) -> DeviceState | None:
    """:func:`_write_states` for one write, telling why it did not land: raises
    :class:`~bsi.errors.NotFound` or :class:`~bsi.errors.Unauthorized` (revoked), or
    returns None when another write of the device landed first (merge again)."""
    if _write_states(session, [write], now):
        return write.state
    found = session.execute(
        select(Device.revoked_at, Device.decommissioned_at).where(Device.id == write.device_id)
    ).first()
    if found is None:
        raise NotFound(f"no device {write.device_id!r}")
    if found[0] is not None or found[1] is not None:
        raise Unauthorized(f"device {write.device_id} is revoked")
    return None  # stored by another report since this merge read: merge again


def _record_state_changes(session: Session, writes: Sequence[StatusWrite], now: datetime) -> None:
    """What landed ``writes`` change besides the device rows: the devices' container
    decisions (when they run or ran containers), a change of supplemental build (with
    ``now``), and the events of their transitions."""
    containers: dict[str, Decision | None] = {}
    build_changes: list[dict[str, Any]] = []
    for write in writes:
        previous = write.previous
        if (write.decision is not None and write.decision.containers) or (
            previous is not None and CONTAINERS_ITEM in previous.items
        ):
            containers[write.device_id] = write.decision
        old_build = (
            str(previous.supplemental_build) if previous and previous.supplemental_build else None
        )
        new_build = write.state.supplemental_build
        build = str(new_build) if new_build else None
        if previous is None or old_build != build:
            build_changes.append(
                {
                    "device_id": write.device_id,
                    "previous_build": old_build,
                    "supplemental_build": build,
                    "observed_at": now,
                }
            )
    if containers:
        _replace_container_decisions(session, containers)
    if build_changes:
        session.connection().execute(_BUILD_CHANGE, build_changes)
    add_events(session, [event for write in writes for event in write.events])


def _stored_status(row: Row[Any], known: KnownState | None = None) -> StoredStatus | BsiError:
    """A row of :data:`_STORED_STATUSES` as :meth:`Store.stored_statuses` answers it; its
    state is ``known``'s when that is what the row holds."""
    if row.revoked_at is not None or row.decommissioned_at is not None:
        return Unauthorized(f"device {row.id} is revoked")
    state = None
    if row.status_items or row.status_invalid:
        errors, invalid = tuple(row.status_errors), tuple(row.status_invalid)
        if (
            known is not None
            and known[0] == row.status_version
            and known[1].items == row.status_items
            and known[1].errors == errors
            and known[1].invalid == invalid
        ):
            state = known[1]
        else:
            state = DeviceState(dict(row.status_items), errors, invalid)
    mapping = row._mapping
    return StoredStatus(
        state,
        row.status_version,
        row.udid,
        row.serial_number,
        {name: mapping[name] for name in _DECISION_COLUMNS},
        {name: mapping[name] for name in _INDEXED_WRITE_COLUMNS},
    )


def _stored_state(row: Device | DeviceChannel) -> DeviceState | None:
    """What the device (or channel) has reported so far; None before its first report."""
    if not (row.status_items or row.status_invalid):
        return None
    return DeviceState(dict(row.status_items), tuple(row.status_errors), tuple(row.status_invalid))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _declaration(row: StoredDeclaration) -> Declaration:
    return Declaration(row.type, row.identifier, row.server_token, dict(row.payload))


_DECISION_COLUMNS = (
    "decision_outcome",
    "decision_reason",
    "decision_supplement_build",
    "decision_message",
)
"""The device row's columns a decision is stored in (:func:`_decision_columns`)."""
_INDEXED_STATE_COLUMNS = tuple(
    name
    for name in DEVICE_LIST_FILTERS
    if name in ("platform", "product_version", "build", "supplemental_build", "supplemental_extra")
)
"""The indexed columns of ``devices`` a status write derives from the state."""
_INDEXED_WRITE_COLUMNS = tuple(name for name in DEVICE_LIST_FILTERS if name != "group_id")
"""The indexed columns a status write sets (the state's and the decision's). SQLite
rewrites an index's entry for every column a statement sets, even to the value it
holds: at a million devices, where each row's entries lie on pages of their own,
that was most of the pages a report wrote (issue 18). A write sets only those that
change (:func:`_write_states`)."""
_DEVICES = cast(Table, Device.__table__)
_STORED_STATUS = select(
    *(
        _DEVICES.c[name]
        for name in (
            "status_items",
            "status_errors",
            "status_invalid",
            "status_version",
            "revoked_at",
            "decommissioned_at",
            "udid",
            "serial_number",
            *_DECISION_COLUMNS,
            *_INDEXED_STATE_COLUMNS,
        )
    )
).where(_DEVICES.c.id == bindparam("device_id"))
_STORED_STATUSES = select(_DEVICES.c.id, *_STORED_STATUS.selected_columns).where(
    _DEVICES.c.id.in_(bindparam("device_ids", expanding=True))
)
_BUILD_CHANGE = insert(cast(Table, SupplementalBuildChange.__table__))


@functools.cache
def _state_update(
    names: tuple[str, ...], kept: tuple[str, ...] = (), flagged: tuple[str, ...] = ()
) -> Update:
    """The compare-and-set of a device's state and decision, built once: ``names``, the
    columns of :func:`_state_columns` it sets; ``kept``, those it leaves as they are,
    which must still hold their value (a decision pass writes the decision without
    moving the status version); ``flagged``, columns each write keeps or not by its
    parameter ``k_<name>``: a kept one must still hold the value it is set to. The
    hardware a device first names is the one it must keep naming (trust on first use):
    ``udid`` and ``serial_number`` are only filled in, never replaced."""
    c = _DEVICES.c
    return (
        update(_DEVICES)
        .where(
            c.id == bindparam("w_id"),
            c.status_version == bindparam("w_version"),
            c.revoked_at.is_(None),
            c.decommissioned_at.is_(None),
            *(
                c[name].is_not_distinct_from(bindparam(f"w_{name}", type_=c[name].type))
                for name in kept
            ),
            *(
                or_(
                    ~bindparam(f"k_{name}", type_=Boolean),
                    c[name].is_not_distinct_from(bindparam(f"w_{name}", type_=c[name].type)),
                )
                for name in flagged
            ),
        )
        .values(
            status_version=c.status_version + 1,
            udid=func.coalesce(c.udid, bindparam("w_udid", type_=c.udid.type)),
            serial_number=func.coalesce(
                c.serial_number, bindparam("w_serial_number", type_=c.serial_number.type)
            ),
            **{name: bindparam(f"w_{name}", type_=c[name].type) for name in names},
        )
    )


def _decision_columns(decision: Decision | None) -> dict[str, Any]:
    """The device row's decision columns; no decision stores the not-reported one."""
    if decision is None:
        values: tuple[str | None, ...] = (*NOT_REPORTED, None, NOT_REPORTED_MESSAGE)
    else:
        supplement = str(decision.supplement.build) if decision.supplement else None
        values = (
            decision.outcome.value,
            decision.reason.value,
            supplement,
            decision.message[:512],
        )
    return dict(zip(_DECISION_COLUMNS, values, strict=True))


def _deciding() -> list[Any]:
    """The devices decisions are made for: reporting, not decommissioned."""
    return [Device.platform.is_not(None), Device.decommissioned_at.is_(None)]


def _replace_container_decisions(
    session: Session, decisions: Mapping[str, Decision | None]
) -> None:
    """Store each device's containers per (supplement it runs, decision), replacing its rows."""
    session.execute(
        delete(ContainerDecisionCount).where(ContainerDecisionCount.device_id.in_(list(decisions)))
    )
    rows: list[dict[str, Any]] = []
    for device_id, decision in decisions.items():
        groups = Counter(
            (
                str(c.installed_build) if c.installed_build else None,
                c.decision.outcome.value,
                c.decision.reason.value,
                str(c.decision.supplement.build) if c.decision.supplement else None,
            )
            for c in (decision.containers if decision else ())
        )
        rows.extend(
            {
                "device_id": device_id,
                "position": position,
                "installed_build": installed,
                "outcome": outcome,
                "reason": reason,
                "supplement_build": target,
                "count": n,
            }
            for position, ((installed, outcome, reason, target), n) in enumerate(groups.items())
        )
    if rows:
        session.execute(insert(ContainerDecisionCount), rows)


_TEXT_LENGTHS: dict[str, int] = {
    column.name: length
    for column in _DEVICES.c
    if isinstance(length := getattr(column.type, "length", None), int)
}
"""The longest text each device column holds, by column name."""


def _state_columns(state: DeviceState, decision: Decision | None, now: datetime) -> dict[str, Any]:
    """The device row's columns a status write sets, for ``state``; a value too long for its
    column is refused (:class:`~bsi.errors.InvalidStatusReport`)."""
    columns: dict[str, Any] = {
        "status_items": state.items,
        "status_errors": list(state.errors),
        "status_invalid": list(state.invalid),
        "last_seen_at": now,
        "platform": state.platform,
        "product_version": str(state.product_version) if state.product_version else None,
        "build": str(state.build) if state.build else None,
        "supplemental_build": str(state.supplemental_build) if state.supplemental_build else None,
        "supplemental_extra": str(state.supplemental_extra) if state.supplemental_extra else None,
        "model_identifier": state.model_identifier,
        **_decision_columns(decision),
    }
    for name, value in {
        **columns,
        "udid": state.udid,
        "serial_number": state.serial_number,
    }.items():
        length = _TEXT_LENGTHS.get(name)
        if isinstance(value, str) and length is not None and len(value) > length:
            raise InvalidStatusReport(
                f"{name.replace('_', ' ')} {value[:80]!r} is {len(value)} characters long; "
                f"bsi stores at most {length}",
                hint="a real device never reports a value this long",
            )
    return columns


def _filtered(
    query: Any, f: DeviceFilter, groups: Mapping[int, str], *, few_seen: bool = False
) -> Any:
    """``query`` (over ``devices`` alone) narrowed to ``f``. Every equality is on a column
    of ``models.DEVICE_LIST_FILTERS`` (indexed with the id). The group's name is looked
    up in ``groups`` (id -> name) first, so the database plans with its id (a rare
    group's devices are read from its index; a subquery's id it could only guess).
    ``few_seen``: few devices are in the last-seen range (SQLite's ``unlikely()``, so
    its planner reads them from the index of ``last_seen_at``)."""
    equal = {
        Device.platform: f.platform,
        Device.product_version: f.product_version,
        Device.build: f.build,
        Device.supplemental_build: f.supplemental_build,
        Device.supplemental_extra: f.supplemental_extra,
        Device.decision_reason: f.decision_reason,
        Device.decision_outcome: f.decision_outcome,
        Device.decision_supplement_build: f.decision_supplement_build,
    }
    if f.group is not None:
        query = query.where(Device.group_id.in_([i for i, n in groups.items() if n == f.group]))
    for column, value in equal.items():
        if value is not None:
            query = query.where(column == value)
    query = query.where(*(func.unlikely(t) if few_seen else t for t in _seen_terms(f)))
    if f.lifecycle == "decommissioned":
        query = query.where(Device.decommissioned_at.is_not(None))
    else:
        query = query.where(Device.decommissioned_at.is_(None))
    if f.lifecycle == "active":
        query = query.where(Device.revoked_at.is_(None))
    elif f.lifecycle == "revoked":
        query = query.where(Device.revoked_at.is_not(None))
    return query


KEPT = (
    (decision_group_counts, decision_group_deltas, DECISION_GROUP_COLUMNS),
    (container_group_counts, container_group_deltas, CONTAINER_GROUP_COLUMNS),
)
"""The counts the database keeps: (counts, changes since the last fold, group columns)."""


def _kept(
    session: Session, counts: Table, deltas: Table, names: Sequence[str]
) -> list[tuple[list[str | None], int]]:
    """Each group's values ('' read as None) and its count: as of the last fold, plus the
    changes since; groups that count 0 are left out."""
    both = union_all(
        select(*(counts.c[name] for name in names), counts.c["count"].label("n")),
        select(*(deltas.c[name] for name in names), deltas.c.change.label("n")),
    ).subquery()
    grouped = [both.c[name] for name in names]
    total = func.sum(both.c.n)
    rows = session.execute(select(*grouped, total).group_by(*grouped).having(total != 0))
    return [([value or None for value in found], int(n)) for *found, n in rows]


def _seen_terms(f: DeviceFilter) -> list[Any]:
    """``f``'s conditions on when a device was last seen."""
    terms: list[Any] = []
    if f.seen_before is not None:
        terms.append(Device.last_seen_at < f.seen_before)
    if f.seen_after is not None:
        terms.append(Device.last_seen_at >= f.seen_after)
    if f.stale_before is not None:
        terms.append(or_(Device.last_seen_at.is_(None), Device.last_seen_at < f.stale_before))
    if f.never_seen is not None:
        seen = Device.last_seen_at.is_(None)
        terms.append(seen if f.never_seen else ~seen)
    return terms


def _few_seen(session: Session, f: DeviceFilter) -> bool:
    """Whether fewer than :data:`FEW_SEEN` devices are in ``f``'s last-seen range, counted
    from the index of ``last_seen_at`` alone (at most that many of its entries read;
    SQLite only: ``unlikely()`` is its planner hint)."""
    terms = _seen_terms(f)
    if not terms:
        return False
    probe = select(Device.last_seen_at).where(*map(func.unlikely, terms)).limit(FEW_SEEN)
    return (session.scalar(select(func.count()).select_from(probe.subquery())) or 0) < FEW_SEEN


def _record(device: Device, group: str) -> DeviceRecord:
    reported = device.decision_outcome is not None  # else not written by bsi: fail closed
    return DeviceRecord(
        device_id=device.id,
        group=group,
        enrolled_at=device.enrolled_at,
        last_seen_at=device.last_seen_at,
        platform=device.platform,
        product_version=device.product_version,
        build=device.build,
        supplemental_build=device.supplemental_build,
        supplemental_extra=device.supplemental_extra,
        model_identifier=device.model_identifier,
        decision_outcome=device.decision_outcome if reported else NOT_REPORTED[0],
        decision_reason=device.decision_reason if reported else NOT_REPORTED[1],
        decision_supplement_build=device.decision_supplement_build,
        decision_message=device.decision_message if reported else NOT_REPORTED_MESSAGE,
        lifecycle="decommissioned"
        if device.decommissioned_at is not None
        else "revoked"
        if device.revoked_at is not None
        else "active",
    )


def _supplement_row(s: Supplement, origin: str) -> CatalogSupplement:
    superseded = s.superseded_by
    return CatalogSupplement(
        platform=s.platform,
        build=str(s.build),
        version=str(s.version),
        prerequisite_build=None if s.prerequisite_build is None else str(s.prerequisite_build),
        base=None
        if s.prerequisite_build is not None and not s.fixed_in
        else dump_base(s.prerequisite, s.fixed_in),
        supported_devices=sorted(s.supported_devices),
        cves=list(s.cves),
        cvss=dump_cvss_vectors(s.cvss) or None,
        posted=s.posted,
        expires=s.expires,
        published_state=s.published_state.value,
        superseded_by=None
        if superseded is None
        else {
            "version": str(superseded.version),
            "build": str(superseded.build) if superseded.build else None,
            "released": superseded.released.isoformat() if superseded.released else None,
        },
        security_info=s.security_info,
        origin=origin,
        listed_live=s.listed_live,
        target_sha256=s.target_sha256,
    )


def _supplement(row: CatalogSupplement) -> Supplement:
    superseded = row.superseded_by
    base = read_base(row.base or {PREREQUISITE_BUILD: row.prerequisite_build})
    return Supplement(
        platform=row.platform,
        version=SupplementVersion.parse(row.version),
        build=Build.parse(row.build),
        prerequisite=base[0],
        fixed_in=base[1],
        supported_devices=frozenset(row.supported_devices),
        cves=tuple(row.cves),
        cvss=read_cvss_vectors(row.cvss or {}, row.cves, "catalog_supplements.cvss"),
        posted=row.posted,
        expires=row.expires,
        published_state=SupplementState(row.published_state),
        superseded_by=None
        if superseded is None
        else Supersession(
            ProductVersion.parse(superseded["version"]),
            Build.parse(superseded["build"]) if superseded.get("build") else None,
            date.fromisoformat(superseded["released"]) if superseded.get("released") else None,
        ),
        security_info=row.security_info,
        listed_live=row.listed_live,
        target_sha256=row.target_sha256,
    )


def _release_row(r: Release) -> CatalogRelease:
    return CatalogRelease(
        platform=r.platform,
        version=str(r.version),
        build=str(r.build) if r.build else None,
        posted=r.posted,
        expires=r.expires,
        supported_devices=sorted(r.supported_devices),
        cves=list(r.cves),
    )


def _release(row: CatalogRelease) -> Release:
    return Release(
        platform=row.platform,
        version=ProductVersion.parse(row.version),
        build=Build.parse(row.build) if row.build else None,
        posted=row.posted,
        expires=row.expires,
        supported_devices=frozenset(row.supported_devices),
        cves=tuple(row.cves),
    )
