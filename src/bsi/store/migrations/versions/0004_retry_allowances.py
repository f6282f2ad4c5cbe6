"""retry allowances: an administrator allows a failed supplement again

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bsi.store.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retry_allowances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("build", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", bsi.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_retry_allowances_device_id"), "retry_allowances", ["device_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_retry_allowances_device_id"), table_name="retry_allowances")
    op.drop_table("retry_allowances")
