"""NanoMDM enrollments: long enrollment ids, known hardware identity, user channels,
security events, status-item findings, sync-state timestamps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bsi.store.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WHEN = bsi.store.models.UtcDateTime(timezone=True)


_NEW_COLUMNS = (
    "status_invalid",
    "enrollment_type",
    "enrolled_by",
    "udid",
    "serial_number",
    "checked_out_at",
)


def _alter_devices(old: int, new: int, *, add: bool) -> None:
    """Widen (or narrow) device ids and add (or drop) the new columns, in one rebuild.

    On SQLite a rebuild of ``devices`` drops the old table, and that DROP runs
    the ON DELETE CASCADE of the build history: a copy is kept and put back.
    """
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute(
            "CREATE TEMPORARY TABLE build_changes_copy AS SELECT * FROM supplemental_build_changes"
        )
    with op.batch_alter_table("devices") as batch_op:
        batch_op.alter_column(
            "id", existing_type=sa.String(length=old), type_=sa.String(length=new)
        )
        if add:
            batch_op.add_column(
                sa.Column("status_invalid", sa.JSON(), nullable=False, server_default="[]")
            )
            batch_op.add_column(sa.Column("enrollment_type", sa.String(length=32)))
            batch_op.add_column(sa.Column("enrolled_by", sa.String(length=16)))
            batch_op.add_column(sa.Column("udid", sa.String(length=64)))
            batch_op.add_column(sa.Column("serial_number", sa.String(length=64)))
            batch_op.add_column(sa.Column("checked_out_at", _WHEN))
        else:
            for column in _NEW_COLUMNS:
                batch_op.drop_column(column)
    with op.batch_alter_table("supplemental_build_changes") as batch_op:
        batch_op.alter_column(
            "device_id", existing_type=sa.String(length=old), type_=sa.String(length=new)
        )
    if sqlite:
        op.execute("DELETE FROM supplemental_build_changes")
        op.execute("INSERT INTO supplemental_build_changes SELECT * FROM build_changes_copy")
        op.execute("DROP TABLE build_changes_copy")


def upgrade() -> None:
    _alter_devices(64, 255, add=True)
    op.create_table(
        "device_channels",
        sa.Column("enrollment_id", sa.String(length=255), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("enrollment_type", sa.String(length=32), nullable=False),
        sa.Column("enrolled_at", _WHEN, nullable=False),
        sa.Column("last_report_at", _WHEN, nullable=True),
        sa.Column("checked_out_at", _WHEN, nullable=True),
        sa.Column("status_items", sa.JSON(), nullable=False),
        sa.Column("status_errors", sa.JSON(), nullable=False),
        sa.Column("status_invalid", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("enrollment_id"),
    )
    with op.batch_alter_table("device_channels") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_channels_device_id"), ["device_id"], unique=False
        )
    op.create_table(
        "security_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("enrollment_id", sa.String(length=255), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("security_events") as batch_op:
        batch_op.create_index(batch_op.f("ix_security_events_at"), ["at"], unique=False)
    op.create_table(
        "sync_states",
        sa.Column("scope", sa.String(length=128), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("changed_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("scope"),
    )


def downgrade() -> None:
    op.drop_table("sync_states")
    op.drop_table("security_events")
    op.drop_table("device_channels")
    _alter_devices(255, 64, add=False)
