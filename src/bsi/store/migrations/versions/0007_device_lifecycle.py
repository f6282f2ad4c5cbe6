"""device lifecycle and optimistic status writes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bsi.store.models import ENROLLMENT_ID_LENGTH, UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs: on SQLite a batch rebuild of devices would drop the
    # table, and its ON DELETE CASCADE the build history.
    op.add_column(
        "devices", sa.Column("status_version", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "devices",
        sa.Column("credential_generation", sa.Integer(), nullable=False, server_default="0"),
    )
    op.add_column("devices", sa.Column("revoked_at", UtcDateTime(timezone=True), nullable=True))
    op.add_column(
        "devices", sa.Column("decommissioned_at", UtcDateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "device_lifecycle_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=ENROLLMENT_ID_LENGTH), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("credential_generation", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("at", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("device_lifecycle_events")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("decommissioned_at")
        batch.drop_column("revoked_at")
        batch.drop_column("credential_generation")
        batch.drop_column("status_version")
