"""The store, one narrow protocol per concern: what the server's service depends on.

:class:`~bsi.store.store.Store` (SQLAlchemy over SQLite or PostgreSQL)
implements every protocol structurally; the conformance tests in
``tests/store`` run each protocol's operations on both databases. A caller
names only the concern it needs (the revocation poll a
:class:`CredentialStore`, the status writer a :class:`DeviceStore`), so a
second implementation, or a fake in a test, covers one concern, not 40 methods.

Every operation takes plain values, returns plain values (domain objects or
the small records of :mod:`bsi.store.store`) and runs in its own transaction;
time is always passed in. Errors are the project's own
(:mod:`bsi.errors`): a row that is not there is :class:`~bsi.errors.NotFound`,
a write that contradicts what is stored is :class:`~bsi.errors.Conflict`, a
value a column cannot hold is :class:`~bsi.errors.InvalidInput` (or
:class:`~bsi.errors.InvalidStatusReport` for a report), and nothing is stored
when one is raised. A database that does not answer raises SQLAlchemy's
``OperationalError``, which the HTTP layer turns into 503 + Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bsi.domain.catalog import Catalog, SupplementState
from bsi.domain.declarations import Declaration
from bsi.domain.status import DeviceState
from bsi.errors import BsiError
from bsi.store.rollouts import RolloutStore, SqlRolloutStore
from bsi.store.store import (
    BuildChange,
    ChannelMerge,
    DecidedDevice,
    DecisionCounts,
    DeviceFilter,
    DeviceIdentity,
    DeviceRecord,
    DeviceStateRow,
    Enrollment,
    KnownState,
    LatestRetries,
    LifecycleEvent,
    NewEnrollment,
    SecurityEventRecord,
    StatusWrite,
    Store,
    StoredDecisions,
    StoredStatus,
)
from bsi.store.wakeups import GenerationStore, SqlGenerations


class DeviceStore(Protocol):
    """Devices and their status: enrollments NanoMDM forwards, reports, decisions, lists.

    Owns the ``devices``, ``device_channels`` and ``supplemental_build_changes``
    rows (not a device's credential: :class:`CredentialStore`). Raises
    :class:`~bsi.errors.NotFound` for an unknown device, channel or group,
    :class:`~bsi.errors.Conflict` when an enrollment id is already a device
    (or a channel, or another device's channel) or a device's status kept
    changing under a merge, :class:`~bsi.errors.Unauthorized` when a revoked
    or decommissioned device reports, and
    :class:`~bsi.errors.InvalidStatusReport` for a value its column cannot hold.
    """

    def enrollment(self, enrollment_id: str) -> Enrollment | None: ...

    def register_enrollments(self, entries: Sequence[NewEnrollment], now: datetime) -> int:
        """Create or refresh all ``entries`` in one transaction; how many were new."""
        ...

    def check_out(self, enrollment_id: str, now: datetime) -> DeviceIdentity: ...

    def channels(self, device_id: str) -> list[dict[str, Any]]: ...

    def save_channel_state(
        self, enrollment_id: str, merge: ChannelMerge, now: datetime
    ) -> None: ...

    def device_identity(self, device_id: str) -> DeviceIdentity | None: ...

    def touch_devices(self, last_seen: dict[str, datetime]) -> None:
        """Record buffered check-in times in one batch."""
        ...

    def device_status(self, device_id: str) -> tuple[dict[str, Any], list[Any]] | None: ...

    def stored_status(self, device_id: str) -> StoredStatus: ...

    def stored_statuses(
        self, device_ids: Iterable[str], known: Mapping[str, KnownState] | None = None
    ) -> dict[str, StoredStatus | BsiError]:
        """Several devices' stored status in one statement; an unknown or revoked
        device's entry is the error that refuses its reports. A stored state that is one
        of ``known`` (by device id: same version and content) is that object."""
        ...

    def write_device_states(
        self, batch: Sequence[StatusWrite], now: datetime
    ) -> list[DeviceState | BsiError | None]:
        """Compare-and-set each write in one transaction; a refused one fails alone."""
        ...

    def store_decisions(self, decisions: Iterable[DecidedDevice]) -> StoredDecisions:
        """Compare-and-set each decision on the device's state version it was made from."""
        ...

    def write_decisions(self, batch: Sequence[DecidedDevice]) -> StoredDecisions: ...

    def reported_platforms(self) -> list[str]: ...

    def device_states(
        self,
        batch_size: int = 1000,
        *,
        platforms: Sequence[str] | None = None,
        groups: Sequence[int] | None = None,
        devices: Sequence[str] | None = None,
    ) -> Iterator[list[DeviceStateRow]]: ...

    def count_device_states(
        self,
        *,
        platforms: Sequence[str] | None = None,
        groups: Sequence[int] | None = None,
        devices: Sequence[str] | None = None,
    ) -> int: ...

    def list_devices(
        self, filters: DeviceFilter, *, after: str | None = None, limit: int = 100
    ) -> list[DeviceRecord]: ...

    def count_devices(self, filters: DeviceFilter) -> int: ...

    def get_device(self, device_id: str) -> tuple[DeviceRecord, dict[str, Any]]: ...

    def device_detail(self, device_id: str) -> dict[str, Any]: ...

    def decision_counts(self) -> DecisionCounts: ...

    def fold_decision_deltas(self) -> None: ...

    def build_changes(self, supplemental_builds: Sequence[str]) -> list[BuildChange]: ...


class CatalogStore(Protocol):
    """The catalogue (supplements, releases, device models) and retry allowances.

    Owns the ``catalog_*`` and ``retry_allowances`` rows. Raises
    :class:`~bsi.errors.NotFound` for a supplement (or, for a retry, a device)
    it does not know and :class:`~bsi.errors.Conflict` when a withdrawn
    supplement is to be published or paused again (withdrawn is final).
    """

    def catalog(self) -> Catalog: ...

    def replace_catalog(self, catalog: Catalog, origin: str) -> None:
        """Store ``catalog`` whole; callers merge with the stored one first."""
        ...

    def set_supplement_state(self, platform: str, build: str, state: SupplementState) -> None: ...

    def allow_retry(
        self, platform: str, build: str, device_id: str | None, now: datetime
    ) -> int: ...

    def retries_after(self, device_id: str, after: int) -> list[tuple[int, str, str]]: ...

    def latest_retries(self) -> LatestRetries:
        """The newest allowance ids: of those for every device, and per device."""
        ...


class DeclarationStore(Protocol):
    """Declarations, device groups, the assignments between them, and when a served set changed.

    Owns the ``declarations``, ``device_groups``, ``group_declarations`` and
    ``sync_state`` rows. Raises :class:`~bsi.errors.NotFound` for an unknown
    declaration or group.
    """

    def ensure_group(self, name: str, now: datetime) -> int: ...

    def group_id(self, name: str) -> int: ...

    def groups(self) -> dict[int, str]: ...

    def put_declaration(self, declaration: Declaration, now: datetime) -> bool:
        """Create or replace by identifier; True when something changed."""
        ...

    def delete_declaration(self, identifier: str) -> None: ...

    def declarations(self) -> list[tuple[Declaration, list[str]]]: ...

    def assign(self, identifier: str, group: str, *, assigned: bool) -> None: ...

    def group_declarations(self, group_id: int) -> list[Declaration]: ...

    def sync_changed_at(self, scope: str, token: str, now: datetime) -> datetime: ...


class CredentialStore(Protocol):
    """Secrets: API keys, enrollment tokens, device credentials and their lifecycle.

    Owns the ``api_keys``, ``enrollment_tokens``, ``server_secrets`` and
    ``device_lifecycle_events`` rows and a device's credential columns; only
    hashes of secrets are stored, so each secret is returned once. Raises
    :class:`~bsi.errors.InvalidInput` for an unknown role, a bad key name, a
    past expiry or fewer than one use, :class:`~bsi.errors.Conflict` for a
    key name in use, :class:`~bsi.errors.NotFound` for an unknown key, group
    or device, and :class:`~bsi.errors.EnrollmentRefused` for a token that is
    unknown, expired or used up.
    """

    def create_api_key(self, name: str, role: str, now: datetime) -> str: ...

    def api_key_role(self, secret: str) -> str | None:
        """The role of an unrevoked key; None for any other secret."""
        ...

    def revoke_api_key(self, name: str) -> None: ...

    def has_api_keys(self) -> bool: ...

    def create_enrollment_token(
        self, group: str, expires_at: datetime, max_uses: int | None, now: datetime
    ) -> str: ...

    def shared_secret(self, name: str) -> bytes:
        """A random secret every server process shares, created on first use."""
        ...

    def enroll(
        self, token: str, now: datetime, issue: Callable[[str, int], str] = ...
    ) -> tuple[str, str]: ...

    def device_by_credential(self, credential: str) -> DeviceIdentity | None: ...

    def revoke_device(self, device_id: str, now: datetime) -> None: ...

    def decommission_device(self, device_id: str, now: datetime) -> None: ...

    def reenroll_device(
        self, device_id: str, now: datetime, issue: Callable[[str, int, int], str]
    ) -> str: ...

    def lifecycle_events(self, after: int, also: Sequence[int] = ()) -> list[LifecycleEvent]:
        """Revocations and re-enrolments above id ``after`` or in ``also``, oldest first."""
        ...


class EventStore(Protocol):
    """Security events: refused impersonation attempts, kept for an administrator.

    Owns the ``security_events`` rows. Recording never refuses what an
    attacker sent: an enrollment id, source or detail longer than its column
    is cut to fit and kept (``kind`` is bsi's own short name).
    """

    def record_security_event(
        self, kind: str, enrollment_id: str | None, source: str | None, detail: str, now: datetime
    ) -> None: ...

    def security_events(self, limit: int = 100) -> list[SecurityEventRecord]:
        """The newest ``limit`` events, newest first."""
        ...


class Database(Protocol):
    """The database itself: is it reachable with the schema this bsi needs; its connections."""

    def require_current_schema(self) -> None:
        """Raises :class:`~bsi.store.database.DatabaseError` when not."""
        ...

    def dispose(self) -> None:
        """Close every pooled connection (a store opened again reconnects)."""
        ...

    def checkpoint(self) -> None:
        """Move SQLite's log into the database file off the writers' path
        (:func:`~bsi.store.database.checkpoint`); nothing on PostgreSQL."""
        ...


class FleetStore(
    DeviceStore, CatalogStore, DeclarationStore, CredentialStore, EventStore, Database, Protocol
):
    """Every concern at once: what one :class:`~bsi.store.store.Store` is."""


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores the server's service depends on, one per concern."""

    devices: DeviceStore
    catalog: CatalogStore
    declarations: DeclarationStore
    credentials: CredentialStore
    events: EventStore
    database: Database
    rollouts: RolloutStore
    generations: GenerationStore

    @classmethod
    def sharing(cls, store: Store) -> Stores:
        """One store (one database) serving every concern (rollouts, windows and the
        event history through :class:`~bsi.store.rollouts.SqlRolloutStore`, the wake-up
        generation through :class:`~bsi.store.wakeups.SqlGenerations`, on its engine)."""
        engine = store.engine
        rollouts, generations = SqlRolloutStore(engine), SqlGenerations(engine)
        return cls(store, store, store, store, store, store, rollouts, generations)
