"""wakeup generation: one shared counter row for wake-ups across server processes

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 13:45:00

The wake-up generation was kept in each server process, so a change made
through one process woke only the devices waiting on it, and a generation
from one process meant nothing to another. One row now holds it for all
(``bsi.server.wakeup``); it starts at 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bsi.store.models import WAKEUP_ROW

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "wakeup_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": WAKEUP_ROW, "generation": 0}])


def downgrade() -> None:
    op.drop_table("wakeup_generation")
