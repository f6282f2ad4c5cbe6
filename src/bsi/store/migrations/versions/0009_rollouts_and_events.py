"""rollouts (plans, waves, members), maintenance windows, the event history

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bsi.store.models import ENROLLMENT_ID_LENGTH, UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollout_defaults",
        sa.Column("platform", sa.String(32), primary_key=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("build", sa.String(16), nullable=False),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current", sa.Integer(), nullable=False),
        sa.Column("started_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("opened_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("halted_because", sa.String(2048), nullable=True),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("platform", "build"),
    )
    op.create_table(
        "rollout_members",
        sa.Column(
            "rollout_id",
            sa.Integer(),
            sa.ForeignKey("rollouts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("device_id", sa.String(ENROLLMENT_ID_LENGTH), primary_key=True),
        sa.Column("wave", sa.Integer(), nullable=False),
    )
    op.create_table(
        "maintenance_windows",
        sa.Column(
            "group_id",
            sa.Integer(),
            sa.ForeignKey("device_groups.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("window", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(ENROLLMENT_ID_LENGTH), nullable=True),
        sa.Column("platform", sa.String(32), nullable=True),
        sa.Column("build", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(2048), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    op.create_index("ix_events_at", "events", ["at"])
    op.create_index("ix_events_kind", "events", ["kind"])
    op.create_index("ix_events_device_id", "events", ["device_id"])
    op.create_index("ix_events_build", "events", ["build"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("maintenance_windows")
    op.drop_table("rollout_members")
    op.drop_table("rollouts")
    op.drop_table("rollout_defaults")
