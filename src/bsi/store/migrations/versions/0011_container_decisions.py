"""container decisions: a container host's running containers per decision

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bsi.store.models import ENROLLMENT_ID_LENGTH

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "container_decisions",
        sa.Column(
            "device_id",
            sa.String(ENROLLMENT_ID_LENGTH),
            sa.ForeignKey("devices.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("installed_build", sa.String(16), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("supplement_build", sa.String(16), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("container_decisions")
