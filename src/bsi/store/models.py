"""The database schema. Alembic migrations in ``migrations/`` create exactly this.

JSON columns hold what bsi treats as documents (declaration payloads, a
device's flat status items, supported-device lists); everything that is
filtered or joined on has its own column and index.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

from bsi.domain.ddm import ENROLLMENT_ID_MAX
from bsi.domain.eligibility import Outcome, Reason


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads it from the class
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime: UtcDateTime,
    }


class DeviceGroup(Base):
    __tablename__ = "device_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime]


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("device_groups.id"))
    expires_at: Mapped[datetime]
    max_uses: Mapped[int | None]
    uses: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


ENROLLMENT_ID_LENGTH = ENROLLMENT_ID_MAX


def column_length(model: type[Base], name: str) -> int:
    """The declared length of ``model``'s ``String`` column ``name``: the one place a
    length is written, read by the checks that keep over-long text out of it."""
    column_type = model.__table__.c[name].type
    assert isinstance(column_type, String)
    assert column_type.length is not None
    return column_type.length


#: An enrolled device that has not reported its OS yet: its stored decision from
#: enrolment on (``unknown``/``not-reported``), so every decision filter is one equality.
NOT_REPORTED = (Outcome.UNKNOWN.value, Reason.NOT_REPORTED.value)
NOT_REPORTED_MESSAGE = "enrolled, but no status report naming its OS has arrived yet"

DEVICE_LIST_FILTERS = (
    "group_id",
    "platform",
    "product_version",
    "build",
    "supplemental_build",
    "supplemental_extra",
    "decision_outcome",
    "decision_reason",
    "decision_supplement_build",
)
"""The ``devices`` columns the admin device list filters on by equality. Each has an
index on (column, id): a filtered page in id order (``ORDER BY id LIMIT n``, the
cursor ``id > after``) reads only its own rows, never the table."""

DECISION_GROUP_COLUMNS = (
    "platform",
    "product_version",
    "decision_supplement_build",
    "decision_outcome",
    "decision_reason",
    "supplemental_build",
)
"""What compliance counts devices by (``Store.decision_counts``): the key of
``decision_group_counts``, which database triggers keep (migration 0014)."""

LIVE = "decommissioned_at IS NULL"
"""The devices compliance and the default device list count (SQL)."""


def _device_indexes() -> tuple[Index, ...]:
    """The indexes of ``devices`` the admin API's and console's queries are served by
    (checked plan by plan in ``tests/store/test_store_query_plans.py``)."""

    def where(condition: str) -> dict[str, Any]:
        return {"postgresql_where": text(condition), "sqlite_where": text(condition)}

    return (
        *(Index(f"ix_devices_{name}_id", name, "id") for name in DEVICE_LIST_FILTERS),
        Index("ix_devices_revoked_id", "id", **where("revoked_at IS NOT NULL")),
        Index("ix_devices_decommissioned_id", "id", **where("decommissioned_at IS NOT NULL")),
    )


class Device(Base):
    """One enrolled device (its device channel) and the latest state it reported.

    ``udid`` and ``serial_number`` are what bsi knows of the hardware behind
    the enrollment (from NanoMDM's webhook, an admin import, or the device's
    first report); a report contradicting them is refused.
    """

    __tablename__ = "devices"
    __table_args__ = _device_indexes()

    id: Mapped[str] = mapped_column(String(ENROLLMENT_ID_LENGTH), primary_key=True)
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("device_groups.id"))
    enrolled_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None] = mapped_column(index=True)
    platform: Mapped[str | None] = mapped_column(String(32))
    product_version: Mapped[str | None] = mapped_column(String(16))
    build: Mapped[str | None] = mapped_column(String(16))
    supplemental_build: Mapped[str | None] = mapped_column(String(16))
    supplemental_extra: Mapped[str | None] = mapped_column(String(8))
    model_identifier: Mapped[str | None] = mapped_column(String(64))
    decision_outcome: Mapped[str | None] = mapped_column(String(16), default=NOT_REPORTED[0])
    decision_reason: Mapped[str | None] = mapped_column(String(32), default=NOT_REPORTED[1])
    decision_supplement_build: Mapped[str | None] = mapped_column(String(16))
    decision_message: Mapped[str | None] = mapped_column(String(512), default=NOT_REPORTED_MESSAGE)
    status_items: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status_errors: Mapped[list[Any]] = mapped_column(default=list)
    status_invalid: Mapped[list[Any]] = mapped_column(default=list)
    """bsi's own findings: report items it refused, each ``{"path", "reason", "at"}``."""
    enrollment_type: Mapped[str | None] = mapped_column(String(32))
    enrolled_by: Mapped[str | None] = mapped_column(String(16))
    udid: Mapped[str | None] = mapped_column(String(64))
    serial_number: Mapped[str | None] = mapped_column(String(64))
    checked_out_at: Mapped[datetime | None]

    status_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped by every stored report: a merge done outside the write transaction
    is written only if nothing was stored in between (compare and set)."""
    credential_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Bumped by re-enrolment: credentials of an earlier generation are refused."""
    revoked_at: Mapped[datetime | None]
    decommissioned_at: Mapped[datetime | None]


def _group_key(lengths: dict[str, int], *, primary_key: bool) -> list[Column[str]]:
    """A kept group's columns, as long as the rows' they count; '' stands for NULL."""
    return [
        Column(name, String(length), primary_key=primary_key, nullable=False)
        for name, length in lengths.items()
    ]


def _kept_counts(name: str, lengths: dict[str, int]) -> tuple[Table, Table]:
    """The table of counts per group as of the last fold, and the table of changes since."""
    counts = Table(
        f"{name}_counts",
        Base.metadata,
        *_group_key(lengths, primary_key=True),
        Column("count", Integer, nullable=False),
    )
    deltas = Table(
        f"{name}_deltas",
        Base.metadata,
        Column("id", Integer, primary_key=True),
        *_group_key(lengths, primary_key=False),
        Column("change", Integer, nullable=False),
    )
    return counts, deltas


decision_group_counts, decision_group_deltas = _kept_counts(
    "decision_group", {name: column_length(Device, name) for name in DECISION_GROUP_COLUMNS}
)
"""Live (not decommissioned) devices per decision group: counts as of the last fold,
and +1/-1 per device entering or leaving a group since.

Kept by the database, not by bsi's code: triggers on ``devices`` (migration 0014)
append to the deltas for every row inserted, deleted, or changed in a group column
or in ``decommissioned_at``, in the writer's own transaction, so no write path can
forget it. Writers only append: no counter row is updated by two transactions (no
lock waits, no deadlocks between server processes). The true count of a group is
its count plus its deltas; ``Store.decision_counts`` reads both and folds the deltas
in now and then."""


class DeviceLifecycleEvent(Base):
    """Every revoke, decommission and re-enrolment: the audit trail, and what
    every server process polls to refuse a revoked credential within seconds."""

    __tablename__ = "device_lifecycle_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(String(ENROLLMENT_ID_LENGTH), ForeignKey("devices.id"))
    action: Mapped[str] = mapped_column(String(16))
    credential_generation: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean)
    """Whether the device's credential of ``credential_generation`` is accepted after it."""
    at: Mapped[datetime]


class DeviceChannel(Base):
    """A user channel (NanoMDM ``UDID:user``) of a device: never a device of its own."""

    __tablename__ = "device_channels"

    enrollment_id: Mapped[str] = mapped_column(String(ENROLLMENT_ID_LENGTH), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    enrollment_type: Mapped[str] = mapped_column(String(32))
    enrolled_at: Mapped[datetime]
    last_report_at: Mapped[datetime | None]
    checked_out_at: Mapped[datetime | None]
    status_items: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status_errors: Mapped[list[Any]] = mapped_column(default=list)
    status_invalid: Mapped[list[Any]] = mapped_column(default=list)


class SecurityEvent(Base):
    """Something that looked like impersonation: refused, and kept for admins to see."""

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    enrollment_id: Mapped[str | None] = mapped_column(String(ENROLLMENT_ID_LENGTH))
    source: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(1024))


class SyncState(Base):
    """The served declaration set per scope, and when it last changed (``Timestamp``)."""

    __tablename__ = "sync_states"

    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime]


class ContainerDecisionCount(Base):
    """A container host's running containers per decision, stored with the host's own
    (bsi.domain.eligibility ``with_containers``), so compliance sums them in SQL.

    One row per distinct (supplement the container runs, decision) of one host;
    the host's next decision replaces its rows.
    """

    __tablename__ = "container_decisions"

    device_id: Mapped[str] = mapped_column(
        String(ENROLLMENT_ID_LENGTH), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    installed_build: Mapped[str | None] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    supplement_build: Mapped[str | None] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer)


CONTAINER_GROUP_COLUMNS = ("platform", "supplement_build", "outcome", "reason", "installed_build")
"""What compliance counts live hosts' running containers by: the host's platform and the
container's ``container_decisions`` columns."""

container_group_counts, container_group_deltas = _kept_counts(
    "container_group",
    {
        "platform": column_length(Device, "platform"),
        **{
            name: column_length(ContainerDecisionCount, name)
            for name in CONTAINER_GROUP_COLUMNS[1:]
        },
    },
)
"""Live hosts' running containers per group, kept like ``decision_group_counts`` by
triggers (migration 0015) on ``container_decisions`` (a host's rows written or
replaced) and on ``devices`` (a host's platform or ``decommissioned_at`` changed)."""


class SupplementalBuildChange(Base):
    """Every change of a device's supplemental build, kept for patch-window reports."""

    __tablename__ = "supplemental_build_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[str] = mapped_column(
        String(ENROLLMENT_ID_LENGTH), ForeignKey("devices.id", ondelete="CASCADE")
    )
    previous_build: Mapped[str | None] = mapped_column(String(16))
    supplemental_build: Mapped[str | None] = mapped_column(String(16))
    observed_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_build_changes_device_time", "device_id", "observed_at"),
        # Patch windows and rollouts read each device's first arrival on a build
        # from this index alone.
        Index(
            "ix_build_changes_build_device_time", "supplemental_build", "device_id", "observed_at"
        ),
    )


class StoredDeclaration(Base):
    __tablename__ = "declarations"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(128))
    server_token: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class GroupDeclaration(Base):
    __tablename__ = "group_declarations"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("device_groups.id", ondelete="CASCADE"), primary_key=True
    )
    declaration_id: Mapped[int] = mapped_column(
        ForeignKey("declarations.id", ondelete="CASCADE"), primary_key=True
    )


class CatalogSupplement(Base):
    __tablename__ = "catalog_supplements"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    build: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(24))
    # The build for build prerequisites; packages, files and fixed_in in ``base``
    # (bsi.domain.prerequisite.dump_base), null for a bare build.
    prerequisite_build: Mapped[str | None] = mapped_column(String(16))
    base: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    supported_devices: Mapped[list[Any]] = mapped_column(default=list)
    cves: Mapped[list[Any]] = mapped_column(default=list)
    # CVSS 3.x vectors by CVE id (bsi.domain.cves.dump_cvss_vectors); null: none known.
    cvss: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    posted: Mapped[date | None] = mapped_column(Date)
    expires: Mapped[date | None] = mapped_column(Date)
    published_state: Mapped[str] = mapped_column(String(16), default="published")
    superseded_by: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    security_info: Mapped[str | None] = mapped_column(String(512))
    origin: Mapped[str] = mapped_column(String(128))
    listed_live: Mapped[bool] = mapped_column(default=False, server_default=false())
    target_sha256: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (UniqueConstraint("platform", "build"),)


class CatalogRelease(Base):
    __tablename__ = "catalog_releases"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(16))
    build: Mapped[str | None] = mapped_column(String(16))
    posted: Mapped[date | None] = mapped_column(Date)
    expires: Mapped[date | None] = mapped_column(Date)
    supported_devices: Mapped[list[Any]] = mapped_column(default=list)
    cves: Mapped[list[Any]] = mapped_column(default=list)


class CatalogDeviceModel(Base):
    __tablename__ = "catalog_device_models"

    model_identifier: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_ids: Mapped[list[Any]] = mapped_column(default=list)


class RetryAllowance(Base):
    """An administrator allows a supplement that failed (or was removed) on devices again.

    ``device_id`` null: every device; otherwise that one. Agents read the
    rows with an id above the highest they have seen (``GET /v1/ddm/retries``).
    """

    __tablename__ = "retry_allowances"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    build: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[str | None] = mapped_column(
        String(ENROLLMENT_ID_LENGTH), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime]


class ServerSecret(Base):
    """Secrets every server process shares, such as the device-credential key."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))


class RolloutDefault(Base):
    """A platform's default rollout plan: a supplement first imported for it starts with it."""

    __tablename__ = "rollout_defaults"

    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    plan: Mapped[dict[str, Any]]
    """``bsi.domain.rollout.dump_plan``."""
    updated_at: Mapped[datetime]


class RolloutRow(Base):
    """One supplement's rollout (``bsi.domain.rollout.Rollout``): its plan and progress."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    build: Mapped[str] = mapped_column(String(16))
    plan: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    current: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    halted_because: Mapped[str | None] = mapped_column(String(2048))
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("platform", "build"),)


class RolloutMember(Base):
    """A device's wave in a rollout, drawn once when the rollout started."""

    __tablename__ = "rollout_members"

    rollout_id: Mapped[int] = mapped_column(
        ForeignKey("rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(String(ENROLLMENT_ID_LENGTH), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)


class MaintenanceWindowRow(Base):
    """When a group's devices may activate (``bsi.domain.rollout.dump_window``)."""

    __tablename__ = "maintenance_windows"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("device_groups.id", ondelete="CASCADE"), primary_key=True
    )
    window: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class Event(Base):
    """The event history: every change of a supplement, rollout, wave, policy or device
    state, who made it (an API key's name, or ``automatic``), when and why."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str | None] = mapped_column(String(ENROLLMENT_ID_LENGTH), index=True)
    platform: Mapped[str | None] = mapped_column(String(32))
    build: Mapped[str | None] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(String(2048))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Webhook(Base):
    """Where events of some kinds are POSTed (``bsi.server.webhooks``) and how far it got.

    ``cursor``: the id of the last event it acknowledged; ``attempts`` and
    ``retry_at``: failed deliveries of the next one and when to try again.
    """

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(512))
    secret: Mapped[str] = mapped_column(String(128))
    kinds: Mapped[list[Any]]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(512))


WAKEUP_ROW = 1
"""The one row of :class:`WakeupGeneration`."""


class WakeupGeneration(Base):
    """The wake-up generation every server process shares (``bsi.server.wakeup``): one row,
    moved on by each change devices should act on, so a generation a device got from one
    process means the same in every other."""

    __tablename__ = "wakeup_generation"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    decided_generation: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """The newest generation whose changes a completed decision pass has decided: behind
    ``generation`` when a process made a change and stopped before its pass ended, so
    the next server to start decides every device again (fail closed)."""
